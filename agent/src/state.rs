//! Runtime state that outlives snapshots: per-service retry budgets and request limits, and
//! per-endpoint load and outlier state. A new snapshot keeps what it still names.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use hyphae_policies::RetryBudget as BudgetPolicy;
use smallvec::SmallVec;
use tokio::time::Instant;

use crate::balance::EndpointLoad;
use crate::circuit::{Limit, OutlierState};
use crate::model::{Endpoint, EndpointKey};
use crate::retry::RetryBudget;

/// The maps a call looks up (service and endpoint state, idle instance connections, peer
/// connections): std's map with foldhash, as their keys are not chosen by callers and SipHash
/// was a measurable share of a call's work.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Live state of one endpoint.
#[derive(Debug)]
pub struct EndpointState {
    /// Latency and requests in flight.
    pub load: EndpointLoad,
    /// Passive health.
    pub outlier: Mutex<OutlierState>,
}

/// Endpoints paired with their live state, on the stack for services of up to
/// [`INLINE_ENDPOINTS`] endpoints, so a call's pick allocates nothing.
pub type EndpointStates<'e> = SmallVec<[(&'e Endpoint, Arc<EndpointState>); INLINE_ENDPOINTS]>;

/// Endpoints of a service a call's pick holds without allocating.
pub const INLINE_ENDPOINTS: usize = 8;

/// Live state of one service.
pub struct ServiceState {
    budget_policy: BudgetPolicy,
    /// Retries left to spend.
    pub budget: RetryBudget,
    /// Requests in flight, against `circuitBreaker.maxRequests`.
    pub requests: Limit,
    /// Requests waiting for a peer connection or stream, against `circuitBreaker.maxPending`.
    pub pending: Limit,
    /// Open byte streams (TCP, upgrades), against `circuitBreaker.maxConnections`.
    pub streams: Limit,
    /// Round-robin position.
    pub round_robin: AtomicUsize,
    endpoints: Arc<Mutex<FastMap<EndpointKey, Arc<EndpointState>>>>,
}

impl ServiceState {
    /// The state of the endpoint `key`, created on first use.
    pub fn endpoint(&self, key: EndpointKey) -> Arc<EndpointState> {
        let mut states = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        state_of(&mut states, key)
    }

    /// The states of `endpoints`, each paired with its endpoint and created on first use, all
    /// under one lock.
    pub fn endpoints<'e>(
        &self,
        endpoints: impl IntoIterator<Item = &'e Endpoint>,
    ) -> EndpointStates<'e> {
        let mut states = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        endpoints
            .into_iter()
            .map(|endpoint| (endpoint, state_of(&mut states, endpoint.key())))
            .collect()
    }
}

/// The entry for `key`, created fresh if missing.
fn state_of(
    states: &mut FastMap<EndpointKey, Arc<EndpointState>>,
    key: EndpointKey,
) -> Arc<EndpointState> {
    Arc::clone(states.entry(key).or_insert_with(|| {
        Arc::new(EndpointState {
            load: EndpointLoad::new(Instant::now()),
            outlier: Mutex::new(OutlierState::default()),
        })
    }))
}

/// Every service's live state.
#[derive(Default)]
pub struct RuntimeState {
    services: Mutex<FastMap<String, Arc<ServiceState>>>,
}

impl RuntimeState {
    /// The state of `service`; a changed budget policy starts a fresh budget but keeps the
    /// endpoints' load and health.
    pub fn service(
        &self,
        service: &str,
        retries: &hyphae_policies::RetryPolicy,
    ) -> Arc<ServiceState> {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = services.get(service)
            && existing.budget_policy == retries.budget
        {
            return Arc::clone(existing);
        }
        let endpoints = services
            .get(service)
            .map(|s| Arc::clone(&s.endpoints))
            .unwrap_or_default();
        let state = Arc::new(ServiceState {
            budget_policy: retries.budget.clone(),
            budget: RetryBudget::new(retries),
            requests: Limit::default(),
            streams: Limit::default(),
            pending: Limit::default(),
            round_robin: AtomicUsize::new(0),
            endpoints,
        });
        services.insert(service.to_string(), Arc::clone(&state));
        state
    }

    /// The state of `service`, if it has been used.
    pub fn existing(&self, service: &str) -> Option<Arc<ServiceState>> {
        let services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        services.get(service).cloned()
    }
}
