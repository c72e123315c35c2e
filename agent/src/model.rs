//! What the agent serves, as one immutable snapshot: services it can call (with their policy,
//! route and endpoints) and the instances it hosts. Built from the local file today and from the
//! control plane later; the data path never knows which, it only swaps snapshots atomically.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::HeaderValue;
use http::uri::Authority;
use hyphae_policies::{
    AccessPolicySpec, AgentLimits, LocalService, Policy, Protocol, ServicePolicySpec, Upstream,
};
use serde::Serialize;

use crate::config::AgentConfig;
use crate::error::ProxyError;
use crate::metrics::ServiceMetrics;
use crate::route::CompiledRoute;

/// The `route` label of requests to a service without a Route.
pub const DEFAULT_ROUTE: &str = "default";

/// Where a snapshot came from, shown on `/config` and `/ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The agent's local configuration file.
    LocalFile,
    /// The local file plus the control plane's policies, live.
    ControlPlane,
    /// The local file plus the control plane's policies as last saved on disk (no control
    /// plane reachable since the agent started).
    Disk,
}

/// Everything the data path needs, immutable once built.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// This node's name.
    pub node: String,
    /// This node's site, for locality.
    pub site: String,
    /// Increases with every snapshot this agent applies.
    pub revision: u64,
    /// Where it came from.
    pub source: Source,
    /// The control plane's revision included, if any.
    pub control_plane_revision: Option<u64>,
    /// Services this agent can call, by name.
    pub services: BTreeMap<String, Arc<Service>>,
    /// Instances on this host that peers reach through the inbound listener, by service name.
    pub local: BTreeMap<String, LocalService>,
    /// The same instances as the inbound path addresses them, by service name.
    #[serde(skip)]
    pub instances: BTreeMap<String, LocalInstance>,
    /// Access policies by the service they protect (the inbound listener enforces those of
    /// this host's services).
    pub access: BTreeMap<String, AccessPolicySpec>,
    /// Local ports that lead to services.
    pub upstreams: Vec<Upstream>,
    /// Services apps reach by name with no configuration, by service name.
    pub virtual_services: BTreeMap<String, VirtualService>,
    /// Resource limits.
    pub limits: AgentLimits,
}

/// A service as callers see it.
#[derive(Debug, Serialize)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Protocol it speaks.
    pub protocol: Protocol,
    /// Timeouts, retries, circuit breaking and balancing (defaults when no policy names it).
    pub policy: ServicePolicySpec,
    /// Its route, when one is defined.
    pub route: Option<CompiledRoute>,
    /// Who may call it (enforced by the agents hosting it).
    pub access: Option<AccessPolicySpec>,
    /// Where it runs.
    pub endpoints: Vec<Endpoint>,
    /// Handles to its metrics.
    #[serde(skip)]
    pub metrics: ServiceMetrics,
}

/// What tells endpoints apart: the peer agent's address and the instance's port behind it.
pub type EndpointKey = (SocketAddr, Option<u16>);

impl Endpoint {
    /// What tells it from the service's other endpoints.
    pub fn key(&self) -> EndpointKey {
        (self.address, self.port)
    }

    /// The `hyphae-destination` header that tells the peer which instance the call is for.
    pub fn destination_header(&self) -> Result<HeaderValue, ProxyError> {
        self.destination.clone().ok_or_else(|| {
            ProxyError::BadRequest("the endpoint's service name is not a valid header value".into())
        })
    }
}

/// A service apps reach with no configuration: `<name>.mesh` resolves to `address`, where the
/// agent listens at each of the service's ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VirtualService {
    /// Its virtual IP, the same on every host.
    pub address: Ipv4Addr,
    /// The ports its instances (or its `ExternalService`) listen on, with their protocol.
    pub ports: BTreeMap<u16, Protocol>,
}

/// A local instance as the inbound path addresses it, worked out once per snapshot.
#[derive(Clone, Debug)]
pub struct LocalInstance {
    /// The service it is an instance of.
    pub service: Arc<str>,
    /// Where it listens.
    pub address: SocketAddr,
    /// `address` as a URI authority.
    pub authority: Authority,
    /// The protocol it speaks.
    pub protocol: Protocol,
}

impl LocalInstance {
    /// The instance of a `services:` entry.
    pub fn new(service: &LocalService) -> Self {
        let address = SocketAddr::new(service.address, service.port);
        LocalInstance {
            service: service.name.as_str().into(),
            address,
            authority: Authority::try_from(address.to_string())
                .expect("a socket address is a valid URI authority"),
            protocol: service.protocol,
        }
    }
}

/// One place a service runs: the inbound address of the agent in front of an instance, and
/// which of that agent's instances it is when it hosts several.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// Address to connect to.
    pub address: SocketAddr,
    /// The instance's port behind that agent, when known: the peer delivers to exactly it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// What the `hyphae-destination` header says to the peer: `service` or `service:port`.
    #[serde(skip)]
    destination: Option<HeaderValue>,
    /// Node it is on, when known.
    pub node: Option<String>,
    /// Site it is in.
    pub site: String,
    /// Instance tags, for route subsets.
    pub tags: BTreeMap<String, String>,
}

impl Snapshot {
    /// Builds the snapshot for a local configuration: static services become callable
    /// services, with the policies of the same name applied.
    pub fn from_config(config: &AgentConfig, revision: u64) -> Snapshot {
        let mut service_policies = BTreeMap::new();
        let mut routes = BTreeMap::new();
        let mut access = BTreeMap::new();
        for policy in &config.policies {
            match policy {
                Policy::ServicePolicy(o) => {
                    service_policies.insert(o.metadata.name.clone(), o.spec.clone());
                }
                Policy::Route(o) => {
                    routes.insert(
                        o.spec.service.clone(),
                        (o.metadata.name.clone(), o.spec.clone()),
                    );
                }
                Policy::AccessPolicy(o) => {
                    access.insert(o.spec.service.clone(), o.spec.clone());
                }
                Policy::ExternalService(_)
                | Policy::AgentConfig(_)
                | Policy::ControlPlaneConfig(_) => {}
            }
        }
        let site = config.spec.site.clone();
        let services = config
            .spec
            .static_services
            .iter()
            .map(|s| {
                let endpoints = s
                    .endpoints
                    .iter()
                    .map(|e| Endpoint {
                        address: e.address,
                        port: e.port,
                        destination: HeaderValue::from_str(&destination(
                            base_name(&s.name),
                            e.port,
                        ))
                        .ok(),
                        node: e.node.clone(),
                        site: e.site.clone().unwrap_or_else(|| site.clone()),
                        tags: e.tags.clone(),
                    })
                    .collect();
                // A port's view of a service (`payments:9001`) follows the service's policies.
                let base = base_name(&s.name);
                let route = routes
                    .get(base)
                    .map(|(name, spec)| CompiledRoute::new(name, spec.clone()));
                let metrics = ServiceMetrics::new(
                    &s.name,
                    route.as_ref().map_or(DEFAULT_ROUTE, |r| r.name.as_str()),
                );
                let service = Service {
                    name: s.name.clone(),
                    protocol: s.protocol,
                    policy: service_policies.get(base).cloned().unwrap_or_default(),
                    route,
                    access: access.get(base).cloned(),
                    endpoints,
                    metrics,
                };
                (s.name.clone(), Arc::new(service))
            })
            .collect();
        Snapshot {
            node: config.node.clone(),
            site,
            revision,
            source: Source::LocalFile,
            control_plane_revision: None,
            services,
            local: config
                .spec
                .services
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            instances: local_instances(&config.spec.services),
            upstreams: config.spec.upstreams.clone(),
            virtual_services: BTreeMap::new(),
            limits: config.spec.limits.clone(),
            access,
        }
    }

    /// The service a caller means by `host` (`payments`, `payments.mesh`, `payments.mesh:8080`):
    /// the port's own view when the service has several ports, else the service.
    pub fn service_for_host(&self, host: &str, zone: &str) -> Option<&Arc<Service>> {
        let name = host_without_port(host);
        let name = name
            .strip_suffix(zone)
            .and_then(|n| n.strip_suffix('.'))
            .unwrap_or(name);
        let port = &host[host_without_port(host).len()..];
        self.services
            .get(&format!("{name}{port}"))
            .or_else(|| self.services.get(name))
    }

    /// The service a destination names: `payments`, or `payments:9001` for one port of it
    /// (that port's view when the service has several ports, else the service itself).
    pub fn service(&self, destination: &str) -> Option<&Arc<Service>> {
        self.services
            .get(destination)
            .or_else(|| self.services.get(base_name(destination)))
    }
}

/// The service a destination (`payments` or `payments:9001`) is part of.
pub fn base_name(destination: &str) -> &str {
    destination
        .split_once(':')
        .map_or(destination, |(name, _)| name)
}

/// The destination that names `service`, or one port of it.
pub fn destination(service: &str, port: Option<u16>) -> String {
    match port {
        Some(port) => format!("{service}:{port}"),
        None => service.to_string(),
    }
}

/// This host's instances as the inbound path finds them: by `service:port`, and by `service`
/// alone for the first instance of each service (what a peer that names no port gets).
fn local_instances(services: &[LocalService]) -> BTreeMap<String, LocalInstance> {
    let mut instances = BTreeMap::new();
    for service in services {
        let instance = LocalInstance::new(service);
        instances
            .entry(service.name.clone())
            .or_insert_with(|| instance.clone());
        instances.insert(destination(&service.name, Some(service.port)), instance);
    }
    instances
}

/// `host:port` or `[v6]:port` without the port.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_instances_are_addressed_by_their_socket_address() {
        for (address, authority) in [
            ("127.0.0.1", "127.0.0.1:8080"),
            ("::1", "[::1]:8080"),
            ("fe80::1", "[fe80::1]:8080"),
        ] {
            let service = LocalService {
                name: "payments".into(),
                port: 8080,
                address: address.parse().unwrap(),
                protocol: Protocol::Grpc,
                tags: BTreeMap::new(),
                check: None,
            };
            let instance = LocalInstance::new(&service);
            assert_eq!(instance.authority.as_str(), authority);
            assert_eq!(instance.address.to_string(), authority);
            assert_eq!(&*instance.service, "payments");
            assert_eq!(instance.protocol, Protocol::Grpc);
        }
    }

    #[test]
    fn hosts_name_services_with_or_without_zone_and_port() {
        let config = AgentConfig {
            node: "n".into(),
            spec: hyphae_policies::AgentConfigSpec {
                static_services: vec![hyphae_policies::StaticService {
                    name: "payments".into(),
                    protocol: Protocol::Http,
                    endpoints: vec![],
                }],
                ..Default::default()
            },
            policies: vec![],
        };
        let snapshot = Snapshot::from_config(&config, 1);
        for host in [
            "payments",
            "payments.mesh",
            "payments.mesh:8080",
            "payments:80",
        ] {
            assert!(snapshot.service_for_host(host, "mesh").is_some(), "{host}");
        }
        assert!(snapshot.service_for_host("payment", "mesh").is_none());
        assert!(
            snapshot
                .service_for_host("payments.other", "mesh")
                .is_none()
        );
    }
}
