//! A control-plane daemon: a started [`Node`] with its port served and its keepers running,
//! stopped together. What `hyphae-control-plane` runs and `hyphae-agent --dev` embeds; the
//! top of the crate, which nothing else imports. A node whose Raft core stops by itself (a
//! storage failure is fatal to it) stops serving at once and reports it
//! ([`RunningNode::failed`]): it never answers from a state that no longer advances.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::raft::Raft;

use crate::config::NodeConfig;
use crate::keepers::{
    bootstrap_token, certificate_authority, cluster_identity, election, heartbeat_flush,
    lease_expiry, membership, node_certificate, virtual_ip_range,
};
use crate::node::Node;
use crate::pki::{self, JoinTicket};

/// A node serving its port, with its lease keeper running: what `hyphae-control-plane` runs,
/// and what `hyphae-agent --dev` embeds.
pub struct RunningNode {
    /// The node.
    pub node: Arc<Node>,
    /// The address its port is bound to.
    pub address: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Why Raft stopped by itself, once it has.
    failure: watch::Receiver<Option<String>>,
}

/// How a starting node relates to a cluster.
#[derive(Debug, Clone)]
pub enum Start {
    /// It belongs to a cluster already (it has its certificate), or joins one with a ticket
    /// through a member listed in `spec.members`, then adds itself.
    Join {
        /// The join token and the root's fingerprint, for a node without a certificate yet.
        ticket: Option<JoinTicket>,
    },
    /// It initializes a new cluster if it belongs to none, and stores the bootstrap admin
    /// token with this secret (by its hash) unless the cluster has a token already.
    Init {
        /// The bootstrap admin token's secret.
        bootstrap_secret: String,
        /// The operator's root to start the cluster with; a new one is made when `None`.
        root: Option<crate::ca::StoredCa>,
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
        let spec = &config.spec;
        let trust_domain = spec.certificates.trust_domain.clone();
        let seeds: Vec<String> = spec
            .members
            .iter()
            .filter(|member| member.id != spec.id)
            .map(|member| member.address.clone())
            .collect();
        let (tls, joined) = match (pki::load(&spec.data_dir, &trust_domain)?, &start) {
            (Some(tls), _) => (tls, false),
            (None, Start::Init { root, .. }) => (
                pki::found(
                    &spec.data_dir,
                    &trust_domain,
                    spec.id,
                    &pki::host_names(spec),
                    spec.certificates.lifetime.get(),
                    root.clone(),
                )?,
                false,
            ),
            (
                None,
                Start::Join {
                    ticket: Some(ticket),
                },
            ) => (
                pki::join(&spec.data_dir, &trust_domain, spec.id, &seeds, ticket).await?,
                true,
            ),
            (None, Start::Join { ticket: None }) => anyhow::bail!(
                "this node has no certificate: start the cluster's first node with --init, and join the others with --join-token-file and --ca-fingerprint"
            ),
        };
        let node = Arc::new(Node::start(config, tls).await?);
        let shutdown = CancellationToken::new();
        let (failed, failure) = watch::channel(None);
        let mut tasks = vec![
            tokio::spawn(watch_raft(node.raft.clone(), shutdown.clone(), failed)),
            tokio::spawn(crate::api::serve(
                Arc::clone(&node),
                listener,
                shutdown.clone(),
            )),
            tokio::spawn(election::keep(Arc::clone(&node), shutdown.clone())),
            tokio::spawn(lease_expiry::keep(Arc::clone(&node), shutdown.clone())),
            tokio::spawn(heartbeat_flush::keep(Arc::clone(&node), shutdown.clone())),
            tokio::spawn(cluster_identity::keep(Arc::clone(&node), shutdown.clone())),
            tokio::spawn(virtual_ip_range::keep(Arc::clone(&node), shutdown.clone())),
            tokio::spawn(certificate_authority::keep(
                Arc::clone(&node),
                shutdown.clone(),
            )),
            tokio::spawn(node_certificate::keep(Arc::clone(&node), shutdown.clone())),
        ];
        let joining = matches!(start, Start::Join { .. });
        if joining && (joined || !node.raft.is_initialized().await?) {
            // A node that has never been in a membership adds itself; one an operator removed
            // has a membership log and stays out.
            tasks.push(tokio::spawn(membership::keep(
                Arc::clone(&node),
                seeds,
                shutdown.clone(),
            )));
        }
        if let Start::Init {
            bootstrap_secret, ..
        } = start
        {
            match node.initialize().await {
                Ok(true) => tracing::info!("initialized a new cluster"),
                Ok(false) => {}
                Err(error) => {
                    // Nothing may outlive a failed start: stop what was spawned.
                    shutdown.cancel();
                    for task in tasks {
                        let _ = task.await;
                    }
                    return Err(error);
                }
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
            failure,
        })
    }

    /// Resolves, with the reason, once Raft has stopped by itself (a storage failure is fatal
    /// to it); the port has stopped serving by then. The owner should exit with an error so
    /// the service manager restarts the node (decision 33). Never resolves after [`stop`].
    /// The future borrows nothing, so an owner can hold it beside the node it later stops.
    ///
    /// [`stop`]: RunningNode::stop
    pub fn failed(&self) -> impl Future<Output = String> + Send + 'static {
        let mut failure = self.failure.clone();
        async move {
            let why = match failure.wait_for(Option::is_some).await {
                Ok(why) => why.clone(),
                Err(_) => None,
            };
            match why {
                Some(why) => why,
                None => std::future::pending().await,
            }
        }
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

/// Watches Raft until `shutdown`. When its core stops by itself, says why on `failed` and
/// cancels `shutdown`: the port and the keepers stop, so no read is answered from a state that
/// no longer advances.
async fn watch_raft(
    raft: Raft,
    shutdown: CancellationToken,
    failed: watch::Sender<Option<String>>,
) {
    let mut metrics = raft.metrics();
    let why = loop {
        if let Err(error) = &metrics.borrow_and_update().running_state {
            break error.to_string();
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = metrics.changed() => {
                if changed.is_err() {
                    break "Raft's core ended".to_string();
                }
            }
        }
    };
    tracing::error!(
        error = %why,
        "Raft has stopped (a failed write to its store is fatal to it); this node stops serving and exits so that it is restarted"
    );
    failed.send_replace(Some(why));
    shutdown.cancel();
}
