//! A watch stream on a connection of its own: once a node has answered an HTTP/1.1 watch with
//! `101 Switching Protocols` (`Upgrade: hyphae-watch`), its lines go straight onto the TLS
//! stream, with none of hyper's or h2's per-connection buffers (decision 55). Never reads what
//! the reader sends beyond noticing that it left: a watch reader sends nothing after its request.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{ChannelBody, SEND_PATIENCE};

/// Longest a node waits for a closing connection to take its TLS `close_notify`.
pub const CLOSE_PATIENCE: Duration = Duration::from_secs(1);

/// Why a watch connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The fan-out dropped the stream: its reader fell too far behind.
    Dropped,
    /// The node is stopping.
    Shutdown,
    /// The reader closed the connection.
    ReaderLeft,
    /// The reader sent bytes after its request, which no watch reader does.
    ReaderSpoke,
    /// A line could not be written within [`SEND_PATIENCE`]: the reader stopped reading, or
    /// its host is gone (the kernel's send buffer filled).
    WriteStalled,
    /// Reading or writing the connection failed (a reset, a TLS error).
    Broken(std::io::ErrorKind),
}

/// Writes each line of `lines` onto `io` as it is queued, until the fan-out drops the stream,
/// the reader leaves, a write stalls for [`SEND_PATIENCE`] or `shutdown`; then closes the
/// connection (TLS `close_notify` within [`CLOSE_PATIENCE`]).
pub async fn serve<I>(mut io: I, mut lines: ChannelBody, shutdown: &CancellationToken) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    // A read only tells that the reader left (end of stream) or broke the protocol: one byte
    // of room is all it needs.
    let mut probe = [0u8; 1];
    let ended = loop {
        let line = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ended::Shutdown,
            line = lines.next_line() => match line {
                Some(line) => line,
                None => break Ended::Dropped,
            },
            read = io.read(&mut probe) => break match read {
                Ok(0) => Ended::ReaderLeft,
                Ok(_) => Ended::ReaderSpoke,
                Err(error) => Ended::Broken(error.kind()),
            },
        };
        let write = async {
            io.write_all(&line).await?;
            io.flush().await
        };
        match tokio::time::timeout(SEND_PATIENCE, write).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => break Ended::Broken(error.kind()),
            Err(_) => break Ended::WriteStalled,
        }
    };
    // Dropped after the loop, so the fan-out sees the reader gone before the close waits.
    drop(lines);
    if ended != Ended::WriteStalled {
        let _ = tokio::time::timeout(CLOSE_PATIENCE, io.shutdown()).await;
    }
    ended
}
