//! The node's one fan-out task: at each applied revision it offers every open watch stream its
//! next line, shared by all the streams that hold the same revision, and it sends heartbeats
//! and gives up on readers that stopped reading. It never waits for a reader: a stream whose
//! queue is full keeps what it holds and is caught up on a later pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc;
use hyphae_policies::watch::WatchEvent;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Feed, HEARTBEAT_INTERVAL, SEND_PATIENCE, StreamSlot, catch_up, encode};

/// How often the task looks for streams due a heartbeat: every stream idle for at least this
/// long gets one, so none goes longer than [`HEARTBEAT_INTERVAL`] without a line.
pub const HEARTBEAT_CHECK: Duration = HEARTBEAT_INTERVAL.checked_div(2).expect("not by zero");
/// While some stream's queue is full, how often the task tries it again (with a delta of
/// everything it lacks by then), besides at every revision.
pub const STALLED_RETRY: Duration = Duration::from_millis(250);

/// One open stream as the fan-out task holds it.
pub(super) struct Subscriber {
    /// The stream's line queue; the response body is its other end.
    lines: mpsc::Sender<Bytes>,
    /// The revision the reader holds once it has read everything queued.
    sent: u64,
    /// When a line was last queued (for heartbeats).
    last_line: Instant,
    /// Since when its queue has been full, if it is.
    stalled_since: Option<Instant>,
    /// Its place in the node's count of streams, given back when it is dropped.
    _slot: StreamSlot,
}

/// What became of a line offered to a stream.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// Queued.
    Queued,
    /// Its queue is full; try again later.
    Stalled,
    /// The reader left, or has not read for [`SEND_PATIENCE`]: drop the stream.
    Gone,
}

impl Subscriber {
    /// A stream whose first line (reaching `sent`) is already queued in `lines`.
    pub(super) fn new(lines: mpsc::Sender<Bytes>, sent: u64, slot: StreamSlot) -> Subscriber {
        Subscriber {
            lines,
            sent,
            last_line: Instant::now(),
            stalled_since: None,
            _slot: slot,
        }
    }

    /// Queues `line` without waiting; a reader whose queue stays full for `patience` is given
    /// up on.
    fn offer(&mut self, line: Bytes, now: Instant, patience: Duration) -> Offer {
        match self.lines.try_send(line) {
            Ok(()) => {
                self.last_line = now;
                self.stalled_since = None;
                Offer::Queued
            }
            Err(error) if error.is_full() => {
                let since = *self.stalled_since.get_or_insert(now);
                if now.duration_since(since) >= patience {
                    Offer::Gone
                } else {
                    Offer::Stalled
                }
            }
            Err(_) => Offer::Gone,
        }
    }
}

/// Feeds `feed`'s streams until `shutdown` or until the state machine goes away; dropping the
/// streams' queues then ends their responses.
pub(super) async fn run(
    feed: Arc<Feed>,
    mut revisions: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let mut streams: Vec<Subscriber> = Vec::new();
    let mut heartbeats = tokio::time::interval(HEARTBEAT_CHECK);
    heartbeats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stalled = streams.iter().any(|s| s.stalled_since.is_some());
        let heartbeat = tokio::select! {
            () = shutdown.cancelled() => return,
            changed = revisions.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            () = feed.joined.notified() => false,
            _ = heartbeats.tick() => true,
            () = tokio::time::sleep(STALLED_RETRY), if stalled => false,
        };
        let latest = *revisions.borrow_and_update();
        streams.append(&mut feed.take_joining());
        if !deliver(&feed, &mut streams, latest).await {
            return;
        }
        if heartbeat {
            send_heartbeats(&mut streams);
        }
    }
}

/// Offers every stream behind `latest` what it lacks; false when a line could not be encoded
/// (the streams end rather than skip a change).
async fn deliver(feed: &Feed, streams: &mut Vec<Subscriber>, latest: u64) -> bool {
    // Almost every stream holds the same revision: each distinct one is read and encoded
    // once per pass.
    let mut steps: HashMap<u64, (u64, Option<Bytes>)> = HashMap::new();
    for stream in streams.iter() {
        if stream.sent < latest && !steps.contains_key(&stream.sent) {
            let held = stream.sent;
            let (event, revision) = feed
                .reader
                .read_with_changes(|state, changes| {
                    (catch_up(state, changes, held), state.revision())
                })
                .await;
            let step = match event {
                // Only blank, membership or no-change entries: nothing to tell.
                None => (revision, None),
                Some(event) => match encode(&event) {
                    Some(line) => (event.revision().unwrap_or(revision), Some(line)),
                    None => return false,
                },
            };
            steps.insert(held, step);
        }
    }
    let now = Instant::now();
    streams.retain_mut(|stream| {
        if stream.lines.is_closed() {
            return false;
        }
        let Some((revision, line)) = steps.get(&stream.sent) else {
            return true;
        };
        let Some(line) = line else {
            stream.sent = stream.sent.max(*revision);
            return true;
        };
        match stream.offer(line.clone(), now, SEND_PATIENCE) {
            Offer::Queued => {
                stream.sent = stream.sent.max(*revision);
                true
            }
            Offer::Stalled => true,
            Offer::Gone => false,
        }
    });
    true
}

/// A heartbeat, with the revision it holds, to every stream that has had no line for
/// [`HEARTBEAT_CHECK`].
fn send_heartbeats(streams: &mut Vec<Subscriber>) {
    let now = Instant::now();
    let mut lines: HashMap<u64, Option<Bytes>> = HashMap::new();
    streams.retain_mut(|stream| {
        if now.duration_since(stream.last_line) < HEARTBEAT_CHECK {
            return true;
        }
        let sent = stream.sent;
        let line = lines
            .entry(sent)
            .or_insert_with(|| encode(&WatchEvent::Heartbeat { revision: sent }));
        let Some(line) = line.clone() else {
            return false;
        };
        stream.offer(line, now, SEND_PATIENCE) != Offer::Gone
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn a_stream_is_given_up_on_when_its_reader_stopped_reading_or_left() {
        let patience = Duration::from_secs(15);
        let open = Arc::new(AtomicUsize::new(0));
        let slot = || StreamSlot::take(&open, 10).expect("under the limit");
        let line = || Bytes::from_static(b"{}\n");
        // No buffer: one line in flight (the sender's own place), then the reader must take it.
        let (lines, mut reader) = mpsc::channel(0);
        let mut stream = Subscriber::new(lines, 1, slot());
        let start = Instant::now();
        assert_eq!(stream.offer(line(), start, patience), Offer::Queued);
        assert_eq!(stream.offer(line(), start, patience), Offer::Stalled);
        let later = start + patience - Duration::from_millis(1);
        assert_eq!(stream.offer(line(), later, patience), Offer::Stalled);
        assert!(reader.try_recv().is_ok(), "the queued line");
        assert_eq!(
            stream.offer(line(), later, patience),
            Offer::Queued,
            "a reader that reads again gets lines again, and its patience starts over"
        );
        assert_eq!(stream.offer(line(), later, patience), Offer::Stalled);
        assert_eq!(
            stream.offer(line(), later + patience, patience),
            Offer::Gone,
            "a reader that takes nothing for the patience is given up on"
        );
        assert_eq!(open.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(stream);
        assert_eq!(
            open.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "its place is given back"
        );

        let (lines, reader) = mpsc::channel(0);
        let mut stream = Subscriber::new(lines, 1, slot());
        drop(reader);
        assert_eq!(
            stream.offer(line(), start, patience),
            Offer::Gone,
            "the reader left"
        );
    }
}
