//! A control-plane daemon: a started [`Node`] with its port served and its keepers running,
//! stopped together. What `hyphae-control-plane` runs and `hyphae-agent --dev` embeds; the
//! top of the crate, which nothing else imports.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use crate::keepers::{cluster_identity, lease_expiry};
use crate::node::Node;

/// A node serving its port, with its lease keeper running: what `hyphae-control-plane` runs,
/// and what `hyphae-agent --dev` embeds.
pub struct RunningNode {
    /// The node.
    pub node: Arc<Node>,
    /// The address its port is bound to.
    pub address: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// Binds `config.spec.listen`, starts Raft, serves the port and keeps leases;
    /// initializes a new cluster when `init` and this node belongs to none.
    /// A node told to listen on port 0 advertises the port it got, unless `advertise` says
    /// otherwise.
    pub async fn start(mut config: NodeConfig, init: bool) -> anyhow::Result<RunningNode> {
        let listen = config.spec.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let address = listener.local_addr()?;
        if listen.port() == 0 && config.spec.advertise.is_none() {
            config.spec.advertise = Some(address.to_string());
        }
        let node = Arc::new(Node::start(config).await?);
        let shutdown = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(crate::api::serve(
                Arc::clone(&node),
                listener,
                shutdown.clone(),
            )),
            tokio::spawn(lease_expiry::keep(Arc::clone(&node), shutdown.clone())),
            tokio::spawn(cluster_identity::keep(Arc::clone(&node), shutdown.clone())),
        ];
        if init && node.initialize().await? {
            tracing::info!("initialized a new cluster");
        }
        Ok(RunningNode {
            node,
            address,
            shutdown,
            tasks,
        })
    }

    /// Stops serving, then shuts Raft down.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.node
            .raft
            .shutdown()
            .await
            .map_err(|e| anyhow::anyhow!("Raft did not shut down cleanly: {e}"))
    }
}
