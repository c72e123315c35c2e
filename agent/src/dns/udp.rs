//! The DNS server's UDP side: one receive loop answering each datagram in turn; only forwarded
//! queries get a task of their own (bounded by `dns.maxInFlightForwards`). It never answers a
//! packet that is not a query, and never to port 0.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{Handler, Step, Transport};
use super::wire::MAX_TCP_MESSAGE_BYTES;

/// Pause after a failed receive, so a persistent socket error does not spin a core.
const RECEIVE_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Answers datagrams on `socket` until `shutdown`; forwarded queries run in `tracker`.
pub(crate) async fn serve(
    socket: Arc<UdpSocket>,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    // Any datagram fits (a longer one than a DNS message can be is cut and fails to parse).
    let mut buffer = vec![0; MAX_TCP_MESSAGE_BYTES];
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => break,
            received = socket.recv_from(&mut buffer) => received,
        };
        let (length, peer) = match received {
            Ok(received) => received,
            Err(error) => {
                tracing::warn!(%error, "receiving a DNS datagram failed");
                tokio::time::sleep(RECEIVE_ERROR_BACKOFF).await;
                continue;
            }
        };
        if peer.port() == 0 {
            tracing::debug!(%peer, "ignored a DNS datagram from port 0, which cannot be answered");
            continue;
        }
        let packet = buffer.get(..length).unwrap_or_default();
        match handler.step(packet, peer.ip(), Transport::Udp) {
            Step::Drop => {}
            Step::Reply(bytes) => send(&socket, &bytes, peer).await,
            Step::Forward(forwarding) => {
                let (socket, handler, shutdown) =
                    (Arc::clone(&socket), Arc::clone(&handler), shutdown.clone());
                tracker.spawn(async move {
                    let answered = tokio::select! {
                        () = shutdown.cancelled() => None,
                        answered = handler.forward(forwarding) => answered,
                    };
                    if let Some(bytes) = answered {
                        send(&socket, &bytes, peer).await;
                    }
                });
            }
        }
    }
    tracing::debug!("DNS over UDP stopped");
}

async fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, peer).await {
        tracing::debug!(%peer, %error, "cannot send a DNS answer");
    }
}
