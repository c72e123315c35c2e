//! A hyper-util connector that opens TCP, then TLS toward what a [`ServerIdentity`] names: how
//! every hyphae client (peers, agents, the CLI, tests) reaches a TLS port with hyper's pooled
//! client.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::server_identity::ServerIdentity;

/// Opens TLS connections for a hyper client; the URI gives host and port only (its scheme is
/// ignored: every connection is TLS).
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ArcSwap<ClientConfig>>,
    server: ServerIdentity,
    connect_timeout: Duration,
}

impl TlsConnector {
    /// Connections under `config` to servers that are `server`, each TCP connect and TLS
    /// handshake bounded by `connect_timeout`.
    pub fn new(
        config: Arc<ClientConfig>,
        server: ServerIdentity,
        connect_timeout: Duration,
    ) -> TlsConnector {
        TlsConnector::swappable(Arc::new(ArcSwap::new(config)), server, connect_timeout)
    }

    /// Like [`TlsConnector::new`], with a configuration its owner may replace (new roots):
    /// each new connection uses the one in place.
    pub fn swappable(
        config: Arc<ArcSwap<ClientConfig>>,
        server: ServerIdentity,
        connect_timeout: Duration,
    ) -> TlsConnector {
        TlsConnector {
            config,
            server,
            connect_timeout,
        }
    }

    /// Opens one connection to `host:port`.
    pub async fn open(&self, host: &str, port: u16) -> io::Result<TlsStream<TcpStream>> {
        let name = self
            .server
            .server_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a server name"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let open = async {
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            tokio_rustls::TlsConnector::from(self.config.load_full())
                .connect(name, tcp)
                .await
        };
        tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS connection within {:?}", self.connect_timeout),
                )
            })?
    }
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TlsConnection;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsConnection>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in the URI"))?;
            let port = uri.port_u16().unwrap_or(443);
            let stream = connector.open(host, port).await?;
            Ok(TlsConnection(TokioIo::new(stream)))
        })
    }
}

/// One client TLS connection, as hyper reads and writes it.
pub struct TlsConnection(TokioIo<TlsStream<TcpStream>>);

impl Connection for TlsConnection {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.0.inner().get_ref().1.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
