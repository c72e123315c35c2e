//! The last state received from the control plane, kept on disk so an agent that starts (or
//! runs) without a reachable control plane keeps serving what it was last told. Written as a
//! temp file, fsynced, then renamed over the old one: a crash leaves the old or the new file,
//! never half of one. Bursts of changes are coalesced ([`write_coalesced`]): at most one write
//! per interval, always of the latest state, and never one lost at shutdown.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyphae_policies::ErrorChain;
use hyphae_policies::registry::NodeRecord;
use hyphae_policies::watch::PolicyRecord;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// File name of the saved state in the agent's data directory.
pub const SNAPSHOT_FILE: &str = "control-plane-snapshot.json";

/// What is saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The control-plane revision it reflects.
    pub revision: u64,
    /// Every policy at that revision.
    pub policies: Vec<PolicyRecord>,
    /// Every registered node at that revision (absent in files saved before registration).
    #[serde(default)]
    pub nodes: Vec<NodeRecord>,
    /// The identity of the cluster it came from (absent in older files).
    #[serde(default)]
    pub cluster: Option<String>,
    /// Every service's virtual IP (absent in older files).
    #[serde(default)]
    pub virtual_ips: std::collections::BTreeMap<String, std::net::Ipv4Addr>,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(SNAPSHOT_FILE)
}

/// Saves `saved` durably. Errors are returned for the caller to log and retry on the next
/// change; serving never depends on the disk.
pub fn save(data_dir: &Path, saved: &Saved) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let final_path = path(data_dir);
    let temp_path = final_path.with_extension("json.tmp");
    let json = serde_json::to_vec(saved).map_err(std::io::Error::other)?;
    {
        let mut file = std::fs::File::create(&temp_path)?;
        file.write_all(&json)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp_path, &final_path)?;
    // Make the rename itself durable.
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// [`save`] on the blocking pool (it fsyncs); false, with one log line, when it failed.
pub async fn save_off_runtime(data_dir: PathBuf, saved: Saved) -> bool {
    let dir = data_dir.clone();
    let result = tokio::task::spawn_blocking(move || save(&dir, &saved)).await;
    let error = match result {
        Ok(Ok(())) => return true,
        Ok(Err(error)) => ErrorChain(&error).to_string(),
        Err(error) => ErrorChain(&error).to_string(),
    };
    tracing::warn!(%error, dir = %data_dir.display(), "cannot save the control-plane state; will try again");
    false
}

/// Writes the states sent on `latest` with `write`, at most once per `interval`: the first
/// change after a quiet interval is written at once; changes during the interval that follows
/// a write wait for its end, and only the newest of them is written. A failed write (`write`
/// returned false) is tried again, with the newest state, an interval later. Once `shutdown`
/// is cancelled nothing waits any more: what is pending is written at once, and so is every
/// state sent until the sender is dropped, which ends this (so stop the sender's side first
/// and the last state is never lost).
pub async fn write_coalesced<T, W, F>(
    mut latest: watch::Receiver<T>,
    interval: Duration,
    shutdown: CancellationToken,
    mut write: W,
) where
    T: Clone,
    W: FnMut(T) -> F,
    F: Future<Output = bool>,
{
    while latest.changed().await.is_ok() {
        let state = latest.borrow_and_update().clone();
        if !write(state).await && !shutdown.is_cancelled() {
            latest.mark_changed();
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// Why the saved state cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a saved snapshot (damaged, or from an incompatible agent).
    #[error("{} is not a saved snapshot", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
}

/// Loads the saved state, if there is a readable one.
pub fn load(data_dir: &Path) -> Result<Option<Saved>, LoadError> {
    let bytes = match std::fs::read(path(data_dir)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LoadError::Read {
                path: path(data_dir),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| LoadError::Corrupt {
            path: path(data_dir),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(1);

    /// A coalescing writer of numbers on paused time.
    struct Writer {
        /// Where states are sent.
        states: watch::Sender<u32>,
        shutdown: CancellationToken,
        /// Each write: the state and the time since the start.
        writes: mpsc::UnboundedReceiver<(u32, Duration)>,
        task: tokio::task::JoinHandle<()>,
    }

    /// Starts a [`Writer`] whose first `fail` writes fail.
    fn writer(fail: usize) -> Writer {
        let (states, latest) = watch::channel(0);
        let (written, writes) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let failures = Arc::new(Mutex::new(fail));
        let task = tokio::spawn(write_coalesced(
            latest,
            INTERVAL,
            shutdown.clone(),
            move |state| {
                let mut left = failures.lock().unwrap();
                let ok = *left == 0;
                *left = left.saturating_sub(1);
                let _ = written.send((state, started.elapsed()));
                async move { ok }
            },
        ));
        Writer {
            states,
            shutdown,
            writes,
            task,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_written_once_at_once_then_once_more_with_its_latest_state() {
        let mut w = writer(0);
        w.states.send_replace(1);
        assert_eq!(w.writes.recv().await, Some((1, Duration::ZERO)));
        for state in 2..=50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            w.states.send_replace(state);
        }
        assert_eq!(w.writes.recv().await, Some((50, INTERVAL)));
        // Quiet for longer than the interval: the next change is written at once.
        tokio::time::sleep(Duration::from_secs(5)).await;
        w.states.send_replace(51);
        assert_eq!(w.writes.recv().await, Some((51, Duration::from_secs(6))));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(w.writes.try_recv().is_err(), "nothing new, nothing written");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_writes_the_pending_state_without_waiting_then_ends_with_the_sender() {
        let mut w = writer(0);
        w.states.send_replace(1);
        assert_eq!(w.writes.recv().await, Some((1, Duration::ZERO)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        w.states.send_replace(2);
        w.shutdown.cancel();
        assert_eq!(w.writes.recv().await, Some((2, Duration::from_millis(100))));
        // The sender's side stops after the token; what it sends meanwhile is written too.
        w.states.send_replace(3);
        drop(w.states);
        assert_eq!(w.writes.recv().await, Some((3, Duration::from_millis(100))));
        w.task.await.unwrap();
        assert_eq!(w.writes.recv().await, None, "the writer ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_tried_again_an_interval_later_with_the_latest_state() {
        let mut w = writer(1);
        w.states.send_replace(1);
        assert_eq!(w.writes.recv().await, Some((1, Duration::ZERO)));
        assert_eq!(w.writes.recv().await, Some((1, INTERVAL)));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        w.states.send_replace(2);
        assert_eq!(
            w.writes.recv().await,
            Some((2, Duration::from_millis(2500)))
        );
    }

    #[test]
    fn saves_and_loads_and_replaces() {
        let dir = std::env::temp_dir().join(format!("hyphae-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap(), None);
        let first = Saved {
            revision: 3,
            policies: vec![PolicyRecord {
                kind: "Route".into(),
                name: "r".into(),
                source: "kind: Route\n".into(),
                revision: 3,
            }],
            nodes: vec![],
            cluster: None,
            virtual_ips: Default::default(),
        };
        save(&dir, &first).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(first));
        let second = Saved {
            revision: 4,
            policies: vec![],
            nodes: vec![NodeRecord {
                name: "web-1".into(),
                site: "a".into(),
                address: "127.0.0.1:4143".parse().unwrap(),
                agent_version: "1".into(),
                instances: vec![],
                revision: 4,
            }],
            cluster: Some("c1".into()),
            virtual_ips: [("web".to_string(), std::net::Ipv4Addr::new(127, 64, 0, 1))].into(),
        };
        save(&dir, &second).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(second));
        std::fs::write(dir.join(SNAPSHOT_FILE), b"{garbage").unwrap();
        assert!(load(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
