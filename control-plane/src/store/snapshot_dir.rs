//! The directory of snapshot files beside the Raft store: the current snapshot, ones being
//! built, and spools of ones being received. Names are local and unique (never the sender's
//! snapshot id); which file is current is recorded in redb, and any other file is garbage the
//! next start removes. Blocking: use it on the blocking pool only.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::disk::DiskError;
use crate::snapshot_file::SnapshotFile;

/// The directory's name beside the Raft store file.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// Snapshots hold the CA's key and token hashes: files owner-only, like the store.
const FILE_MODE: u32 = 0o600;
/// And the directory too.
const DIR_MODE: u32 = 0o700;

/// The snapshot files of one store.
#[derive(Debug)]
pub struct SnapshotDir {
    path: PathBuf,
    /// The number the next file gets.
    next: AtomicU64,
    /// Held while the current snapshot is switched (record in redb, old file removed) or
    /// opened (record read, file opened), so an opening never meets a removed file.
    current: Mutex<()>,
}

impl SnapshotDir {
    /// Opens (creating it if missing) the directory at `path` and removes every file in it but
    /// the current snapshot's, number `current`: spools of receipts cut short, snapshots built
    /// or received but never recorded, ones a newer snapshot replaced.
    pub fn open(path: PathBuf, current: Option<u64>) -> Result<Self, DiskError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&path)
            .map_err(|source| file_error("create the snapshot directory", &path, source))?;
        let keep = current.map(snapshot_name);
        let entries = std::fs::read_dir(&path)
            .map_err(|source| file_error("list the snapshot directory", &path, source))?;
        for entry in entries {
            let entry =
                entry.map_err(|source| file_error("list the snapshot directory", &path, source))?;
            if keep.as_deref() == entry.file_name().to_str() {
                continue;
            }
            let leftover = entry.path();
            std::fs::remove_file(&leftover)
                .map_err(|source| file_error("remove the leftover", &leftover, source))?;
            tracing::info!(path = %leftover.display(), "removed a leftover snapshot file");
        }
        Ok(SnapshotDir {
            path,
            next: AtomicU64::new(current.map_or(1, |number| number.saturating_add(1))),
            current: Mutex::new(()),
        })
    }

    /// Where snapshot number `number` is.
    pub fn snapshot_path(&self, number: u64) -> PathBuf {
        self.path.join(snapshot_name(number))
    }

    /// A new, empty spool for a snapshot about to be received: a file of its own, removed when
    /// its handle is dropped unless [`SnapshotDir::keep`] made it a snapshot.
    pub fn spool(&self) -> Result<SnapshotFile, DiskError> {
        let path = self
            .path
            .join(format!("receiving-{}.tmp", self.take_number()));
        let file = create(&path)?;
        Ok(SnapshotFile::spool(file, path))
    }

    /// A new, empty snapshot file to build into, with its number.
    pub fn create(&self) -> Result<(u64, File, PathBuf), DiskError> {
        let number = self.take_number();
        let path = self.snapshot_path(number);
        Ok((number, create(&path)?, path))
    }

    /// Opens snapshot number `number` for reading.
    pub fn open_snapshot(&self, number: u64) -> Result<SnapshotFile, DiskError> {
        let path = self.snapshot_path(number);
        let opened = File::open(&path).and_then(|file| SnapshotFile::open(file, path.clone()));
        opened.map_err(|source| file_error("open the snapshot", &path, source))
    }

    /// Makes `data` a snapshot file of this directory, on disk, and returns its number: a spool
    /// is renamed, anything else (a handle on another store's file) copied.
    pub fn keep(&self, mut data: SnapshotFile) -> Result<u64, DiskError> {
        let number = self.take_number();
        let path = self.snapshot_path(number);
        match data.take_spool() {
            Some(spool) => {
                let synced = data.file().sync_data();
                let renamed = synced.and_then(|()| std::fs::rename(&spool, &path));
                if let Err(source) = renamed {
                    // The spool goes, as it would have with its handle; should that fail too,
                    // the next start removes it.
                    let _ = std::fs::remove_file(&spool);
                    return Err(file_error("keep the received snapshot", &spool, source));
                }
            }
            None => {
                let copied = create(&path).and_then(|file| {
                    let mut writer = BufWriter::new(&file);
                    io::copy(&mut data.reader(), &mut writer)
                        .and_then(|_| writer.flush())
                        .and_then(|()| file.sync_data())
                        .map_err(|source| file_error("copy the snapshot", &path, source))
                });
                if let Err(error) = copied {
                    self.remove(number);
                    return Err(error);
                }
            }
        }
        if let Err(error) = self.sync() {
            self.remove(number);
            return Err(error);
        }
        Ok(number)
    }

    /// Syncs the directory, so names created or renamed in it survive a crash.
    pub fn sync(&self) -> Result<(), DiskError> {
        File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| file_error("sync the snapshot directory", &self.path, source))
    }

    /// Removes snapshot number `number`, no longer needed. A file that stays is only logged:
    /// the next start removes it.
    pub fn remove(&self, number: u64) {
        crate::snapshot_file::remove_file_or_log(
            &self.snapshot_path(number),
            "cannot remove a replaced snapshot; the next start removes it",
        );
    }

    /// Holds the current snapshot still: see the field.
    pub fn lock_current(&self) -> MutexGuard<'_, ()> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// Snapshot number `number`'s file name.
fn snapshot_name(number: u64) -> String {
    format!("snapshot-{number}.json")
}

/// Creates a new file, owner-only, for reading and writing.
fn create(path: &Path) -> Result<File, DiskError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|source| file_error("create", path, source))
}

fn file_error(action: &'static str, path: &Path, source: io::Error) -> DiskError {
    DiskError::File {
        action,
        path: path.to_path_buf(),
        source,
    }
}
