//! The addresses of `ExternalService`s named by a DNS `host`: resolved with hickory-resolver
//! (the host's name servers, or `dns.upstreams`), each again when its answer's TTL runs out,
//! and handed to [`Sources`] as the service's endpoints. A failed lookup keeps the last
//! addresses (a resolver outage must not take egress down) and is tried again soon.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hyphae_policies::DnsSettings;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;
use crate::sources::Sources;

/// Shortest wait before a name is resolved again, whatever its TTL says.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest a resolved answer is kept before it is asked again.
pub const MAX_REFRESH: Duration = Duration::from_secs(300);
/// Wait after a failed lookup.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// One name's last answer.
struct Resolved {
    host: String,
    addresses: Vec<IpAddr>,
    refresh_at: Instant,
}

/// Resolves the hosts of external services as long as they exist, until `shutdown`.
pub async fn run(
    proxy: Arc<Proxy>,
    sources: Arc<Sources>,
    settings: DnsSettings,
    shutdown: CancellationToken,
) {
    // Made at the first host to resolve: most agents never need one.
    let mut made: Option<TokioResolver> = None;
    let mut changes = sources.subscribe();
    let mut known: BTreeMap<String, Resolved> = BTreeMap::new();
    loop {
        let wanted = hosts(&proxy);
        if made.is_none() && !wanted.is_empty() {
            match resolver(&settings) {
                Ok(resolver) => made = Some(resolver),
                Err(error) => {
                    tracing::error!(%error, "cannot make a resolver: external services named by a host get no endpoints");
                    return;
                }
            }
        }
        let before = known.len();
        known.retain(|service, resolved| wanted.get(service) == Some(&resolved.host));
        let mut changed = known.len() != before;
        let now = Instant::now();
        if let Some(resolver) = &made {
            for (service, host) in &wanted {
                let due = known.get(service).is_none_or(|r| r.refresh_at <= now);
                if !due {
                    continue;
                }
                let previous = known.remove(service);
                let previous_addresses = previous.as_ref().map(|p| p.addresses.clone());
                let resolved = lookup(resolver, service, host, previous).await;
                changed |= previous_addresses.as_ref() != Some(&resolved.addresses);
                known.insert(service.clone(), resolved);
            }
        }
        if changed {
            sources.set_resolved(
                known
                    .iter()
                    .map(|(service, r)| (service.clone(), r.addresses.clone()))
                    .collect(),
            );
        }
        let next = known.values().map(|r| r.refresh_at).min();
        let wait = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            () = wait => {}
        }
    }
}

/// The DNS host of every external service in the snapshot, by service name.
fn hosts(proxy: &Proxy) -> BTreeMap<String, String> {
    proxy
        .snapshot
        .load()
        .services
        .values()
        .filter_map(|service| {
            let external = service.external.as_ref()?;
            Some((external.name.clone(), external.host.clone()?))
        })
        .collect()
}

/// Resolves `host`; on failure keeps what `previous` held.
async fn lookup(
    resolver: &TokioResolver,
    service: &str,
    host: &str,
    previous: Option<Resolved>,
) -> Resolved {
    match resolver.lookup_ip(host).await {
        Ok(answer) => {
            let mut addresses: Vec<IpAddr> = answer.iter().collect();
            addresses.sort();
            addresses.dedup();
            let ttl = answer
                .valid_until()
                .saturating_duration_since(std::time::Instant::now());
            let refresh = ttl.clamp(MIN_REFRESH, MAX_REFRESH);
            tracing::debug!(%service, %host, ?addresses, ?refresh, "resolved an external service");
            Resolved {
                host: host.to_string(),
                addresses,
                refresh_at: Instant::now() + refresh,
            }
        }
        Err(error) => {
            let addresses = previous.map(|p| p.addresses).unwrap_or_default();
            tracing::warn!(%service, %host, %error, kept = addresses.len(), "cannot resolve an external service; keeping its last addresses");
            Resolved {
                host: host.to_string(),
                addresses,
                refresh_at: Instant::now() + RETRY_AFTER_FAILURE,
            }
        }
    }
}

/// A resolver asking `dns.upstreams`, or the host's own configuration (`/etc/resolv.conf`,
/// `/etc/hosts`) when none are set.
fn resolver(settings: &DnsSettings) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    let mut builder = if settings.upstreams.is_empty() {
        TokioResolver::builder(TokioRuntimeProvider::default())?
    } else {
        let name_servers = crate::dns::forward::name_servers(&settings.upstreams);
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    options.cache_size = u64::from(settings.cache_size);
    options.timeout = settings.forward_timeout.get();
    options.use_hosts_file = ResolveHosts::Auto;
    builder.build()
}
