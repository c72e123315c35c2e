//! The node's HTTP port: Raft RPCs from peers and the admin API (`/v1/...`, JSON; policies
//! also accept YAML). This file accepts connections and routes; every request enters through
//! [`handle`], the one place a check that applies to every route belongs. Handlers live one
//! file per resource below; they never import this file.
//!
//! - [`admission`]: which connections the port takes (caps overall and per source, places
//!   kept for members).
//! - [`access`]: what each route requires of its caller: certificates and tokens checked.
//! - [`caller`]: who is calling, as the TLS handshake proved it.
//! - [`answer`]: the buffered request, error answers with stable codes, JSON bodies, limits.
//! - [`leader`]: writes through Raft, the linearizable-read barrier, forwarding to the leader.
//! - [`raft`]: peer RPCs (Raft's own and leadership transfer).
//! - [`policies`], [`cluster`], [`registry`], [`watch`], [`tokens`], [`identity`]: the admin
//!   and agent resources.

pub mod access;
pub mod admission;
pub mod answer;
pub mod caller;
pub mod cluster;
pub mod identity;
pub mod leader;
pub mod policies;
pub mod public_places;
pub mod raft;
pub mod registry;
pub mod tokens;
pub mod uplink;
pub mod watch;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyphae_policies::ControlPlaneLimits;
use hyphae_policies::lingering_close::lingering;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::access::{AGENT_PREFIX, PEER_RPC_PREFIX};
pub use self::answer::ApiBody;
use self::answer::{Answer, ApiError, ApiRequest, Routed, json_response};
use self::caller::Caller;
pub use self::caller::FORWARDED_HEADER;
pub use self::caller::Peer;
use crate::node::Node;

/// Longest a stopping node waits for its open connections to finish their requests.
pub const CONNECTION_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors, say) before trying again.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// Serves the node's HTTP port until `shutdown`, then lets open connections finish (watch
/// streams end at once) for up to [`CONNECTION_DRAIN`]. Every connection is bounded by the
/// node's `limits`: a cap on open connections (one beyond it is closed at once), its first
/// byte and each request head within `headerReadTimeout`, HTTP/2 streams and head sizes.
pub async fn serve(node: Arc<Node>, listener: TcpListener, shutdown: CancellationToken) {
    let limits = node.config.spec.limits.clone();
    let admission = admission::Admission::new(&limits);
    let builder = Arc::new(connection_builder(&limits));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        // Every answer goes out as soon as it is written. With Nagle's algorithm, a frame
        // written while an earlier one is unacknowledged (a response's DATA after its HEADERS)
        // waited for the reader's delayed ACK: about 40 ms on a write's answer (decision 53).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        if let Err(error) = bound_unacknowledged(&stream, unacknowledged_limit(&limits)) {
            tracing::debug!(%peer, %error, "cannot set TCP_USER_TIMEOUT");
        }
        let admitted = match admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(full) => {
                tracing::warn!(%peer, ?full, max = limits.max_connections, per_source = limits.max_connections_per_source, "connection limit reached; closing the new connection");
                crate::refusals::count(crate::refusals::Refusal::Connection);
                drop(stream);
                continue;
            }
        };
        let node = Arc::clone(&node);
        let builder = Arc::clone(&builder);
        let shutdown = shutdown.clone();
        let tasks = connections.clone();
        let first_byte = limits.header_read_timeout.get();
        let linger = limits.lingering_close_timeout.get();
        connections.spawn(async move {
            // The whole place moves in (not only the field read below), so it is held until
            // the connection ends, or, when a watch takes the connection over, until that ends.
            let admitted = admitted;
            // The handshake within `headerReadTimeout`: a silent client must not hold a place
            // forever, and the port speaks only TLS (plaintext HTTP, say, is refused here).
            // This task lives as long as the connection, so it must not be sized for states
            // it has left: the handshake is boxed (freed when it ends), and the TLS stream is
            // only borrowed inside this block (a local borrowed anywhere in an async block
            // keeps its place in the task until its scope ends; here 1.2 KiB). Decision 50.
            let (io, identity, linger) = {
                let acceptor = tokio_rustls::TlsAcceptor::from(node.tls.server.load_full());
                let handshake = Box::pin(tokio::time::timeout(first_byte, acceptor.accept(stream)));
                let stream = match handshake.await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::info!(%peer, %error, "TLS handshake refused");
                        crate::refusals::count(crate::refusals::Refusal::Handshake);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "no TLS handshake within {first_byte:?}; closing");
                        return;
                    }
                };
                let trust_domain = &node.config.spec.certificates.trust_domain;
                let identity = Peer::from_certificate(
                    stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(<[_]>::first),
                    trust_domain,
                )
                .from_address(peer.ip());
                // HTTP/2 (by ALPN: agents and peers) closes with GOAWAY; a reset there loses no
                // answer, so only other connections linger (decision 61), and a peer whose
                // host is gone is not waited for.
                let linger = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    std::time::Duration::ZERO
                } else {
                    linger
                };
                (stream, identity, linger)
            };
            if admitted.reserved
                && !identity
                    .control_plane()
                    .is_some_and(|id| node.is_member(id))
            {
                tracing::info!(%peer, "a place kept for members, taken by another client; closing");
                crate::refusals::count(crate::refusals::Refusal::Connection);
                return;
            }
            let scope = ConnectionScope {
                shutdown: shutdown.clone(),
                tasks,
                place: Arc::new(admitted),
            };
            // The place is held through the lingering close too: the service below, which
            // holds the scope, is dropped before it.
            let place = Arc::clone(&scope.place);
            let service = service_fn(move |request| {
                let node = Arc::clone(&node);
                let scope = scope.clone();
                let identity = identity.clone();
                // hyper runs each request in a task that keeps the size of this future for as
                // long as the answer's body streams: for a watch, the agent's whole connection.
                // Boxed, the request's work is freed once the answer starts (6.7 KiB per
                // watch, decision 50).
                Box::pin(async move {
                    Ok::<_, Infallible>(handle(&node, request, identity, &scope).await)
                })
            });
            // Closed in stages once served (`lingering_close`): a client refused while still
            // sending a body (413 past its limit) reads the refusal, not a reset.
            let (io, lingering) = lingering(io);
            // With upgrades: a watch may take the connection over (decision 56); the socket
            // then stays with it and closes plainly.
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            // In a block of its own: the connection lets go of the socket when dropped.
            let result = {
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => result,
                    () = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            lingering.close(linger, shutdown.cancelled()).await;
            drop(place);
        });
    }
    connections.close();
    if tokio::time::timeout(CONNECTION_DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "connections still open after {CONNECTION_DRAIN:?}; closing them"
        );
    }
}

/// What the handling of a request may need of its connection beyond the request: the node's
/// shutdown (it ends long-lived answers), the port's task tracker and the connection's place
/// under `maxConnections`, for a watch that takes the connection over from hyper
/// ([`watch::open_upgraded`]) and outlives the connection's own task.
#[derive(Clone)]
pub struct ConnectionScope {
    /// The node's shutdown.
    pub shutdown: CancellationToken,
    /// The port's connections, which a stopping node waits for.
    tasks: tokio_util::task::TaskTracker,
    /// The connection's place, given back when the last holder drops it.
    place: Arc<admission::Admitted>,
}

/// HTTP/1.1 and HTTP/2 (detected per connection) with the node's head, stream and time limits.
fn connection_builder(limits: &ControlPlaneLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.get())
        .max_buf_size((limits.max_header_bytes as usize).max(MIN_HTTP1_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams as usize)
        .max_header_list_size(limits.max_header_bytes)
        // A peer that stops answering pings is gone: its connection (and its place under
        // maxConnections) is freed.
        .keep_alive_interval(Some(limits.header_read_timeout.get()))
        .keep_alive_timeout(limits.header_read_timeout.get());
    builder
}

/// How long what a node sent on a connection may stay unacknowledged by the peer's host before
/// the connection is closed: twice `headerReadTimeout`, the time an HTTP/2 peer has to answer
/// a keep-alive ping (sent after `headerReadTimeout` of silence, answered within as long). A
/// watch taken over from HTTP/1.1 (decision 56) has no pings: without this, an agent whose host
/// vanished would hold its connection until the kernel gave up retransmitting its heartbeats
/// (about 15 minutes).
fn unacknowledged_limit(limits: &ControlPlaneLimits) -> std::time::Duration {
    limits.header_read_timeout.get().saturating_mul(2)
}

/// Closes `stream` once data sent on it has waited `after` for the peer's acknowledgement
/// (`TCP_USER_TIMEOUT`); the peer's kernel acknowledges whatever reaches it, so only a peer
/// that is gone (or has stopped reading for that long, its window full) trips it.
fn bound_unacknowledged(
    stream: &tokio::net::TcpStream,
    after: std::time::Duration,
) -> std::io::Result<()> {
    let millis = u32::try_from(after.as_millis()).unwrap_or(u32::MAX);
    rustix::net::sockopt::set_tcp_user_timeout(stream, millis)?;
    Ok(())
}

/// hyper refuses an HTTP/1.1 read buffer smaller than this.
const MIN_HTTP1_BUFFER: usize = 8192;

/// Handles one request from `peer` (who its TLS certificate proved it to be) on the connection
/// `scope` describes (its shutdown ends the long-lived ones: watch streams). Every request of
/// the port, peer or admin, passes here before it is routed.
pub async fn handle(
    node: &Arc<Node>,
    request: Request<Incoming>,
    peer: Peer,
    scope: &ConnectionScope,
) -> Response<ApiBody> {
    if !canonical(request.uri().path()) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-path",
            "the path has empty, `.` or `..` segments; write it in canonical form",
        )
        .into_response()
        .map(BodyExt::boxed);
    }
    if request.method() == Method::GET && request.uri().path() == hyphae_policies::watch::WATCH_PATH
    {
        let peer = peer.speaking_for(node, request.headers());
        let path = request.uri().path();
        if let Err(refused) =
            access::check(node, &Method::GET, path, request.headers(), &peer).await
        {
            return refused.into_response().map(BodyExt::boxed);
        }
        if watch::wants_upgrade(&request) {
            return watch::open_upgraded(node, request, peer, scope).await;
        }
        return watch::open(node, &request, scope).await;
    }
    handle_buffered(node, request, peer)
        .await
        .map(BodyExt::boxed)
}

/// Whether `path` is in the one form access checks and routing both read: `/` then non-empty
/// segments, none `.` or `..` (so `//v1/acl/tokens` cannot pass as another route).
fn canonical(path: &str) -> bool {
    path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
    })
}

/// Handles a request whose body and answer are read whole.
async fn handle_buffered(
    node: &Node,
    request: Request<Incoming>,
    peer: Peer,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let from_member = peer.control_plane().is_some_and(|id| node.is_member(id));
    let connection_address = peer.address();
    let peer = peer.speaking_for(node, &parts.headers);
    let caller = match access::check(node, &parts.method, &path, &parts.headers, &peer).await {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    if path.starts_with(PEER_RPC_PREFIX) && !raft::is_rpc(&path) {
        // Answered before the body is read: a peer body may be large.
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown-path",
            format!("no peer RPC at {path}"),
        )
        .into_response();
    }
    let limits = &node.config.spec.limits;
    // A public route's caller is nobody yet: its body is small, and only so many are read at
    // once (fewer from one address), so bodies from callers without a certificate or token
    // cannot fill the memory. Reads take no place (`/v1/ca`, polled by every agent), nor does a
    // request a member forwarded (it took one there).
    let public = access::required(&parts.method, &path) == access::Access::Public
        && parts.method != Method::GET
        && parts.method != Method::HEAD;
    let _public_place = if public && !from_member {
        match node.public_requests.take(connection_address) {
            Some(place) => Some(place),
            None => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    format!(
                        "{} requests to public routes are being read, or an eighth of them from this address (limits.maxPublicRequests); try again",
                        limits.max_public_requests
                    ),
                )
                .into_response();
            }
        }
    } else {
        None
    };
    let (max, sender) = if public {
        (
            limits.max_public_body_bytes as usize,
            "public (maxPublicBodyBytes)",
        )
    } else {
        body_limit(limits, &path)
    };
    // A public body is small: it gets no longer than a head to arrive.
    let read_timeout = if public {
        limits
            .header_read_timeout
            .get()
            .min(limits.body_read_timeout.get())
    } else {
        limits.body_read_timeout.get()
    };
    let read = tokio::time::timeout(read_timeout, Limited::new(body, max).collect());
    let body = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("{error}: {sender} bodies are limited to {max} bytes (limits)"),
            )
            .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                if public {
                    format!(
                        "the request body did not arrive within {} (limits.headerReadTimeout, for a public route)",
                        limits.header_read_timeout
                    )
                } else {
                    format!(
                        "the request body did not arrive within {} (limits.bodyReadTimeout)",
                        limits.body_read_timeout
                    )
                },
            )
            .into_response();
        }
    };
    if parts.method == Method::POST
        && let Some(answer) = raft::answer(node, &path, &body).await
    {
        return answer;
    }
    let forwarded = parts.headers.contains_key(FORWARDED_HEADER);
    if forwarded
        && let Some(late) = caller::forward_expired(&parts.headers, crate::tokens::now_ms())
    {
        tracing::warn!(
            path,
            late_ms = late,
            "refused a forwarded request that came after its deadline (a partition held it up, or the forwarding node's clock is behind)"
        );
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "forward-expired",
            format!(
                "the request reached the leader {late} ms after the node that forwarded it had given up on it (or that node's clock is behind the leader's); it was not applied"
            ),
        )
        .into_response();
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        match &caller {
            Caller::Token(name) => {
                tracing::info!(token = %name, method = %parts.method, path, forwarded, "admin write");
            }
            Caller::Member(id) if !path.starts_with(PEER_RPC_PREFIX) => {
                tracing::info!(member = id, method = %parts.method, path, forwarded, "write by a control-plane node's certificate");
            }
            _ => {}
        }
    }
    let request = ApiRequest {
        method: parts.method,
        path,
        query: parts.uri.query().unwrap_or_default().to_string(),
        authorization: parts.headers.get(http::header::AUTHORIZATION).cloned(),
        peer,
        caller,
        body,
    };
    answer(node, &request, forwarded).await
}

/// Answers a request whose body was read whole and whose caller was checked: here, or on the
/// leader it goes on to. A request that was `forwarded` here is not sent on again. Requests
/// an agent sends up its watch connection (decision 57) are answered here too.
pub(crate) async fn answer(
    node: &Node,
    request: &ApiRequest,
    forwarded: bool,
) -> Response<Full<Bytes>> {
    if request.caller == Caller::AskLeader {
        let metrics = node.raft.metrics().borrow().clone();
        return match leader::to_current_leader(&metrics) {
            Routed::Forward(leader) => leader::forward(node, request, &leader).await,
            Routed::Error(error) => error.into_response(),
        };
    }
    match route(node, request).await {
        Ok(response) => response,
        Err(Routed::Error(error)) => error.into_response(),
        // A forwarded request that lands on a node that is not the leader either (leadership
        // moved in between) is not sent on again: the client retries, so nothing loops.
        Err(Routed::Forward(_)) if forwarded => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "leader-moved",
            "leadership moved while the request was forwarded; try again",
        )
        .into_response(),
        Err(Routed::Forward(leader)) => leader::forward(node, request, &leader).await,
    }
}

/// The largest body a request to `path` may carry, and who sends such requests: Raft peers
/// move log entries and snapshot chunks, agents small records, operators policy files.
fn body_limit(limits: &ControlPlaneLimits, path: &str) -> (usize, &'static str) {
    let (bytes, sender) = if path == crate::heartbeat_batch::HEARTBEATS_PATH {
        let bytes = crate::heartbeat_batch::max_body_bytes(limits.max_nodes);
        return (bytes, "heartbeat batch (maxNodes names)");
    } else if path.starts_with(PEER_RPC_PREFIX) {
        (limits.max_peer_body_bytes, "peer RPC (maxPeerBodyBytes)")
    } else if path.starts_with(AGENT_PREFIX) {
        (limits.max_agent_body_bytes, "agent (maxAgentBodyBytes)")
    } else {
        (limits.max_admin_body_bytes, "admin (maxAdminBodyBytes)")
    };
    (bytes as usize, sender)
}

/// The admin and agent API, by method and path.
async fn route(node: &Node, request: &ApiRequest) -> Answer {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    match (&request.method, segments.as_slice()) {
        (&Method::GET, ["v1", "metrics"]) => Ok(Response::builder()
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(
                crate::refusals::render() + &node.heartbeat_queue.render() + &uplink::render(),
            )))
            .unwrap_or_default()),
        (&Method::GET, ["v1", "openapi.json"]) => {
            Ok(json_response(StatusCode::OK, crate::openapi::document()))
        }
        (&Method::GET, ["v1", "cluster"]) => cluster::status(node).await,
        (&Method::POST, ["v1", "cluster", "members"]) => {
            cluster::change_members(node, request, None).await
        }
        (&Method::DELETE, ["v1", "cluster", "members", id]) => {
            cluster::change_members(node, request, Some(id)).await
        }
        (&Method::POST, ["v1", "cluster", "transfer-leader"]) => {
            cluster::transfer_leader(node, request).await
        }
        (&Method::POST | &Method::PUT, ["v1", "policies"]) => policies::apply(node, request).await,
        (&Method::GET, ["v1", "policies"]) => policies::list(node, request).await,
        (&Method::GET, ["v1", "policies", kind, name]) => {
            policies::get(node, request, kind, name).await
        }
        (&Method::DELETE, ["v1", "policies", kind, name]) => {
            policies::delete(node, kind, name).await
        }
        (&Method::GET, ["v1", "ca"]) => identity::show(node).await,
        (&Method::POST, ["v1", "ca", "rotate"]) => identity::rotate(node, request).await,
        (&Method::GET, ["v1", "join-tokens"]) => identity::list(node, request).await,
        (&Method::POST, ["v1", "join-tokens"]) => identity::create(node, request).await,
        (&Method::DELETE, ["v1", "join-tokens", name]) => identity::revoke(node, name).await,
        (&Method::POST, ["v1", "agent", "join"]) => identity::join(node, request).await,
        (&Method::POST, ["v1", "agent", "renew"]) => identity::renew(node, request).await,
        (&Method::POST, ["v1", "cluster", "join"]) => {
            identity::join_control_plane(node, request).await
        }
        (&Method::GET, ["v1", "acl", "tokens"]) => tokens::list(node, request).await,
        (&Method::POST, ["v1", "acl", "tokens"]) => tokens::create(node, request).await,
        (&Method::POST, ["v1", "acl", "certificates"]) => {
            tokens::create_certificate(node, request).await
        }
        (&Method::DELETE, ["v1", "acl", "tokens", name]) => tokens::revoke(node, name).await,
        (&Method::POST, ["v1", "agent", "register"]) => registry::register(node, request).await,
        (&Method::POST, ["v1", "agent", "heartbeat"]) => registry::heartbeat(node, request).await,
        (&Method::POST, ["v1", "agent", "health"]) => registry::health(node, request).await,
        (&Method::POST, ["v1", "agent", "deregister"]) => registry::deregister(node, request).await,
        (&Method::GET, ["v1", "nodes"]) => registry::nodes(node, request, None).await,
        (&Method::GET, ["v1", "nodes", name]) => registry::nodes(node, request, Some(name)).await,
        (&Method::DELETE, ["v1", "nodes", name]) => registry::release(node, name).await,
        (&Method::GET, ["v1", "services"]) => registry::services(node, request, None).await,
        (&Method::GET, ["v1", "services", name]) => {
            registry::services(node, request, Some(name)).await
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown-path",
            format!("no API at {} {}", request.method, request.path),
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_paths_reach_the_access_check_and_routing() {
        for good in [
            "/v1/policies",
            "/v1/acl/tokens",
            "/raft/append",
            "/v1/policies/Route/a",
        ] {
            assert!(canonical(good), "{good}");
        }
        for bad in [
            "//v1/acl/tokens",
            "/v1//acl/tokens",
            "/v1/acl/tokens/",
            "/raft/../v1/policies",
            "/v1/./policies",
            "v1/policies",
            "/",
            "",
        ] {
            assert!(!canonical(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn sent_data_may_stay_unacknowledged_twice_the_header_read_timeout() {
        let limits = ControlPlaneLimits {
            header_read_timeout: hyphae_policies::Duration::from_millis(1500),
            ..ControlPlaneLimits::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        bound_unacknowledged(&accepted, unacknowledged_limit(&limits)).unwrap();
        assert_eq!(
            rustix::net::sockopt::tcp_user_timeout(&accepted).unwrap(),
            3000
        );
    }

    #[test]
    fn every_peer_rpc_gets_the_peer_body_limit_and_agents_theirs() {
        let limits = ControlPlaneLimits {
            max_admin_body_bytes: 1,
            max_agent_body_bytes: 2,
            max_peer_body_bytes: 3,
            ..ControlPlaneLimits::default()
        };
        for path in [
            crate::network::APPEND_PATH,
            crate::network::VOTE_PATH,
            crate::network::SNAPSHOT_PATH,
            crate::transfer::HOLD_ELECTIONS_PATH,
            crate::transfer::ELECT_PATH,
            crate::pre_vote::PRE_VOTE_PATH,
        ] {
            assert_eq!(body_limit(&limits, path).0, 3, "{path}");
        }
        assert_eq!(
            body_limit(&limits, crate::heartbeat_batch::HEARTBEATS_PATH).0,
            crate::heartbeat_batch::max_body_bytes(limits.max_nodes),
            "a heartbeat batch holds at most maxNodes names"
        );
        for path in [
            "/v1/agent/register",
            "/v1/agent/heartbeat",
            "/v1/agent/health",
        ] {
            assert_eq!(body_limit(&limits, path).0, 2, "{path}");
        }
        for path in [
            "/v1/policies",
            crate::transfer::TRANSFER_PATH,
            "/v1/cluster/members",
        ] {
            assert_eq!(body_limit(&limits, path).0, 1, "{path}");
        }
    }
}
