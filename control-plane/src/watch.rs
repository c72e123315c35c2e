//! Watch streams: a full snapshot of the stored policies, then a delta each time a new
//! revision is applied, with heartbeats in between so a dead stream is noticed. Any node serves
//! them from its own applied state.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use hyphae_policies::watch::{PolicyRecord, WatchEvent};
use tokio::sync::mpsc;

use crate::state::{State, StoredPolicy};
use crate::store::StateReader;

/// How often an idle stream carries a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
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

fn keys(state: &State) -> BTreeSet<(String, String)> {
    state
        .policies()
        .map(|p| (p.kind.clone(), p.name.clone()))
        .collect()
}

/// Starts a stream for one watcher; the task ends when the watcher goes away.
pub fn start(reader: StateReader) -> ChannelBody {
    let (sender, lines) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let mut revisions = reader.subscribe();
        let (mut sent, mut known, snapshot) = reader
            .read(|state| {
                let snapshot = WatchEvent::Snapshot {
                    revision: state.revision(),
                    policies: state.policies().map(record).collect(),
                    nodes: Vec::new(),
                };
                (state.revision(), keys(state), snapshot)
            })
            .await;
        if !send(&sender, &snapshot).await {
            return;
        }
        loop {
            let changed = tokio::time::timeout(HEARTBEAT_INTERVAL, revisions.changed()).await;
            let event = match changed {
                Err(_) => WatchEvent::Heartbeat { revision: sent },
                Ok(Err(_)) => return,
                Ok(Ok(())) => {
                    let (revision, upserts, now) = reader
                        .read(|state| {
                            let upserts: Vec<PolicyRecord> = state
                                .policies()
                                .filter(|p| p.revision > sent)
                                .map(record)
                                .collect();
                            (state.revision(), upserts, keys(state))
                        })
                        .await;
                    if revision <= sent {
                        continue;
                    }
                    let deletes: Vec<(String, String)> = known.difference(&now).cloned().collect();
                    known = now;
                    sent = revision;
                    WatchEvent::Delta {
                        revision,
                        upserts,
                        deletes,
                        node_upserts: Vec::new(),
                        node_deletes: Vec::new(),
                    }
                }
            };
            if !send(&sender, &event).await {
                return;
            }
        }
    });
    ChannelBody { lines }
}

/// Writes one event as a JSON line; false when the watcher is gone.
async fn send(sender: &mpsc::Sender<Bytes>, event: &WatchEvent) -> bool {
    let Ok(mut line) = serde_json::to_vec(event) else {
        return false;
    };
    line.push(b'\n');
    sender.send(Bytes::from(line)).await.is_ok()
}
