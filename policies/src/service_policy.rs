//! `ServicePolicy`: how callers treat one service — timeouts, retries, circuit breaking, balancing.
//! Defaults live beside each field so an empty policy is a sensible one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// Spec of a `ServicePolicy`; `metadata.name` is the service it governs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePolicySpec {
    /// Connect, request and idle timeouts.
    pub timeouts: Timeouts,
    /// When and how often a failed call is tried again.
    pub retries: RetryPolicy,
    /// Limits and outlier ejection that keep one bad endpoint or a flood from sinking callers.
    pub circuit_breaker: CircuitBreaker,
    /// How an endpoint is picked for each request.
    pub load_balancer: LoadBalancer,
}

/// Timeouts for calls to a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    /// Longest wait for a connection to an endpoint. Default `1s`.
    pub connect: Duration,
    /// Longest a whole request may take, all retries included. Default `15s`.
    pub request: Duration,
    /// A connection with no traffic for this long is closed. Default `5m`.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(15),
            idle: Duration::from_secs(300),
        }
    }
}

/// Largest `retries.attempts` accepted.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// Retry rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first try, 0–10. Default 2.
    pub attempts: u32,
    /// Longest a single try may take; unset means the request timeout bounds each try.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Failures without a response that are retried. Default `[connect-failure, reset]`.
    pub on: Vec<RetryOn>,
    /// HTTP statuses that are retried. Default `[503]`.
    pub statuses: Vec<u16>,
    /// gRPC statuses (from `grpc-status`) that are retried. Default `[unavailable]`.
    pub grpc_statuses: Vec<GrpcCode>,
    /// Also retry non-idempotent requests (POST, PATCH...). Default `false`: only GET, HEAD,
    /// OPTIONS, TRACE, PUT and DELETE are retried.
    pub non_idempotent: bool,
    /// Cap on retries as a share of live traffic, so retries never multiply an outage.
    pub budget: RetryBudget,
    /// Wait between tries.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            on: vec![RetryOn::ConnectFailure, RetryOn::Reset],
            statuses: vec![503],
            grpc_statuses: vec![GrpcCode::Unavailable],
            non_idempotent: false,
            budget: RetryBudget::default(),
            backoff: Backoff::default(),
        }
    }
}

/// A failure without a usable response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The connection to the endpoint could not be made.
    ConnectFailure,
    /// The connection or stream was reset before a response arrived.
    Reset,
    /// The try hit its per-try timeout.
    Timeout,
}

/// gRPC status codes, by their canonical names in kebab-case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)] // the names are gRPC's own and documented there
pub enum GrpcCode {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl GrpcCode {
    /// The numeric code carried in `grpc-status`.
    pub fn code(self) -> u8 {
        match self {
            GrpcCode::Cancelled => 1,
            GrpcCode::Unknown => 2,
            GrpcCode::InvalidArgument => 3,
            GrpcCode::DeadlineExceeded => 4,
            GrpcCode::NotFound => 5,
            GrpcCode::AlreadyExists => 6,
            GrpcCode::PermissionDenied => 7,
            GrpcCode::ResourceExhausted => 8,
            GrpcCode::FailedPrecondition => 9,
            GrpcCode::Aborted => 10,
            GrpcCode::OutOfRange => 11,
            GrpcCode::Unimplemented => 12,
            GrpcCode::Internal => 13,
            GrpcCode::Unavailable => 14,
            GrpcCode::DataLoss => 15,
            GrpcCode::Unauthenticated => 16,
        }
    }
}

/// Retries allowed: `ratio` of live requests plus `minPerSecond`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries as a share of requests, 0–1. Default 0.2.
    #[cfg_attr(test, proptest(strategy = "0.0f64..=1.0"))]
    pub ratio: f64,
    /// Retries always allowed per second, whatever the traffic. Default 10.
    pub min_per_second: u32,
    /// How long a request counts towards the budget. Default `10s`.
    pub window: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Jittered exponential backoff between tries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Backoff {
    /// Wait before the first retry (then doubled each time, with jitter). Default `25ms`.
    pub base: Duration,
    /// Longest wait between tries. Default `250ms`.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        }
    }
}

/// Per-service limits and per-endpoint outlier ejection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Most open connections to the service from one agent. Default 1024.
    pub max_connections: u32,
    /// Most requests waiting for a connection or a slot; more get a fast 503. Default 256.
    pub max_pending: u32,
    /// Most requests in flight at once; more get a fast 503. Default 1024.
    pub max_requests: u32,
    /// Passive health: endpoints that keep failing are taken out for a while.
    pub outlier_detection: OutlierDetection,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            max_connections: 1024,
            max_pending: 256,
            max_requests: 1024,
            outlier_detection: OutlierDetection::default(),
        }
    }
}

/// When an endpoint is ejected and for how long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Failures in a row that eject an endpoint; 0 turns this rule off. Default 5.
    pub consecutive_failures: u32,
    /// Eject when the share of failures over a window passes a threshold; unset turns it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<FailureRate>,
    /// First ejection's length; each repeat ejection lasts one `baseEjectionTime` longer.
    /// Default `30s`.
    pub base_ejection_time: Duration,
    /// Longest an ejection can grow to. Default `5m`.
    pub max_ejection_time: Duration,
    /// Never eject more than this share of a service's endpoints, 0–1. Default 0.5.
    #[cfg_attr(test, proptest(strategy = "0.0f64..=1.0"))]
    pub max_ejected_share: f64,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            failure_rate: None,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejected_share: 0.5,
        }
    }
}

/// Failure-rate ejection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FailureRate {
    /// Share of failed requests that ejects, 0–1. Default 0.5.
    #[cfg_attr(test, proptest(strategy = "0.0f64..=1.0"))]
    pub threshold: f64,
    /// Window the share is measured over. Default `30s`.
    pub window: Duration,
    /// Fewest requests in the window before the rate is judged. Default 20.
    pub min_requests: u32,
}

impl Default for FailureRate {
    fn default() -> Self {
        FailureRate {
            threshold: 0.5,
            window: Duration::from_secs(30),
            min_requests: 20,
        }
    }
}

/// Endpoint choice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    /// The algorithm. Default `p2c-ewma`.
    pub policy: BalancePolicy,
    /// Whether endpoints in the caller's own site come first. Default `prefer-site`.
    pub locality: Locality,
    /// With `prefer-site`: the share of the caller's site's registered instances that must be
    /// usable (passing and not ejected) for its traffic to stay in the site; below it, every
    /// site's usable endpoints share the traffic. `0` spills only when the site has none
    /// left; `1` as soon as one fails. Default `0.5`.
    #[cfg_attr(test, proptest(strategy = "0.0f64..=1.0"))]
    pub failover_threshold: f64,
}

impl Default for LoadBalancer {
    fn default() -> Self {
        LoadBalancer {
            policy: BalancePolicy::default(),
            locality: Locality::default(),
            failover_threshold: 0.5,
        }
    }
}

/// Load-balancing algorithms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "kebab-case")]
pub enum BalancePolicy {
    /// Power of two random choices, weighed by peak-EWMA latency.
    #[default]
    P2cEwma,
    /// Each endpoint in turn.
    RoundRobin,
    /// Power of two random choices, weighed by requests in flight.
    LeastRequest,
}

/// Locality preference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "kebab-case")]
pub enum Locality {
    /// Endpoints in the caller's site; others only when local ones are ejected or saturated.
    #[default]
    PreferSite,
    /// Every endpoint alike.
    Any,
}
