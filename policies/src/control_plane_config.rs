//! `ControlPlaneConfig`: a control-plane node's own local file — its Raft id, where it listens,
//! where it keeps its data, and the initial members of the cluster. `metadata.name` is the
//! node's name.

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
    /// The voters a new cluster starts with (`--init`); this node must be one of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    /// How often the leader heartbeats followers. Default `250ms`.
    pub heartbeat_interval: Duration,
    /// Shortest election timeout; a follower that hears nothing this long may stand. Default
    /// `1s`.
    pub election_timeout_min: Duration,
    /// Longest election timeout. Default `2s`.
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
}

impl Default for ControlPlaneConfigSpec {
    fn default() -> Self {
        ControlPlaneConfigSpec {
            id: 1,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7400),
            advertise: None,
            data_dir: PathBuf::from("/var/lib/hyphae/control-plane"),
            members: Vec::new(),
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_secs(1),
            election_timeout_max: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(15),
            watch_history: 10_000,
            snapshot_every: 5_000,
            logs_kept_after_snapshot: 1_000,
            transfer_timeout: Duration::from_secs(10),
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
