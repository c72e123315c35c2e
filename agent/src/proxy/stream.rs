//! Byte streams to a service through a peer agent: opaque TCP connections and HTTP upgrades
//! (WebSocket) each ride one HTTP/2 CONNECT stream on the pooled peer connection. Only the
//! connect is retried, and only when the stream never reached an instance.

use super::headers::{
    UPGRADE_DECLINED, UPGRADE_PROTOCOL, reason_from_header, strip_hop_by_hop, upgrade_request,
};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyphae_policies::ErrorChain;
use tokio::time::Instant;

use super::egress::EgressStream;
use super::headers::DESTINATION;
use super::{Proxy, endpoint};
use crate::body::{self, Body};
use crate::circuit::{Outcome, Permit};
use crate::error::{Cause, ProxyError};
use crate::model::{EndpointKey, Service, Snapshot};
use crate::tunnel::PooledBody;

/// Where an open stream's bytes go.
pub enum Upstream {
    /// A peer agent's response to CONNECT (200 when the instance is on the line): upgrade it
    /// to get the bytes, and keep it while they flow (it holds the stream's place on its
    /// connection).
    Peer(Response<PooledBody>),
    /// A connection straight to an external service.
    Direct(EgressStream),
    /// An external service's answer to an upgrade request (a 101 when it took it): upgrade it
    /// to get the bytes.
    External(Response<Incoming>),
}

/// An open stream: where its bytes go and the slot it holds in the service's stream limit.
pub struct OpenStream {
    /// The other end.
    pub upstream: Upstream,
    /// Held for as long as the stream lives.
    pub permit: Permit,
    /// The service's idle timeout for streams.
    pub idle: std::time::Duration,
}

impl OpenStream {
    /// The stream, or the answer that refused it as the caller gets it: a peer's anything
    /// but 200 (with the instance's 2xx status and reason phrase it carried), an external
    /// service's anything but 101.
    pub fn accepted(self) -> Result<OpenStream, Box<Response<Body>>> {
        match self.upstream {
            Upstream::Peer(response) if response.status() != StatusCode::OK => {
                let mut response = response.map(body::boxed);
                strip_hop_by_hop(response.headers_mut());
                // Only a peer's: a 2xx that declined the upgrade travels as 502.
                if let Some(status) = response
                    .headers_mut()
                    .remove(UPGRADE_DECLINED)
                    .and_then(|status| StatusCode::from_bytes(status.as_bytes()).ok())
                    .filter(StatusCode::is_success)
                {
                    *response.status_mut() = status;
                }
                reason_from_header(&mut response);
                Err(Box::new(response))
            }
            Upstream::External(response)
                if response.status() != StatusCode::SWITCHING_PROTOCOLS =>
            {
                let mut response = response.map(body::boxed);
                strip_hop_by_hop(response.headers_mut());
                Err(Box::new(response))
            }
            upstream => Ok(OpenStream { upstream, ..self }),
        }
    }

    /// The headers of the upgrade's 101 (a peer carries the instance's in its 200); none for
    /// a direct connection.
    pub fn headers(&self) -> Option<&HeaderMap> {
        match &self.upstream {
            Upstream::Peer(response) => Some(response.headers()),
            Upstream::External(response) => Some(response.headers()),
            Upstream::Direct(_) => None,
        }
    }
}

/// Opens a stream to `service`. `authority` becomes the CONNECT target (the caller's host, for
/// upgrades); `headers` carry the upgrade request's headers.
pub async fn open(
    proxy: &Proxy,
    snapshot: &Snapshot,
    service: &str,
    authority: Option<&str>,
    headers: HeaderMap,
) -> Result<OpenStream, ProxyError> {
    let target: &Service = snapshot
        .service(service)
        .ok_or_else(|| ProxyError::UnknownService(service.to_string()))?;
    let retries = &target.policy.retries;
    let state = proxy.runtime.service(&target.name, retries);
    let permit = state
        .streams
        .try_acquire(target.policy.circuit_breaker.max_connections)
        .ok_or_else(|| ProxyError::Overloaded {
            service: target.name.clone(),
            limit: "max-connections",
        })?;
    let authority = connect_target(&target.name, authority);
    let authority =
        Authority::try_from(authority).map_err(|e| ProxyError::BadRequest(Cause::new(e)))?;
    let mut tried: Vec<EndpointKey> = Vec::new();
    loop {
        let chosen = endpoint::choose(snapshot, target, None, &state, &tried, Instant::now())?;
        tried.push(chosen.endpoint.key());
        let result = match &target.external {
            Some(external) if headers.contains_key(UPGRADE_PROTOCOL) => {
                let request = external_upgrade(&headers, &authority)?;
                proxy
                    .egress
                    .upgrade(
                        external,
                        chosen.endpoint.address,
                        target.policy.timeouts.connect.get(),
                        request,
                    )
                    .await
                    .map(Upstream::External)
            }
            Some(external) => proxy
                .egress
                .connect(
                    external,
                    chosen.endpoint.address,
                    target.policy.timeouts.connect.get(),
                )
                .await
                .map(Upstream::Direct),
            None => {
                let request = connect_request(&authority, &headers, &chosen)?;
                chosen
                    .send(proxy, target, &state, request)
                    .await
                    .map(Upstream::Peer)
            }
        };
        let outcome = if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        chosen.record(target, &state, outcome, Instant::now());
        match result {
            Ok(upstream) => {
                return Ok(OpenStream {
                    upstream,
                    permit,
                    idle: target.policy.timeouts.idle.get(),
                });
            }
            Err(error)
                if error.never_reached_upstream()
                    && (tried.len() as u32) <= retries.attempts
                    && tried.len() < target.endpoints.len() =>
            {
                tracing::debug!(service = %target.name, error = %ErrorChain(&error), "stream connect failed; trying another endpoint");
            }
            Err(error) => return Err(error),
        }
    }
}

/// The CONNECT target a stream to `service` names: the caller's `authority` (with port 80 when
/// it has none), else the service itself: a port's view (`multi:5432`) names its port
/// already, a whole service port 0.
fn connect_target(service: &str, authority: Option<&str>) -> String {
    match authority {
        Some(authority) if authority.contains(':') => authority.to_string(),
        Some(authority) => format!("{authority}:80"),
        None if service.contains(':') => service.to_string(),
        None => format!("{service}:0"),
    }
}

/// The upgrade request an external service is sent, from the stream's `headers` (the caller's
/// upgrade headers with the `hyphae-upgrade-*` fields): the `Host` is the service's own, set
/// by egress.
fn external_upgrade(
    headers: &HeaderMap,
    authority: &Authority,
) -> Result<Request<Body>, ProxyError> {
    let mut headers = headers.clone();
    let protocol = headers
        .remove(UPGRADE_PROTOCOL)
        .ok_or_else(|| ProxyError::BadRequest("an upgrade names no protocol".into()))?;
    upgrade_request(headers, protocol, Some(authority))
}

/// The CONNECT request that opens a stream through the peer agent in front of `chosen`.
fn connect_request(
    authority: &Authority,
    headers: &HeaderMap,
    chosen: &endpoint::Chosen<'_>,
) -> Result<Request<body::Body>, ProxyError> {
    let mut request = Request::new(body::empty());
    *request.method_mut() = Method::CONNECT;
    *request.uri_mut() = Uri::from(authority.clone());
    *request.headers_mut() = headers.clone();
    let destination = chosen.endpoint.destination_header()?;
    request.headers_mut().insert(DESTINATION, destination);
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_to_one_port_of_a_service_names_that_port_once() {
        // `multi:5432:0` did not parse: every TCP stream to a port of a service with several
        // ports was refused.
        for (service, authority, target) in [
            ("multi:5432", None, "multi:5432"),
            ("db", None, "db:0"),
            ("chat", Some("chat.mesh"), "chat.mesh:80"),
            ("chat", Some("chat.mesh:8080"), "chat.mesh:8080"),
        ] {
            let made = connect_target(service, authority);
            assert_eq!(made, target);
            assert!(Authority::try_from(made.as_str()).is_ok(), "{made}");
        }
    }
}
