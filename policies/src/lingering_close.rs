//! Closing an HTTP/1.1 client's connection without destroying the last answer. A server
//! closes a connection while its client may still be sending: after answering a request whose
//! body it did not read whole (an instance's early 413 through the agent, a body past a
//! control plane node's limit, a refusal). Shared by the agent's ports and the control plane's,
//! plain TCP or TLS alike. The kernel answers a socket
//! closed with unread data with a reset, and a client still writing its upload then fails on
//! the write (curl: "Send failure: Broken pipe") without reading the answer that was already
//! on its way. RFC 9112 §9.6 asks a server to close in stages instead, as nginx's
//! `lingering_close` and haproxy do: the write side first, then read and drop what still
//! arrives for a while, so the client sees the answer and the end of the stream.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Bytes read per system call while lingering.
const DRAIN_READ: usize = 16 * 1024;

/// Where a served connection's socket goes when the server lets go of it. Boxed then, so the
/// slot costs a connection a few bytes while it is served, not a second stream's size (a TLS
/// stream's is over a kilobyte, and a control plane node holds one per watching agent).
type Slot<S> = Arc<Mutex<Option<Box<S>>>>;

/// A client connection served by hyper that, once hyper drops it, hands its socket back to
/// [`Lingering::close`] instead of closing it. Upgraded connections keep it until their tunnel
/// ends and then close it plainly: nobody lingers for them.
#[derive(Debug)]
pub struct LingeringStream<S> {
    stream: Option<S>,
    slot: Slot<S>,
}

/// The other end of a [`LingeringStream`]: closes its socket in stages once the connection
/// has been served.
#[derive(Debug)]
pub struct Lingering<S> {
    slot: Slot<S>,
}

/// Wraps `stream` for serving; the [`Lingering`] closes it afterwards.
pub fn lingering<S>(stream: S) -> (LingeringStream<S>, Lingering<S>) {
    let slot = Slot::default();
    let lingering = Lingering {
        slot: Arc::clone(&slot),
    };
    (
        LingeringStream {
            stream: Some(stream),
            slot,
        },
        lingering,
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> Lingering<S> {
    /// Closes the served connection in stages: ends the write side (over TLS, with its
    /// close_notify), then reads and drops what the client still sends until it closes its side
    /// or `linger` has passed, or `stop` (the server's shutdown) completes: a draining server
    /// does not wait for clients. Does nothing while the connection is still held (upgraded).
    pub async fn close(self, linger: Duration, stop: impl Future<Output = ()>) {
        let stream = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut stream) = stream else {
            return;
        };
        if linger.is_zero() {
            return;
        }
        let linger_out = async {
            // Usually the write side has ended already; a second shutdown is harmless. Inside
            // the time bound: over TLS it writes a close_notify, which a client that reads
            // nothing could hold up.
            let _ = stream.shutdown().await;
            let mut buffer = vec![0_u8; DRAIN_READ];
            // Ends at the client's end of stream, or at an error (its reset).
            while let Ok(read) = stream.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
            }
        };
        // The stop first: a server already draining does not start to linger.
        tokio::select! {
            biased;
            () = stop => {}
            () = linger_out => {}
            () = tokio::time::sleep(linger) => {}
        }
    }
}

impl<S> LingeringStream<S> {
    fn stream(&mut self) -> io::Result<&mut S> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<S> Drop for LingeringStream<S> {
    fn drop(&mut self) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = self.stream.take().map(Box::new);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LingeringStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LingeringStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair: (the client's end, the served end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (client, served) = tokio::join!(TcpStream::connect(address), listener.accept());
        (client.expect("connect"), served.expect("accept").0)
    }

    #[tokio::test]
    async fn a_client_still_sending_gets_the_answer_and_then_the_end_not_a_reset() {
        let (mut client, served) = pair().await;
        let (mut stream, lingering) = lingering(served);
        // The client has sent data the server never reads, as an upload after an early answer.
        client.write_all(&[7; 4096]).await.expect("client writes");
        stream.write_all(b"answer").await.expect("server answers");
        drop(stream);
        let closing = tokio::spawn(async move {
            lingering
                .close(Duration::from_secs(30), std::future::pending())
                .await;
        });
        // The client keeps sending for a while: every write is taken, none is reset.
        for _ in 0..64 {
            client.write_all(&[7; 16 * 1024]).await.expect("no reset");
        }
        let mut answer = Vec::new();
        client.shutdown().await.expect("client's FIN");
        client
            .read_to_end(&mut answer)
            .await
            .expect("answer, then EOF");
        assert_eq!(answer, b"answer");
        tokio::time::timeout(Duration::from_secs(10), closing)
            .await
            .expect("lingering ends at the client's FIN")
            .expect("lingering task");
    }

    #[tokio::test]
    async fn a_connection_still_held_is_left_alone_and_shutdown_skips_lingering() {
        let (_client, served) = pair().await;
        let (stream, lingering) = lingering(served);
        let held = Lingering {
            slot: Arc::clone(&lingering.slot),
        };
        // Still held (an upgraded connection): nothing to close.
        held.close(Duration::from_secs(30), std::future::pending())
            .await;
        drop(stream);
        // The client never closes, but a draining server does not wait for it.
        tokio::time::timeout(
            Duration::from_secs(10),
            lingering.close(Duration::from_secs(30), std::future::ready(())),
        )
        .await
        .expect("no lingering at shutdown");
    }
}
