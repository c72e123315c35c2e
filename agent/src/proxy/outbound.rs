//! Outbound listeners: where local apps' calls enter the mesh. An upstream port leads to one
//! service; the HTTP proxy port routes by the request's host. HTTP/1.1 and HTTP/2 (prior
//! knowledge) are detected per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{Proxy, call, error_response};
use crate::body::{self, Body};
use crate::error::ProxyError;
use crate::model::Snapshot;

/// Where an outbound listener sends its calls.
#[derive(Clone, Debug)]
pub enum Target {
    /// Every call goes to this service (an `upstreams:` port).
    Service(String),
    /// The service is named by the request's host (the HTTP proxy port).
    ByHost,
}

/// Smallest HTTP/1 read buffer hyper accepts.
const MIN_HTTP1_BUFFER: usize = 8192;

/// Serves one outbound connection until it closes or shutdown finishes it gracefully.
pub async fn serve(
    proxy: Arc<Proxy>,
    target: Target,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let limits = proxy.snapshot.load().limits.clone();
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
        .max_header_list_size(limits.max_header_bytes);
    let service = service_fn(move |request: Request<Incoming>| {
        let proxy = Arc::clone(&proxy);
        let target = target.clone();
        async move { Ok::<_, Infallible>(handle(&proxy, &target, request).await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, error = %crate::tunnel::error_chain(&*error), "outbound connection ended with an error");
    }
}

async fn handle(proxy: &Proxy, target: &Target, request: Request<Incoming>) -> Response<Body> {
    let request = request.map(body::boxed);
    let service = match target {
        Target::Service(name) => name.clone(),
        Target::ByHost => {
            let snapshot = proxy.snapshot.load();
            match service_by_host(&snapshot, &proxy.zone, &request) {
                Ok(name) => name,
                Err(error) => return error_response(&error),
            }
        }
    };
    call::call(proxy, &service, request).await
}

/// The service a proxied request names by its absolute URI or `Host` header.
fn service_by_host(
    snapshot: &Snapshot,
    zone: &str,
    request: &Request<Body>,
) -> Result<String, ProxyError> {
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .ok_or_else(|| ProxyError::BadRequest("the request names no host".into()))?;
    snapshot
        .service_for_host(&host, zone)
        .map(|s| s.name.clone())
        .ok_or(ProxyError::UnknownService(host))
}
