//! Listeners on every service's virtual IP: what makes `http://payments.mesh:8080` work for an
//! app that knows nothing of the mesh. `<service>.mesh` resolves to the service's virtual IP
//! (a loopback address, the same on every host), and the agent listens there at each of the
//! service's ports; a connection is then an outbound call to that service, HTTP detected and
//! routed with the full policy, anything else carried as opaque TCP.
//!
//! The set follows the snapshot: listeners open as services appear and close as they go,
//! with no restart. An address the agent cannot bind (another process holds it) is logged
//! once, counted, and tried again at the next change or after [`RETRY_INTERVAL`].

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use hyphae_policies::ErrorChain;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listener::{ConnectionLimit, Listener};
use crate::model::Snapshot;
use crate::proxy::Proxy;
use crate::proxy::outbound::{self, Target};

/// How often addresses that could not be bound are tried again while nothing changes.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// One open listener: the service it leads to and how to stop it.
struct Open {
    service: Arc<str>,
    stop: CancellationToken,
}

/// The virtual IP listeners of one agent, kept in step with its snapshot.
pub struct VirtualListeners {
    /// The data path the connections enter.
    pub proxy: Arc<Proxy>,
    /// The connection cap all listeners share.
    pub limit: ConnectionLimit,
    /// Owns the accept loops (drained at shutdown).
    pub accepting: TaskTracker,
    /// Owns the connections (drained at shutdown).
    pub connections: TaskTracker,
}

impl VirtualListeners {
    /// Follows the snapshot until `shutdown`, which also closes every listener it opened.
    pub async fn run(
        self,
        mut changes: tokio::sync::watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) {
        let mut open: BTreeMap<SocketAddrV4, Open> = BTreeMap::new();
        let mut failed: BTreeMap<SocketAddrV4, String> = BTreeMap::new();
        loop {
            let snapshot = self.proxy.snapshot.load_full();
            self.reconcile(&wanted(&snapshot), &mut open, &mut failed, &shutdown)
                .await;
            crate::metrics::virtual_listeners(open.len(), failed.len());
            let retry = async {
                if failed.is_empty() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(RETRY_INTERVAL).await;
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
                () = retry => {}
            }
        }
        for listener in open.into_values() {
            listener.stop.cancel();
        }
    }

    /// Closes what is no longer wanted (or now leads elsewhere) and opens what is missing.
    async fn reconcile(
        &self,
        wanted: &BTreeMap<SocketAddrV4, Arc<str>>,
        open: &mut BTreeMap<SocketAddrV4, Open>,
        failed: &mut BTreeMap<SocketAddrV4, String>,
        shutdown: &CancellationToken,
    ) {
        open.retain(|address, listener| {
            let keep = wanted.get(address) == Some(&listener.service);
            if !keep {
                listener.stop.cancel();
                tracing::info!(%address, service = %listener.service, "virtual IP listener closed");
            }
            keep
        });
        failed.retain(|address, _| wanted.contains_key(address));
        for (address, service) in wanted {
            if open.contains_key(address) {
                continue;
            }
            match Listener::bind("virtual-ip", SocketAddr::V4(*address)).await {
                Ok(listener) => {
                    failed.remove(address);
                    let stop = shutdown.child_token();
                    self.serve(listener, Arc::clone(service), stop.clone());
                    tracing::info!(%address, %service, "listening on the service's virtual IP");
                    open.insert(
                        *address,
                        Open {
                            service: Arc::clone(service),
                            stop,
                        },
                    );
                }
                Err(error) => {
                    let why = ErrorChain(&error).to_string();
                    if failed.get(address) != Some(&why) {
                        crate::metrics::virtual_listener_bind_failed();
                        tracing::warn!(%address, %service, error = %why, "cannot listen on the service's virtual IP; will retry");
                    }
                    failed.insert(*address, why);
                }
            }
        }
    }

    /// Accepts on `listener` until `stop`, each connection an outbound call to `service`.
    fn serve(&self, listener: Listener, service: Arc<str>, stop: CancellationToken) {
        let proxy = Arc::clone(&self.proxy);
        let target = Target::Service(service);
        self.accepting.spawn(listener.run(
            self.limit.clone(),
            stop,
            self.connections.clone(),
            move |stream, peer, shutdown| {
                outbound::serve(Arc::clone(&proxy), target.clone(), stream, peer, shutdown)
            },
        ));
    }
}

/// Every address the snapshot's services want a listener on, with the service it leads to.
fn wanted(snapshot: &Snapshot) -> BTreeMap<SocketAddrV4, Arc<str>> {
    snapshot
        .virtual_services
        .iter()
        .flat_map(|(name, service)| {
            // `name:port`: that port's instances when the service has several ports.
            service.ports.keys().map(move |port| {
                let destination = crate::model::destination(name, Some(*port));
                (
                    SocketAddrV4::new(service.address, *port),
                    destination.into(),
                )
            })
        })
        .collect()
}
