//! The Raft log, vote, committed log id and last purged log id, in redb tables.
//! Appends, votes, truncations and purges are durable (fsynced) before they are reported done.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::disk::{DiskError, decode, encode, read_value, run_blocking};
use crate::raft::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

/// Log entries by index, each the JSON of an [`Entry`].
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
/// Single values about the log, by name, each as JSON.
const LOG_META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_log_meta");
/// [`LOG_META`] key of the [`Vote`].
const VOTE: &str = "vote";
/// [`LOG_META`] key of the last committed [`LogId`].
const COMMITTED: &str = "committed";
/// [`LOG_META`] key of the [`LogId`] of the last purged entry.
const LAST_PURGED: &str = "last_purged";

/// Creates the log's tables inside `txn`.
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), DiskError> {
    txn.open_table(LOG)?;
    txn.open_table(LOG_META)?;
    Ok(())
}

/// openraft's log storage on redb; also its log reader (clones share the database).
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
    committed: Arc<CommitIndex>,
}

/// The commit index as this node last learned it, readable outside Raft for the cluster view
/// (openraft's metrics do not carry it).
#[derive(Debug, Default)]
pub struct CommitIndex(AtomicU64);

impl CommitIndex {
    /// The last committed log index, `None` before this node learned of any commit.
    pub fn get(&self) -> Option<u64> {
        self.0.load(Ordering::Acquire).checked_sub(1)
    }

    fn set(&self, committed: Option<LogId>) {
        let stored = committed.map_or(0, |id| id.index.saturating_add(1));
        self.0.store(stored, Ordering::Release);
    }
}

impl LogStore {
    /// A log store on an opened database whose tables exist.
    pub(super) fn new(db: Arc<Database>) -> Self {
        Self {
            db,
            committed: Arc::default(),
        }
    }

    /// A handle on the commit index that stays valid after this store is handed to openraft.
    pub fn commit_index(&self) -> Arc<CommitIndex> {
        Arc::clone(&self.committed)
    }

    /// Writes `entries` and returns once they are on disk. An entry replaces any entry already
    /// stored at its index.
    pub(crate) async fn append_durably(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let subject = ErrorSubject::Log(first.log_id);
        run_blocking(&self.db, subject, ErrorVerb::Write, move |db| {
            let txn = db.begin_write()?;
            {
                let mut log = txn.open_table(LOG)?;
                for entry in &entries {
                    log.insert(entry.log_id.index, encode(entry)?.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    /// Reads one value from [`LOG_META`].
    async fn read_meta<T>(
        &self,
        key: &'static str,
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        run_blocking(&self.db, subject, ErrorVerb::Read, move |db| {
            let txn = db.begin_read()?;
            let meta = txn.open_table(LOG_META)?;
            read_value(&meta, key)
        })
        .await
    }

    /// Writes (or with `None` removes) one value of [`LOG_META`], with the given durability.
    async fn write_meta<T>(
        &self,
        key: &'static str,
        value: Option<T>,
        durability: Durability,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError>
    where
        T: Serialize + Send + 'static,
    {
        run_blocking(&self.db, subject, ErrorVerb::Write, move |db| {
            let bytes = value.as_ref().map(encode).transpose()?;
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            {
                let mut meta = txn.open_table(LOG_META)?;
                match bytes {
                    Some(bytes) => meta.insert(key, bytes.as_slice())?,
                    None => meta.remove(key)?,
                };
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

/// Whether `(start, end)` holds no index at all; such ranges (even reversed ones) are answered
/// here so redb only ever sees well-formed bounds.
fn is_empty_range(start: Bound<u64>, end: Bound<u64>) -> bool {
    let first = match start {
        Bound::Included(index) => index,
        Bound::Excluded(index) => match index.checked_add(1) {
            Some(next) => next,
            None => return true,
        },
        Bound::Unbounded => 0,
    };
    match end {
        Bound::Included(last) => first > last,
        Bound::Excluded(after) => first >= after,
        Bound::Unbounded => false,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        if is_empty_range(start, end) {
            return Ok(Vec::new());
        }
        run_blocking(&self.db, ErrorSubject::Logs, ErrorVerb::Read, move |db| {
            let txn = db.begin_read()?;
            let log = txn.open_table(LOG)?;
            let mut entries = Vec::new();
            for item in log.range((start, end))? {
                let (_index, bytes) = item?;
                entries.push(decode(bytes.value())?);
            }
            Ok(entries)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        run_blocking(&self.db, ErrorSubject::Logs, ErrorVerb::Read, |db| {
            let txn = db.begin_read()?;
            let meta = txn.open_table(LOG_META)?;
            let last_purged_log_id: Option<LogId> = read_value(&meta, LAST_PURGED)?;
            let log = txn.open_table(LOG)?;
            let last_log_id = match log.last()? {
                Some((_index, bytes)) => Some(decode::<Entry>(bytes.value())?.log_id),
                None => last_purged_log_id,
            };
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE, Some(*vote), Durability::Immediate, ErrorSubject::Vote)
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE, ErrorSubject::Vote).await
    }

    /// The committed log id is written without an fsync of its own: it becomes durable with the
    /// next durable write. Losing it in a crash is harmless, since openraft then re-applies from
    /// the state machine's own (durable) last applied log id.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.committed.set(committed);
        self.write_meta(COMMITTED, committed, Durability::None, ErrorSubject::Store)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(COMMITTED, ErrorSubject::Store).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.append_durably(entries.into_iter().collect()).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(io::Error::other(error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        run_blocking(
            &self.db,
            ErrorSubject::Log(log_id),
            ErrorVerb::Delete,
            move |db| {
                let txn = db.begin_write()?;
                txn.open_table(LOG)?
                    .retain_in(log_id.index.., |_, _| false)?;
                txn.commit()?;
                Ok(())
            },
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        run_blocking(
            &self.db,
            ErrorSubject::Log(log_id),
            ErrorVerb::Delete,
            move |db| {
                let bytes = encode(&log_id)?;
                let txn = db.begin_write()?;
                // One transaction: the purged marker and the removal land together, so the log
                // never shows a hole below its first entry.
                txn.open_table(LOG_META)?
                    .insert(LAST_PURGED, bytes.as_slice())?;
                txn.open_table(LOG)?
                    .retain_in(..=log_id.index, |_, _| false)?;
                txn.commit()?;
                Ok(())
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_ranges_are_recognised() {
        use Bound::{Excluded, Included, Unbounded};
        assert!(is_empty_range(Included(3), Excluded(3)));
        assert!(is_empty_range(Included(7), Excluded(5)));
        assert!(is_empty_range(Included(7), Included(5)));
        assert!(is_empty_range(Excluded(u64::MAX), Unbounded));
        assert!(is_empty_range(Excluded(4), Included(4)));
        assert!(!is_empty_range(Included(3), Included(3)));
        assert!(!is_empty_range(Unbounded, Excluded(1)));
        assert!(!is_empty_range(Unbounded, Unbounded));
        assert!(!is_empty_range(Excluded(3), Unbounded));
    }
}
