//! Closing an HTTP/1.1 client's connection without destroying the last answer. The agent
//! closes a connection while its client may still be sending: after answering a request whose
//! body it did not read whole (an instance's early 413, a refusal). The kernel answers a socket
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
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Bytes read per system call while lingering.
const DRAIN_READ: usize = 16 * 1024;

/// Where a served connection's socket goes when the server lets go of it.
type Slot = Arc<Mutex<Option<TcpStream>>>;

/// A client connection served by hyper that, once hyper drops it, hands its socket back to
/// [`Lingering::close`] instead of closing it. Upgraded connections keep it until their tunnel
/// ends and then close it plainly: nobody lingers for them.
#[derive(Debug)]
pub struct LingeringStream {
    stream: Option<TcpStream>,
    slot: Slot,
}

/// The other end of a [`LingeringStream`]: closes its socket in stages once the connection
/// has been served.
#[derive(Debug)]
pub struct Lingering {
    slot: Slot,
}

/// Wraps `stream` for serving; the [`Lingering`] closes it afterwards.
pub fn lingering(stream: TcpStream) -> (LingeringStream, Lingering) {
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

impl Lingering {
    /// Closes the served socket in stages: ends the write side, then reads and drops what the
    /// client still sends until it closes its side or `linger` has passed (at once when
    /// `shutdown` has fired: a draining agent does not wait for clients). Does nothing while
    /// the connection is still held (upgraded).
    pub async fn close(self, linger: Duration, shutdown: &CancellationToken) {
        let stream = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut stream) = stream else {
            return;
        };
        if linger.is_zero() || shutdown.is_cancelled() {
            return;
        }
        // hyper has usually sent its FIN already; a second shutdown is harmless.
        let _ = stream.shutdown().await;
        let drain = async {
            let mut buffer = vec![0_u8; DRAIN_READ];
            // Ends at the client's FIN, or at an error (its reset).
            while let Ok(read) = stream.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
            }
        };
        tokio::select! {
            () = drain => {}
            () = tokio::time::sleep(linger) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

impl LingeringStream {
    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = self.stream.take();
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringStream {
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
    use tokio::net::TcpListener;

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
                .close(Duration::from_secs(30), &CancellationToken::new())
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
        held.close(Duration::from_secs(30), &CancellationToken::new())
            .await;
        drop(stream);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        // The client never closes, but a draining agent does not wait for it.
        tokio::time::timeout(
            Duration::from_secs(10),
            lingering.close(Duration::from_secs(30), &shutdown),
        )
        .await
        .expect("no lingering at shutdown");
    }
}
