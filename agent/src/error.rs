//! Every failure the agent creates, classified by who is at fault and whether a retry is safe,
//! and mapped in one table to a status code and a `hyphae-error` reason. Errors are answers:
//! the caller always gets one of these, never a hang.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use http::StatusCode;
use http::header::HeaderName;

/// The header that tells a caller why the agent (not the application) answered.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("hyphae-error");

/// Who caused a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The caller sent something we cannot proxy.
    Caller,
    /// The destination (peer agent or instance) failed.
    Upstream,
    /// This agent's own limits or configuration.
    Agent,
}

/// What lies under a failure: the OS, protocol or parse error it came from (kept whole, so a
/// log line can show its `source()` chain), or a sentence when there is no error value.
#[derive(Clone, Debug)]
pub struct Cause(Arc<dyn Error + Send + Sync>);

impl Cause {
    /// The cause `error`, with its own chain.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Cause(Arc::new(error))
    }

    /// The error itself when it is an `E`, to answer a kind of failure in its own way.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl From<Box<dyn Error + Send + Sync>> for Cause {
    fn from(error: Box<dyn Error + Send + Sync>) -> Self {
        Cause(Arc::from(error))
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Cause(Arc::from(Box::<dyn Error + Send + Sync>::from(message)))
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Cause(Arc::from(Box::<dyn Error + Send + Sync>::from(message)))
    }
}

/// A failure on the data path. Show it with its causes (`hyphae_policies::ErrorChain`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// No service is known by the name the caller used.
    #[error("no service named `{0}` is known to this agent")]
    UnknownService(String),
    /// The route matched nothing.
    #[error("no route rule of service `{0}` matches the request")]
    NoRoute(String),
    /// The service has no endpoints (or none left after ejection and subsets).
    #[error("service `{0}` has no available endpoints")]
    NoEndpoints(String),
    /// The connection to an endpoint could not be made.
    #[error("cannot connect to {address}")]
    ConnectFailed {
        /// The endpoint.
        address: String,
        /// The OS or protocol error.
        #[source]
        reason: Cause,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// The stream or connection was reset before a response arrived.
    #[error("the upstream reset the request")]
    Reset(#[source] Cause),
    /// The upstream refused the request before processing it: a GOAWAY whose last stream is
    /// below the request's, `REFUSED_STREAM`, or a connection that closed before the request
    /// was written. Safe to send again on a new connection whatever the method.
    #[error("the upstream did not process the request")]
    Unprocessed(#[source] Cause),
    /// One try took longer than the per-try timeout.
    #[error("the try timed out after {0:?}")]
    PerTryTimeout(std::time::Duration),
    /// The whole request took longer than the request timeout.
    #[error("the request timed out after {0:?}")]
    RequestTimeout(std::time::Duration),
    /// The request timeout ran out while the caller was still sending its request's body and
    /// the instance was waiting for it: Envoy's 408 for a downstream request not complete.
    #[error("the caller had not finished sending its request when {0:?} ran out")]
    CallerTooSlow(std::time::Duration),
    /// A per-service limit is full.
    #[error("service `{service}` is at its {limit} limit")]
    Overloaded {
        /// The service.
        service: String,
        /// Which limit (`max-requests`, `max-pending`, `max-connections`).
        limit: &'static str,
    },
    /// The caller's request cannot be proxied.
    #[error("bad request")]
    BadRequest(#[source] Cause),
    /// The caller stopped sending its request's body, and the instance sent nothing either,
    /// for the stream idle timeout (`limits.streamIdleTimeout` or the route's `timeouts.idle`).
    #[error("the caller sent nothing of its request's body for {0:?}")]
    CallerIdle(std::time::Duration),
    /// The peer agent has no local instance of the requested service.
    #[error("service `{0}` has no instance on this host")]
    NoLocalInstance(String),
    /// The agent does not carry this kind of traffic to this kind of service yet.
    #[error("not carried: {0}")]
    Unsupported(&'static str),
    /// The service's access policy does not admit the caller for this request.
    #[error("service `{service}` does not admit `{caller}` for this request (AccessPolicy)")]
    Denied {
        /// The service called.
        service: String,
        /// The caller, as its certificate names it.
        caller: String,
    },
}

impl ProxyError {
    /// The status the caller receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UnknownService(_) | ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::CallerIdle(_) | ProxyError::CallerTooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Denied { .. } => StatusCode::FORBIDDEN,
            ProxyError::NoEndpoints(_)
            | ProxyError::Overloaded { .. }
            | ProxyError::NoLocalInstance(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectFailed { .. }
            | ProxyError::Reset(_)
            | ProxyError::Unprocessed(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout(_)
            | ProxyError::PerTryTimeout(_)
            | ProxyError::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `hyphae-error` reason: short, stable, machine-readable.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::UnknownService(_) => "unknown-service",
            ProxyError::NoRoute(_) => "no-route",
            ProxyError::NoEndpoints(_) => "no-endpoints",
            ProxyError::ConnectFailed { .. } => "connect-failed",
            ProxyError::ConnectTimeout(_) => "connect-timeout",
            ProxyError::Reset(_) => "upstream-reset",
            ProxyError::Unprocessed(_) => "upstream-unprocessed",
            ProxyError::PerTryTimeout(_) => "per-try-timeout",
            ProxyError::RequestTimeout(_) => "request-timeout",
            ProxyError::Overloaded { limit, .. } => limit,
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::CallerIdle(_) => "caller-idle",
            ProxyError::CallerTooSlow(_) => "caller-too-slow",
            ProxyError::NoLocalInstance(_) => "no-local-instance",
            ProxyError::Denied { .. } => "denied",
            ProxyError::Unsupported(_) => "unsupported",
        }
    }

    /// Who is at fault.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::UnknownService(_)
            | ProxyError::NoRoute(_)
            | ProxyError::BadRequest(_)
            | ProxyError::CallerIdle(_)
            | ProxyError::CallerTooSlow(_)
            | ProxyError::Denied { .. } => Side::Caller,
            ProxyError::NoEndpoints(_)
            | ProxyError::Overloaded { .. }
            | ProxyError::Unsupported(_) => Side::Agent,
            ProxyError::ConnectFailed { .. }
            | ProxyError::ConnectTimeout(_)
            | ProxyError::Reset(_)
            | ProxyError::Unprocessed(_)
            | ProxyError::PerTryTimeout(_)
            | ProxyError::RequestTimeout(_)
            | ProxyError::NoLocalInstance(_) => Side::Upstream,
        }
    }

    /// True when the request never reached an application, so even a non-idempotent request
    /// may be sent again.
    pub fn never_reached_upstream(&self) -> bool {
        matches!(
            self,
            ProxyError::ConnectFailed { .. }
                | ProxyError::ConnectTimeout(_)
                | ProxyError::Unprocessed(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_a_5xx_or_4xx_and_a_reason() {
        let errors = [
            ProxyError::UnknownService("x".into()),
            ProxyError::NoEndpoints("x".into()),
            ProxyError::ConnectTimeout("a".into()),
            ProxyError::Overloaded {
                service: "x".into(),
                limit: "max-requests",
            },
            ProxyError::BadRequest("x".into()),
        ];
        for error in errors {
            assert!(error.status().is_client_error() || error.status().is_server_error());
            assert!(!error.reason().is_empty());
        }
    }
}
