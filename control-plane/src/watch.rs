//! Watch streams: a full snapshot (or, for a reader that reconnects with `?since=REV`, only what
//! changed after REV), then a delta each time a revision changes something, with heartbeats in
//! between so a dead stream is noticed. Any node serves them from its own applied state; the
//! deltas come from the node's [`ChangeLog`], so a revision costs each stream only what it
//! changed.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use hyphae_policies::watch::{PolicyRecord, WatchEvent};
use tokio::sync::{mpsc, watch};

use crate::changes::ChangeLog;
use crate::state::{PolicyKey, State, StateKey, StoredPolicy};
use crate::store::StateReader;

/// How often an idle stream carries a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a node that is behind a reconnecting reader's `since` waits to catch up before it
/// sends a full snapshot instead (the cluster may have been rebuilt with fewer revisions).
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// Events buffered per stream before the writer waits for the reader.
const STREAM_BUFFER: usize = 16;

/// A response body fed by a channel of lines.
pub struct ChannelBody {
    lines: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.lines
            .poll_recv(cx)
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
    }
}

/// The current value (or the removal) of every key in `keys`, as one event at the state's
/// revision.
fn delta(state: &State, keys: BTreeSet<StateKey>) -> WatchEvent {
    let (mut upserts, mut deletes, mut node_upserts, mut node_deletes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
        }
    }
    WatchEvent::Delta {
        revision: state.revision(),
        upserts,
        deletes,
        node_upserts,
        node_deletes,
    }
}

/// What to send a reader that holds `held`: a delta of what changed since, nothing when
/// nothing did, or a snapshot when those changes are no longer remembered.
fn catch_up(state: &State, changes: &ChangeLog, held: u64) -> Option<WatchEvent> {
    if held > state.revision() {
        return Some(snapshot(state));
    }
    match changes.since(held) {
        None => Some(snapshot(state)),
        Some(keys) if keys.is_empty() => None,
        Some(keys) => Some(delta(state, keys)),
    }
}

/// Starts a stream for one watcher that holds revision `since` (`None` or 0: nothing); the
/// task ends when the watcher goes away.
pub fn start(reader: StateReader, since: Option<u64>) -> ChannelBody {
    let (sender, lines) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let mut revisions = reader.subscribe();
        let first = match since.filter(|&since| since > 0) {
            None => reader.read(snapshot).await,
            Some(since) => {
                if !caught_up(&mut revisions, since).await {
                    return;
                }
                let current = reader
                    .read_with_changes(|state, changes| {
                        catch_up(state, changes, since).map(|event| (event, state.revision()))
                    })
                    .await;
                match current {
                    Some((event, _)) => event,
                    None => WatchEvent::Heartbeat { revision: since },
                }
            }
        };
        let mut sent = first.revision();
        if !send(&sender, &first).await {
            return;
        }
        loop {
            let changed = tokio::time::timeout(HEARTBEAT_INTERVAL, revisions.changed()).await;
            let event = match changed {
                Err(_) => WatchEvent::Heartbeat { revision: sent },
                Ok(Err(_)) => return,
                Ok(Ok(())) => {
                    revisions.borrow_and_update();
                    let held = sent;
                    let next = reader
                        .read_with_changes(|state, changes| {
                            (catch_up(state, changes, held), state.revision())
                        })
                        .await;
                    match next {
                        (Some(event), _) => event,
                        // Only blank or membership entries: nothing to tell.
                        (None, revision) => {
                            sent = sent.max(revision);
                            continue;
                        }
                    }
                }
            };
            sent = event.revision();
            if !send(&sender, &event).await {
                return;
            }
        }
    });
    ChannelBody { lines }
}

/// Waits (up to [`CATCH_UP_WAIT`]) until this node has applied `since`; false when the node
/// is shutting down. A node still behind after the wait answers with what it has.
async fn caught_up(revisions: &mut watch::Receiver<u64>, since: u64) -> bool {
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    while *revisions.borrow_and_update() < since {
        match tokio::time::timeout_at(deadline, revisions.changed()).await {
            Err(_) => return true,
            Ok(Err(_)) => return false,
            Ok(Ok(())) => {}
        }
    }
    true
}

/// Writes one event as a JSON line; false when the watcher is gone.
async fn send(sender: &mpsc::Sender<Bytes>, event: &WatchEvent) -> bool {
    let Ok(mut line) = serde_json::to_vec(event) else {
        return false;
    };
    line.push(b'\n');
    sender.send(Bytes::from(line)).await.is_ok()
}

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
        assert!(
            matches!(
                catch_up(&state, &changes, 9),
                Some(WatchEvent::Snapshot { revision: 3, .. })
            ),
            "a reader ahead of this node gets what it has"
        );
        let mut forgetful = ChangeLog::new(2, 10);
        forgetful.record(3, vec![policy_key("b")]);
        assert!(matches!(
            catch_up(&state, &forgetful, 1),
            Some(WatchEvent::Snapshot { .. })
        ));
    }
}
