//! The agent's side of the control plane: a watch stream (HTTP/2) to any configured
//! control-plane node, failing over to the others with jittered backoff, applying each snapshot
//! and delta, and saving the result to disk so the agent keeps serving it when no control plane
//! answers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use hyphae_policies::registry::NodeRecord;
use hyphae_policies::watch::{PolicyRecord, WATCH_PATH, WatchEvent};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::persist::{self, Saved};

/// A stream that carries nothing (not even a heartbeat) for this long is given up.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// First wait before reconnecting after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between reconnects.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest a connect to a control-plane node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest single line accepted from the stream.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

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
    /// Where it came from.
    pub origin: Origin,
}

impl Remote {
    fn saved(&self) -> Saved {
        Saved {
            revision: self.revision,
            policies: self.policies.values().cloned().collect(),
            nodes: self.nodes.values().cloned().collect(),
            cluster: self.cluster.clone(),
        }
    }
}

/// Applies one event; returns true when the state changed. Events at or below the current
/// revision are duplicates (a reconnect replays from a snapshot) and change nothing.
pub fn apply_event(remote: &mut Remote, event: WatchEvent) -> bool {
    match event {
        WatchEvent::Heartbeat { .. } => false,
        WatchEvent::Snapshot {
            revision,
            policies,
            nodes,
            cluster,
        } => {
            let policies: BTreeMap<_, _> = policies
                .into_iter()
                .map(|p| ((p.kind.clone(), p.name.clone()), p))
                .collect();
            let nodes: BTreeMap<_, _> = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
            let changed = policies != remote.policies
                || nodes != remote.nodes
                || revision != remote.revision
                || cluster != remote.cluster;
            remote.revision = revision;
            remote.policies = policies;
            remote.nodes = nodes;
            remote.cluster = cluster;
            remote.origin = Origin::ControlPlane;
            changed
        }
        WatchEvent::Delta { revision, .. } if revision <= remote.revision => false,
        WatchEvent::Delta {
            revision,
            upserts,
            deletes,
            node_upserts,
            node_deletes,
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
}

/// The watch client of one agent.
pub struct Watcher {
    /// Control-plane nodes, `host:port`.
    pub servers: Vec<String>,
    /// Where the last state is saved.
    pub data_dir: PathBuf,
    /// Receives every new state.
    pub apply: Arc<dyn Fn(&Remote) + Send + Sync>,
    /// Shared status.
    pub status: Arc<WatchStatus>,
}

impl Watcher {
    /// Loads the saved state (if any), then watches until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut remote = Remote {
            revision: 0,
            policies: BTreeMap::new(),
            nodes: BTreeMap::new(),
            cluster: None,
            origin: Origin::Disk,
        };
        let dir = self.data_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || persist::load(&dir))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match loaded {
            Ok(Some(saved)) => {
                remote.revision = saved.revision;
                remote.policies = saved
                    .policies
                    .into_iter()
                    .map(|p| ((p.kind.clone(), p.name.clone()), p))
                    .collect();
                remote.nodes = saved
                    .nodes
                    .into_iter()
                    .map(|n| (n.name.clone(), n))
                    .collect();
                remote.cluster = saved.cluster;
                tracing::info!(
                    revision = remote.revision,
                    "serving the control-plane state saved on disk until a control plane answers"
                );
                self.status
                    .revision
                    .store(remote.revision, Ordering::Release);
                (self.apply)(&remote);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!("{error}; starting without it"),
        }
        if self.servers.is_empty() {
            return;
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        let mut next = rand::random_range(0..self.servers.len());
        let mut backoff = BACKOFF_MIN;
        loop {
            let server = &self.servers[next % self.servers.len()];
            next += 1;
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = self.stream(&client, server, &mut remote, &mut backoff) => result,
            };
            self.status.connected.store(false, Ordering::Release);
            if let Err(error) = result {
                tracing::warn!(%server, "control-plane watch failed: {error}; trying the next node");
            }
            let wait = jittered(&mut backoff, BACKOFF_MAX);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Saves `saved` on the blocking pool (it fsyncs); a failure is logged and the next change
    /// tries again.
    async fn save(&self, saved: Saved) {
        let dir = self.data_dir.clone();
        let result = tokio::task::spawn_blocking(move || persist::save(&dir, &saved)).await;
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        tracing::warn!(%error, dir = %self.data_dir.display(), "cannot save the control-plane state; will retry on the next change");
    }

    /// Reads one watch stream until it ends or fails; Ok when it ended after delivering
    /// events. The first event resets `backoff`: the node served.
    async fn stream(
        &self,
        client: &Client<HttpConnector, Empty<Bytes>>,
        server: &str,
        remote: &mut Remote,
        backoff: &mut Duration,
    ) -> Result<(), String> {
        let mut uri = format!("http://{server}{WATCH_PATH}?since={}", remote.revision);
        if let Some(cluster) = &remote.cluster {
            uri.push_str("&cluster=");
            uri.push_str(cluster);
        }
        let request = http::Request::get(uri)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(STREAM_IDLE_TIMEOUT, client.request(request))
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|e| hyphae_policies::error_chain(&e))?;
        if !response.status().is_success() {
            let status = response.status();
            let detail = tokio::time::timeout(CONNECT_TIMEOUT, response.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|body| String::from_utf8_lossy(&body.to_bytes()).trim().to_string())
                .unwrap_or_default();
            return Err(format!("the node answered {status} {detail}"));
        }
        let mut body = response.into_body();
        let mut buffer = BytesMut::new();
        // Bytes of `buffer` already searched for a newline.
        let mut scanned = 0;
        let mut got_event = false;
        loop {
            let frame = tokio::time::timeout(STREAM_IDLE_TIMEOUT, body.frame())
                .await
                .map_err(|_| format!("nothing received for {STREAM_IDLE_TIMEOUT:?}"))?;
            let Some(frame) = frame else {
                return if got_event {
                    Ok(())
                } else {
                    Err("the stream ended".into())
                };
            };
            let frame = frame.map_err(|e| e.to_string())?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            if buffer.len() > MAX_LINE_BYTES {
                return Err(format!("a line longer than {MAX_LINE_BYTES} bytes"));
            }
            while let Some(offset) = buffer[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + offset;
                scanned = 0;
                let mut line: Bytes = buffer.split_to(end + 1).freeze();
                line.truncate(end);
                let event: WatchEvent = serde_json::from_slice(line.chunk())
                    .map_err(|e| format!("unreadable event: {e}"))?;
                if !got_event {
                    got_event = true;
                    *backoff = BACKOFF_MIN;
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
                    self.save(remote.saved()).await;
                }
            }
            scanned = buffer.len();
        }
    }
}

/// The current retry delay, jittered (×0.5–1.5), doubling it up to `cap` for next time.
pub fn jittered(retry: &mut Duration, cap: Duration) -> Duration {
    let wait = retry.mul_f64(rand::random_range(0.5..1.5));
    *retry = (*retry * 2).min(cap);
    wait
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

    #[test]
    fn snapshots_replace_deltas_add_and_delete_duplicates_are_ignored() {
        let mut remote = Remote {
            revision: 0,
            policies: BTreeMap::new(),
            nodes: BTreeMap::new(),
            cluster: None,
            origin: Origin::Disk,
        };
        assert!(apply_event(
            &mut remote,
            WatchEvent::Snapshot {
                revision: 2,
                policies: vec![record("a", 2)],
                nodes: vec![],
                cluster: None
            }
        ));
        assert_eq!(remote.origin, Origin::ControlPlane);
        assert!(apply_event(
            &mut remote,
            WatchEvent::Delta {
                revision: 3,
                upserts: vec![record("b", 3)],
                deletes: vec![("Route".into(), "a".into())],
                node_upserts: vec![],
                node_deletes: vec![]
            }
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
            WatchEvent::Delta {
                revision: 3,
                upserts: vec![record("c", 3)],
                deletes: vec![],
                node_upserts: vec![],
                node_deletes: vec![]
            }
        ));
        assert!(!apply_event(
            &mut remote,
            WatchEvent::Heartbeat { revision: 3 }
        ));
        // The same snapshot again changes nothing.
        assert!(!apply_event(
            &mut remote,
            WatchEvent::Snapshot {
                revision: 3,
                policies: vec![record("b", 3)],
                nodes: vec![],
                cluster: None
            }
        ));
        assert_eq!(remote.revision, 3);
    }
}
