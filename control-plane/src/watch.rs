//! Watch streams: a full snapshot (or, for a reader that reconnects with `?since=REV`, only what
//! changed after REV), then a delta each time a revision changes something, with heartbeats in
//! between so a dead stream is noticed. Any node serves them from its own applied state; the
//! deltas come from the node's [`ChangeLog`], so a revision costs each stream only what it
//! changed.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc;
use futures_core::Stream;
use http_body::Frame;
use hyphae_policies::watch::{PolicyRecord, WatchEvent};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub mod connection;
mod fanout;

use crate::changes::ChangeLog;
use crate::state::{PolicyKey, State, StateKey, StoredPolicy};
use crate::store::StateReader;

/// How often an idle stream carries a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a node that is behind a reconnecting reader's `since` (or has no cluster identity
/// yet) waits to catch up before it refuses the watch, so the reader tries another node.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// Events buffered per stream before the writer waits for the reader (one more: the channel
/// keeps a place for its one sender).
const STREAM_BUFFER: usize = 16;

/// A response body fed by a channel of lines. The channel is futures' bounded mpsc rather than
/// tokio's: tokio's allocates a block of 32 slots (1 KiB of `Bytes`) for every channel up
/// front, futures' only a node per queued line, and a node holds thousands of these mostly
/// idle streams (decision 50).
pub struct ChannelBody {
    lines: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// The next queued line; `None` once the fan-out has dropped the stream (its reader fell
    /// too far behind, or the node is stopping).
    pub async fn next_line(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| Pin::new(&mut self.lines).poll_next(cx)).await
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.lines)
            .poll_next(cx)
            .map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

fn record(policy: &StoredPolicy) -> PolicyRecord {
    PolicyRecord {
        kind: policy.kind.clone(),
        name: policy.name.clone(),
        source: policy.source.clone(),
        revision: policy.revision,
    }
}

/// Everything the state holds, as one event.
fn snapshot(state: &State) -> WatchEvent {
    WatchEvent::Snapshot {
        revision: state.revision(),
        policies: state.policies().map(record).collect(),
        nodes: state.nodes().cloned().collect(),
        cluster: state.cluster_id().map(str::to_owned),
        virtual_ips: state.virtual_ips().assigned().clone(),
    }
}

/// The current value (or the removal) of every key in `keys`, as one event at the state's
/// revision.
fn delta(state: &State, keys: BTreeSet<StateKey>) -> WatchEvent {
    let (mut upserts, mut deletes, mut node_upserts, mut node_deletes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut virtual_ips = None;
    for key in keys {
        match key {
            StateKey::Policy(PolicyKey { kind, name }) => match state.policy(&kind, &name) {
                Some(policy) => upserts.push(record(policy)),
                None => deletes.push((kind, name)),
            },
            StateKey::Node(name) => match state.node(&name) {
                Some(node) => node_upserts.push(node.clone()),
                None => node_deletes.push(name),
            },
            StateKey::VirtualIps => virtual_ips = Some(state.virtual_ips().assigned().clone()),
            // Readers learn the identity from snapshots; it never changes once set.
            StateKey::Cluster | StateKey::Tokens | StateKey::Ca | StateKey::JoinTokens => {}
        }
    }
    WatchEvent::Delta {
        revision: state.revision(),
        upserts,
        deletes,
        node_upserts,
        node_deletes,
        virtual_ips,
    }
}

/// What to send a reader that holds `held`: a delta of what changed since, nothing when
/// nothing did, or a snapshot when those changes are no longer remembered.
fn catch_up(state: &State, changes: &ChangeLog, held: u64) -> Option<WatchEvent> {
    match changes.since(held) {
        None => Some(snapshot(state)),
        Some(keys) if keys.is_empty() => None,
        Some(keys) => Some(delta(state, keys)),
    }
}

/// What a reader says it holds when it (re)connects: `?since=REV&cluster=ID`.
#[derive(Debug, Default)]
pub struct Held {
    /// The revision it holds (absent or 0: nothing).
    pub revision: Option<u64>,
    /// The identity of the cluster that revision came from, when the reader knows it.
    pub cluster: Option<String>,
}

/// Why a node will not serve a watch now; the reader should try another node.
#[derive(Debug)]
pub struct Refusal {
    /// A stable code: `not-ready` (no cluster identity yet: not initialized, or not caught up
    /// with its first leader), `behind` (older than what the reader holds) or
    /// `too-many-watchers` (at `limits.maxWatchStreams`).
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
}

/// One open stream's place in a feed's count; given back when dropped.
struct StreamSlot(Arc<std::sync::atomic::AtomicUsize>);

impl StreamSlot {
    /// A place, unless `max` streams are open already (503 `too-many-watchers`).
    fn take(open: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Result<Self, Refusal> {
        use std::sync::atomic::Ordering;
        open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .map(|_| StreamSlot(Arc::clone(open)))
            .map_err(|n| Refusal {
                code: "too-many-watchers",
                message: format!(
                    "this node serves {n} watch streams, its limit (limits.maxWatchStreams); try another node"
                ),
            })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How a stream opens: with the shared snapshot of the state, or with an event of its own.
enum Opening {
    /// The whole state ([`Feed::snapshot_line`]).
    Snapshot,
    /// What the reader lacks (a delta), or a heartbeat when it lacks nothing.
    Event(WatchEvent),
}

/// The first event for a reader that holds `held`, or why this node cannot serve it. Never
/// sends a reader back in time: a node behind the reader's revision of the same cluster waits
/// up to [`CATCH_UP_WAIT`], then refuses; a reader from another (rebuilt) cluster gets a
/// snapshot.
async fn first_event(
    reader: &StateReader,
    revisions: &mut watch::Receiver<u64>,
    held: &Held,
) -> Result<Opening, Refusal> {
    let since = held.revision.filter(|&since| since > 0);
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    loop {
        revisions.borrow_and_update();
        let decided = reader
            .read_with_changes(|state, changes| {
                // No identity yet: not initialized, or not caught up with its first leader.
                let cluster = state.cluster_id()?;
                let Some(since) = since else {
                    return Some(Ok(Opening::Snapshot));
                };
                if held.cluster.as_deref().is_some_and(|held| held != cluster) {
                    return Some(Ok(Opening::Snapshot));
                }
                if state.revision() < since {
                    return None;
                }
                Some(Ok(match changes.since(since) {
                    None => Opening::Snapshot,
                    Some(keys) if keys.is_empty() => {
                        Opening::Event(WatchEvent::Heartbeat { revision: since })
                    }
                    Some(keys) => Opening::Event(delta(state, keys)),
                }))
            })
            .await;
        if let Some(decided) = decided {
            return decided;
        }
        if tokio::time::timeout_at(deadline, revisions.changed())
            .await
            .is_err()
        {
            let (cluster, revision) = reader
                .read(|state| (state.cluster_id().is_some(), state.revision()))
                .await;
            return Err(if cluster {
                Refusal {
                    code: "behind",
                    message: format!(
                        "this node is at revision {revision}, behind the {} you hold; try another node",
                        since.unwrap_or_default()
                    ),
                }
            } else {
                Refusal {
                    code: "not-ready",
                    message:
                        "this node has not joined an initialized cluster yet; try another node"
                            .into(),
                }
            });
        }
    }
}

/// The watch streams of one node: its applied state, the streams that just opened, and the one
/// task ([`fanout`]) that feeds them all. At each revision almost every stream holds the same
/// revision, so the delta is read and encoded once, not once per stream, and no stream has a
/// task, a timer or a wake-up of its own (decision 53).
pub struct Feed {
    reader: StateReader,
    /// The last snapshot line encoded, with its revision: thousands of agents reconnecting
    /// after a restart cost one encode per revision, not one per stream.
    snapshot: tokio::sync::Mutex<Option<(u64, Bytes)>>,
    /// How many snapshot lines this feed encoded (for tests and metrics).
    snapshot_encodes: std::sync::atomic::AtomicU64,
    /// Streams open now, against `max_streams`.
    open_streams: Arc<std::sync::atomic::AtomicUsize>,
    max_streams: usize,
    /// Streams whose first line is queued, waiting for the fan-out task to take them.
    joining: std::sync::Mutex<Joining>,
    /// Wakes the fan-out task when a stream joins.
    joined: tokio::sync::Notify,
    /// Whether the fan-out task was started (by the first stream).
    started: std::sync::atomic::AtomicBool,
}

/// Streams handed to the fan-out task.
#[derive(Default)]
struct Joining {
    streams: Vec<fanout::Subscriber>,
    /// The task has ended (the node is stopping): a stream that joins now is ended at once.
    closed: bool,
}

impl Feed {
    /// The feed of the state `reader` reads, serving at most `max_streams` streams at once.
    pub fn new(reader: StateReader, max_streams: u32) -> Arc<Feed> {
        Arc::new(Feed {
            reader,
            snapshot: tokio::sync::Mutex::new(None),
            snapshot_encodes: std::sync::atomic::AtomicU64::new(0),
            open_streams: Arc::default(),
            max_streams: max_streams as usize,
            joining: std::sync::Mutex::default(),
            joined: tokio::sync::Notify::new(),
            started: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The snapshot of the current state as an encoded line, with its revision: encoded once per
    /// revision however many streams open meanwhile (they wait for the one encode and share
    /// it). `None` if it could not be encoded.
    async fn snapshot_line(&self) -> Option<(u64, Bytes)> {
        let mut cached = self.snapshot.lock().await;
        let current = self.reader.read(State::revision).await;
        if let Some((revision, line)) = cached.as_ref()
            && *revision == current
        {
            return Some((*revision, line.clone()));
        }
        let event = self.reader.read(snapshot).await;
        let line = encode(&event)?;
        self.snapshot_encodes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let revision = event.revision()?;
        *cached = Some((revision, line.clone()));
        Some((revision, line))
    }

    /// How many snapshot lines this feed has encoded so far.
    pub fn snapshot_encodes(&self) -> u64 {
        self.snapshot_encodes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hands `stream` to the fan-out task, starting the task with the first stream; a stream
    /// that joins after the task ended (the node is stopping) is dropped, which ends it.
    fn join(self: &Arc<Self>, stream: fanout::Subscriber, shutdown: &CancellationToken) {
        if !self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let feed = Arc::clone(self);
            let revisions = self.reader.subscribe();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                fanout::run(Arc::clone(&feed), revisions, shutdown).await;
                let mut joining = feed.lock_joining();
                joining.closed = true;
                joining.streams.clear();
            });
        }
        let mut joining = self.lock_joining();
        if !joining.closed {
            joining.streams.push(stream);
        }
        drop(joining);
        self.joined.notify_one();
    }

    /// The streams that joined since the last call.
    fn take_joining(&self) -> Vec<fanout::Subscriber> {
        std::mem::take(&mut self.lock_joining().streams)
    }

    /// The joining list; it holds no invariant a panic elsewhere could break.
    fn lock_joining(&self) -> std::sync::MutexGuard<'_, Joining> {
        self.joining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Opens a stream for one reader that holds `held`: its first event is decided before the
/// answer starts (a refusal is an error status, not a stream) and queued, then the node's
/// fan-out task feeds it until the reader goes away or `shutdown`.
pub async fn open(
    feed: Arc<Feed>,
    held: Held,
    shutdown: CancellationToken,
) -> Result<ChannelBody, Refusal> {
    let slot = StreamSlot::take(&feed.open_streams, feed.max_streams)?;
    let mut revisions = feed.reader.subscribe();
    let (sent, first) = match first_event(&feed.reader, &mut revisions, &held).await? {
        Opening::Snapshot => feed.snapshot_line().await,
        Opening::Event(event) => encode(&event)
            .zip(event.revision())
            .map(|(line, r)| (r, line)),
    }
    .ok_or_else(|| Refusal {
        code: "encode",
        message: "this node could not encode the stream's first event; try another node".into(),
    })?;
    let (mut lines, body) = mpsc::channel(STREAM_BUFFER);
    // The queue is new and empty: the first line always fits.
    if lines.try_send(first).is_err() {
        return Err(Refusal {
            code: "encode",
            message: "this node could not queue the stream's first event; try another node".into(),
        });
    }
    feed.join(fanout::Subscriber::new(lines, sent, slot), &shutdown);
    Ok(ChannelBody { lines: body })
}

/// One event as a JSON line.
fn encode(event: &WatchEvent) -> Option<Bytes> {
    let mut line = serde_json::to_vec(event).ok()?;
    line.push(b'\n');
    Some(Bytes::from(line))
}

/// Longest a stream waits for its reader to take a line before it drops the stream: a reader
/// that stopped reading must not hold its place (and buffers) for ever.
pub const SEND_PATIENCE: Duration = Duration::from_secs(3 * HEARTBEAT_INTERVAL.as_secs());

#[cfg(test)]
mod tests {
    use hyphae_policies::registry::Health;

    use super::*;
    use crate::state::tests::{apply_policies, doc, node, register};

    fn policy_key(name: &str) -> StateKey {
        StateKey::Policy(PolicyKey {
            kind: "Route".into(),
            name: name.into(),
        })
    }

    /// A store in `dir` with a cluster identity at revision 1; applies go through openraft's
    /// state machine trait, as a node's do.
    async fn store(dir: &std::path::Path) -> crate::store::StateMachineStore {
        let (_log, mut state_machine) = crate::store::open(dir.join("raft.redb"), 100)
            .await
            .expect("a fresh store opens");
        apply(
            &mut state_machine,
            1,
            crate::state::Command::SetClusterId { id: "c".into() },
        )
        .await;
        state_machine
    }

    async fn apply(
        state_machine: &mut crate::store::StateMachineStore,
        index: u64,
        command: crate::state::Command,
    ) {
        use openraft::storage::RaftStateMachine;
        let entry = crate::raft::Entry {
            log_id: openraft::testing::log_id(1, 1, index),
            payload: openraft::EntryPayload::Normal(command),
        };
        state_machine
            .apply([entry])
            .await
            .expect("the store applies");
    }

    /// The next line queued for `body`, `None` once the stream ended.
    async fn queued(body: &mut ChannelBody) -> Option<Bytes> {
        std::future::poll_fn(|cx| Pin::new(&mut body.lines).poll_next(cx)).await
    }

    /// The next line of `body`, within a deadline.
    async fn next_line(body: &mut ChannelBody) -> WatchEvent {
        let line = tokio::time::timeout(Duration::from_secs(5), queued(body))
            .await
            .expect("a line within the deadline")
            .expect("the stream is open");
        serde_json::from_slice(&line).expect("a watch event")
    }

    #[tokio::test]
    async fn the_fan_out_sends_each_revision_and_catches_up_a_reader_that_fell_behind() {
        let dir = tempfile::TempDir::new().expect("a temporary directory");
        let mut state_machine = store(dir.path()).await;
        let feed = Feed::new(state_machine.reader(), 10);
        let shutdown = CancellationToken::new();
        let mut reading = open(Arc::clone(&feed), Held::default(), shutdown.clone())
            .await
            .expect("a stream opens");
        let mut stalled = open(Arc::clone(&feed), Held::default(), shutdown.clone())
            .await
            .expect("a stream opens");
        for body in [&mut reading, &mut stalled] {
            assert!(matches!(
                next_line(body).await,
                WatchEvent::Snapshot { revision: 1, .. }
            ));
        }
        // One stream reads every revision; the other reads nothing until its queue is full.
        let revisions = 2..(2 + STREAM_BUFFER as u64 + 4);
        for index in revisions.clone() {
            let name = format!("r{index}");
            apply(
                &mut state_machine,
                index,
                apply_policies(vec![doc("Route", &name, &name)]),
            )
            .await;
            let WatchEvent::Delta {
                revision, upserts, ..
            } = next_line(&mut reading).await
            else {
                panic!("a delta");
            };
            assert_eq!((revision, upserts.len()), (index, 1));
        }
        // The stalled reader gets the deltas its queue held, then, once it reads again, one
        // delta of everything it missed, without a new revision.
        let last = revisions.end - 1;
        let mut held = 1;
        let mut upserts_seen = std::collections::BTreeSet::new();
        while held < last {
            let WatchEvent::Delta {
                revision, upserts, ..
            } = next_line(&mut stalled).await
            else {
                panic!("a delta");
            };
            assert!(revision > held, "never back in time");
            held = revision;
            upserts_seen.extend(upserts.into_iter().map(|u| u.name));
        }
        assert_eq!(
            upserts_seen.len(),
            revisions.count(),
            "every change reached the reader that fell behind"
        );
        // At shutdown the streams end.
        shutdown.cancel();
        for body in [&mut reading, &mut stalled] {
            let end = tokio::time::timeout(Duration::from_secs(5), queued(body)).await;
            assert!(matches!(end, Ok(None)), "the stream ends");
        }
    }

    #[test]
    fn a_reader_gets_only_what_changed_after_the_revision_it_holds() {
        let mut state = State::new();
        let mut changes = ChangeLog::new(0, 100);
        let commands = [
            apply_policies(vec![doc("Route", "a", "a1")]),
            register(node("web-1", Health::Passing)),
            apply_policies(vec![doc("Route", "b", "b1")]),
        ];
        for (index, command) in (1..).zip(commands) {
            let keys = command.keys();
            state.apply(command, index);
            changes.record(index, keys);
        }
        let Some(WatchEvent::Delta {
            revision,
            upserts,
            node_upserts,
            ..
        }) = catch_up(&state, &changes, 1)
        else {
            panic!("a delta");
        };
        assert_eq!(revision, 3);
        assert_eq!(upserts.len(), 1);
        assert_eq!(upserts[0].name, "b");
        assert_eq!(node_upserts.len(), 1);
        assert_eq!(catch_up(&state, &changes, 3), None, "nothing new");
        let mut forgetful = ChangeLog::new(2, 10);
        forgetful.record(3, vec![policy_key("b")]);
        assert!(matches!(
            catch_up(&state, &forgetful, 1),
            Some(WatchEvent::Snapshot { .. })
        ));
    }
}
