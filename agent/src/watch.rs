//! The agent's side of the control plane: a watch stream (on a connection of its own, upgraded
//! from HTTP/1.1) to any configured control-plane node, failing over to the others with
//! jittered backoff, applying each snapshot and delta, and saving the result to disk so the
//! agent keeps serving it when no control plane answers. When the node takes them, the agent's
//! registry requests travel up the same connection ([`crate::uplink`], decision 57).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyphae_policies::ErrorChain;
use hyphae_policies::registry::NodeRecord;
use hyphae_policies::watch::{PolicyRecord, WATCH_PATH, WatchEvent};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::control_plane_client::{ControlPlaneClient, ControlPlaneError};
use crate::persist::{self, Saved};
use crate::uplink::{Answered, UplinkCall};

/// A stream that carries nothing (not even a heartbeat) for this long is given up.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest single line accepted from the stream.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Why a watch stream ended before it was given up on purpose.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The stream could not be opened.
    #[error("cannot open the watch stream")]
    Open(#[source] ControlPlaneError),
    /// Nothing, not even a heartbeat, arrived for too long.
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    /// The node closed the stream before it sent any event.
    #[error("the stream ended before its first event")]
    EndedEarly,
    /// The stream broke.
    #[error("the stream broke")]
    Broken(#[source] std::io::Error),
    /// A request could not be sent up the connection in time.
    #[error("cannot send a request up the watch connection")]
    RequestNotSent(#[source] std::io::Error),
    /// The node answered a request the agent had not sent.
    #[error("an answer to no request")]
    UnaskedAnswer,
    /// A request sent up the connection had no answer in time: the node is stuck on it.
    #[error("no answer to a request within {0:?}")]
    Unanswered(Duration),
    /// One line was longer than the agent accepts.
    #[error("a line longer than {0} bytes")]
    LineTooLong(usize),
    /// A line was not a watch event.
    #[error("unreadable event")]
    Event(#[source] serde_json::Error),
}

/// Where the agent's control-plane state came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// A live watch stream.
    ControlPlane,
    /// The copy saved on disk (no control plane reachable since the agent started).
    Disk,
}

/// The control plane's state as this agent holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// Revision of the control plane's state.
    pub revision: u64,
    /// Stored policies by (kind, name).
    pub policies: BTreeMap<(String, String), PolicyRecord>,
    /// Registered nodes by name.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// The identity of the cluster it came from, once known.
    pub cluster: Option<String>,
    /// Every service's virtual IP, by service name.
    pub virtual_ips: BTreeMap<String, Ipv4Addr>,
    /// Where it came from.
    pub origin: Origin,
}

impl Remote {
    /// Nothing yet: what the agent holds before it has loaded or received any state.
    fn empty() -> Remote {
        Remote {
            revision: 0,
            policies: BTreeMap::new(),
            nodes: BTreeMap::new(),
            cluster: None,
            virtual_ips: BTreeMap::new(),
            origin: Origin::Disk,
        }
    }

    /// The state a save or a snapshot lists, keyed the way it is held: policies by (kind, name),
    /// nodes by name. The inverse of [`Remote::saved`].
    fn from_saved(saved: Saved, origin: Origin) -> Remote {
        Remote {
            revision: saved.revision,
            policies: saved
                .policies
                .into_iter()
                .map(|p| ((p.kind.clone(), p.name.clone()), p))
                .collect(),
            nodes: saved
                .nodes
                .into_iter()
                .map(|n| (n.name.clone(), n))
                .collect(),
            cluster: saved.cluster,
            virtual_ips: saved.virtual_ips,
            origin,
        }
    }

    /// The state as saved to disk.
    fn saved(&self) -> Saved {
        Saved {
            revision: self.revision,
            policies: self.policies.values().cloned().collect(),
            nodes: self.nodes.values().cloned().collect(),
            cluster: self.cluster.clone(),
            virtual_ips: self.virtual_ips.clone(),
        }
    }
}

/// Applies one event; returns true when the state changed. Events at or below the current
/// revision are duplicates (a reconnect replays from a snapshot) and change nothing.
pub fn apply_event(remote: &mut Remote, event: WatchEvent) -> bool {
    match event {
        WatchEvent::Heartbeat { .. } | WatchEvent::Answer { .. } => false,
        WatchEvent::Snapshot {
            revision,
            policies,
            nodes,
            cluster,
            virtual_ips,
        } => {
            let saved = Saved {
                revision,
                policies,
                nodes,
                cluster,
                virtual_ips,
            };
            let next = Remote::from_saved(saved, Origin::ControlPlane);
            let changed = next.policies != remote.policies
                || next.nodes != remote.nodes
                || next.revision != remote.revision
                || next.cluster != remote.cluster
                || next.virtual_ips != remote.virtual_ips;
            *remote = next;
            changed
        }
        WatchEvent::Delta { revision, .. } if revision <= remote.revision => false,
        WatchEvent::Delta {
            revision,
            upserts,
            deletes,
            node_upserts,
            node_deletes,
            virtual_ips,
        } => {
            for policy in upserts {
                remote
                    .policies
                    .insert((policy.kind.clone(), policy.name.clone()), policy);
            }
            for key in deletes {
                remote.policies.remove(&key);
            }
            for node in node_upserts {
                remote.nodes.insert(node.name.clone(), node);
            }
            for name in node_deletes {
                remote.nodes.remove(&name);
            }
            if let Some(virtual_ips) = virtual_ips {
                remote.virtual_ips = virtual_ips;
            }
            remote.revision = revision;
            remote.origin = Origin::ControlPlane;
            true
        }
    }
}

/// What `/ready`, `/config` and metrics say about the control plane.
#[derive(Debug, Default)]
pub struct WatchStatus {
    /// A watch stream is open now.
    pub connected: AtomicBool,
    /// Revision being served from the control plane (0: none yet).
    pub revision: AtomicU64,
    /// Unix time in milliseconds of the last event received (0: never).
    pub last_contact_unix_ms: AtomicU64,
    /// Why the saved copy could not be used, from start until a control plane sends a fresh
    /// state (`None`: it was used, or there was none).
    saved_unreadable: Mutex<Option<String>>,
}

impl WatchStatus {
    /// Why the saved copy could not be used, while that still matters: the agent started
    /// without the state it was last told and no control plane has replaced it yet.
    pub fn saved_unreadable(&self) -> Option<String> {
        self.saved_unreadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records whether the saved copy is unusable (`Some(why)`) or not, in `/ready` and in
    /// [`crate::metrics::SAVED_SNAPSHOT_UNREADABLE`].
    fn set_saved_unreadable(&self, why: Option<String>) {
        crate::metrics::saved_snapshot_unreadable(why.is_some());
        *self
            .saved_unreadable
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = why;
    }
}

/// The watch client of one agent.
pub struct Watcher {
    /// The control-plane nodes and the way to them.
    pub control_plane: ControlPlaneClient,
    /// Where the last state is saved.
    pub data_dir: PathBuf,
    /// Receives every new state.
    pub apply: Arc<dyn Fn(&Remote) + Send + Sync>,
    /// Shared status.
    pub status: Arc<WatchStatus>,
    /// Least time between two saves to disk (`limits.snapshotSaveInterval`).
    pub save_interval: Duration,
}

impl Watcher {
    /// Loads the saved state, applies it when there is a usable one and returns it for
    /// [`Watcher::run`]. An unreadable one is logged and recorded in the status (`/ready`
    /// answers 503 until a control plane sends a fresh state): the agent starts without it.
    ///
    /// An agent with no control plane configured loads nothing: the saved state belongs to a
    /// control plane it no longer follows (or, in a shared data directory, to another agent's),
    /// and nothing would ever replace it.
    pub async fn load(&self) -> Remote {
        let mut remote = Remote::empty();
        if self.control_plane.servers().is_empty() {
            return remote;
        }
        let dir = self.data_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || persist::load(&dir)).await;
        match loaded {
            Ok(Ok(Some(saved))) => {
                remote = Remote::from_saved(saved, Origin::Disk);
                tracing::info!(
                    revision = remote.revision,
                    "serving the control-plane state saved on disk until a control plane answers"
                );
                self.status
                    .revision
                    .store(remote.revision, Ordering::Release);
                (self.apply)(&remote);
                self.status.set_saved_unreadable(None);
            }
            Ok(Ok(None)) => self.status.set_saved_unreadable(None),
            Ok(Err(error)) => {
                let why = ErrorChain(&error).to_string();
                tracing::warn!(error = %why, "cannot use the saved control-plane state; starting without it, not ready until a control plane sends a fresh one");
                self.status.set_saved_unreadable(Some(why));
            }
            Err(error) => {
                let why = ErrorChain(&error).to_string();
                tracing::warn!(error = %why, "loading the saved control-plane state did not finish; starting without it, not ready until a control plane sends a fresh one");
                self.status.set_saved_unreadable(Some(why));
            }
        }
        remote
    }

    /// Watches the control plane from `remote` (what [`Watcher::load`] returned) until
    /// `shutdown`, saving each new state to disk, at most once per `save_interval`; the last
    /// one is saved before this returns.
    pub async fn run(self, remote: Remote, shutdown: CancellationToken) {
        if self.control_plane.servers().is_empty() {
            return;
        }
        let (saves, latest) = tokio::sync::watch::channel(remote.saved());
        let dir = self.data_dir.clone();
        let saving =
            persist::write_coalesced(latest, self.save_interval, shutdown.clone(), move |saved| {
                persist::save_off_runtime(dir.clone(), saved)
            });
        // `follow` owns the sender: when it returns, the writer saves what is pending and ends.
        tokio::join!(self.follow(remote, saves, shutdown), saving);
    }

    /// Follows one node after another until `shutdown`, handing every new state to `saves`.
    async fn follow(
        &self,
        mut remote: Remote,
        saves: tokio::sync::watch::Sender<Saved>,
        shutdown: CancellationToken,
    ) {
        let mut client = self.control_plane.clone();
        loop {
            let server = client.server().to_string();
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = self.stream(&mut client, &mut remote, &saves) => result,
            };
            client.fail_over();
            self.status.connected.store(false, Ordering::Release);
            if let Err(error) = result {
                tracing::warn!(%server, error = %ErrorChain(&error), "control-plane watch failed; trying the next node");
            }
            if !client.back_off(&shutdown).await {
                return;
            }
        }
    }

    /// Reads one watch stream from the client's current node until it ends or fails; Ok
    /// when it ended after delivering events. The first event resets the client's backoff:
    /// the node served. While the stream takes them, the agent's registry requests go up it,
    /// one at a time, and their answers come back among the events.
    async fn stream(
        &self,
        client: &mut ControlPlaneClient,
        remote: &mut Remote,
        saves: &tokio::sync::watch::Sender<Saved>,
    ) -> Result<(), WatchError> {
        let mut path = format!("{WATCH_PATH}?since={}", remote.revision);
        if let Some(cluster) = &remote.cluster {
            path.push_str("&cluster=");
            path.push_str(cluster);
        }
        let mut stream = client
            .open_watch(&path, STREAM_IDLE_TIMEOUT)
            .await
            .map_err(WatchError::Open)?;
        // Offered for requests until this stream ends (the guard drops with it).
        let (_attached, mut requests) = match stream.takes_requests() {
            true => {
                let (attached, requests) = client.uplink().attach(client.server());
                (Some(attached), Some(requests))
            }
            false => (None, None),
        };
        // Where the answer to the request up the connection goes, while one is, and when it
        // must have come.
        let mut asked: Option<tokio::sync::oneshot::Sender<Answered>> = None;
        let mut answer_due = tokio::time::Instant::now();
        let mut buffer = BytesMut::new();
        // Bytes of `buffer` already searched for a newline.
        let mut scanned = 0;
        let mut got_event = false;
        let mut idle_after = tokio::time::Instant::now() + STREAM_IDLE_TIMEOUT;
        loop {
            let read = tokio::select! {
                read = stream.read_into(&mut buffer) => read.map_err(WatchError::Broken)?,
                () = tokio::time::sleep_until(idle_after) => {
                    return Err(WatchError::Idle(STREAM_IDLE_TIMEOUT));
                }
                () = tokio::time::sleep_until(answer_due), if asked.is_some() => {
                    return Err(WatchError::Unanswered(STREAM_IDLE_TIMEOUT));
                }
                call = next_request(&mut requests), if asked.is_none() => {
                    let UplinkCall { line, answer } = call;
                    if answer.is_closed() {
                        continue; // its caller gave up before the connection was free
                    }
                    tokio::time::timeout(STREAM_IDLE_TIMEOUT, stream.send_line(&line))
                        .await
                        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                        .map_err(WatchError::RequestNotSent)?;
                    asked = Some(answer);
                    answer_due = tokio::time::Instant::now() + STREAM_IDLE_TIMEOUT;
                    continue;
                }
            };
            if read == 0 {
                return if got_event {
                    Ok(())
                } else {
                    Err(WatchError::EndedEarly)
                };
            }
            idle_after = tokio::time::Instant::now() + STREAM_IDLE_TIMEOUT;
            if buffer.len() > MAX_LINE_BYTES {
                return Err(WatchError::LineTooLong(MAX_LINE_BYTES));
            }
            while let Some(offset) = buffer[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + offset;
                scanned = 0;
                let mut line: Bytes = buffer.split_to(end + 1).freeze();
                line.truncate(end);
                let event: WatchEvent =
                    serde_json::from_slice(line.chunk()).map_err(WatchError::Event)?;
                if let WatchEvent::Answer { status, body } = event {
                    let answer = asked.take().ok_or(WatchError::UnaskedAnswer)?;
                    let status =
                        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
                    // Its caller may have given up meanwhile; the stream stays in step.
                    let _ = answer.send(Answered { status, body });
                    continue;
                }
                if !got_event {
                    got_event = true;
                    client.served();
                }
                self.status.connected.store(true, Ordering::Release);
                self.status
                    .last_contact_unix_ms
                    .store(unix_ms(), Ordering::Release);
                if apply_event(remote, event) {
                    self.status
                        .revision
                        .store(remote.revision, Ordering::Release);
                    (self.apply)(remote);
                    saves.send_replace(remote.saved());
                }
                // Applied first, so `/ready` turns 200 only once the fresh state is served.
                if remote.origin == Origin::ControlPlane && self.status.saved_unreadable().is_some()
                {
                    tracing::info!(
                        revision = remote.revision,
                        "a control plane sent a fresh state; the unreadable saved copy is replaced"
                    );
                    self.status.set_saved_unreadable(None);
                }
            }
            scanned = buffer.len();
        }
    }
}

/// The next registry request waiting for the watch connection; never, for a stream that takes
/// none.
async fn next_request(
    requests: &mut Option<tokio::sync::mpsc::Receiver<UplinkCall>>,
) -> UplinkCall {
    match requests {
        Some(requests) => match requests.recv().await {
            Some(call) => call,
            // The sender lives as long as the stream's guard: not before it ends.
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, revision: u64) -> PolicyRecord {
        PolicyRecord {
            kind: "Route".into(),
            name: name.into(),
            source: format!("# {name}@{revision}\n"),
            revision,
        }
    }

    /// A snapshot of `policies` at `revision`, with no nodes and no cluster identity.
    fn snapshot(revision: u64, policies: Vec<PolicyRecord>) -> WatchEvent {
        WatchEvent::Snapshot {
            revision,
            policies,
            nodes: vec![],
            cluster: None,
            virtual_ips: BTreeMap::new(),
        }
    }

    /// A delta of policies only at `revision`.
    fn delta(
        revision: u64,
        upserts: Vec<PolicyRecord>,
        deletes: Vec<(String, String)>,
    ) -> WatchEvent {
        WatchEvent::Delta {
            revision,
            upserts,
            deletes,
            node_upserts: vec![],
            node_deletes: vec![],
            virtual_ips: None,
        }
    }

    #[test]
    fn snapshots_replace_deltas_add_and_delete_duplicates_are_ignored() {
        let mut remote = Remote::empty();
        assert!(apply_event(&mut remote, snapshot(2, vec![record("a", 2)])));
        assert_eq!(remote.origin, Origin::ControlPlane);
        assert!(apply_event(
            &mut remote,
            delta(3, vec![record("b", 3)], vec![("Route".into(), "a".into())])
        ));
        assert_eq!(
            remote
                .policies
                .keys()
                .map(|k| k.1.as_str())
                .collect::<Vec<_>>(),
            vec!["b"]
        );
        // A delta replayed after a reconnect is a duplicate.
        assert!(!apply_event(
            &mut remote,
            delta(3, vec![record("c", 3)], vec![])
        ));
        assert!(!apply_event(
            &mut remote,
            WatchEvent::Heartbeat { revision: 3 }
        ));
        // The same snapshot again changes nothing.
        assert!(!apply_event(&mut remote, snapshot(3, vec![record("b", 3)])));
        assert_eq!(remote.revision, 3);
    }
}
