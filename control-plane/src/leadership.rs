//! A node's leadership state beside Raft: whether it is handing its leadership over, the writes
//! it lets into Raft meanwhile (none), elections it holds at another leader's request, and when
//! it last heard from a leader. Every pause ends by itself; this module never starts a transfer
//! (that is [`crate::transfer`]) nor an election (that is [`crate::keepers::election`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::time::Instant;

/// A node's part in transfers: as a voter, its elections held at a leader's request (each
/// hold ends by itself, or at a release); as the leader, the one transfer it runs at a time and
/// the gate every write into its log passes.
#[derive(Default)]
pub struct Transfers {
    running: AtomicBool,
    /// Shared by each write while it is in Raft; taken whole by a transfer, which so waits for
    /// the writes already let in and lets no new one in until it ends.
    writes: RwLock<()>,
    elections_held: Mutex<Option<Hold>>,
}

/// Elections held until `until`, or until a term after `term` begins (the transfer that asked
/// is over, one way or another: its leader may no longer be able to release the hold).
#[derive(Clone, Copy, Debug)]
struct Hold {
    until: Instant,
    term: u64,
}

/// The one transfer a leader runs; dropping it (however the transfer ends) lets the next one in.
pub(crate) struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// A write let into Raft: a transfer waits until every one of these is dropped.
pub type WriteAdmitted<'a> = RwLockReadGuard<'a, ()>;

/// Held by a transfer from the moment no write is in flight until it ends: nothing is added
/// to the leader's log meanwhile, so the target stays caught up.
pub(crate) type WritesClosed<'a> = RwLockWriteGuard<'a, ()>;

impl Transfers {
    /// Whether this node is handing its leadership over right now (it must not send anything
    /// that renews the voters' leader lease meanwhile).
    pub fn in_progress(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Lets one write into Raft, unless a transfer runs: then `None`, at once. Hold the answer
    /// until the write is committed or given up. Without this gate a write that passed a
    /// check just before a transfer began could reach the log after the target was judged
    /// caught up, and the target could not be elected.
    pub fn admit_write(&self) -> Option<WriteAdmitted<'_>> {
        if self.in_progress() {
            return None;
        }
        self.writes.try_read().ok()
    }

    /// Marks a transfer as running, unless one already is.
    pub(crate) fn start(&self) -> Option<Running<'_>> {
        self.running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| Running(&self.running))
    }

    /// Waits until the writes already admitted are done; no new one is admitted while the
    /// answer is held.
    pub(crate) async fn close_writes(&self) -> WritesClosed<'_> {
        self.writes.write().await
    }

    /// Holds this node's elections for `duration` from now, or until a term after `term` (the
    /// current one) begins; zero releases them at once.
    pub fn hold_elections(&self, duration: Duration, term: u64) {
        let hold = (!duration.is_zero()).then(|| Hold {
            until: Instant::now() + duration,
            term,
        });
        *self
            .elections_held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = hold;
    }

    /// Whether a leader's transfer asked this node not to stand for election now, in `term`.
    pub fn elections_held(&self, term: u64) -> bool {
        let held = self
            .elections_held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.is_some_and(|hold| Instant::now() < hold.until && term <= hold.term)
    }
}

/// When this node last heard from a leader it follows: an append or snapshot chunk Raft
/// accepted, or a vote it granted. While that is recent the node tells a candidate it would not
/// vote ([`crate::pre_vote`]), and does not stand itself.
#[derive(Default)]
pub struct LeaderContact(Mutex<Option<Instant>>);

impl LeaderContact {
    /// Notes that a leader (or a candidate this node voted for) was heard just now.
    pub fn heard(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
    }

    /// When a leader was last heard, if ever since this node started.
    pub fn last(&self) -> Option<Instant> {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a leader was heard within `lease` from now.
    pub fn within(&self, lease: Duration) -> bool {
        self.last().is_some_and(|last| last.elapsed() < lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transfer_waits_for_admitted_writes_and_admits_none_until_it_ends() {
        let transfers = Transfers::default();
        let admitted = transfers.admit_write().expect("no transfer yet");
        let running = transfers.start().expect("the first transfer");
        assert!(transfers.admit_write().is_none(), "refused while it runs");
        let mut closing = Box::pin(transfers.close_writes());
        assert!(
            futures_poll_once(&mut closing).await.is_none(),
            "an admitted write is still in flight"
        );
        drop(admitted);
        let closed = closing.await;
        drop(closed);
        drop(running);
        assert!(
            transfers.admit_write().is_some(),
            "writes resume afterwards"
        );
    }

    #[tokio::test]
    async fn a_hold_ends_by_itself_at_a_new_term_or_at_a_release() {
        let transfers = Transfers::default();
        assert!(!transfers.elections_held(7));
        transfers.hold_elections(Duration::from_secs(60), 7);
        assert!(transfers.elections_held(7));
        assert!(!transfers.elections_held(8), "a new term ends the hold");
        transfers.hold_elections(Duration::ZERO, 7);
        assert!(!transfers.elections_held(7), "released");
        transfers.hold_elections(Duration::from_millis(20), 7);
        let deadline = Instant::now() + Duration::from_secs(10);
        while transfers.elections_held(7) {
            assert!(Instant::now() < deadline, "a hold must run out by itself");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Polls `future` once: its output if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(
        future: &mut F,
    ) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
