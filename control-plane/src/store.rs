//! Durable Raft storage in one redb file: the log and vote ([`log`]) and the state machine with
//! its snapshots ([`state_machine`]). Every redb transaction runs on tokio's blocking pool, never
//! on an async worker thread, and no disk error becomes a panic.

pub mod log;
pub mod state_machine;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use redb::{Database, ReadableTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::log::LogStore;
pub use self::state_machine::{StateMachineStore, StateReader, StateSnapshotBuilder};
use crate::raft::{NodeId, StorageError};

/// Why the Raft store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process (or another store in this one) holds the file.
    #[error(
        "the Raft store {path} is already open; is another hyphae-control-plane using this data directory?"
    )]
    AlreadyOpen {
        /// The redb file.
        path: PathBuf,
    },
    /// redb could not create, open or repair the file.
    #[error("cannot open the Raft store {path}: {source}")]
    Open {
        /// The redb file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::DatabaseError,
    },
    /// The file opened but its contents could not be read back.
    #[error("cannot read the Raft store {path}: {source}; the file may be damaged")]
    Read {
        /// The redb file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: DiskError,
    },
    /// The blocking task that opens the file did not finish (it panicked or the runtime is
    /// shutting down).
    #[error("opening the Raft store {path} did not finish: {source}")]
    Task {
        /// The redb file.
        path: PathBuf,
        /// Why the task ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Opens (creating it if missing) the redb file at `path` and returns the log store and the
/// state machine that share it, with the state machine's state loaded into memory.
///
/// Hand both to `openraft::Raft::new`. Opening may repair the file after a crash, which can take
/// a while on a large file; it runs on the blocking pool.
/// `watch_history` is how many revisions' changes the state machine remembers for watches.
pub async fn open(
    path: impl AsRef<Path>,
    watch_history: usize,
) -> Result<(LogStore, StateMachineStore), OpenError> {
    let path = path.as_ref().to_path_buf();
    let task_path = path.clone();
    tokio::task::spawn_blocking(move || open_blocking(task_path, watch_history))
        .await
        .map_err(|source| OpenError::Task { path, source })?
}

/// The body of [`open`], run on the blocking pool.
fn open_blocking(
    path: PathBuf,
    watch_history: usize,
) -> Result<(LogStore, StateMachineStore), OpenError> {
    let db = match Database::create(&path) {
        Ok(db) => Arc::new(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(OpenError::AlreadyOpen { path });
        }
        Err(source) => return Err(OpenError::Open { path, source }),
    };
    let loaded =
        create_tables(&db).and_then(|()| StateMachineStore::load(Arc::clone(&db), watch_history));
    match loaded {
        Ok(state_machine) => Ok((LogStore::new(db), state_machine)),
        Err(source) => Err(OpenError::Read { path, source }),
    }
}

/// Creates every table once, so read transactions never meet a missing one.
fn create_tables(db: &Database) -> Result<(), DiskError> {
    let txn = db.begin_write()?;
    log::create_tables(&txn)?;
    state_machine::create_tables(&txn)?;
    txn.commit()?;
    Ok(())
}

/// A failure inside a redb transaction: redb itself, or a stored value that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// redb reported an error (I/O, corruption, a transaction or table problem).
    #[error(transparent)]
    Redb(#[from] redb::Error),
    /// A stored value is not the JSON it should be, or a value could not be encoded.
    #[error("a stored value does not encode or decode: {0}")]
    Codec(#[from] serde_json::Error),
    /// A value that must accompany another one is missing.
    #[error("the store holds {present} but not {missing}; the file may be damaged")]
    Missing {
        /// The value that is there.
        present: &'static str,
        /// The value that should be there with it.
        missing: &'static str,
    },
    /// A snapshot was written by a newer (or unknown) version of hyphae.
    #[error("snapshot format {found} is not supported (this build reads format {supported})")]
    SnapshotFormat {
        /// The format the snapshot declares.
        found: u32,
        /// The one format this build reads.
        supported: u32,
    },
}

/// redb has one error type per operation; each converts into [`redb::Error`].
macro_rules! from_redb_error {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for DiskError {
            fn from(error: $error) -> Self {
                DiskError::Redb(error.into())
            }
        }
    )*};
}

from_redb_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);

/// Runs `work` against the database on tokio's blocking pool and reports any failure as an
/// openraft storage error about `subject`, while doing `verb`.
async fn run_blocking<T, F>(
    db: &Arc<Database>,
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    work: F,
) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce(&Database) -> Result<T, DiskError> + Send + 'static,
{
    let db = Arc::clone(db);
    match tokio::task::spawn_blocking(move || work(&db)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StorageIOError::new(subject, verb, AnyError::new(&error)).into()),
        Err(join) => Err(StorageIOError::new(subject, verb, AnyError::new(&join)).into()),
    }
}

/// Encodes a value for a redb table.
fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, DiskError> {
    Ok(serde_json::to_vec(value)?)
}

/// Decodes a value read from a redb table.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DiskError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Reads and decodes the value stored under `key` in a table of single named values.
fn read_value<T, Table>(table: &Table, key: &str) -> Result<Option<T>, DiskError>
where
    T: DeserializeOwned,
    Table: ReadableTable<&'static str, &'static [u8]>,
{
    match table.get(key)? {
        Some(guard) => Ok(Some(decode(guard.value())?)),
        None => Ok(None),
    }
}
