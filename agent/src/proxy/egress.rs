//! Egress: calls to an `ExternalService` leave from this agent straight to the service's own
//! address, with no agent on the other side. They take the same road as mesh calls up to the
//! endpoint step (routes, retries, budgets, circuit breaking, outlier ejection, metrics); only
//! the last hop differs: plain HTTP/1.1 or HTTP/2 to the address, or HTTPS when the object
//! asks the agent to originate TLS.
//!
//! Each endpoint (one address and port of one external service) has its own connection pool,
//! kept while the service's settings stay the same.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyphae_policies::Protocol;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::headers::{DESTINATION, absolute_uri};
use crate::body::Body;
use crate::error::{Cause, ProxyError};
use crate::model::{ExternalTarget, OriginatedTls};

/// How long an idle pooled connection to an external service is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// One endpoint's pool, and the settings it was made for.
struct Pool {
    target: Arc<ExternalTarget>,
    client: Client<Dialer, Body>,
}

/// Connection pools to external services, one per endpoint.
#[derive(Default)]
pub struct Egress {
    pools: Mutex<HashMap<(String, SocketAddr), Pool>>,
}

impl Egress {
    /// Sends `request` (as built for a peer agent) to the external service `target` at
    /// `address`: the version, scheme and authority the service expects, no mesh headers.
    pub async fn send(
        &self,
        target: &Arc<ExternalTarget>,
        address: SocketAddr,
        connect_timeout: Duration,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let protocol = target
            .ports
            .get(&address.port())
            .copied()
            .unwrap_or_default();
        let http2 = matches!(protocol, Protocol::Http2 | Protocol::Grpc);
        let client = self.client(target, address, connect_timeout, http2)?;
        let request = outgoing(target, address, http2, request)?;
        let mut answer = client.request(request).await.map_err(|error| {
            if error.is_connect() {
                ProxyError::ConnectFailed {
                    address: address.to_string(),
                    reason: Cause::new(error),
                }
            } else {
                ProxyError::Reset(Cause::new(error))
            }
        })?;
        // Only a peer agent says what phrase an instance gave: not an external service.
        answer.headers_mut().remove(super::headers::REASON);
        Ok(answer)
    }

    /// Opens a byte stream (opaque TCP) to the external service `target` at `address`, in TLS
    /// when it asks the agent to originate it.
    pub async fn connect(
        &self,
        target: &Arc<ExternalTarget>,
        address: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<EgressStream, ProxyError> {
        dial(target, address, connect_timeout, None).await
    }

    /// Carries an HTTP/1.1 upgrade (WebSocket) to the external service `target` at `address`,
    /// on a connection of its own (in TLS when the agent originates it, offering
    /// `http/1.1`): `request` goes with the service's own `Host` and no mesh header, in origin
    /// form, as a client of the service would send it. Its answer: a 101, whose connection
    /// [`hyper::upgrade::on`] then gives, or any other answer, which declined the upgrade.
    pub async fn upgrade(
        &self,
        target: &Arc<ExternalTarget>,
        address: SocketAddr,
        connect_timeout: Duration,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let stream = dial(target, address, connect_timeout, Some(b"http/1.1")).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ProxyError::Reset(Cause::new(error)))?;
        // The connection's task ends as it hands its bytes to the upgraded stream, or with
        // the connection when the service declined.
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%address, %error, "external upgrade connection closed");
            }
        });
        let mut request = outgoing(target, address, false, request)?;
        let authority = request.uri().authority().map(|a| a.as_str().to_string());
        if let Some(host) = authority.and_then(|a| http::HeaderValue::from_str(&a).ok()) {
            request.headers_mut().insert(http::header::HOST, host);
        }
        let origin = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(origin);
        sender
            .send_request(request)
            .await
            .map_err(|error| ProxyError::Reset(Cause::new(error)))
    }

    /// The pool for `address` of `target`, made afresh when the service's settings changed.
    fn client(
        &self,
        target: &Arc<ExternalTarget>,
        address: SocketAddr,
        connect_timeout: Duration,
        http2: bool,
    ) -> Result<Client<Dialer, Body>, ProxyError> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let key = (target.name.clone(), address);
        if let Some(pool) = pools.get(&key)
            && pool.target == *target
        {
            return Ok(pool.client.clone());
        }
        let tls = match &target.tls {
            Some(tls) => {
                let (config, name) =
                    client_config(tls, Some(if http2 { b"h2" } else { b"http/1.1" })).map_err(
                        |reason| ProxyError::ConnectFailed {
                            address: address.to_string(),
                            reason,
                        },
                    )?;
                Some((TlsConnector::from(config), name))
            }
            None => None,
        };
        let dialer = Dialer {
            address,
            connect_timeout,
            tls: tls.map(Arc::new),
        };
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_only(http2)
            .build(dialer);
        pools.insert(
            key,
            Pool {
                target: Arc::clone(target),
                client: client.clone(),
            },
        );
        Ok(client)
    }
}

/// A connection to the external service `target` at `address`, in TLS (offering `alpn`) when
/// it asks the agent to originate it.
async fn dial(
    target: &ExternalTarget,
    address: SocketAddr,
    connect_timeout: Duration,
    alpn: Option<&[u8]>,
) -> Result<EgressStream, ProxyError> {
    let failed = |reason: Cause| ProxyError::ConnectFailed {
        address: address.to_string(),
        reason,
    };
    let tls = match &target.tls {
        Some(tls) => {
            let (config, name) = client_config(tls, alpn).map_err(failed)?;
            Some(Arc::new((TlsConnector::from(config), name)))
        }
        None => None,
    };
    let dialer = Dialer {
        address,
        connect_timeout,
        tls,
    };
    dialer.dial().await.map_err(|error| {
        if error.kind() == io::ErrorKind::TimedOut {
            ProxyError::ConnectTimeout(address.to_string())
        } else {
            failed(Cause::new(error))
        }
    })
}

/// The request as the external service expects it: its own authority (the host name it
/// serves or its TLS name, else the address), HTTPS when the agent originates TLS, the version its port
/// speaks, and no header meant for a peer agent.
fn outgoing(
    target: &ExternalTarget,
    address: SocketAddr,
    http2: bool,
    request: Request<Body>,
) -> Result<Request<Body>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let scheme = if target.tls.is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let default_port = if target.tls.is_some() { 443 } else { 80 };
    // The name it serves under: its DNS host, else the name its certificate carries.
    let name = target
        .host
        .as_ref()
        .or(target.tls.as_ref().map(|tls| &tls.server_name));
    let host = match name {
        Some(host) if address.port() == default_port => host.clone(),
        Some(host) => format!("{host}:{}", address.port()),
        None => address.to_string(),
    };
    let authority = Authority::try_from(host).map_err(|e| ProxyError::BadRequest(Cause::new(e)))?;
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    parts.uri = absolute_uri(scheme, authority, path)?;
    parts.version = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    parts.headers.remove(DESTINATION);
    // The client sets `host` from the URI for HTTP/1.1; HTTP/2 carries it as `:authority`.
    parts.headers.remove(http::header::HOST);
    if !http2 {
        super::headers::join_cookies(&mut parts.headers);
    }
    Ok(Request::from_parts(parts, body))
}

/// Dials one endpoint, whatever the URI says (the URI carries the service's host name, for
/// the `Host` header and TLS, not for routing), and originates TLS when asked.
#[derive(Clone)]
struct Dialer {
    address: SocketAddr,
    connect_timeout: Duration,
    tls: Option<Arc<(TlsConnector, ServerName<'static>)>>,
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<EgressStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let dialer = self.clone();
        Box::pin(async move { dialer.dial().await.map(TokioIo::new) })
    }
}

impl Dialer {
    /// Connects within the connect timeout (the TLS handshake included).
    async fn dial(&self) -> io::Result<EgressStream> {
        let connect = async {
            let tcp = TcpStream::connect(self.address).await?;
            tcp.set_nodelay(true)?;
            Ok(match &self.tls {
                None => EgressStream::Plain(tcp),
                Some(tls) => {
                    let (connector, name) = &**tls;
                    EgressStream::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
                }
            })
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }
}

/// A connection to an external service: plain TCP or TLS the agent originated.
pub enum EgressStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for EgressStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        match self {
            EgressStream::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                connected.negotiated_h2()
            }
            _ => connected,
        }
    }
}

impl AsyncRead for EgressStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EgressStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            EgressStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EgressStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EgressStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            EgressStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EgressStream::Plain(s) => Pin::new(s).poll_flush(cx),
            EgressStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EgressStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            EgressStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Where hosts keep their system roots, first found wins (as Go's crypto/x509 looks).
const SYSTEM_ROOTS: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The TLS client settings for originating TLS to `tls`'s service: its roots (its `caFile`,
/// else the host's system roots), TLS 1.2 and 1.3, and `alpn` (the version its port speaks;
/// none for opaque TCP).
fn client_config(
    tls: &OriginatedTls,
    alpn: Option<&[u8]>,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), Cause> {
    let pem = match &tls.ca_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| Cause::from(format!("cannot read tls.caFile {}: {e}", file.display())))?,
        None => SYSTEM_ROOTS
            .iter()
            .find_map(|file| std::fs::read_to_string(file).ok())
            .ok_or_else(|| {
                Cause::from(format!(
                    "no system roots found (looked in {}); set tls.caFile",
                    SYSTEM_ROOTS.join(", ")
                ))
            })?,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certificates = hyphae_policies::tls::roots::certificates(&pem).map_err(Cause::new)?;
    let (_added, _ignored) = roots.add_parsable_certificates(certificates);
    if roots.is_empty() {
        return Err(Cause::from(
            "the roots file holds no usable certificate".to_string(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Cause::new)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.map(|p| vec![p.to_vec()]).unwrap_or_default();
    let name = ServerName::try_from(tls.server_name.clone()).map_err(Cause::new)?;
    Ok((Arc::new(config), name))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use http::HeaderValue;

    use super::*;

    #[test]
    fn an_http1_external_service_gets_one_cookie_line_and_an_http2_one_each_cookie() {
        let target = ExternalTarget {
            name: "billing".into(),
            host: Some("billing.example".into()),
            ports: BTreeMap::new(),
            tls: None,
        };
        let address = SocketAddr::from(([192, 0, 2, 1], 80));
        let request = || {
            let mut request = Request::new(crate::body::empty());
            let headers = request.headers_mut();
            headers.append(http::header::COOKIE, HeaderValue::from_static("a=1"));
            headers.append(http::header::COOKIE, HeaderValue::from_static("b=2"));
            request
        };
        let http1 = outgoing(&target, address, false, request()).expect("a request");
        let cookies: Vec<_> = http1
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .collect();
        assert_eq!(cookies, ["a=1; b=2"]);
        let http2 = outgoing(&target, address, true, request()).expect("a request");
        assert_eq!(
            http2.headers().get_all(http::header::COOKIE).iter().count(),
            2
        );
    }
}
