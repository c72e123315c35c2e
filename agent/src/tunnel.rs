//! Agent-to-agent transport: pooled, multiplexed HTTP/2 connections to each peer agent over
//! mutual TLS (this node's certificate; the peer must present the node identity the endpoint
//! names), opened on first use. The inbound side uses the same pool, in plaintext, toward local
//! HTTP/2 instances on this host. A destination has one connection until every one it has is
//! at its stream limit (the server's `SETTINGS_MAX_CONCURRENT_STREAMS` or
//! `limits.maxStreamsPerUpstreamConnection`, the lower), then another, up to
//! `limits.maxConnectionsPerUpstream`; a connection that received GOAWAY or refused a request
//! drains (decision 48). Never opens two connections to one destination at once, and never
//! leaves a connection running after [`Tunnels::close`].

mod capacity;
mod frames;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyphae_policies::ErrorChain;
use hyphae_policies::tls::ServerIdentity;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::capacity::{Choice, ConnectionLoad, Queued, StreamSlot, choose};
use self::frames::Watched;
use crate::body::Body;
use crate::circuit::Limit;
use crate::error::{Cause, ProxyError};
use crate::identity::IdentitySlot;
use crate::socket_send::SocketSend;
use crate::state::FastMap;
use crate::write_coalescing::WriteCoalescing;

/// Settings of the pooled HTTP/2 connections, read once at start.
#[derive(Clone, Debug)]
pub struct TunnelSettings {
    /// HTTP/2 keep-alive ping interval, so a dead peer is noticed without traffic.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keep_alive_timeout: Duration,
    /// Largest header list accepted from the peer.
    pub max_header_list_size: u32,
    /// Most streams one connection carries at once, even when its server allows more
    /// (`limits.maxStreamsPerUpstreamConnection`).
    pub max_streams_per_connection: u32,
    /// Most connections to one destination (`limits.maxConnectionsPerUpstream`); beyond it
    /// requests wait on the least loaded one.
    pub max_connections_per_destination: u32,
    /// A connection beyond a destination's first that carried no stream for this long is
    /// closed (`limits.upstreamConnectionIdleTimeout`).
    pub extra_connection_idle_timeout: Duration,
}

/// The sweeper of idle extra connections looks every half idle timeout, never more often than
/// this.
const SWEEP_EVERY_MIN: Duration = Duration::from_millis(10);

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

/// A destination's connections. A request takes a stream under a plain lock, never held
/// across an await; the async lock is taken only to open a connection, so concurrent requests
/// that find every connection full share one handshake, and its failure: requests that waited
/// for an attempt that failed fail with it, rather than each trying in turn (a destination
/// that accepts connections but never answers would otherwise make the last of N waiters wait
/// N connect timeouts, past its request timeout, where a retry elsewhere could have served it).
#[derive(Default)]
struct PeerSlot {
    connections: Mutex<Vec<Pooled>>,
    /// Held while a connection is being opened; holds when the last attempt failed, and why.
    connecting: tokio::sync::Mutex<Option<(Instant, ProxyError)>>,
}

/// A connection given to one request: its sender, the request's stream in its count, and its
/// place in the connection's queue when the connection was full.
type Taken = (SendRequest<Body>, StreamSlot, Option<Queued>);

/// An open connection of a destination and its live load.
struct Pooled {
    sender: SendRequest<Body>,
    load: Arc<ConnectionLoad>,
}

impl PeerSlot {
    /// A stream for one request on the connection [`choose`] picks, or `None` when it says to
    /// open another. Connections that closed or drain are dropped from the list first (their
    /// requests go on).
    fn take(&self, settings: &TunnelSettings) -> Option<Taken> {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections.retain(|c| !c.load.is_draining() && !c.sender.is_closed());
        close_idle_extras(&mut connections, settings.extra_connection_idle_timeout);
        let limit = settings.max_streams_per_connection;
        let loads = connections
            .iter()
            .map(|c| (c.load.in_flight(), c.load.capacity(limit)));
        match choose(loads, settings.max_connections_per_destination as usize) {
            Choice::Use(index) => {
                let chosen = &connections[index];
                Some((chosen.sender.clone(), chosen.load.take_stream(), None))
            }
            Choice::Queue(index) => {
                let chosen = &connections[index];
                let (stream, queued) = chosen.load.queue_stream();
                Some((chosen.sender.clone(), stream, Some(queued)))
            }
            Choice::Open => None,
        }
    }

    /// A stream on the least loaded open connection, whatever the limits: for when opening
    /// another failed.
    fn take_any(&self) -> Option<Taken> {
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections
            .iter()
            .filter(|c| !c.load.is_draining() && !c.sender.is_closed())
            .min_by_key(|c| c.load.in_flight())
            .map(|c| (c.sender.clone(), c.load.take_stream(), None))
    }

    /// Closes the connections beyond the first that have been idle for `timeout`.
    fn sweep(&self, timeout: Duration) {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        close_idle_extras(&mut connections, timeout);
    }

    /// Adds a new connection and takes its first stream; also says whether it is an extra one
    /// (the destination has others).
    fn add(&self, sender: SendRequest<Body>, load: Arc<ConnectionLoad>) -> (StreamSlot, bool) {
        let stream = load.take_stream();
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections.push(Pooled { sender, load });
        (stream, connections.len() > 1)
    }
}

/// Drops every connection but the first that has carried no stream for `timeout`: a burst's
/// extra connections close once it has passed. Called with the slot's lock held, so no request
/// takes a stream on one meanwhile; hyper closes a connection (GOAWAY) once its last
/// `SendRequest` is dropped and no stream is open.
fn close_idle_extras(connections: &mut Vec<Pooled>, timeout: Duration) {
    let mut index = 0;
    connections.retain(|c| {
        index += 1;
        index == 1 || c.load.idle_for().is_none_or(|idle| idle < timeout)
    });
}

/// The slots of one address, each with the node it must prove to be (`None`: any node of the
/// mesh, when the endpoint names none; always `None` toward instances). Almost always one.
type AddressSlots = Vec<(Option<Arc<str>>, Arc<PeerSlot>)>;

/// A pool of HTTP/2 connections: toward peer agents over mutual TLS, or toward this host's
/// HTTP/2 instances in plaintext.
pub struct Tunnels {
    settings: TunnelSettings,
    /// Each address's slots, looked up by the borrowed node name, so finding one allocates
    /// nothing. Shared with the sweeper of idle extra connections.
    peers: Arc<Mutex<FastMap<SocketAddr, AddressSlots>>>,
    /// Whether the sweeper runs (started with the first extra connection).
    sweeping: std::sync::atomic::AtomicBool,
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
            peers: Arc::default(),
            sweeping: std::sync::atomic::AtomicBool::new(false),
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
    /// local HTTP/2 instance), on a connection with a free stream or a new one. While the
    /// request waits for a connection, or at the connection cap for a stream, it holds a slot
    /// of `pending` (when given); when none is free it is refused at once. A request the peer
    /// did not process fails with [`ProxyError::Unprocessed`], and the connection that refused
    /// it drains, so a resend goes on another. The answer's body holds the request's stream in
    /// its connection's count until it ends.
    pub async fn send(
        &self,
        peer: SocketAddr,
        node: Option<&str>,
        connect_timeout: Duration,
        request: Request<Body>,
        pending: Option<Pending<'_>>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        let waiting = match pending {
            Some(pending) => Some(pending.limit.try_acquire(pending.max).ok_or_else(|| {
                ProxyError::Overloaded {
                    service: pending.service.to_string(),
                    limit: "max-pending",
                }
            })?),
            None => None,
        };
        let (mut sender, stream, queued) = self.stream(peer, node, connect_timeout).await?;
        if let Some(queued) = queued {
            // Every connection is full and there are as many as allowed: the request waits
            // for a stream, still counted as pending.
            queued.turn(self.settings.max_streams_per_connection).await;
        }
        drop(waiting);
        match sender.send_request(request).await {
            Ok(response) => {
                // An accepted CONNECT's stream lives on as the upgraded connection.
                let upgraded = response
                    .extensions()
                    .get::<hyper::upgrade::OnUpgrade>()
                    .is_some();
                Ok(response.map(|body| PooledBody::new(body, stream, upgraded)))
            }
            Err(error) if crate::retry::is_unprocessed(&error) => {
                stream.connection().drain();
                Err(ProxyError::Unprocessed(Cause::new(error)))
            }
            Err(error) => Err(ProxyError::Reset(Cause::new(error))),
        }
    }

    /// A stream for one request to `peer`: on an open connection with room, else on a new
    /// one, else (at the cap, or when a new one cannot be opened) queued on the least loaded.
    async fn stream(
        &self,
        peer: SocketAddr,
        node: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<Taken, ProxyError> {
        let slot = self.slot(peer, node);
        if let Some(taken) = slot.take(&self.settings) {
            return Ok(taken);
        }
        let waiting_since = Instant::now();
        let mut connecting = slot.connecting.lock().await;
        // Another request may have opened one while this one waited.
        if let Some(taken) = slot.take(&self.settings) {
            return Ok(taken);
        }
        // Or failed to, meanwhile: this request fails as it did.
        if let Some((failed_at, error)) = connecting.as_ref()
            && *failed_at >= waiting_since
        {
            return slot.take_any().ok_or_else(|| error.clone());
        }
        // Boxed: the handshake's state is large and needed once per connection, so it should
        // not make every request's future larger.
        let connected = tokio::time::timeout(connect_timeout, Box::pin(self.connect(peer, node)))
            .await
            .unwrap_or_else(|_| Err(ProxyError::ConnectTimeout(peer.to_string())));
        match connected {
            Ok((sender, load)) => {
                // Added before the lock is let go, so the requests waiting for it find it.
                let (stream, extra) = slot.add(sender.clone(), load);
                *connecting = None;
                drop(connecting);
                if extra {
                    self.start_sweeper();
                }
                Ok((sender, stream, None))
            }
            // Full connections are better than none: the request waits for a stream there.
            Err(error) => {
                *connecting = Some((Instant::now(), error.clone()));
                drop(connecting);
                let taken = slot.take_any();
                if taken.is_some() {
                    tracing::info!(%peer, error = %ErrorChain(&error), "cannot open another HTTP/2 connection; the call waits for a stream on an open one");
                }
                taken.ok_or(error)
            }
        }
    }

    /// Starts, once, the task that closes idle extra connections of destinations that get no
    /// more requests (those that do are swept as they take streams). It ends with the pool.
    fn start_sweeper(&self) {
        if self
            .sweeping
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let peers = Arc::clone(&self.peers);
        let closing = self.closing.clone();
        let timeout = self.settings.extra_connection_idle_timeout;
        self.connections.spawn(async move {
            loop {
                tokio::select! {
                    () = closing.cancelled() => return,
                    () = tokio::time::sleep((timeout / 2).max(SWEEP_EVERY_MIN)) => {}
                }
                let slots: Vec<Arc<PeerSlot>> = {
                    let peers = peers.lock().unwrap_or_else(|p| p.into_inner());
                    peers
                        .values()
                        .flat_map(|slots| slots.iter().map(|(_, slot)| Arc::clone(slot)))
                        .collect()
                };
                for slot in slots {
                    slot.sweep(timeout);
                }
            }
        });
    }

    /// The slot of `peer` proving to be `node`, made on first use.
    fn slot(&self, peer: SocketAddr, node: Option<&str>) -> Arc<PeerSlot> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let slots = peers.entry(peer).or_default();
        if let Some((_, slot)) = slots.iter().find(|(named, _)| named.as_deref() == node) {
            return Arc::clone(slot);
        }
        let slot = Arc::new(PeerSlot::default());
        slots.push((node.map(Arc::from), Arc::clone(&slot)));
        slot
    }

    /// `peer` for logs and metrics: `peer` toward peer agents, `instance` toward local ones.
    fn destination_kind(&self) -> &'static str {
        if self.identity.is_some() {
            "peer"
        } else {
            "instance"
        }
    }

    async fn connect(
        &self,
        peer: SocketAddr,
        node: Option<&str>,
    ) -> Result<(SendRequest<Body>, Arc<ConnectionLoad>), ProxyError> {
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
        let stream = SocketSend::new(stream);
        let load = Arc::new(ConnectionLoad::new(self.destination_kind()));
        let Some(slot) = &self.identity else {
            let io = Watched::new(stream, Arc::clone(&load));
            return self.handshake(peer, TokioIo::new(io), load).await;
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
        // The requests of a round's calls go out together (decision 58).
        let io = Watched::new(WriteCoalescing::new(stream), Arc::clone(&load));
        self.handshake(peer, TokioIo::new(io), load).await
    }

    /// The HTTP/2 handshake on `io`, whose frames feed `load`; the connection's driver runs
    /// until it ends or the pool closes. Returns once the server's SETTINGS have arrived, so
    /// its stream limit counts from the first request.
    async fn handshake<T>(
        &self,
        peer: SocketAddr,
        io: T,
        load: Arc<ConnectionLoad>,
    ) -> Result<(SendRequest<Body>, Arc<ConnectionLoad>), ProxyError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.settings.keep_alive_interval)
            .keep_alive_timeout(self.settings.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .max_header_list_size(self.settings.max_header_list_size)
            // Boxed: hyper spawns a task per request whose future has the size of its
            // connection's (an enum of the two), connection state and I/O included, so an
            // I/O held inline (a TLS stream) was copied twice and allocated once per request.
            .handshake(Box::new(io))
            .await
            .map_err(|e| ProxyError::ConnectFailed {
                address: peer.to_string(),
                reason: Cause::new(e),
            })?;
        let closing = self.closing.clone();
        let to = self.destination_kind();
        self.connections.spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::info!(%peer, to, error = %ErrorChain(&error), "HTTP/2 connection closed");
                    }
                }
                () = closing.cancelled() => tracing::debug!(%peer, to, "HTTP/2 connection closed at shutdown"),
            }
        });
        // hyper reads the server's frames in a task of its own from the handshake on.
        load.settings_received().await;
        crate::metrics::http2_connection_opened(to);
        tracing::debug!(%peer, to, "HTTP/2 connection opened");
        Ok((sender, load))
    }
}

/// An answer's body from a pooled connection. It holds the request's stream in its
/// connection's count until it ends, fails or is dropped: an HTTP/2 stream is open until its
/// answer has ended, and a connection's limit counts open streams. An accepted CONNECT's
/// stream is the upgraded connection, so its answer holds it until dropped: keep the answer
/// for as long as the upgraded connection is used.
pub struct PooledBody {
    inner: Incoming,
    stream: Option<StreamSlot>,
    /// Whether the stream outlives the body (an accepted CONNECT).
    upgraded: bool,
}

impl PooledBody {
    /// `inner`, holding `stream` until it ends (at once when it already has), or until
    /// dropped when `upgraded`.
    fn new(inner: Incoming, stream: StreamSlot, upgraded: bool) -> Self {
        let open = upgraded || !http_body::Body::is_end_stream(&inner);
        PooledBody {
            inner,
            stream: open.then_some(stream),
            upgraded,
        }
    }
}

/// An answer from outside the pool (an external service's), which holds no stream.
impl From<Incoming> for PooledBody {
    fn from(inner: Incoming) -> Self {
        PooledBody {
            inner,
            stream: None,
            upgraded: false,
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended =
            matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.inner.is_end_stream();
        if ended && !self.upgraded {
            self.stream = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
