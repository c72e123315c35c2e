//! An `ExternalService` on its own: a host name or addresses, and its ports.

use std::collections::BTreeSet;

use super::Checker;
use super::host::check_host;
use crate::ExternalServiceSpec;
use crate::diagnostic::FieldPath;

/// Checks an `ExternalService`'s spec.
pub(super) fn check(c: &mut Checker, path: &FieldPath, spec: &ExternalServiceSpec) {
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
    if spec.tls.is_some() {
        match spec.tls_server_name() {
            None => c.error(
                path.key("tls").key("serverName"),
                "with `addresses`, TLS needs the name the service's certificate carries",
            ),
            Some(name) => check_host(c, path.key("tls").key("serverName"), name),
        }
        if spec
            .ports
            .iter()
            .any(|p| matches!(p.protocol, crate::Protocol::Tls))
        {
            c.error(
                path.key("tls"),
                "a `tls` port carries the app's own TLS: the agent cannot originate TLS on it too",
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let port_path = path.key("ports").index(i).key("port");
        if c.port(port_path.clone(), port.port) && !seen.insert(port.port) {
            c.error(port_path, format!("port {} is listed twice", port.port));
        }
    }
}
