//! The agent's Prometheus metrics: names, help texts and the recording helpers the data path
//! calls. Labels are bounded sets (service, status class, reason, listener), never raw paths.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

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
/// HTTP/2 connections the agent opened toward peer agents and local instances, by `to`.
pub const HTTP2_CONNECTIONS_OPENED: &str = "hyphae_http2_connections_opened_total";
/// GOAWAYs received on the agent's HTTP/2 connections, by `to` (`peer` or `instance`).
pub const HTTP2_GOAWAYS: &str = "hyphae_http2_goaways_total";
/// Bytes carried by TCP and upgraded streams, by service and direction.
pub const STREAM_BYTES: &str = "hyphae_stream_bytes_total";
/// Configuration reloads, by result.
pub const RELOADS: &str = "hyphae_config_reloads_total";
/// Revision of the snapshot being served.
pub const REVISION: &str = "hyphae_config_revision";
/// 1 while a control-plane watch stream is open, else 0.
pub const CONTROL_PLANE_CONNECTED: &str = "hyphae_control_plane_connected";
/// 1 while the control plane holds this node's registration, else 0.
pub const CONTROL_PLANE_REGISTERED: &str = "hyphae_control_plane_registered";
/// Control-plane revision being served (0: none).
pub const CONTROL_PLANE_REVISION: &str = "hyphae_control_plane_revision";
/// Seconds since the control plane last said anything (heartbeats included).
pub const CONTROL_PLANE_STALENESS: &str = "hyphae_control_plane_staleness_seconds";
/// 1 while the saved control-plane state could not be used and no control plane has sent a
/// fresh one, else 0.
pub const SAVED_SNAPSHOT_UNREADABLE: &str = "hyphae_saved_snapshot_unreadable";

/// Inbound calls an access policy refused, by caller (node) and service.
pub const ACCESS_DENIED: &str = "hyphae_access_denied_total";
/// Inbound connections refused at the TLS handshake (no certificate, another CA, plaintext).
pub const INBOUND_TLS_REFUSED: &str = "hyphae_inbound_tls_refused_total";

/// Seconds until this node's certificate expires (renewed at two thirds of its life).
pub const CERTIFICATE_EXPIRY: &str = "hyphae_certificate_expiry_seconds";

/// Endpoints of a service in one site, by state (`usable`, `ejected`).
pub const SITE_ENDPOINTS: &str = "hyphae_site_endpoints";
/// Instances a site registered for a service, passing or not.
pub const SITE_REGISTERED: &str = "hyphae_site_registered_instances";
/// 1 while calls to a service go to a site.
pub const SITE_SERVING: &str = "hyphae_site_serving";

/// Virtual IP listeners open (one per service port).
pub const VIRTUAL_LISTENERS: &str = "hyphae_virtual_ip_listeners";
/// Virtual IP addresses the agent wants to listen on but cannot bind.
pub const VIRTUAL_LISTENERS_UNBOUND: &str = "hyphae_virtual_ip_listeners_unbound";
/// Failed binds of virtual IP listeners.
pub const VIRTUAL_LISTENER_BIND_FAILURES: &str = "hyphae_virtual_ip_bind_failures_total";

/// Histogram buckets for request durations, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets. The recorder keeps every sample
/// of a histogram (`hyphae_request_duration_seconds`: one per request) until then, and
/// `install_recorder` runs no upkeep of its own: without it an agent nobody scrapes grew by
/// 1.8 MiB every 10 s at 9,000 requests per second, for as long as it ran (decision 54).
/// 5 s is the exporter's own interval when it runs its upkeep itself.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Folds histogram samples into their buckets every [`UPKEEP_INTERVAL`] until `shutdown`.
pub async fn keep_up(handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => handle.run_upkeep(),
            () = shutdown.cancelled() => return,
        }
    }
}

/// Installs the process-wide recorder and describes every metric.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION.to_string()),
            &DURATION_BUCKETS,
        )?
        .install_recorder()?;
    crate::dns::metrics::describe();
    describe_counter!(
        ACCESS_DENIED,
        "Inbound calls an access policy refused (403 hyphae-error: denied), by caller node and service."
    );
    describe_counter!(
        INBOUND_TLS_REFUSED,
        "Inbound connections refused at the TLS handshake: no certificate, one from another CA, plaintext."
    );
    describe_gauge!(
        CERTIFICATE_EXPIRY,
        metrics::Unit::Seconds,
        "Seconds until this node's certificate expires; it is renewed at two thirds of its life."
    );
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
        HTTP2_CONNECTIONS_OPENED,
        "HTTP/2 connections opened toward peer agents and local instances (another opens when every one to a destination is at its stream limit or draining), by to."
    );
    describe_counter!(
        HTTP2_GOAWAYS,
        "GOAWAYs received on HTTP/2 connections toward peer agents and local instances (the connection drains; new requests take another), by to."
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
    describe_gauge!(
        CONTROL_PLANE_CONNECTED,
        "1 while a control-plane watch stream is open."
    );
    describe_gauge!(
        CONTROL_PLANE_REGISTERED,
        "1 while the control plane holds this node's registration."
    );
    describe_gauge!(
        CONTROL_PLANE_REVISION,
        "Control-plane revision being served (live or from disk)."
    );
    describe_gauge!(
        CONTROL_PLANE_STALENESS,
        metrics::Unit::Seconds,
        "Seconds since the control plane last said anything; absent before first contact."
    );
    describe_gauge!(
        SAVED_SNAPSHOT_UNREADABLE,
        "1 while the saved control-plane state is unreadable and no control plane has sent a fresh one."
    );
    describe_gauge!(
        SITE_ENDPOINTS,
        "Endpoints of a service in a site, by state (usable or ejected)."
    );
    describe_gauge!(
        SITE_REGISTERED,
        "Instances a site registered for a service, passing or not."
    );
    describe_gauge!(
        SITE_SERVING,
        "1 while this agent's calls to a service go to a site (its own, or others after failover)."
    );
    describe_gauge!(
        VIRTUAL_LISTENERS,
        "Listeners open on services' virtual IPs, one per service port."
    );
    describe_gauge!(
        VIRTUAL_LISTENERS_UNBOUND,
        "Service virtual IP addresses the agent cannot bind (another process holds them)."
    );
    describe_counter!(
        VIRTUAL_LISTENER_BIND_FAILURES,
        "Failed binds of virtual IP listeners (each address counted once per distinct error)."
    );
    Ok(handle)
}

/// One site's share of one service, as the `hyphae_site_*` gauges show it.
pub struct SiteGauges<'a> {
    /// The service.
    pub service: &'a str,
    /// The site.
    pub site: &'a str,
    /// Endpoints there not ejected.
    pub usable: usize,
    /// Endpoints there ejected.
    pub ejected: usize,
    /// Instances the site registered, passing or not.
    pub registered: usize,
    /// Whether calls go there now.
    pub serving: bool,
}

/// Records one service's state in one site (refreshed when `/metrics` is read).
pub fn site(gauges: &SiteGauges<'_>) {
    let labels = [
        ("service", gauges.service.to_string()),
        ("site", gauges.site.to_string()),
    ];
    for (state, count) in [("usable", gauges.usable), ("ejected", gauges.ejected)] {
        let mut with_state = labels.to_vec();
        with_state.push(("state", state.to_string()));
        gauge!(SITE_ENDPOINTS, &with_state).set(count as f64);
    }
    gauge!(SITE_REGISTERED, &labels).set(gauges.registered as f64);
    gauge!(SITE_SERVING, &labels).set(if gauges.serving { 1.0 } else { 0.0 });
}

/// Records how many virtual IP listeners are open and how many cannot be bound.
pub fn virtual_listeners(open: usize, unbound: usize) {
    gauge!(VIRTUAL_LISTENERS).set(open as f64);
    gauge!(VIRTUAL_LISTENERS_UNBOUND).set(unbound as f64);
}

/// Counts a virtual IP listener that could not be bound.
pub fn virtual_listener_bind_failed() {
    counter!(VIRTUAL_LISTENER_BIND_FAILURES).increment(1);
}

/// The counter of HTTP body bytes for `service` in `direction` (`sent` or `received`).
pub fn http_bytes(service: &str, direction: &'static str) -> Counter {
    counter!(HTTP_BYTES, "service" => service.to_string(), "direction" => direction)
}

/// Status classes, the `status_class` label of [`REQUESTS`].
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index of `status`'s class in [`STATUS_CLASSES`]; anything outside 1xx–4xx counts as 5xx.
fn status_class(status: http::StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

fn requests_counter(service: &str, route: &str, class: usize) -> Counter {
    counter!(
        REQUESTS,
        "service" => service.to_string(),
        "route" => route.to_string(),
        "status_class" => STATUS_CLASSES[class]
    )
}

fn duration_histogram(service: &str) -> Histogram {
    histogram!(REQUEST_DURATION, "service" => service.to_string())
}

/// Records an answered request; `route` is the service's Route, or `default` without one.
/// For a service the snapshot knows, [`ServiceMetrics::request`] does the same without
/// looking the series up.
pub fn request(service: &str, route: &str, status: http::StatusCode, elapsed: Duration) {
    requests_counter(service, route, status_class(status)).increment(1);
    duration_histogram(service).record(elapsed.as_secs_f64());
}

/// One service's series, each registered on first use and kept: the data path records through
/// these handles instead of building label sets and looking them up in the registry on every
/// request. A series still appears in `/metrics` only once something was recorded in it.
/// Lives in the snapshot's service, so a reload (which may rename the route) starts afresh.
#[derive(Debug)]
pub struct ServiceMetrics {
    service: String,
    route: String,
    requests: [OnceLock<Counter>; STATUS_CLASSES.len()],
    duration: OnceLock<Histogram>,
    bytes_sent: OnceLock<Counter>,
    bytes_received: OnceLock<Counter>,
    retries: OnceLock<Counter>,
    budget_exhausted: OnceLock<Counter>,
    ejections: OnceLock<Counter>,
    ejected: OnceLock<Gauge>,
}

impl ServiceMetrics {
    /// Handles for `service`, whose requests are labelled with `route` (`default` without a
    /// Route).
    pub fn new(service: &str, route: &str) -> Self {
        ServiceMetrics {
            service: service.to_string(),
            route: route.to_string(),
            requests: Default::default(),
            duration: OnceLock::new(),
            bytes_sent: OnceLock::new(),
            bytes_received: OnceLock::new(),
            retries: OnceLock::new(),
            budget_exhausted: OnceLock::new(),
            ejections: OnceLock::new(),
            ejected: OnceLock::new(),
        }
    }

    /// Records an answered request, as [`request`] does for this service and its route.
    pub fn request(&self, status: http::StatusCode, elapsed: Duration) {
        let class = status_class(status);
        self.requests[class]
            .get_or_init(|| requests_counter(&self.service, &self.route, class))
            .increment(1);
        self.duration
            .get_or_init(|| duration_histogram(&self.service))
            .record(elapsed.as_secs_f64());
    }

    /// The counter of this service's request body bytes ([`http_bytes`], `sent`).
    pub fn bytes_sent(&self) -> &Counter {
        self.bytes_sent
            .get_or_init(|| http_bytes(&self.service, "sent"))
    }

    /// The counter of this service's response body bytes ([`http_bytes`], `received`).
    pub fn bytes_received(&self) -> &Counter {
        self.bytes_received
            .get_or_init(|| http_bytes(&self.service, "received"))
    }

    /// Records a retry.
    pub fn retry(&self) {
        self.retries
            .get_or_init(|| counter!(RETRIES, "service" => self.service.clone()))
            .increment(1);
    }

    /// Records a retry refused by the budget.
    pub fn budget_exhausted(&self) {
        self.budget_exhausted
            .get_or_init(|| counter!(RETRY_BUDGET_EXHAUSTED, "service" => self.service.clone()))
            .increment(1);
    }

    /// Records an ejection by outlier detection.
    pub fn ejection(&self) {
        self.ejections
            .get_or_init(|| counter!(EJECTIONS, "service" => self.service.clone()))
            .increment(1);
    }

    /// Sets the number of the service's endpoints ejected now.
    pub fn ejected(&self, count: usize) {
        self.ejected
            .get_or_init(|| gauge!(EJECTED, "service" => self.service.clone()))
            .set(count as f64);
    }
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

/// Records an HTTP/2 connection opened toward `to` (`peer` or `instance`).
pub fn http2_connection_opened(to: &'static str) {
    counter!(HTTP2_CONNECTIONS_OPENED, "to" => to).increment(1);
}

/// Records a GOAWAY received on an HTTP/2 connection toward `to` (`peer` or `instance`).
pub fn http2_goaway(to: &'static str) {
    counter!(HTTP2_GOAWAYS, "to" => to).increment(1);
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

/// Records the control plane's view as of a `/metrics` scrape.
pub fn control_plane(connected: bool, registered: bool, revision: u64, staleness: Option<f64>) {
    gauge!(CONTROL_PLANE_CONNECTED).set(f64::from(u8::from(connected)));
    gauge!(CONTROL_PLANE_REGISTERED).set(f64::from(u8::from(registered)));
    gauge!(CONTROL_PLANE_REVISION).set(revision as f64);
    if let Some(seconds) = staleness {
        gauge!(CONTROL_PLANE_STALENESS).set(seconds);
    }
}

/// Records whether the saved control-plane state is unusable (see [`SAVED_SNAPSHOT_UNREADABLE`]).
pub fn saved_snapshot_unreadable(unreadable: bool) {
    gauge!(SAVED_SNAPSHOT_UNREADABLE).set(f64::from(u8::from(unreadable)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_handles_record_the_same_series_as_the_free_functions_and_only_once_used() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let rendered = metrics::with_local_recorder(&recorder, || {
            let service = ServiceMetrics::new("payments", "canary");
            service.ejected(0);
            let _ = service.bytes_sent();
            for status in [200, 200, 503] {
                let status = http::StatusCode::from_u16(status).unwrap();
                service.request(status, Duration::from_millis(3));
            }
            service.retry();
            request(
                "gone",
                "default",
                http::StatusCode::NOT_FOUND,
                Duration::ZERO,
            );
            recorder.handle().render()
        });
        for line in [
            r#"hyphae_requests_total{service="payments",route="canary",status_class="2xx"} 2"#,
            r#"hyphae_requests_total{service="payments",route="canary",status_class="5xx"} 1"#,
            r#"hyphae_requests_total{service="gone",route="default",status_class="4xx"} 1"#,
            r#"hyphae_http_body_bytes_total{service="payments",direction="sent"} 0"#,
            r#"hyphae_retries_total{service="payments"} 1"#,
            r#"hyphae_endpoints_ejected{service="payments"} 0"#,
            r#"hyphae_request_duration_seconds_count{service="payments"} 3"#,
        ] {
            assert!(rendered.contains(line), "{line} missing from\n{rendered}");
        }
        for unused in [
            "received",
            "hyphae_outlier_ejections_total",
            "budget_exhausted",
        ] {
            assert!(!rendered.contains(unused), "{unused} in\n{rendered}");
        }
    }
}
