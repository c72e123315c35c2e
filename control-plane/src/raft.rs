//! The control plane's Raft type configuration and the openraft types it instantiates.
//! Only names live here: storage is in [`crate::store`], the replicated data in [`crate::state`].

use std::io::Cursor;

use openraft::BasicNode;

use crate::state::{Command, CommandResponse};

/// A control-plane node's Raft id.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The types hyphae's Raft group is built from: [`Command`]s in the log, a
    /// [`CommandResponse`] per applied entry, `u64` node ids, and snapshots as one in-memory
    /// buffer of JSON.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft log entry of this cluster.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log position: the leader term and node that wrote it, and its index.
pub type LogId = openraft::LogId<NodeId>;
/// A node's vote: the term and the candidate it voted for.
pub type Vote = openraft::Vote<NodeId>;
/// A membership config with the log id of the entry that carried it.
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
/// What a snapshot covers: last included log id, membership and snapshot id.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
/// A snapshot with its metadata and data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The error a storage operation reports to openraft, which stops the node on it.
pub type StorageError = openraft::StorageError<NodeId>;

/// A running Raft node of this cluster.
pub type Raft = openraft::Raft<TypeConfig>;
