//! One DNS-over-TCP connection (RFC 7766): length-prefixed queries answered in order until the
//! client closes, stays idle for `dns.tcpIdleTimeout`, sends garbage, or the server stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::handler::{Handler, Step, Transport};

/// Serves one connection; `idle` bounds both the wait for a query and the time to write an
/// answer, so a slow or silent client cannot hold one of the `dns.maxTcpConnections` slots.
pub(crate) async fn serve(
    handler: Arc<Handler>,
    mut stream: TcpStream,
    peer: SocketAddr,
    idle: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            () = shutdown.cancelled() => break,
            frame = tokio::time::timeout(idle, read_frame(&mut stream)) => frame,
        };
        let packet = match frame {
            Ok(Ok(Some(packet))) => packet,
            // The client closed between queries.
            Ok(Ok(None)) => break,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "DNS over TCP connection ended");
                break;
            }
            Err(_elapsed) => {
                tracing::debug!(%peer, ?idle, "closing an idle DNS over TCP connection");
                break;
            }
        };
        let answer = match handler.step(&packet, peer.ip(), Transport::Tcp) {
            // After garbage the framing cannot be trusted: close.
            Step::Drop => break,
            Step::Reply(bytes) => bytes,
            Step::Forward(forwarding) => {
                let answered = tokio::select! {
                    () = shutdown.cancelled() => break,
                    answered = handler.forward(forwarding) => answered,
                };
                // No answer could be encoded: close rather than leave the client waiting.
                match answered {
                    Some(bytes) => bytes,
                    None => break,
                }
            }
        };
        match tokio::time::timeout(idle, write_frame(&mut stream, &answer)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "cannot send a DNS answer over TCP");
                break;
            }
            Err(_elapsed) => {
                tracing::debug!(%peer, "DNS over TCP client stopped reading");
                break;
            }
        }
    }
}

/// The next length-prefixed message, `None` at a clean end of stream. A zero length is an
/// empty packet, which the handler drops as malformed.
async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0; 2];
    match stream.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let mut packet = vec![0; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut packet).await?;
    Ok(Some(packet))
}

async fn write_frame(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let length = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("a DNS answer longer than 65535 bytes"))?;
    let mut frame = Vec::with_capacity(message.len() + 2);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(message);
    stream.write_all(&frame).await
}
