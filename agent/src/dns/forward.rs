//! Forwarding every name outside the mesh zone to the host's resolvers (or `dns.upstreams`),
//! through hickory-resolver's cache, which keeps each answer for its TTL. Answers, negative ones
//! included, pass through as the upstream gave them; it never invents records.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Query, ResponseCode};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as ResolveError, NetError};
use hyphae_policies::DnsSettings;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::zone::Answer;

/// The port resolvers listen on; `/etc/resolv.conf` names addresses only.
const DNS_PORT: u16 = 53;

/// The resolver with its cache, and the bound on queries waiting for it.
pub(crate) struct Forwarder {
    /// None when there is nowhere to forward to: other names are refused.
    resolver: Option<TokioResolver>,
    upstreams: Vec<SocketAddr>,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

/// Why forwarding cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS forwarder: {0}")]
pub struct ForwarderError(#[from] NetError);

impl Forwarder {
    /// A forwarder to `settings.upstreams`, or to `/etc/resolv.conf`'s name servers when that
    /// is empty, never to `own` (the agent's DNS listener: a query would loop). A host without
    /// usable name servers gets a forwarder that refuses, with a warning in the log.
    pub(crate) async fn new(
        settings: &DnsSettings,
        own: SocketAddr,
    ) -> Result<Forwarder, ForwarderError> {
        let configured = if settings.upstreams.is_empty() {
            system_upstreams().await
        } else {
            settings.upstreams.clone()
        };
        let upstreams: Vec<SocketAddr> = configured
            .into_iter()
            .filter(|upstream| {
                let looping = loops_back(*upstream, own);
                if looping {
                    tracing::warn!(%upstream, "skipping this DNS upstream: it is the agent itself");
                }
                !looping
            })
            .collect();
        let timeout = settings.forward_timeout.get();
        let in_flight = Arc::new(Semaphore::new(
            usize::try_from(settings.max_in_flight_forwards).unwrap_or(usize::MAX),
        ));
        if upstreams.is_empty() {
            tracing::warn!(
                "no DNS upstream to forward to (set dns.upstreams or a nameserver in /etc/resolv.conf): names outside the mesh zone are refused"
            );
            return Ok(Forwarder {
                resolver: None,
                upstreams,
                in_flight,
                timeout,
            });
        }
        let name_servers = name_servers(&upstreams);
        let mut options = ResolverOpts::default();
        options.cache_size = u64::from(settings.cache_size);
        options.timeout = timeout;
        // Queries arrive fully qualified, and the host's files are the stub resolver's
        // business (it reads them before asking DNS): pass every question on as asked.
        options.use_hosts_file = ResolveHosts::Never;
        options.ndots = 0;
        options.preserve_intermediates = true;
        options.recursion_desired = true;
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .build()?;
        tracing::info!(?upstreams, "forwarding names outside the mesh zone");
        Ok(Forwarder {
            resolver: Some(resolver),
            upstreams,
            in_flight,
            timeout,
        })
    }

    /// Where queries go, after the agent's own address was taken out.
    pub(crate) fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// A slot among `dns.maxInFlightForwards`, or `None` when all are taken (the query is
    /// refused) or there is nowhere to forward to.
    pub(crate) fn start(&self) -> Option<OwnedSemaphorePermit> {
        self.resolver.as_ref()?;
        Arc::clone(&self.in_flight).try_acquire_owned().ok()
    }

    /// Forwards `query`, holding `_slot` until the answer is in (or `dns.forwardTimeout` ran
    /// out: `SERVFAIL`).
    pub(crate) async fn forward(&self, query: &Query, _slot: OwnedSemaphorePermit) -> Answer {
        let Some(resolver) = &self.resolver else {
            return code(ResponseCode::Refused);
        };
        let lookup = resolver.lookup(query.name().clone(), query.query_type());
        match tokio::time::timeout(self.timeout, lookup).await {
            Ok(Ok(lookup)) => Answer {
                code: ResponseCode::NoError,
                answers: lookup.answers().to_vec(),
                authorities: Vec::new(),
                // Glue (the addresses of SRV and MX targets) the upstream added.
                additionals: lookup.additionals().to_vec(),
            },
            Ok(Err(NetError::Dns(ResolveError::NoRecordsFound(no_records)))) => Answer {
                // NXDOMAIN, or NOERROR without records (NODATA), with the SOA that says how
                // long the client may cache the absence.
                code: no_records.response_code,
                authorities: no_records
                    .soa
                    .map(|soa| (*soa).into_record_of_rdata())
                    .into_iter()
                    .collect(),
                ..Answer::default()
            },
            Ok(Err(NetError::Dns(ResolveError::ResponseCode(upstream_code)))) => {
                code(upstream_code)
            }
            Ok(Err(error)) => {
                tracing::debug!(name = %query.name(), %error, "forwarded query failed");
                code(ResponseCode::ServFail)
            }
            Err(_elapsed) => {
                tracing::debug!(name = %query.name(), timeout = ?self.timeout, "forwarded query timed out");
                code(ResponseCode::ServFail)
            }
        }
    }
}

fn code(code: ResponseCode) -> Answer {
    Answer {
        code,
        ..Answer::default()
    }
}

/// Name servers at `upstreams`, each asked over UDP and then TCP (for truncated answers).
pub fn name_servers(upstreams: &[SocketAddr]) -> Vec<NameServerConfig> {
    upstreams
        .iter()
        .map(|upstream| {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut connection| {
                    connection.port = upstream.port();
                    connection
                })
                .collect();
            NameServerConfig::new(upstream.ip(), true, connections)
        })
        .collect()
}

/// Whether a query sent to `upstream` would reach the agent listening on `own`.
fn loops_back(upstream: SocketAddr, own: SocketAddr) -> bool {
    upstream.port() == own.port()
        && (upstream.ip() == own.ip() || (own.ip().is_unspecified() && upstream.ip().is_loopback()))
}

/// The name servers of the host's resolver configuration (`/etc/resolv.conf` on Unix), read
/// off the runtime's threads; none when it cannot be read, with a warning.
async fn system_upstreams() -> Vec<SocketAddr> {
    let read = tokio::task::spawn_blocking(hickory_resolver::system_conf::read_system_conf).await;
    match read {
        Ok(Ok((config, _options))) => config
            .name_servers()
            .iter()
            .map(|server| {
                let port = server
                    .connections
                    .first()
                    .map_or(DNS_PORT, |connection| connection.port);
                SocketAddr::new(server.ip, port)
            })
            .collect(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot read the host's resolver configuration");
            Vec::new()
        }
        Err(error) => {
            tracing::warn!(%error, "reading the host's resolver configuration failed");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_own_address_is_a_loop_and_others_are_not() {
        let own: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let wildcard: SocketAddr = "0.0.0.0:53".parse().unwrap();
        let resolver: SocketAddr = "127.0.0.53:53".parse().unwrap();
        assert!(loops_back(own, own));
        assert!(!loops_back(resolver, own));
        assert!(loops_back(resolver, wildcard));
        assert!(!loops_back("10.0.0.2:53".parse().unwrap(), wildcard));
        assert!(!loops_back(own, "127.0.0.1:5353".parse().unwrap()));
    }
}
