//! A CONNECT stream (RFC 9113 §8.5) as a byte stream: the request body's DATA is what reads
//! return, and what is written goes out as the answer's DATA, so a tunnel is spliced to its
//! far side like any socket. Writing is bounded to one chunk in flight: a writer waits until
//! the server has taken the last one, so a slow client slows the far side rather than filling
//! memory.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::{Body, BoxError};

/// The tunnel's side that the splice reads and writes.
pub struct Tunnel {
    incoming: Body,
    unread: Bytes,
    outgoing: Arc<Mutex<Outgoing>>,
}

/// The answer body that carries what the tunnel's writer wrote.
struct Answer {
    outgoing: Arc<Mutex<Outgoing>>,
}

/// What the writer hands the answer body, one chunk at a time.
#[derive(Default)]
struct Outgoing {
    chunk: Option<Bytes>,
    end: End,
    /// The answer body's reader, waiting for a chunk or the end.
    reader: Option<Waker>,
    /// The writer, waiting for the chunk before to be taken.
    writer: Option<Waker>,
    /// The answer body was dropped (the stream was reset): writes fail.
    answer_gone: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum End {
    #[default]
    Open,
    /// The writer shut down: the answer ends with END_STREAM.
    Shutdown,
    /// The writer went without shutting down (the far side failed): the stream is reset.
    Dropped,
}

/// Turns a CONNECT request's body into a byte stream, and gives the answer's body that
/// carries what is written to it.
pub fn tunnel(request_body: Body) -> (Tunnel, Body) {
    let outgoing = Arc::new(Mutex::new(Outgoing::default()));
    let answer = Answer {
        outgoing: Arc::clone(&outgoing),
    };
    let tunnel = Tunnel {
        incoming: request_body,
        unread: Bytes::new(),
        outgoing,
    };
    (tunnel, http_body_util::BodyExt::boxed(answer))
}

impl Tunnel {
    fn outgoing(&self) -> std::sync::MutexGuard<'_, Outgoing> {
        self.outgoing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the writing side as `how`, unless it has ended already, and tells the answer.
    fn end(&self, how: End) {
        let mut outgoing = self.outgoing();
        if outgoing.end == End::Open {
            outgoing.end = how;
        }
        let reader = outgoing.reader.take();
        drop(outgoing);
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.unread.is_empty() {
                let n = self.unread.len().min(buf.remaining());
                buf.put_slice(&self.unread[..n]);
                self.unread.advance(n);
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.incoming).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                // The client's END_STREAM is the tunnel's end of input.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, error)));
                }
                // Trailers have no meaning in a tunnel.
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.unread = data;
                    }
                }
            }
        }
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut outgoing = self.outgoing();
        if outgoing.answer_gone {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if outgoing.end != End::Open {
            return Poll::Ready(Err(io::Error::other("a write after shutdown")));
        }
        if outgoing.chunk.is_some() {
            outgoing.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        outgoing.chunk = Some(Bytes::copy_from_slice(buf));
        let reader = outgoing.reader.take();
        drop(outgoing);
        if let Some(reader) = reader {
            reader.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    /// Done once the server has taken what was written.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut outgoing = self.outgoing();
        if outgoing.chunk.is_some() && !outgoing.answer_gone {
            outgoing.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.end(End::Shutdown);
        Poll::Ready(Ok(()))
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.end(End::Dropped);
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut outgoing = self.outgoing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(chunk) = outgoing.chunk.take() {
            let writer = outgoing.writer.take();
            drop(outgoing);
            if let Some(writer) = writer {
                writer.wake();
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match outgoing.end {
            End::Open => {
                outgoing.reader = Some(cx.waker().clone());
                Poll::Pending
            }
            End::Shutdown => Poll::Ready(None),
            End::Dropped => Poll::Ready(Some(Err("the tunnel's far side failed".into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        let outgoing = self.outgoing.lock().unwrap_or_else(|e| e.into_inner());
        outgoing.chunk.is_none() && outgoing.end == End::Shutdown
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        let mut outgoing = self.outgoing.lock().unwrap_or_else(|e| e.into_inner());
        outgoing.answer_gone = true;
        let writer = outgoing.writer.take();
        drop(outgoing);
        if let Some(writer) = writer {
            writer.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn request_body(chunks: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn reads_the_request_body_and_writes_become_the_answer_until_shutdown() {
        let (mut tunnel, answer) = tunnel(request_body(&[b"hello ", b"world"]));
        let collecting = tokio::spawn(answer.collect());
        let mut read = Vec::new();
        tunnel.read_to_end(&mut read).await.expect("read");
        assert_eq!(read, b"hello world");
        tunnel.write_all(b"one ").await.expect("write");
        tunnel.write_all(b"two").await.expect("write");
        tunnel.shutdown().await.expect("shutdown");
        let answer = collecting
            .await
            .expect("join")
            .expect("the answer ends cleanly");
        assert_eq!(answer.to_bytes(), &b"one two"[..]);
    }

    #[tokio::test]
    async fn a_tunnel_dropped_without_shutdown_fails_the_answer() {
        let (mut tunnel, answer) = tunnel(request_body(&[]));
        let collecting = tokio::spawn(answer.collect());
        tunnel.write_all(b"partial").await.expect("write");
        drop(tunnel);
        assert!(collecting.await.expect("join").is_err());
    }

    #[tokio::test]
    async fn a_write_waits_for_the_chunk_before_and_fails_once_the_answer_is_gone() {
        let (mut tunnel, mut answer) = tunnel(request_body(&[]));
        tunnel.write_all(b"first").await.expect("write");
        let mut second = Box::pin(async { tunnel.write_all(b"second").await });
        assert!(second.as_mut().now_or_never().is_none());
        let first = answer.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"first")));
        second
            .await
            .expect("the second write goes once the first is taken");
        drop(answer);
        assert_eq!(
            tunnel.write_all(b"third").await.map_err(|e| e.kind()),
            Err(io::ErrorKind::BrokenPipe)
        );
    }
}
