//! A watch stream on a connection of its own: once a node has answered an HTTP/1.1 watch with
//! `101 Switching Protocols` (`Upgrade: hyphae-watch`), its lines go straight onto the TLS
//! stream, with none of hyper's or h2's per-connection buffers (decision 56). Never reads what
//! the reader sends beyond noticing that it left: a watch reader sends nothing after its request.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::ChannelBody;

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
    /// A line could not be written within the patience given: the reader stopped reading, or
    /// its host is gone (the kernel's send buffer filled).
    WriteStalled,
    /// Reading or writing the connection failed (a reset, a TLS error).
    Broken(std::io::ErrorKind),
}

/// Writes each line of `lines` onto `io` as it is queued, until the fan-out drops the stream,
/// the reader leaves, a write stalls for `patience` (the node passes [`super::SEND_PATIENCE`], the
/// fan-out's own patience with a full queue) or `shutdown`; then closes the connection (TLS
/// `close_notify` within [`CLOSE_PATIENCE`]).
pub async fn serve<I>(
    mut io: I,
    mut lines: ChannelBody,
    patience: Duration,
    shutdown: &CancellationToken,
) -> Ended
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
        match tokio::time::timeout(patience, write).await {
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_channel::mpsc;

    use super::*;

    /// A stream's queue and the body end of it, as [`crate::watch::open`] makes them.
    fn queue() -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (lines, body) = mpsc::channel(crate::watch::STREAM_BUFFER);
        (lines, ChannelBody { lines: body })
    }

    #[tokio::test]
    async fn lines_go_onto_the_connection_until_the_reader_leaves() {
        let (mut lines, body) = queue();
        let (node, mut reader) = tokio::io::duplex(1024);
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(async move { serve(node, body, PATIENCE, &shutdown).await });
        lines.try_send(Bytes::from_static(b"{\"a\":1}\n")).unwrap();
        lines.try_send(Bytes::from_static(b"{\"b\":2}\n")).unwrap();
        let mut read = vec![0u8; 16];
        reader.read_exact(&mut read).await.unwrap();
        assert_eq!(read, b"{\"a\":1}\n{\"b\":2}\n");
        drop(reader);
        assert_eq!(serving.await.unwrap(), Ended::ReaderLeft);
        assert!(
            lines.try_send(Bytes::from_static(b"x\n")).is_err(),
            "the fan-out sees the reader gone"
        );
    }

    #[tokio::test]
    async fn the_stream_ends_when_dropped_at_shutdown_or_when_the_reader_speaks() {
        let (lines, body) = queue();
        let (node, mut reader) = tokio::io::duplex(1024);
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(async move { serve(node, body, PATIENCE, &shutdown).await });
        drop(lines);
        assert_eq!(serving.await.unwrap(), Ended::Dropped);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "closed, nothing written");

        let (_lines, body) = queue();
        let (node, _reader) = tokio::io::duplex(1024);
        let shutdown = CancellationToken::new();
        let stopping = shutdown.clone();
        let serving = tokio::spawn(async move { serve(node, body, PATIENCE, &stopping).await });
        shutdown.cancel();
        assert_eq!(serving.await.unwrap(), Ended::Shutdown);

        let (_lines, body) = queue();
        let (node, mut reader) = tokio::io::duplex(1024);
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(async move { serve(node, body, PATIENCE, &shutdown).await });
        reader.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(serving.await.unwrap(), Ended::ReaderSpoke);
    }

    /// The tests' patience with a stalled write.
    const PATIENCE: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn a_reader_that_stops_reading_is_given_up_after_the_patience() {
        let (mut lines, body) = queue();
        // Room for less than one line: the write cannot finish until someone reads.
        let (node, _reader) = tokio::io::duplex(4);
        let shutdown = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let serving = tokio::spawn(async move { serve(node, body, PATIENCE, &shutdown).await });
        lines.try_send(Bytes::from_static(b"{\"a\":1}\n")).unwrap();
        assert_eq!(serving.await.unwrap(), Ended::WriteStalled);
        assert!(started.elapsed() >= PATIENCE);
    }
}
