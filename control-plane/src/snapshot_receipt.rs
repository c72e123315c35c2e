//! Which snapshot a node is receiving from its leader and where its next chunk must start, so
//! a chunk that does not continue it (or would make it larger than the limit) is refused before
//! openraft writes it to the spool file. It never decides anything about Raft itself.

use std::sync::Mutex;

/// Why a snapshot chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkRefused {
    /// The chunk belongs to no snapshot being received (its offset is not 0).
    #[error(
        "snapshot chunk at offset {offset} of `{snapshot_id}`, but no such snapshot is being received; start at offset 0"
    )]
    NotStarted {
        /// The snapshot the chunk names.
        snapshot_id: String,
        /// Where it claims to start.
        offset: u64,
    },
    /// The chunk does not start where the previous one ended.
    #[error("snapshot chunk of `{snapshot_id}` at offset {offset}, expected offset {expected}")]
    OutOfOrder {
        /// The snapshot being received.
        snapshot_id: String,
        /// Where the chunk claims to start.
        offset: u64,
        /// Where it must start.
        expected: u64,
    },
    /// The snapshot would grow past `limits.maxSnapshotBytes`.
    #[error(
        "snapshot chunk would make `{snapshot_id}` {size} bytes, over the limit of {limit} (limits.maxSnapshotBytes)"
    )]
    TooLarge {
        /// The snapshot being received.
        snapshot_id: String,
        /// Its size with this chunk.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// A chunk as the receipt sees it: which snapshot, where it starts, how long it is.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// The snapshot's id.
    pub snapshot_id: &'a str,
    /// The chunk's first byte within the snapshot.
    pub offset: u64,
    /// The chunk's length.
    pub len: u64,
    /// Whether it is the last chunk.
    pub done: bool,
}

/// The snapshot being received, if any.
#[derive(Debug, Default)]
pub struct SnapshotReceipt {
    receiving: Mutex<Option<Receiving>>,
}

#[derive(Debug)]
struct Receiving {
    snapshot_id: String,
    next: u64,
}

impl SnapshotReceipt {
    /// Whether `chunk` may be handed to Raft: offset 0 starts a snapshot (any earlier one is
    /// abandoned, as openraft does); any other offset must continue the current one, or repeat
    /// part of it (a chunk sent again); no snapshot may grow past `limit` bytes.
    pub fn check(&self, chunk: Chunk<'_>, limit: u64) -> Result<(), ChunkRefused> {
        let size = chunk.offset.saturating_add(chunk.len);
        if size > limit {
            return Err(ChunkRefused::TooLarge {
                snapshot_id: chunk.snapshot_id.to_string(),
                size,
                limit,
            });
        }
        if chunk.offset == 0 {
            return Ok(());
        }
        match &*self.lock() {
            Some(current) if current.snapshot_id == chunk.snapshot_id => {
                // At or before the next offset: the next chunk, or one sent again because its
                // answer was lost (openraft rewrites it in place).
                if chunk.offset <= current.next {
                    Ok(())
                } else {
                    Err(ChunkRefused::OutOfOrder {
                        snapshot_id: chunk.snapshot_id.to_string(),
                        offset: chunk.offset,
                        expected: current.next,
                    })
                }
            }
            _ => Err(ChunkRefused::NotStarted {
                snapshot_id: chunk.snapshot_id.to_string(),
                offset: chunk.offset,
            }),
        }
    }

    /// Records a chunk Raft accepted: the next must start where the snapshot now ends; the
    /// last ends the receipt.
    pub fn accepted(&self, chunk: Chunk<'_>) {
        let mut receiving = self.lock();
        let end = chunk.offset.saturating_add(chunk.len);
        let next = match &*receiving {
            Some(current) if current.snapshot_id == chunk.snapshot_id && chunk.offset > 0 => {
                current.next.max(end)
            }
            _ => end,
        };
        *receiving = (!chunk.done).then(|| Receiving {
            snapshot_id: chunk.snapshot_id.to_string(),
            next,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Receiving>> {
        self.receiving.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(snapshot_id: &str, offset: u64, len: u64, done: bool) -> Chunk<'_> {
        Chunk {
            snapshot_id,
            offset,
            len,
            done,
        }
    }

    /// Checks a chunk within a limit of 100 bytes and records it, as storage does with a chunk
    /// it takes; fails the test if the chunk is refused.
    fn receive(receipt: &SnapshotReceipt, snapshot_id: &str, offset: u64, len: u64, done: bool) {
        let taken = chunk(snapshot_id, offset, len, done);
        receipt
            .check(taken, 100)
            .expect("a chunk that continues the snapshot");
        receipt.accepted(taken);
    }

    #[test]
    fn chunks_must_continue_the_snapshot_being_received() {
        let receipt = SnapshotReceipt::default();
        assert!(matches!(
            receipt.check(chunk("a", 5, 5, false), 100),
            Err(ChunkRefused::NotStarted { .. })
        ));
        receive(&receipt, "a", 0, 5, false);
        assert_eq!(
            receipt.check(chunk("a", 1 << 62, 1, false), u64::MAX),
            Err(ChunkRefused::OutOfOrder {
                snapshot_id: "a".into(),
                offset: 1 << 62,
                expected: 5
            })
        );
        assert!(matches!(
            receipt.check(chunk("b", 5, 5, false), 100),
            Err(ChunkRefused::NotStarted { .. })
        ));
        receive(&receipt, "a", 5, 5, true);
        assert!(
            receipt.check(chunk("a", 10, 5, false), 100).is_err(),
            "a finished snapshot takes no more chunks"
        );
    }

    #[test]
    fn no_snapshot_grows_past_the_limit() {
        let receipt = SnapshotReceipt::default();
        assert!(matches!(
            receipt.check(chunk("a", 0, 101, false), 100),
            Err(ChunkRefused::TooLarge { size: 101, .. })
        ));
        assert!(matches!(
            receipt.check(chunk("a", u64::MAX, 2, false), 100),
            Err(ChunkRefused::TooLarge { size: u64::MAX, .. })
        ));
    }
}
