//! A `ControlPlaneConfig` on its own: node id, members, and Raft timings that must fit together.

use std::collections::BTreeSet;

use super::Checker;
use super::host::check_host_port;
use crate::ControlPlaneConfigSpec;
use crate::diagnostic::FieldPath;

/// Room a replication message needs beside its entries (vote, log ids, JSON framing).
pub const PEER_ENVELOPE_BYTES: u64 = 64 * 1024;

/// Checks a `ControlPlaneConfig`'s spec.
pub(super) fn check(c: &mut Checker, path: &FieldPath, spec: &ControlPlaneConfigSpec) {
    if spec.id == 0 {
        c.error(path.key("id"), "node ids start at 1");
    }
    if let Some(advertise) = &spec.advertise
        && let Err(reason) = check_host_port(advertise)
    {
        c.error(path.key("advertise"), reason);
    }
    let mut ids = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for (i, member) in spec.members.iter().enumerate() {
        let member_path = path.key("members").index(i);
        if member.id == 0 {
            c.error(member_path.key("id"), "node ids start at 1");
        } else if !ids.insert(member.id) {
            c.error(
                member_path.key("id"),
                format!("node id {} is listed twice", member.id),
            );
        }
        if let Err(reason) = check_host_port(&member.address) {
            c.error(member_path.key("address"), reason);
        } else if !addresses.insert(member.address.as_str()) {
            c.error(
                member_path.key("address"),
                format!("address {} is listed twice", member.address),
            );
        }
    }
    if !spec.members.is_empty() && !ids.contains(&spec.id) {
        c.error(
            path.key("members"),
            format!(
                "this node (id {}) must be one of the members it starts a cluster with",
                spec.id
            ),
        );
    }
    c.positive(path.key("heartbeatInterval"), spec.heartbeat_interval);
    c.positive(path.key("writeTimeout"), spec.write_timeout);
    c.at_least_one(path.key("watchHistory"), spec.watch_history);
    if spec.lease_ttl < spec.election_timeout_max {
        c.error(
            path.key("leaseTtl"),
            format!(
                "must be at least electionTimeoutMax ({}), or an election alone could outlast every lease",
                spec.election_timeout_max
            ),
        );
    }
    c.at_least_one(path.key("snapshotEvery"), spec.snapshot_every);
    if spec.election_timeout_min >= spec.election_timeout_max {
        c.error(
            path.key("electionTimeoutMax"),
            format!(
                "must be longer than electionTimeoutMin ({})",
                spec.election_timeout_min
            ),
        );
    }
    if spec.transfer_timeout <= spec.election_timeout_max {
        c.error(
            path.key("transferTimeout"),
            format!(
                "must be longer than electionTimeoutMax ({}): a transfer waits for the leader lease to run out",
                spec.election_timeout_max
            ),
        );
    }
    if spec.heartbeat_interval >= spec.election_timeout_min {
        c.error(
            path.key("heartbeatInterval"),
            format!(
                "must be shorter than electionTimeoutMin ({}), or followers start elections while the leader is healthy",
                spec.election_timeout_min
            ),
        );
    }
    let certificates = path.key("certificates");
    let trust_domain = &spec.certificates.trust_domain;
    if trust_domain.chars().any(|ch| ch.is_ascii_uppercase()) {
        c.error(
            certificates.key("trustDomain"),
            "a trust domain is lower case",
        );
    } else {
        super::host::check_host(c, certificates.key("trustDomain"), trust_domain);
    }
    c.positive(certificates.key("lifetime"), spec.certificates.lifetime);
    for (site, lifetime) in &spec.certificates.site_lifetimes {
        c.positive(certificates.key("siteLifetimes").key(site), *lifetime);
    }
    let limits = path.key("limits");
    let given = &spec.limits;
    c.header_bytes(limits.key("maxHeaderBytes"), given.max_header_bytes);
    c.positive(limits.key("headerReadTimeout"), given.header_read_timeout);
    c.positive(limits.key("bodyReadTimeout"), given.body_read_timeout);
    for (field, value) in [
        ("maxConnections", given.max_connections.into()),
        (
            "maxConnectionsPerSource",
            given.max_connections_per_source.into(),
        ),
        ("maxConcurrentStreams", given.max_concurrent_streams.into()),
        ("maxAdminBodyBytes", given.max_admin_body_bytes.into()),
        ("maxPublicBodyBytes", given.max_public_body_bytes.into()),
        ("maxPublicRequests", given.max_public_requests.into()),
        ("maxAgentBodyBytes", given.max_agent_body_bytes.into()),
        ("maxPeerBodyBytes", given.max_peer_body_bytes.into()),
        ("maxWriteBytes", given.max_write_bytes.into()),
        ("maxReplicationBytes", given.max_replication_bytes.into()),
        ("maxSnapshotBytes", given.max_snapshot_bytes),
        ("maxNodes", given.max_nodes.into()),
        ("maxInstancesPerNode", given.max_instances_per_node.into()),
        ("maxLabelBytes", given.max_label_bytes.into()),
        ("maxWatchStreams", given.max_watch_streams.into()),
    ] {
        c.at_least_one(limits.key(field), value);
    }
    // A replication message carries at least one entry, whatever its size, plus its envelope.
    let room = u64::from(given.max_peer_body_bytes).saturating_sub(PEER_ENVELOPE_BYTES);
    for (field, bytes) in [
        ("maxWriteBytes", given.max_write_bytes),
        ("maxReplicationBytes", given.max_replication_bytes),
    ] {
        if u64::from(bytes) > room {
            c.error(
                limits.key(field),
                format!(
                    "{bytes} leaves no room in a peer message: at most maxPeerBodyBytes ({}) minus {PEER_ENVELOPE_BYTES}",
                    given.max_peer_body_bytes
                ),
            );
        }
    }
}
