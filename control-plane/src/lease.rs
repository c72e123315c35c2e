//! Agent leases, kept by the leader alone and in memory: heartbeats renew them without touching
//! Raft, and only an expiry is a Raft write. A node that becomes leader knows no heartbeat
//! history, so it starts every registered node on a full lease — an election never expires a
//! healthy agent. This is the table; [`crate::keepers::lease_expiry`] runs it on the leader.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::state::LapsedNode;

/// Longest pause between two checks for lapsed leases; shorter leases are checked more often.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The leader's lease table.
#[derive(Debug)]
pub struct Leases {
    ttl: Duration,
    inner: Mutex<Table>,
    /// When a quorum last confirmed this node's leadership (while it leads).
    confirmed: Mutex<Option<Instant>>,
}

#[derive(Debug, Default)]
struct Table {
    /// The term this table belongs to; another term (or not leading) starts it afresh.
    term: Option<u64>,
    /// When each node's lease ends.
    deadlines: HashMap<String, Instant>,
}

impl Leases {
    /// A table granting leases of `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Leases {
            ttl,
            inner: Mutex::new(Table::default()),
            confirmed: Mutex::new(None),
        }
    }

    /// Whether a quorum confirmed this node's leadership recently (within three checks): a
    /// leader cut off from the others stops renewing leases it can no longer enforce, so its
    /// agents move to a node that reaches the real leader.
    pub fn leadership_confirmed(&self) -> bool {
        let confirmed = *self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        confirmed.is_some_and(|at| at.elapsed() <= self.check_interval() * 3)
    }

    /// How long `node`'s lease still runs, when this node leads (confirmed by a quorum lately)
    /// and has looked at the node since it took over.
    pub fn remaining(&self, node: &str) -> Option<Duration> {
        if !self.leadership_confirmed() {
            return None;
        }
        let table = self.table();
        table.term?;
        let deadline = table.deadlines.get(node)?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    pub(crate) fn set_confirmed(&self, at: Option<Instant>) {
        *self.confirmed.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// How long a lease runs.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often the leader looks for lapsed leases: a tenth of the lease, at most
    /// [`MAX_CHECK_INTERVAL`].
    pub fn check_interval(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(50), MAX_CHECK_INTERVAL)
    }

    /// Starts a full lease for `node` now (it registered or heartbeated).
    pub fn renew(&self, node: &str) {
        self.renew_at(node, Instant::now());
    }

    /// Starts a full lease now for each of `nodes` (a member's batch of heartbeats), under one
    /// lock.
    pub fn renew_all<'a>(&self, nodes: impl IntoIterator<Item = &'a str>) {
        let deadline = Instant::now() + self.ttl;
        let mut table = self.table();
        for node in nodes {
            match table.deadlines.get_mut(node) {
                Some(at) => *at = deadline,
                None => {
                    table.deadlines.insert(node.to_string(), deadline);
                }
            }
        }
    }

    fn renew_at(&self, node: &str, now: Instant) {
        self.table()
            .deadlines
            .insert(node.to_string(), now + self.ttl);
    }

    /// Forgets `node` (it deregistered).
    pub fn forget(&self, node: &str) {
        self.table().deadlines.remove(node);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registered nodes whose lease ended before `now`, given the registry and the term
    /// this node leads in (`None`: it does not lead, and keeps no table). Nodes seen for the
    /// first time in a term get a full lease from `now`.
    pub(crate) fn lapsed(
        &self,
        leading_term: Option<u64>,
        registered: &[(String, u64)],
        now: Instant,
    ) -> Vec<LapsedNode> {
        // Runs every check interval over the whole registry: a set of its names, not a scan of
        // the list per lease (at 20,000 nodes that scan was most of the leader's CPU), made
        // before the table is locked, since heartbeats wait for the lock.
        let names: HashSet<&str> = if leading_term.is_some() {
            registered.iter().map(|(n, _)| n.as_str()).collect()
        } else {
            HashSet::new()
        };
        let mut table = self.table();
        if table.term != leading_term {
            table.term = leading_term;
            table.deadlines.clear();
        }
        if leading_term.is_none() {
            return Vec::new();
        }
        table
            .deadlines
            .retain(|name, _| names.contains(name.as_str()));
        let mut lapsed = Vec::new();
        for (name, revision) in registered {
            // A name is copied only for a node seen for the first time.
            let deadline = match table.deadlines.get(name) {
                Some(deadline) => *deadline,
                None => {
                    let deadline = now + self.ttl;
                    table.deadlines.insert(name.clone(), deadline);
                    deadline
                }
            };
            if deadline < now {
                lapsed.push(LapsedNode {
                    name: name.clone(),
                    revision: *revision,
                });
            }
        }
        lapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(names: &[&str]) -> Vec<(String, u64)> {
        names.iter().map(|n| ((*n).to_string(), 1)).collect()
    }

    fn names(lapsed: &[LapsedNode]) -> Vec<&str> {
        lapsed.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn only_nodes_that_stopped_heartbeating_lapse() {
        let leases = Leases::new(Duration::from_secs(10));
        let start = Instant::now();
        let nodes = registered(&["a", "b"]);
        assert!(leases.lapsed(Some(1), &nodes, start).is_empty());
        leases.renew_at("a", start + Duration::from_secs(5));
        let later = start + Duration::from_secs(11);
        assert_eq!(names(&leases.lapsed(Some(1), &nodes, later)), ["b"]);
    }

    #[test]
    fn a_node_that_left_the_registry_starts_afresh_when_it_returns() {
        let leases = Leases::new(Duration::from_secs(10));
        let start = Instant::now();
        leases.lapsed(Some(1), &registered(&["a", "b"]), start);
        // `b` leaves the registry (deregistered, expired) and so the table.
        let later = start + Duration::from_secs(5);
        assert!(
            leases
                .lapsed(Some(1), &registered(&["a"]), later)
                .is_empty()
        );
        // Back, `b` gets a full lease from when it is seen again; `a`'s ran out.
        let much_later = start + Duration::from_secs(11);
        let nodes = registered(&["a", "b"]);
        assert_eq!(names(&leases.lapsed(Some(1), &nodes, much_later)), ["a"]);
    }

    #[test]
    fn a_new_term_grants_every_node_a_full_lease() {
        let leases = Leases::new(Duration::from_secs(10));
        let start = Instant::now();
        let nodes = registered(&["a"]);
        leases.lapsed(Some(1), &nodes, start);
        // Leadership moves away and comes back in a later term, long after `a` last spoke.
        assert!(leases.lapsed(None, &nodes, start).is_empty());
        let much_later = start + Duration::from_secs(60);
        assert!(leases.lapsed(Some(3), &nodes, much_later).is_empty());
        let after_grace = much_later + Duration::from_secs(11);
        assert_eq!(names(&leases.lapsed(Some(3), &nodes, after_grace)), ["a"]);
    }
}
