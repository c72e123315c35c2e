//! The registry's HTTP handlers: agents register, heartbeat, report health changes and leave;
//! operators read nodes and services. Registrations, health changes and departures are Raft
//! writes; heartbeats are not — they renew a lease in the leader's memory ([`crate::lease`]).

use std::collections::BTreeSet;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyphae_policies::ControlPlaneLimits;
use hyphae_policies::registry::{self, HealthReport, Heartbeat, Lease, NodeRecord, UNKNOWN_NODE};
use hyphae_policies::validate::check_name;

use super::answer::{Answer, ApiError, ApiRequest, Routed, json_body, json_response};
use super::leader::{read_barrier, to_current_leader, write};
use crate::heartbeat_batch::{BatchAnswer, HeartbeatBatch};
use crate::node::Node;
use crate::state::{Command, CommandResponse};
use crate::wire::NodeView;

/// `POST /v1/agent/register`: stores the node and its instances and starts its lease.
pub(crate) async fn register(node: &Node, request: &ApiRequest) -> Answer {
    let record: NodeRecord = json_body(request, "a node registration")?;
    speaks_for(request, &record.name)?;
    // A loopback address names the host it is registered from: only an agent on this host
    // may register one, or it would point callers at their own host's loopback.
    if record.address.ip().is_loopback() && !request.peer.is_local() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-registration",
            format!(
                "address {} is a loopback address, and this agent is on another host: register the address peers reach it at",
                record.address
            ),
        )
        .into());
    }
    // An agent registers only the services its certificate names: one compromised host must
    // not draw another service's traffic.
    if let Some(instance) = record
        .instances
        .iter()
        .find(|instance| !request.peer.services().any(|s| s == instance.service))
    {
        tracing::warn!(node = %record.name, service = %instance.service, "registration of a service the certificate does not name refused");
        crate::refusals::count(crate::refusals::Refusal::Agent);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this node's certificate does not name service `{}`: a host gets its services' identities when it joins. To add one, forget the node (`hyphae nodes forget {}`), then start its agent with a new join token and without its old certificate (the `tls` directory in its data directory)",
                instance.service, record.name
            ),
        )
        .into());
    }
    let limits = &node.config.spec.limits;
    check_registration(&record).map_err(|message| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-registration",
            message,
        )
    })?;
    let over =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "over-limit", message);
    check_sizes(&record, limits).map_err(over)?;
    let (known, count) = node
        .state
        .read(|state| (state.node(&record.name).is_some(), state.nodes().count()))
        .await;
    if !known && count >= limits.max_nodes as usize {
        return Err(over(format!(
            "the registry holds {count} nodes, its limit (limits.maxNodes); node `{}` was not added",
            record.name
        ))
        .into());
    }
    let name = record.name.clone();
    // Renewed first: the lease keeper must never pair the new record with an old deadline.
    node.leases.renew(&name);
    let written = write(
        node,
        Command::RegisterNode {
            node: record,
            max_nodes: Some(limits.max_nodes),
        },
    )
    .await?;
    if let CommandResponse::NodeRegistered { stored: false, .. } = written {
        // Others registered between the check above and this entry: the log's order decides.
        node.leases.forget(&name);
        return Err(over(format!(
            "the registry holds {} nodes, its limit (limits.maxNodes); node `{name}` was not added",
            limits.max_nodes
        ))
        .into());
    }
    tracing::info!(node = %name, certificate = ?request.peer.node(), "node registered");
    Ok(lease(node, written.revision()))
}

/// `POST /v1/agent/heartbeat`: renews a registered node's lease. Only the leader keeps
/// leases. A follower whose last batch reached the leader answers a node it knows itself and
/// queues the name for the next batch ([`crate::heartbeat_batch`]); otherwise (an unknown
/// node, a failing or full batch) the heartbeat goes on to the leader, whose answer, a 404
/// `unknown-node` included, is the agent's.
pub(crate) async fn heartbeat(node: &Node, request: &ApiRequest) -> Answer {
    let heartbeat: Heartbeat = json_body(request, "a heartbeat")?;
    speaks_for(request, &heartbeat.node)?;
    let known = |name: &str| {
        let name = name.to_string();
        node.state
            .read(move |state| state.node(&name).map(|n| n.revision))
    };
    match leader_only(node) {
        Ok(()) => {}
        Err(Routed::Forward(leader)) => {
            if node.heartbeat_queue.delivering()
                && let Some(revision) = known(&heartbeat.node).await
                && node.heartbeat_queue.queue(&heartbeat.node)
            {
                return Ok(lease(node, revision));
            }
            return Err(Routed::Forward(leader));
        }
        Err(error) => return Err(error),
    }
    let revision = known(&heartbeat.node)
        .await
        .ok_or_else(|| unknown(&heartbeat.node))?;
    node.leases.renew(&heartbeat.node);
    Ok(lease(node, revision))
}

/// `POST /raft/heartbeats` (a member's certificate, checked before): renews the lease of each
/// registered node a follower's batch names, as if each had heartbeated here; names that are
/// not registered renew nothing and come back in the answer. Only a leader a quorum confirmed
/// lately takes a batch (else 503, and the follower forwards heartbeats until one gets
/// through); a batch is never forwarded.
pub(crate) async fn renew_batch(node: &Node, body: &[u8]) -> Response<Full<Bytes>> {
    let batch: HeartbeatBatch = match serde_json::from_slice(body) {
        Ok(batch) => batch,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-body",
                format!("expected a heartbeat batch as JSON: {e}"),
            )
            .into_response();
        }
    };
    let max = node.config.spec.limits.max_nodes;
    if batch.nodes.len() > max as usize {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "over-limit",
            format!(
                "a batch of {} names, over limits.maxNodes ({max}); nothing was renewed",
                batch.nodes.len()
            ),
        )
        .into_response();
    }
    match leader_only(node) {
        Ok(()) => {}
        Err(Routed::Error(error)) => return error.into_response(),
        Err(Routed::Forward(_)) => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-leader",
                "this node does not lead; send heartbeat batches to the leader",
            )
            .into_response();
        }
    }
    let HeartbeatBatch { nodes } = batch;
    let (known, unknown): (Vec<String>, Vec<String>) = node
        .state
        .read(move |state| {
            nodes
                .into_iter()
                .partition(|name| state.node(name).is_some())
        })
        .await;
    node.leases.renew_all(known.iter().map(String::as_str));
    node.heartbeat_queue.count_renewed(known.len() as u64);
    json_response(
        StatusCode::OK,
        &BatchAnswer {
            renewed: known.len() as u64,
            unknown,
        },
    )
}

/// `POST /v1/agent/health`: records an agent's health changes; a report also shows the node is
/// alive, so it renews the lease.
pub(crate) async fn health(node: &Node, request: &ApiRequest) -> Answer {
    let report: HealthReport = json_body(request, "a health report")?;
    speaks_for(request, &report.node)?;
    let name = report.node.clone();
    let written = write(
        node,
        Command::ReportHealth {
            node: report.node,
            changes: report.changes,
        },
    )
    .await?;
    if let CommandResponse::HealthReported { known: false, .. } = written {
        return Err(unknown(&name).into());
    }
    node.leases.renew(&name);
    Ok(json_response(StatusCode::OK, &written))
}

/// `POST /v1/agent/deregister`: removes a node whose agent is stopping, at once rather than
/// after its lease.
pub(crate) async fn deregister(node: &Node, request: &ApiRequest) -> Answer {
    let leaving: Heartbeat = json_body(request, "a deregistration")?;
    speaks_for(request, &leaving.node)?;
    let name = leaving.node.clone();
    let written = write(node, Command::DeregisterNode { node: leaving.node }).await?;
    tracing::info!(node = %name, certificate = ?request.peer.node(), "node deregistered");
    node.leases.forget(&name);
    Ok(json_response(StatusCode::OK, &written))
}

/// Refuses an agent request about node `name` unless the caller's certificate names that node:
/// an agent speaks only for itself.
fn speaks_for(request: &ApiRequest, name: &str) -> Result<(), ApiError> {
    match request.peer.node() {
        Some(own) if own == name => Ok(()),
        own => {
            tracing::warn!(caller = ?own, node = name, path = %request.path, "agent request for another node refused");
            crate::refusals::count(crate::refusals::Refusal::Agent);
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this certificate may speak only for its own node, not for `{name}`"),
            ))
        }
    }
}

/// `DELETE /v1/nodes/{name}`: forgets a node (its record, and the name its join took, so a
/// new join, say of a reinstalled host, may take it). Its certificate keeps working until it
/// expires: shorten `certificates.lifetime` where that matters.
pub(crate) async fn release(node: &Node, name: &str) -> Answer {
    let command = Command::ReleaseNode {
        name: name.to_string(),
    };
    super::leader::remove(node, command, "node", name).await
}

/// `GET /v1/nodes` and `GET /v1/nodes/{name}`.
pub(crate) async fn nodes(node: &Node, request: &ApiRequest, name: Option<&str>) -> Answer {
    let views: Vec<NodeView> = registered(node, request)
        .await?
        .into_iter()
        .map(|record| NodeView {
            lease_remaining_ms: node
                .leases
                .remaining(&record.name)
                .map(|left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
            node: record,
        })
        .collect();
    list_or_one(views, name, "node", |v| &v.node.name)
}

/// `GET /v1/services` and `GET /v1/services/{name}`: instances grouped by service.
pub(crate) async fn services(node: &Node, request: &ApiRequest, name: Option<&str>) -> Answer {
    let nodes = registered(node, request).await?;
    let virtual_ips = node
        .state
        .read(|state| state.virtual_ips().assigned().clone())
        .await;
    let mut services = registry::services(&nodes);
    for service in &mut services {
        service.virtual_ip = virtual_ips.get(&service.name).copied();
    }
    list_or_one(services, name, "service", |s| &s.name)
}

/// Every registered node, read as the request asks (linearizable unless `?stale=true`).
async fn registered(node: &Node, request: &ApiRequest) -> Result<Vec<NodeRecord>, Routed> {
    read_barrier(node, request).await?;
    Ok(node
        .state
        .read(|state| state.nodes().cloned().collect())
        .await)
}

/// The whole list, or with `name` the one item of that name (404 when there is none).
fn list_or_one<T: serde::Serialize>(
    items: Vec<T>,
    name: Option<&str>,
    what: &str,
    name_of: impl Fn(&T) -> &str,
) -> Answer {
    let Some(name) = name else {
        return Ok(json_response(StatusCode::OK, &items));
    };
    match items.iter().find(|item| name_of(item) == name) {
        Some(found) => Ok(json_response(StatusCode::OK, found)),
        None => Err(not_found(what, name)),
    }
}

/// What a registration or heartbeat answers: the lease and the node's revision.
fn lease(node: &Node, revision: u64) -> Response<Full<Bytes>> {
    let ttl_ms = u64::try_from(node.leases.ttl().as_millis()).unwrap_or(u64::MAX);
    json_response(StatusCode::OK, &Lease { ttl_ms, revision })
}

/// Answers here only on a leader a quorum confirmed lately; elsewhere the request goes on to
/// the leader.
fn leader_only(node: &Node) -> Result<(), Routed> {
    // Borrowed, not cloned: every heartbeat passes here, and the metrics hold the membership.
    let receiver = node.raft.metrics();
    let metrics = receiver.borrow();
    match metrics.current_leader {
        Some(leader) if leader == metrics.id => {
            if node.leases.leadership_confirmed() {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "leadership-unconfirmed",
                    "this node leads but no quorum confirmed it lately; try another node",
                )
                .into())
            }
        }
        _ => Err(to_current_leader(&metrics)),
    }
}

fn unknown(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        UNKNOWN_NODE,
        format!("node `{name}` is not registered (its lease may have lapsed); register again"),
    )
}

fn not_found(what: &str, name: &str) -> Routed {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no {what} named `{name}`"),
    )
    .into()
}

/// The rules a registration must follow, with the reason it breaks one.
fn check_registration(record: &NodeRecord) -> Result<(), String> {
    check_name(&record.name).map_err(|e| format!("name `{}`: {e}", record.name))?;
    if record.site.is_empty() {
        return Err("site must not be empty".into());
    }
    // What is accepted, and why that is enough (README, "Between agents"): a unicast address
    // and a port. Callers reach the address over mutual TLS and accept only the node identity
    // registered with it, so an address that points elsewhere (another host's loopback, a
    // database) reaches a TLS handshake that fails, never a request.
    let ip = record.address.ip();
    let multicast = match ip {
        std::net::IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        std::net::IpAddr::V6(v6) => v6.is_multicast(),
    };
    if record.address.port() == 0 || ip.is_unspecified() || multicast {
        return Err(format!(
            "address {} is not one peers can connect to (a unicast address and a port)",
            record.address
        ));
    }
    let mut seen = BTreeSet::new();
    for instance in &record.instances {
        check_name(&instance.service)
            .map_err(|e| format!("service `{}`: {e}", instance.service))?;
        if instance.port == 0 {
            return Err(format!("service `{}`: port 0", instance.service));
        }
        if !seen.insert((&instance.service, instance.port)) {
            return Err(format!(
                "service `{}` port {} is listed twice",
                instance.service, instance.port
            ));
        }
    }
    Ok(())
}

/// Checks a registration against the registry's caps: instances per node, tags per instance,
/// label lengths. Each message names the limit.
fn check_sizes(record: &NodeRecord, limits: &ControlPlaneLimits) -> Result<(), String> {
    let label = |what: &str, text: &str| {
        if text.len() > limits.max_label_bytes as usize {
            Err(format!(
                "{what} is {} bytes, over limits.maxLabelBytes ({})",
                text.len(),
                limits.max_label_bytes
            ))
        } else {
            Ok(())
        }
    };
    label("site", &record.site)?;
    label("agentVersion", &record.agent_version)?;
    if record.instances.len() > limits.max_instances_per_node as usize {
        return Err(format!(
            "{} instances, over limits.maxInstancesPerNode ({})",
            record.instances.len(),
            limits.max_instances_per_node
        ));
    }
    for instance in &record.instances {
        if instance.tags.len() > limits.max_tags_per_instance as usize {
            return Err(format!(
                "service `{}` port {}: {} tags, over limits.maxTagsPerInstance ({})",
                instance.service,
                instance.port,
                instance.tags.len(),
                limits.max_tags_per_instance
            ));
        }
        for (key, value) in &instance.tags {
            label("a tag key", key)?;
            label("a tag value", value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hyphae_policies::registry::InstanceRecord;

    use super::*;

    fn record() -> NodeRecord {
        NodeRecord {
            name: "web-1".into(),
            site: "a".into(),
            address: "10.0.0.1:4143".parse().unwrap(),
            agent_version: "1".into(),
            instances: vec![InstanceRecord {
                service: "web".into(),
                port: 8080,
                protocol: hyphae_policies::Protocol::Http,
                tags: Default::default(),
                health: Default::default(),
            }],
            revision: 0,
        }
    }

    #[test]
    fn registrations_are_checked() {
        assert_eq!(check_registration(&record()), Ok(()));
        let mut bad = record();
        bad.name = "Web_1".into();
        assert!(check_registration(&bad).is_err());
        for address in [
            "0.0.0.0:4143",
            "[::]:4143",
            "224.0.0.1:4143",
            "255.255.255.255:1",
            "10.0.0.1:0",
        ] {
            let mut bad = record();
            bad.address = address.parse().unwrap();
            assert!(
                check_registration(&bad)
                    .unwrap_err()
                    .contains("not one peers can connect to"),
                "{address}"
            );
        }
        let mut bad = record();
        bad.instances.push(bad.instances[0].clone());
        assert!(check_registration(&bad).unwrap_err().contains("twice"));
    }

    #[test]
    fn registrations_stay_within_the_registry_caps() {
        let limits = ControlPlaneLimits {
            max_instances_per_node: 2,
            max_tags_per_instance: 1,
            max_label_bytes: 8,
            ..ControlPlaneLimits::default()
        };
        assert_eq!(check_sizes(&record(), &limits), Ok(()));
        let mut many = record();
        for port in [8081, 8082] {
            let mut instance = many.instances[0].clone();
            instance.port = port;
            many.instances.push(instance);
        }
        assert!(
            check_sizes(&many, &limits)
                .unwrap_err()
                .contains("maxInstancesPerNode")
        );
        let mut tagged = record();
        tagged.instances[0].tags = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        assert!(
            check_sizes(&tagged, &limits)
                .unwrap_err()
                .contains("maxTagsPerInstance")
        );
        let mut long = record();
        long.instances[0].tags = [("version".into(), "a".repeat(9))].into();
        assert!(
            check_sizes(&long, &limits)
                .unwrap_err()
                .contains("maxLabelBytes")
        );
        let mut site = record();
        site.site = "far-away-site".into();
        assert!(check_sizes(&site, &limits).unwrap_err().contains("site"));
    }
}
