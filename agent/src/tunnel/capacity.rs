//! How many streams each HTTP/2 connection to one destination may carry and carries, and which
//! connection a request takes: the first with a free stream, else a new one up to the cap, else
//! the least loaded, where it waits its turn for a stream, as Envoy's HTTP/2 pool does. Plain
//! counts, one decision and one wait; never does I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What a request should do with the connections a destination has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Take a free stream on this connection (an index into the loads given).
    Use(usize),
    /// Every connection is full and there are fewer than the cap: open another.
    Open,
    /// Every connection is full and there are as many as the cap: wait on this one, the least
    /// loaded, for a stream to end.
    Queue(usize),
}

/// Picks a connection among `loads`, each `(streams in flight, streams it may carry)` of an
/// open connection that is not draining, oldest first. The oldest with room is taken, so a
/// burst's extra connections go quiet once it has passed.
pub fn choose(loads: impl IntoIterator<Item = (u32, u32)>, max_connections: usize) -> Choice {
    let mut count = 0;
    // The connection with the fewest streams above what it may carry, first of equals.
    let mut least: Option<(usize, u32)> = None;
    for (index, (in_flight, capacity)) in loads.into_iter().enumerate() {
        if in_flight < capacity {
            return Choice::Use(index);
        }
        let over = in_flight - capacity;
        if least.is_none_or(|(_, fewest)| over < fewest) {
            least = Some((index, over));
        }
        count += 1;
    }
    match least {
        Some((index, _)) if count >= max_connections => Choice::Queue(index),
        _ => Choice::Open,
    }
}

/// The live state of one connection, shared by the pool, the reader of its server's frames
/// (which records what they say) and the requests on it ([`StreamSlot`]).
#[derive(Debug)]
pub struct ConnectionLoad {
    /// Streams opened by requests on it that have not ended.
    in_flight: AtomicU32,
    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS`; unlimited until it says (RFC 9113
    /// §6.5.2).
    server_max: AtomicU32,
    /// A GOAWAY arrived, or it refused a request: it takes no new requests; those on it finish.
    draining: AtomicBool,
    /// Woken when the server's first SETTINGS have been read.
    settings: Notify,
    /// `peer` or `instance`, for the metric of GOAWAYs.
    to: &'static str,
    /// When it was opened: what `last_active_ms` counts from.
    opened: Instant,
    /// When its last stream ended (or it was opened), in milliseconds after `opened`.
    last_active_ms: AtomicU64,
    /// Requests given it while it was full ([`Choice::Queue`]) that wait for a stream: counted
    /// in `in_flight` too, but not sent yet.
    queued: AtomicU32,
    /// Woken when a stream ends, the server's limit changes or it drains, for the queued.
    turn: Notify,
}

impl ConnectionLoad {
    /// The state of a new connection toward a `to` (`peer` or `instance`).
    pub fn new(to: &'static str) -> Self {
        ConnectionLoad {
            in_flight: AtomicU32::new(0),
            server_max: AtomicU32::new(u32::MAX),
            draining: AtomicBool::new(false),
            settings: Notify::new(),
            to,
            opened: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            queued: AtomicU32::new(0),
            turn: Notify::new(),
        }
    }

    /// How long it has carried no stream; `None` while it carries one.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight() > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        Some(self.opened.elapsed().saturating_sub(last))
    }

    /// Notes that its last stream ended now.
    fn went_idle(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(now, Ordering::Relaxed);
    }

    /// Records the server's `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub fn server_allows(&self, max_streams: u32) {
        self.server_max.store(max_streams, Ordering::Relaxed);
        self.turn.notify_waiters();
    }

    /// Records that a SETTINGS frame of the server has been read whole.
    pub fn settings_arrived(&self) {
        // A permit is kept when nobody waits yet, so the wait never misses it.
        self.settings.notify_one();
    }

    /// Records the server's GOAWAY: the connection drains.
    pub fn went_away(&self) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            crate::metrics::http2_goaway(self.to);
        }
        self.turn.notify_waiters();
    }

    /// Waits until the server's first SETTINGS have been read, so the first requests on the
    /// connection are counted against its own limit rather than a guess.
    pub async fn settings_received(&self) {
        self.settings.notified().await;
    }

    /// Stops handing the connection out; the requests on it go on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.turn.notify_waiters();
    }

    /// Whether the connection takes no new requests.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Streams in flight on it now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The streams it may carry: the server's limit or `limit`, whichever is lower.
    pub fn capacity(&self, limit: u32) -> u32 {
        self.server_max.load(Ordering::Relaxed).min(limit)
    }

    /// Counts one more stream on the connection until the returned slot drops.
    pub fn take_stream(self: &Arc<Self>) -> StreamSlot {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        StreamSlot(Arc::clone(self))
    }

    /// Counts one more stream on a full connection, queued until [`Queued::turn`] lets it go.
    pub fn queue_stream(self: &Arc<Self>) -> (StreamSlot, Queued) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let stream = self.take_stream();
        (stream, Queued(Some(Arc::clone(self))))
    }
}

/// A request's place in the queue of a full connection, from [`ConnectionLoad::queue_stream`]
/// until its turn comes (or it is dropped, when the call gave up).
#[derive(Debug)]
pub struct Queued(Option<Arc<ConnectionLoad>>);

impl Queued {
    /// Waits until fewer streams than the connection may carry (with `limit`, ours) are sent
    /// and not ended, then takes one: the request is sent only then, so it waits here, where
    /// the service's `maxPending` counts it, rather than inside the h2 crate, where nothing
    /// does. A connection that drains lets every queued request go at once; they fail there as
    /// never processed and are sent again elsewhere.
    pub async fn turn(mut self, limit: u32) {
        let Some(load) = self.0.take() else {
            return;
        };
        loop {
            let turn = load.turn.notified();
            tokio::pin!(turn);
            turn.as_mut().enable();
            let queued = load.queued.load(Ordering::Relaxed);
            // This request is one of them, so there is always one to take.
            let Some(after) = queued.checked_sub(1) else {
                return;
            };
            let sent = load.in_flight().saturating_sub(queued);
            let free = sent < load.capacity(limit) || load.is_draining();
            if free
                && load
                    .queued
                    .compare_exchange(queued, after, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            if !free {
                turn.await;
            }
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if let Some(load) = self.0.take() {
            load.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One stream's place in its connection's count, held from the moment a request is given the
/// connection until its answer has ended (or failed, or was dropped).
#[derive(Debug)]
pub struct StreamSlot(Arc<ConnectionLoad>);

impl StreamSlot {
    /// The connection the stream is on.
    pub fn connection(&self) -> &ConnectionLoad {
        &self.0
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.went_idle();
        }
        if self.0.queued.load(Ordering::Relaxed) > 0 {
            self.0.turn.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_connection_with_a_free_stream_is_taken() {
        assert_eq!(choose([(2, 2), (1, 2), (0, 2)], 8), Choice::Use(1));
        assert_eq!(choose([(0, 100)], 8), Choice::Use(0));
    }

    #[test]
    fn full_connections_open_another_up_to_the_cap_then_queue_on_the_least_loaded() {
        assert_eq!(choose([], 8), Choice::Open);
        assert_eq!(choose([(2, 2), (3, 3)], 3), Choice::Open);
        assert_eq!(choose([(4, 2), (3, 2), (3, 2)], 3), Choice::Queue(1));
        // A server that allows no stream for now still gets connections, then a queue.
        assert_eq!(choose([(0, 0)], 2), Choice::Open);
        assert_eq!(choose([(1, 0), (0, 0)], 2), Choice::Queue(1));
    }

    #[tokio::test]
    async fn a_queued_request_goes_once_a_stream_ends_and_leaves_the_queue_when_dropped() {
        let load = Arc::new(ConnectionLoad::new("instance"));
        load.server_allows(1);
        let first = load.take_stream();
        let (_second, queued) = load.queue_stream();
        let waiting = tokio::spawn(queued.turn(100));
        // One thread: the waiter runs until it waits.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the one stream is taken");
        drop(first);
        waiting.await.expect("its turn came");
        assert_eq!(load.queued.load(Ordering::Relaxed), 0);
        let (_third, gave_up) = load.queue_stream();
        drop(gave_up);
        assert_eq!(load.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_connection_carries_the_lower_of_the_servers_limit_and_ours() {
        let load = Arc::new(ConnectionLoad::new("instance"));
        assert_eq!(load.capacity(100), 100, "unlimited until the server says");
        load.server_allows(2);
        assert_eq!(load.capacity(100), 2);
        assert_eq!(load.capacity(1), 1);
        let first = load.take_stream();
        let second = load.take_stream();
        assert_eq!(load.in_flight(), 2);
        drop(first);
        assert_eq!(second.connection().in_flight(), 1);
        assert!(load.idle_for().is_none(), "a stream is on it");
        drop(second);
        assert!(load.idle_for().is_some(), "idle once its last stream ended");
        assert!(!load.is_draining());
        load.went_away();
        assert!(load.is_draining());
    }
}
