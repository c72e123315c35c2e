//! Outbound listeners: where local apps' calls enter the mesh. An upstream port leads to one
//! service; the HTTP proxy port routes by the request's host. HTTP/1.1 and HTTP/2 (prior
//! knowledge) are detected per connection.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyphae_policies::lingering_close::lingering;
use hyphae_policies::{ErrorChain, Protocol};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::detect::{self, Detected};
use super::headers::{
    Addressed, UPGRADE_HOST, UPGRADE_METHOD, UPGRADE_PATH, UPGRADE_PROTOCOL, has_token,
    strip_hop_by_hop, transfer_codings,
};
use super::{Proxy, call, error_response, pipe, stream, without_body_for_head};
use crate::body::{self, Body};
use crate::error::ProxyError;
use crate::model::Snapshot;
use crate::send_timeout::SendTimeout;
use crate::socket_send::SocketSend;

/// Where an outbound listener sends its calls.
#[derive(Clone, Debug)]
pub enum Target {
    /// Every call goes to this service (an `upstreams:` port). Shared, as every request on
    /// the port carries a copy.
    Service(Arc<str>),
    /// The service is named by the request's host (the HTTP proxy port).
    ByHost,
}

/// Serves one outbound connection until it closes or shutdown finishes it gracefully.
pub async fn serve(
    proxy: Arc<Proxy>,
    target: Target,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let detected = match &target {
        Target::Service(service) if declared_opaque(&proxy, service) => Detected::Tcp,
        _ => detect::detect(&stream, DETECT_TIMEOUT).await,
    };
    let result = match (detected, target) {
        // The rarer paths go out of line (here and below): a connection's future is polled
        // on every request it carries, and its poll's stack frame would otherwise hold room
        // for all of them.
        (Detected::Tcp, Target::Service(service)) => {
            return super::out_of_line(serve_tcp(&proxy, &service, stream, peer)).await;
        }
        (Detected::Http2, target) => serve_http2(proxy, target, stream, &shutdown).await,
        // On the HTTP proxy port every client is taken for HTTP/1.1: hyper answers one that
        // is not with a 400, or closes it at the header read timeout.
        (Detected::Http1 | Detected::Tcp, target) => {
            serve_http1(proxy, target, stream, &shutdown).await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, error = %ErrorChain(&error), "outbound connection ended with an error");
    }
}

/// Serves an HTTP/1.1 connection (upgrades included), its writes bounded by
/// `limits.streamIdleTimeout` (`send_timeout`), then closes it in stages
/// (`lingering_close`). With the own server (the default, decision 93) hyper's
/// takes over only from a request the own one leaves to it. hyper keeps each request's future
/// in one place per connection, so boxing it would only add an allocation.
async fn serve_http1(
    proxy: Arc<Proxy>,
    target: Target,
    stream: TcpStream,
    shutdown: &CancellationToken,
) -> Result<(), hyper::Error> {
    let limits = proxy.snapshot.load().limits.clone();
    let (stream, lingering) = lingering(SocketSend::new(stream));
    let stream = SendTimeout::new(stream, limits.stream_idle_timeout.get());
    let served = if super::own_http1_server() {
        let own_limits = crate::http1::server::Limits {
            header_read_timeout: limits.header_read_timeout.get(),
            max_header_bytes: limits.max_header_bytes as usize,
        };
        let (proxy_ref, target_ref) = (&*proxy, &target);
        let served = crate::http1::server::serve(stream, own_limits, shutdown, |request| {
            answer_own_http1(proxy_ref, target_ref, request)
        })
        .await;
        match served {
            Ok(crate::http1::server::Served::Handoff(rewound)) => {
                super::out_of_line(serve_http1_with_hyper(
                    proxy, target, rewound, &limits, shutdown,
                ))
                .await
            }
            Ok(crate::http1::server::Served::Closed) => Ok(()),
            Err(error) => {
                tracing::debug!(%error, "outbound HTTP/1.1 connection ended with an error");
                Ok(())
            }
        }
    } else {
        super::out_of_line(serve_http1_with_hyper(
            proxy, target, stream, &limits, shutdown,
        ))
        .await
    };
    // The server has let go of the socket (unless upgraded): close it without a reset that
    // would destroy the last answer for a client still sending.
    lingering
        .close(limits.lingering_close_timeout.get(), shutdown.cancelled())
        .await;
    served
}

/// Serves an HTTP/1.1 connection with hyper's server, upgrades included.
async fn serve_http1_with_hyper<I>(
    proxy: Arc<Proxy>,
    target: Target,
    stream: I,
    limits: &hyphae_policies::AgentLimits,
    shutdown: &CancellationToken,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| answer_owned(&proxy, &target, request));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.get())
        .max_buf_size((limits.max_header_bytes as usize).max(super::MIN_HTTP1_BUFFER))
        // The buffer alone bounds a head by how it arrives: one that came in a single read
        // could be read whole past the limit.
        .max_header_size(limits.max_header_bytes as usize)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    crate::listener::serve_until_shutdown(connection, shutdown, |c| c.graceful_shutdown()).await
}

/// Serves an HTTP/2 connection (prior knowledge), its writes bounded by
/// `limits.streamIdleTimeout` (`send_timeout`). Each request's future is boxed: hyper spawns
/// a task per stream holding it, and a task's future is copied whole as it is built, spawned,
/// finished and dropped (decision 52).
async fn serve_http2(
    proxy: Arc<Proxy>,
    target: Target,
    stream: TcpStream,
    shutdown: &CancellationToken,
) -> Result<(), hyper::Error> {
    let limits = proxy.snapshot.load().limits.clone();
    if !detect::http2_preface(&stream, limits.header_read_timeout.get()).await {
        tracing::debug!("HTTP/2 client did not send the connection preface in time; closing");
        return Ok(());
    }
    let stream = SendTimeout::new(stream, limits.stream_idle_timeout.get());
    if super::own_http2_server() {
        let server = crate::http2::server::Server::new(
            stream,
            super::own_http2_limits(&limits),
            super::own_http2_keep_alive(&limits),
            move |request| answer_own_http2(Arc::clone(&proxy), target.clone(), request),
        );
        let served = crate::listener::serve_until_shutdown(server, shutdown, |s| {
            s.get_mut().graceful_shutdown()
        })
        .await;
        if let Err(error) = served {
            tracing::debug!(%error, "outbound HTTP/2 connection ended with an error");
        }
        return Ok(());
    }
    super::out_of_line(async move {
        let service = service_fn(move |request| Box::pin(answer_owned(&proxy, &target, request)));
        let connection =
            super::http2_server(&limits).serve_connection(TokioIo::new(stream), service);
        crate::listener::serve_until_shutdown(connection, shutdown, |c| c.graceful_shutdown()).await
    })
    .await
}

/// The answer to one request on an outbound connection, as a future that owns what it needs,
/// as hyper's services return.
fn answer_owned(
    proxy: &Arc<Proxy>,
    target: &Target,
    request: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + use<> {
    let proxy = Arc::clone(proxy);
    let target = target.clone();
    // The answer to `HEAD` is taken here rather than in a future of its own: each level of
    // futures holds the whole call's and is copied whole as it is built.
    async move {
        let method = request.method().clone();
        Ok(without_body_for_head(
            &method,
            answer(&proxy, &target, request).await,
        ))
    }
}

/// Longest the agent waits for a client's first bytes before treating the connection as
/// opaque TCP (server-first protocols send nothing).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(1);

/// True when `service` is declared `tcp`/`tls`: its connections are carried as bytes without
/// looking at them.
fn declared_opaque(proxy: &Proxy, service: &str) -> bool {
    proxy
        .snapshot
        .load()
        .service(service)
        .is_some_and(|s| matches!(s.protocol, Protocol::Tcp | Protocol::Tls))
}

/// Carries an opaque TCP connection to `service` over a CONNECT stream. The connection's own
/// task (owned by the listener's tracker) carries it to the end.
async fn serve_tcp(proxy: &Proxy, service: &str, stream: TcpStream, peer: SocketAddr) {
    let snapshot = proxy.snapshot.load_full();
    let open = match stream::open(proxy, &snapshot, service, None, http::HeaderMap::new()).await {
        Ok(open) => open,
        Err(error) => {
            crate::metrics::error(error.reason());
            tracing::warn!(%peer, %service, reason = error.reason(), error = %ErrorChain(&error), "TCP connection closed");
            return;
        }
    };
    let open = match open.accepted() {
        Ok(open) => open,
        Err(refused) => {
            tracing::warn!(%peer, %service, status = %refused.status(), "peer refused the TCP stream");
            return;
        }
    };
    splice(service, std::future::ready(Ok(stream)), open)
        .instrument(tracing::info_span!("tcp", %peer))
        .await;
}

/// The checks every request from a local app passes before anything else: the authority it
/// addresses, or why it is refused.
fn checked<B: hyper::body::Body>(
    request: &mut Request<B>,
) -> Result<Option<Addressed>, ProxyError> {
    // What h2 lets through and hyper's HTTP/1.1 server would not (RFC 9113 §8.1.1: an
    // intermediary must not forward a malformed request).
    if request.version() == http::Version::HTTP_2
        && let Err(reason) = well_formed_http2(request.headers_mut())
    {
        return Err(ProxyError::BadRequest(reason.into()));
    }
    let addressed = addressed(request).map_err(|reason| ProxyError::BadRequest(reason.into()))?;
    if has_other_transfer_coding(request) {
        return Err(ProxyError::Unsupported(
            "a request transfer coding other than chunked",
        ));
    }
    Ok(addressed)
}

/// The answer to one request the agent's own HTTP/2 server took from a local app (decision
/// 89): the path of [`answer`], whose upgrades HTTP/2 does not have.
pub async fn answer_own_http2(
    proxy: Arc<Proxy>,
    target: Target,
    mut request: Request<Body>,
) -> Response<Body> {
    let method = request.method().clone();
    let addressed = match checked(&mut request) {
        Ok(addressed) => addressed,
        Err(error) => return without_body_for_head(&method, error_response(&error)),
    };
    if method == Method::CONNECT {
        return match target {
            Target::ByHost => super::out_of_line(connect_own_http2(&proxy, request)).await,
            Target::Service(_) => connect_refused(),
        };
    }
    let answer = match routed(&proxy, &target, &request) {
        Ok(service) => call::call(&proxy, &service, request, addressed.as_ref()).await,
        Err(error) => error_response(&error),
    };
    without_body_for_head(&method, answer)
}

/// The answer to one request the agent's own HTTP/1.1 server took from a local app (decision
/// 92): the path of [`answer`] without CONNECT and upgrades, which that server leaves to
/// hyper's.
async fn answer_own_http1(
    proxy: &Proxy,
    target: &Target,
    mut request: Request<Body>,
) -> Response<Body> {
    let method = request.method().clone();
    let addressed = match checked(&mut request) {
        Ok(addressed) => addressed,
        Err(error) => return without_body_for_head(&method, error_response(&error)),
    };
    let request = if is_chunked_http1(&request) {
        request.map(|body| body::boxed(with_end_to_end_trailers(body)))
    } else {
        request
    };
    let answer = match routed(proxy, target, &request) {
        Ok(service) => call::call(proxy, &service, request, addressed.as_ref()).await,
        Err(error) => error_response(&error),
    };
    without_body_for_head(&method, answer)
}

/// The answer to one request from a local app.
async fn answer(proxy: &Proxy, target: &Target, mut request: Request<Incoming>) -> Response<Body> {
    let addressed = match checked(&mut request) {
        Ok(addressed) => addressed,
        Err(error) => return error_response(&error),
    };
    // Tunnels and upgrades go out of line: their futures are large and rare, and every
    // request's future (moved as hyper stores or spawns it) would otherwise be as large.
    if request.method() == Method::CONNECT {
        return match target {
            Target::ByHost => super::out_of_line(connect_through_proxy(proxy, request)).await,
            Target::Service(_) => {
                let mut refused = connect_refused();
                // A client that sent CONNECT sends the tunnel's bytes next, not a request:
                // they must not be read as one (nginx closes here too).
                if request.version() == http::Version::HTTP_11 {
                    refused
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                refused
            }
        };
    }
    // An upgrade with a body is served as an ordinary request, its `Upgrade` dropped with the
    // other hop-by-hop fields (RFC 9110 §7.8 lets it be ignored): the stream that carries an
    // upgrade carries no body before it, and the instance would get the request without it.
    if is_upgrade(&request) && hyper::body::Body::size_hint(request.body()).exact() == Some(0) {
        return match routed(proxy, target, &request) {
            Ok(service) => super::out_of_line(upgrade(proxy, &service, request)).await,
            Err(error) => error_response(&error),
        };
    }
    // Only an HTTP/1.1 caller's chunked body can carry trailers HTTP/2 refuses (h2 checked an
    // HTTP/2 caller's). Only that one is wrapped: the wrapper reports no size hint, which for
    // a body of known length would lose its `content-length` on the way.
    let request = if is_chunked_http1(&request) {
        request.map(|body| body::boxed(with_end_to_end_trailers(body)))
    } else {
        request.map(body::boxed)
    };
    match routed(proxy, target, &request) {
        Ok(service) => call::call(proxy, &service, request, addressed.as_ref()).await,
        Err(error) => error_response(&error),
    }
}

/// The answer to a CONNECT on a port that carries one service.
fn connect_refused() -> Response<Body> {
    error_response(&ProxyError::BadRequest(
        "CONNECT is served on the HTTP proxy port".into(),
    ))
}

/// The service a checked request calls: the port's, or the one its host names. A lookup, not
/// a level of futures: each level holds the whole call's future and copies it as it is built.
fn routed<'a, B>(
    proxy: &Proxy,
    target: &'a Target,
    request: &Request<B>,
) -> Result<Cow<'a, str>, ProxyError> {
    match target {
        Target::Service(name) => Ok(Cow::Borrowed(name)),
        Target::ByHost => {
            service_by_host(&proxy.snapshot.load(), &proxy.zone, request).map(Cow::Owned)
        }
    }
}

/// The authority a request addresses (its target's, else its `Host`'s, with that `Host`; `None`
/// when it names none), or why it must be refused before it is routed: the caller's bad
/// request. Each rule keeps two hops from reading one request two ways. The `Host` is parsed
/// here once for the whole call.
fn addressed<B>(request: &Request<B>) -> Result<Option<Addressed>, &'static str> {
    let mut hosts = request.headers().get_all(http::header::HOST).iter();
    let host = hosts.next();
    // RFC 9112 §3.2: a request with more than one Host is invalid; routing by either would
    // let two hops disagree on where it goes.
    if hosts.next().is_some() {
        return Err("the request has more than one Host header");
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host must be refused; an instance behind the
    // agent would otherwise get one the caller never sent (the service's name).
    if host.is_none() && request.version() == http::Version::HTTP_11 {
        return Err("the HTTP/1.1 request has no Host header");
    }
    // RFC 9112 §3.2: a Host that is no authority is refused as two Hosts are; the agent would
    // route by the service alone while the caller meant something it cannot name. (An empty
    // one is allowed: a target without a host sends it so.)
    let by_host = match host {
        Some(host) if !host.is_empty() => Some((
            Authority::try_from(host.as_bytes())
                .ok()
                .filter(is_host_and_port)
                .ok_or("the request's Host is no host[:port]")?,
            host,
        )),
        _ => None,
    };
    // RFC 9110 §4.2.4: userinfo in a target is an error (credentials in the clear, and
    // `user@host` reads as two hosts to two parsers); so is a port that is no number.
    if let Some(authority) = request.uri().authority()
        && !is_host_and_port(authority)
    {
        return Err("the request's target has userinfo or a port that is no number");
    }
    // RFC 9112 §3.2.3: the authority form (`host:port` alone) is for CONNECT only; any other
    // method with it names no resource.
    if request.uri().scheme().is_none()
        && request.uri().authority().is_some()
        && request.method() != Method::CONNECT
    {
        return Err("only CONNECT may have a target of the authority form");
    }
    // RFC 9113 §8.3.1: an HTTP/2 request whose Host names another authority than its
    // `:authority` is malformed; a route matching on one while the instance is given the
    // other would let a caller claim one host and reach another.
    if let (Some(host), Some(authority), http::Version::HTTP_2) =
        (host, request.uri().authority(), request.version())
        && !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Err("the request's Host and :authority differ");
    }
    // RFC 9110 §7.1: the asterisk target is for OPTIONS only; any other method with it names
    // no resource, and instances read it differently.
    if request.uri().path() == "*" && request.method() != Method::OPTIONS {
        return Err("only OPTIONS may have the target *");
    }
    // The target's authority wins over `Host` (RFC 9112 §3.2.2), as `request_authority` reads it.
    Ok(match request.uri().authority() {
        Some(authority) => Some((authority.clone(), None)),
        None => by_host.map(|(authority, host)| (authority, Some(host.clone()))),
    })
}

/// Checks an HTTP/2 caller's fields where h2 does not: no value starts or ends with a space or
/// tab (RFC 9113 §8.2.1; an HTTP/1.1 hop would lose them, and two hops would read two values),
/// and `Content-Length` says one thing, once.
fn well_formed_http2(headers: &mut http::HeaderMap) -> Result<(), &'static str> {
    let padded = |value: &HeaderValue| {
        let bytes = value.as_bytes();
        [bytes.first(), bytes.last()]
            .into_iter()
            .flatten()
            .any(|b| matches!(b, b' ' | b'\t'))
    };
    if headers.values().any(padded) {
        return Err("a field value starts or ends with whitespace");
    }
    one_length_line(headers)
}

/// Leaves at most one `Content-Length` line. RFC 9110 §8.6 lets a recipient take a length
/// repeated with one value as that value, but it must then send it on once: two lines reach an
/// HTTP/1.1 instance as written, and strict servers (Node) refuse them. Lines that differ are
/// the caller's error.
fn one_length_line(headers: &mut http::HeaderMap) -> Result<(), &'static str> {
    let mut lines = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let (Some(first), Some(_)) = (lines.next(), lines.next()) else {
        return Ok(());
    };
    let first = first.clone();
    if !headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .all(|line| line == first)
    {
        return Err("the request's Content-Length lines differ");
    }
    headers.insert(http::header::CONTENT_LENGTH, first);
    Ok(())
}

/// Whether an authority is a host and an optional port of digits only: no userinfo
/// (`user@host`), no port such as `:abc` or `:+80` (which the `http` crate reads as no port
/// at all). An empty port (`host:`) is allowed (RFC 3986 §3.2.3).
fn is_host_and_port(authority: &Authority) -> bool {
    let text = authority.as_str();
    if text.contains('@') {
        return false;
    }
    // An IPv6 literal's colons are inside its brackets.
    let after_host = text.rfind(']').map_or(0, |bracket| bracket + 1);
    match text[after_host..].rfind(':') {
        None => true,
        Some(colon) => {
            let port = &text[after_host + colon + 1..];
            port.bytes().all(|b| b.is_ascii_digit())
                && (port.is_empty() || port.parse::<u64>().is_ok_and(|n| n <= u64::from(u16::MAX)))
        }
    }
}

/// True for an HTTP/1.1 request asking to switch protocols (WebSocket and the like). Not for
/// `Upgrade: h2c` alone (`curl --http2` sends it): a proxy that does not take it forwards the
/// request as an ordinary one without it, as Envoy and nginx do, and RFC 9110 §7.8 lets the
/// upgrade be ignored.
fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == http::Version::HTTP_11
        && request
            .headers()
            .get_all(http::header::UPGRADE)
            .iter()
            .any(|protocols| !names_only_h2c(protocols))
        && request
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

/// A caller's body whose trailers lose their hop-by-hop fields (`Connection`, `Keep-Alive`,
/// `Transfer-Encoding`...), as its head did. HTTP/2 forbids them (RFC 9113 §8.2.2), so the
/// tunnel's HTTP/2 client refused an HTTP/1.1 caller's trailer section holding one, and the
/// call hung on a body that never ended.
fn with_end_to_end_trailers<B>(body: B) -> impl hyper::body::Body<Data = Bytes, Error = B::Error>
where
    B: hyper::body::Body<Data = Bytes>,
{
    body.map_frame(|frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            strip_hop_by_hop(&mut trailers);
            hyper::body::Frame::trailers(trailers)
        }
        Err(frame) => frame,
    })
}

/// Whether a request is HTTP/1.1 with a body of no declared length: chunked.
fn is_chunked_http1<B: hyper::body::Body>(request: &Request<B>) -> bool {
    request.version() == http::Version::HTTP_11 && request.body().size_hint().exact().is_none()
}

/// Whether an `Upgrade` value names `h2c` and nothing else.
fn names_only_h2c(protocols: &HeaderValue) -> bool {
    protocols.to_str().is_ok_and(|v| {
        v.split(',')
            .map(str::trim)
            .all(|protocol| protocol.eq_ignore_ascii_case("h2c"))
    })
}

/// Whether an HTTP/1.1 request's body is in a transfer coding besides chunked (`gzip,
/// chunked`). hyper reads the chunks, but the coding's name travels in a hop-by-hop header, so
/// the instance would get the coded bytes unmarked. RFC 9112 §6.1: 501, as nginx answers, as
/// the agent refuses such answers from instances (decision 66). Only a body of no declared
/// length can be chunked, so most requests are settled without a lookup.
fn has_other_transfer_coding<B: hyper::body::Body>(request: &Request<B>) -> bool {
    is_chunked_http1(request)
        && transfer_codings(request.headers()).any(|coding| !coding.eq_ignore_ascii_case("chunked"))
}

/// Carries an HTTP upgrade to the instance over a CONNECT stream: the instance's 101 (its
/// headers carried back in the peer's 200) becomes ours, then bytes flow both ways.
async fn upgrade(proxy: &Proxy, service: &str, mut request: Request<Incoming>) -> Response<Body> {
    let protocol = request
        .headers()
        .get(http::header::UPGRADE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("websocket"));
    let client_side = hyper::upgrade::on(&mut request);
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let mut headers = request.headers().clone();
    strip_hop_by_hop(&mut headers);
    // An HTTP/1.1 request always has its `Host` here (`addressed`); it travels beside the
    // CONNECT's authority, so the instance gets it as the caller wrote it.
    match headers.remove(http::header::HOST) {
        Some(host) => headers.insert(UPGRADE_HOST, host),
        None => headers.remove(UPGRADE_HOST),
    };
    headers.insert(UPGRADE_PROTOCOL, protocol.clone());
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    // A method is a token and a token is a valid value, but neither is checked twice here.
    match (
        HeaderValue::from_str(request.method().as_str()),
        HeaderValue::from_str(path),
    ) {
        (Ok(method), Ok(path)) => {
            headers.insert(UPGRADE_METHOD, method);
            headers.insert(UPGRADE_PATH, path);
        }
        _ => return error_response(&ProxyError::BadRequest("unusable request path".into())),
    };
    let snapshot = proxy.snapshot.load_full();
    // The answer to an upgrade (its 101 or a refusal) is waited for as long as any answer's
    // head: `timeouts.request`, else a server that never answers would hold the caller and
    // its stream slot for good.
    let Some(waited) = snapshot
        .service(service)
        .map(|target| target.policy.timeouts.request.get())
    else {
        return error_response(&ProxyError::UnknownService(service.to_string()));
    };
    let opening = stream::open(proxy, &snapshot, service, host.as_deref(), headers);
    let opened = tokio::time::timeout(waited, opening)
        .await
        .unwrap_or(Err(ProxyError::RequestTimeout(waited)));
    let open = match opened {
        Ok(open) => open,
        Err(error) => return error_response(&error),
    };
    let open = match open.accepted() {
        Ok(open) => open,
        // The instance (or external service) refused the upgrade: its answer goes back.
        Err(refused) => return *refused,
    };
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    if let Some(upgraded) = open.headers() {
        headers.clone_from(upgraded);
    }
    strip_hop_by_hop(headers);
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    headers.insert(http::header::UPGRADE, protocol);
    spawn_splice(proxy, service.to_string(), client_side, open);
    response
}

/// `CONNECT host:port` on the HTTP proxy port: a TCP tunnel to the service the host names.
async fn connect_through_proxy(proxy: &Proxy, mut request: Request<Incoming>) -> Response<Body> {
    let client_side = hyper::upgrade::on(&mut request);
    match open_tunnel(proxy, &request).await {
        Ok((service, open)) => {
            spawn_splice(proxy, service, client_side, open);
            Response::new(body::empty())
        }
        Err(refused) => refused,
    }
}

/// `CONNECT host:port` taken by the agent's own HTTP/2 server: the tunnel's bytes are the
/// stream's DATA both ways (RFC 9113 §8.5).
async fn connect_own_http2(proxy: &Proxy, request: Request<Body>) -> Response<Body> {
    match open_tunnel(proxy, &request).await {
        Ok((service, open)) => {
            let (tunnel, answer) = crate::http2::tunnel::tunnel(request.into_body());
            proxy.tasks.spawn(async move {
                splice(&service, std::future::ready(Ok(tunnel)), open).await;
            });
            Response::new(answer)
        }
        Err(refused) => refused,
    }
}

/// Opens the stream a CONNECT's tunnel rides to the service its authority names, or the
/// answer that refuses it.
async fn open_tunnel<B>(
    proxy: &Proxy,
    request: &Request<B>,
) -> Result<(String, stream::OpenStream), Response<Body>> {
    let service = service_by_host(&proxy.snapshot.load(), &proxy.zone, request)
        .map_err(|error| error_response(&error))?;
    let snapshot = proxy.snapshot.load_full();
    let open = stream::open(proxy, &snapshot, &service, None, http::HeaderMap::new())
        .await
        .map_err(|error| error_response(&error))?;
    let open = open.accepted().map_err(|refused| {
        error_response(&ProxyError::Reset(
            format!("the peer refused the stream with {}", refused.status()).into(),
        ))
    })?;
    Ok((service, open))
}

/// Once the caller's side has upgraded (after the answer that lets it), splices it to the
/// open stream in a task the proxy's tracker owns, so a drain waits for it.
fn spawn_splice(
    proxy: &Proxy,
    service: String,
    client_side: hyper::upgrade::OnUpgrade,
    open: stream::OpenStream,
) {
    proxy.tasks.spawn(async move {
        splice(&service, pipe::upgraded(client_side), open).await;
    });
}

/// The one way an outbound byte stream is carried (opaque TCP, upgrades, CONNECT): once the
/// caller's side is ready, pipes it to the open stream, holding the stream's slot in the
/// service's limit, and counts the bytes.
async fn splice<C, F>(service: &str, client_side: F, open: stream::OpenStream)
where
    C: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Result<C, hyper::Error>>,
{
    let _permit = open.permit;
    let spliced = match open.upstream {
        stream::Upstream::Peer(mut response) => {
            let upstream = pipe::upgraded(hyper::upgrade::on(&mut response));
            let spliced = pipe::splice(client_side, upstream, open.idle).await;
            // The answer held the stream's place on its connection until now.
            drop(response);
            spliced
        }
        stream::Upstream::Direct(connection) => {
            pipe::splice(client_side, std::future::ready(Ok(connection)), open.idle).await
        }
        stream::Upstream::External(response) => {
            let upstream = pipe::upgraded(hyper::upgrade::on(response));
            pipe::splice(client_side, upstream, open.idle).await
        }
    };
    match spliced {
        Ok(piped) => {
            crate::metrics::stream_bytes(service, piped.a_to_b, piped.b_to_a);
            if let Some(error) = piped.error {
                tracing::info!(%service, %error, "stream ended");
            }
        }
        Err(error) => {
            tracing::warn!(%service, error = %ErrorChain(&error), "stream failed before it opened")
        }
    }
}

/// The service a proxied request names by its absolute URI or `Host` header.
fn service_by_host<B>(
    snapshot: &Snapshot,
    zone: &str,
    request: &Request<B>,
) -> Result<String, ProxyError> {
    // Host names are case-insensitive (RFC 9110 §4.2.3); service names are lowercase.
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase())
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_ascii_lowercase)
        })
        .ok_or_else(|| ProxyError::BadRequest("the request names no host".into()))?;
    snapshot
        .service_for_host(&host, zone)
        .map(|s| s.name.clone())
        .ok_or(ProxyError::UnknownService(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authority_is_a_host_and_a_port_of_digits_without_userinfo() {
        let parse = |text: &str| Authority::try_from(text).expect("an authority http parses");
        for good in [
            "svc",
            "svc:80",
            "svc:",
            "10.0.0.1:8080",
            "[::1]",
            "[::1]:443",
            "svc:065535",
        ] {
            assert!(is_host_and_port(&parse(good)), "{good}");
        }
        for bad in [
            "user@svc",
            "user:pw@svc:80",
            "svc:abc",
            "svc:+80",
            "svc:65536",
            "[::1]:x",
        ] {
            assert!(!is_host_and_port(&parse(bad)), "{bad}");
        }
    }
}
