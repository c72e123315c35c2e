//! One call to a service, made resilient: route, per-service request limit, then tries — each
//! to an endpoint chosen by the balancer, over the peer tunnel, under a per-try timeout —
//! retried within the budget, all under the request timeout. Always ends in a response.

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::Body as _;
use hyphae_policies::{HeaderRewrite, RetryPolicy};
use tokio::time::Instant;

use super::endpoint::{self, Chosen};
use super::headers::{
    Addressed, DESTINATION, REASON, absolute_uri, path_or_root, reason_from_header,
    strip_hop_by_hop,
};
use super::inbound::OwnCall;
use super::{Proxy, error_response};
use crate::body::Body;
use crate::circuit::Outcome;
use crate::error::{ERROR_HEADER, ProxyError};
use crate::metrics;
use crate::model::{DEFAULT_ROUTE, EndpointKey, Service, Snapshot};
use crate::replay::ReplayBody;
use crate::retry::{self, TryResult};
use crate::route::{self, Destination};
use crate::state::ServiceState;
use crate::time_limit;
use crate::watched_body::{self, BodyIdle, Quiet, StreamActivity};

/// Makes a call to `service` and returns the answer: the upstream's response or the agent's
/// own error response. `addressed` is the authority the request names, read once by the port
/// that took it (`None`: it names none, and the service's name stands for it).
pub async fn call(
    proxy: &Proxy,
    service: &str,
    request: Request<Body>,
    addressed: Option<&Addressed>,
) -> Response<Body> {
    let started = Instant::now();
    let snapshot = proxy.snapshot.load_full();
    let Some(known) = snapshot.service(service) else {
        let response = error_response(&ProxyError::UnknownService(service.to_string()));
        metrics::request(service, DEFAULT_ROUTE, response.status(), started.elapsed());
        return response;
    };
    let (response, answered) =
        match call_service(proxy, &snapshot, known, request, addressed, started).await {
            Ok(answered) => answered,
            Err(error) => (error_response(&error), Instant::now()),
        };
    known.metrics.request(
        response.status(),
        answered.saturating_duration_since(started),
    );
    response
}

/// The answer and when its try ended: the clock is read once as a try ends and that reading
/// serves the endpoint's latency, its outlier state and the call's own duration.
type Answered = (Response<Body>, Instant);

async fn call_service(
    proxy: &Proxy,
    snapshot: &Snapshot,
    service: &Service,
    request: Request<Body>,
    addressed: Option<&Addressed>,
    started: Instant,
) -> Result<Answered, ProxyError> {
    let (parts, body) = request.into_parts();
    let mut dice = |n: u64| rand::random_range(0..n.max(1));
    let destination = route::choose(&service.name, service.route.as_ref(), &parts, &mut dice)
        .ok_or_else(|| ProxyError::NoRoute(service.name.clone()))?;
    // A port's view (`payments:9001`) stays itself where its route leads to its service.
    let target = if destination.service == service.name
        || destination.service == crate::model::base_name(&service.name)
    {
        service
    } else {
        snapshot
            .service(destination.service)
            .ok_or_else(|| ProxyError::UnknownService(destination.service.to_string()))?
    };
    let rule = destination.rule;
    let retries = rule
        .and_then(|r| r.retries.as_ref())
        .unwrap_or(&target.policy.retries);
    let request_timeout = rule
        .and_then(|r| r.timeouts.as_ref())
        .and_then(|t| t.request)
        .unwrap_or(target.policy.timeouts.request)
        .get();
    let state = proxy.runtime.service(&target.name, retries);
    let max_requests = target.policy.circuit_breaker.max_requests;
    let _permit =
        state
            .requests
            .try_acquire(max_requests)
            .ok_or_else(|| ProxyError::Overloaded {
                service: target.name.clone(),
                limit: "max-requests",
            })?;
    state.budget.deposit();
    // The series is registered for every call, so `/metrics` shows it as soon as a call was
    // made; a body that has already ended has no bytes to count and is not wrapped.
    let sent = target.metrics.bytes_sent();
    // A route rule's idle timeout stands for the agent's, as Envoy's route `idle_timeout`
    // does for `stream_idle_timeout`.
    let idle = rule
        .and_then(|r| r.timeouts.as_ref())
        .and_then(|t| t.idle)
        .unwrap_or(snapshot.limits.stream_idle_timeout)
        .get();
    // The two bodies share when either last moved only when there are two.
    let (body, activity) = if body.is_end_stream() {
        (body, None)
    } else {
        let activity = (!idle.is_zero()).then(StreamActivity::new);
        let body = watched_body::watched(body, sent.clone(), Quiet::Caller, idle, activity.clone());
        (body, activity)
    };
    let body = ReplayBody::new(body, snapshot.limits.retry_buffer_bytes as usize);
    let call = Call {
        proxy,
        snapshot,
        target,
        destination: &destination,
        retries,
        state: &state,
        parts: &parts,
        addressed,
        body: &body,
        idle,
        activity,
        started,
    };
    match time_limit::until(started + request_timeout, || call.run()).await {
        Ok((result, ended)) => result.map(|response| (response, ended)),
        Err(_) if body.awaiting_caller() => Err(ProxyError::CallerTooSlow(request_timeout)),
        Err(_) => Err(ProxyError::RequestTimeout(request_timeout)),
    }
}

/// What [`Call::forwarded`] makes: the authority, the `Host` value it was read from if any, the
/// path, and the request.
type Forwarded = (Authority, Option<HeaderValue>, PathAndQuery, Request<Body>);

/// Everything one call needs, borrowed for its lifetime.
struct Call<'a> {
    proxy: &'a Proxy,
    snapshot: &'a Snapshot,
    target: &'a Service,
    destination: &'a Destination<'a>,
    retries: &'a RetryPolicy,
    state: &'a ServiceState,
    parts: &'a Parts,
    /// The authority the caller addressed, and the `Host` it was read from if any.
    addressed: Option<&'a Addressed>,
    body: &'a ReplayBody,
    /// How long the answer's body may keep its caller waiting, with the request quiet too.
    idle: std::time::Duration,
    /// When the request's body last moved, for the answer's idle timeout; `None` without one.
    activity: Option<std::sync::Arc<StreamActivity>>,
    /// When the call began: the first try's start and the request timeout's origin.
    started: Instant,
}

impl Call<'_> {
    /// The tries' result and when the last try ended.
    async fn run(&self) -> (Result<Response<Body>, ProxyError>, Instant) {
        // Endpoints of earlier tries; filled only when there is a retry, so a call that needs
        // one try allocates nothing for it.
        let mut tried: Vec<EndpointKey> = Vec::new();
        let mut retries_done = 0;
        let mut began = self.started;
        loop {
            let chosen = match endpoint::choose(
                self.snapshot,
                self.target,
                self.destination.subset,
                self.state,
                &tried,
                began,
            ) {
                Ok(chosen) => chosen,
                Err(error) => return (Err(error), Instant::now()),
            };
            let (mut result, ended) = self.try_once(&chosen, began).await;
            // A try that failed because the caller's own body did (a malformed chunk, say) is
            // the caller's fault, whatever the peer made of the cut-off request.
            let upstream_failed = match &result {
                Ok(response) => response.headers().contains_key(ERROR_HEADER),
                Err(_) => true,
            };
            if upstream_failed && let Some(cause) = self.body.failed() {
                result = Err(match cause.downcast_ref::<BodyIdle>() {
                    Some(idle) => ProxyError::CallerIdle(idle.idle),
                    None => ProxyError::BadRequest(cause),
                });
            }
            let try_result = match &result {
                Ok(response) => TryResult::Response(response.status(), response.headers()),
                Err(error) => TryResult::Error(error),
            };
            let wanted = retries_done < self.retries.attempts
                && self.body.can_replay()
                && retry::is_retryable(self.retries, &self.parts.method, &try_result);
            if wanted {
                if self.state.budget.withdraw() {
                    retries_done += 1;
                    tried.push(chosen.endpoint.key());
                    self.target.metrics.retry();
                    let wait = retry::backoff(self.retries, retries_done, rand::random::<f64>());
                    tracing::debug!(service = %self.target.name, retry = retries_done, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                    began = Instant::now();
                    continue;
                }
                self.target.metrics.budget_exhausted();
                tracing::info!(service = %self.target.name, "retry budget exhausted; answering with the last result");
            }
            return (result.map(|response| self.finish(response)), ended);
        }
    }

    /// One try against the chosen endpoint, with its bookkeeping: load, latency and outlier
    /// state. A request the peer did not process goes once more on a new connection, outside
    /// the retry policy: it never reached an application. `began` is when the try began; the
    /// result comes with when it ended.
    async fn try_once(
        &self,
        chosen: &Chosen<'_>,
        began: Instant,
    ) -> (Result<Response<Body>, ProxyError>, Instant) {
        // Built where it is awaited, not kept in a variable first: a future in a variable is
        // copied whole again into the place it is awaited from, and this one holds the try.
        let send = || {
            retry::resend_unprocessed(self.body, |body| async {
                if chosen.local {
                    let call = self.own_call(body, chosen)?;
                    return chosen.delivered_here(super::local::deliver(self.proxy, call).await);
                }
                let request = self.forward_request(body, chosen)?;
                chosen
                    .call(self.proxy, self.target, self.state, request)
                    .await
            })
        };
        let in_flight = chosen.in_flight();
        let result = match self.retries.per_try_timeout.map(|d| d.get()) {
            Some(limit) => time_limit::until(began + limit, send)
                .await
                .unwrap_or(Err(ProxyError::PerTryTimeout(limit))),
            None => send().await,
        };
        drop(in_flight);
        let now = Instant::now();
        let outcome = match &result {
            Ok(response) if !response.status().is_server_error() => Outcome::Success,
            _ => Outcome::Failure,
        };
        chosen.observe_latency(now.saturating_duration_since(began), now);
        chosen.record(self.target, self.state, outcome, now);
        (result, now)
    }

    /// The request as sent to the peer agent: HTTP/2, original authority, no hop-by-hop
    /// headers, the destination service in a header, the rule's header rewrites applied.
    fn forward_request(
        &self,
        body: Body,
        chosen: &Chosen<'_>,
    ) -> Result<Request<Body>, ProxyError> {
        let (authority, _, path, mut request) = self.forwarded(body)?;
        *request.uri_mut() = absolute_uri(Scheme::HTTP, authority, path)?;
        let headers = request.headers_mut();
        headers.insert(DESTINATION, chosen.endpoint.destination_header()?);
        if let Some(rule) = self.destination.rule {
            rewrite(headers, &rule.request_headers);
        }
        Ok(request)
    }

    /// The call as this node's own inbound side takes it: what [`Call::forward_request`]
    /// makes, with the destination and the authority beside the request instead of in its
    /// header and URI (the target stays in origin form). Its headers end as the inbound side
    /// leaves a peer's after taking the destination header out: a rewrite may set, add or
    /// remove that header, so with rewrites it goes in and comes out again as for a peer; with
    /// none, only a copy the caller sent is taken out (where ours would have replaced it).
    fn own_call(&self, body: Body, chosen: &Chosen<'_>) -> Result<OwnCall, ProxyError> {
        let (authority, host, path, mut request) = self.forwarded(body)?;
        // `path_or_root` gave `/` for an empty path, so origin form says what an absolute URI
        // says, and the access check sees what it sees in a peer's call.
        *request.uri_mut() = Uri::from(path);
        let headers = request.headers_mut();
        let destination = match self.destination.rule {
            Some(rule) if !rule.request_headers.is_empty() => {
                headers.insert(DESTINATION, chosen.endpoint.destination_header()?);
                rewrite(headers, &rule.request_headers);
                headers.remove(DESTINATION)
            }
            _ => {
                let destination = chosen.endpoint.destination_header()?;
                headers.remove(DESTINATION);
                Some(destination)
            }
        };
        Ok(OwnCall {
            destination,
            authority,
            host,
            request,
        })
    }

    /// What a forwarded request starts from, to a peer or to this node: the authority the
    /// caller addressed (and its `Host` value when it was read from there), the path, and the
    /// request with the caller's method, HTTP/2, and its headers without hop-by-hop ones or
    /// `Host` (HTTP/2 carries the authority instead).
    fn forwarded(&self, body: Body) -> Result<Forwarded, ProxyError> {
        let parts = self.parts;
        let (authority, host) = self
            .addressed
            .cloned()
            .or_else(|| Some((Authority::try_from(self.target.name.as_str()).ok()?, None)))
            .ok_or_else(|| ProxyError::BadRequest("the request names no host".into()))?;
        let path = path_or_root(parts);
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.version_mut() = Version::HTTP_2;
        let headers = request.headers_mut();
        headers.clone_from(&parts.headers);
        strip_hop_by_hop(headers);
        headers.remove(http::header::HOST);
        Ok((authority, host, path, request))
    }

    /// The upstream response as the caller receives it.
    fn finish(&self, response: Response<Body>) -> Response<Body> {
        let received = self.target.metrics.bytes_received();
        let activity = self.activity.clone();
        let mut response = response.map(|b| {
            watched_body::watched(b, received.clone(), Quiet::Instance, self.idle, activity)
        });
        strip_hop_by_hop(response.headers_mut());
        if let Some(rule) = self.destination.rule {
            rewrite(response.headers_mut(), &rule.response_headers);
        }
        // The agent answers in its own HTTP version (RFC 9110 §6.2). An answer that crossed
        // the tunnel says HTTP/2, for which hyper's HTTP/1.1 server neither tells an HTTP/1.0
        // caller that asked for keep-alive that the connection stays open nor closes it: the
        // caller waited for a close that came only with the idle timeout.
        if self.parts.version == Version::HTTP_2 {
            response.headers_mut().remove(REASON);
        } else {
            *response.version_mut() = Version::HTTP_11;
            reason_from_header(&mut response);
        }
        response
    }
}

/// Applies a header rewrite; names and values were validated with the policy, and any that
/// still fail to convert are skipped.
fn rewrite(headers: &mut http::HeaderMap, rewrite: &HeaderRewrite) {
    for name in &rewrite.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in &rewrite.set {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    for (name, value) in &rewrite.add {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
}
