//! What every redb transaction of the store shares: its error type, the JSON codec of stored
//! values, and the run on tokio's blocking pool. Never called from an async worker directly.

use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use redb::{Database, ReadableTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::{NodeId, StorageError};

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
    /// A snapshot file could not be created, written, synced, renamed or read.
    #[error(
        "cannot {action} {path}: {source}; check that the data directory is writable and has free space"
    )]
    File {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// What the system reported.
        #[source]
        source: std::io::Error,
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
pub(crate) async fn run_blocking<T, F>(
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
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, DiskError> {
    Ok(serde_json::to_vec(value)?)
}

/// Decodes a value read from a redb table.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DiskError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Reads and decodes the value stored under `key` in a table of single named values.
pub(crate) fn read_value<T, Table>(table: &Table, key: &str) -> Result<Option<T>, DiskError>
where
    T: DeserializeOwned,
    Table: ReadableTable<&'static str, &'static [u8]>,
{
    match table.get(key)? {
        Some(guard) => Ok(Some(decode(guard.value())?)),
        None => Ok(None),
    }
}
