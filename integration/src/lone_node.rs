//! The files of a control-plane node a test starts by hand, alone, outside a [`Cluster`]
//! (the systemd test, `--init` without a token file, a node that never joined a cluster).
//! It writes files only: starting the node is the test's business.
//!
//! [`Cluster`]: crate::cluster::Cluster

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Error;
use crate::trust::ClusterTrust;

/// Where a lone node's files are.
#[derive(Clone, Debug)]
pub struct LoneNode {
    /// Its config file, for `--config`.
    pub config: PathBuf,
    /// Its data directory (not created: the node makes it).
    pub data: PathBuf,
}

impl LoneNode {
    /// Writes `dir/<name>.yaml`: node `id` called `name`, listening on `127.0.0.1:0`, its data in
    /// `dir/<name>-data`, everything else defaulted. No members: started with `--init` it forms
    /// a cluster of one, without it it waits to be joined.
    pub fn write(dir: &Path, name: &str, id: u64) -> Result<LoneNode, Error> {
        let config = dir.join(format!("{name}.yaml"));
        let data = dir.join(format!("{name}-data"));
        let yaml = format!(
            "kind: ControlPlaneConfig\nmetadata: {{name: {name}}}\nspec:\n  id: {id}\n  listen: 127.0.0.1:0\n  dataDir: {}\n",
            data.display()
        );
        std::fs::write(&config, yaml).map_err(|source| Error::Write {
            path: config.display().to_string(),
            source,
        })?;
        Ok(LoneNode { config, data })
    }

    /// Once the node (started with `--init`) listens at `address`: its cluster's root,
    /// registered so [`crate::http`] and [`crate::cli`] talk TLS to it; `cli` is the `hyphae`
    /// binary, for join tokens.
    pub fn trust(&self, cli: &Path, address: SocketAddr) -> Result<Arc<ClusterTrust>, Error> {
        let folder = self.config.parent().unwrap_or(Path::new("."));
        crate::trust::register_node(cli, folder, &self.data, &[address])
    }
}
