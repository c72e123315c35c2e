//! The last state received from the control plane, kept on disk so an agent that starts (or
//! runs) without a reachable control plane keeps serving what it was last told. Written as a
//! temp file, fsynced, then renamed over the old one: a crash leaves the old or the new file,
//! never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use hyphae_policies::registry::NodeRecord;
use hyphae_policies::watch::PolicyRecord;
use serde::{Deserialize, Serialize};

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
    use super::*;

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
        };
        save(&dir, &second).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(second));
        std::fs::write(dir.join(SNAPSHOT_FILE), b"{garbage").unwrap();
        assert!(load(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
