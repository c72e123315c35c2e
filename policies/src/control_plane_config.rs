//! `ControlPlaneConfig`: a control-plane node's own local file — its Raft id, where it listens,
//! where it keeps its data, and the cluster's nodes it joins through. `metadata.name` is the
//! node's name.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// Spec of a `ControlPlaneConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlaneConfigSpec {
    /// Raft node id, unique in the cluster and never reused; at least 1.
    pub id: u64,
    /// Address for peers, agents and the admin API. Default `127.0.0.1:7400`.
    #[cfg_attr(test, proptest(strategy = "crate::roundtrip_tests::socket_addr()"))]
    pub listen: SocketAddr,
    /// `host:port` other nodes and agents use to reach this one; unset means `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Where the Raft log and state live. Default `/var/lib/hyphae/control-plane`.
    pub data_dir: PathBuf,
    /// The cluster's nodes: a node joining with a control-plane join token asks these (other
    /// than itself) for its certificate and to be added. `--init` starts a cluster of this
    /// node alone; the others join.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    /// How often the leader heartbeats followers. Default `100ms`.
    pub heartbeat_interval: Duration,
    /// Shortest election timeout. A voter that heard from a leader this recently refuses to
    /// vote (and to pre-vote) for anyone else: the leader lease. Default `500ms`.
    pub election_timeout_min: Duration,
    /// Longest election timeout: a voter that hears from no leader for a random time between
    /// the two asks the voters for a pre-vote, then stands. Default `1s`.
    pub election_timeout_max: Duration,
    /// Longest a write waits for a quorum before the API answers 503. Default `5s`.
    pub write_timeout: Duration,
    /// How long an agent stays registered without a heartbeat; agents heartbeat three times
    /// per lease. A new leader grants every node a full lease first. Default `15s`.
    pub lease_ttl: Duration,
    /// Revisions whose changes each node remembers, so a watch that reconnects with
    /// `?since=REV` gets only what changed; an older REV gets a full snapshot. Default 10000.
    pub watch_history: u32,
    /// Log entries applied since the last snapshot after which the node builds a new one, so
    /// the log can be compacted and the disk does not grow without end; at least 1. Default
    /// `5000`.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot when the log is compacted, so a follower that lags
    /// by fewer than this catches up from the log instead of receiving the whole state.
    /// Default `1000`.
    pub logs_kept_after_snapshot: u64,
    /// Longest a leadership transfer may take: the target catching up, the voters' leader
    /// lease running out, the election. Elections and heartbeats paused for a transfer resume
    /// after this long even if the leader vanished. Longer than `electionTimeoutMax`. Default
    /// `10s`.
    pub transfer_timeout: Duration,
    /// What the node's port accepts: connections, streams, head and body sizes, timeouts.
    pub limits: ControlPlaneLimits,
    /// The identities the cluster's certificate authority hands out.
    pub certificates: CertificatesConfig,
    /// The loopback block every mesh service's virtual IP comes from. The cluster's first
    /// leader fixes it; a later change has no effect (the node logs a warning). Default
    /// `127.64.0.0/10`.
    #[cfg_attr(test, proptest(value = "crate::VirtualIpRange::default()"))]
    pub virtual_ips: crate::VirtualIpRange,
}

impl Default for ControlPlaneConfigSpec {
    fn default() -> Self {
        ControlPlaneConfigSpec {
            id: 1,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7400),
            advertise: None,
            data_dir: PathBuf::from("/var/lib/hyphae/control-plane"),
            members: Vec::new(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(15),
            watch_history: 10_000,
            snapshot_every: 5_000,
            logs_kept_after_snapshot: 1_000,
            transfer_timeout: Duration::from_secs(10),
            limits: ControlPlaneLimits::default(),
            certificates: CertificatesConfig::default(),
            virtual_ips: crate::VirtualIpRange::default(),
        }
    }
}

/// The identities the cluster's certificate authority hands out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CertificatesConfig {
    /// The SPIFFE trust domain: identities read `spiffe://<trustDomain>/node/<name>` and
    /// `.../service/<name>`. Default `hyphae.local`.
    pub trust_domain: String,
    /// How long a node certificate lasts; agents renew at two thirds of it. Default `24h`.
    pub lifetime: Duration,
    /// Longer (or shorter) lifetimes for sites that may be cut off from the control plane
    /// for long, by site name.
    pub site_lifetimes: BTreeMap<String, Duration>,
}

impl Default for CertificatesConfig {
    fn default() -> Self {
        CertificatesConfig {
            trust_domain: "hyphae.local".to_string(),
            lifetime: Duration::from_secs(24 * 3600),
            site_lifetimes: BTreeMap::new(),
        }
    }
}

impl CertificatesConfig {
    /// The lifetime of a certificate for a host in `site`.
    pub fn lifetime_for(&self, site: &str) -> Duration {
        self.site_lifetimes
            .get(site)
            .copied()
            .unwrap_or(self.lifetime)
    }
}

/// Bounds on what a control-plane node's port accepts from anyone who can reach it, so slow,
/// idle or oversized requests cannot hold its memory, connections or workers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlaneLimits {
    /// Most connections open at once (agents, peers and operators together); a connection
    /// beyond it is closed at once. Each watching agent holds one. Default 16384.
    pub max_connections: u32,
    /// Connections kept for the cluster's members beyond `maxConnections`, so a crowd of other
    /// clients cannot cut Raft off: one admitted on them must present a current member's
    /// certificate at the handshake, or is closed. Default 64.
    pub reserved_member_connections: u32,
    /// Most connections open at once from one source address, so one host cannot take every
    /// place. Default 1024.
    pub max_connections_per_source: u32,
    /// HTTP/2 streams one connection may have open at once. Default 256.
    pub max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before the node accepted them (rapid-reset
    /// protection). Peers cancel Raft RPCs that time out during elections, so this sits above
    /// the agent's 20. Default 200.
    pub max_pending_accept_reset_streams: u32,
    /// Largest request head (start line and headers). Default 65536.
    pub max_header_bytes: u32,
    /// Longest a client may take to send a request head, counted from the connection's
    /// first byte, or the connection's first byte itself. Also how long an HTTP/2 peer may be
    /// silent before it is pinged and then take to answer, and half of how long anything sent
    /// on a connection may stay unacknowledged before the connection is closed (a peer whose
    /// host is gone). Default `10s`.
    pub header_read_timeout: Duration,
    /// Longest a request body may take to arrive in full. Default `30s`.
    pub body_read_timeout: Duration,
    /// After the node closes an HTTP/1.1 connection while the client may still be sending (a
    /// body refused past its limit), how long it goes on reading and dropping what arrives, so
    /// the client reads the refusal instead of a reset that destroys it (RFC 9112 §9.6;
    /// nginx's `lingering_close`). The connection still counts toward `maxConnections`
    /// meanwhile. `0s` closes at once. Default `5s`.
    pub lingering_close_timeout: Duration,
    /// Largest body of an admin request (a policy apply: the policy file limit plus room for
    /// envelopes). Default 4259840 (4 MiB + 64 KiB).
    pub max_admin_body_bytes: u32,
    /// Largest body of a request to a public route, one that names no caller before its body
    /// is read: a join (a join token and a certificate request). Default 65536.
    pub max_public_body_bytes: u32,
    /// Requests to public routes (other than reads) a node reads at once, an eighth of them
    /// from one address; one more is answered 503 `busy` before its body is read, so callers
    /// without a certificate or a token cannot fill the node's memory with bodies (at most
    /// this many × `maxPublicBodyBytes`), nor one host keep the others from joining. Such a
    /// body gets `headerReadTimeout` to arrive. Default 64.
    pub max_public_requests: u32,
    /// Largest body of an agent's registration, heartbeat, health report or departure.
    /// Default 1048576 (1 MiB).
    pub max_agent_body_bytes: u32,
    /// Largest Raft message from a peer (entries to append, a snapshot chunk, a vote).
    /// Default 67108864 (64 MiB).
    pub max_peer_body_bytes: u32,
    /// Largest snapshot a node accepts from its leader, summed over its chunks; a chunk that
    /// would go past it, or that does not continue the snapshot being received, is refused.
    /// Default 1073741824 (1 GiB).
    pub max_snapshot_bytes: u64,
    /// Largest single write, as the Raft entry it becomes (an apply with every object in
    /// canonical form, a registration); a larger one is refused with 413 before it reaches the
    /// log, so every entry replicates within a heartbeat. Default 1048576 (1 MiB).
    pub max_write_bytes: u32,
    /// Most entry bytes one replication message carries to a follower; the rest follow in the
    /// next messages (an entry larger than this travels alone). At most `maxPeerBodyBytes`.
    /// Default 4194304 (4 MiB).
    pub max_replication_bytes: u32,
    /// Most nodes the registry holds; a registration of one more is refused (422
    /// `over-limit`). Default 20000.
    pub max_nodes: u32,
    /// Most service instances one node may register. Default 256.
    pub max_instances_per_node: u32,
    /// Most tags one instance may carry. Default 32.
    pub max_tags_per_instance: u32,
    /// Longest site, agent version, tag key or tag value in a registration, in bytes.
    /// Default 253 (a DNS name).
    pub max_label_bytes: u32,
    /// Most watch streams one node serves at once; an agent refused (503 `too-many-watchers`)
    /// tries another node. Default 20000.
    pub max_watch_streams: u32,
}

/// A policy file at its size limit plus room for the JSON envelope around it.
const ADMIN_BODY_DEFAULT: u32 = {
    let bytes = crate::limits::DEFAULT_MAX_FILE_BYTES + 64 * 1024;
    assert!(bytes <= u32::MAX as usize);
    bytes as u32
};

impl Default for ControlPlaneLimits {
    fn default() -> Self {
        ControlPlaneLimits {
            max_connections: 16_384,
            reserved_member_connections: 64,
            max_connections_per_source: 1024,
            max_concurrent_streams: 256,
            max_pending_accept_reset_streams: 200,
            max_header_bytes: 65_536,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            lingering_close_timeout: Duration::from_secs(5),
            max_admin_body_bytes: ADMIN_BODY_DEFAULT,
            max_public_body_bytes: 64 * 1024,
            max_public_requests: 64,
            max_agent_body_bytes: 1024 * 1024,
            max_peer_body_bytes: 64 * 1024 * 1024,
            max_snapshot_bytes: 1024 * 1024 * 1024,
            max_write_bytes: 1024 * 1024,
            max_replication_bytes: 4 * 1024 * 1024,
            max_nodes: 20_000,
            max_instances_per_node: 256,
            max_tags_per_instance: 32,
            max_label_bytes: 253,
            max_watch_streams: 20_000,
        }
    }
}

/// A voter of a new cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Member {
    /// Its Raft node id.
    pub id: u64,
    /// Its `host:port` (the node's `advertise`, or `listen`).
    pub address: String,
}
