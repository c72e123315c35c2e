//! Retry decisions: which failures are retried, for which requests, how long to wait, and the
//! budget that keeps retries from multiplying an outage. Pure functions plus tower's budget.

use std::error::Error;
use std::future::Future;
use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, Method, StatusCode};
use hyphae_policies::{RetryOn, RetryPolicy};
use tower::retry::budget::{Budget, TpsBudget};

use crate::body::Body;
use crate::error::ProxyError;
use crate::replay::ReplayBody;

/// Shortest and longest budget windows tower's budget accepts; policy windows are clamped.
const BUDGET_WINDOW_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// Highest retry floor per second; policy validation refuses more.
const MAX_RETRIES_PER_SECOND: u32 = hyphae_policies::validate::MAX_RETRY_FLOOR_PER_SECOND;

/// How a try ended.
pub enum TryResult<'a> {
    /// A response arrived (its status and headers, for gRPC trailers-only responses).
    Response(StatusCode, &'a HeaderMap),
    /// No response: the error says why.
    Error(&'a ProxyError),
}

/// Methods that mean the same thing when sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether the policy asks to retry this result, before budget and attempt counts.
pub fn is_retryable(policy: &RetryPolicy, method: &Method, result: &TryResult<'_>) -> bool {
    match result {
        TryResult::Error(error) => {
            let condition = match error {
                ProxyError::ConnectFailed { .. }
                | ProxyError::ConnectTimeout(_)
                | ProxyError::Unprocessed(_) => RetryOn::ConnectFailure,
                ProxyError::Reset(_) => RetryOn::Reset,
                ProxyError::PerTryTimeout(_) => RetryOn::Timeout,
                _ => return false,
            };
            // A request that never left this host can be sent again whatever its method.
            let method_ok =
                error.never_reached_upstream() || policy.non_idempotent || is_idempotent(method);
            method_ok && policy.on.contains(&condition)
        }
        TryResult::Response(status, headers) => {
            // gRPC calls are all POSTs, so the method says nothing about idempotency; listing
            // a gRPC status in the policy is the operator's statement that it is safe.
            if let Some(code) = grpc_status(headers) {
                return policy.grpc_statuses.iter().any(|c| c.code() == code);
            }
            (policy.non_idempotent || is_idempotent(method))
                && policy.statuses.contains(&status.as_u16())
        }
    }
}

/// True when a failed exchange never reached the upstream's application (RFC 9113 §8.7): hyper
/// cancelled it before it was written (the connection had closed), the stream was refused with
/// `REFUSED_STREAM`, or the peer's GOAWAY named a last stream below it (the h2 crate gives a
/// remote GOAWAY error only to those streams; streams at or below it that die with the
/// connection get an I/O error instead).
pub fn is_unprocessed(error: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote());
        }
        cause = error.source();
    }
    false
}

/// Sends a try's request with `send`, and once more when the upstream did not process it
/// ([`ProxyError::Unprocessed`]) and the body can be sent again. Such a request never reached
/// the application, so this resend is independent of the retry policy and budget; `send`
/// must not reuse the connection that refused it.
pub async fn resend_unprocessed<T, F, Fut>(body: &ReplayBody, mut send: F) -> Result<T, ProxyError>
where
    F: FnMut(Body) -> Fut,
    Fut: Future<Output = Result<T, ProxyError>>,
{
    match send(body.next_try_body()).await {
        Err(ProxyError::Unprocessed(cause)) if body.can_replay() => {
            tracing::debug!(%cause, "the upstream did not process the request; sending it again");
            send(body.next_try_body()).await
        }
        result => result,
    }
}

/// The header of a gRPC status.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The `grpc-status` of a trailers-only gRPC response.
pub fn grpc_status(headers: &HeaderMap) -> Option<u8> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// Wait before retry number `retry` (1 for the first retry): exponential from `base`, capped at
/// `max`, with full jitter (`unit` is uniform in [0, 1)).
pub fn backoff(policy: &RetryPolicy, retry: u32, unit: f64) -> Duration {
    let base = policy.backoff.base.get();
    let max = policy.backoff.max.get().max(base);
    let exponent = retry.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1 << exponent).min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// The retry budget of one service: `ratio` of requests plus `minPerSecond`, over a window.
pub struct RetryBudget {
    inner: TpsBudget,
}

impl RetryBudget {
    /// A budget for `policy`.
    pub fn new(policy: &RetryPolicy) -> Self {
        let (shortest, longest) = BUDGET_WINDOW_RANGE;
        let window = policy.budget.window.get().clamp(shortest, longest);
        let ratio = if policy.budget.ratio.is_finite() {
            policy.budget.ratio.clamp(0.0, 1.0) as f32
        } else {
            0.0
        };
        let floor = policy.budget.min_per_second.min(MAX_RETRIES_PER_SECOND);
        RetryBudget {
            inner: TpsBudget::new(window, floor, ratio),
        }
    }

    /// Counts a first try, earning a fraction of a retry.
    pub fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes a retry if the budget has one.
    pub fn withdraw(&self) -> bool {
        self.inner.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_is_retried_only_when_it_never_left_or_policy_allows() {
        let policy = RetryPolicy::default();
        let reset = ProxyError::Reset("x".into());
        let refused = ProxyError::ConnectFailed {
            address: "a".into(),
            reason: "refused".into(),
        };
        assert!(!is_retryable(
            &policy,
            &Method::POST,
            &TryResult::Error(&reset)
        ));
        assert!(is_retryable(
            &policy,
            &Method::POST,
            &TryResult::Error(&refused)
        ));
        assert!(is_retryable(
            &policy,
            &Method::GET,
            &TryResult::Error(&reset)
        ));
        let allow = RetryPolicy {
            non_idempotent: true,
            ..RetryPolicy::default()
        };
        assert!(is_retryable(
            &allow,
            &Method::POST,
            &TryResult::Error(&reset)
        ));
    }

    #[test]
    fn listed_statuses_and_grpc_codes_are_retried() {
        let policy = RetryPolicy::default();
        let empty = HeaderMap::new();
        assert!(is_retryable(
            &policy,
            &Method::GET,
            &TryResult::Response(StatusCode::SERVICE_UNAVAILABLE, &empty)
        ));
        assert!(!is_retryable(
            &policy,
            &Method::GET,
            &TryResult::Response(StatusCode::INTERNAL_SERVER_ERROR, &empty)
        ));
        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", "14".parse().unwrap());
        let unavailable = TryResult::Response(StatusCode::OK, &grpc);
        assert!(is_retryable(&policy, &Method::POST, &unavailable));
        let mut invalid = HeaderMap::new();
        invalid.insert("grpc-status", "3".parse().unwrap());
        let invalid = TryResult::Response(StatusCode::OK, &invalid);
        assert!(!is_retryable(&policy, &Method::POST, &invalid));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(backoff(&policy, 1, 1.0), Duration::from_millis(25));
        assert_eq!(backoff(&policy, 2, 1.0), Duration::from_millis(50));
        assert_eq!(backoff(&policy, 10, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(&policy, 3, 0.0), Duration::ZERO);
    }

    #[test]
    fn the_budget_allows_the_floor_then_a_share_of_traffic() {
        let mut policy = RetryPolicy::default();
        policy.budget.min_per_second = 1;
        policy.budget.ratio = 0.5;
        let budget = RetryBudget::new(&policy);
        let mut granted = 0;
        for _ in 0..100 {
            budget.deposit();
        }
        while budget.withdraw() && granted < 1000 {
            granted += 1;
        }
        // 10 s window × 1/s floor + 50% of 100 requests.
        assert!((50..=61).contains(&granted), "{granted}");
    }
}
