//! The two sources of what an agent serves — its local configuration file and the control
//! plane — merged into one snapshot whenever either changes. A control-plane policy replaces a
//! local one of the same kind and name; the registry's passing instances join the endpoints of
//! the static services of the same name (or make new services).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyphae_policies::registry::{self, Health, NodeRecord};
use hyphae_policies::watch::PolicyRecord;
use hyphae_policies::{LoadOptions, Policy, StaticEndpoint, StaticService, load_str};

use crate::config::AgentConfig;
use crate::model::{Snapshot, VirtualService};
use crate::proxy::Proxy;
use crate::watch::{Origin, Remote};

/// A control-plane document as read: the revision it was read at and its objects.
type ParsedDocument = (u64, Vec<Policy>);

/// The control plane's half, ready to merge.
#[derive(Clone)]
struct RemoteHalf {
    policies: Vec<Policy>,
    services: Vec<StaticService>,
    virtual_services: BTreeMap<String, VirtualService>,
    /// Instances registered per service (and per port view), per site, passing or not.
    registered_by_site: BTreeMap<String, BTreeMap<String, usize>>,
    revision: u64,
    origin: Origin,
}

/// Merges the local file and the control plane into the proxy's snapshot.
pub struct Sources {
    proxy: Arc<Proxy>,
    local: Mutex<AgentConfig>,
    remote: Mutex<Option<RemoteHalf>>,
    /// Each control-plane document as last read, with the revision it was read at.
    parsed: Mutex<BTreeMap<(String, String), ParsedDocument>>,
    generation: AtomicU64,
    /// The generation of the snapshot in force, for parts that follow it (virtual IP
    /// listeners, the DNS zone).
    changes: tokio::sync::watch::Sender<u64>,
    /// What the DNS hosts of external services resolved to, by service name.
    resolved: Mutex<BTreeMap<String, Vec<std::net::IpAddr>>>,
}

impl Sources {
    /// Sources serving `local` through `proxy` (whose first snapshot is generation 1).
    pub fn new(proxy: Arc<Proxy>, local: AgentConfig) -> Arc<Self> {
        Arc::new(Sources {
            proxy,
            local: Mutex::new(local),
            remote: Mutex::new(None),
            parsed: Mutex::new(BTreeMap::new()),
            generation: AtomicU64::new(1),
            changes: tokio::sync::watch::Sender::new(1),
            resolved: Mutex::new(BTreeMap::new()),
        })
    }

    /// Wakes whenever a new snapshot is in force; read it from the proxy.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A new local configuration (SIGHUP); returns the new snapshot's generation.
    pub fn set_local(&self, local: AgentConfig) -> u64 {
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = local;
        self.rebuild()
    }

    /// A new state from the control plane. Each stored document is read with the policy
    /// loader once per revision: a delta re-reads only what it changed. One that fails (it
    /// never should: the control plane validated it) is skipped and logged.
    pub fn set_remote(&self, remote: &Remote) -> u64 {
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = BTreeMap::new();
        for (key, record) in &remote.policies {
            let cached = parsed
                .remove(key)
                .filter(|(revision, _)| *revision == record.revision);
            let policies = cached.map_or_else(|| parse(record), |(_, policies)| policies);
            fresh.insert(key.clone(), (record.revision, policies));
        }
        let policies: Vec<Policy> = fresh
            .values()
            .flat_map(|(_, p)| p.iter().cloned())
            .collect();
        *parsed = fresh;
        drop(parsed);
        let nodes: Vec<NodeRecord> = remote.nodes.values().cloned().collect();
        *self.remote.lock().unwrap_or_else(|p| p.into_inner()) = Some(RemoteHalf {
            virtual_services: virtual_services(&remote.virtual_ips, &nodes, &policies),
            registered_by_site: registered_by_site(&nodes),
            policies,
            services: registry_services(&nodes),
            revision: remote.revision,
            origin: remote.origin,
        });
        self.rebuild()
    }

    /// New addresses for external services named by a DNS host; returns the new snapshot's
    /// generation.
    pub fn set_resolved(&self, resolved: BTreeMap<String, Vec<std::net::IpAddr>>) -> u64 {
        *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) = resolved;
        self.rebuild()
    }

    fn rebuild(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let mut config = self.local.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let remote = self
            .remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(RemoteHalf {
            policies, services, ..
        }) = &remote
        {
            merge_services(&mut config.spec.static_services, services);
            let mut merged: BTreeMap<(String, String), Policy> = config
                .policies
                .drain(..)
                .map(|p| ((p.kind().name().to_string(), p.name().to_string()), p))
                .collect();
            for policy in policies {
                merged.insert(
                    (policy.kind().name().to_string(), policy.name().to_string()),
                    policy.clone(),
                );
            }
            config.policies = merged.into_values().collect();
        }
        let resolved = self
            .resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut snapshot = Snapshot::from_config_resolved(&config, generation, &resolved);
        if let Some(remote) = remote {
            snapshot.control_plane_revision = Some(remote.revision);
            snapshot.virtual_services = remote.virtual_services;
            for (name, service) in &mut snapshot.services {
                // Just built, so not shared yet.
                if let (Some(service), Some(counts)) =
                    (Arc::get_mut(service), remote.registered_by_site.get(name))
                {
                    service.registered_by_site.clone_from(counts);
                }
            }
            snapshot.source = match remote.origin {
                Origin::ControlPlane => crate::model::Source::ControlPlane,
                Origin::Disk => crate::model::Source::Disk,
            };
        }
        self.proxy.snapshot.store(Arc::new(snapshot));
        self.changes.send_replace(generation);
        crate::metrics::revision(generation);
        generation
    }
}

/// Reads one stored document; a document that does not read (the control plane validated it,
/// so this means a version mismatch) is logged and yields nothing.
fn parse(record: &PolicyRecord) -> Vec<Policy> {
    let name = format!("control-plane:{}/{}", record.kind, record.name);
    match load_str(&name, &record.source, LoadOptions::default()).into_policies() {
        Ok(parsed) => parsed,
        Err(diagnostics) => {
            for diagnostic in diagnostics {
                tracing::error!("{}", diagnostic.to_string().trim_end());
            }
            Vec::new()
        }
    }
}

/// The registry's services as the agent calls them: each service's passing instances, reached
/// through the inbound listener of the node that hosts them, each instance an endpoint of its
/// own (a node may host several, on different ports). A service with no passing instance has
/// no endpoints (callers get a fast 503), as in Consul and Linkerd. A service whose instances
/// listen on several ports also gets one view per port, `name:port`, holding only the
/// instances on that port: what `name.mesh:port` and an upstream with a port reach.
fn registry_services(nodes: &[NodeRecord]) -> Vec<StaticService> {
    let mut services = Vec::new();
    for service in registry::services(nodes) {
        let mut endpoints: Vec<StaticEndpoint> = Vec::new();
        let mut ports = BTreeMap::new();
        for instance in service.instances {
            ports
                .entry(instance.port)
                .or_insert_with(|| (instance.protocol, Vec::new()));
            if instance.health != Health::Passing
                || endpoints
                    .iter()
                    .any(|e| e.address == instance.address && e.port == Some(instance.port))
            {
                continue;
            }
            let endpoint = StaticEndpoint {
                address: instance.address,
                node: Some(instance.node),
                site: Some(instance.site),
                tags: instance.tags,
                port: Some(instance.port),
            };
            if let Some((_, on_port)) = ports.get_mut(&instance.port) {
                on_port.push(endpoint.clone());
            }
            endpoints.push(endpoint);
        }
        if ports.len() > 1 {
            // Each port's view speaks what its instances declared for that port.
            for (port, (protocol, endpoints)) in ports {
                services.push(StaticService {
                    name: crate::model::destination(&service.name, Some(port)),
                    protocol,
                    endpoints,
                });
            }
        }
        services.push(StaticService {
            name: service.name,
            protocol: service.protocol,
            endpoints,
        });
    }
    services
}

/// How many instances each site registered, for each service and each of its port views,
/// passing or not.
fn registered_by_site(nodes: &[NodeRecord]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for node in nodes {
        for instance in &node.instances {
            for name in [
                instance.service.clone(),
                crate::model::destination(&instance.service, Some(instance.port)),
            ] {
                *counts
                    .entry(name)
                    .or_default()
                    .entry(node.site.clone())
                    .or_default() += 1;
            }
        }
    }
    counts
}

/// Every service with a virtual IP, with the ports its registered instances listen on (healthy
/// or not: a port exists while an instance is registered) and those its `ExternalService`
/// lists.
fn virtual_services(
    virtual_ips: &BTreeMap<String, Ipv4Addr>,
    nodes: &[NodeRecord],
    policies: &[Policy],
) -> BTreeMap<String, VirtualService> {
    let mut services: BTreeMap<String, VirtualService> = virtual_ips
        .iter()
        .map(|(name, address)| {
            let service = VirtualService {
                address: *address,
                ports: BTreeMap::new(),
            };
            (name.clone(), service)
        })
        .collect();
    let instances = nodes.iter().flat_map(|node| &node.instances);
    for instance in instances {
        if let Some(service) = services.get_mut(&instance.service) {
            service
                .ports
                .entry(instance.port)
                .or_insert(instance.protocol);
        }
    }
    for policy in policies {
        if let Policy::ExternalService(external) = policy
            && let Some(service) = services.get_mut(&external.metadata.name)
        {
            for port in &external.spec.ports {
                service.ports.entry(port.port).or_insert(port.protocol);
            }
        }
    }
    services
}

/// Adds the registry's services to the local file's static ones: endpoints of a service both
/// know are joined (an address listed twice is kept once, unless both name different
/// ports); the rest is appended.
fn merge_services(local: &mut Vec<StaticService>, registered: &[StaticService]) {
    for service in registered {
        match local.iter_mut().find(|s| s.name == service.name) {
            Some(existing) => {
                for endpoint in &service.endpoints {
                    if !existing.endpoints.iter().any(|e| {
                        e.address == endpoint.address
                            && (e.port.is_none()
                                || endpoint.port.is_none()
                                || e.port == endpoint.port)
                    }) {
                        existing.endpoints.push(endpoint.clone());
                    }
                }
            }
            None => local.push(service.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use hyphae_policies::Protocol;
    use hyphae_policies::registry::InstanceRecord;

    use super::*;

    fn node(name: &str, address: &str, health: Health) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            site: "b".into(),
            address: address.parse().unwrap(),
            agent_version: String::new(),
            instances: vec![InstanceRecord {
                service: "web".into(),
                port: 8080,
                protocol: Protocol::Http,
                tags: Default::default(),
                health,
            }],
            revision: 1,
        }
    }

    #[test]
    fn passing_registry_instances_join_static_endpoints() {
        let nodes = [
            node("web-1", "10.0.0.1:4143", Health::Passing),
            node("web-2", "10.0.0.2:4143", Health::Critical),
            node("web-3", "10.0.0.3:4143", Health::Passing),
        ];
        let mut local = vec![StaticService {
            name: "web".into(),
            protocol: Protocol::Http,
            endpoints: vec![StaticEndpoint {
                address: "10.0.0.3:4143".parse().unwrap(),
                node: None,
                site: None,
                tags: Default::default(),
                port: None,
            }],
        }];
        merge_services(&mut local, &registry_services(&nodes));
        let addresses: Vec<String> = local[0]
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(addresses, ["10.0.0.3:4143", "10.0.0.1:4143"]);
        assert_eq!(local[0].endpoints[1].site.as_deref(), Some("b"));
    }

    #[test]
    fn a_service_without_passing_instances_has_no_endpoints() {
        let services = registry_services(&[node("web-2", "10.0.0.2:4143", Health::Critical)]);
        assert_eq!(services.len(), 1);
        assert!(services[0].endpoints.is_empty());
    }

    #[test]
    fn each_instance_is_an_endpoint_and_each_port_of_a_service_has_a_view() {
        let mut host = node("web-1", "10.0.0.1:4143", Health::Passing);
        let mut second = host.instances[0].clone();
        second.port = 9090;
        second.protocol = hyphae_policies::Protocol::Tcp;
        host.instances.push(second);
        let other = node("web-2", "10.0.0.2:4143", Health::Passing);
        let services = registry_services(&[host, other]);
        let by_name: BTreeMap<&str, Vec<(String, Option<u16>)>> = services
            .iter()
            .map(|s| {
                let endpoints = s
                    .endpoints
                    .iter()
                    .map(|e| (e.address.to_string(), e.port))
                    .collect();
                (s.name.as_str(), endpoints)
            })
            .collect();
        let endpoint = |address: &str, port: u16| (address.to_string(), Some(port));
        assert_eq!(
            by_name,
            BTreeMap::from([
                (
                    "web",
                    vec![
                        endpoint("10.0.0.1:4143", 8080),
                        endpoint("10.0.0.1:4143", 9090),
                        endpoint("10.0.0.2:4143", 8080),
                    ]
                ),
                (
                    "web:8080",
                    vec![
                        endpoint("10.0.0.1:4143", 8080),
                        endpoint("10.0.0.2:4143", 8080)
                    ]
                ),
                ("web:9090", vec![endpoint("10.0.0.1:4143", 9090)]),
            ])
        );
        // Each port's view speaks what its instances declared there: a `tcp` port skips
        // HTTP detection.
        let protocol = |name: &str| services.iter().find(|s| s.name == name).map(|s| s.protocol);
        assert_eq!(protocol("web:9090"), Some(hyphae_policies::Protocol::Tcp));
        assert_eq!(protocol("web:8080"), Some(hyphae_policies::Protocol::Http));
    }
}
