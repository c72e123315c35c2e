//! What the agent serves, as one immutable snapshot: services it can call (with their policy,
//! route and endpoints) and the instances it hosts. Built from the local file today and from the
//! control plane later; the data path never knows which, it only swaps snapshots atomically.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hyphae_policies::{
    AccessPolicySpec, AgentLimits, LocalService, Policy, Protocol, ServicePolicySpec, Upstream,
};
use serde::Serialize;

use crate::config::AgentConfig;
use crate::route::CompiledRoute;

/// Where a snapshot came from, shown on `/config` and `/ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The agent's local configuration file.
    LocalFile,
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
    /// Services this agent can call, by name.
    pub services: BTreeMap<String, Arc<Service>>,
    /// Instances on this host that peers reach through the inbound listener, by service name.
    pub local: BTreeMap<String, LocalService>,
    /// Local ports that lead to services.
    pub upstreams: Vec<Upstream>,
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
}

/// One place a service runs: the inbound address of the agent in front of an instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// Address to connect to.
    pub address: SocketAddr,
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
                        node: e.node.clone(),
                        site: e.site.clone().unwrap_or_else(|| site.clone()),
                        tags: e.tags.clone(),
                    })
                    .collect();
                let service = Service {
                    name: s.name.clone(),
                    protocol: s.protocol,
                    policy: service_policies.get(&s.name).cloned().unwrap_or_default(),
                    route: routes
                        .get(&s.name)
                        .map(|(name, spec)| CompiledRoute::new(name, spec.clone())),
                    access: access.get(&s.name).cloned(),
                    endpoints,
                };
                (s.name.clone(), Arc::new(service))
            })
            .collect();
        Snapshot {
            node: config.node.clone(),
            site,
            revision,
            source: Source::LocalFile,
            services,
            local: config
                .spec
                .services
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            upstreams: config.spec.upstreams.clone(),
            limits: config.spec.limits.clone(),
        }
    }

    /// The service a caller means by `host` (`payments`, `payments.mesh`, `payments.mesh:8080`).
    pub fn service_for_host(&self, host: &str, zone: &str) -> Option<&Arc<Service>> {
        let name = host_without_port(host);
        let name = name
            .strip_suffix(zone)
            .and_then(|n| n.strip_suffix('.'))
            .unwrap_or(name);
        self.services.get(name)
    }
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
