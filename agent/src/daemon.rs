//! The running agent: binds every listener from the configuration, serves until shutdown,
//! swaps in new snapshots on reload, and drains in-flight calls before it stops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Admin};
use crate::config::AgentConfig;
use crate::control_plane_client::ControlPlaneClient;
use crate::dns::{DnsServer, MeshName, MeshPort, MeshZone};
use crate::health::{self, HealthTable};
use crate::identity::{self, IdentitySlot};
use crate::listener::{ConnectionLimit, Listener};
use crate::model::Snapshot;
use crate::proxy::Proxy;
use crate::proxy::inbound::{self, LocalClients};
use crate::proxy::outbound::{self, Target};
use crate::register::{Registrar, Registration, RegistrationStatus};
use crate::sources::Sources;
use crate::tunnel::{
    DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT, TunnelSettings, Tunnels,
};
use crate::virtual_listeners::VirtualListeners;
use crate::watch::{Remote, WatchStatus, Watcher};

/// Addresses the agent actually listens on (port 0 in the config becomes a real port).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoundAddresses {
    /// Admin endpoint.
    pub admin: SocketAddr,
    /// Inbound (peer agents).
    pub inbound: SocketAddr,
    /// HTTP proxy port, when enabled.
    pub http_proxy: Option<SocketAddr>,
    /// Upstream ports, by service.
    pub upstreams: Vec<(String, SocketAddr)>,
    /// The DNS server (UDP and TCP), when enabled.
    pub dns: Option<SocketAddr>,
}

/// A running agent.
pub struct Daemon {
    /// The data path's shared state.
    pub proxy: Arc<Proxy>,
    /// Where it listens.
    pub addresses: BoundAddresses,
    admin: Arc<Admin>,
    /// The local file and the control plane, merged into the snapshot.
    sources: Arc<Sources>,
    accepting: TaskTracker,
    connections: TaskTracker,
    admin_connections: TaskTracker,
    stop_accepting: CancellationToken,
    stop_admin: CancellationToken,
    /// Local instances' health, fed by the checks.
    health: Arc<HealthTable>,
    /// Stops the checks of the current configuration.
    checks: Mutex<CancellationToken>,
    /// Owns every health check task, of this configuration and of those it replaced.
    check_tasks: TaskTracker,
    /// What the agent registers; a change registers again.
    registration: tokio::sync::watch::Sender<Registration>,
    /// The registration client (it deregisters when this is cancelled).
    registrar: TaskTracker,
    stop_registrar: CancellationToken,
    /// The listener addresses the agent bound at start: a reload cannot move them.
    listeners: hyphae_policies::agent_config::Listeners,
}

/// Longest a stopping agent waits for the registration client to leave the registry before it
/// drains anyway (its own budget, [`crate::register::DEREGISTER_WAIT`], plus a margin).
pub const DEREGISTER_GRACE: Duration = Duration::from_secs(3);

impl Daemon {
    /// Binds every listener of `config` and starts serving.
    pub async fn start(config: &AgentConfig, metrics: PrometheusHandle) -> anyhow::Result<Daemon> {
        let snapshot = Snapshot::from_config(config, 1);
        let limits = snapshot.limits.clone();
        // Peer agents and local HTTP/2 instances are reached with the same settings: every
        // HTTP/2 client advertises `limits.maxHeaderBytes`.
        let tunnel_settings = TunnelSettings {
            keep_alive_interval: DEFAULT_KEEP_ALIVE_INTERVAL,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_header_list_size: limits.max_header_bytes,
            max_streams_per_connection: limits.max_streams_per_upstream_connection,
            max_connections_per_destination: limits.max_connections_per_upstream,
            extra_connection_idle_timeout: limits.upstream_connection_idle_timeout.get(),
        };
        // The node's certificate: saved (a join's, or its operator's), or to come from a join.
        let identity: IdentitySlot = Arc::default();
        match identity::saved(config)? {
            Some(saved) => identity.store(Some(Arc::new(saved))),
            None if config.spec.control_plane.is_empty() => tracing::error!(
                dir = %identity::tls_dir(config).display(),
                "this agent has no certificate and no control plane to join: peer agents cannot call it and it cannot call them; put its certificate there (`hyphae ca issue`)"
            ),
            None => {}
        }
        let tunnels = Tunnels::to_peers(tunnel_settings.clone(), Arc::clone(&identity));
        // Connections and the byte streams they splice share one tracker: a drain waits for both.
        let connections = TaskTracker::new();
        let proxy = Proxy::new(
            snapshot,
            tunnels,
            LocalClients::new(tunnel_settings),
            connections.clone(),
            &config.spec.dns.zone,
        );
        crate::metrics::revision(1);
        let sources = Sources::new(Arc::clone(&proxy), config.clone());
        let watch_status = Arc::new(WatchStatus::default());
        let registration_status = Arc::new(RegistrationStatus::default());
        let admin = Arc::new(Admin {
            proxy: Arc::clone(&proxy),
            metrics,
            ready: AtomicBool::new(false),
            watch: Arc::clone(&watch_status),
            registration: Arc::clone(&registration_status),
            control_plane_configured: !config.spec.control_plane.is_empty(),
            identity: Arc::clone(&identity),
        });
        let listeners = &config.spec.listeners;
        let bind = |name: &'static str, address: SocketAddr| async move {
            Listener::bind(name, address)
                .await
                .with_context(|| format!("cannot listen on {address} ({name})"))
        };
        let admin_listener = bind("admin", listeners.admin).await?;
        let inbound_listener = bind("inbound", listeners.inbound).await?;
        let proxy_listener = match listeners.http_proxy {
            Some(address) => Some(bind("http-proxy", address).await?),
            None => None,
        };
        let dns_server = match listeners.dns {
            Some(address) => Some(
                DnsServer::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} (dns)"))?,
            ),
            None => None,
        };
        let mut upstream_listeners = Vec::new();
        for upstream in &config.spec.upstreams {
            // `port: 9001` and `service: payments:9001` both lead to that port's instances.
            let destination = match upstream.port {
                Some(port) if !upstream.service.contains(':') => {
                    crate::model::destination(&upstream.service, Some(port))
                }
                _ => upstream.service.clone(),
            };
            upstream_listeners.push((destination, bind("upstream", upstream.listen).await?));
        }
        let addresses = BoundAddresses {
            admin: admin_listener.local_addr()?,
            inbound: inbound_listener.local_addr()?,
            http_proxy: proxy_listener
                .as_ref()
                .map(Listener::local_addr)
                .transpose()?,
            upstreams: upstream_listeners
                .iter()
                .map(|(service, l)| Ok((service.clone(), l.local_addr()?)))
                .collect::<std::io::Result<_>>()?,
            dns: dns_server.as_ref().map(DnsServer::local_addr),
        };

        let (registration, registration_changes) =
            tokio::sync::watch::channel(registration_of(config, addresses.inbound));
        let daemon = Daemon {
            proxy: Arc::clone(&proxy),
            addresses,
            admin: Arc::clone(&admin),
            sources,
            accepting: TaskTracker::new(),
            connections,
            admin_connections: TaskTracker::new(),
            stop_accepting: CancellationToken::new(),
            stop_admin: CancellationToken::new(),
            health: Arc::new(HealthTable::default()),
            checks: Mutex::new(CancellationToken::new()),
            check_tasks: TaskTracker::new(),
            registration,
            registrar: TaskTracker::new(),
            stop_registrar: CancellationToken::new(),
            listeners: config.spec.listeners.clone(),
        };
        daemon.start_checks(config);
        // Histograms keep their samples until upkeep folds them in: it ends with the admin
        // endpoint, which renders them.
        daemon.accepting.spawn(crate::metrics::keep_up(
            admin.metrics.clone(),
            daemon.stop_admin.clone(),
        ));
        // One client for the control plane: registration, the watch and renewals share its
        // connections, over mutual TLS with this node's certificate.
        let control_plane =
            ControlPlaneClient::new(config.spec.control_plane.clone(), limits.max_header_bytes);
        if !config.spec.control_plane.is_empty() {
            daemon.registrar.spawn(identity::run(
                config.clone(),
                Arc::clone(&identity),
                control_plane.clone(),
                daemon.stop_registrar.clone(),
            ));
        }
        let registrar = Registrar {
            control_plane: control_plane.clone(),
            local: registration_changes,
            health: Arc::clone(&daemon.health),
            status: registration_status,
        };
        daemon
            .registrar
            .spawn(registrar.run(daemon.stop_registrar.clone()));
        // Three budgets: the local apps' ports, the inbound port (the network's, also bounded
        // per source address), and the admin port, so none can shut another.
        let limit = ConnectionLimit::new(limits.max_connections);
        let inbound_limit = ConnectionLimit::new(limits.max_inbound_connections)
            .per_source(limits.max_inbound_connections_per_source);
        // The admin port keeps answering while the data path drains, so health checkers
        // can see `/ready` turn 503; it stops with the connections.
        daemon.spawn_accept(
            admin_listener,
            ConnectionLimit::new(admin::MAX_CONNECTIONS),
            daemon.stop_admin.clone(),
            daemon.admin_connections.clone(),
            {
                let admin = Arc::clone(&admin);
                move |stream, peer, shutdown| {
                    admin::serve(Arc::clone(&admin), stream, peer, shutdown)
                }
            },
        );
        daemon.spawn_accept(
            inbound_listener,
            inbound_limit,
            daemon.stop_accepting.clone(),
            daemon.connections.clone(),
            {
                let proxy = Arc::clone(&proxy);
                let identity = Arc::clone(&identity);
                move |stream, peer, shutdown| {
                    inbound::serve(
                        Arc::clone(&proxy),
                        Arc::clone(&identity),
                        stream,
                        peer,
                        shutdown,
                    )
                }
            },
        );
        if let Some(listener) = proxy_listener {
            daemon.spawn_outbound(listener, Target::ByHost, limit.clone());
        }
        for (service, listener) in upstream_listeners {
            daemon.spawn_outbound(listener, Target::Service(service.into()), limit.clone());
        }
        if let Some(server) = dns_server {
            let (zone, zone_changes) = tokio::sync::watch::channel(Arc::new(MeshZone::default()));
            daemon.accepting.spawn(follow_zone(
                Arc::clone(&proxy),
                daemon.sources.subscribe(),
                zone,
                daemon.stop_accepting.clone(),
            ));
            let settings = config.spec.dns.clone();
            let stop = daemon.stop_accepting.clone();
            daemon.accepting.spawn(async move {
                if let Err(error) = server.run(&settings, zone_changes, stop).await {
                    tracing::error!(error = %hyphae_policies::ErrorChain(&error), "the DNS server stopped");
                }
            });
        }
        daemon.accepting.spawn(crate::external_names::run(
            Arc::clone(&proxy),
            Arc::clone(&daemon.sources),
            config.spec.dns.clone(),
            daemon.stop_accepting.clone(),
        ));
        if listeners.virtual_ips {
            let virtual_listeners = VirtualListeners {
                proxy: Arc::clone(&proxy),
                limit: limit.clone(),
                accepting: daemon.accepting.clone(),
                connections: daemon.connections.clone(),
            };
            daemon.accepting.spawn(
                virtual_listeners.run(daemon.sources.subscribe(), daemon.stop_accepting.clone()),
            );
        }
        let watcher = Watcher {
            control_plane,
            data_dir: config.spec.data_dir.clone(),
            apply: {
                let sources = Arc::clone(&daemon.sources);
                Arc::new(move |remote: &Remote| {
                    let generation = sources.set_remote(remote);
                    tracing::info!(
                        revision = remote.revision,
                        generation,
                        "applied the control plane's state"
                    );
                })
            },
            status: watch_status,
            save_interval: config.spec.limits.snapshot_save_interval.get(),
        };
        // The saved state is loaded before the agent says it is ready, so `/ready` tells
        // from the first answer whether it could be used.
        let remote = watcher.load().await;
        daemon
            .accepting
            .spawn(watcher.run(remote, daemon.stop_admin.clone()));
        admin.ready.store(true, Ordering::Release);
        Ok(daemon)
    }

    fn spawn_outbound(&self, listener: Listener, target: Target, limit: ConnectionLimit) {
        let proxy = Arc::clone(&self.proxy);
        self.spawn_accept(
            listener,
            limit,
            self.stop_accepting.clone(),
            self.connections.clone(),
            move |stream, peer, shutdown| {
                outbound::serve(Arc::clone(&proxy), target.clone(), stream, peer, shutdown)
            },
        );
    }

    fn spawn_accept<F, Fut>(
        &self,
        listener: Listener,
        limit: ConnectionLimit,
        stop: CancellationToken,
        connections: TaskTracker,
        serve: F,
    ) where
        F: Fn(tokio::net::TcpStream, SocketAddr, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.accepting
            .spawn(listener.run(limit, stop, connections, serve));
    }

    /// Runs the health checks of `config`'s local services, stopping those of the previous one.
    fn start_checks(&self, config: &AgentConfig) {
        let stop = CancellationToken::new();
        let previous = std::mem::replace(
            &mut *self.checks.lock().unwrap_or_else(|p| p.into_inner()),
            stop.clone(),
        );
        previous.cancel();
        health::spawn_checks(&config.spec.services, &self.health, stop, &self.check_tasks);
    }

    /// Applies a new configuration's services and policies. Listener changes need a restart;
    /// they are reported, not applied.
    pub fn reload(&self, config: &AgentConfig) {
        self.start_checks(config);
        let registration = registration_of(config, self.addresses.inbound);
        self.registration.send_if_modified(|current| {
            let changed = *current != registration;
            *current = registration;
            changed
        });
        let current = self.proxy.snapshot.load_full();
        if config.spec.upstreams != current.upstreams {
            tracing::warn!(
                "upstream listeners changed; restart the agent to apply listener changes"
            );
        }
        if config.spec.listeners != self.listeners {
            tracing::warn!(
                "listeners changed (admin, inbound, httpProxy, dns or virtualIps); restart the agent to apply listener changes"
            );
        }
        let revision = self.sources.set_local(config.clone());
        tracing::info!(revision, "configuration reloaded");
    }

    /// Stops accepting, lets in-flight calls finish for up to `deadline`, then stops the admin
    /// port too. `/ready` answers 503 during the drain so health checkers stop sending.
    /// Returns true when every call finished in time; the caller exits either way, which
    /// closes what is left.
    pub async fn drain(self, deadline: Duration) -> bool {
        self.admin.ready.store(false, Ordering::Release);
        // Leave the registry first, so callers stop choosing this node while it drains.
        self.stop_registrar.cancel();
        self.registrar.close();
        let _ = tokio::time::timeout(DEREGISTER_GRACE, self.registrar.wait()).await;
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancel();
        self.check_tasks.close();
        // Data listeners stop accepting; their connections were handed the same token and
        // now finish their in-flight requests and close gracefully.
        self.stop_accepting.cancel();
        self.connections.close();
        let finished = tokio::time::timeout(deadline, self.connections.wait())
            .await
            .is_ok();
        self.stop_admin.cancel();
        self.admin_connections.close();
        self.accepting.close();
        // The calls are done: the pooled peer connections have nothing left to carry.
        let _ = tokio::time::timeout(ADMIN_CLOSE_GRACE, async {
            self.proxy.tunnels.close().await;
            self.proxy.local.close().await;
            self.check_tasks.wait().await;
            self.accepting.wait().await;
            self.admin_connections.wait().await;
        })
        .await;
        finished
    }
}

/// What `config` registers, with the inbound listener bound at `inbound`.
fn registration_of(config: &AgentConfig, inbound: SocketAddr) -> Registration {
    Registration {
        node: config.node.clone(),
        site: config.spec.site.clone(),
        advertise: config.spec.advertise,
        inbound,
        services: config.spec.services.clone(),
    }
}

/// How long open admin connections get to close once the data path has drained.
const ADMIN_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Keeps the DNS server's zone in step with the snapshot: every service with a virtual IP is
/// a name, with its ports. Returns at `shutdown`.
async fn follow_zone(
    proxy: Arc<Proxy>,
    mut changes: tokio::sync::watch::Receiver<u64>,
    zone: tokio::sync::watch::Sender<Arc<MeshZone>>,
    shutdown: CancellationToken,
) {
    loop {
        let snapshot = proxy.snapshot.load_full();
        let names = snapshot.virtual_services.iter().map(|(name, service)| {
            let ports = service
                .ports
                .iter()
                .map(|(port, protocol)| MeshPort {
                    port: *port,
                    protocol: *protocol,
                })
                .collect();
            let answer = MeshName {
                address: service.address,
                ports,
            };
            (name.clone(), answer)
        });
        zone.send_replace(Arc::new(MeshZone::new(names)));
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}
