//! The endpoint step, shared by HTTP calls ([`super::call`]) and byte streams ([`super::stream`]):
//! choose an endpoint that is not ejected (the balancer decides), send to it over the peer
//! tunnel, and record how it went (load, latency, outlier ejection). It never retries; the
//! caller decides what a failure means.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response};
use smallvec::SmallVec;
use tokio::time::Instant;

use super::Proxy;
use crate::balance::{self, Candidate, EndpointLoad, SitePreference};
use crate::body::Body;
use crate::circuit::{self, Outcome};
use crate::error::{ERROR_HEADER, ProxyError};
use crate::model::{Endpoint, EndpointKey, Service, Snapshot};
use crate::state::{EndpointState, INLINE_ENDPOINTS, ServiceState};
use crate::tunnel::{Pending, PooledBody};

/// An endpoint chosen for one try or stream, with its live state.
pub struct Chosen<'s> {
    /// The endpoint.
    pub endpoint: &'s Endpoint,
    /// Its load and outlier state, shared with every other request to it.
    pub state: Arc<EndpointState>,
    /// Whether the endpoint is this node, so a call is delivered in-process ([`super::local`]).
    pub local: bool,
}

/// Chooses an endpoint of `target` (restricted to `subset`) for a new try or stream: the
/// balancer's choice among endpoints not ejected, in the caller's site when it can be, avoiding
/// those already `tried` when there is another. `now` is when the try begins, read once by the
/// caller for all of the try's bookkeeping.
pub fn choose<'s>(
    snapshot: &Snapshot,
    target: &'s Service,
    subset: Option<&BTreeMap<String, String>>,
    service: &ServiceState,
    tried: &[EndpointKey],
    now: Instant,
) -> Result<Chosen<'s>, ProxyError> {
    let mut endpoints = service.endpoints(target.endpoints.iter().filter(|e| {
        subset.is_none_or(|subset| subset.iter().all(|(k, v)| e.tags.get(k) == Some(v)))
    }));
    let candidates: SmallVec<[Candidate<'_>; INLINE_ENDPOINTS]> = endpoints
        .iter()
        .enumerate()
        .map(|(index, (endpoint, endpoint_state))| Candidate {
            index,
            local_site: endpoint.site == snapshot.site,
            ejected: is_ejected(endpoint_state, now),
            tried: tried.contains(&endpoint.key()),
            load: &endpoint_state.load,
        })
        .collect();
    target
        .metrics
        .ejected(candidates.iter().filter(|c| c.ejected).count());
    let lb = &target.policy.load_balancer;
    let mut dice = |n: usize| rand::random_range(0..n.max(1));
    let picked = balance::pick(
        &candidates,
        lb.policy,
        &SitePreference {
            locality: lb.locality,
            failover_threshold: lb.failover_threshold,
            local_registered: target.registered_in(&snapshot.site),
        },
        &service.round_robin,
        &mut dice,
    );
    drop(candidates);
    picked
        .filter(|&index| index < endpoints.len())
        .map(|index| endpoints.swap_remove(index))
        .map(|(endpoint, state)| Chosen {
            local: target.external.is_none()
                && endpoint.node.as_deref() == Some(snapshot.node.as_str()),
            endpoint,
            state,
        })
        .ok_or_else(|| ProxyError::NoEndpoints(target.name.clone()))
}

impl Chosen<'_> {
    /// Sends an HTTP call (not a CONNECT stream, which [`Chosen::send`] opens) to a peer's
    /// endpoint, over the tunnel; [`Chosen::delivered_here`] is its counterpart for this node.
    /// Answers and failures mean the same either way.
    pub async fn call(
        &self,
        proxy: &Proxy,
        target: &Service,
        service: &ServiceState,
        request: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let response = self.send(proxy, target, service, request).await?;
        Ok(response.map(crate::body::boxed))
    }

    /// What a call that [`super::local::deliver`] handed to this node's own inbound side
    /// (the endpoint being this node) comes to: what it would have been through the tunnel.
    /// The caller awaits the delivery itself, so the call's future is not held, and copied,
    /// by one more future of ours.
    pub fn delivered_here(
        &self,
        delivered: Result<Response<Body>, ProxyError>,
    ) -> Result<Response<Body>, ProxyError> {
        peer_failure(self.endpoint.address, delivered?)
    }

    /// Sends `request` to the endpoint's peer agent, connecting within the service's connect
    /// timeout and holding a slot of its pending limit while it waits. A peer's own answer that
    /// the request never reached an instance becomes [`ProxyError::ConnectFailed`].
    pub async fn send(
        &self,
        proxy: &Proxy,
        target: &Service,
        service: &ServiceState,
        request: Request<Body>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        let pending = Pending {
            limit: &service.pending,
            max: target.policy.circuit_breaker.max_pending,
            service: &target.name,
        };
        let address = self.endpoint.address;
        // An external service's pool waits for its connections itself (bounded by the
        // connect timeout); the service's request limit still holds.
        if let Some(external) = &target.external {
            return proxy
                .egress
                .send(
                    external,
                    address,
                    target.policy.timeouts.connect.get(),
                    request,
                )
                .await
                .map(|response| response.map(PooledBody::from));
        }
        let response = proxy
            .tunnels
            .send(
                address,
                self.endpoint.node.as_deref(),
                target.policy.timeouts.connect.get(),
                request,
                Some(pending),
            )
            .await?;
        peer_failure(address, response)
    }

    /// Counts one request in flight to the endpoint (what the balancer weighs) until the
    /// returned guard drops.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.state.load.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.state.load)
    }

    /// Feeds one round trip to the endpoint's latency estimate.
    pub fn observe_latency(&self, rtt: Duration, now: Instant) {
        if let Ok(mut ewma) = self.state.load.ewma.lock() {
            ewma.observe(rtt, now);
        }
    }

    /// Feeds one outcome to outlier detection, ejecting the endpoint when it has failed enough
    /// and the service's ejected share allows it.
    pub fn record(&self, target: &Service, service: &ServiceState, outcome: Outcome, now: Instant) {
        let detection = &target.policy.circuit_breaker.outlier_detection;
        // Only a failure can eject, so only a failure needs the service's ejected count.
        let ejected_now = match outcome {
            Outcome::Success => 0,
            Outcome::Failure => service
                .endpoints(&target.endpoints)
                .iter()
                .filter(|(_, s)| is_ejected(s, now))
                .count(),
        };
        let may_eject = circuit::may_eject(
            ejected_now,
            target.endpoints.len(),
            detection.max_ejected_share,
        );
        let ejected_for = self
            .state
            .outlier
            .lock()
            .ok()
            .and_then(|mut o| o.record(outcome, now, detection, may_eject));
        if let Some(duration) = ejected_for {
            target.metrics.ejection();
            target.metrics.ejected(ejected_now + 1);
            tracing::warn!(
                service = %target.name,
                endpoint = %self.endpoint.address,
                ?duration,
                "endpoint ejected by outlier detection"
            );
        }
    }
}

/// One request in flight to an endpoint; dropping it ends the count.
pub struct InFlight<'a>(&'a EndpointLoad);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether outlier detection has the endpoint ejected at `now`.
pub(crate) fn is_ejected(endpoint_state: &EndpointState, now: Instant) -> bool {
    endpoint_state
        .outlier
        .lock()
        .map(|o| o.is_ejected(now))
        .unwrap_or(false)
}

/// A peer agent's own error that means the request never reached an instance: treated like a
/// failed connect, so it is retried whatever the method.
fn peer_failure<B>(peer: SocketAddr, response: Response<B>) -> Result<Response<B>, ProxyError> {
    let reason = response
        .headers()
        .get(ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if matches!(
        reason,
        "connect-failed" | "connect-timeout" | "no-local-instance" | "upstream-unprocessed"
    ) {
        return Err(ProxyError::ConnectFailed {
            address: peer.to_string(),
            reason: format!("the peer agent could not reach the instance ({reason})").into(),
        });
    }
    Ok(response)
}
