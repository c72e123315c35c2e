//! The agent's place in the fleet's registry: it registers its node and local instances with
//! any control-plane node, heartbeats three times per lease (heartbeats are cheap and not Raft
//! writes), reports only health changes, registers again when the control plane forgot it or
//! the local services changed, and deregisters when it stops so callers move away at once.
//! Its requests go up the watch connection when that takes them, else over HTTP/2
//! ([`ControlPlaneClient::post_json`], decision 57); either way the answers read the same.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyphae_policies::registry::{
    DEREGISTER_PATH, HEALTH_PATH, HEARTBEAT_PATH, Health, HealthChange, HealthReport, Heartbeat,
    InstanceRecord, Lease, NodeRecord, REGISTER_PATH, UNKNOWN_NODE,
};
use hyphae_policies::{ErrorChain, LocalService};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control_plane_client::{BACKOFF_MIN, ControlPlaneClient, ControlPlaneError, jittered};
use crate::health::{HealthTable, InstanceKey};

/// Longest one registry request may take before the agent tries another node.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a stopping agent spends leaving the registry, all nodes tried together.
pub const DEREGISTER_WAIT: Duration = Duration::from_secs(2);
/// Shortest pause between heartbeats, whatever the lease.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// Longest the first registration waits for the watch connection to take requests before it
/// goes over HTTP/2 instead.
pub const UPLINK_WAIT: Duration = Duration::from_secs(2);

/// What the agent registers, as its local configuration says now.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    /// Node name.
    pub node: String,
    /// Site.
    pub site: String,
    /// The configured address for peers, if any.
    pub advertise: Option<SocketAddr>,
    /// The inbound listener's bound address.
    pub inbound: SocketAddr,
    /// The local instances.
    pub services: Vec<LocalService>,
}

/// Whether the agent is registered now, for `/ready`.
#[derive(Debug, Default)]
pub struct RegistrationStatus {
    /// The last registration or heartbeat was accepted.
    pub registered: AtomicBool,
}

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
enum RegistryError {
    /// The control plane does not hold this node: register again.
    #[error("the control plane does not hold this node")]
    UnknownNode,
    /// No address for peers could be worked out.
    #[error("cannot work out this node's address for peers; set `advertise` in the AgentConfig")]
    NoAddress,
    /// Anything else: try another node.
    #[error("the control plane did not take the request")]
    ControlPlane(#[source] ControlPlaneError),
}

impl From<ControlPlaneError> for RegistryError {
    fn from(error: ControlPlaneError) -> Self {
        if error.code() == Some(UNKNOWN_NODE) {
            RegistryError::UnknownNode
        } else {
            RegistryError::ControlPlane(error)
        }
    }
}

/// The registration client of one agent.
pub struct Registrar {
    /// The control-plane nodes and the way to them.
    pub control_plane: ControlPlaneClient,
    /// The current registration; a change registers again.
    pub local: watch::Receiver<Registration>,
    /// Local instances' health.
    pub health: Arc<HealthTable>,
    /// Shared status.
    pub status: Arc<RegistrationStatus>,
}

impl Registrar {
    /// Registers and keeps the registration alive until `shutdown`, then deregisters.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if self.control_plane.servers().is_empty() {
            return;
        }
        let mut session = self.control_plane.clone();
        let mut health_changes = self.health.subscribe();
        // The name the control plane holds this node under, if any.
        let mut registered_as: Option<String> = None;
        // How often that registration's lease wants a heartbeat.
        let mut kept_every: Option<Duration> = None;
        // The first registration waits a moment for the watch connection, so it goes up that
        // rather than open a second connection for itself (decision 57).
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = session.uplink().opened(UPLINK_WAIT) => {}
        }
        'register: loop {
            self.status.registered.store(false, Ordering::Release);
            let local = self.local.borrow_and_update().clone();
            let node = local.node.clone();
            if let Some(old) = registered_as.take_if(|old| *old != node) {
                // Renamed by a reload: the old name leaves now rather than after its lease.
                deregister(&mut session, &old).await;
            }
            health_changes.borrow_and_update();
            let mut reported = self.health.current();
            let attempt = async {
                let address = advertised(&local, session.servers())
                    .await
                    .ok_or(RegistryError::NoAddress)?;
                let record = record(&local, address, &reported);
                let lease = post::<_, Lease>(&session, REGISTER_PATH, &record).await?;
                Ok::<_, RegistryError>((lease, address))
            };
            let registered = tokio::select! {
                () = shutdown.cancelled() => return,
                registered = attempt => registered,
            };
            let lease = match registered {
                Ok((lease, address)) => {
                    tracing::info!(%address, ttl_ms = lease.ttl_ms, revision = lease.revision, "registered with the control plane");
                    session.served();
                    lease
                }
                Err(error) => {
                    fail_over(
                        &mut session,
                        &error,
                        "cannot register; trying the next node",
                    );
                    // What the registry accepted before (a reload the control plane refuses,
                    // say one naming a service the node's certificate does not) keeps its
                    // lease while this is retried: the node's running services stay
                    // reachable, as a refused reload keeps the running config.
                    if let (Some(kept), Some(every)) = (&registered_as, kept_every) {
                        let beat = Heartbeat { node: kept.clone() };
                        match post::<_, Lease>(&session, HEARTBEAT_PATH, &beat).await {
                            Err(RegistryError::UnknownNode) => registered_as = None,
                            _ => {
                                // Tried again at the lease's heartbeat pace, sooner when the
                                // config changes again.
                                tokio::select! {
                                    () = shutdown.cancelled() => return,
                                    _ = self.local.changed() => {}
                                    () = tokio::time::sleep(every) => {}
                                }
                                continue 'register;
                            }
                        }
                    }
                    if !session.back_off(&shutdown).await {
                        return;
                    }
                    continue 'register;
                }
            };
            registered_as = Some(node.clone());
            self.status.registered.store(true, Ordering::Release);
            let ttl = Duration::from_millis(lease.ttl_ms);
            let every = (ttl / 3).max(MIN_HEARTBEAT_INTERVAL);
            kept_every = Some(every);
            let mut last_renewal = Instant::now();
            let mut next_beat = last_renewal + every;
            // After a failed heartbeat or report: how soon to try again (another node), each
            // growing up to the heartbeat interval while the control plane stays unreachable.
            let mut beat_retry = BACKOFF_MIN;
            let mut report_retry = BACKOFF_MIN;
            let mut report_after = Instant::now();
            loop {
                let pending = !changes(&reported, &self.health.current()).is_empty();
                tokio::select! {
                    () = shutdown.cancelled() => {
                        deregister(&mut session, &node).await;
                        return;
                    }
                    changed = self.local.changed() => {
                        if changed.is_err() {
                            deregister(&mut session, &node).await;
                            return;
                        }
                        continue 'register;
                    }
                    _ = health_changes.changed() => {}
                    () = tokio::time::sleep_until(report_after), if pending => {}
                    () = tokio::time::sleep_until(next_beat) => {
                        let beat = Heartbeat { node: node.clone() };
                        let Some(answer) = post_or_leave::<_, Lease>(
                            &mut session,
                            &shutdown,
                            &node,
                            HEARTBEAT_PATH,
                            &beat,
                        )
                        .await
                        else {
                            return;
                        };
                        match answer {
                            Ok(_) => {
                                session.served();
                                self.status.registered.store(true, Ordering::Release);
                                last_renewal = Instant::now();
                                next_beat = last_renewal + every;
                                beat_retry = BACKOFF_MIN;
                            }
                            Err(RegistryError::UnknownNode) => continue 'register,
                            Err(error) => {
                                fail_over(
                                    &mut session,
                                    &error,
                                    "heartbeat failed; trying the next node",
                                );
                                next_beat = Instant::now() + jittered(&mut beat_retry, every);
                                if last_renewal.elapsed() >= ttl {
                                    // The lease has run out by now: the registry has let go.
                                    self.status.registered.store(false, Ordering::Release);
                                }
                            }
                        }
                    }
                }
                // Report whatever health changed since the last accepted report, unless a
                // failed one asked to wait.
                if Instant::now() < report_after {
                    continue;
                }
                let now = self.health.current();
                let changes = changes(&reported, &now);
                if changes.is_empty() {
                    continue;
                }
                let report = HealthReport {
                    node: node.clone(),
                    changes,
                };
                let Some(answer) = post_or_leave::<_, serde_json::Value>(
                    &mut session,
                    &shutdown,
                    &node,
                    HEALTH_PATH,
                    &report,
                )
                .await
                else {
                    return;
                };
                match answer {
                    Ok(_) => {
                        session.served();
                        reported = now;
                        report_retry = BACKOFF_MIN;
                    }
                    Err(RegistryError::UnknownNode) => continue 'register,
                    Err(error) => {
                        fail_over(&mut session, &error, "health report failed; will retry");
                        report_after = Instant::now() + jittered(&mut report_retry, every);
                    }
                }
            }
        }
    }
}

/// One registry request to the client's current node, within [`REQUEST_TIMEOUT`].
async fn post<B: serde::Serialize, T: DeserializeOwned>(
    session: &ControlPlaneClient,
    path: &str,
    body: &B,
) -> Result<T, RegistryError> {
    Ok(session.post_json(path, body, REQUEST_TIMEOUT).await?)
}

/// [`post`] for the registered `node`, unless `shutdown` comes first: then the node leaves
/// the registry and `None` tells the registrar to stop.
async fn post_or_leave<B: serde::Serialize, T: DeserializeOwned>(
    session: &mut ControlPlaneClient,
    shutdown: &CancellationToken,
    node: &str,
    path: &str,
    body: &B,
) -> Option<Result<T, RegistryError>> {
    tokio::select! {
        () = shutdown.cancelled() => {
            deregister(session, node).await;
            None
        }
        answer = post(session, path, body) => Some(answer),
    }
}

/// Logs a registry request that failed (`what` says which, and what happens next) and moves
/// `session` on to the next control-plane node.
fn fail_over(session: &mut ControlPlaneClient, error: &dyn std::error::Error, what: &str) {
    tracing::warn!(server = session.server(), error = %ErrorChain(error), "{what}");
    session.fail_over();
}

/// Leaves the registry, trying each node once within [`DEREGISTER_WAIT`] in all; a failure
/// only means callers notice when the lease lapses.
async fn deregister(session: &mut ControlPlaneClient, node: &str) {
    let leaving = Heartbeat {
        node: node.to_string(),
    };
    let attempts = u32::try_from(session.servers().len())
        .unwrap_or(u32::MAX)
        .max(1);
    let per_attempt = DEREGISTER_WAIT / attempts;
    for _ in 0..attempts {
        match session
            .post_json::<_, serde_json::Value>(DEREGISTER_PATH, &leaving, per_attempt)
            .await
        {
            Ok(_) => {
                tracing::info!("deregistered from the control plane");
                return;
            }
            Err(error) => fail_over(session, &error, "cannot deregister"),
        }
    }
}

/// The node record to register.
fn record(
    local: &Registration,
    address: SocketAddr,
    health: &BTreeMap<InstanceKey, Health>,
) -> NodeRecord {
    NodeRecord {
        name: local.node.clone(),
        site: local.site.clone(),
        address,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        instances: local
            .services
            .iter()
            .map(|s| InstanceRecord {
                service: s.name.clone(),
                port: s.port,
                protocol: s.protocol,
                tags: s.tags.clone(),
                health: health
                    .get(&(s.name.clone(), s.port))
                    .copied()
                    .unwrap_or_default(),
            })
            .collect(),
        revision: 0,
    }
}

/// The instances whose health differs between `reported` and `now`.
fn changes(
    reported: &BTreeMap<InstanceKey, Health>,
    now: &BTreeMap<InstanceKey, Health>,
) -> Vec<HealthChange> {
    now.iter()
        .filter(|(key, health)| reported.get(*key) != Some(*health))
        .map(|((service, port), health)| HealthChange {
            service: service.clone(),
            port: *port,
            health: *health,
        })
        .collect()
}

/// Where peers reach this node: the configured `advertise`, else the inbound listener's
/// address, else (it listens on a wildcard) the local address this host uses towards the
/// control plane, with the inbound port.
async fn advertised(local: &Registration, servers: &[String]) -> Option<SocketAddr> {
    if let Some(address) = local.advertise {
        return Some(address);
    }
    if !local.inbound.ip().is_unspecified() {
        return Some(local.inbound);
    }
    for server in servers {
        let Ok(mut targets) = tokio::net::lookup_host(server.as_str()).await else {
            continue;
        };
        let Some(target) = targets.next() else {
            continue;
        };
        let any = if target.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        // A connected UDP socket sends nothing; it only asks the kernel for the route.
        let Ok(socket) = tokio::net::UdpSocket::bind(SocketAddr::new(any, 0)).await else {
            continue;
        };
        if socket.connect(target).await.is_ok()
            && let Ok(address) = socket.local_addr()
        {
            return Some(SocketAddr::new(address.ip(), local.inbound.port()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_instances_are_reported() {
        let key = |s: &str| (s.to_string(), 80);
        let reported = BTreeMap::from([(key("a"), Health::Passing), (key("b"), Health::Passing)]);
        let now = BTreeMap::from([
            (key("a"), Health::Passing),
            (key("b"), Health::Critical),
            (key("c"), Health::Passing),
        ]);
        let names: Vec<_> = changes(&reported, &now)
            .into_iter()
            .map(|c| (c.service, c.health))
            .collect();
        assert_eq!(
            names,
            [
                ("b".to_string(), Health::Critical),
                ("c".to_string(), Health::Passing)
            ]
        );
    }

    #[tokio::test]
    async fn the_advertised_address_falls_back_to_the_route_towards_the_control_plane() {
        let mut local = Registration {
            node: "n".into(),
            site: "s".into(),
            advertise: None,
            inbound: "0.0.0.0:4143".parse().unwrap(),
            services: vec![],
        };
        let address = advertised(&local, &["127.0.0.1:7400".into()])
            .await
            .unwrap();
        assert_eq!(address, "127.0.0.1:4143".parse().unwrap());
        local.inbound = "127.0.0.2:4143".parse().unwrap();
        assert_eq!(
            advertised(&local, &[]).await.unwrap(),
            "127.0.0.2:4143".parse().unwrap()
        );
        local.advertise = Some("10.200.0.9:4143".parse().unwrap());
        assert_eq!(
            advertised(&local, &[]).await.unwrap(),
            "10.200.0.9:4143".parse().unwrap()
        );
    }
}
