//! A `ServicePolicy` on its own: timeouts, retries and the circuit breaker with its outlier
//! detection.

use super::{Checker, retries};
use crate::diagnostic::FieldPath;
use crate::{OutlierDetection, ServicePolicySpec};

/// Checks a `ServicePolicy`'s spec.
pub(super) fn check(c: &mut Checker, path: &FieldPath, spec: &ServicePolicySpec) {
    let timeouts = path.key("timeouts");
    c.positive(timeouts.key("connect"), spec.timeouts.connect);
    c.positive(timeouts.key("request"), spec.timeouts.request);
    c.positive(timeouts.key("idle"), spec.timeouts.idle);
    if spec.timeouts.connect > spec.timeouts.request {
        c.warning(
            timeouts.key("connect"),
            format!(
                "connect timeout {} is longer than the request timeout {}, so it can never fire",
                spec.timeouts.connect, spec.timeouts.request
            ),
        );
    }
    retries::check(
        c,
        &path.key("retries"),
        &spec.retries,
        Some(spec.timeouts.request),
    );
    let breaker = path.key("circuitBreaker");
    c.at_least_one(
        breaker.key("maxConnections"),
        spec.circuit_breaker.max_connections,
    );
    c.at_least_one(
        breaker.key("maxRequests"),
        spec.circuit_breaker.max_requests,
    );
    check_outliers(
        c,
        &breaker.key("outlierDetection"),
        &spec.circuit_breaker.outlier_detection,
    );
    c.share(
        path.key("loadBalancer").key("failoverThreshold"),
        spec.load_balancer.failover_threshold,
    );
}

/// Checks outlier detection: the ejected share, the ejection times and the failure rate.
fn check_outliers(c: &mut Checker, path: &FieldPath, outliers: &OutlierDetection) {
    c.share(path.key("maxEjectedShare"), outliers.max_ejected_share);
    c.positive(path.key("baseEjectionTime"), outliers.base_ejection_time);
    if outliers.base_ejection_time > outliers.max_ejection_time {
        c.error(
            path.key("maxEjectionTime"),
            format!(
                "maximum ejection time {} is shorter than the base ejection time {}",
                outliers.max_ejection_time, outliers.base_ejection_time
            ),
        );
    }
    if let Some(rate) = &outliers.failure_rate {
        let rate_path = path.key("failureRate");
        if !(rate.threshold > 0.0 && rate.threshold <= 1.0) {
            c.error(
                rate_path.key("threshold"),
                format!("must be above 0 and at most 1, got {}", rate.threshold),
            );
        }
        c.positive(rate_path.key("window"), rate.window);
        c.at_least_one(rate_path.key("minRequests"), rate.min_requests);
    }
}
