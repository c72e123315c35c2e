//! The heartbeats a follower answers itself and passes to the leader in batches (decision 45):
//! the queue of node names, the batch's wire form and its bounds. It never renews a lease (only
//! the leader does, [`crate::lease`]) and never does I/O; [`crate::keepers::heartbeat_flush`]
//! sends the batches.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Path of the batch RPC: a member passes the leader the nodes that heartbeated to it. A peer
/// RPC, so only a current member's certificate may call it.
pub const HEARTBEATS_PATH: &str = "/raft/heartbeats";

/// How often a follower sends the leader the names it queued: a heartbeat reaches the leader
/// at most this much later than the agent sent it.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Longest a follower waits for the leader's answer to a batch. While the last batch failed
/// (or this long passes without an answer) the follower stops answering heartbeats itself and
/// forwards each one, so agents hear the leader's own answer (or an error, and try another
/// node).
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a name whose batch failed is kept for the next one: past it, the heartbeat is
/// dropped (the agent has heartbeated again by then, or been told to try another node).
/// Bounds how much later than its heartbeat a retried renewal can land.
pub const RETRY_WINDOW: Duration = Duration::from_secs(1);

/// A batch of heartbeats, as a member sends it to the leader.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatBatch {
    /// The nodes that heartbeated (each once).
    pub nodes: Vec<String>,
}

/// The leader's answer to a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchAnswer {
    /// How many leases were renewed.
    pub renewed: u64,
    /// The names that are not registered: no lease was renewed for them.
    pub unknown: Vec<String>,
}

/// The largest batch body the leader reads: `max_names` names of the longest a registration
/// allows, quoted and separated, plus the envelope.
pub fn max_body_bytes(max_names: u32) -> usize {
    const ENVELOPE: usize = 64;
    (max_names as usize).saturating_mul(hyphae_policies::validate::MAX_NAME_LEN + 3) + ENVELOPE
}

/// How long a follower forwards the heartbeats of a node the leader said it does not know
/// (one default lease): long enough for the agent to get the leader's 404 and register again,
/// short enough that a name the leader learns again soon is batched again.
pub const UNKNOWN_FORWARDED_FOR: Duration = Duration::from_secs(15);

/// A follower's queue of heartbeats it answered and has not passed on yet.
#[derive(Debug)]
pub struct HeartbeatQueue {
    /// Each queued name with when it was first queued (for [`RETRY_WINDOW`]).
    pending: Mutex<HashMap<String, Instant>>,
    /// At most this many names wait (the registry's `maxNodes`): one more is not queued, and
    /// that heartbeat is forwarded on its own.
    max_names: usize,
    /// Whether the last batch reached a leader that took it: only then does this node answer
    /// heartbeats itself.
    delivering: AtomicBool,
    /// Names the leader said it does not know, with when it said so: their heartbeats are
    /// forwarded (the leader answers 404 and the agent registers again) for
    /// [`UNKNOWN_FORWARDED_FOR`], even while this node's own registry still has them (it may
    /// lag behind an expiry).
    unknown: Mutex<HashMap<String, Instant>>,
    /// Heartbeats answered here and queued (for `/v1/metrics`).
    queued: AtomicU64,
    /// Leases renewed here from members' batches (for `/v1/metrics`).
    renewed: AtomicU64,
}

impl HeartbeatQueue {
    /// An empty queue of at most `max_names` names, not delivering until a batch gets through.
    pub fn new(max_names: u32) -> Self {
        HeartbeatQueue {
            pending: Mutex::new(HashMap::new()),
            max_names: max_names as usize,
            delivering: AtomicBool::new(false),
            unknown: Mutex::new(HashMap::new()),
            queued: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
        }
    }

    /// The largest answer a batch of this queue's names can get: every name unknown.
    pub fn max_answer_bytes(&self) -> usize {
        max_body_bytes(self.max_names as u32)
    }

    /// Whether this node may answer heartbeats itself: its last batch reached the leader.
    pub fn delivering(&self) -> bool {
        self.delivering.load(Ordering::Acquire)
    }

    /// Records whether the last batch reached the leader.
    pub fn set_delivering(&self, delivering: bool) {
        self.delivering.store(delivering, Ordering::Release);
    }

    /// Queues `node`'s heartbeat for the next batch: false (nothing queued) while the last
    /// batch failed or the queue is full, and then the caller forwards the heartbeat.
    pub fn queue(&self, node: &str) -> bool {
        if !self.delivering() || self.reported_unknown(node, Instant::now()) {
            return false;
        }
        let mut pending = self.lock();
        if !pending.contains_key(node) {
            if pending.len() >= self.max_names {
                return false;
            }
            pending.insert(node.to_string(), Instant::now());
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Records the names a batch's answer said the leader does not know (at most `max_names`
    /// are kept; the oldest reports go first).
    pub fn leader_does_not_know(&self, names: Vec<String>, now: Instant) {
        let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        unknown
            .retain(|_, reported| now.saturating_duration_since(*reported) < UNKNOWN_FORWARDED_FOR);
        for name in names {
            if unknown.len() >= self.max_names {
                break;
            }
            unknown.insert(name, now);
        }
    }

    /// Whether the leader said lately that it does not know `node`.
    fn reported_unknown(&self, node: &str, now: Instant) -> bool {
        let unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        unknown.get(node).is_some_and(|reported| {
            now.saturating_duration_since(*reported) < UNKNOWN_FORWARDED_FOR
        })
    }

    /// Takes every queued name, with when each was queued, for a batch.
    pub fn take(&self) -> Vec<(String, Instant)> {
        self.lock().drain().collect()
    }

    /// Puts back the names of a batch that failed, except those queued longer than
    /// [`RETRY_WINDOW`] before `now` and any beyond the cap.
    pub fn retry(&self, names: Vec<(String, Instant)>, now: Instant) {
        let mut pending = self.lock();
        for (name, queued) in names {
            if now.saturating_duration_since(queued) > RETRY_WINDOW
                || pending.len() >= self.max_names
            {
                continue;
            }
            pending.entry(name).or_insert(queued);
        }
    }

    /// Counts `count` leases renewed from a member's batch.
    pub fn count_renewed(&self, count: u64) {
        self.renewed.fetch_add(count, Ordering::Relaxed);
    }

    /// The counters in Prometheus' text format.
    pub fn render(&self) -> String {
        format!(
            "# HELP hyphae_control_plane_heartbeats_batched_total Agent heartbeats this node answered itself and passed to the leader in a batch.\n# TYPE hyphae_control_plane_heartbeats_batched_total counter\nhyphae_control_plane_heartbeats_batched_total {}\n# HELP hyphae_control_plane_batched_renewals_total Leases this node renewed as leader from members' heartbeat batches.\n# TYPE hyphae_control_plane_batched_renewals_total counter\nhyphae_control_plane_batched_renewals_total {}\n",
            self.queued.load(Ordering::Relaxed),
            self.renewed.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_queued_until_a_batch_got_through() {
        let queue = HeartbeatQueue::new(10);
        assert!(!queue.queue("a"), "a new follower forwards");
        queue.set_delivering(true);
        assert!(queue.queue("a"));
        assert!(
            queue.queue("a"),
            "a name is queued once, answered each time"
        );
        assert_eq!(queue.take().len(), 1);
        queue.set_delivering(false);
        assert!(
            !queue.queue("b"),
            "after a failed batch, heartbeats are forwarded"
        );
    }

    #[test]
    fn a_node_the_leader_does_not_know_is_forwarded_for_a_while() {
        let queue = HeartbeatQueue::new(10);
        queue.set_delivering(true);
        let now = Instant::now();
        queue.leader_does_not_know(vec!["gone".into()], now);
        assert!(!queue.queue("gone"), "forwarded, so the leader answers 404");
        assert!(queue.queue("kept"));
        assert!(!queue.reported_unknown("gone", now + UNKNOWN_FORWARDED_FOR));
    }

    #[test]
    fn the_queue_is_bounded() {
        let queue = HeartbeatQueue::new(2);
        queue.set_delivering(true);
        assert!(queue.queue("a") && queue.queue("b"));
        assert!(!queue.queue("c"), "a full queue forwards the heartbeat");
        assert!(queue.queue("a"), "a queued name is still answered");
    }

    #[test]
    fn failed_names_are_retried_within_the_window_only() {
        let queue = HeartbeatQueue::new(10);
        queue.set_delivering(true);
        queue.queue("old");
        queue.queue("new");
        let taken = queue.take();
        let later = Instant::now() + RETRY_WINDOW / 2;
        queue.retry(taken.clone(), later);
        assert_eq!(queue.take().len(), 2, "both retried");
        queue.retry(taken, later + RETRY_WINDOW);
        assert!(queue.take().is_empty(), "too old to retry");
    }

    #[test]
    fn a_batch_body_of_the_largest_names_fits_the_bound() {
        let name = "a".repeat(hyphae_policies::validate::MAX_NAME_LEN);
        let batch = HeartbeatBatch {
            nodes: vec![name; 100],
        };
        let body = serde_json::to_vec(&batch).expect("serializable");
        assert!(body.len() <= max_body_bytes(100), "{}", body.len());
    }
}
