//! `hyphae services` and `hyphae nodes`: the fleet's registry as the control plane holds it
//! (`GET /v1/services`, `GET /v1/nodes`), as a table, JSON or YAML. Read-only.

use std::collections::BTreeSet;

use anyhow::Result;
use clap::{Args, Subcommand};
use hyphae_policies::registry::{Health, ServiceSummary};
use serde::Serialize;

use super::get::Output;
use super::table::table;
use super::{Outcome, ReadArgs, ServerArgs};
use crate::wire::NodeView;

/// Path of the service list on a control-plane node.
pub const SERVICES_PATH: &str = "/v1/services";
/// Path of the node list on a control-plane node.
pub const NODES_PATH: &str = "/v1/nodes";

/// Arguments of `hyphae services` and `hyphae nodes`.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Output format (`yaml` prints the records as YAML).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Where to read from, and whether a stale read will do.
    #[command(flatten)]
    pub read: ReadArgs,
}

impl RegistryArgs {
    fn read<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.read.server.client()?.get_newer(&self.read.path(path))
    }
}

/// Runs `hyphae services`.
pub fn run_services(args: &RegistryArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    let services: Vec<ServiceSummary> = args.read(SERVICES_PATH)?;
    args.output.write(out, &services, services_table)
}

/// Arguments of `hyphae nodes`: the list, or `forget NAME`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodesArgs {
    /// What to do instead of listing.
    #[command(subcommand)]
    pub action: Option<NodesAction>,
    /// How to list.
    #[command(flatten)]
    pub list: RegistryArgs,
}

/// `hyphae nodes` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodesAction {
    /// Forget a node: its record, and the name its join took, so a new join may take it (a
    /// reinstalled host, or one that needs a certificate naming other services). Its current
    /// certificate works until it expires.
    Forget {
        /// The node's name.
        name: String,
        /// Where the control plane is (admin role).
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Runs `hyphae nodes`.
pub fn run_nodes(args: &NodesArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    match &args.action {
        None => {
            let nodes: Vec<NodeView> = args.list.read(NODES_PATH)?;
            args.list.output.write(out, &nodes, nodes_table)
        }
        Some(NodesAction::Forget { name, server }) => {
            let answer =
                server
                    .client()?
                    .expect_ok("DELETE", &format!("{NODES_PATH}/{name}"), "")?;
            if answer["existed"].as_bool() == Some(true) {
                writeln!(
                    out,
                    "forgot node `{name}` at revision {}; a new join may take its name",
                    answer["revision"]
                )?;
                Ok(Outcome::Success)
            } else {
                writeln!(out, "no node named `{name}`")?;
                Ok(Outcome::Invalid)
            }
        }
    }
}

/// Services as `NAME PROTOCOL VIRTUAL-IP INSTANCES NODES`, instances counted as
/// `passing/total`.
pub fn services_table(services: &[ServiceSummary]) -> String {
    let rows = services
        .iter()
        .map(|service| {
            let passing = service
                .instances
                .iter()
                .filter(|i| i.health == Health::Passing)
                .count();
            let mut seen = BTreeSet::new();
            let nodes: Vec<&str> = service
                .instances
                .iter()
                .map(|i| i.node.as_str())
                .filter(|node| seen.insert(*node))
                .collect();
            vec![
                service.name.clone(),
                wire_name(&service.protocol),
                service
                    .virtual_ip
                    .map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                format!("{passing}/{}", service.instances.len()),
                or_dash(nodes.join(",")),
            ]
        })
        .collect();
    table(
        &["NAME", "PROTOCOL", "VIRTUAL-IP", "INSTANCES", "NODES"],
        rows,
    )
}

/// Nodes as `NAME SITE ADDRESS VERSION INSTANCES REVISION LEASE` (the lease left, from the
/// leader; `-` in a stale read).
pub fn nodes_table(nodes: &[NodeView]) -> String {
    let rows = nodes
        .iter()
        .map(|view| {
            let node = &view.node;
            vec![
                node.name.clone(),
                node.site.clone(),
                node.address.to_string(),
                or_dash(node.agent_version.clone()),
                node.instances.len().to_string(),
                node.revision.to_string(),
                view.lease_remaining_ms.map_or_else(
                    || "-".to_string(),
                    |ms| format!("{:.1}s", ms as f64 / 1000.0),
                ),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "SITE",
            "ADDRESS",
            "VERSION",
            "INSTANCES",
            "REVISION",
            "LEASE",
        ],
        rows,
    )
}

/// A value as it is spelled on the wire (`http`, `grpc`...), so the table and the JSON agree.
fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "?".to_string(),
    }
}

fn or_dash(text: String) -> String {
    if text.is_empty() { "-".into() } else { text }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hyphae_policies::Protocol;
    use hyphae_policies::registry::{InstanceRecord, NodeRecord, ServiceInstance};

    use super::*;

    fn instance(node: &str, port: u16, health: Health) -> ServiceInstance {
        ServiceInstance {
            node: node.into(),
            site: "eu-west".into(),
            address: "10.0.0.1:4143".parse().unwrap(),
            port,
            protocol: Protocol::Http,
            tags: BTreeMap::new(),
            health,
        }
    }

    #[test]
    fn services_count_passing_instances_and_name_each_node_once() {
        let services = [
            ServiceSummary {
                name: "catalog".into(),
                protocol: Protocol::Grpc,
                instances: vec![
                    instance("app-1", 9000, Health::Passing),
                    instance("app-1", 9001, Health::Critical),
                    instance("app-2", 9000, Health::Passing),
                ],
                virtual_ip: Some(std::net::Ipv4Addr::new(127, 64, 0, 1)),
            },
            ServiceSummary {
                name: "payments-long-name".into(),
                protocol: Protocol::Http,
                instances: vec![],
                virtual_ip: None,
            },
        ];
        assert_eq!(
            services_table(&services),
            "\
NAME                PROTOCOL  VIRTUAL-IP  INSTANCES  NODES
catalog             grpc      127.64.0.1  2/3        app-1,app-2
payments-long-name  http      -           0/0        -
"
        );
    }

    #[test]
    fn nodes_show_site_address_version_instance_count_and_revision() {
        let nodes = [NodeView {
            node: NodeRecord {
                name: "web-1".into(),
                site: "eu-west".into(),
                address: "10.0.0.7:4143".parse().unwrap(),
                agent_version: "0.1.0".into(),
                instances: vec![InstanceRecord {
                    service: "frontend".into(),
                    port: 8080,
                    protocol: Protocol::Http,
                    tags: BTreeMap::new(),
                    health: Health::Passing,
                }],
                revision: 42,
            },
            lease_remaining_ms: Some(12_340),
        }];
        assert_eq!(
            nodes_table(&nodes),
            "\
NAME   SITE     ADDRESS        VERSION  INSTANCES  REVISION  LEASE
web-1  eu-west  10.0.0.7:4143  0.1.0    1          42        12.3s
"
        );
        let unversioned = NodeView {
            node: NodeRecord {
                agent_version: String::new(),
                instances: vec![],
                ..nodes[0].node.clone()
            },
            lease_remaining_ms: None,
        };
        assert!(nodes_table(&[unversioned]).contains("  -  "));
    }

    #[test]
    fn json_and_yaml_carry_the_records_as_the_api_sends_them() {
        let nodes = vec![NodeView {
            node: NodeRecord {
                name: "web-1".into(),
                site: "eu-west".into(),
                address: "10.0.0.7:4143".parse().unwrap(),
                agent_version: String::new(),
                instances: vec![],
                revision: 3,
            },
            lease_remaining_ms: None,
        }];
        let mut json = Vec::new();
        Output::Json.write(&mut json, &nodes, nodes_table).unwrap();
        let back: Vec<NodeView> = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, nodes);
        let mut yaml = Vec::new();
        Output::Yaml.write(&mut yaml, &nodes, nodes_table).unwrap();
        let yaml = String::from_utf8(yaml).unwrap();
        assert!(
            yaml.contains("name: web-1") && yaml.contains("revision: 3"),
            "{yaml}"
        );
    }
}
