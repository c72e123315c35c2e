//! The election keeper: openraft's own election timer is off (decision 47); this loop stands a
//! voter for election when it has heard from no leader for a random time in
//! `[electionTimeoutMin, electionTimeoutMax)`, and only after a quorum of voters said, in a
//! pre-vote ([`crate::pre_vote`]), that they would vote for it. A lone voter stands at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::pre_vote::{self, PreVoteRequest};
use crate::raft::NodeId;

/// Longest the keeper sleeps between looks at the leader's silence; the failover time is
/// late by at most this much.
const LOOK_EVERY_MAX: Duration = Duration::from_millis(25);

/// Runs the election keeper of `node` until `shutdown`.
pub async fn keep(node: Arc<Node>, shutdown: CancellationToken) {
    let spec = &node.config.spec;
    let (min, max) = (
        spec.election_timeout_min.get(),
        spec.election_timeout_max.get(),
    );
    let look_every = (spec.heartbeat_interval.get() / 4).min(LOOK_EVERY_MAX);
    let me = spec.id;
    let mut timeout = random_between(min, max);
    // Counted from the start, so a cluster starting together does not stand all at once.
    let mut quiet_since = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(look_every) => {}
        }
        let (state, term, configs) = {
            let metrics = node.raft.metrics();
            let metrics = metrics.borrow();
            let configs: Vec<BTreeSet<NodeId>> = metrics
                .membership_config
                .membership()
                .get_joint_config()
                .clone();
            (metrics.state, metrics.current_term, configs)
        };
        let voter = configs.iter().any(|config| config.contains(&me));
        if state == ServerState::Leader || !voter || node.transfers.elections_held(term) {
            quiet_since = Instant::now();
            continue;
        }
        if let Some(heard) = node.leader_contact.last() {
            quiet_since = quiet_since.max(heard);
        }
        let alone = pre_vote::quorum_of_each(&configs, &BTreeSet::from([me]));
        if !alone && quiet_since.elapsed() < timeout {
            continue;
        }
        // Whatever comes of it, the next try waits a whole new timeout.
        quiet_since = Instant::now();
        timeout = random_between(min, max);
        let last_log_id = match pre_vote::last_log_id(&node).await {
            Ok(last) => last,
            Err(reason) => {
                tracing::warn!(%reason, "cannot read the last log entry; not standing");
                continue;
            }
        };
        let request = PreVoteRequest {
            term: term + 1,
            last_log_id,
        };
        if !pre_vote::canvass(&node, &configs, request, min).await {
            tracing::debug!(
                term = term + 1,
                "no quorum would vote for this node; not standing"
            );
            continue;
        }
        tracing::info!(
            term = term + 1,
            "heard from no leader and a quorum would vote; standing for election"
        );
        if let Err(error) = node.raft.trigger().elect().await {
            tracing::warn!(%error, "cannot start an election");
        }
    }
}

fn random_between(min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    rand::rng().random_range(min..max)
}
