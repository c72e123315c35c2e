//! The wire form of the control plane's watch stream (`GET /v1/agent/watch`): newline-delimited
//! JSON events that carry stored policies to agents. Shared by the control plane, which writes
//! them, and the agent, which reads them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::registry::NodeRecord;

/// A stored policy as it travels: its identity, canonical YAML and revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyRecord {
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// The canonical YAML of the one document.
    pub source: String,
    /// The Raft log index that last wrote it.
    pub revision: u64,
}

/// One line of the watch stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "type",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum WatchEvent {
    /// Everything, as of `revision`: replaces whatever the reader had.
    Snapshot {
        /// Revision of the state sent.
        revision: u64,
        /// Every stored policy.
        policies: Vec<PolicyRecord>,
        /// Every registered node, with its instances.
        #[serde(default)]
        nodes: Vec<NodeRecord>,
        /// The cluster's identity: a reader that reconnects sends it back (`?cluster=`), so a
        /// rebuilt cluster is told from a lagging node.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cluster: Option<String>,
        /// Every service's virtual IP, by service name.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        virtual_ips: BTreeMap<String, Ipv4Addr>,
    },
    /// What changed since the previous event, bringing the reader to `revision`.
    Delta {
        /// Revision after the change.
        revision: u64,
        /// Policies created or changed.
        upserts: Vec<PolicyRecord>,
        /// Policies deleted, as (kind, name).
        deletes: Vec<(String, String)>,
        /// Nodes registered or changed (instances, health).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        node_upserts: Vec<NodeRecord>,
        /// Nodes gone (deregistered or expired), by name.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        node_deletes: Vec<String>,
        /// The whole virtual IP table, when it changed (it is small, and rarely changes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        virtual_ips: Option<BTreeMap<String, Ipv4Addr>>,
    },
    /// Nothing changed; the stream and the node are alive.
    Heartbeat {
        /// The node's current revision.
        revision: u64,
    },
    /// The node's answer to the last [`UplinkRequest`] the reader sent up an upgraded watch
    /// connection: what the same request over HTTP would have answered.
    Answer {
        /// The HTTP status it would have had.
        status: u16,
        /// Its JSON body (a string when the body was not JSON).
        body: serde_json::Value,
    },
}

impl WatchEvent {
    /// The revision the event brings the reader to; `None` for an [`WatchEvent::Answer`],
    /// which belongs to the reader's request, not to the state.
    pub fn revision(&self) -> Option<u64> {
        match self {
            WatchEvent::Snapshot { revision, .. }
            | WatchEvent::Delta { revision, .. }
            | WatchEvent::Heartbeat { revision } => Some(*revision),
            WatchEvent::Answer { .. } => None,
        }
    }
}

/// Path of the watch stream on a control-plane node.
pub const WATCH_PATH: &str = "/v1/agent/watch";

/// The protocol an HTTP/1.1 watch request names in its `Upgrade` header to have the stream on
/// a connection of its own: the node answers `101 Switching Protocols` and then writes the
/// same newline-delimited JSON events straight onto the (TLS) connection, without HTTP
/// framing, until either side closes it. A watch costs a node a third of what it costs as an
/// HTTP/2 stream, whose codec keeps fixed buffers per connection (decision 56).
pub const WATCH_UPGRADE: &str = "hyphae-watch";

/// The header of a `101` answer by which a node says the reader may send [`UplinkRequest`]s
/// up the upgraded connection (value [`UPLINK_AGENT_REQUESTS`]). An agent then needs no other
/// connection to the control plane: its registration, heartbeats and health reports travel
/// beside its watch (decision 57). Without it the reader sends nothing after its request.
pub const UPLINK_HEADER: &str = "hyphae-watch-uplink";

/// The value of [`UPLINK_HEADER`]: the agent requests of [`UPLINK_PATHS`] are taken.
pub const UPLINK_AGENT_REQUESTS: &str = "agent-requests";

/// The requests an agent may send up its watch connection: its registry requests, each
/// answered as `POST` to the same path would be.
pub const UPLINK_PATHS: [&str; 4] = [
    crate::registry::REGISTER_PATH,
    crate::registry::HEARTBEAT_PATH,
    crate::registry::HEALTH_PATH,
    crate::registry::DEREGISTER_PATH,
];

/// One line a reader sends up an upgraded watch connection whose node offered
/// [`UPLINK_HEADER`]: a `POST` of `body` to `path`. One at a time: the node answers each with
/// one [`WatchEvent::Answer`] line among the stream's events before it reads the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UplinkRequest {
    /// One of [`UPLINK_PATHS`].
    pub path: String,
    /// The JSON body the `POST` would carry.
    pub body: serde_json::Value,
}

/// Bytes an uplink line may take beyond its body (the path and the envelope): a line is
/// limited to the node's `limits.maxAgentBodyBytes` plus this.
pub const UPLINK_ENVELOPE_BYTES: usize = 512;
