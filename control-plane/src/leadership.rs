//! A node's leadership state beside Raft: whether it is handing its leadership over, and
//! elections it paused at another leader's request. Every pause ends by itself; this module
//! never starts a transfer (that is [`crate::transfer`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::raft::Raft;

/// A node's part in transfers: as a voter, its elections paused at a leader's request (each
/// hold resumes them by itself when it runs out, unless a newer hold or a release came since);
/// as the leader, the one transfer it runs at a time.
#[derive(Default)]
pub struct Transfers {
    generation: Arc<AtomicU64>,
    running: AtomicBool,
}

/// The one transfer a leader runs; dropping it (however the transfer ends) lets the next one in.
pub(crate) struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Transfers {
    /// Whether this node is handing its leadership over right now (it must not send anything
    /// that renews the voters' leader lease meanwhile).
    pub fn in_progress(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Marks a transfer as running, unless one already is.
    pub(crate) fn start(&self) -> Option<Running<'_>> {
        self.running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| Running(&self.running))
    }

    /// Stops elections for `duration` (nothing when it is zero), then resumes them.
    pub fn hold(&self, raft: &Raft, duration: Duration) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        if duration.is_zero() {
            raft.runtime_config().elect(true);
            return;
        }
        raft.runtime_config().elect(false);
        let current = Arc::clone(&self.generation);
        let raft = raft.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            if current.load(Ordering::SeqCst) == generation {
                raft.runtime_config().elect(true);
            }
        });
    }
}
