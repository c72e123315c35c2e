//! A control-plane daemon: a started [`Node`] with its port served and its keepers running,
//! stopped together. What `hyphae-control-plane` runs and `hyphae-agent --dev` embeds; the
//! top of the crate, which nothing else imports.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;
use crate::keepers::{bootstrap_token, cluster_identity, lease_expiry};
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

/// How a starting node relates to a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// It belongs to a cluster already, or waits to be added to one.
    Join,
    /// It initializes a new cluster if it belongs to none, and stores the bootstrap admin
    /// token with this secret (by its hash) unless the cluster has a token already.
    Init {
        /// The bootstrap admin token's secret.
        bootstrap_secret: String,
    },
}

impl RunningNode {
    /// Binds `config.spec.listen`, starts Raft, serves the port and keeps leases;
    /// initializes a new cluster when told to and this node belongs to none.
    /// A node told to listen on port 0 advertises the port it got, unless `advertise` says
    /// otherwise.
    pub async fn start(mut config: NodeConfig, start: Start) -> anyhow::Result<RunningNode> {
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
        let mut tasks = vec![
            tokio::spawn(crate::api::serve(
                Arc::clone(&node),
                listener,
                shutdown.clone(),
            )),
            tokio::spawn(lease_expiry::keep(Arc::clone(&node), shutdown.clone())),
            tokio::spawn(cluster_identity::keep(Arc::clone(&node), shutdown.clone())),
        ];
        if let Start::Init { bootstrap_secret } = start {
            if node.initialize().await? {
                tracing::info!("initialized a new cluster");
            }
            let token = bootstrap_token::token(crate::tokens::hash(&bootstrap_secret));
            let _ = node.pending_bootstrap.set(token.clone());
            tasks.push(tokio::spawn(bootstrap_token::keep(
                Arc::clone(&node),
                token,
                shutdown.clone(),
            )));
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
