//! A Raft snapshot's bytes as a file on disk, readable, writable and seekable from async code:
//! the `SnapshotData` openraft streams chunks into and out of. Every read and write is a
//! positional one on tokio's blocking pool, and must never leave the async worker waiting on
//! the disk.
//!
//! Why not `tokio::fs::File`: it answers a write before the bytes reach the file and reports a
//! failed one on the next call, so a full disk would fail the chunk after the one that was
//! lost, and openraft would go on as if the lost one had landed. Here a write answers only once
//! it is in the file (or has failed), and a failed one moves nothing, so the chunk sent again
//! lands where it belongs.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

/// The most one read asks of the disk at once; a caller with a larger buffer reads again.
const MAX_READ_BYTES: usize = 1024 * 1024;

/// A snapshot's bytes in a file. Reads and writes start at the handle's own position, which
/// only a seek or a finished read or write moves (the file descriptor's offset is never used).
///
/// A handle made by [`SnapshotFile::spool`] owns its file: dropping it removes the file unless
/// [`SnapshotFile::take_spool`] claimed it first, so an abandoned receipt leaves nothing behind.
#[derive(Debug)]
pub struct SnapshotFile {
    file: Arc<File>,
    path: PathBuf,
    /// The file this handle removes when dropped (a spool not yet claimed).
    spool: Option<PathBuf>,
    position: u64,
    /// The end of the file: its length when opened, grown by every write that finished.
    len: u64,
    /// The one disk operation under way, if any.
    op: Option<JoinHandle<Done>>,
}

/// A finished disk operation, with what it was asked so a later call can tell whether it is
/// the one it would have started.
#[derive(Debug)]
enum Done {
    Read {
        at: u64,
        bytes: io::Result<Vec<u8>>,
    },
    Wrote {
        at: u64,
        bytes: Vec<u8>,
        result: io::Result<()>,
    },
    Synced(io::Result<()>),
}

impl SnapshotFile {
    /// A handle on an opened snapshot file at `path`, positioned at its start.
    ///
    /// Blocking (it reads the file's length): call it on the blocking pool.
    pub fn open(file: File, path: PathBuf) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(SnapshotFile {
            file: Arc::new(file),
            path,
            spool: None,
            position: 0,
            len,
            op: None,
        })
    }

    /// A handle on a freshly created, empty spool file at `path`, which the handle removes when
    /// dropped unless [`SnapshotFile::take_spool`] claimed it.
    pub fn spool(file: File, path: PathBuf) -> Self {
        SnapshotFile {
            file: Arc::new(file),
            spool: Some(path.clone()),
            path,
            position: 0,
            len: 0,
            op: None,
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file, for blocking work on it (sync, copy).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Claims the spool file: the handle no longer removes it when dropped. `None` when the
    /// handle is not a spool (or it was claimed already).
    pub fn take_spool(&mut self) -> Option<PathBuf> {
        self.spool.take()
    }

    /// A blocking reader of the whole file from its first byte, leaving the handle's position
    /// where it is. Use it on the blocking pool.
    pub fn reader(&self) -> impl Read + '_ {
        FromStart {
            file: &self.file,
            at: 0,
        }
    }

    /// Starts `work` on the blocking pool as the handle's one operation.
    fn start(&mut self, work: impl FnOnce(&File) -> Done + Send + 'static) {
        let file = Arc::clone(&self.file);
        self.op = Some(tokio::task::spawn_blocking(move || work(&file)));
    }

    /// Waits for the operation under way, if any, and returns it finished. A write that
    /// finished grows the known end of the file whoever started it.
    fn poll_op(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Done>>> {
        let Some(op) = self.op.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        let done = ready!(Pin::new(op).poll(cx));
        self.op = None;
        let done = done.map_err(io::Error::other)?;
        if let Done::Wrote {
            at,
            bytes,
            result: Ok(()),
        } = &done
        {
            self.len = self.len.max(at.saturating_add(bytes.len() as u64));
        }
        Poll::Ready(Ok(Some(done)))
    }
}

/// Removes the file at `path` if it is there; a failure is logged as `failed` (each caller's
/// leftover is removed by the next start, so nothing else is done about it).
pub(crate) fn remove_file_or_log(path: &std::path::Path, failed: &'static str) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "{failed}"),
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if let Some(path) = self.spool.take() {
            // One unlink, as quick as the close that follows it; the next start removes any
            // spool left behind.
            remove_file_or_log(
                &path,
                "cannot remove an abandoned snapshot spool; the next start removes it",
            );
        }
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match ready!(this.poll_op(cx))? {
                // A read at this position: the file's bytes there, whoever asked.
                Some(Done::Read { at, bytes }) if at == this.position => {
                    let bytes = bytes?;
                    let taken = bytes.len().min(buf.remaining());
                    buf.put_slice(&bytes[..taken]);
                    this.position += taken as u64;
                    return Poll::Ready(Ok(()));
                }
                // Another call's operation, abandoned by it: done with, start ours.
                Some(_) => {}
                None => {
                    let want = buf.remaining().min(MAX_READ_BYTES);
                    if want == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    let at = this.position;
                    this.start(move |file| {
                        let mut bytes = vec![0; want];
                        let bytes = file.read_at(&mut bytes, at).map(|read| {
                            bytes.truncate(read);
                            bytes
                        });
                        Done::Read { at, bytes }
                    });
                }
            }
        }
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match ready!(this.poll_op(cx))? {
                // These very bytes at this very position: the write this call started.
                Some(Done::Wrote { at, bytes, result })
                    if at == this.position && bytes.as_slice() == buf =>
                {
                    result?;
                    this.position += buf.len() as u64;
                    return Poll::Ready(Ok(buf.len()));
                }
                Some(_) => {}
                None => {
                    if buf.is_empty() {
                        return Poll::Ready(Ok(0));
                    }
                    let at = this.position;
                    let bytes = buf.to_vec();
                    this.start(move |file| {
                        let result = file.write_all_at(&bytes, at);
                        Done::Wrote { at, bytes, result }
                    });
                }
            }
        }
    }

    /// Writes reach the file before they answer: nothing to flush but an abandoned operation.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while ready!(this.poll_op(cx))?.is_some() {}
        Poll::Ready(Ok(()))
    }

    /// Syncs the file to disk, so a disk that fails late fails here, while the sender can
    /// still send again.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match ready!(this.poll_op(cx))? {
                // A sync that started after every write that finished.
                Some(Done::Synced(result)) => return Poll::Ready(result),
                Some(_) => {}
                None => this.start(|file| Done::Synced(file.sync_data())),
            }
        }
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        let target = match position {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::Current(delta) => this.position.checked_add_signed(delta),
            SeekFrom::End(delta) => this.len.checked_add_signed(delta),
        };
        this.position = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("seek to {position:?} leaves the file"),
            )
        })?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.position))
    }
}

/// Reads a file from a position of its own, never the descriptor's.
struct FromStart<'a> {
    file: &'a File,
    at: u64,
}

impl Read for FromStart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buf, self.at)?;
        self.at += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;

    fn create(dir: &Path, name: &str) -> (File, PathBuf) {
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        (file, path)
    }

    #[tokio::test]
    async fn chunks_written_at_offsets_read_back_whole() {
        let dir = tempfile::TempDir::new().unwrap();
        let (file, path) = create(dir.path(), "spool");
        let mut spool = SnapshotFile::spool(file, path.clone());
        spool.write_all(b"hello ").await.unwrap();
        spool.write_all(b"world").await.unwrap();
        // A chunk sent again lands in place.
        spool.seek(SeekFrom::Start(6)).await.unwrap();
        spool.write_all(b"world").await.unwrap();
        spool.shutdown().await.unwrap();
        assert_eq!(spool.seek(SeekFrom::End(0)).await.unwrap(), 11);
        spool.seek(SeekFrom::Start(0)).await.unwrap();
        let mut read = String::new();
        spool.read_to_string(&mut read).await.unwrap();
        assert_eq!(read, "hello world");
        let mut whole = String::new();
        spool.reader().read_to_string(&mut whole).unwrap();
        assert_eq!(whole, "hello world");
        assert!(spool.seek(SeekFrom::Current(-100)).await.is_err());
        drop(spool);
        assert!(!path.exists(), "a dropped spool removes its file");
    }

    #[tokio::test]
    async fn a_claimed_spool_stays_and_a_failed_write_moves_nothing() {
        let dir = tempfile::TempDir::new().unwrap();
        let (file, path) = create(dir.path(), "spool");
        let mut spool = SnapshotFile::spool(file, path.clone());
        assert_eq!(spool.take_spool(), Some(path.clone()));
        drop(spool);
        assert!(path.exists(), "a claimed spool is the claimer's");

        // A handle on a read-only descriptor: every write fails, as on a broken disk.
        let read_only = File::open(&path).unwrap();
        let mut broken = SnapshotFile::open(read_only, path.clone()).unwrap();
        let error = broken.write_all(b"lost").await.expect_err("write fails");
        assert_ne!(error.kind(), io::ErrorKind::WriteZero, "{error}");
        assert_eq!(broken.stream_position().await.unwrap(), 0);
        assert_eq!(broken.seek(SeekFrom::End(0)).await.unwrap(), 0);
    }
}
