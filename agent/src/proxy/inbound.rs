//! The inbound listener: where peer agents deliver calls for this host's instances, over
//! HTTP/2. The destination service travels in a header; the call goes to the local instance
//! over HTTP/1.1 (or HTTP/2 for `http2` and `grpc` services) with the caller's authority.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyphae_policies::{ErrorChain, Protocol};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::headers::{
    Addressed, DESTINATION, UPGRADE_DECLINED, UPGRADE_PROTOCOL, absolute_uri, path_or_root,
    reason_to_header, request_authority, strip_hop_by_hop, upgrade_method, upgrade_path,
    upgrade_request,
};
use super::instance_pool::InstancePool;
use super::{Proxy, error_response, pipe, without_body_for_head};
use crate::authz::{self, Caller};
use crate::body::{self, Body};
use crate::error::{Cause, ProxyError};
use crate::identity::IdentitySlot;
use crate::model::{LocalInstance, Snapshot};
use crate::replay::ReplayBody;
use crate::retry::resend_unprocessed;
use crate::socket_send::SocketSend;
use crate::tunnel::{TunnelSettings, Tunnels};
use crate::write_coalescing::WriteCoalescing;

/// Longest the agent waits to connect to a local instance: it is on this host, so a slow
/// connect means it is not listening.
pub const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections to local instances: kept-alive HTTP/1.1 connections, and multiplexed HTTP/2
/// connections to `http2` and `grpc` instances (the pool peer agents are reached through: one
/// per instance until it is at the instance's stream limit, a new one after its GOAWAY).
pub struct LocalClients {
    http1: InstancePool,
    http2: Tunnels,
}

impl LocalClients {
    /// Fresh pools; HTTP/2 connections take `settings` (the header-list limit they advertise,
    /// keep-alive).
    pub fn new(settings: TunnelSettings) -> Self {
        LocalClients {
            http1: InstancePool::new(LOCAL_CONNECT_TIMEOUT),
            http2: Tunnels::new(settings),
        }
    }

    /// Closes every connection and waits for their tasks; the daemon calls this once the calls
    /// that used them have drained.
    pub async fn close(&self) {
        self.http1.close().await;
        self.http2.close().await;
    }
}

/// Serves one connection from a peer agent: mutual TLS first (the peer must present a node
/// certificate of this mesh's CA; plaintext, no certificate or another CA's end the connection
/// at the handshake), then HTTP/2 requests, each checked against its service's access policy.
pub async fn serve(
    proxy: Arc<Proxy>,
    identity: IdentitySlot,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let limits = proxy.snapshot.load().limits.clone();
    let Some(identity) = identity.load_full() else {
        tracing::debug!(%peer, "no certificate yet; refusing a peer connection");
        metrics::counter!(crate::metrics::INBOUND_TLS_REFUSED).increment(1);
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&identity.inbound));
    let handshake = limits.header_read_timeout.get();
    let stream = SocketSend::new(stream);
    let stream = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "TLS handshake refused on the inbound port");
            metrics::counter!(crate::metrics::INBOUND_TLS_REFUSED).increment(1);
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no TLS handshake within {handshake:?}; closing");
            metrics::counter!(crate::metrics::INBOUND_TLS_REFUSED).increment(1);
            return;
        }
    };
    let ids = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(<[_]>::first)
        .map(hyphae_policies::tls::identities)
        .unwrap_or_default();
    let caller = Caller::from_ids(ids, identity.trust.trust_domain());
    if caller.node.is_none() {
        // A certificate of the root that names no node of this mesh (an operator's, a
        // control-plane node's, another trust domain's) is no peer agent.
        tracing::info!(%peer, "a certificate that names no node of this mesh; closing");
        metrics::counter!(crate::metrics::INBOUND_TLS_REFUSED).increment(1);
        return;
    }
    let caller = Arc::new(caller);
    let service = service_fn(move |request: Request<Incoming>| {
        let proxy = Arc::clone(&proxy);
        let caller = Arc::clone(&caller);
        // Boxed: hyper spawns a task per stream holding this future, and a task's future is
        // copied whole as it is built, spawned, finished and dropped; a box is copied as a
        // pointer, and the call's large state is written once.
        Box::pin(async move {
            let request = request.map(body::boxed);
            let mut response = deliver(&proxy, &caller, request).await;
            reason_to_header(&mut response);
            Ok::<_, Infallible>(response)
        })
    });
    // The answers of a round's calls go out together (decision 58).
    let io = TokioIo::new(WriteCoalescing::new(stream));
    let connection = super::http2_server(&limits).serve_connection(io, service);
    let result = crate::listener::serve_until_shutdown(connection, &shutdown, |c| {
        c.graceful_shutdown();
    })
    .await;
    if let Err(error) = result {
        tracing::debug!(%peer, error = %ErrorChain(&error), "inbound connection ended with an error");
    }
}

/// A call from this node's outbound side to one of its own instances, as its inbound side
/// takes it. The request is what a peer would receive without the two things a peer reads back
/// from it: the destination (a peer's comes in the `hyphae-destination` header) and the
/// authority the caller addressed (a peer's comes in the absolute URI; here the target is in
/// origin form). Carrying them beside the request saves writing a header and a URI that the
/// inbound side would parse and remove again on every call.
pub struct OwnCall {
    /// What the `hyphae-destination` header would have held; `None` where a header rewrite
    /// removed it, which the inbound side refuses as it would a peer's call without one.
    pub destination: Option<HeaderValue>,
    /// The authority the caller addressed.
    pub authority: Authority,
    /// The caller's `Host` value when the authority was read from it: the same text, sent to
    /// an HTTP/1.1 instance as it is instead of being built again from the authority.
    pub host: Option<HeaderValue>,
    /// The request: HTTP/2 version, the target in origin form, headers as a peer gets them
    /// without the destination.
    pub request: Request<Body>,
}

/// Delivers one call from a peer agent to the instance it is for, once the access policy
/// admits it; failures become error answers. The destination comes in a header, which is not
/// the instance's business.
///
/// Not an `async fn` itself, nor is [`deliver_own`]: each would be one more future that holds
/// the call's and is copied whole as it is built.
pub fn deliver<'a>(
    proxy: &'a Proxy,
    caller: &'a Caller,
    mut request: Request<Body>,
) -> impl Future<Output = Response<Body>> + Send + 'a {
    let destination = request.headers_mut().remove(DESTINATION);
    deliver_to(proxy, caller, destination, None, request)
}

/// Delivers one call from this node's own outbound side ([`super::local`]) as [`deliver`]
/// delivers a peer's: the same checks, the same answers.
pub fn deliver_own<'a>(
    proxy: &'a Proxy,
    caller: &'a Caller,
    call: OwnCall,
) -> impl Future<Output = Response<Body>> + Send + 'a {
    deliver_to(
        proxy,
        caller,
        call.destination,
        Some((call.authority, call.host)),
        call.request,
    )
}

/// Delivers a call for `destination` (the `hyphae-destination` value, `None` when the call
/// named none) from `caller`. `addressed` is the authority the caller addressed, with the
/// `Host` value holding it if any, when it is known apart from the request (this node's own
/// calls); otherwise it is read from the request.
async fn deliver_to(
    proxy: &Proxy,
    caller: &Caller,
    destination: Option<HeaderValue>,
    addressed: Option<Addressed>,
    request: Request<Body>,
) -> Response<Body> {
    let method = request.method().clone();
    if let Err(error) = authorize(proxy, caller, destination.as_ref(), &request) {
        return without_body_for_head(&method, error_response(&error));
    }
    let result = if method == Method::CONNECT {
        // Out of line: a stream's future is large and rare, and every request's future (moved
        // as hyper spawns it) and its poll's stack frame would otherwise be as large.
        super::out_of_line(open_local_stream(proxy, destination, request)).await
    } else {
        forward_to_instance(proxy, destination, addressed, request).await
    };
    match result {
        Ok(response) => response,
        Err(error) => without_body_for_head(&method, error_response(&error)),
    }
}

/// Checks `request` against the access policy of the service it is for: an HTTP request by its
/// method and path, an upgrade by the method and path of the request it carries, an opaque
/// TCP stream by neither. A refusal is counted and logged once.
fn authorize(
    proxy: &Proxy,
    caller: &Caller,
    destination: Option<&HeaderValue>,
    request: &Request<Body>,
) -> Result<(), ProxyError> {
    let Some(destination) = destination.and_then(|value| value.to_str().ok()) else {
        // No destination: refused as a bad request where it is read.
        return Ok(());
    };
    // `payments:9001` is one instance of `payments`: the service's policy guards it.
    let service = crate::model::base_name(destination);
    let snapshot = proxy.snapshot.load();
    let carried;
    let (method, path) = if request.method() != Method::CONNECT {
        (Some(request.method().as_str()), Some(request.uri().path()))
    } else if request.headers().contains_key(UPGRADE_PROTOCOL) {
        carried = (
            upgrade_method(request.headers())?,
            upgrade_path(request.headers())?,
        );
        (Some(carried.0.as_str()), Some(carried.1.path()))
    } else {
        (None, None)
    };
    let policy = snapshot.access.get(service).or_else(|| {
        snapshot
            .access
            .get(hyphae_policies::access_policy::MESH_WIDE)
    });
    // Paths a policy's rules name are matched as a server reads them (encoded letters and
    // digits decoded); one a server could read as another (`..`, `//`, encoded `/`) is
    // refused rather than checked.
    let rules_name_paths = policy.is_some_and(|p| p.rules.iter().any(|r| !r.paths.is_empty()));
    let decoded;
    let path = match path {
        Some(path) if rules_name_paths => {
            if !authz::canonical(path) {
                return Err(ProxyError::BadRequest(
                    format!("the path {path:?} is not in canonical form (no empty, `.` or `..` segments, also before a `;`, no encoded `/`, `.`, `\\` or `%`, ASCII only)").into(),
                ));
            }
            decoded = authz::unreserved_decoded(path);
            Some(decoded.as_ref())
        }
        path => path,
    };
    let asked = authz::Request { method, path };
    if authz::admits(policy, caller, asked) {
        return Ok(());
    }
    metrics::counter!(
        crate::metrics::ACCESS_DENIED,
        "caller" => caller.name().to_string(),
        "service" => service.to_string()
    )
    .increment(1);
    tracing::info!(caller = caller.name(), service, method = ?method, path = ?path, "call denied by the access policy");
    Err(ProxyError::Denied {
        service: service.to_string(),
        caller: caller.name().to_string(),
    })
}

/// The local instance a call is for, by its destination (the `hyphae-destination` value).
fn local_instance(
    snapshot: &Snapshot,
    destination: Option<&HeaderValue>,
) -> Result<LocalInstance, ProxyError> {
    let missing = || ProxyError::BadRequest(format!("missing `{DESTINATION}` header").into());
    let value = destination.ok_or_else(missing)?;
    let service = value.to_str().map_err(|_| missing())?;
    snapshot
        .instances
        .get(service)
        .cloned()
        .ok_or_else(|| ProxyError::NoLocalInstance(service.to_string()))
}

/// A CONNECT stream from a peer: opaque TCP to the instance, or (with `hyphae-upgrade`) an
/// HTTP/1.1 upgrade request whose 101 turns the stream into the upgraded connection.
async fn open_local_stream(
    proxy: &Proxy,
    destination: Option<HeaderValue>,
    mut request: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    let instance = local_instance(&proxy.snapshot.load(), destination.as_ref())?;
    let (service, instance_addr) = (instance.service, instance.address);
    let peer_side = hyper::upgrade::on(&mut request);
    if let Some(protocol) = request.headers_mut().remove(UPGRADE_PROTOCOL) {
        return upgrade_instance(proxy, request, peer_side, instance_addr, protocol, service).await;
    }
    let connection = tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, TcpStream::connect(instance_addr))
        .await
        .map_err(|_| ProxyError::ConnectTimeout(instance_addr.to_string()))?
        .map_err(|e| ProxyError::ConnectFailed {
            address: instance_addr.to_string(),
            reason: Cause::new(e),
        })?;
    spawn_splice(
        proxy,
        service,
        peer_side,
        std::future::ready(Ok(connection)),
    );
    Ok(Response::new(body::empty()))
}

/// Sends the upgrade request to the instance; on its 101, answers the peer 200 with the 101's
/// headers and splices the two upgraded connections. Any other answer goes back unchanged.
async fn upgrade_instance(
    proxy: &Proxy,
    request: Request<Body>,
    peer_side: hyper::upgrade::OnUpgrade,
    instance_addr: SocketAddr,
    protocol: HeaderValue,
    service: Arc<str>,
) -> Result<Response<Body>, ProxyError> {
    let (parts, _) = request.into_parts();
    // The caller's own `Host`, else the CONNECT's authority (which has a port the caller's
    // `Host` may not have had: `name:80`).
    let upgrade = upgrade_request(parts.headers, protocol, parts.uri.authority())?;
    let response = proxy.local.http1.upgrade(instance_addr, upgrade).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let mut response = response.map(body::boxed);
        strip_hop_by_hop(response.headers_mut());
        // RFC 9110 §7.8 lets a server ignore the upgrade and answer as usual; a 2xx would read
        // as the tunnel's acceptance (and HTTP/2 resets a 2xx CONNECT answer with a body).
        if response.status().is_success() {
            let status = HeaderValue::from(response.status().as_u16());
            response.headers_mut().insert(UPGRADE_DECLINED, status);
            *response.status_mut() = StatusCode::BAD_GATEWAY;
        }
        return Ok(response);
    }
    let mut answer = Response::new(body::empty());
    answer.headers_mut().clone_from(response.headers());
    strip_hop_by_hop(answer.headers_mut());
    let instance = pipe::upgraded(hyper::upgrade::on(response));
    spawn_splice(proxy, service, peer_side, instance);
    Ok(answer)
}

/// Once the peer's side has upgraded (after the answer that lets it), splices it to the
/// instance in a task the proxy's tracker owns, so a drain waits for it.
fn spawn_splice<I>(
    proxy: &Proxy,
    service: Arc<str>,
    peer_side: hyper::upgrade::OnUpgrade,
    instance: impl Future<Output = Result<I, hyper::Error>> + Send + 'static,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    proxy.tasks.spawn(async move {
        let peer = pipe::upgraded(peer_side);
        match pipe::splice(peer, instance, STREAM_IDLE_TIMEOUT).await {
            Ok(piped) => {
                if let Some(error) = piped.error {
                    tracing::info!(%service, %error, "inbound stream ended");
                }
            }
            Err(error) => {
                tracing::warn!(%service, error = %ErrorChain(&error), "inbound stream failed to open")
            }
        }
    });
}

/// Idle timeout for streams on the inbound side. The calling agent enforces the service's
/// own idle timeout; this only reaps streams whose caller vanished.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Sends a call's request to the local instance for `destination` with the caller's
/// authority (decision 29; the one `addressed`, else the request's own): HTTP/2 carries it as
/// `:authority` and no `host` (RFC 9113 §8.3.1), HTTP/1.1 as `host`. A request the instance
/// did not process goes once more on a new connection.
async fn forward_to_instance(
    proxy: &Proxy,
    destination: Option<HeaderValue>,
    addressed: Option<Addressed>,
    request: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    // One look at the snapshot, not held across the awaits below.
    let (instance, retry_buffer, max_head) = {
        let snapshot = proxy.snapshot.load();
        let instance = local_instance(&snapshot, destination.as_ref())?;
        let retry_buffer = snapshot.limits.retry_buffer_bytes as usize;
        (instance, retry_buffer, max_answer_head(&snapshot))
    };
    let (authority, host) = match addressed {
        Some((authority, host)) => (authority, host),
        None => (
            request_authority(&parts).unwrap_or_else(|| instance.authority.clone()),
            None,
        ),
    };
    strip_hop_by_hop(&mut parts.headers);
    let path = path_or_root(&parts);
    let response = match instance.protocol {
        Protocol::Http2 | Protocol::Grpc => {
            let body = ReplayBody::new(body, retry_buffer);
            parts.headers.remove(http::header::HOST);
            let uri = absolute_uri(Scheme::HTTP, authority, path)?;
            resend_unprocessed(&body, |body| {
                let request = to_instance(&parts, uri.clone(), http::Version::HTTP_2, body);
                proxy
                    .local
                    .http2
                    .send(instance.address, None, LOCAL_CONNECT_TIMEOUT, request, None)
            })
            .await?
            .map(body::boxed)
        }
        Protocol::Http | Protocol::Tcp | Protocol::Tls => {
            let host = match host {
                Some(host) => host,
                None => HeaderValue::from_str(authority.as_str())
                    .map_err(|e| ProxyError::BadRequest(Cause::new(e)))?,
            };
            parts.headers.insert(http::header::HOST, host);
            // HTTP/1.1 to an origin server: the target in origin form, the authority in `Host`.
            // The pool sends a request its connection never took once more by itself.
            parts.uri = Uri::from(path);
            parts.version = http::Version::HTTP_11;
            // What the peer's side attached to its request is not the instance's business.
            parts.extensions.clear();
            let request = Request::from_parts(parts, body);
            let mut response = proxy
                .local
                .http1
                .send(instance.address, request, max_head)
                .await?;
            // The pool reads an answer to its declared end, whatever follows.
            strip_hop_by_hop(response.headers_mut());
            // The agent speaks its own HTTP version to its caller (RFC 9110 §6.2): an HTTP/1.0
            // instance's answer goes on as HTTP/1.1 (the peer's tunnel made it HTTP/2 anyway).
            *response.version_mut() = http::Version::HTTP_11;
            return Ok(response);
        }
    };
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let mut response = response.map(|answer| match declared {
        // An instance that drops its connection right after a whole answer (one it sent
        // before reading the whole request) must not turn that answer into a reset.
        Some(length) => body::whole_at_length(answer, length),
        None => answer,
    });
    strip_hop_by_hop(response.headers_mut());
    Ok(response)
}

/// The largest answer head an instance may send: `limits.maxHeaderBytes`, and at least the
/// HTTP/1.1 buffer's floor, as for the heads callers send.
fn max_answer_head(snapshot: &Snapshot) -> usize {
    (snapshot.limits.max_header_bytes as usize).max(super::MIN_HTTP1_BUFFER)
}

/// One try's request to the instance: the peer's method and headers, `uri`, `version`, `body`.
fn to_instance(parts: &Parts, uri: Uri, version: http::Version, body: Body) -> Request<Body> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    request.headers_mut().clone_from(&parts.headers);
    request
}
