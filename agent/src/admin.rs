//! The admin endpoint: liveness, readiness, what is being served, endpoint state and metrics.
//! Read-only; it never changes what the data path does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::body::{self, Body};
use crate::proxy::Proxy;

/// What the admin endpoint reads.
pub struct Admin {
    /// The data path's shared state.
    pub proxy: Arc<Proxy>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// False once draining: load balancers should stop sending.
    pub ready: AtomicBool,
    /// The control-plane watch's state.
    pub watch: Arc<crate::watch::WatchStatus>,
    /// The registration's state.
    pub registration: Arc<crate::register::RegistrationStatus>,
    /// Whether the configuration names control-plane nodes at all.
    pub control_plane_configured: bool,
    /// The node's certificate, once it has one.
    pub identity: crate::identity::IdentitySlot,
}

/// Serves one admin connection (HTTP/1.1), then closes it in stages (`lingering_close`): a
/// client refused while it was still sending a body reads the refusal, not a reset.
pub async fn serve(
    admin: Arc<Admin>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let limits = admin.proxy.snapshot.load().limits.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let admin = Arc::clone(&admin);
        async move { Ok::<_, Infallible>(route(&admin, &request)) }
    });
    let (stream, lingering) = hyphae_policies::lingering_close::lingering(stream);
    // The same head limits as the data path's HTTP/1.1 ports.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.get())
        .max_buf_size((limits.max_header_bytes as usize).max(crate::proxy::MIN_HTTP1_BUFFER))
        .max_header_size(limits.max_header_bytes as usize)
        .serve_connection(TokioIo::new(stream), service);
    let result = crate::listener::serve_until_shutdown(connection, &shutdown, |c| {
        c.graceful_shutdown();
    })
    .await;
    lingering
        .close(limits.lingering_close_timeout.get(), shutdown.cancelled())
        .await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "admin connection ended with an error");
    }
}

/// Connections the admin port takes at once, a budget of its own: health checkers and metric
/// scrapers still get in when the data path's ports are full.
pub const MAX_CONNECTIONS: u32 = 256;

fn route(admin: &Admin, request: &Request<Incoming>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the admin endpoint is read-only\n",
        );
    }
    match request.uri().path() {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => ready(admin),
        "/config" => json(StatusCode::OK, &**admin.proxy.snapshot.load()),
        "/endpoints" => json(StatusCode::OK, &endpoints(admin)),
        "/sites" => json(StatusCode::OK, &sites(admin)),
        "/metrics" => {
            for view in sites(admin) {
                crate::metrics::site(&crate::metrics::SiteGauges {
                    service: &view.service,
                    site: &view.site,
                    usable: view.endpoints - view.ejected,
                    ejected: view.ejected,
                    registered: view.registered,
                    serving: view.serving,
                });
            }
            if admin.control_plane_configured {
                let view = control_plane_view(admin);
                crate::metrics::control_plane(
                    view.connected,
                    view.registered,
                    view.revision,
                    view.millis_since_contact.map(|ms| ms as f64 / 1000.0),
                );
            }
            let mut response = text(StatusCode::OK, &admin.metrics.render());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "unknown admin path; try /live, /ready, /config, /endpoints, /sites, /metrics\n",
        ),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Readiness<'a> {
    ready: bool,
    source: crate::model::Source,
    revision: u64,
    node: &'a str,
    /// Why it is not ready (absent when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    control_plane: Option<ControlPlaneView>,
}

/// What `/ready` says about the control plane: live or serving a saved copy, and how stale.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ControlPlaneView {
    connected: bool,
    registered: bool,
    revision: u64,
    seconds_since_contact: Option<u64>,
    #[serde(skip)]
    millis_since_contact: Option<u64>,
}

fn ready(admin: &Admin) -> Response<Body> {
    let snapshot = admin.proxy.snapshot.load();
    let reason = if !admin.ready.load(Ordering::Acquire) {
        Some("starting or draining".to_string())
    } else if admin.identity.load().is_none() {
        Some(
            "no certificate yet (joining the mesh, or none was given): peer agents cannot call this one, nor it them"
                .to_string(),
        )
    } else {
        admin.watch.saved_unreadable().map(|why| {
            format!(
                "the saved control-plane state cannot be used ({why}); serving without it until a control plane sends a fresh one"
            )
        })
    };
    let ready = reason.is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &Readiness {
            ready,
            source: snapshot.source,
            revision: snapshot.revision,
            node: &snapshot.node,
            reason,
            control_plane: admin
                .control_plane_configured
                .then(|| control_plane_view(admin)),
        },
    )
}

fn control_plane_view(admin: &Admin) -> ControlPlaneView {
    let last = admin.watch.last_contact_unix_ms.load(Ordering::Acquire);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    ControlPlaneView {
        connected: admin.watch.connected.load(Ordering::Acquire),
        registered: admin.registration.registered.load(Ordering::Acquire),
        revision: admin.watch.revision.load(Ordering::Acquire),
        seconds_since_contact: (last > 0).then(|| now.saturating_sub(last) / 1000),
        millis_since_contact: (last > 0).then(|| now.saturating_sub(last)),
    }
}

/// One site's share of one service, as `/sites` and the `hyphae_site_*` metrics show it.
#[derive(Serialize)]
pub struct SiteView {
    /// The service.
    pub service: String,
    /// The site.
    pub site: String,
    /// Whether it is this agent's own site.
    pub local: bool,
    /// Instances the site registered, passing or not.
    pub registered: usize,
    /// Of those, the passing ones: the service's endpoints there.
    pub endpoints: usize,
    /// Of those, the ones outlier detection has ejected.
    pub ejected: usize,
    /// Whether calls from this agent go to the site now: the own site while enough of it is
    /// usable (`loadBalancer.failoverThreshold`), every site with usable endpoints otherwise.
    pub serving: bool,
}

/// Every service's sites, with what is usable in each and whether calls go there now.
fn sites(admin: &Admin) -> Vec<SiteView> {
    let snapshot = admin.proxy.snapshot.load();
    let now = Instant::now();
    let mut views = Vec::new();
    for service in snapshot.services.values() {
        let state = admin
            .proxy
            .runtime
            .service(&service.name, &service.policy.retries);
        let live = state.endpoints(&service.endpoints);
        let candidates: Vec<crate::balance::Candidate<'_>> = live
            .iter()
            .enumerate()
            .map(
                |(index, (endpoint, endpoint_state))| crate::balance::Candidate {
                    index,
                    local_site: endpoint.site == snapshot.site,
                    ejected: crate::proxy::endpoint::is_ejected(endpoint_state, now),
                    tried: false,
                    load: &endpoint_state.load,
                },
            )
            .collect();
        let lb = &service.policy.load_balancer;
        let keeps_to_site = crate::balance::keeps_to_site(
            &candidates,
            &crate::balance::SitePreference {
                locality: lb.locality,
                failover_threshold: lb.failover_threshold,
                local_registered: service.registered_in(&snapshot.site),
            },
        );
        let mut by_site: std::collections::BTreeMap<&str, SiteView> = service
            .registered_by_site
            .iter()
            .map(|(site, registered)| (site.as_str(), *registered))
            .chain(live.iter().map(|(endpoint, _)| (endpoint.site.as_str(), 0)))
            .map(|(site, registered)| {
                let view = SiteView {
                    service: service.name.clone(),
                    site: site.to_string(),
                    local: site == snapshot.site,
                    registered,
                    endpoints: 0,
                    ejected: 0,
                    serving: false,
                };
                (site, view)
            })
            .rev()
            .collect();
        for ((endpoint, _), candidate) in live.iter().zip(&candidates) {
            if let Some(view) = by_site.get_mut(endpoint.site.as_str()) {
                view.endpoints += 1;
                view.ejected += usize::from(candidate.ejected);
            }
        }
        // When every endpoint is ejected, all are tried again (see `balance::pick`).
        let any_healthy = candidates.iter().any(|c| !c.ejected);
        for view in by_site.values_mut() {
            view.registered = view.registered.max(view.endpoints);
            let usable = if any_healthy {
                view.endpoints - view.ejected
            } else {
                view.endpoints
            };
            view.serving = usable > 0 && (view.local || !keeps_to_site);
        }
        views.extend(by_site.into_values());
    }
    views
}

#[derive(Serialize)]
struct EndpointView {
    service: String,
    address: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    node: Option<String>,
    site: String,
    state: &'static str,
    ejected_for_ms: Option<u128>,
    ewma_ms: f64,
    in_flight: u32,
}

fn endpoints(admin: &Admin) -> Vec<EndpointView> {
    let snapshot = admin.proxy.snapshot.load();
    let now = Instant::now();
    let mut views = Vec::new();
    for service in snapshot.services.values() {
        let state = admin.proxy.runtime.existing(&service.name);
        for endpoint in &service.endpoints {
            let live = state.as_ref().map(|s| s.endpoint(endpoint.key()));
            let ejected_until = live
                .as_ref()
                .and_then(|l| l.outlier.lock().ok().and_then(|o| o.ejected_until(now)));
            views.push(EndpointView {
                service: service.name.clone(),
                address: endpoint.address,
                port: endpoint.port,
                node: endpoint.node.clone(),
                site: endpoint.site.clone(),
                state: if ejected_until.is_some() {
                    "ejected"
                } else {
                    "active"
                },
                ejected_for_ms: ejected_until.map(|u| u.saturating_duration_since(now).as_millis()),
                ewma_ms: live
                    .as_ref()
                    .and_then(|l| l.load.ewma.lock().ok().map(|e| e.cost_ns() / 1e6))
                    .unwrap_or(crate::balance::DEFAULT_RTT.as_secs_f64() * 1e3),
                in_flight: live
                    .as_ref()
                    .map_or(0, |l| l.load.in_flight.load(Ordering::Relaxed)),
            });
        }
    }
    views
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(body::full(body.to_string()));
    *response.status_mut() = status;
    response
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut text_body =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text_body.push('\n');
    let mut response = text(status, &text_body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
