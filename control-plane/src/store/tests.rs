//! Tests of the redb Raft store: openraft's conformance suite, persistence across a reopen,
//! snapshot install through the on-disk spool (and a restart that finds one cut short), and a
//! single-node Raft that writes, snapshots, purges and restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, SeekFrom};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::testing::{StoreBuilder, Suite, log_id};
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, Membership, Raft, RaftLogReader,
    RaftSnapshotBuilder, ServerState, StorageIOError,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{LogStore, OpenError, SNAPSHOT_DIR, StateMachineStore, open};
use crate::raft::{Entry, LogId, NodeId, StorageError, StoredMembership, TypeConfig, Vote};
use crate::snapshot_file::SnapshotFile;
use crate::state::{Command, CommandResponse};

/// The file name the tests give the store inside their temp dir.
const STORE_FILE: &str = "raft.redb";

/// How long a test waits for Raft to reach a state before failing.
const RAFT_WAIT: Duration = Duration::from_secs(10);

/// Builds a fresh store in its own temp dir for each case of openraft's suite.
struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new()
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let (log, state_machine) = open(dir.path().join(STORE_FILE), 100)
            .await
            .map_err(|e| StorageIOError::new(ErrorSubject::Store, ErrorVerb::Read, &e))?;
        Ok((dir, log, state_machine))
    }
}

/// openraft's own conformance cases, each on a fresh store. Most of its ~9 s is the suite's
/// own one-second sleeps after each purge.
#[test]
fn openraft_storage_suite() {
    if let Err(error) = Suite::test_all(TempStoreBuilder) {
        panic!("openraft storage suite failed: {error}");
    }
}

use crate::state::tests::{apply_policies, delete as delete_policy, doc as policy};

fn id(index: u64) -> LogId {
    log_id(1, 1, index)
}

fn blank(index: u64) -> Entry {
    Entry {
        log_id: id(index),
        payload: EntryPayload::Blank,
    }
}

fn membership(index: u64, voters: &[NodeId]) -> Entry {
    Entry {
        log_id: id(index),
        payload: EntryPayload::Membership(Membership::new(
            vec![voters.iter().copied().collect::<BTreeSet<_>>()],
            None,
        )),
    }
}

fn normal(index: u64, command: Command) -> Entry {
    Entry {
        log_id: id(index),
        payload: EntryPayload::Normal(command),
    }
}

/// Entries compare by their JSON, the form the log stores.
fn json(entries: &[Entry]) -> serde_json::Value {
    serde_json::to_value(entries).expect("entries serialize")
}

/// A policy's (source, revision), if the state holds it.
async fn stored(
    state_machine: &StateMachineStore,
    kind: &str,
    name: &str,
) -> Option<(String, u64)> {
    state_machine
        .reader()
        .read(|state| {
            state
                .policy(kind, name)
                .map(|p| (p.source.clone(), p.revision))
        })
        .await
}

async fn open_store(path: &Path) -> (LogStore, StateMachineStore) {
    open(path, 100).await.expect("store opens")
}

/// A snapshot of what `state_machine` holds now.
async fn build_snapshot(state_machine: &mut StateMachineStore) -> Snapshot<TypeConfig> {
    state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap()
}

/// Every byte of `snapshot`'s data, read through its handle as a leader sending it does.
async fn snapshot_bytes(snapshot: &mut Snapshot<TypeConfig>) -> Vec<u8> {
    snapshot.snapshot.seek(SeekFrom::Start(0)).await.unwrap();
    let mut bytes = Vec::new();
    snapshot.snapshot.read_to_end(&mut bytes).await.unwrap();
    bytes
}

/// Streams `bytes` into a receipt the follower begins, in chunks of `chunk` bytes, as openraft
/// writes what a leader sends, and hands back the finished receipt.
async fn receive(
    follower: &mut StateMachineStore,
    bytes: &[u8],
    chunk: usize,
) -> Box<SnapshotFile> {
    let mut received = follower.begin_receiving_snapshot().await.unwrap();
    for piece in bytes.chunks(chunk) {
        received.write_all(piece).await.unwrap();
    }
    received.shutdown().await.unwrap();
    received
}

/// The files in the snapshot directory beside the store at `store`, by name.
fn snapshot_files(store: &Path) -> BTreeSet<String> {
    std::fs::read_dir(store.with_file_name(SNAPSHOT_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The store files of a leader and of a follower it sends a snapshot to, each in its own temp
/// dir, which lives as long as the returned dirs do.
fn leader_and_follower() -> ([TempDir; 2], PathBuf, PathBuf) {
    let dirs = [TempDir::new().unwrap(), TempDir::new().unwrap()];
    let leader = dirs[0].path().join(STORE_FILE);
    let follower = dirs[1].path().join(STORE_FILE);
    (dirs, leader, follower)
}

#[tokio::test]
async fn reopening_restores_vote_log_and_state_machine() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(STORE_FILE);
    let entries = vec![
        blank(1),
        membership(2, &[1, 2, 3]),
        normal(
            3,
            apply_policies(vec![
                policy("ServicePolicy", "payments", "v1"),
                policy("ServicePolicy", "orders", "v1"),
            ]),
        ),
        normal(4, delete_policy("ServicePolicy", "orders")),
        normal(
            5,
            apply_policies(vec![policy("ServicePolicy", "payments", "v2")]),
        ),
    ];
    let snapshot_meta = {
        let (mut log, mut state_machine) = open_store(&path).await;
        log.save_vote(&Vote::new(4, 2)).await.unwrap();
        log.append_durably(entries.clone()).await.unwrap();
        log.save_committed(Some(id(5))).await.unwrap();
        let responses = state_machine.apply(entries[..4].to_vec()).await.unwrap();
        assert_eq!(
            responses,
            [
                CommandResponse::Noop { revision: 1 },
                CommandResponse::Noop { revision: 2 },
                CommandResponse::PoliciesApplied {
                    revision: 3,
                    created: 2,
                    updated: 0,
                    unchanged: 0
                },
                CommandResponse::PolicyDeleted {
                    revision: 4,
                    existed: true
                },
            ]
        );
        let snapshot = build_snapshot(&mut state_machine).await;
        let responses = state_machine.apply(entries[4..].to_vec()).await.unwrap();
        assert_eq!(
            responses,
            [CommandResponse::PoliciesApplied {
                revision: 5,
                created: 0,
                updated: 1,
                unchanged: 0
            }]
        );
        log.purge(id(2)).await.unwrap();
        snapshot.meta
    };

    let (mut log, mut state_machine) = open_store(&path).await;
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(4, 2)));
    assert_eq!(log.read_committed().await.unwrap(), Some(id(5)));
    let log_state = log.get_log_state().await.unwrap();
    assert_eq!(log_state.last_purged_log_id, Some(id(2)));
    assert_eq!(log_state.last_log_id, Some(id(5)));
    let stored_entries = log.try_get_log_entries(0..).await.unwrap();
    assert_eq!(json(&stored_entries), json(&entries[2..]));

    let (last_applied, last_membership) = state_machine.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(id(5)));
    assert_eq!(
        last_membership,
        StoredMembership::new(
            Some(id(2)),
            Membership::new(vec![BTreeSet::from([1, 2, 3])], None)
        )
    );
    assert_eq!(
        stored(&state_machine, "ServicePolicy", "payments").await,
        Some(("v2".to_owned(), 5))
    );
    assert_eq!(
        stored(&state_machine, "ServicePolicy", "orders").await,
        None
    );
    let (revision, count) = state_machine
        .reader()
        .read(|state| (state.revision(), state.policy_count()))
        .await;
    assert_eq!((revision, count), (5, 1));

    let current = state_machine.get_current_snapshot().await.unwrap();
    assert_eq!(current.map(|s| s.meta), Some(snapshot_meta));
}

#[tokio::test]
async fn installing_a_snapshot_replaces_the_state_and_survives_reopen() {
    let (_dirs, leader_path, follower_path) = leader_and_follower();

    let (_leader_log, mut leader) = open_store(&leader_path).await;
    leader
        .apply([
            membership(1, &[1, 2]),
            normal(
                2,
                apply_policies(vec![
                    policy("ServicePolicy", "a", "a1"),
                    policy("AccessPolicy", "b", "b1"),
                ]),
            ),
        ])
        .await
        .unwrap();
    let mut snapshot = build_snapshot(&mut leader).await;
    let bytes = snapshot_bytes(&mut snapshot).await;

    {
        let (_log, mut follower) = open_store(&follower_path).await;
        follower
            .apply([normal(
                1,
                apply_policies(vec![policy("ServicePolicy", "stale", "x")]),
            )])
            .await
            .unwrap();
        let received = receive(&mut follower, &bytes, 7).await;
        follower
            .install_snapshot(&snapshot.meta, received)
            .await
            .unwrap();
        assert_eq!(stored(&follower, "ServicePolicy", "stale").await, None);
        assert_eq!(
            stored(&follower, "ServicePolicy", "a").await,
            Some(("a1".to_owned(), 2))
        );
    }

    let (_log, mut follower) = open_store(&follower_path).await;
    assert_eq!(
        follower.applied_state().await.unwrap(),
        leader.applied_state().await.unwrap()
    );
    assert_eq!(stored(&follower, "ServicePolicy", "stale").await, None);
    assert_eq!(
        stored(&follower, "AccessPolicy", "b").await,
        Some(("b1".to_owned(), 2))
    );
    assert_eq!(
        follower.reader().read(|s| s.revision()).await,
        leader.reader().read(|s| s.revision()).await
    );
    let mut current = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(snapshot_bytes(&mut current).await, bytes);
}

#[tokio::test]
async fn a_received_snapshot_is_spooled_to_disk_and_kept_as_the_current_file() {
    let (_dirs, leader_path, follower_path) = leader_and_follower();
    let (_leader_log, mut leader) = open_store(&leader_path).await;
    let padding = "x".repeat(64 * 1024);
    leader
        .apply([normal(
            1,
            apply_policies(vec![policy("ServicePolicy", "big", &padding)]),
        )])
        .await
        .unwrap();
    let mut snapshot = build_snapshot(&mut leader).await;
    let bytes = snapshot_bytes(&mut snapshot).await;
    assert!(bytes.len() > padding.len());

    let (_log, mut follower) = open_store(&follower_path).await;
    let mut received = follower.begin_receiving_snapshot().await.unwrap();
    let spool = received.path().to_path_buf();
    assert_eq!(
        spool.parent(),
        Some(follower_path.with_file_name(SNAPSHOT_DIR).as_path())
    );
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    received.write_all(first).await.unwrap();
    // What arrived is on disk, in the spool, not in a buffer.
    assert_eq!(std::fs::read(&spool).unwrap(), first);
    received.write_all(rest).await.unwrap();
    received.shutdown().await.unwrap();
    assert_eq!(std::fs::read(&spool).unwrap(), bytes);

    follower
        .install_snapshot(&snapshot.meta, received)
        .await
        .unwrap();
    assert!(!spool.exists(), "the spool became the current snapshot");
    let files = snapshot_files(&follower_path);
    assert_eq!(files.len(), 1, "{files:?}");
    let kept = files.first().unwrap();
    assert!(kept.starts_with("snapshot-"), "{kept}");
    let kept = follower_path.with_file_name(SNAPSHOT_DIR).join(kept);
    assert_eq!(std::fs::read(&kept).unwrap(), bytes);
    assert_eq!(
        stored(&follower, "ServicePolicy", "big").await,
        Some((padding.clone(), 1))
    );

    // A newer snapshot replaces the file; the handle a sender holds still reads the old one.
    let mut sending = follower.get_current_snapshot().await.unwrap().unwrap();
    follower
        .apply([normal(2, delete_policy("ServicePolicy", "big"))])
        .await
        .unwrap();
    build_snapshot(&mut follower).await;
    assert!(!kept.exists(), "the replaced file is removed");
    assert_eq!(snapshot_files(&follower_path).len(), 1);
    assert_eq!(snapshot_bytes(&mut sending).await, bytes);
}

#[tokio::test]
async fn a_restart_with_a_leftover_partial_spool_is_clean() {
    let (_dirs, leader_path, follower_path) = leader_and_follower();
    let (_leader_log, mut leader) = open_store(&leader_path).await;
    leader
        .apply([normal(
            1,
            apply_policies(vec![policy("ServicePolicy", "a", "a1")]),
        )])
        .await
        .unwrap();
    let mut snapshot = build_snapshot(&mut leader).await;
    let bytes = snapshot_bytes(&mut snapshot).await;

    let before = {
        let (_log, mut follower) = open_store(&follower_path).await;
        follower
            .apply([normal(
                1,
                apply_policies(vec![policy("ServicePolicy", "old", "o1")]),
            )])
            .await
            .unwrap();
        build_snapshot(&mut follower).await;
        let mut received = follower.begin_receiving_snapshot().await.unwrap();
        received.write_all(&bytes[..bytes.len() / 2]).await.unwrap();
        // The process dies here: nothing runs the handle's cleanup.
        std::mem::forget(received);
        let files = snapshot_files(&follower_path);
        assert_eq!(
            files.len(),
            2,
            "the current snapshot and the spool: {files:?}"
        );
        follower.applied_state().await.unwrap()
    };

    let (_log, mut follower) = open_store(&follower_path).await;
    let files = snapshot_files(&follower_path);
    assert_eq!(files.len(), 1, "only the current snapshot stays: {files:?}");
    assert!(
        files.iter().all(|name| name.starts_with("snapshot-")),
        "{files:?}"
    );
    assert_eq!(follower.applied_state().await.unwrap(), before);
    assert_eq!(
        stored(&follower, "ServicePolicy", "old").await,
        Some(("o1".to_owned(), 1))
    );
    let mut current = follower.get_current_snapshot().await.unwrap().unwrap();
    assert!(!snapshot_bytes(&mut current).await.is_empty());

    // The leader sends it again, whole, and it installs.
    let received = receive(&mut follower, &bytes, 5).await;
    follower
        .install_snapshot(&snapshot.meta, received)
        .await
        .unwrap();
    assert_eq!(stored(&follower, "ServicePolicy", "old").await, None);
    assert_eq!(
        stored(&follower, "ServicePolicy", "a").await,
        Some(("a1".to_owned(), 1))
    );
    assert_eq!(snapshot_files(&follower_path).len(), 1);
}

#[tokio::test]
async fn a_snapshot_of_an_empty_state_installs_and_reopens() {
    let (_dirs, leader_path, follower_path) = leader_and_follower();
    let (_leader_log, mut leader) = open_store(&leader_path).await;
    let snapshot = build_snapshot(&mut leader).await;
    assert_eq!(snapshot.meta.last_log_id, None);
    {
        let (_log, mut follower) = open_store(&follower_path).await;
        follower
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
    }
    let (_log, mut follower) = open_store(&follower_path).await;
    assert_eq!(
        follower.applied_state().await.unwrap(),
        (None, StoredMembership::default())
    );
    assert_eq!(follower.reader().read(|s| s.revision()).await, 0);
}

#[tokio::test]
async fn log_reads_respect_range_bounds() {
    let dir = TempDir::new().unwrap();
    let (mut log, _state_machine) = open_store(&dir.path().join(STORE_FILE)).await;
    log.append_durably((1..=6).map(blank).collect())
        .await
        .unwrap();
    let indexes = |entries: Vec<Entry>| entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    assert_eq!(
        indexes(log.try_get_log_entries(2..4).await.unwrap()),
        [2, 3]
    );
    assert_eq!(
        indexes(log.try_get_log_entries(5..=6).await.unwrap()),
        [5, 6]
    );
    assert_eq!(indexes(log.try_get_log_entries(..2).await.unwrap()), [1]);
    let reversed = (Bound::Included(4), Bound::Excluded(2));
    assert!(log.try_get_log_entries(reversed).await.unwrap().is_empty());
    assert!(log.try_get_log_entries(7..).await.unwrap().is_empty());
    log.truncate(id(4)).await.unwrap();
    assert_eq!(
        indexes(log.try_get_log_entries(..).await.unwrap()),
        [1, 2, 3]
    );
    log.save_committed(None).await.unwrap();
    assert_eq!(log.read_committed().await.unwrap(), None);
}

#[tokio::test]
async fn a_store_cannot_be_opened_twice() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(STORE_FILE);
    let _open = open_store(&path).await;
    let error = open(&path, 100).await.expect_err("second open fails");
    assert!(matches!(error, OpenError::AlreadyOpen { .. }), "{error}");
    assert!(error.to_string().contains("already open"), "{error}");
}

/// A network for a one-node cluster: it has no peers, so every call is a bug.
struct NoPeers;

fn no_peers<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&io::Error::other(
        "a one-node test cluster has no peers",
    )))
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> Self::Network {
        NoPeers
    }
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(no_peers())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(no_peers())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(no_peers())
    }
}

/// Opens the store once a stopped Raft has released it: openraft's shutdown returns before its
/// state-machine task has dropped the store, so the file stays locked for a moment.
async fn open_after_shutdown(path: &Path) -> (LogStore, StateMachineStore) {
    let deadline = tokio::time::Instant::now() + RAFT_WAIT;
    loop {
        match open(path, 100).await {
            Ok(store) => return store,
            Err(OpenError::AlreadyOpen { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => panic!("store does not reopen: {error}"),
        }
    }
}

async fn start_raft(path: &Path) -> (Raft<TypeConfig>, crate::store::StateReader) {
    let config = openraft::Config {
        cluster_name: "store-test".to_owned(),
        ..Default::default()
    };
    let config = Arc::new(config.validate().expect("valid raft config"));
    let (log, state_machine) = open_after_shutdown(path).await;
    let reader = state_machine.reader();
    let raft = Raft::new(1, config, NoPeers, log, state_machine)
        .await
        .expect("raft starts");
    (raft, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_raft_writes_survive_a_restart() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(STORE_FILE);

    let (raft, reader) = start_raft(&path).await;
    raft.initialize(BTreeMap::from([(1, BasicNode::default())]))
        .await
        .unwrap();
    raft.wait(Some(RAFT_WAIT))
        .state(ServerState::Leader, "single node leads")
        .await
        .unwrap();
    let written = raft
        .client_write(apply_policies(vec![
            policy("ServicePolicy", "payments", "v1"),
            policy("ServicePolicy", "orders", "v1"),
        ]))
        .await
        .unwrap();
    assert_eq!(
        written.data,
        CommandResponse::PoliciesApplied {
            revision: written.log_id.index,
            created: 2,
            updated: 0,
            unchanged: 0
        }
    );
    let deleted = raft
        .client_write(delete_policy("ServicePolicy", "orders"))
        .await
        .unwrap();
    assert_eq!(
        deleted.data,
        CommandResponse::PolicyDeleted {
            revision: deleted.log_id.index,
            existed: true
        }
    );
    raft.trigger().snapshot().await.unwrap();
    raft.wait(Some(RAFT_WAIT))
        .snapshot(deleted.log_id, "snapshot built")
        .await
        .unwrap();
    raft.trigger()
        .purge_log(deleted.log_id.index)
        .await
        .unwrap();
    raft.wait(Some(RAFT_WAIT))
        .purged(Some(deleted.log_id), "log purged")
        .await
        .unwrap();
    assert_eq!(reader.read(|s| s.revision()).await, deleted.log_id.index);
    raft.shutdown().await.unwrap();
    drop(raft);

    let (raft, reader) = start_raft(&path).await;
    // Before any new write, the state is the one on disk.
    let (revision, payments, orders) = reader
        .read(|s| {
            (
                s.revision(),
                s.policy("ServicePolicy", "payments").map(|p| p.revision),
                s.policy("ServicePolicy", "orders").is_some(),
            )
        })
        .await;
    assert_eq!(revision, deleted.log_id.index);
    assert_eq!(payments, Some(written.log_id.index));
    assert!(!orders);

    raft.wait(Some(RAFT_WAIT))
        .state(ServerState::Leader, "single node leads again")
        .await
        .unwrap();
    let again = raft
        .client_write(apply_policies(vec![policy(
            "AccessPolicy",
            "payments",
            "v1",
        )]))
        .await
        .unwrap();
    assert!(again.log_id.index > deleted.log_id.index);
    assert_eq!(
        reader
            .read(|s| s.policy("AccessPolicy", "payments").map(|p| p.revision))
            .await,
        Some(again.log_id.index)
    );
    raft.shutdown().await.unwrap();
}

/// The virtual IP table of what `state_machine` holds.
async fn virtual_ips(state_machine: &StateMachineStore) -> BTreeMap<String, std::net::Ipv4Addr> {
    state_machine
        .reader()
        .read(|state| state.virtual_ips().assigned().clone())
        .await
}

#[tokio::test]
async fn virtual_ips_survive_a_reopen_and_travel_in_snapshots() {
    use crate::state::tests::{node, register};
    use hyphae_policies::registry::Health;

    let (_dirs, leader_path, follower_path) = leader_and_follower();
    {
        let (_log, mut leader) = open_store(&leader_path).await;
        leader
            .apply([
                normal(
                    1,
                    Command::SetVirtualIpRange {
                        range: hyphae_policies::VirtualIpRange::default(),
                    },
                ),
                normal(2, register(node("web-1", Health::Passing))),
                normal(
                    3,
                    apply_policies(vec![policy("ExternalService", "github", "g")]),
                ),
            ])
            .await
            .unwrap();
    }
    let (_log, mut leader) = open_store(&leader_path).await;
    let held = virtual_ips(&leader).await;
    assert_eq!(
        held,
        BTreeMap::from([
            ("github".to_owned(), std::net::Ipv4Addr::new(127, 64, 0, 2)),
            ("web".to_owned(), std::net::Ipv4Addr::new(127, 64, 0, 1)),
        ])
    );
    // After the reopen the cursor goes on from where it was: a new service gets a new address.
    leader
        .apply([normal(4, delete_policy("ExternalService", "github"))])
        .await
        .unwrap();
    let mut snapshot = build_snapshot(&mut leader).await;
    let bytes = snapshot_bytes(&mut snapshot).await;
    let (_log, mut follower) = open_store(&follower_path).await;
    let received = receive(&mut follower, &bytes, 64).await;
    follower
        .install_snapshot(&snapshot.meta, received)
        .await
        .unwrap();
    let mut next = node("db-1", Health::Passing);
    next.instances[0].service = "db".into();
    for store in [&mut leader, &mut follower] {
        store
            .apply([normal(5, register(next.clone()))])
            .await
            .unwrap();
    }
    let expected = BTreeMap::from([
        ("db".to_owned(), std::net::Ipv4Addr::new(127, 64, 0, 3)),
        ("web".to_owned(), std::net::Ipv4Addr::new(127, 64, 0, 1)),
    ]);
    assert_eq!(virtual_ips(&leader).await, expected);
    assert_eq!(virtual_ips(&follower).await, expected);
}
