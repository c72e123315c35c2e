//! An `AgentConfig` on its own: site, control-plane addresses, listeners that must not share an
//! address, local and static services with their health checks, upstreams and limits.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::Checker;
use super::host::check_host_port;
use crate::diagnostic::{FieldPath, Issue};
use crate::{AgentConfigSpec, DnsSettings, HealthCheck, Listeners};

/// Smallest `limits.maxHeaderBytes` that still fits ordinary requests.
pub const MIN_HEADER_BYTES: u32 = 1024;

/// Smallest `dns.maxUdpResponseBytes`: every DNS client takes 512 bytes over UDP (RFC 1035).
pub const MIN_UDP_RESPONSE_BYTES: u16 = 512;

/// Checks an `AgentConfig`'s spec.
pub(super) fn check(c: &mut Checker, path: &FieldPath, spec: &AgentConfigSpec) {
    c.name(path.key("site"), &spec.site);
    for (i, address) in spec.control_plane.iter().enumerate() {
        if let Err(reason) = check_host_port(address) {
            c.error(path.key("controlPlane").index(i), reason);
        }
    }
    let listeners = path.key("listeners");
    let defaults = Listeners::default();
    let mut bound = Bound::default();
    bound.claim(
        c,
        listeners.key("admin"),
        spec.listeners.admin,
        Some(defaults.admin),
    );
    bound.claim(
        c,
        listeners.key("inbound"),
        spec.listeners.inbound,
        Some(defaults.inbound),
    );
    if let Some(proxy) = spec.listeners.http_proxy {
        bound.claim(c, listeners.key("httpProxy"), proxy, defaults.http_proxy);
    }
    if let Some(dns) = spec.listeners.dns {
        bound.claim(c, listeners.key("dns"), dns, defaults.dns);
    }
    // One service may run several instances on this host, each on its own port.
    let mut instances = BTreeSet::new();
    for (i, service) in spec.services.iter().enumerate() {
        let service_path = path.key("services").index(i);
        c.name(service_path.key("name"), &service.name);
        if !instances.insert((service.name.as_str(), service.port)) {
            c.error(
                service_path.key("port"),
                format!(
                    "service `{}` is listed twice on port {}",
                    service.name, service.port
                ),
            );
        }
        c.port(service_path.key("port"), service.port);
        if let Some(check) = &service.check {
            check_health(c, &service_path.key("check"), check);
        }
    }
    for (i, upstream) in spec.upstreams.iter().enumerate() {
        let upstream_path = path.key("upstreams").index(i);
        // `payments:9001` names one port of a service, like `port: 9001`.
        match upstream.service.split_once(':') {
            None => c.name(upstream_path.key("service"), &upstream.service),
            Some((name, port)) => {
                c.name(upstream_path.key("service"), name);
                match port.parse::<u16>() {
                    Ok(port) if upstream.port.is_some_and(|p| p != port) => c.error(
                        upstream_path.key("port"),
                        format!("`service` names port {port}, and `port` another"),
                    ),
                    Ok(port) => {
                        c.port(upstream_path.key("service"), port);
                    }
                    Err(_) => c.error(
                        upstream_path.key("service"),
                        format!("`{port}` after `:` is not a port (write `service:port`)"),
                    ),
                }
            }
        }
        if upstream.listen.port() == 0 {
            c.error(
                upstream_path.key("listen"),
                "an upstream needs a fixed port, not 0",
            );
        }
        bound.claim(c, upstream_path.key("listen"), upstream.listen, None);
        if let Some(port) = upstream.port {
            c.port(upstream_path.key("port"), port);
        }
    }
    let limits = path.key("limits");
    c.header_bytes(limits.key("maxHeaderBytes"), spec.limits.max_header_bytes);
    c.at_least_one(limits.key("maxConnections"), spec.limits.max_connections);
    c.at_least_one(
        limits.key("maxInboundConnections"),
        spec.limits.max_inbound_connections,
    );
    c.at_least_one(
        limits.key("maxInboundConnectionsPerSource"),
        spec.limits.max_inbound_connections_per_source,
    );
    c.at_least_one(
        limits.key("maxConcurrentStreams"),
        spec.limits.max_concurrent_streams,
    );
    c.at_least_one(
        limits.key("maxStreamsPerUpstreamConnection"),
        spec.limits.max_streams_per_upstream_connection,
    );
    c.at_least_one(
        limits.key("maxConnectionsPerUpstream"),
        spec.limits.max_connections_per_upstream,
    );
    c.positive(
        limits.key("upstreamConnectionIdleTimeout"),
        spec.limits.upstream_connection_idle_timeout,
    );
    c.positive(
        limits.key("headerReadTimeout"),
        spec.limits.header_read_timeout,
    );
    c.positive(
        limits.key("snapshotSaveInterval"),
        spec.limits.snapshot_save_interval,
    );
    check_dns(c, &path.key("dns"), &spec.dns, spec.listeners.dns);
    let mut static_names = BTreeSet::new();
    for (i, service) in spec.static_services.iter().enumerate() {
        let service_path = path.key("staticServices").index(i);
        c.unique_name(
            service_path.key("name"),
            &service.name,
            &mut static_names,
            "static service",
        );
        if service.endpoints.is_empty() {
            c.error(
                service_path.key("endpoints"),
                "a static service needs at least one endpoint",
            );
        }
        for (e, endpoint) in service.endpoints.iter().enumerate() {
            let endpoint_path = service_path.key("endpoints").index(e);
            if let Some(site) = &endpoint.site {
                c.name(endpoint_path.key("site"), site);
            }
            if let Some(node) = &endpoint.node {
                c.name(endpoint_path.key("node"), node);
            }
        }
    }
}

/// The addresses an agent's listeners and upstream ports bind, so two never share one.
#[derive(Default)]
struct Bound {
    /// Each address with the field that took it first, and whether that is the field's default
    /// (then the user may never have written it, and the message says where it comes from).
    by_address: BTreeMap<SocketAddr, (FieldPath, bool)>,
}

impl Bound {
    /// Records that the field `at` binds `address` (`default` is the field's default), or
    /// reports the field that bound it first.
    fn claim(
        &mut self,
        c: &mut Checker,
        at: FieldPath,
        address: SocketAddr,
        default: Option<SocketAddr>,
    ) {
        let is_default = default == Some(address);
        // Port 0 asks the system for a free port: two such listeners never clash.
        if address.port() == 0 {
            return;
        }
        let Some((first, first_is_default)) = self.by_address.get(&address) else {
            self.by_address.insert(address, (at, is_default));
            return;
        };
        let mut issue = Issue::error(
            at.clone(),
            format!("address {address} is already used by `{first}`"),
        );
        let defaulted = match (*first_is_default, is_default) {
            (true, _) => Some(first),
            (false, true) => Some(&at),
            (false, false) => None,
        };
        if let Some(field) = defaulted {
            issue = issue.with_help(format!(
                "`{field}` defaults to {address}; give one of them another address"
            ));
        }
        c.issues.push(issue);
    }
}

/// Checks the DNS server's settings; `listening` is `listeners.dns`, which no upstream may be (a
/// query would loop back to the agent).
fn check_dns(c: &mut Checker, path: &FieldPath, dns: &DnsSettings, listening: Option<SocketAddr>) {
    let zone = dns.zone.strip_suffix('.').unwrap_or(&dns.zone);
    if zone.is_empty() {
        c.error(path.key("zone"), "the mesh zone needs a name, e.g. `mesh`");
    }
    for label in zone.split('.').filter(|_| !zone.is_empty()) {
        if let Err(reason) = super::check_name(label) {
            c.error(path.key("zone"), reason);
        }
    }
    for (i, upstream) in dns.upstreams.iter().enumerate() {
        if c.port(path.key("upstreams").index(i), upstream.port()) && listening == Some(*upstream) {
            c.error(
                path.key("upstreams").index(i),
                format!("{upstream} is the agent's own DNS listener: queries would loop"),
            );
        }
    }
    c.at_least_one(path.key("cacheSize"), dns.cache_size);
    c.at_least_one(path.key("maxQueriesPerSecond"), dns.max_queries_per_second);
    c.at_least_one(
        path.key("maxQueriesPerSecondPerSource"),
        dns.max_queries_per_second_per_source,
    );
    c.at_least_one(path.key("maxTcpConnections"), dns.max_tcp_connections);
    c.positive(path.key("tcpIdleTimeout"), dns.tcp_idle_timeout);
    if dns.max_udp_response_bytes < MIN_UDP_RESPONSE_BYTES {
        c.error(
            path.key("maxUdpResponseBytes"),
            format!(
                "must be at least {MIN_UDP_RESPONSE_BYTES}, got {}",
                dns.max_udp_response_bytes
            ),
        );
    }
    c.at_least_one(path.key("maxInFlightForwards"), dns.max_in_flight_forwards);
    c.positive(path.key("forwardTimeout"), dns.forward_timeout);
}

/// Checks a local service's health check.
fn check_health(c: &mut Checker, path: &FieldPath, check: &HealthCheck) {
    match (&check.http, check.tcp) {
        (Some(_), true) => c.error(path.key("tcp"), "set either `http` or `tcp`, not both"),
        (None, false) => c.error(path.clone(), "set one of `http: /path` or `tcp: true`"),
        (Some(http), false) => c.absolute_path(path.key("http"), http),
        (None, true) => {}
    }
    c.positive(path.key("interval"), check.interval);
    c.positive(path.key("timeout"), check.timeout);
    c.not_longer(
        path.key("timeout"),
        ("timeout", check.timeout),
        ("the interval", check.interval),
    );
    c.at_least_one(path.key("rise"), check.rise);
    c.at_least_one(path.key("fall"), check.fall);
}
