//! The wire form of the fleet's registry: which nodes run an agent, which service instances each
//! hosts, and whether they pass their health checks. Agents send these to the control plane
//! (`/v1/agent/register`, `/heartbeat`, `/health`, `/deregister`); the control plane stores them
//! in Raft and pushes them to every agent in the watch stream. Shared by both sides so the agent
//! does not depend on the control-plane crate.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Protocol;

/// Path an agent registers itself at (`POST` a [`NodeRecord`]).
pub const REGISTER_PATH: &str = "/v1/agent/register";
/// Path an agent renews its lease at (`POST` a [`Heartbeat`]); answered with a [`Lease`].
pub const HEARTBEAT_PATH: &str = "/v1/agent/heartbeat";
/// Path an agent reports health changes at (`POST` a [`HealthReport`]).
pub const HEALTH_PATH: &str = "/v1/agent/health";
/// Path an agent leaves the registry at when it stops (`POST` a [`Heartbeat`]).
pub const DEREGISTER_PATH: &str = "/v1/agent/deregister";
/// Path a host joins at with a join token and a CSR (`POST` a [`JoinRequest`]).
pub const JOIN_PATH: &str = "/v1/agent/join";
/// Path an agent renews its certificate at, presenting the current one (`POST` a
/// [`RenewRequest`]); answered, like a join, with [`Joined`].
pub const RENEW_PATH: &str = "/v1/agent/renew";
/// The stable error code of a heartbeat or health report for a node the registry does not hold
/// (it expired or never registered): the agent registers again.
pub const UNKNOWN_NODE: &str = "unknown-node";

/// Whether an instance passes its agent's health check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// It passes (or has no check): callers may send it traffic.
    #[default]
    Passing,
    /// It fails its check, or has not passed one yet: callers avoid it.
    Critical,
}

/// One service instance on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    /// The service it is an instance of.
    pub service: String,
    /// The port it listens on, on its node (identifies it with `service`).
    pub port: u16,
    /// The protocol it speaks.
    #[serde(default)]
    pub protocol: Protocol,
    /// Tags routes select subsets by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Its health as last reported.
    #[serde(default)]
    pub health: Health,
}

/// A node as its agent registers it and as the registry stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// Node name (the agent's `metadata.name`), unique in the fleet.
    pub name: String,
    /// Site the node is in, for locality.
    pub site: String,
    /// Where peer agents reach this node's inbound listener.
    pub address: SocketAddr,
    /// Version of the agent, for rolling upgrades.
    #[serde(default)]
    pub agent_version: String,
    /// The service instances it hosts.
    #[serde(default)]
    pub instances: Vec<InstanceRecord>,
    /// The Raft log index that last wrote this record; set by the control plane (what an
    /// agent sends is ignored).
    #[serde(default)]
    pub revision: u64,
}

/// A heartbeat (or deregistration) from one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// The node's name.
    pub node: String,
}

/// The answer to a registration or heartbeat: how long the lease now runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// Milliseconds until the node expires unless it heartbeats again.
    pub ttl_ms: u64,
    /// The revision of the node's record.
    pub revision: u64,
}

/// A change of one instance's health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthChange {
    /// The instance's service.
    pub service: String,
    /// The instance's port.
    pub port: u16,
    /// Its new health.
    pub health: Health,
}

/// Health changes an agent observed since its last report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// The node's name.
    pub node: String,
    /// The changes, in the order they happened (the last one for an instance wins).
    pub changes: Vec<HealthChange>,
}

/// One instance as `GET /v1/services` lists it: the instance with the node that hosts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstance {
    /// The node hosting it.
    pub node: String,
    /// The node's site.
    pub site: String,
    /// The node's inbound address, where callers' agents send its traffic.
    pub address: SocketAddr,
    /// The instance's port on its node.
    pub port: u16,
    /// The protocol it speaks on that port: a service's ports may differ (`http` and `tcp`).
    #[serde(default)]
    pub protocol: Protocol,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Health.
    pub health: Health,
}

/// A service as `GET /v1/services` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSummary {
    /// The service's name.
    pub name: String,
    /// The protocol its instances speak (the first registered instance's).
    pub protocol: Protocol,
    /// Every instance, ordered by node then port.
    pub instances: Vec<ServiceInstance>,
    /// The address apps on every host reach it at (`<name>.mesh`), once the control plane
    /// gave it one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_ip: Option<std::net::Ipv4Addr>,
}

/// Groups the instances of `nodes` by service, as `GET /v1/services` answers and as agents
/// build their endpoint lists.
pub fn services(nodes: &[NodeRecord]) -> Vec<ServiceSummary> {
    let mut by_name: BTreeMap<&str, ServiceSummary> = BTreeMap::new();
    for node in nodes {
        for instance in &node.instances {
            let summary = by_name
                .entry(&instance.service)
                .or_insert_with(|| ServiceSummary {
                    name: instance.service.clone(),
                    protocol: instance.protocol,
                    instances: Vec::new(),
                    virtual_ip: None,
                });
            summary.instances.push(ServiceInstance {
                node: node.name.clone(),
                site: node.site.clone(),
                address: node.address,
                port: instance.port,
                protocol: instance.protocol,
                tags: instance.tags.clone(),
                health: instance.health,
            });
        }
    }
    let mut services: Vec<ServiceSummary> = by_name.into_values().collect();
    for service in &mut services {
        service
            .instances
            .sort_by(|a, b| (&a.node, a.port).cmp(&(&b.node, b.port)));
    }
    services
}

/// `POST /v1/agent/join`: a host asks for its node certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JoinRequest {
    /// The join token's secret.
    pub token: String,
    /// The node's name (its agent's `metadata.name`).
    pub name: String,
    /// The node's site.
    pub site: String,
    /// The services it hosts: each gets a service identity in the certificate.
    #[serde(default)]
    pub services: Vec<String>,
    /// A PKCS#10 certificate signing request, PEM; the key stays on the host.
    pub csr_pem: String,
}

/// The answer to a join: the node's certificate and the root to trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    /// The node certificate, PEM.
    pub cert_pem: String,
    /// Every root to trust, PEM (the signing one first; during a rotation also the next and
    /// the retiring ones).
    pub ca_pem: String,
    /// The root that signed the certificate, PEM: what follows it in the chain a host presents.
    #[serde(default)]
    pub issuer_pem: String,
    /// The SPIFFE IDs the certificate carries.
    pub identities: Vec<String>,
    /// When it expires (ms since the Unix epoch); renew at two thirds of its life.
    pub expires_at_ms: u64,
}

/// `POST /v1/agent/renew`: an agent asks for a fresh certificate with the same identities as
/// the one it presents (over mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RenewRequest {
    /// A PKCS#10 certificate signing request for a new key, PEM.
    pub csr_pem: String,
}

impl Joined {
    /// The chain a host presents: the certificate, then the root that signed it.
    pub fn chain_pem(&self) -> String {
        let issuer = if self.issuer_pem.is_empty() {
            &self.ca_pem
        } else {
            &self.issuer_pem
        };
        format!("{}{issuer}", self.cert_pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, instances: &[(&str, u16, Health)]) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            site: "a".into(),
            address: "10.0.0.1:4143".parse().unwrap(),
            agent_version: String::new(),
            instances: instances
                .iter()
                .map(|(service, port, health)| InstanceRecord {
                    service: (*service).into(),
                    port: *port,
                    protocol: Protocol::Http,
                    tags: BTreeMap::new(),
                    health: *health,
                })
                .collect(),
            revision: 1,
        }
    }

    #[test]
    fn services_group_instances_across_nodes_in_a_stable_order() {
        let nodes = [
            node("web-2", &[("web", 80, Health::Critical)]),
            node(
                "web-1",
                &[("web", 80, Health::Passing), ("api", 9000, Health::Passing)],
            ),
        ];
        let services = services(&nodes);
        let names: Vec<_> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "web"]);
        let web: Vec<_> = services[1]
            .instances
            .iter()
            .map(|i| (i.node.as_str(), i.health))
            .collect();
        assert_eq!(
            web,
            [("web-1", Health::Passing), ("web-2", Health::Critical)]
        );
    }

    #[test]
    fn a_registration_without_optional_fields_reads() {
        let record: NodeRecord = serde_json::from_str(
            r#"{"name":"n","site":"s","address":"127.0.0.1:4143","instances":[{"service":"web","port":80}]}"#,
        )
        .unwrap();
        assert_eq!(record.instances[0].health, Health::Passing);
        assert_eq!(record.revision, 0);
    }
}
