//! The TLS hop between the two proxies of a row (the host agent's inbound port, the inner
//! haproxy of the TLS chain): a check that it refuses plaintext and clients without a
//! certificate, and what a new connection's handshake costs, timed from a client in this
//! process (rustls on ring, TLS 1.3, a client certificate: what a caller agent does). Never
//! drives load: connections one after another, bounded in count and time.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hyphae_integration::http::request;
use hyphae_policies::tls::{self, ALPN_H2, ServerIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::{ClientConfig, HandshakeKind as RustlsHandshakeKind};

use super::Bench;
use super::processes::{ensure_running, stop};
use super::setup::{Setup, TlsHop};
use crate::bench::procfs::cpu_seconds;

/// New connections timed per kind of handshake.
pub const HANDSHAKES: u32 = 2000;
/// Longest one connection may take: connect, handshake, the server's first HTTP/2 bytes.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the [`HANDSHAKES`] connections of one kind may take together.
const MEASUREMENT_DEADLINE: Duration = Duration::from_secs(60);
/// What an HTTP/2 client sends first: the preface and an empty SETTINGS frame. The server
/// answers with its SETTINGS only once it has checked the client's certificate, so reading one
/// byte back times the whole handshake, both sides' work included.
const H2_CLIENT_START: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Length of an HTTP/2 frame header.
const H2_FRAME_HEADER: usize = 9;
/// Where an HTTP/2 frame header holds the frame's type.
const H2_FRAME_TYPE: usize = 3;
/// The type of a SETTINGS frame, what an HTTP/2 server sends first.
const H2_SETTINGS: u8 = 0x4;

/// A full handshake, or one resuming an earlier session (what a reconnect to a peer seen
/// before does: no certificates sent or checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeKind {
    /// Certificates both ways, signatures made and checked.
    Full,
    /// A pre-shared key from an earlier connection's ticket, with a fresh key exchange.
    Resumed,
}

impl HandshakeKind {
    /// Every kind, in table order.
    pub const ALL: [HandshakeKind; 2] = [HandshakeKind::Full, HandshakeKind::Resumed];

    /// Name for the table and JSON.
    pub fn name(self) -> &'static str {
        match self {
            HandshakeKind::Full => "full",
            HandshakeKind::Resumed => "resumed",
        }
    }
}

/// What [`HANDSHAKES`] new connections to one hop cost.
pub struct HandshakeCost {
    /// The row whose hop it is.
    pub setup: Setup,
    /// The kind asked for.
    pub kind: HandshakeKind,
    /// Connections timed.
    pub connections: u32,
    /// How many of them the server resumed.
    pub resumed: u32,
    /// Mean time from connecting to the server's first HTTP/2 bytes.
    pub wall_micros: f64,
    /// The server process's CPU per connection (user plus system).
    pub server_cpu_micros: f64,
    /// This process's CPU per connection: the client's side.
    pub client_cpu_micros: f64,
}

/// How one connection to a hop ended.
enum Opened {
    /// The server answered; whether it resumed a session.
    Answered { resumed: bool },
    /// The server closed the connection or failed the handshake.
    Refused(io::Error),
}

/// Whether the server at `address` speaks HTTP/2 in plaintext: it answers the client's
/// preface with a SETTINGS frame (a TLS server closes or sends an alert instead).
async fn answers_plaintext_h2(address: SocketAddr) -> Result<bool> {
    let attempt = async {
        let mut tcp = TcpStream::connect(address).await?;
        tcp.write_all(H2_CLIENT_START).await?;
        let mut header = [0_u8; H2_FRAME_HEADER];
        tcp.read_exact(&mut header).await?;
        Ok::<_, io::Error>(header[H2_FRAME_TYPE] == H2_SETTINGS)
    };
    match tokio::time::timeout(CONNECTION_TIMEOUT, attempt).await {
        Ok(answer) => Ok(answer.unwrap_or(false)),
        Err(_) => bail!("{address} neither answered nor closed within {CONNECTION_TIMEOUT:?}"),
    }
}

/// Connects to `hop` with `config`, completes the handshake and reads the server's first
/// HTTP/2 bytes; the connection is then dropped.
async fn open(config: &Arc<ClientConfig>, hop: &TlsHop) -> Result<Opened> {
    let name = ServerIdentity::Node(hop.node.clone())
        .server_name()
        .with_context(|| format!("`{}` is no DNS label", hop.node))?;
    let attempt = async {
        let tcp = TcpStream::connect(hop.address).await?;
        tcp.set_nodelay(true)?;
        let mut stream = TlsConnector::from(Arc::clone(config))
            .connect(name, tcp)
            .await?;
        stream.write_all(H2_CLIENT_START).await?;
        stream.flush().await?;
        let mut first = [0_u8; 1];
        if stream.read(&mut first).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let resumed = stream.get_ref().1.handshake_kind() == Some(RustlsHandshakeKind::Resumed);
        Ok::<_, io::Error>(resumed)
    };
    match tokio::time::timeout(CONNECTION_TIMEOUT, attempt).await {
        Ok(Ok(resumed)) => Ok(Opened::Answered { resumed }),
        Ok(Err(error)) => Ok(Opened::Refused(error)),
        Err(_) => bail!(
            "a TLS connection to {} took longer than {CONNECTION_TIMEOUT:?}",
            hop.address
        ),
    }
}

impl Bench {
    /// A client configuration for the hops: checks the server against the bench's root,
    /// presents the bench client's certificate when `with_certificate`, resumes sessions for
    /// [`HandshakeKind::Resumed`] only.
    fn client_config(
        &self,
        with_certificate: bool,
        kind: HandshakeKind,
    ) -> Result<Arc<ClientConfig>> {
        let certificates = &self.certificates;
        let credentials = with_certificate.then_some(&certificates.client);
        let mut config = (*tls::client_config(&certificates.trust, credentials, &ALPN_H2)?).clone();
        if kind == HandshakeKind::Full {
            config.resumption = Resumption::disabled();
        }
        Ok(Arc::new(config))
    }

    /// Fails unless `hop` refuses plaintext (HTTP/1.1 and HTTP/2) and a TLS client without a
    /// certificate, and answers one with a certificate.
    pub fn check_mutual_tls(&self, hop: &TlsHop, what: &str) -> Result<()> {
        let anonymous = self.client_config(false, HandshakeKind::Full)?;
        let client = self.client_config(true, HandshakeKind::Full)?;
        self.runtime.block_on(async {
            if let Some(answer) = request("GET", hop.address, "/", "").await {
                bail!(
                    "{what}: {} answered plaintext HTTP with {}; it must require TLS",
                    hop.address,
                    answer.status
                );
            }
            if answers_plaintext_h2(hop.address).await? {
                bail!(
                    "{what}: {} answered plaintext HTTP/2; it must require TLS",
                    hop.address
                );
            }
            if let Opened::Answered { .. } = open(&anonymous, hop).await? {
                bail!(
                    "{what}: {} let a TLS client without a certificate in; it must require one",
                    hop.address
                );
            }
            match open(&client, hop).await? {
                Opened::Answered { .. } => Ok(()),
                Opened::Refused(error) => bail!(
                    "{what}: {} refused the bench's client certificate: {error}",
                    hop.address
                ),
            }
        })
    }

    /// Starts `setup`, times [`HANDSHAKES`] new connections of each kind to its TLS hop, and
    /// stops it.
    pub fn handshakes(&self, setup: Setup) -> Result<Vec<HandshakeCost>> {
        eprintln!(
            "xtask: bench TLS handshakes at the hop of {} ({HANDSHAKES} connections per kind)",
            setup.name()
        );
        let mut target = self.start(setup)?;
        let hop = target
            .tls_hop
            .clone()
            .with_context(|| format!("{} has no TLS hop", setup.name()))?;
        let costs = HandshakeKind::ALL
            .into_iter()
            .map(|kind| self.time_handshakes(setup, kind, &hop))
            .collect::<Result<Vec<_>>>()?;
        ensure_running(target.processes())?;
        self.runtime.block_on(stop(target.processes().rev()));
        Ok(costs)
    }

    /// Times [`HANDSHAKES`] connections of `kind` to `hop`, one after another, after one
    /// unmeasured connection (which leaves a session to resume).
    fn time_handshakes(
        &self,
        setup: Setup,
        kind: HandshakeKind,
        hop: &TlsHop,
    ) -> Result<HandshakeCost> {
        let config = self.client_config(true, kind)?;
        let client = [std::process::id()];
        let server = [hop.pid];
        let answered = |opened: Opened| match opened {
            Opened::Answered { resumed } => Ok(resumed),
            Opened::Refused(error) => Err(anyhow::anyhow!(
                "{}: {} refused a TLS connection: {error}",
                setup.name(),
                hop.address
            )),
        };
        self.runtime
            .block_on(open(&config, hop))
            .and_then(answered)?;

        let server_cpu = cpu_seconds(&server, self.ticks_per_second)?;
        let client_cpu = cpu_seconds(&client, self.ticks_per_second)?;
        let started = Instant::now();
        let resumed = self.runtime.block_on(async {
            let all = async {
                let mut resumed = 0;
                for _ in 0..HANDSHAKES {
                    resumed += u32::from(answered(open(&config, hop).await?)?);
                }
                Ok::<_, anyhow::Error>(resumed)
            };
            tokio::time::timeout(MEASUREMENT_DEADLINE, all)
                .await
                .with_context(|| {
                    format!(
                        "{HANDSHAKES} TLS connections took longer than {MEASUREMENT_DEADLINE:?}"
                    )
                })?
        })?;
        let elapsed = started.elapsed();
        let server_cpu = cpu_seconds(&server, self.ticks_per_second)? - server_cpu;
        let client_cpu = cpu_seconds(&client, self.ticks_per_second)? - client_cpu;
        ensure!(
            kind == HandshakeKind::Resumed || resumed == 0,
            "{}: resumed {resumed} sessions with resumption off",
            setup.name()
        );
        let micros = |seconds: f64| seconds * 1e6 / f64::from(HANDSHAKES);
        Ok(HandshakeCost {
            setup,
            kind,
            connections: HANDSHAKES,
            resumed,
            wall_micros: micros(elapsed.as_secs_f64()),
            server_cpu_micros: micros(server_cpu),
            client_cpu_micros: micros(client_cpu),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn a_plaintext_http2_server_is_told_from_one_that_closes() {
        let plaintext = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = plaintext.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = plaintext.accept().await.unwrap();
            let service = service_fn(|_| async {
                Ok::<_, Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        assert!(answers_plaintext_h2(address).await.unwrap());
        server.abort();

        let closing = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closing.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = closing.accept().await.unwrap();
            drop(stream);
        });
        assert!(!answers_plaintext_h2(address).await.unwrap());
        server.abort();
    }
}
