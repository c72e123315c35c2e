//! The data path: outbound listeners take calls from local apps, `call` makes each one
//! resilient (route → limit → retries → endpoint → tunnel) and `stream` opens byte streams;
//! both go through `endpoint` to choose an endpoint, send to it and record the outcome. The
//! inbound listener delivers calls from peer agents to this host's instances; `egress` sends
//! calls for external services straight to them.

pub mod call;
pub mod detect;
pub mod egress;
pub mod endpoint;
pub mod h1_wire;
pub mod headers;
pub mod inbound;
pub mod instance_exchange;
pub mod instance_pool;
pub mod local;
pub mod outbound;
pub mod pipe;
pub mod stream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderValue, Method, Response};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyphae_policies::ErrorChain;
use tokio_util::task::TaskTracker;

use crate::body::{self, Body};
use crate::error::{ERROR_HEADER, ProxyError};
use crate::model::Snapshot;
use crate::state::RuntimeState;
use crate::tunnel::Tunnels;

/// Smallest HTTP/1 read buffer hyper accepts; also the floor of the head an instance may
/// send, so `limits.maxHeaderBytes` bounds heads the same way in both directions.
pub const MIN_HTTP1_BUFFER: usize = 8192;

/// Everything the data path shares: the served snapshot (swapped atomically on reload), peer
/// connections and live per-service state.
pub struct Proxy {
    /// What is being served.
    pub snapshot: ArcSwap<Snapshot>,
    /// Connections to peer agents.
    pub tunnels: Tunnels,
    /// Connections to external services.
    pub egress: egress::Egress,
    /// Connections to this host's instances, for calls from peers and from this node.
    pub local: inbound::LocalClients,
    /// This node as the caller of its own instances.
    pub own_caller: local::OwnCaller,
    /// Budgets, limits, endpoint load and health.
    pub runtime: RuntimeState,
    /// The mesh DNS zone.
    pub zone: String,
    /// Owns the byte streams spliced after an upgrade or CONNECT, which outlive the request
    /// that opened them: the daemon's connection tracker, so a drain waits for them too.
    pub tasks: TaskTracker,
}

impl Proxy {
    /// A proxy serving `snapshot` under the mesh zone `zone` (`spec.dns.zone`), reaching peers
    /// through `tunnels` and local instances through `local`, spawning its streams on `tasks`.
    pub fn new(
        snapshot: Snapshot,
        tunnels: Tunnels,
        local: inbound::LocalClients,
        tasks: TaskTracker,
        zone: &str,
    ) -> Arc<Self> {
        Arc::new(Proxy {
            snapshot: ArcSwap::from_pointee(snapshot),
            tunnels,
            egress: egress::Egress::default(),
            local,
            own_caller: local::OwnCaller::default(),
            runtime: RuntimeState::default(),
            zone: zone.to_string(),
            tasks,
        })
    }
}

/// hyper's HTTP/2 server as the outbound and inbound ports run it, with the agent's limits on
/// streams per connection, streams reset before they were accepted (rapid reset) and header
/// sizes. A client that does not answer a PING within `headerReadTimeout`, sent after as long
/// without a frame from it, is closed: hyper's HTTP/2 server has no header read timeout, and a
/// client that goes silent would otherwise hold its connection for ever (decision 62).
pub fn http2_server(
    limits: &hyphae_policies::AgentLimits,
) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let silence = limits.header_read_timeout.get();
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(silence)
        .keep_alive_timeout(silence)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams as usize)
        .max_header_list_size(limits.max_header_bytes);
    builder
}

/// Whether the outbound ports serve HTTP/2 with the agent's own server (the default since
/// decision 90) rather than hyper's, which `HYPHAE_HTTP2_SERVER=hyper` in the agent's
/// environment brings back for one release, as a way out should the new server misbehave.
/// Read once.
pub fn own_http2_server() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| std::env::var("HYPHAE_HTTP2_SERVER").as_deref() != Ok("hyper"))
}

/// Whether the outbound ports serve HTTP/1.1 with the agent's own server (the default since
/// decision 93) rather than hyper's, which `HYPHAE_HTTP1_SERVER=hyper` in the agent's
/// environment brings back for one release, as a way out should the new server misbehave.
/// Read once.
pub fn own_http1_server() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| std::env::var("HYPHAE_HTTP1_SERVER").as_deref() != Ok("hyper"))
}

/// The own HTTP/2 server's limits from the agent's: the same streams, resets and header
/// sizes as hyper's server is given, and hyper's 1 MiB windows.
pub fn own_http2_limits(limits: &hyphae_policies::AgentLimits) -> crate::http2::connection::Limits {
    crate::http2::connection::Limits {
        max_concurrent_streams: limits.max_concurrent_streams,
        max_header_list_size: limits.max_header_bytes,
        max_pending_resets: limits.max_pending_accept_reset_streams,
        ..crate::http2::connection::Limits::default()
    }
}

/// The own HTTP/2 server's keep-alive: a PING after `headerReadTimeout` of silence, answered
/// within as long, as [`http2_server`] sets hyper's (decision 62).
pub fn own_http2_keep_alive(
    limits: &hyphae_policies::AgentLimits,
) -> crate::http2::server::KeepAlive {
    let silence = limits.header_read_timeout.get();
    crate::http2::server::KeepAlive {
        interval: silence,
        timeout: silence,
    }
}

/// A rare path's future (a tunnel, an upgrade), boxed and polled through a pointer the
/// compiler cannot see through. Boxed, it keeps every request's future small; polled
/// out of line, its code and locals are not inlined into the poll of the common path, whose
/// stack frame would otherwise hold room for them on every request (decision 98).
pub fn out_of_line<'a, T>(
    future: impl Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>> {
    Box::pin(future)
}

/// The answer for a failure the agent created: its status, `hyphae-error: <reason>`, a one-line
/// body, a counter and one log line.
pub fn error_response(error: &ProxyError) -> Response<Body> {
    crate::metrics::error(error.reason());
    let chain = ErrorChain(error);
    tracing::warn!(reason = error.reason(), side = ?error.side(), "{chain}");
    let mut response = Response::new(body::full(format!("{chain}\n")));
    *response.status_mut() = error.status();
    response
        .headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(error.reason()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The answer as a HEAD request gets it: without a body (RFC 9110 §9.3.2). An instance's answer
/// to a HEAD has none already; the agent's own error answers have a one-line body, which over
/// HTTP/2 would reset the stream instead of answering.
pub fn without_body_for_head(method: &Method, response: Response<Body>) -> Response<Body> {
    if method == Method::HEAD {
        response.map(|_| body::empty())
    } else {
        response
    }
}
