//! `bench push`'s three-node cluster under the name the bench knows: a thin layer over the
//! test-support library's launcher ([`hyphae_integration::cluster::Cluster`]) that keeps the
//! bench's blocking calls. It goes once `bench push` uses the library itself.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use hyphae_integration::cluster::Cluster;

/// Nodes in the cluster, with ids 1, 2, 3.
pub const NODES: usize = 3;

/// A running cluster; its files (configs, data, one log per node) live in one folder.
pub struct LocalCluster {
    cluster: Cluster,
    /// `127.0.0.1:PORT` of node 1, 2, 3 (index `id - 1`).
    servers: Vec<String>,
}

impl LocalCluster {
    /// Empties `dir` and starts [`NODES`] nodes of the binaries in `bin` there; node 1
    /// initializes the cluster. Returns once every node printed its ready line.
    pub fn start(bin: &Path, dir: &Path) -> Result<LocalCluster> {
        crate::util::empty_dir(dir)?;
        let mut cluster = Cluster::configure(&bin.join("hyphae-control-plane"), dir, NODES, "")?;
        // Errors only: the bench measures the nodes, and logging is work.
        cluster.set_log_level("error");
        cluster.start_all()?;
        let servers = cluster
            .addresses()
            .iter()
            .map(ToString::to_string)
            .collect();
        Ok(LocalCluster { cluster, servers })
    }

    /// `127.0.0.1:PORT` of node `id`.
    pub fn server(&self, id: usize) -> &str {
        &self.servers[id - 1]
    }

    /// The process id of node `id`, when it runs.
    pub fn pid(&self, id: usize) -> Option<u32> {
        self.cluster.node(u64::try_from(id).ok()?).pid()
    }

    /// Waits for the leader the running nodes agree on; `ids` must be those nodes.
    pub fn wait_for_leader(&self, ids: &[usize]) -> Result<usize> {
        for &id in ids {
            ensure!(self.pid(id).is_some(), "node {id} is not running");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start a runtime")?;
        let leader = runtime.block_on(self.cluster.leader())?;
        usize::try_from(leader).context("leader id")
    }
}
