//! Durable Raft storage in one redb file: the log and vote ([`log`]) and the state machine with
//! its snapshots ([`state_machine`]), whose bytes are files in a directory beside it
//! ([`snapshot_dir`]). Every redb transaction runs on tokio's blocking pool, never
//! on an async worker thread ([`disk`]), and no disk error becomes a panic.

pub mod disk;
pub mod log;
pub mod snapshot_dir;
pub mod state_machine;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::Database;

pub use self::disk::DiskError;
pub use self::log::LogStore;
pub use self::snapshot_dir::{SNAPSHOT_DIR, SnapshotDir};
pub use self::state_machine::{StateMachineStore, StateReader, StateSnapshotBuilder};

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
/// state machine that share it, with the state machine's state loaded into memory. Snapshot
/// files live in [`SNAPSHOT_DIR`] beside `path`; any there but the current one (a receipt cut
/// short, a build never recorded) is removed.
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
    let snapshot_dir = path.with_file_name(SNAPSHOT_DIR);
    let loaded = create_tables(&db).and_then(|()| {
        let current = state_machine::current_snapshot_file(&db)?;
        let snapshots = Arc::new(SnapshotDir::open(snapshot_dir, current)?);
        state_machine::migrate_snapshot_data(&db, &snapshots)?;
        StateMachineStore::load(Arc::clone(&db), snapshots, watch_history)
    });
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
