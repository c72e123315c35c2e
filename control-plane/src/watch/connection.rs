//! A watch stream on a connection of its own: once a node has answered an HTTP/1.1 watch with
//! `101 Switching Protocols` (`Upgrade: hyphae-watch`), its lines go straight onto the TLS
//! stream, with none of hyper's or h2's per-connection buffers (decision 56). An agent's
//! registry requests may come up the same connection, one line at a time, each answered with
//! one line among the stream's (decision 57); any other reader sends nothing after its request.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ChannelBody;

/// Longest a node waits for a closing connection to take its TLS `close_notify`.
pub const CLOSE_PATIENCE: Duration = Duration::from_secs(1);

/// Room a read of request lines reserves: a heartbeat is well under it, a registration takes
/// as many reads as it needs.
const UPLINK_READ_BYTES: usize = 512;

/// Why a watch connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The fan-out dropped the stream: its reader fell too far behind.
    Dropped,
    /// The node is stopping.
    Shutdown,
    /// The reader closed the connection.
    ReaderLeft,
    /// The reader sent bytes after its request, and the connection takes no requests.
    ReaderSpoke,
    /// A request line grew past its limit without ending.
    RequestTooLong,
    /// A begun request line did not arrive whole in time.
    RequestStalled,
    /// A line could not be written within the patience given: the reader stopped reading, or
    /// its host is gone (the kernel's send buffer filled).
    WriteStalled,
    /// Reading or writing the connection failed (a reset, a TLS error).
    Broken(std::io::ErrorKind),
}

/// A line's answer on its way: the line to send back.
pub type Answering = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// What a connection does with the request lines its reader sends up (decision 57).
pub struct Uplink {
    /// Starts answering one request line (its newline included).
    pub answer: Box<dyn FnMut(Bytes) -> Answering + Send>,
    /// The longest line taken, newline included (`limits.maxAgentBodyBytes` and the envelope).
    pub max_line: usize,
    /// Longest a begun line may take to arrive whole (`limits.bodyReadTimeout`).
    pub line_patience: Duration,
}

/// Writes each line of `lines` onto `io` as it is queued, and with `uplink`, answers each
/// request line the reader sends, one at a time, among them; until the fan-out drops the
/// stream, the reader leaves or breaks the protocol, a write stalls for `patience` (the node
/// passes [`super::SEND_PATIENCE`], the fan-out's own patience with a full queue) or
/// `shutdown`. Then closes the connection (TLS `close_notify` within [`CLOSE_PATIENCE`]).
pub async fn serve<I>(
    mut io: I,
    mut lines: ChannelBody,
    mut uplink: Option<Uplink>,
    patience: Duration,
    shutdown: &CancellationToken,
) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    // Without an uplink, a read only tells that the reader left (end of stream) or broke the
    // protocol: one byte of room is all it needs.
    let mut probe = [0u8; 1];
    // Request bytes read and not yet answered; empty (unallocated) between requests.
    let mut incoming = BytesMut::new();
    // When the request begun in `incoming` must have arrived whole.
    let mut line_deadline: Option<Instant> = None;
    let mut answering: Option<Answering> = None;
    let ended = loop {
        if answering.is_none()
            && let Some(uplink) = uplink.as_mut()
            && let Some(end) = incoming.iter().position(|&b| b == b'\n')
        {
            answering = Some((uplink.answer)(incoming.split_to(end + 1).freeze()));
            if incoming.is_empty() {
                // Frees the read's allocation until the next request.
                incoming = BytesMut::new();
                line_deadline = None;
            } else {
                // The next line has begun: it gets its own time.
                line_deadline = Some(Instant::now() + uplink.line_patience);
            }
        }
        let taking_requests = uplink.is_some();
        let line = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ended::Shutdown,
            answer = async {
                match answering.as_mut() {
                    Some(answering) => answering.await,
                    None => std::future::pending().await,
                }
            } => {
                answering = None;
                answer
            }
            line = lines.next_line() => match line {
                Some(line) => line,
                None => break Ended::Dropped,
            },
            () = async {
                match line_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => break Ended::RequestStalled,
            read = async {
                if taking_requests {
                    incoming.reserve(UPLINK_READ_BYTES);
                    io.read_buf(&mut incoming).await
                } else {
                    io.read(&mut probe).await
                }
            }, if answering.is_none() => {
                match read {
                    Ok(0) => break Ended::ReaderLeft,
                    Ok(_) if !taking_requests => break Ended::ReaderSpoke,
                    Ok(_) => {}
                    Err(error) => break Ended::Broken(error.kind()),
                }
                let max_line = uplink.as_ref().map_or(0, |uplink| uplink.max_line);
                if incoming.len() > max_line && !incoming.contains(&b'\n') {
                    break Ended::RequestTooLong;
                }
                if line_deadline.is_none() {
                    let line_patience = uplink.as_ref().map_or(patience, |u| u.line_patience);
                    line_deadline = Some(Instant::now() + line_patience);
                }
                continue;
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
    use tokio::io::DuplexStream;
    use tokio::task::JoinHandle;

    use super::*;

    /// The tests' patience with a stalled write.
    const PATIENCE: Duration = Duration::from_millis(100);

    /// A stream served on one end of an in-memory connection whose buffers hold `room` bytes:
    /// the fan-out's end of its queue, the reader's end of the connection, the node's shutdown
    /// and the serving task.
    struct Served {
        lines: mpsc::Sender<Bytes>,
        reader: DuplexStream,
        shutdown: CancellationToken,
        serving: JoinHandle<Ended>,
    }

    /// Serves a stream's queue, as [`crate::watch::open`] makes it, with `uplink`.
    fn served(room: usize, uplink: Option<Uplink>) -> Served {
        let (lines, queued) = mpsc::channel(crate::watch::STREAM_BUFFER);
        let body = ChannelBody { lines: queued };
        let (node, reader) = tokio::io::duplex(room);
        let shutdown = CancellationToken::new();
        let stopping = shutdown.clone();
        let serving =
            tokio::spawn(async move { serve(node, body, uplink, PATIENCE, &stopping).await });
        Served {
            lines,
            reader,
            shutdown,
            serving,
        }
    }

    #[tokio::test]
    async fn lines_go_onto_the_connection_until_the_reader_leaves() {
        let Served {
            mut lines,
            mut reader,
            serving,
            ..
        } = served(1024, None);
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
        let Served {
            lines,
            mut reader,
            serving,
            ..
        } = served(1024, None);
        drop(lines);
        assert_eq!(serving.await.unwrap(), Ended::Dropped);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "closed, nothing written");

        let stopped = served(1024, None);
        stopped.shutdown.cancel();
        assert_eq!(stopped.serving.await.unwrap(), Ended::Shutdown);

        let mut spoken = served(1024, None);
        spoken
            .reader
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        assert_eq!(spoken.serving.await.unwrap(), Ended::ReaderSpoke);
    }

    /// An uplink that answers each line with `answer:` and the line, after a short wait.
    fn echo_uplink() -> Uplink {
        Uplink {
            answer: Box::new(|line| {
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let mut answer = b"answer:".to_vec();
                    answer.extend_from_slice(&line);
                    Bytes::from(answer)
                })
            }),
            max_line: 64,
            line_patience: PATIENCE,
        }
    }

    #[tokio::test]
    async fn request_lines_are_answered_in_order_among_the_events_wherever_reads_split_them() {
        let Served {
            mut lines,
            mut reader,
            serving,
            ..
        } = served(1024, Some(echo_uplink()));
        // Split mid-line, and two lines in one read: each answered, in order.
        reader.write_all(b"{\"a\"").await.unwrap();
        reader.write_all(b":1}\n{\"b\":2}\n").await.unwrap();
        let expected = b"answer:{\"a\":1}\nanswer:{\"b\":2}\n";
        let mut read = vec![0u8; expected.len()];
        reader.read_exact(&mut read).await.unwrap();
        assert_eq!(read, expected);
        // Events still flow.
        lines.try_send(Bytes::from_static(b"{\"e\":1}\n")).unwrap();
        let mut event = vec![0u8; 8];
        reader.read_exact(&mut event).await.unwrap();
        assert_eq!(event, b"{\"e\":1}\n");
        drop(reader);
        assert_eq!(serving.await.unwrap(), Ended::ReaderLeft);
    }

    #[tokio::test]
    async fn a_request_line_too_long_or_left_half_sent_ends_the_connection() {
        let mut long = served(1024, Some(echo_uplink()));
        long.reader.write_all(&[b'x'; 65]).await.unwrap();
        assert_eq!(long.serving.await.unwrap(), Ended::RequestTooLong);

        // A whole line, then half of the next: the half still has to arrive in time.
        let mut half = served(1024, Some(echo_uplink()));
        half.reader.write_all(b"{}\n{\"half").await.unwrap();
        let mut answer = vec![0u8; 10];
        half.reader.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer:{}\n");
        assert_eq!(half.serving.await.unwrap(), Ended::RequestStalled);
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_is_given_up_after_the_patience() {
        let started = tokio::time::Instant::now();
        // Room for less than one line: the write cannot finish until someone reads.
        let mut stalled = served(4, None);
        stalled
            .lines
            .try_send(Bytes::from_static(b"{\"a\":1}\n"))
            .unwrap();
        assert_eq!(stalled.serving.await.unwrap(), Ended::WriteStalled);
        assert!(started.elapsed() >= PATIENCE);
    }
}
