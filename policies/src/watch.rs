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
}

impl WatchEvent {
    /// The revision the event brings the reader to.
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Snapshot { revision, .. }
            | WatchEvent::Delta { revision, .. }
            | WatchEvent::Heartbeat { revision } => *revision,
        }
    }
}

/// Path of the watch stream on a control-plane node.
pub const WATCH_PATH: &str = "/v1/agent/watch";

/// The protocol an HTTP/1.1 watch request names in its `Upgrade` header to have the stream on
/// a connection of its own: the node answers `101 Switching Protocols` and then writes the
/// same newline-delimited JSON events straight onto the (TLS) connection, without HTTP
/// framing, until either side closes it. The reader sends nothing after its request. A
/// watch costs a node a third of what it costs as an HTTP/2 stream, whose codec keeps fixed
/// buffers per connection (decision 56).
pub const WATCH_UPGRADE: &str = "hyphae-watch";
