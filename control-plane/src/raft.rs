//! The control plane's Raft type configuration and the openraft types it instantiates.
//! Names, and the sums over them ([`lag`], [`encoded_len`]): storage is in [`crate::store`], the replicated
//! data in [`crate::state`].

use openraft::BasicNode;

use crate::snapshot_file::SnapshotFile;
use crate::state::{Command, CommandResponse};

/// A control-plane node's Raft id.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The types hyphae's Raft group is built from: [`Command`]s in the log, a
    /// [`CommandResponse`] per applied entry, `u64` node ids, and snapshots as JSON in a file
    /// ([`SnapshotFile`]), so no snapshot, sent or received, is ever whole in memory.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
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

/// How many of the leader's entries a member has not confirmed: the leader's last log index
/// minus the member's matched index (every entry when nothing matched yet; indexes start at 0).
pub fn lag(last_log_index: Option<u64>, matched: Option<LogId>) -> u64 {
    match (last_log_index, matched) {
        (None, _) => 0,
        (Some(last), Some(matched)) => last.saturating_sub(matched.index),
        (Some(last), None) => last.saturating_add(1),
    }
}

/// How many bytes `value` takes as JSON, the form of log entries and peer messages, counted
/// without building the encoding.
pub fn encoded_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    /// A writer that only counts.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // A value that does not encode is refused later by the encoder itself; count what got out.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::{LogId, encoded_len, lag};

    #[test]
    fn encoded_len_is_the_length_of_the_json() {
        let value = serde_json::json!({"a": [1, 2, "three\n"], "b": null});
        let json = serde_json::to_vec(&value).expect("encode");
        assert_eq!(encoded_len(&value), json.len());
    }

    fn matched(index: u64) -> Option<LogId> {
        Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(1, 1),
            index,
        ))
    }

    #[test]
    fn lag_counts_the_entries_a_member_has_not_matched() {
        assert_eq!(lag(Some(10), matched(10)), 0);
        assert_eq!(lag(Some(10), matched(7)), 3);
        assert_eq!(lag(Some(10), None), 11, "indexes start at 0");
        assert_eq!(lag(None, None), 0, "an empty log lacks nothing");
        assert_eq!(lag(Some(3), matched(5)), 0, "never negative");
    }
}
