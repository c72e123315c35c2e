//! The wire form of one snapshot chunk between control-plane nodes: the request's fields as a
//! small JSON header, then the chunk's bytes as they are. openraft's request serializes its
//! bytes as a JSON array of numbers, three to four bytes of JSON for each byte of snapshot;
//! framed this way a chunk travels at its own size.
//!
//! `[header length: u32, big-endian][header: the request without its data, JSON][data]`

use openraft::raft::InstallSnapshotRequest;

use crate::raft::TypeConfig;

/// The content type of a framed chunk.
pub const CONTENT_TYPE: &str = "application/vnd.hyphae.snapshot-chunk";

/// Why a body is not a framed chunk.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// Shorter than its length prefix, or than the header it announces.
    #[error("a snapshot chunk of {0} bytes is cut short")]
    Truncated(usize),
    /// The header is not a request.
    #[error("unreadable snapshot chunk header")]
    Header(#[source] serde_json::Error),
    /// The header carried data of its own (the bytes belong after it).
    #[error("a snapshot chunk header with data in it")]
    DataInHeader,
}

/// Frames `request` for the wire.
pub fn encode(request: &InstallSnapshotRequest<TypeConfig>) -> Result<Vec<u8>, serde_json::Error> {
    let header = InstallSnapshotRequest::<TypeConfig> {
        vote: request.vote,
        meta: request.meta.clone(),
        offset: request.offset,
        data: Vec::new(),
        done: request.done,
    };
    let header = serde_json::to_vec(&header)?;
    let length = u32::try_from(header.len()).unwrap_or(u32::MAX);
    let mut body = Vec::with_capacity(4 + header.len() + request.data.len());
    body.extend_from_slice(&length.to_be_bytes());
    body.extend_from_slice(&header);
    body.extend_from_slice(&request.data);
    Ok(body)
}

/// Reads a framed chunk back into the request it carries.
pub fn decode(body: &[u8]) -> Result<InstallSnapshotRequest<TypeConfig>, ChunkError> {
    let truncated = || ChunkError::Truncated(body.len());
    let (length, rest) = body.split_first_chunk::<4>().ok_or_else(truncated)?;
    let length = usize::try_from(u32::from_be_bytes(*length)).map_err(|_| truncated())?;
    if rest.len() < length {
        return Err(truncated());
    }
    let (header, data) = rest.split_at(length);
    let mut request: InstallSnapshotRequest<TypeConfig> =
        serde_json::from_slice(header).map_err(ChunkError::Header)?;
    if !request.data.is_empty() {
        return Err(ChunkError::DataInHeader);
    }
    request.data = data.to_vec();
    Ok(request)
}

#[cfg(test)]
mod tests {
    use openraft::testing::log_id;
    use openraft::{SnapshotMeta, StoredMembership, Vote};

    use super::*;

    fn request(data: Vec<u8>) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(3, 1, 42)),
                last_membership: StoredMembership::default(),
                snapshot_id: "3-42-7".into(),
            },
            offset: 1 << 20,
            data,
            done: true,
        }
    }

    #[test]
    fn a_chunk_travels_at_its_own_size_and_reads_back_whole() {
        let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let sent = request(data.clone());
        let body = encode(&sent).unwrap();
        let json = serde_json::to_vec(&sent).unwrap();
        assert!(body.len() < data.len() + 400, "{} bytes framed", body.len());
        assert!(json.len() > 3 * data.len(), "the JSON form it replaces");
        let read = decode(&body).unwrap();
        assert_eq!(read.data, data);
        assert_eq!(read.offset, sent.offset);
        assert_eq!(read.meta, sent.meta);
        assert_eq!(read.vote, sent.vote);
        assert!(read.done);
    }

    #[test]
    fn cut_or_malformed_chunks_are_refused() {
        let body = encode(&request(vec![1, 2, 3])).unwrap();
        for cut in [0, 2, 10] {
            assert!(matches!(
                decode(&body[..cut]),
                Err(ChunkError::Truncated(_))
            ));
        }
        let mut huge = body.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&huge), Err(ChunkError::Truncated(_))));
        let mut garbage = vec![0, 0, 0, 2];
        garbage.extend_from_slice(b"{]");
        assert!(matches!(decode(&garbage), Err(ChunkError::Header(_))));
        let mut stuffed = serde_json::to_vec(&request(vec![9])).unwrap();
        let length = u32::try_from(stuffed.len()).unwrap().to_be_bytes();
        stuffed.splice(0..0, length);
        assert!(matches!(decode(&stuffed), Err(ChunkError::DataInHeader)));
    }
}
