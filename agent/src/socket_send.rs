//! A TCP stream whose gathered writes are socket sends (`sendmsg`), not file writes (`writev`).
//! tokio hands a vectored write to `writev`, which enters the kernel's file layer first
//! (position lock, access checks, file notification) before it reaches the socket; `sendmsg`
//! goes to the socket at once. On a proxied HTTP/1.1 request that layer cost about a third of a
//! microsecond per write, measured with perf (decision 95).
//! Plain writes already go through `send`; reads, through `recv`.
//! Small writes are held back until the worker's round of tasks ends (`write_behind`), so the
//! answers of a round leave together.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::write_behind::Outbox;

/// `TcpStream`, its writes sent with `send` and `sendmsg`, small ones held back until the
/// worker's round of tasks ends (`write_behind`).
#[derive(Debug)]
pub struct SocketSend {
    read: OwnedReadHalf,
    write: Arc<Outbox>,
}

impl SocketSend {
    /// Wraps `stream`.
    pub fn new(stream: TcpStream) -> Self {
        let (read, write) = stream.into_split();
        SocketSend {
            read,
            write: Arc::new(Outbox::new(write)),
        }
    }

    /// The stream, for what only a `TcpStream` offers (`try_read`, addresses).
    pub fn get_ref(&self) -> &TcpStream {
        self.read.as_ref()
    }
}

impl AsyncRead for SocketSend {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
    }
}

impl AsyncWrite for SocketSend {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write.poll_write(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write.poll_write(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (SocketSend, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (near, far) = tokio::join!(TcpStream::connect(address), listener.accept());
        (SocketSend::new(near.unwrap()), far.unwrap().0)
    }

    /// Sends `pieces` whole with gathered writes, advancing past what each one took.
    async fn send_gathered_all(near: &mut SocketSend, pieces: &[&[u8]]) -> usize {
        let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        let mut sent = 0;
        while !rest.is_empty() {
            let written = near.write_vectored(rest).await.unwrap();
            assert!(written > 0, "a gathered write took nothing");
            sent += written;
            IoSlice::advance_slices(&mut rest, written);
        }
        sent
    }

    async fn read_all(far: &mut TcpStream) -> Vec<u8> {
        let mut received = Vec::new();
        far.read_to_end(&mut received).await.unwrap();
        received
    }

    #[tokio::test]
    async fn gathered_pieces_arrive_in_order_and_whole() {
        let (mut near, mut far) = pair().await;
        let pieces: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![b'a' + i; 1000 * (usize::from(i) + 1)])
            .collect();
        let borrowed: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let sent = send_gathered_all(&mut near, &borrowed).await;
        near.shutdown().await.unwrap();
        assert_eq!(sent, 15_000);
        assert_eq!(read_all(&mut far).await, pieces.concat());
    }

    #[tokio::test]
    async fn a_gathered_write_to_a_full_socket_waits_for_the_reader() {
        let (mut near, mut far) = pair().await;
        // Far more than the socket buffers hold: the sends must wait for the reader.
        let first = vec![1u8; 4 * 1024 * 1024];
        let second = vec![2u8; 4 * 1024 * 1024];
        let writer = async {
            let sent = send_gathered_all(&mut near, &[&first, &[], &second]).await;
            near.shutdown().await.unwrap();
            sent
        };
        let (sent, received) = tokio::join!(writer, read_all(&mut far));
        assert_eq!(sent, first.len() + second.len());
        assert_eq!(received, [first, second].concat());
    }

    #[tokio::test]
    async fn a_gathered_write_to_a_closed_peer_fails() {
        let (mut near, far) = pair().await;
        drop(far);
        let piece = [1u8; 64 * 1024];
        let mut failed = None;
        // The first sends may still be taken before the peer's reset arrives.
        for _ in 0..100 {
            match near
                .write_vectored(&[IoSlice::new(&piece), IoSlice::new(&piece)])
                .await
            {
                Ok(_) => tokio::task::yield_now().await,
                Err(error) => {
                    failed = Some(error.kind());
                    break;
                }
            }
        }
        assert!(
            matches!(
                failed,
                Some(io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
            ),
            "{failed:?}"
        );
    }
}
