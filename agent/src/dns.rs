//! The agent's DNS server for the mesh zone: `<service>.mesh` answers the service's virtual IP,
//! every other name is forwarded to the host's resolvers. It keeps within the `dns.*` bounds
//! whatever clients send, and never panics on a packet.
//!
//! A query takes this path through `dns/`: `udp.rs` or `tcp.rs` receives it; `handler.rs`
//! parses it (`wire.rs`), checks the rate `limits.rs`, answers a mesh name from `zone.rs` or
//! hands it to `forward.rs`, and encodes the answer to fit the transport (`wire.rs`);
//! [`metrics`] counts outcomes. Protocol handling is hickory-proto's; the loops are ours
//! (decision 41).

pub mod forward;
mod handler;
mod limits;
pub mod metrics;
mod tcp;
mod udp;
mod wire;
mod zone;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyphae_policies::DnsSettings;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use forward::ForwarderError;
pub use zone::{MeshName, MeshPort, MeshZone};

use crate::listener::{ConnectionLimit, Listener};

/// Attempts at finding a port free for both UDP and TCP when the address asks for port 0.
const BIND_ATTEMPTS: usize = 16;

/// Why the DNS server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A socket could not be bound.
    #[error("cannot listen for DNS on {address} ({transport}): {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// `udp` or `tcp`.
        transport: &'static str,
        /// What the system said.
        source: std::io::Error,
    },
    /// `dns.zone` is not a DNS name (validation catches this before).
    #[error("dns.zone `{zone}` is not a DNS name: {source}")]
    Zone {
        /// The setting.
        zone: String,
        /// Why.
        source: hickory_proto::ProtoError,
    },
    /// Forwarding could not be set up.
    #[error(transparent)]
    Forwarder(#[from] ForwarderError),
}

/// A DNS server with its UDP socket and TCP listener bound to the same address, not yet
/// answering: binding first lets the caller report the address (port 0 becomes a real one)
/// and fail on a taken port before anything runs.
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    address: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP on `address`. With port 0, a port free for both is found (UDP picks
    /// one, TCP takes the same; another is tried when TCP's is taken).
    pub async fn bind(address: SocketAddr) -> Result<DnsServer, DnsError> {
        let bind_error = |transport, source| DnsError::Bind {
            address,
            transport,
            source,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let udp = UdpSocket::bind(address)
                .await
                .map_err(|error| bind_error("udp", error))?;
            let bound = udp.local_addr().map_err(|error| bind_error("udp", error))?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => {
                    return Ok(DnsServer {
                        udp,
                        tcp,
                        address: bound,
                    });
                }
                Err(error)
                    if address.port() == 0
                        && error.kind() == std::io::ErrorKind::AddrInUse
                        && attempt < BIND_ATTEMPTS =>
                {
                    tracing::debug!(%bound, "TCP port taken; trying another for DNS");
                }
                Err(error) => return Err(bind_error("tcp", error)),
            }
        }
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Answers on UDP and TCP until `shutdown` is cancelled, then closes every connection and
    /// waits for queries in flight. `zone` is read at each query, so a new value is served
    /// from the next one on. Errors only when it cannot start (a bad zone name, a resolver that
    /// cannot be built); a host without resolvers still answers the mesh zone.
    pub async fn run(
        self,
        settings: &DnsSettings,
        zone: watch::Receiver<Arc<MeshZone>>,
        shutdown: CancellationToken,
    ) -> Result<(), DnsError> {
        let DnsServer { udp, tcp, address } = self;
        let ttl = u32::try_from(settings.ttl.get().as_secs()).unwrap_or(u32::MAX);
        let own_address = match address.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        let authority =
            zone::Authority::new(&settings.zone, ttl, own_address).map_err(|source| {
                DnsError::Zone {
                    zone: settings.zone.clone(),
                    source,
                }
            })?;
        let forwarder = forward::Forwarder::new(settings, address).await?;
        let handler = Arc::new(handler::Handler::new(settings, zone, authority, forwarder));
        tracing::info!(%address, zone = %settings.zone, "DNS server answering");
        let tracker = TaskTracker::new();
        let idle = settings.tcp_idle_timeout.get();
        let tcp_handler = Arc::clone(&handler);
        tokio::join!(
            udp::serve(Arc::new(udp), handler, shutdown.clone(), tracker.clone()),
            Listener::from_bound("dns", tcp).run(
                ConnectionLimit::new(settings.max_tcp_connections),
                shutdown.clone(),
                tracker.clone(),
                move |stream, peer, shutdown| {
                    tcp::serve(Arc::clone(&tcp_handler), stream, peer, idle, shutdown)
                },
            ),
        );
        tracker.close();
        tracker.wait().await;
        tracing::debug!(%address, "DNS server stopped");
        Ok(())
    }
}

/// Runs the DNS server on UDP and TCP at `address` until `shutdown` is cancelled: binds
/// ([`DnsServer::bind`]) then answers ([`DnsServer::run`]). Binding errors are returned.
pub async fn serve(
    address: SocketAddr,
    settings: &DnsSettings,
    zone: watch::Receiver<Arc<MeshZone>>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    DnsServer::bind(address)
        .await?
        .run(settings, zone, shutdown)
        .await
}
