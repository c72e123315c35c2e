//! Host names and `host:port` addresses, as routes, external services, agents and control-plane
//! members write them.

use std::net::SocketAddr;

use super::{Checker, MAX_NAME_LEN};
use crate::diagnostic::FieldPath;

/// Longest host name, in characters (RFC 1035).
const MAX_HOST_LEN: usize = 253;

/// Whether `host` is a DNS name: dot-separated labels of letters, digits and `-`.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_NAME_LEN
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Checks a host name.
pub(super) fn check_host(c: &mut Checker, path: FieldPath, host: &str) {
    if !is_host(host) {
        c.error(path, format!("`{host}` is not a valid host name"));
    }
}

/// Checks `host:port` (a DNS name or IP, then a port), as used for control-plane addresses.
pub(super) fn check_host_port(address: &str) -> Result<(), String> {
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("`{address}` is not `host:port`");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || !is_host(host) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
