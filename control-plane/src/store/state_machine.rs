//! The Raft state machine: applies committed entries to [`State`] in memory and to redb in the
//! same step, builds snapshots from it and installs received ones into it. Snapshot bytes live
//! in files ([`SnapshotDir`]), streamed in and out, never whole in memory; redb records which
//! file is current. The decisions are [`State::apply`]'s; this file only carries entries in and
//! state out.

use std::collections::BTreeSet;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, watch};

use super::disk::{DiskError, decode, encode, read_value, run_blocking};
use super::snapshot_dir::SnapshotDir;
use hyphae_policies::registry::NodeRecord;

use crate::changes::ChangeLog;
use crate::raft::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::snapshot_file::SnapshotFile;
use crate::state::{
    CommandResponse, JoinToken, PolicyKey, SavedVirtualIps, State, StateKey, StoredCa,
    StoredPolicy, StoredToken,
};

/// Policies by (kind, name), each the JSON of a [`StoredPolicy`].
const POLICIES: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("sm_policies");
/// Registered nodes by name, each the JSON of a [`NodeRecord`].
const NODES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sm_nodes");
/// Single values about the state machine, by name, each as JSON.
const SM_META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sm_meta");
/// [`SM_META`] key of the [`LogId`] of the last applied entry.
const LAST_APPLIED: &str = "last_applied";
/// [`SM_META`] key of the last applied [`StoredMembership`].
const LAST_MEMBERSHIP: &str = "last_membership";
/// [`SM_META`] key of the cluster's identity (absent until its first leader sets it).
const CLUSTER_ID: &str = "cluster_id";
/// [`SM_META`] key of the admin API tokens (a list of [`StoredToken`], hashes only).
const TOKENS: &str = "tokens";
/// [`SM_META`] key of the certificate authority (a [`StoredCa`]).
const CA: &str = "ca";
/// [`SM_META`] key of the join tokens (a list of [`JoinToken`], hashes only).
const JOIN_TOKENS: &str = "join_tokens";
/// [`SM_META`] key of the node names joins have issued certificates for.
const ISSUED: &str = "issued_names";
/// [`SM_META`] key of the virtual IP table (a [`SavedVirtualIps`]).
const VIRTUAL_IPS: &str = "virtual_ips";
/// The current snapshot, by name: its metadata, its file, and a counter for snapshot ids.
const SNAPSHOT: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sm_snapshot");
/// [`SNAPSHOT`] key of the current snapshot's [`SnapshotMeta`].
const SNAPSHOT_META: &str = "meta";
/// [`SNAPSHOT`] key of the number of the current snapshot's file in the [`SnapshotDir`] (its
/// data, a [`SnapshotData`] as JSON).
const SNAPSHOT_FILE: &str = "file";
/// [`SNAPSHOT`] key of the current snapshot's data itself, where builds before snapshot files
/// kept it; [`migrate_snapshot_data`] moves it to a file.
const LEGACY_SNAPSHOT_DATA: &str = "data";
/// [`SNAPSHOT`] key of the number of snapshots this node has built, for unique snapshot ids.
const SNAPSHOT_SEQ: &str = "seq";

/// The snapshot data format this build writes and reads.
const SNAPSHOT_FORMAT: u32 = 1;

/// Creates the state machine's tables inside `txn`.
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), DiskError> {
    txn.open_table(POLICIES)?;
    txn.open_table(NODES)?;
    txn.open_table(SM_META)?;
    txn.open_table(SNAPSHOT)?;
    Ok(())
}

/// What the state machine has applied: the state, the two log pointers openraft asks for, and
/// what recent revisions changed (for watch streams).
#[derive(Debug)]
struct Applied {
    state: State,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    changes: ChangeLog,
}

/// Snapshot data as written: the whole state, borrowed.
#[derive(Serialize)]
struct SnapshotDataRef<'a> {
    format: u32,
    revision: u64,
    policies: Vec<&'a StoredPolicy>,
    nodes: Vec<&'a NodeRecord>,
    cluster: Option<&'a str>,
    tokens: Vec<&'a StoredToken>,
    ca: Option<&'a StoredCa>,
    join_tokens: Vec<&'a JoinToken>,
    issued: Vec<&'a String>,
    virtual_ips: &'a SavedVirtualIps,
}

/// Snapshot data as read back.
#[derive(Deserialize)]
struct SnapshotData {
    format: u32,
    revision: u64,
    policies: Vec<StoredPolicy>,
    /// Absent in snapshots written before nodes were registered.
    #[serde(default)]
    nodes: Vec<NodeRecord>,
    /// Absent in snapshots written before clusters had an identity.
    #[serde(default)]
    cluster: Option<String>,
    /// Absent in snapshots written before the admin API had tokens.
    #[serde(default)]
    tokens: Vec<StoredToken>,
    /// Absent in snapshots written before the cluster had a certificate authority.
    #[serde(default)]
    ca: Option<StoredCa>,
    /// Absent in snapshots written before join tokens.
    #[serde(default)]
    join_tokens: Vec<JoinToken>,
    /// Absent in snapshots written before joins recorded the names they issued.
    #[serde(default)]
    issued: Vec<String>,
    /// Absent in snapshots written before services had virtual IPs.
    #[serde(default)]
    virtual_ips: SavedVirtualIps,
}

impl SnapshotData {
    /// Decodes snapshot bytes, streamed from `bytes`, into a state, refusing formats this
    /// build does not know.
    fn decode_state(bytes: impl Read) -> Result<State, DiskError> {
        let data: SnapshotData = serde_json::from_reader(bytes)?;
        if data.format != SNAPSHOT_FORMAT {
            return Err(DiskError::SnapshotFormat {
                found: data.format,
                supported: SNAPSHOT_FORMAT,
            });
        }
        Ok(State::restore(data.revision, data.policies)
            .with_nodes(data.nodes)
            .with_cluster_id(data.cluster)
            .with_tokens(data.tokens)
            .with_identity(data.ca, data.join_tokens)
            .with_issued(data.issued)
            .with_virtual_ips(data.virtual_ips))
    }
}

/// openraft's state machine on redb, with the applied [`State`] kept in memory for reads.
///
/// Each batch of entries is applied to memory and written to redb in one durable transaction
/// under the state's write lock. If that write fails, openraft stops the node; memory may then
/// be ahead of disk, and a restart rebuilds it from disk and the log.
#[derive(Debug)]
pub struct StateMachineStore {
    db: Arc<Database>,
    snapshots: Arc<SnapshotDir>,
    applied: Arc<RwLock<Applied>>,
    /// The last applied revision, announced to watch streams after every durable apply.
    revision: Arc<watch::Sender<u64>>,
}

impl StateMachineStore {
    /// Loads the applied state from an opened database whose tables exist, with its snapshot
    /// files in `snapshots`.
    pub(super) fn load(
        db: Arc<Database>,
        snapshots: Arc<SnapshotDir>,
        watch_history: usize,
    ) -> Result<Self, DiskError> {
        let txn = db.begin_read()?;
        let meta = txn.open_table(SM_META)?;
        // Stored as JSON of an `Option`, so a snapshot of an empty log (`null`) reads back too.
        let last_applied = read_value::<Option<LogId>, _>(&meta, LAST_APPLIED)?.flatten();
        let last_membership: StoredMembership =
            read_value(&meta, LAST_MEMBERSHIP)?.unwrap_or_default();
        let cluster_id: Option<String> = read_value(&meta, CLUSTER_ID)?;
        let tokens: Vec<StoredToken> = read_value(&meta, TOKENS)?.unwrap_or_default();
        let ca: Option<StoredCa> = read_value(&meta, CA)?;
        let join_tokens: Vec<JoinToken> = read_value(&meta, JOIN_TOKENS)?.unwrap_or_default();
        let issued: Vec<String> = read_value(&meta, ISSUED)?.unwrap_or_default();
        let virtual_ips: SavedVirtualIps = read_value(&meta, VIRTUAL_IPS)?.unwrap_or_default();
        let mut policies = Vec::new();
        for item in txn.open_table(POLICIES)?.iter()? {
            let (_key, bytes) = item?;
            policies.push(decode::<StoredPolicy>(bytes.value())?);
        }
        let mut nodes = Vec::new();
        for item in txn.open_table(NODES)?.iter()? {
            let (_key, bytes) = item?;
            nodes.push(decode::<NodeRecord>(bytes.value())?);
        }
        let revision = last_applied.map_or(0, |log_id| log_id.index);
        let applied = Applied {
            state: State::restore(revision, policies)
                .with_nodes(nodes)
                .with_cluster_id(cluster_id)
                .with_tokens(tokens)
                .with_identity(ca, join_tokens)
                .with_issued(issued)
                .with_virtual_ips(virtual_ips),
            last_applied,
            last_membership,
            changes: ChangeLog::new(revision, watch_history),
        };
        let (revision_sender, _) = watch::channel(revision);
        Ok(Self {
            db,
            snapshots,
            applied: Arc::new(RwLock::new(applied)),
            revision: Arc::new(revision_sender),
        })
    }

    /// A handle that reads the applied state; it stays valid after this store is handed to
    /// openraft.
    pub fn reader(&self) -> StateReader {
        StateReader {
            applied: Arc::clone(&self.applied),
            revision: Arc::clone(&self.revision),
        }
    }
}

/// Reads the state machine's applied [`State`] from outside Raft (API handlers, watch streams).
#[derive(Debug, Clone)]
pub struct StateReader {
    applied: Arc<RwLock<Applied>>,
    revision: Arc<watch::Sender<u64>>,
}

impl StateReader {
    /// Runs `read` on the applied state. Keep `read` short: applying the next batch waits for it.
    pub async fn read<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        read(&self.applied.read().await.state)
    }

    /// Runs `read` on the applied state and the log of what its recent revisions changed, seen
    /// together in one consistent moment.
    pub async fn read_with_changes<T>(&self, read: impl FnOnce(&State, &ChangeLog) -> T) -> T {
        let applied = self.applied.read().await;
        read(&applied.state, &applied.changes)
    }

    /// A receiver that wakes whenever a new revision has been applied and made durable.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }
}

/// Builds snapshots of the applied state; openraft runs it beside the state machine.
#[derive(Debug, Clone)]
pub struct StateSnapshotBuilder {
    db: Arc<Database>,
    snapshots: Arc<SnapshotDir>,
    applied: Arc<RwLock<Applied>>,
}

/// Writes the state machine's log pointers inside `txn`.
fn write_pointers(txn: &WriteTransaction, applied: &Applied) -> Result<(), DiskError> {
    let mut meta = txn.open_table(SM_META)?;
    meta.insert(LAST_APPLIED, encode(&applied.last_applied)?.as_slice())?;
    meta.insert(
        LAST_MEMBERSHIP,
        encode(&applied.last_membership)?.as_slice(),
    )?;
    Ok(())
}

/// Records `meta` with file number `file` as the current snapshot inside `txn`, unless the
/// stored one already covers more of the log (a build that raced with an install must not roll
/// it back). Returns the file no longer needed once `txn` commits: the replaced one, or `file`
/// itself when it was not recorded.
fn write_snapshot(
    txn: &WriteTransaction,
    meta: &SnapshotMeta,
    file: u64,
) -> Result<Option<u64>, DiskError> {
    let mut snapshot = txn.open_table(SNAPSHOT)?;
    let current: Option<SnapshotMeta> = read_value(&snapshot, SNAPSHOT_META)?;
    if current.is_some_and(|current| current.last_log_id > meta.last_log_id) {
        return Ok(Some(file));
    }
    let replaced: Option<u64> = read_value(&snapshot, SNAPSHOT_FILE)?;
    snapshot.insert(SNAPSHOT_META, encode(meta)?.as_slice())?;
    snapshot.insert(SNAPSHOT_FILE, encode(&file)?.as_slice())?;
    Ok(replaced)
}

/// Commits `txn`, which records a file as the current snapshot's, and removes the file that
/// leaves `unneeded` ([`write_snapshot`] said which). On failure the caller removes the file
/// it recorded: nothing refers to it.
fn commit_snapshot(
    snapshots: &SnapshotDir,
    txn: WriteTransaction,
    unneeded: Option<u64>,
) -> Result<(), DiskError> {
    let _current = snapshots.lock_current();
    txn.commit()?;
    if let Some(unneeded) = unneeded {
        snapshots.remove(unneeded);
    }
    Ok(())
}

/// A JSON error while streaming a snapshot file: the disk's own failure is a file error, not
/// a codec one.
fn json_error(action: &'static str, path: &std::path::Path, error: serde_json::Error) -> DiskError {
    if error.is_io() {
        DiskError::File {
            action,
            path: path.to_path_buf(),
            source: error.into(),
        }
    } else {
        DiskError::Codec(error)
    }
}

/// The number of the current snapshot's file, if a snapshot is recorded.
pub(super) fn current_snapshot_file(db: &Database) -> Result<Option<u64>, DiskError> {
    let txn = db.begin_read()?;
    let snapshot = txn.open_table(SNAPSHOT)?;
    read_value(&snapshot, SNAPSHOT_FILE)
}

/// Moves a current snapshot's data kept in redb by an older build into a file of `snapshots`.
pub(super) fn migrate_snapshot_data(
    db: &Database,
    snapshots: &SnapshotDir,
) -> Result<(), DiskError> {
    let txn = db.begin_write()?;
    {
        let mut snapshot = txn.open_table(SNAPSHOT)?;
        let Some(data) = snapshot.remove(LEGACY_SNAPSHOT_DATA)? else {
            return Ok(());
        };
        let (file, out, path) = snapshots.create()?;
        let written = (&out)
            .write_all(data.value())
            .and_then(|()| out.sync_data());
        if let Err(source) = written {
            snapshots.remove(file);
            return Err(DiskError::File {
                action: "write the snapshot",
                path,
                source,
            });
        }
        drop(data);
        snapshot.insert(SNAPSHOT_FILE, encode(&file)?.as_slice())?;
    }
    snapshots.sync()?;
    txn.commit()?;
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let applied = Arc::clone(&self.applied);
        let snapshots = Arc::clone(&self.snapshots);
        let subject = ErrorSubject::Snapshot(None);
        run_blocking(&self.db, subject, ErrorVerb::Write, move |db| {
            let (file, out, path) = snapshots.create()?;
            match build_snapshot(db, &snapshots, &applied, file, out, path) {
                Ok(snapshot) => Ok(snapshot),
                Err(error) => {
                    snapshots.remove(file);
                    Err(error)
                }
            }
        })
        .await
    }
}

/// Serializes the applied state into snapshot file number `file` (`out` at `path`) and records
/// it as the current snapshot (blocking).
fn build_snapshot(
    db: &Database,
    snapshots: &SnapshotDir,
    applied: &RwLock<Applied>,
    file: u64,
    out: std::fs::File,
    path: std::path::PathBuf,
) -> Result<Snapshot, DiskError> {
    let file_error = |source| DiskError::File {
        action: "write the snapshot",
        path: path.clone(),
        source,
    };
    // Streamed to the file under the read lock: the next apply waits while it is written (to
    // the page cache), but the encoding is never held whole in memory.
    let (last_log_id, last_membership) = {
        let applied = applied.blocking_read();
        let mut writer = BufWriter::new(&out);
        serde_json::to_writer(
            &mut writer,
            &SnapshotDataRef {
                format: SNAPSHOT_FORMAT,
                revision: applied.state.revision(),
                policies: applied.state.policies().collect(),
                nodes: applied.state.nodes().collect(),
                cluster: applied.state.cluster_id(),
                tokens: applied.state.tokens().values().collect(),
                ca: applied.state.ca(),
                join_tokens: applied.state.join_tokens().values().collect(),
                issued: applied.state.issued().iter().collect(),
                virtual_ips: applied.state.virtual_ips().saved(),
            },
        )
        .map_err(|error| json_error("write the snapshot", &path, error))?;
        writer.flush().map_err(file_error)?;
        (applied.last_applied, applied.last_membership.clone())
    };
    out.sync_data().map_err(file_error)?;
    // Its name too, before redb names it.
    snapshots.sync()?;
    let txn = db.begin_write()?;
    let seq = {
        let mut snapshot = txn.open_table(SNAPSHOT)?;
        let seq = read_value::<u64, _>(&snapshot, SNAPSHOT_SEQ)?.unwrap_or(0) + 1;
        snapshot.insert(SNAPSHOT_SEQ, encode(&seq)?.as_slice())?;
        seq
    };
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id: snapshot_id(last_log_id, seq),
    };
    let unneeded = write_snapshot(&txn, &meta, file)?;
    let data = SnapshotFile::open(out, path.clone()).map_err(file_error)?;
    commit_snapshot(snapshots, txn, unneeded)?;
    // The handle reads the file even once a newer snapshot has replaced and removed it.
    Ok(Snapshot {
        meta,
        snapshot: Box::new(data),
    })
}

/// A snapshot id that says what the snapshot covers and stays unique on this node:
/// `<term>-<leader node>-<index>-<seq>`, or `none-<seq>` before the first entry.
fn snapshot_id(last_log_id: Option<LogId>, seq: u64) -> String {
    match last_log_id {
        Some(id) => format!(
            "{}-{}-{}-{seq}",
            id.leader_id.term, id.leader_id.node_id, id.index
        ),
        None => format!("none-{seq}"),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied.read().await;
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last() else {
            return Ok(Vec::new());
        };
        let subject = ErrorSubject::Apply(last.log_id);
        let applied = Arc::clone(&self.applied);
        run_blocking(&self.db, subject, ErrorVerb::Write, move |db| {
            let mut applied = applied.blocking_write();
            let mut touched = BTreeSet::new();
            let mut responses = Vec::with_capacity(entries.len());
            for entry in entries {
                let index = entry.log_id.index;
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => applied.state.apply_noop(index),
                    EntryPayload::Membership(membership) => {
                        applied.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        applied.state.apply_noop(index)
                    }
                    EntryPayload::Normal(command) => {
                        let (response, changed) = applied.state.apply_tracked(command, index);
                        touched.extend(changed.iter().cloned());
                        applied.changes.record(index, changed);
                        response
                    }
                };
                responses.push(response);
            }
            let txn = db.begin_write()?;
            write_touched(&txn, &applied.state, &touched)?;
            write_pointers(&txn, &applied)?;
            txn.commit()?;
            Ok((responses, applied.state.revision()))
        })
        .await
        .map(|(responses, revision)| {
            self.revision.send_replace(revision);
            responses
        })
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateSnapshotBuilder {
            db: Arc::clone(&self.db),
            snapshots: Arc::clone(&self.snapshots),
            applied: Arc::clone(&self.applied),
        }
    }

    /// A spool file of its own in the snapshot directory: what a leader sends is written to
    /// disk chunk by chunk, so a node holds one chunk of it in memory, whatever its size.
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let snapshots = Arc::clone(&self.snapshots);
        let subject = ErrorSubject::Snapshot(None);
        run_blocking(&self.db, subject, ErrorVerb::Write, move |_| {
            snapshots.spool().map(Box::new)
        })
        .await
    }

    /// Decodes the received file as it streams from disk, keeps it as the current snapshot
    /// (a spool is renamed, not copied) and replaces the state with it.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let meta = meta.clone();
        let applied = Arc::clone(&self.applied);
        let snapshots = Arc::clone(&self.snapshots);
        run_blocking(&self.db, subject, ErrorVerb::Write, move |db| {
            let reader = BufReader::new(snapshot.reader());
            let state = SnapshotData::decode_state(reader).map_err(|error| match error {
                DiskError::Codec(error) => json_error("read", snapshot.path(), error),
                error => error,
            })?;
            let file = snapshots.keep(*snapshot)?;
            let mut applied = applied.blocking_write();
            // What changed before the snapshot is unknown: its change log starts empty. It
            // replaces the old one only once the install is on disk.
            let changes = ChangeLog::new(state.revision(), applied.changes.capacity());
            let installed = Applied {
                state,
                last_applied: meta.last_log_id,
                last_membership: meta.last_membership.clone(),
                changes,
            };
            let written = db.begin_write().map_err(DiskError::from).and_then(|txn| {
                let unneeded = write_installed(&txn, &installed, &meta, file)?;
                commit_snapshot(&snapshots, txn, unneeded)
            });
            if let Err(error) = written {
                snapshots.remove(file);
                return Err(error);
            }
            let revision = installed.state.revision();
            *applied = installed;
            Ok(revision)
        })
        .await
        .map(|revision| {
            self.revision.send_replace(revision);
        })
    }

    /// The current snapshot, its data a handle on its file: a leader sends it chunk by chunk
    /// from disk.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let snapshots = Arc::clone(&self.snapshots);
        let subject = ErrorSubject::Snapshot(None);
        run_blocking(&self.db, subject, ErrorVerb::Read, move |db| {
            let _current = snapshots.lock_current();
            let txn = db.begin_read()?;
            let snapshot = txn.open_table(SNAPSHOT)?;
            let Some(meta) = read_value::<SnapshotMeta, _>(&snapshot, SNAPSHOT_META)? else {
                return Ok(None);
            };
            let Some(file) = read_value::<u64, _>(&snapshot, SNAPSHOT_FILE)? else {
                return Err(DiskError::Missing {
                    present: "snapshot metadata",
                    missing: "snapshot file",
                });
            };
            Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(snapshots.open_snapshot(file)?),
            }))
        })
        .await
    }
}

/// Writes an installed snapshot's state inside `txn`, replacing every stored object, and
/// records it, in file number `file`, as the current snapshot; returns the file that leaves
/// unneeded, as [`write_snapshot`] does.
fn write_installed(
    txn: &WriteTransaction,
    installed: &Applied,
    meta: &SnapshotMeta,
    file: u64,
) -> Result<Option<u64>, DiskError> {
    {
        let mut policies = txn.open_table(POLICIES)?;
        policies.retain(|_, _| false)?;
        for policy in installed.state.policies() {
            let key = (policy.kind.as_str(), policy.name.as_str());
            policies.insert(key, encode(policy)?.as_slice())?;
        }
        let mut nodes = txn.open_table(NODES)?;
        nodes.retain(|_, _| false)?;
        for node in installed.state.nodes() {
            nodes.insert(node.name.as_str(), encode(node)?.as_slice())?;
        }
    }
    write_cluster_id(txn, &installed.state)?;
    write_tokens(txn, &installed.state)?;
    write_identity(txn, &installed.state)?;
    write_virtual_ips(txn, &installed.state)?;
    write_pointers(txn, installed)?;
    write_snapshot(txn, meta, file)
}

/// Writes back every object in `touched`: its current value, or its removal.
fn write_touched(
    txn: &WriteTransaction,
    state: &State,
    touched: &BTreeSet<StateKey>,
) -> Result<(), DiskError> {
    let mut policies = txn.open_table(POLICIES)?;
    let mut nodes = txn.open_table(NODES)?;
    for key in touched {
        match key {
            StateKey::Policy(PolicyKey { kind, name }) => {
                let key = (kind.as_str(), name.as_str());
                match state.policy(kind, name) {
                    Some(policy) => policies.insert(key, encode(policy)?.as_slice())?,
                    None => policies.remove(key)?,
                };
            }
            StateKey::Node(name) => {
                match state.node(name) {
                    Some(node) => nodes.insert(name.as_str(), encode(node)?.as_slice())?,
                    None => nodes.remove(name.as_str())?,
                };
            }
            StateKey::Cluster => write_cluster_id(txn, state)?,
            StateKey::Tokens => write_tokens(txn, state)?,
            StateKey::Ca | StateKey::JoinTokens => write_identity(txn, state)?,
            StateKey::VirtualIps => write_virtual_ips(txn, state)?,
        }
    }
    Ok(())
}

/// Writes the cluster's identity (or its absence) inside `txn`.
fn write_cluster_id(txn: &WriteTransaction, state: &State) -> Result<(), DiskError> {
    let mut meta = txn.open_table(SM_META)?;
    match state.cluster_id() {
        Some(id) => meta.insert(CLUSTER_ID, encode(&id)?.as_slice())?,
        None => meta.remove(CLUSTER_ID)?,
    };
    Ok(())
}

/// Writes the token table inside `txn`.
fn write_tokens(txn: &WriteTransaction, state: &State) -> Result<(), DiskError> {
    let tokens: Vec<&StoredToken> = state.tokens().values().collect();
    txn.open_table(SM_META)?
        .insert(TOKENS, encode(&tokens)?.as_slice())?;
    Ok(())
}

/// Writes the certificate authority and the join tokens inside `txn`.
fn write_identity(txn: &WriteTransaction, state: &State) -> Result<(), DiskError> {
    let mut meta = txn.open_table(SM_META)?;
    match state.ca() {
        Some(ca) => meta.insert(CA, encode(ca)?.as_slice())?,
        None => meta.remove(CA)?,
    };
    let join_tokens: Vec<&JoinToken> = state.join_tokens().values().collect();
    meta.insert(JOIN_TOKENS, encode(&join_tokens)?.as_slice())?;
    let issued: Vec<&String> = state.issued().iter().collect();
    meta.insert(ISSUED, encode(&issued)?.as_slice())?;
    Ok(())
}

/// Writes the virtual IP table inside `txn`.
fn write_virtual_ips(txn: &WriteTransaction, state: &State) -> Result<(), DiskError> {
    txn.open_table(SM_META)?
        .insert(VIRTUAL_IPS, encode(state.virtual_ips().saved())?.as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::testing::log_id;

    use super::*;

    fn meta(index: u64, snapshot_id: &str) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(log_id(1, 1, index)),
            last_membership: StoredMembership::default(),
            snapshot_id: snapshot_id.to_owned(),
        }
    }

    fn current(db: &Database) -> (Option<SnapshotMeta>, Option<u64>) {
        let txn = db.begin_read().unwrap();
        let snapshot = txn.open_table(SNAPSHOT).unwrap();
        let meta = read_value(&snapshot, SNAPSHOT_META).unwrap();
        (meta, current_snapshot_file(db).unwrap())
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = Database::create(dir.path().join("sm.redb")).unwrap();
        let write = |meta: &SnapshotMeta, file: u64| {
            let txn = db.begin_write().unwrap();
            create_tables(&txn).unwrap();
            let unneeded = write_snapshot(&txn, meta, file).unwrap();
            txn.commit().unwrap();
            unneeded
        };
        assert_eq!(write(&meta(10, "ten"), 1), None);
        assert_eq!(
            write(&meta(5, "five"), 2),
            Some(2),
            "refused: its own file goes"
        );
        assert_eq!(current(&db), (Some(meta(10, "ten")), Some(1)));
        assert_eq!(
            write(&meta(10, "ten-again"), 3),
            Some(1),
            "the replaced file goes"
        );
        assert_eq!(write(&meta(12, "twelve"), 4), Some(3));
        assert_eq!(current(&db), (Some(meta(12, "twelve")), Some(4)));
    }

    #[test]
    fn snapshot_data_kept_in_redb_by_an_older_build_moves_to_a_file() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = Database::create(dir.path().join("sm.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        create_tables(&txn).unwrap();
        {
            let mut snapshot = txn.open_table(SNAPSHOT).unwrap();
            let meta = encode(&meta(7, "seven")).unwrap();
            snapshot.insert(SNAPSHOT_META, meta.as_slice()).unwrap();
            snapshot
                .insert(LEGACY_SNAPSHOT_DATA, b"{\"legacy\":1}".as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        let snapshots = SnapshotDir::open(dir.path().join("snapshots"), None).unwrap();
        migrate_snapshot_data(&db, &snapshots).unwrap();
        let (meta_now, file) = current(&db);
        assert_eq!(meta_now, Some(meta(7, "seven")));
        let file = file.expect("the data has a file");
        let moved = std::fs::read(snapshots.snapshot_path(file)).unwrap();
        assert_eq!(moved, b"{\"legacy\":1}");
        let txn = db.begin_read().unwrap();
        let snapshot = txn.open_table(SNAPSHOT).unwrap();
        assert!(snapshot.get(LEGACY_SNAPSHOT_DATA).unwrap().is_none());
        drop((snapshot, txn));
        migrate_snapshot_data(&db, &snapshots).unwrap();
        assert_eq!(
            current(&db).1,
            Some(file),
            "a second start has nothing to move"
        );
    }

    #[test]
    fn snapshot_data_of_an_unknown_format_is_refused() {
        let bytes = br#"{"format":2,"revision":3,"policies":[]}"#;
        let error = SnapshotData::decode_state(&bytes[..]).expect_err("refused");
        assert!(
            matches!(
                error,
                DiskError::SnapshotFormat {
                    found: 2,
                    supported: 1
                }
            ),
            "{error}"
        );
        let state = SnapshotData::decode_state(&br#"{"format":1,"revision":3,"policies":[]}"#[..])
            .expect("format 1 decodes");
        assert_eq!(state, State::restore(3, []));
    }
}
