//! The agent's Prometheus metrics: names, help texts and the recording helpers the data path
//! calls. Labels are bounded sets (service, status class, reason, listener), never raw paths.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Request and response body bytes of HTTP calls, by service and direction.
pub const HTTP_BYTES: &str = "hyphae_http_body_bytes_total";
/// Requests answered, by service, route and status class.
pub const REQUESTS: &str = "hyphae_requests_total";
/// Request duration, by service.
pub const REQUEST_DURATION: &str = "hyphae_request_duration_seconds";
/// Retries sent.
pub const RETRIES: &str = "hyphae_retries_total";
/// Retries refused because the budget was spent.
pub const RETRY_BUDGET_EXHAUSTED: &str = "hyphae_retry_budget_exhausted_total";
/// Endpoint ejections by outlier detection.
pub const EJECTIONS: &str = "hyphae_outlier_ejections_total";
/// Endpoints ejected now.
pub const EJECTED: &str = "hyphae_endpoints_ejected";
/// Failures the agent answered itself, by reason.
pub const ERRORS: &str = "hyphae_errors_total";
/// Open connections, by listener.
pub const CONNECTIONS: &str = "hyphae_connections_open";
/// Connections refused at the connection limit.
pub const CONNECTIONS_REFUSED: &str = "hyphae_connections_refused_total";
/// Bytes carried by TCP and upgraded streams, by service and direction.
pub const STREAM_BYTES: &str = "hyphae_stream_bytes_total";
/// Configuration reloads, by result.
pub const RELOADS: &str = "hyphae_config_reloads_total";
/// Revision of the snapshot being served.
pub const REVISION: &str = "hyphae_config_revision";

/// Histogram buckets for request durations, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder and describes every metric.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION.to_string()),
            &DURATION_BUCKETS,
        )?
        .install_recorder()?;
    describe_counter!(
        REQUESTS,
        "Requests answered, by service, route and status class."
    );
    describe_counter!(
        HTTP_BYTES,
        metrics::Unit::Bytes,
        "HTTP body bytes, by service and direction (sent is the request body, received the response body)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Request duration, by service."
    );
    describe_counter!(RETRIES, "Retries sent, by service.");
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        "Retries refused because the retry budget was spent."
    );
    describe_counter!(
        EJECTIONS,
        "Endpoints ejected by outlier detection, by service."
    );
    describe_gauge!(EJECTED, "Endpoints ejected now, by service.");
    describe_counter!(ERRORS, "Failures answered by the agent itself, by reason.");
    describe_gauge!(CONNECTIONS, "Open connections, by listener.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed at once because the connection limit was reached."
    );
    describe_counter!(
        STREAM_BYTES,
        metrics::Unit::Bytes,
        "Bytes carried by TCP and upgraded streams, by service and direction (sent is towards the service)."
    );
    describe_counter!(RELOADS, "Configuration reloads, by result.");
    describe_gauge!(
        REVISION,
        "Revision of the configuration snapshot being served."
    );
    Ok(handle)
}

/// The counter of HTTP body bytes for `service` in `direction` (`sent` or `received`).
pub fn http_bytes(service: &str, direction: &'static str) -> metrics::Counter {
    counter!(HTTP_BYTES, "service" => service.to_string(), "direction" => direction)
}

/// Records an answered request; `route` is the service's Route, or `default` without one.
pub fn request(service: &str, route: &str, status: http::StatusCode, elapsed: Duration) {
    let class = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!(
        REQUESTS,
        "service" => service.to_string(),
        "route" => route.to_string(),
        "status_class" => class
    )
    .increment(1);
    histogram!(REQUEST_DURATION, "service" => service.to_string()).record(elapsed.as_secs_f64());
}

/// Records a retry.
pub fn retry(service: &str) {
    counter!(RETRIES, "service" => service.to_string()).increment(1);
}

/// Records a retry refused by the budget.
pub fn budget_exhausted(service: &str) {
    counter!(RETRY_BUDGET_EXHAUSTED, "service" => service.to_string()).increment(1);
}

/// Records an ejection.
pub fn ejection(service: &str) {
    counter!(EJECTIONS, "service" => service.to_string()).increment(1);
}

/// Sets the number of ejected endpoints of a service.
pub fn ejected(service: &str, count: usize) {
    gauge!(EJECTED, "service" => service.to_string()).set(count as f64);
}

/// Records a failure the agent answered.
pub fn error(reason: &'static str) {
    counter!(ERRORS, "reason" => reason).increment(1);
}

/// Tracks open connections of a listener.
pub fn connection_opened(listener: &'static str) {
    gauge!(CONNECTIONS, "listener" => listener).increment(1.0);
}

/// Tracks open connections of a listener.
pub fn connection_closed(listener: &'static str) {
    gauge!(CONNECTIONS, "listener" => listener).decrement(1.0);
}

/// Records a connection refused at the limit.
pub fn connection_refused(listener: &'static str) {
    counter!(CONNECTIONS_REFUSED, "listener" => listener).increment(1);
}

/// Records the bytes a finished stream carried.
pub fn stream_bytes(service: &str, sent: u64, received: u64) {
    counter!(STREAM_BYTES, "service" => service.to_string(), "direction" => "sent").increment(sent);
    counter!(STREAM_BYTES, "service" => service.to_string(), "direction" => "received")
        .increment(received);
}

/// Records a reload attempt.
pub fn reload(ok: bool) {
    counter!(RELOADS, "result" => if ok { "applied" } else { "rejected" }).increment(1);
}

/// Records the revision being served.
pub fn revision(revision: u64) {
    gauge!(REVISION).set(revision as f64);
}
