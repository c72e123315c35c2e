//! Asking an agent's DNS server, as an app's stub resolver does once the host sends the mesh
//! zone there.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// A resolver that asks only the DNS server at `address`, over UDP, and caches nothing (tests
/// watch names come and go); `None` when it cannot be made.
pub fn resolver_of(address: SocketAddr) -> Option<TokioResolver> {
    let mut connection = ConnectionConfig::udp();
    connection.port = address.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        address.ip(),
        true,
        vec![connection],
    )]);
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    builder.options_mut().cache_size = 0;
    builder.build().ok()
}

/// The IPv4 addresses `name` resolves to through `resolver`; empty when none (or no answer).
pub async fn ipv4_of(resolver: &TokioResolver, name: &str) -> Vec<Ipv4Addr> {
    match resolver.lookup_ip(name).await {
        Ok(answer) => answer
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}
