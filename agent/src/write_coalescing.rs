//! Writes that wait one turn of the scheduler, so an HTTP/2 connection carrying many calls
//! sends the frames of every call that finished in the same round together: one TLS record and
//! one system call, not one apiece. A call's answer wakes its connection's task; tokio runs a
//! task woken by a running task next (its LIFO slot), before the other calls of the round have
//! queued theirs, so without this each answer went alone (decision 58, replacing the inbound
//! port's budget rule of decision 55).

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An I/O whose first write after each flush waits for one turn of the scheduler.
#[derive(Debug)]
pub struct WriteCoalescing<T> {
    io: T,
    /// This write cycle has already waited its turn: write through until the next flush.
    waited: bool,
}

impl<T> WriteCoalescing<T> {
    /// Wraps `io`.
    pub fn new(io: T) -> Self {
        WriteCoalescing { io, waited: false }
    }

    /// The wrapped I/O.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Waits one turn the first time a cycle writes: the task is woken at once and goes to
    /// the back of the run queue, behind the calls finishing in this round.
    fn wait_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.waited {
            return Poll::Ready(());
        }
        self.waited = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteCoalescing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteCoalescing<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.wait_turn(cx));
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.wait_turn(cx));
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let flushed = std::task::ready!(Pin::new(&mut self.io).poll_flush(cx));
        self.waited = false;
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use std::future::Future;

    /// Counts the writes that reach the I/O below.
    struct Counting {
        inner: tokio::io::DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn the_first_write_of_each_cycle_waits_one_turn_then_bytes_pass_unchanged() {
        let (near, mut far) = tokio::io::duplex(1024);
        let writes = Arc::new(AtomicUsize::new(0));
        let mut io = WriteCoalescing::new(Counting {
            inner: near,
            writes: Arc::clone(&writes),
        });
        let mut first = std::pin::pin!(io.write_all(b"hello "));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(first.as_mut().poll(&mut cx).is_pending(), "waits its turn");
        assert_eq!(writes.load(Ordering::Relaxed), 0, "nothing written yet");
        first.await.unwrap();
        io.write_all(b"world").await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(writes.load(Ordering::Relaxed), 2, "then writes go through");
        let mut read = [0u8; 11];
        far.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"hello world");

        // After a flush, the next write waits again.
        let mut next = std::pin::pin!(io.write_all(b"!"));
        assert!(next.as_mut().poll(&mut cx).is_pending());
        next.await.unwrap();
    }
}
