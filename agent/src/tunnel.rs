//! Agent-to-agent transport: one pooled, multiplexed HTTP/2 connection per peer agent over
//! mutual TLS (this node's certificate; the peer must present the node identity the endpoint
//! names), opened on first use and replaced when it dies or refuses a request unprocessed
//! (GOAWAY). The inbound side uses the same pool, in plaintext, toward local HTTP/2 instances
//! on this host. Never opens a second connection while one is opening, and never leaves a
//! connection running after [`Tunnels::close`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyphae_policies::ErrorChain;
use hyphae_policies::tls::ServerIdentity;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::Body;
use crate::circuit::Limit;
use crate::error::{Cause, ProxyError};
use crate::identity::IdentitySlot;

/// Settings of peer connections.
#[derive(Clone, Debug)]
pub struct TunnelSettings {
    /// HTTP/2 keep-alive ping interval, so a dead peer is noticed without traffic.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keep_alive_timeout: Duration,
    /// Largest header list accepted from the peer.
    pub max_header_list_size: u32,
}

/// Default ping interval for peer connections.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default ping timeout for peer connections.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The pending-request limit of the service a request is for.
pub struct Pending<'a> {
    /// Requests of the service waiting now.
    pub limit: &'a Limit,
    /// `circuitBreaker.maxPending`.
    pub max: u32,
    /// The service, for the error.
    pub service: &'a str,
}

/// A slot per peer. A request finds the open connection under a plain lock, never held across
/// an await; the async lock is taken only to open a connection, so concurrent first requests
/// share one handshake.
#[derive(Default)]
struct PeerSlot {
    connection: Mutex<Connection>,
    connecting: tokio::sync::Mutex<()>,
}

/// The slot's connection, numbered so a request can retire the one that refused it without
/// retiring a newer one another request opened meanwhile.
#[derive(Default)]
struct Connection {
    sender: Option<SendRequest<Body>>,
    number: u64,
}

impl PeerSlot {
    /// The connection and its number, while it is open.
    fn open(&self) -> Option<(SendRequest<Body>, u64)> {
        let connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        connection
            .sender
            .as_ref()
            .filter(|s| !s.is_closed())
            .map(|s| (s.clone(), connection.number))
    }

    /// Makes `sender` the slot's connection; its number.
    fn replace(&self, sender: SendRequest<Body>) -> u64 {
        let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        connection.number += 1;
        connection.sender = Some(sender);
        connection.number
    }

    /// Stops handing out connection `number` (its in-flight requests go on), so the next
    /// request opens a new one.
    fn retire(&self, number: u64) {
        let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        if connection.number == number {
            connection.sender = None;
        }
    }
}

/// A peer: its address and the node it must prove to be (any node of the mesh when the
/// endpoint does not name one).
type PeerKey = (SocketAddr, Option<Arc<str>>);

/// The pool of peer connections.
pub struct Tunnels {
    settings: TunnelSettings,
    peers: Mutex<HashMap<PeerKey, Arc<PeerSlot>>>,
    /// Toward peer agents: the identity whose certificate connections present (none yet:
    /// every connect fails); `None` toward local instances, which are reached in plaintext.
    identity: Option<IdentitySlot>,
    /// Owns each connection's driver task.
    connections: TaskTracker,
    /// Ends every connection once the calls that used them have drained.
    closing: CancellationToken,
}

impl Tunnels {
    /// An empty pool of plaintext connections, toward local instances on this host.
    pub fn new(settings: TunnelSettings) -> Self {
        Tunnels::with_identity(settings, None)
    }

    /// An empty pool of mutual-TLS connections toward peer agents, presenting the
    /// certificate in `identity` once it holds one.
    pub fn to_peers(settings: TunnelSettings, identity: IdentitySlot) -> Self {
        Tunnels::with_identity(settings, Some(identity))
    }

    fn with_identity(settings: TunnelSettings, identity: Option<IdentitySlot>) -> Self {
        Tunnels {
            settings,
            identity,
            peers: Mutex::new(HashMap::new()),
            connections: TaskTracker::new(),
            closing: CancellationToken::new(),
        }
    }

    /// The identity connections present toward peer agents; `None` for the pool toward local
    /// instances.
    pub fn identity(&self) -> Option<&IdentitySlot> {
        self.identity.as_ref()
    }

    /// Closes every peer connection and waits until their tasks have ended. Pooled
    /// connections live as long as the agent, so the daemon calls this after the calls that
    /// used them have drained.
    pub async fn close(&self) {
        self.closing.cancel();
        self.connections.close();
        self.connections.wait().await;
    }

    /// Sends `request` to `peer` (a peer agent, which must prove to be `node` when given, or a
    /// local HTTP/2 instance), connecting first if needed. While the request waits for a connection or a free stream it holds a slot of
    /// `pending` (when given); when none is free it is refused at once. A request the peer did
    /// not process fails with [`ProxyError::Unprocessed`], and the connection that refused it
    /// is not used again, so a resend goes on a new one.
    pub async fn send(
        &self,
        peer: SocketAddr,
        node: Option<&str>,
        connect_timeout: Duration,
        request: Request<Body>,
        pending: Option<Pending<'_>>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let waiting = match pending {
            Some(pending) => Some(pending.limit.try_acquire(pending.max).ok_or_else(|| {
                ProxyError::Overloaded {
                    service: pending.service.to_string(),
                    limit: "max-pending",
                }
            })?),
            None => None,
        };
        let (slot, mut sender, number) = self.sender(peer, node, connect_timeout).await?;
        let result = match sender.ready().await {
            // A connection that cannot take a request has closed: this one was never sent.
            Err(error) => Err(ProxyError::Unprocessed(Cause::new(error))),
            Ok(()) => {
                drop(waiting);
                sender.send_request(request).await.map_err(|error| {
                    if crate::retry::is_unprocessed(&error) {
                        ProxyError::Unprocessed(Cause::new(error))
                    } else {
                        ProxyError::Reset(Cause::new(error))
                    }
                })
            }
        };
        if let Err(ProxyError::Unprocessed(_)) = &result {
            slot.retire(number);
        }
        result
    }

    /// The slot of `peer` with its open connection and that connection's number.
    async fn sender(
        &self,
        peer: SocketAddr,
        node: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<(Arc<PeerSlot>, SendRequest<Body>, u64), ProxyError> {
        let slot = {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(peers.entry((peer, node.map(Arc::from))).or_default())
        };
        if let Some((sender, number)) = slot.open() {
            return Ok((slot, sender, number));
        }
        let connecting = slot.connecting.lock().await;
        // Another request may have connected while this one waited.
        if let Some((sender, number)) = slot.open() {
            drop(connecting);
            return Ok((slot, sender, number));
        }
        // Boxed: the handshake's state is large and needed once per connection, so it should
        // not make every request's future larger.
        let sender = tokio::time::timeout(connect_timeout, Box::pin(self.connect(peer, node)))
            .await
            .map_err(|_| ProxyError::ConnectTimeout(peer.to_string()))??;
        let number = slot.replace(sender.clone());
        drop(connecting);
        Ok((slot, sender, number))
    }

    async fn connect(
        &self,
        peer: SocketAddr,
        node: Option<&str>,
    ) -> Result<SendRequest<Body>, ProxyError> {
        let failed = |reason: Cause| ProxyError::ConnectFailed {
            address: peer.to_string(),
            reason,
        };
        let stream = TcpStream::connect(peer)
            .await
            .map_err(|e| failed(Cause::new(e)))?;
        stream
            .set_nodelay(true)
            .map_err(|e| failed(Cause::new(e)))?;
        let Some(slot) = &self.identity else {
            return self.handshake(peer, TokioIo::new(stream)).await;
        };
        let identity = slot
            .load_full()
            .ok_or_else(|| failed("this agent has no certificate yet".into()))?;
        let server = node.map_or(ServerIdentity::AnyNode, |node| {
            ServerIdentity::Node(node.to_string())
        });
        let name = server
            .server_name()
            .ok_or_else(|| failed(format!("`{node:?}` cannot be a node identity").into()))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&identity.peers))
            .connect(name, stream)
            .await
            .map_err(|e| failed(Cause::new(e)))?;
        self.handshake(peer, TokioIo::new(stream)).await
    }

    /// The HTTP/2 handshake on `io`; the connection's driver runs until it ends or the pool
    /// closes.
    async fn handshake<T>(&self, peer: SocketAddr, io: T) -> Result<SendRequest<Body>, ProxyError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.settings.keep_alive_interval)
            .keep_alive_timeout(self.settings.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .max_header_list_size(self.settings.max_header_list_size)
            .handshake(io)
            .await
            .map_err(|e| ProxyError::ConnectFailed {
                address: peer.to_string(),
                reason: Cause::new(e),
            })?;
        let closing = self.closing.clone();
        self.connections.spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::info!(%peer, error = %ErrorChain(&error), "peer connection closed");
                    }
                }
                () = closing.cancelled() => tracing::debug!(%peer, "peer connection closed at shutdown"),
            }
        });
        tracing::debug!(%peer, "connected to peer agent");
        Ok(sender)
    }
}
