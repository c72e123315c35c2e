//! Byte pipes between two streams (opaque TCP, upgraded connections), with half-close and an
//! idle timeout so an abandoned connection never lives forever. Every byte stream of the data
//! path, outbound and inbound, is spliced here; nothing here spawns or decides where bytes go.

use std::time::Duration;

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of each direction's copy buffer.
const PIPE_BUFFER: usize = 16 * 1024;

/// What a finished pipe carried, and why it ended if not by both sides closing.
#[derive(Debug)]
pub struct Piped {
    /// Bytes copied from `a` to `b`.
    pub a_to_b: u64,
    /// Bytes copied from `b` to `a`.
    pub b_to_a: u64,
    /// The error or idle timeout that ended it, if any.
    pub error: Option<std::io::Error>,
}

/// Waits until both sides are ready (an HTTP upgrade has completed; an open socket is ready at
/// once), then pipes them as [`pipe`] does. An error means a side never became a stream.
pub async fn splice<A, B>(
    a: impl Future<Output = Result<A, hyper::Error>>,
    b: impl Future<Output = Result<B, hyper::Error>>,
    idle: Duration,
) -> Result<Piped, hyper::Error>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (a, b) = tokio::try_join!(a, b)?;
    Ok(pipe(a, b, idle).await)
}

/// The connection an HTTP upgrade hands over, as a tokio stream for [`splice`].
pub async fn upgraded(upgrade: OnUpgrade) -> Result<TokioIo<Upgraded>, hyper::Error> {
    upgrade.await.map(TokioIo::new)
}

/// Copies both ways until both sides have closed, an error, or nothing has moved for `idle`.
pub async fn pipe<A, B>(a: A, b: B, idle: Duration) -> Piped
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = 0;
    let mut b_to_a = 0;
    let error = copy_both_ways(a, b, idle, &mut a_to_b, &mut b_to_a)
        .await
        .err();
    Piped {
        a_to_b,
        b_to_a,
        error,
    }
}

async fn copy_both_ways<A, B>(
    a: A,
    b: B,
    idle: Duration,
    a_to_b: &mut u64,
    b_to_a: &mut u64,
) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let mut a_buf = vec![0u8; PIPE_BUFFER];
    let mut b_buf = vec![0u8; PIPE_BUFFER];
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        tokio::select! {
            read = a_read.read(&mut a_buf), if a_open => {
                pass_on(read?, &a_buf, &mut b_write, &mut a_open, a_to_b).await?;
            }
            read = b_read.read(&mut b_buf), if b_open => {
                pass_on(read?, &b_buf, &mut a_write, &mut b_open, b_to_a).await?;
            }
            () = tokio::time::sleep(idle) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no bytes moved for {idle:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// Passes on one read of `n` bytes from `buf` in one direction: the bytes to `to`, counted in
/// `moved`; or, when the read found the end, the end as a write shutdown that closes the
/// direction.
async fn pass_on<W: AsyncWrite + Unpin>(
    n: usize,
    buf: &[u8],
    to: &mut W,
    open: &mut bool,
    moved: &mut u64,
) -> std::io::Result<()> {
    if n == 0 {
        *open = false;
        to.shutdown().await
    } else {
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        *moved += n as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_both_ways_and_propagates_close() {
        let (client, proxy_a) = tokio::io::duplex(64);
        let (proxy_b, server) = tokio::io::duplex(64);
        let piping = tokio::spawn(pipe(proxy_a, proxy_b, Duration::from_secs(5)));
        let (mut client, mut server) = (client, server);
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        drop(client);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        drop(server);
        let piped = piping.await.unwrap();
        assert!(piped.error.is_none(), "{:?}", piped.error);
        assert_eq!((piped.a_to_b, piped.b_to_a), (4, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pipe_times_out() {
        let (_client, proxy_a) = tokio::io::duplex(64);
        let (proxy_b, _server) = tokio::io::duplex(64);
        let piped = pipe(proxy_a, proxy_b, Duration::from_secs(1)).await;
        assert_eq!(
            piped.error.map(|e| e.kind()),
            Some(std::io::ErrorKind::TimedOut)
        );
    }
}
