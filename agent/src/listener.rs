//! The accept loop every listener shares: a connection limit (shared by the listeners given the
//! same one, optionally per source address), one task per connection owned by a tracker, and a
//! shutdown signal that stops accepting at once and lets each connection finish gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyphae_policies::source_counts::SourceCounts;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::circuit::Limit;
use crate::metrics;

/// Connections open across the listeners that share it (`limits.maxConnections` for the local
/// ones, `maxInboundConnections` for the inbound port), and optionally per source address.
#[derive(Clone)]
pub struct ConnectionLimit {
    open: Arc<Limit>,
    max: u32,
    per_source: Option<Arc<SourceCounts>>,
}

impl ConnectionLimit {
    /// A limit of `max` open connections.
    pub fn new(max: u32) -> Self {
        ConnectionLimit {
            open: Arc::new(Limit::default()),
            max,
            per_source: None,
        }
    }

    /// The same, with at most `max` of them from any one source address.
    pub fn per_source(self, max: u32) -> Self {
        ConnectionLimit {
            per_source: Some(SourceCounts::new(max)),
            ..self
        }
    }
}

/// A bound listener and what to do with each connection.
pub struct Listener {
    name: &'static str,
    listener: TcpListener,
}

impl Listener {
    /// Binds `address`; `name` labels logs and metrics (`outbound`, `inbound`, `admin`...).
    pub async fn bind(name: &'static str, address: SocketAddr) -> std::io::Result<Listener> {
        let listener = TcpListener::bind(address).await?;
        Ok(Listener { name, listener })
    }

    /// A listener bound by its owner (the DNS server binds TCP on the port its UDP socket got);
    /// `name` as for [`Listener::bind`].
    pub fn from_bound(name: &'static str, listener: TcpListener) -> Listener {
        Listener { name, listener }
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until `shutdown`, handing each connection to `serve` in a tracked task. `serve`
    /// gets the shutdown token so it can finish in-flight work and close gracefully.
    pub async fn run<F, Fut>(
        self,
        limit: ConnectionLimit,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        serve: F,
    ) where
        F: Fn(TcpStream, SocketAddr, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = self.name;
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: log, back off briefly, keep serving.
                    tracing::warn!(listener = name, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            let Some(permit) = limit.open.try_acquire(limit.max) else {
                metrics::connection_refused(name);
                tracing::warn!(listener = name, %peer, max = limit.max, "connection limit reached; closing new connection");
                drop(stream);
                continue;
            };
            let place = match &limit.per_source {
                Some(per_source) => match per_source.take(peer.ip()) {
                    Some(place) => Some(place),
                    None => {
                        metrics::connection_refused(name);
                        // Counted, not logged at warn: a flood from one address would
                        // flood the log too.
                        tracing::debug!(listener = name, %peer, max = per_source.max(), "connection limit per source reached; closing new connection");
                        continue;
                    }
                },
                None => None,
            };
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(listener = name, %error, "cannot set TCP_NODELAY");
            }
            // Boxed: the connection's future (some 15 KB) is then moved by its pointer, and
            // the task's poll keeps no room for it in its stack frame, below which every
            // request's frames would otherwise run (decision 98).
            let connection = Box::pin(serve(stream, peer, shutdown.clone()));
            tracker.spawn(async move {
                metrics::connection_opened(name);
                connection.await;
                metrics::connection_closed(name);
                drop((permit, place));
            });
        }
        tracing::debug!(listener = name, "stopped accepting");
    }
}

/// Pause after a failed accept, so a persistent error does not spin a core.
const ACCEPT_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Drives a served connection to its end; when `shutdown` fires first, asks it to finish
/// gracefully (`graceful`: stop taking new requests, complete in-flight ones) and waits.
pub async fn serve_until_shutdown<C, T>(
    connection: C,
    shutdown: &CancellationToken,
    graceful: fn(std::pin::Pin<&mut C>),
) -> T
where
    C: Future<Output = T>,
{
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            graceful(connection.as_mut());
            connection.await
        }
    }
}
