//! A client connection whose writes fail once the client has taken nothing for the stream
//! idle timeout. A client that stops reading (a slow-read attack, or a stuck app) otherwise
//! held its connection, the answer's instance connection and the call's `maxRequests` place
//! for good: the answer's body is not asked for while the client's socket is full, so the
//! call's own idle timeout (`watched_body`) never sees the wait. nginx bounds it with
//! `send_timeout`, haproxy with `timeout client`, Envoy with `stream_idle_timeout`, which
//! this shares. Only a write that waits counts; a client that reads slowly but reads moves it.
//! Over HTTP/2 this catches a client that takes nothing at all; one stream whose window a
//! client never opens stays bounded by the stream limits instead.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::idle_timer::IdleTimer;

/// `S`, whose writes fail with `TimedOut` after waiting the whole bound for the client.
#[derive(Debug)]
pub struct SendTimeout<S> {
    inner: S,
    timer: IdleTimer,
}

impl<S> SendTimeout<S> {
    /// `inner`, letting a write wait for the client `limit` at most (`Duration::ZERO`: for
    /// ever).
    pub fn new(inner: S, limit: Duration) -> Self {
        SendTimeout {
            inner,
            timer: IdleTimer::new(limit),
        }
    }

    /// What a write that may not go shows: the result, or the timeout once it has passed.
    fn waited<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match written {
            Poll::Ready(result) => {
                self.timer.moved();
                Poll::Ready(result)
            }
            Poll::Pending => match self.timer.poll_expired(cx, || None) {
                Poll::Ready(()) => {
                    tracing::info!(limit = ?self.timer.idle(), "the client took nothing of its answer for the stream idle timeout; closing its connection");
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took nothing for limits.streamIdleTimeout",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.waited(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.waited(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        this.waited(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_never_takes_fails_after_the_limit_and_a_slow_reader_is_kept() {
        // A pipe of 64 bytes: the writer waits as soon as the reader falls behind.
        let (client, served) = tokio::io::duplex(64);
        let mut served = SendTimeout::new(served, Duration::from_secs(10));
        let (mut client_read, _client_write) = tokio::io::split(client);
        // A slow reader: 64 bytes every 9 s keeps the writer going.
        let reader = tokio::spawn(async move {
            let mut piece = [0_u8; 64];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(9)).await;
                client_read.read_exact(&mut piece).await.expect("read");
            }
            client_read
        });
        served
            .write_all(&[7_u8; 64 * 5])
            .await
            .expect("a slow reader still reads");
        let _stopped = reader.await.expect("the reader ran");
        // Now nobody reads: the next write waits the limit and fails.
        let started = Instant::now();
        let error = served
            .write_all(&[7_u8; 65])
            .await
            .expect_err("nobody reads");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
