//! Semantic rules that types alone cannot state: bounds, exclusive fields, names, and references
//! between objects. Pure functions from objects to issues; locating them is the loader's job.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::diagnostic::{FieldPath, Issue};
use crate::suggest;
use crate::{
    AccessPolicySpec, AgentConfigSpec, Duration, ExternalServiceSpec, HealthCheck, Identity, Kind,
    MAX_RETRY_ATTEMPTS, OutlierDetection, Policy, RetryPolicy, RouteSpec, ServicePolicySpec,
};

/// Longest name (`metadata.name`, service names, sites), as for a DNS label.
pub const MAX_NAME_LEN: usize = 63;
/// Largest compiled size of a route regex; bigger patterns are refused.
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// Shortest and longest retry-budget windows.
pub const RETRY_BUDGET_WINDOW: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(60));
/// Largest `retries.budget.minPerSecond`.
pub const MAX_RETRY_FLOOR_PER_SECOND: u32 = 1_000_000;

/// Smallest `limits.maxHeaderBytes` that still fits ordinary requests.
pub const MIN_HEADER_BYTES: u32 = 1024;

/// Whether the set being validated is everything there is. In a complete set a reference to
/// an unknown service is an error; in a partial one (a single file applied on top of others)
/// it is a warning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Completeness {
    /// Other objects may exist elsewhere.
    #[default]
    Partial,
    /// This set is the whole configuration.
    Complete,
}

/// Collects issues under a path prefix.
struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.issues.push(Issue::error(path, message));
    }

    fn warning(&mut self, path: FieldPath, message: impl Into<String>) {
        self.issues.push(Issue::warning(path, message));
    }

    fn name(&mut self, path: FieldPath, name: &str) {
        if let Err(reason) = check_name(name) {
            self.error(path, reason);
        }
    }

    fn positive(&mut self, path: FieldPath, value: Duration) {
        if value.get().is_zero() {
            self.error(path, "must be longer than 0s");
        }
    }

    fn at_least_one(&mut self, path: FieldPath, value: u32) {
        if value == 0 {
            self.error(path, "must be at least 1");
        }
    }

    fn share(&mut self, path: FieldPath, value: f64) {
        if !(0.0..=1.0).contains(&value) {
            self.error(path, format!("must be between 0 and 1, got {value}"));
        }
    }
}

/// Checks a name against the DNS-label rule every hyphae name follows.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{name}` is {} characters long; names have at most {MAX_NAME_LEN}",
            name.len()
        ));
    }
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "`{name}` is not a valid name: use lower-case letters, digits and `-`, \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Every problem with one object on its own.
pub fn check_object(policy: &Policy) -> Vec<Issue> {
    let mut c = Checker { issues: Vec::new() };
    let root = FieldPath::root();
    c.name(root.key("metadata").key("name"), policy.name());
    let spec = root.key("spec");
    match policy {
        Policy::ServicePolicy(o) => check_service_policy(&mut c, &spec, &o.spec),
        Policy::Route(o) => check_route(&mut c, &spec, &o.spec),
        Policy::AccessPolicy(o) => check_access_policy(&mut c, &spec, &o.spec),
        Policy::ExternalService(o) => check_external_service(&mut c, &spec, &o.spec),
        Policy::AgentConfig(o) => check_agent_config(&mut c, &spec, &o.spec),
        Policy::ControlPlaneConfig(o) => check_control_plane_config(&mut c, &spec, &o.spec),
    }
    c.issues
}

fn check_service_policy(c: &mut Checker, path: &FieldPath, spec: &ServicePolicySpec) {
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
    check_retries(
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
}

fn check_retries(
    c: &mut Checker,
    path: &FieldPath,
    retries: &RetryPolicy,
    request: Option<Duration>,
) {
    if retries.attempts > MAX_RETRY_ATTEMPTS {
        c.error(
            path.key("attempts"),
            format!(
                "must be between 0 and {MAX_RETRY_ATTEMPTS}, got {}",
                retries.attempts
            ),
        );
    }
    if let Some(per_try) = retries.per_try_timeout {
        c.positive(path.key("perTryTimeout"), per_try);
        if let Some(request) = request.filter(|request| per_try > *request) {
            c.error(
                path.key("perTryTimeout"),
                format!("per-try timeout {per_try} is longer than the request timeout {request}"),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, status) in retries.statuses.iter().enumerate() {
        if !(100..=599).contains(status) {
            c.error(
                path.key("statuses").index(i),
                format!("{status} is not an HTTP status (100-599)"),
            );
        } else if !seen.insert(*status) {
            c.warning(
                path.key("statuses").index(i),
                format!("status {status} is listed twice"),
            );
        }
    }
    let budget = path.key("budget");
    c.share(budget.key("ratio"), retries.budget.ratio);
    let (shortest, longest) = RETRY_BUDGET_WINDOW;
    if !(shortest..=longest).contains(&retries.budget.window) {
        c.error(
            budget.key("window"),
            format!(
                "must be between {shortest} and {longest}, got {}",
                retries.budget.window
            ),
        );
    }
    if retries.budget.min_per_second > MAX_RETRY_FLOOR_PER_SECOND {
        c.error(
            budget.key("minPerSecond"),
            format!(
                "must be at most {MAX_RETRY_FLOOR_PER_SECOND}, got {}",
                retries.budget.min_per_second
            ),
        );
    }
    let backoff = path.key("backoff");
    if retries.backoff.base > retries.backoff.max {
        c.error(
            backoff.key("base"),
            format!(
                "base backoff {} is longer than the maximum {}",
                retries.backoff.base, retries.backoff.max
            ),
        );
    }
}

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

fn check_route(c: &mut Checker, path: &FieldPath, spec: &RouteSpec) {
    c.name(path.key("service"), &spec.service);
    if spec.rules.is_empty() {
        c.error(path.key("rules"), "a route needs at least one rule");
    }
    let mut catch_all: Option<usize> = None;
    for (i, rule) in spec.rules.iter().enumerate() {
        let rule_path = path.key("rules").index(i);
        if let Some(first) = catch_all {
            c.warning(
                rule_path.clone(),
                format!("rule is never used: rule {first} above it matches every request"),
            );
        }
        if rule.matches.is_empty() && catch_all.is_none() {
            catch_all = Some(i);
        }
        for (m, matcher) in rule.matches.iter().enumerate() {
            let match_path = rule_path.key("matches").index(m);
            if let Some(host) = &matcher.host {
                check_host(c, match_path.key("host"), host);
            }
            if let Some(path_match) = &matcher.path {
                check_path_match(c, &match_path.key("path"), path_match);
            }
            if let Some(method) = &matcher.method {
                check_method(c, match_path.key("method"), method);
            }
            for (h, header) in matcher.headers.iter().enumerate() {
                let header_path = match_path.key("headers").index(h);
                check_header_name(c, header_path.key("name"), &header.name);
                let set = [&header.exact, &header.prefix, &header.regex]
                    .iter()
                    .filter(|v| v.is_some())
                    .count();
                if set > 1 {
                    c.error(
                        header_path.clone(),
                        "set at most one of `exact`, `prefix`, `regex`",
                    );
                }
                if let Some(regex) = &header.regex {
                    check_regex(c, header_path.key("regex"), regex);
                }
            }
        }
        if rule.backends.is_empty() {
            c.error(
                rule_path.key("backends"),
                "a rule needs at least one backend",
            );
        } else if rule.backends.iter().all(|b| b.weight == 0) {
            c.error(
                rule_path.key("backends"),
                "every backend has weight 0, so no request could be sent",
            );
        }
        for (b, backend) in rule.backends.iter().enumerate() {
            c.name(
                rule_path.key("backends").index(b).key("service"),
                &backend.service,
            );
        }
        for (which, rewrite) in [
            ("requestHeaders", &rule.request_headers),
            ("responseHeaders", &rule.response_headers),
        ] {
            let rewrite_path = rule_path.key(which);
            for name in rewrite.set.keys() {
                check_header_name(c, rewrite_path.key("set").key(name), name);
            }
            for name in rewrite.add.keys() {
                check_header_name(c, rewrite_path.key("add").key(name), name);
            }
            for (r, name) in rewrite.remove.iter().enumerate() {
                check_header_name(c, rewrite_path.key("remove").index(r), name);
            }
        }
        let mut request_timeout = None;
        if let Some(timeouts) = &rule.timeouts {
            if let Some(request) = timeouts.request {
                c.positive(rule_path.key("timeouts").key("request"), request);
                request_timeout = Some(request);
            }
            if let Some(idle) = timeouts.idle {
                c.positive(rule_path.key("timeouts").key("idle"), idle);
            }
        }
        if let Some(retries) = &rule.retries {
            check_retries(c, &rule_path.key("retries"), retries, request_timeout);
        }
    }
}

fn check_path_match(c: &mut Checker, path: &FieldPath, path_match: &crate::PathMatch) {
    match path_match {
        crate::PathMatch::Exact(p) | crate::PathMatch::Prefix(p) => {
            let key = if matches!(path_match, crate::PathMatch::Exact(_)) {
                "exact"
            } else {
                "prefix"
            };
            if !p.starts_with('/') {
                c.error(path.key(key), format!("path `{p}` must start with `/`"));
            }
        }
        crate::PathMatch::Regex(r) => check_regex(c, path.key("regex"), r),
    }
}

fn check_regex(c: &mut Checker, path: FieldPath, pattern: &str) {
    if let Err(error) = regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .build()
    {
        let reason = match error {
            regex::Error::CompiledTooBig(limit) => {
                format!("regular expression is too large (compiled size over {limit} bytes)")
            }
            other => {
                let detail = other.to_string();
                // The last line is "error: <what>"; the lines above repeat the pattern.
                let last = detail.lines().last().unwrap_or("").trim();
                let what = last.strip_prefix("error:").unwrap_or(last).trim();
                format!("invalid regular expression: {what}")
            }
        };
        c.error(path, reason);
    }
}

fn check_method(c: &mut Checker, path: FieldPath, method: &str) {
    let token = !method.is_empty()
        && method
            .chars()
            .all(|ch| ch.is_ascii_uppercase() || ch == '-');
    if !token {
        c.error(
            path,
            format!("`{method}` is not an HTTP method; write it in upper case, e.g. `GET`"),
        );
    }
}

/// RFC 9110 token characters, which header names must be made of.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(ch))
}

fn check_header_name(c: &mut Checker, path: FieldPath, name: &str) {
    if !is_token(name) {
        c.error(path, format!("`{name}` is not a valid HTTP header name"));
    }
}

fn check_host(c: &mut Checker, path: FieldPath, host: &str) {
    let labels_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_NAME_LEN
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !labels_ok {
        c.error(path, format!("`{host}` is not a valid host name"));
    }
}

fn check_access_policy(c: &mut Checker, path: &FieldPath, spec: &AccessPolicySpec) {
    c.name(path.key("service"), &spec.service);
    for (i, rule) in spec.rules.iter().enumerate() {
        let rule_path = path.key("rules").index(i);
        if rule.from.is_empty() {
            c.error(
                rule_path.key("from"),
                "a rule needs at least one caller identity in `from`",
            );
        }
        for (f, identity) in rule.from.iter().enumerate() {
            let (key, name) = match identity {
                Identity::Service(name) => ("service", name),
                Identity::Node(name) => ("node", name),
            };
            if name != "*" {
                c.name(rule_path.key("from").index(f).key(key), name);
            }
        }
        for (p, prefix) in rule.paths.iter().enumerate() {
            if !prefix.starts_with('/') {
                c.error(
                    rule_path.key("paths").index(p),
                    format!("path `{prefix}` must start with `/`"),
                );
            }
        }
        for (m, method) in rule.methods.iter().enumerate() {
            check_method(c, rule_path.key("methods").index(m), method);
        }
    }
}

fn check_external_service(c: &mut Checker, path: &FieldPath, spec: &ExternalServiceSpec) {
    match (&spec.host, spec.addresses.is_empty()) {
        (Some(_), false) => c.error(
            path.key("addresses"),
            "set either `host` or `addresses`, not both",
        ),
        (None, true) => c.error(
            path.clone(),
            "set one of `host` (a DNS name) or `addresses`",
        ),
        (Some(host), true) => check_host(c, path.key("host"), host),
        (None, false) => {}
    }
    if spec.ports.is_empty() {
        c.error(
            path.key("ports"),
            "an external service needs at least one port",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let port_path = path.key("ports").index(i).key("port");
        if port.port == 0 {
            c.error(port_path, "port must be between 1 and 65535");
        } else if !seen.insert(port.port) {
            c.error(port_path, format!("port {} is listed twice", port.port));
        }
    }
}

fn check_agent_config(c: &mut Checker, path: &FieldPath, spec: &AgentConfigSpec) {
    c.name(path.key("site"), &spec.site);
    for (i, address) in spec.control_plane.iter().enumerate() {
        if let Err(reason) = check_host_port(address) {
            c.error(path.key("controlPlane").index(i), reason);
        }
    }
    let listeners = path.key("listeners");
    // Each address with the field that took it first, and whether that is the field's default
    // (then the user may never have written it, and the message says where it comes from).
    let defaults = crate::Listeners::default();
    let mut bound: BTreeMap<SocketAddr, (FieldPath, bool)> = BTreeMap::new();
    let mut claim =
        |c: &mut Checker, at: FieldPath, address: SocketAddr, default: Option<SocketAddr>| {
            let is_default = default == Some(address);
            // Port 0 asks the system for a free port: two such listeners never clash.
            if address.port() == 0 {
                return;
            }
            if let Some((first, first_is_default)) = bound.get(&address) {
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
            } else {
                bound.insert(address, (at, is_default));
            }
        };
    claim(
        c,
        listeners.key("admin"),
        spec.listeners.admin,
        Some(defaults.admin),
    );
    claim(
        c,
        listeners.key("inbound"),
        spec.listeners.inbound,
        Some(defaults.inbound),
    );
    if let Some(proxy) = spec.listeners.http_proxy {
        claim(c, listeners.key("httpProxy"), proxy, defaults.http_proxy);
    }
    let mut names = BTreeSet::new();
    for (i, service) in spec.services.iter().enumerate() {
        let service_path = path.key("services").index(i);
        c.name(service_path.key("name"), &service.name);
        if !names.insert(service.name.as_str()) {
            c.error(
                service_path.key("name"),
                format!("service `{}` is listed twice", service.name),
            );
        }
        if service.port == 0 {
            c.error(service_path.key("port"), "port must be between 1 and 65535");
        }
        if let Some(check) = &service.check {
            check_health(c, &service_path.key("check"), check);
        }
    }
    for (i, upstream) in spec.upstreams.iter().enumerate() {
        let upstream_path = path.key("upstreams").index(i);
        c.name(upstream_path.key("service"), &upstream.service);
        if upstream.listen.port() == 0 {
            c.error(
                upstream_path.key("listen"),
                "an upstream needs a fixed port, not 0",
            );
        }
        claim(c, upstream_path.key("listen"), upstream.listen, None);
        if upstream.port == Some(0) {
            c.error(
                upstream_path.key("port"),
                "port must be between 1 and 65535",
            );
        }
    }
    let limits = path.key("limits");
    if spec.limits.max_header_bytes < MIN_HEADER_BYTES {
        c.error(
            limits.key("maxHeaderBytes"),
            format!(
                "must be at least {MIN_HEADER_BYTES}, got {}",
                spec.limits.max_header_bytes
            ),
        );
    }
    c.at_least_one(limits.key("maxConnections"), spec.limits.max_connections);
    c.at_least_one(
        limits.key("maxConcurrentStreams"),
        spec.limits.max_concurrent_streams,
    );
    c.positive(
        limits.key("headerReadTimeout"),
        spec.limits.header_read_timeout,
    );
    let mut static_names = BTreeSet::new();
    for (i, service) in spec.static_services.iter().enumerate() {
        let service_path = path.key("staticServices").index(i);
        c.name(service_path.key("name"), &service.name);
        if !static_names.insert(service.name.as_str()) {
            c.error(
                service_path.key("name"),
                format!("static service `{}` is listed twice", service.name),
            );
        }
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

fn check_health(c: &mut Checker, path: &FieldPath, check: &HealthCheck) {
    match (&check.http, check.tcp) {
        (Some(_), true) => c.error(path.key("tcp"), "set either `http` or `tcp`, not both"),
        (None, false) => c.error(path.clone(), "set one of `http: /path` or `tcp: true`"),
        (Some(http), false) if !http.starts_with('/') => {
            c.error(
                path.key("http"),
                format!("path `{http}` must start with `/`"),
            );
        }
        _ => {}
    }
    c.positive(path.key("interval"), check.interval);
    c.positive(path.key("timeout"), check.timeout);
    if check.timeout > check.interval {
        c.error(
            path.key("timeout"),
            format!(
                "timeout {} is longer than the interval {}",
                check.timeout, check.interval
            ),
        );
    }
    c.at_least_one(path.key("rise"), check.rise);
    c.at_least_one(path.key("fall"), check.fall);
}

fn check_control_plane_config(
    c: &mut Checker,
    path: &FieldPath,
    spec: &crate::ControlPlaneConfigSpec,
) {
    if spec.id == 0 {
        c.error(path.key("id"), "node ids start at 1");
    }
    if let Some(advertise) = &spec.advertise
        && let Err(reason) = check_host_port(advertise)
    {
        c.error(path.key("advertise"), reason);
    }
    let mut ids = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for (i, member) in spec.members.iter().enumerate() {
        let member_path = path.key("members").index(i);
        if member.id == 0 {
            c.error(member_path.key("id"), "node ids start at 1");
        } else if !ids.insert(member.id) {
            c.error(
                member_path.key("id"),
                format!("node id {} is listed twice", member.id),
            );
        }
        if let Err(reason) = check_host_port(&member.address) {
            c.error(member_path.key("address"), reason);
        } else if !addresses.insert(member.address.as_str()) {
            c.error(
                member_path.key("address"),
                format!("address {} is listed twice", member.address),
            );
        }
    }
    if !spec.members.is_empty() && !ids.contains(&spec.id) {
        c.error(
            path.key("members"),
            format!(
                "this node (id {}) must be one of the members it starts a cluster with",
                spec.id
            ),
        );
    }
    c.positive(path.key("heartbeatInterval"), spec.heartbeat_interval);
    c.positive(path.key("writeTimeout"), spec.write_timeout);
    c.at_least_one(path.key("watchHistory"), spec.watch_history);
    if spec.lease_ttl < spec.election_timeout_max {
        c.error(
            path.key("leaseTtl"),
            format!(
                "must be at least electionTimeoutMax ({}), or an election alone could outlast every lease",
                spec.election_timeout_max
            ),
        );
    }
    if spec.snapshot_every == 0 {
        c.error(path.key("snapshotEvery"), "must be at least 1");
    }
    if spec.election_timeout_min >= spec.election_timeout_max {
        c.error(
            path.key("electionTimeoutMax"),
            format!(
                "must be longer than electionTimeoutMin ({})",
                spec.election_timeout_min
            ),
        );
    }
    if spec.transfer_timeout <= spec.election_timeout_max {
        c.error(
            path.key("transferTimeout"),
            format!(
                "must be longer than electionTimeoutMax ({}): a transfer waits for the leader lease to run out",
                spec.election_timeout_max
            ),
        );
    }
    if spec.heartbeat_interval >= spec.election_timeout_min {
        c.error(
            path.key("heartbeatInterval"),
            format!(
                "must be shorter than electionTimeoutMin ({}), or followers start elections while the leader is healthy",
                spec.election_timeout_min
            ),
        );
    }
}

/// Checks `host:port` (a DNS name or IP, then a port), as used for control-plane addresses.
fn check_host_port(address: &str) -> Result<(), String> {
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("`{address}` is not `host:port`");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let mut probe = Checker { issues: Vec::new() };
    check_host(&mut probe, FieldPath::root(), host);
    if port == 0 || !probe.issues.is_empty() {
        return Err(bad());
    }
    Ok(())
}

/// An object in a set, with the index the caller uses to locate its issues.
pub struct SetMember<'a> {
    /// The object.
    pub policy: &'a Policy,
    /// Where it was defined, for "first defined at" messages.
    pub origin: String,
}

/// Problems between objects of a set: duplicates, conflicts and references to unknown services.
/// Each issue comes with the index of the object it belongs to. `rejected` are objects that
/// failed their own checks: they are not checked here, but the services they define count as
/// defined, so an error in a `ServicePolicy` is not also reported at every reference to it.
pub fn check_set(
    members: &[SetMember<'_>],
    rejected: &[&Policy],
    completeness: Completeness,
) -> Vec<(usize, Issue)> {
    let mut issues = Vec::new();
    let name_path = FieldPath::root().key("metadata").key("name");
    let service_path = FieldPath::root().key("spec").key("service");

    let mut first_by_name: BTreeMap<(Kind, &str), usize> = BTreeMap::new();
    let mut first_by_service: BTreeMap<(Kind, &str), usize> = BTreeMap::new();
    for (i, member) in members.iter().enumerate() {
        let policy = member.policy;
        if let Some(&first) = first_by_name.get(&(policy.kind(), policy.name())) {
            issues.push((
                i,
                Issue::error(
                    name_path.clone(),
                    format!(
                        "duplicate {} `{}`: first defined at {}",
                        policy.kind(),
                        policy.name(),
                        members[first].origin
                    ),
                ),
            ));
        } else {
            first_by_name.insert((policy.kind(), policy.name()), i);
        }
        let governed = match policy {
            Policy::Route(o) => Some(o.spec.service.as_str()),
            Policy::AccessPolicy(o) => Some(o.spec.service.as_str()),
            _ => None,
        };
        if let Some(service) = governed {
            if let Some(&first) = first_by_service.get(&(policy.kind(), service)) {
                issues.push((
                    i,
                    Issue::error(
                        service_path.clone(),
                        format!(
                            "service `{service}` already has {} `{}` (at {}); put all its rules in one",
                            policy.kind(),
                            members[first].policy.name(),
                            members[first].origin
                        ),
                    ),
                ));
            } else {
                first_by_service.insert((policy.kind(), service), i);
            }
        }
    }

    let known = known_services(
        members
            .iter()
            .map(|m| m.policy)
            .chain(rejected.iter().copied()),
    );
    let known_list: Vec<&str> = known.iter().copied().collect();
    for (i, member) in members.iter().enumerate() {
        for (path, service) in service_references(member.policy) {
            if known.contains(service) {
                continue;
            }
            let message = format!("service `{service}` is not defined by any object in this set");
            let issue = match completeness {
                Completeness::Complete => Issue::error(path, message),
                Completeness::Partial => Issue::warning(path, message),
            };
            let issue = match suggest::closest(service, &known_list) {
                Some(close) => issue.with_help(format!("did you mean `{close}`?")),
                None => issue,
            };
            issues.push((i, issue));
        }
    }
    issues
}

/// Services the objects define.
fn known_services<'a>(policies: impl Iterator<Item = &'a Policy>) -> BTreeSet<&'a str> {
    let mut known = BTreeSet::new();
    for policy in policies {
        match policy {
            Policy::ServicePolicy(o) => {
                known.insert(o.metadata.name.as_str());
            }
            Policy::ExternalService(o) => {
                known.insert(o.metadata.name.as_str());
            }
            Policy::AgentConfig(o) => {
                known.extend(o.spec.services.iter().map(|s| s.name.as_str()));
                known.extend(o.spec.static_services.iter().map(|s| s.name.as_str()));
            }
            Policy::Route(_) | Policy::AccessPolicy(_) | Policy::ControlPlaneConfig(_) => {}
        }
    }
    known
}

/// Every service name an object refers to, with the field that names it.
fn service_references(policy: &Policy) -> Vec<(FieldPath, &str)> {
    let spec = FieldPath::root().key("spec");
    let mut refs = Vec::new();
    match policy {
        Policy::Route(o) => {
            refs.push((spec.key("service"), o.spec.service.as_str()));
            for (r, rule) in o.spec.rules.iter().enumerate() {
                for (b, backend) in rule.backends.iter().enumerate() {
                    let path = spec
                        .key("rules")
                        .index(r)
                        .key("backends")
                        .index(b)
                        .key("service");
                    refs.push((path, backend.service.as_str()));
                }
            }
        }
        Policy::AccessPolicy(o) => {
            refs.push((spec.key("service"), o.spec.service.as_str()));
            for (r, rule) in o.spec.rules.iter().enumerate() {
                for (f, identity) in rule.from.iter().enumerate() {
                    if let Identity::Service(name) = identity
                        && name != "*"
                    {
                        let path = spec
                            .key("rules")
                            .index(r)
                            .key("from")
                            .index(f)
                            .key("service");
                        refs.push((path, name.as_str()));
                    }
                }
            }
        }
        Policy::AgentConfig(o) => {
            for (u, upstream) in o.spec.upstreams.iter().enumerate() {
                refs.push((
                    spec.key("upstreams").index(u).key("service"),
                    upstream.service.as_str(),
                ));
            }
        }
        Policy::ServicePolicy(_) | Policy::ExternalService(_) | Policy::ControlPlaneConfig(_) => {}
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_label_rules() {
        assert!(check_name("payments-v2").is_ok());
        for bad in ["", "Payments", "-x", "x-", "a_b", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_port_accepts_names_and_ips() {
        assert!(check_host_port("10.0.0.1:7400").is_ok());
        assert!(check_host_port("[::1]:7400").is_ok());
        assert!(check_host_port("cp-1.example.internal:7400").is_ok());
        for bad in ["cp-1", "cp-1:0", "cp_1:80", ":80", "cp:99999"] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }
}
