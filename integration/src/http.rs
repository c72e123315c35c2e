//! The small HTTP client tests (and the demo) talk to agents, nodes and backends with:
//! HTTP/1.1 or HTTP/2 through hyper, every exchange bounded in time. It never retries: a
//! caller that expects a failure must see it.

use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as Legacy;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use hyphae_policies::tls::{Credentials, ServerIdentity, TlsConnector};
use serde_json::Value;

/// Longest one exchange may take before it counts as unanswered.
pub const ANSWER_PATIENCE: Duration = Duration::from_secs(20);

/// One HTTP/2 connection (prior knowledge) to `address`, driven in a task of its own: for a
/// test that sends what the pooled client will not, such as CONNECT or an `:authority` apart
/// from the URI it connects to.
pub async fn http2_connection(
    address: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect for HTTP/2");
    let (sender, connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 handshake");
    tokio::spawn(connection);
    sender
}

/// A client that keeps connections open between requests.
pub type Client = Legacy<HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client.
pub fn http1_client() -> Client {
    Legacy::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A client over TLS to the nodes of the cluster `trust` describes (checking their
/// certificates), presenting `credentials` when given; `None` when the TLS set-up fails.
pub fn tls_client(
    trust: &crate::trust::ClusterTrust,
    credentials: Option<&Credentials>,
) -> Option<Legacy<TlsConnector, Full<Bytes>>> {
    let config = trust
        .client_config(credentials, &hyphae_policies::tls::ALPN_HTTP)
        .ok()?;
    let connector = TlsConnector::new(config, ServerIdentity::ControlPlane, ANSWER_PATIENCE);
    Some(Legacy::builder(TokioExecutor::new()).build(connector))
}

/// A TLS connection to `address`, a node of a cluster this process started (see
/// [`crate::trust`]), presenting `credentials` when given and offering `alpn` (`h2`,
/// `http/1.1`): for tests that speak HTTP on it themselves (long-lived streams).
pub async fn tls_stream(
    address: &str,
    credentials: Option<&Credentials>,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let unknown = || std::io::Error::other(format!("{address} is no node this process started"));
    let trust = crate::trust::of(address).ok_or_else(unknown)?;
    let config = trust
        .client_config(credentials, alpn)
        .map_err(std::io::Error::other)?;
    let (host, port) = address.rsplit_once(':').ok_or_else(unknown)?;
    let port = port.parse().map_err(|_| unknown())?;
    TlsConnector::new(config, ServerIdentity::ControlPlane, ANSWER_PATIENCE)
        .open(host, port)
        .await
}

/// An HTTP/2 client (prior knowledge, no upgrade).
pub fn http2_client() -> Client {
    Legacy::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// A response with its whole body read.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Why a request got no answer. A caller that must know whether a write may have happened
/// (the nemesis) tells the two apart; every other caller only sees `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoAnswer {
    /// No connection was made, so the server never saw the request.
    NotSent,
    /// The request may have reached the server: the connection broke, or no answer came in
    /// time.
    Lost,
}

/// Sends `request` on `client` and reads the whole answer; `None` when none came within
/// [`ANSWER_PATIENCE`] or the connection failed.
pub async fn exchange<C>(
    client: &Legacy<C, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Option<Answer>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    exchange_within(client, request, ANSWER_PATIENCE).await.ok()
}

/// Like [`exchange`] within `patience`, saying why no answer came.
pub async fn exchange_within<C>(
    client: &Legacy<C, Full<Bytes>>,
    request: Request<Full<Bytes>>,
    patience: Duration,
) -> Result<Answer, NoAnswer>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let exchange = async {
        let response = client.request(request).await.map_err(|error| {
            if error.is_connect() {
                NoAnswer::NotSent
            } else {
                NoAnswer::Lost
            }
        })?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|_| NoAnswer::Lost)?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(patience, exchange)
        .await
        .unwrap_or(Err(NoAnswer::Lost))
}

/// Sends `method` to `url` with `body` on `client` and reads the whole answer; fails the test
/// when none comes.
pub async fn send(client: &Client, method: &str, url: &str, body: impl Into<Bytes>) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body.into()))
        .expect("a method and URL the test wrote");
    exchange(client, request)
        .await
        .unwrap_or_else(|| panic!("no answer to {method} {url} within {ANSWER_PATIENCE:?}"))
}

/// GETs `url` on `client`; fails the test when no answer comes.
pub async fn get(client: &Client, url: &str) -> Answer {
    send(client, "GET", url, Bytes::new()).await
}

/// One request to `address` (`host:port`) on a fresh HTTP/1.1 connection, carrying the admin
/// token of the clusters this process starts ([`crate::credentials`]); `None` when no answer
/// came (refused, reset, or slower than [`ANSWER_PATIENCE`]).
pub async fn request(
    method: &str,
    address: impl Display,
    path: &str,
    body: &str,
) -> Option<Answer> {
    request_as(
        Some(crate::credentials::admin_token()),
        method,
        address,
        path,
        body,
    )
    .await
}

/// Like [`request`], with the token `secret` (or none: what an anonymous caller gets).
pub async fn request_as(
    secret: Option<&str>,
    method: &str,
    address: impl Display,
    path: &str,
    body: &str,
) -> Option<Answer> {
    send_as(secret, None, method, &address.to_string(), path, body).await
}

/// Like [`request`], as the node whose certificate is `credentials` (the agent API), and
/// without an admin token.
pub async fn request_as_node(
    credentials: &Credentials,
    method: &str,
    address: impl Display,
    path: &str,
    body: &str,
) -> Option<Answer> {
    send_as(
        None,
        Some(credentials),
        method,
        &address.to_string(),
        path,
        body,
    )
    .await
}

/// Like [`request`] (the admin token), as the node whose certificate is `credentials`, with
/// `headers` besides: what a member forwarding a request sends.
pub async fn request_as_member(
    credentials: &Credentials,
    method: &str,
    address: impl Display,
    path: &str,
    body: &str,
    headers: &[(&str, String)],
) -> Option<Answer> {
    let address = address.to_string();
    let mut request = build(
        Some(crate::credentials::admin_token()),
        method,
        &address,
        path,
        body,
    )?;
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).ok()?,
            http::HeaderValue::from_str(value).ok()?,
        );
    }
    to_address(&address, Some(credentials), request, ANSWER_PATIENCE)
        .await
        .ok()
}

/// One request with the token `secret` and the certificate `credentials`, each when given.
async fn send_as(
    secret: Option<&str>,
    credentials: Option<&Credentials>,
    method: &str,
    address: &str,
    path: &str,
    body: &str,
) -> Option<Answer> {
    let request = build(secret, method, address, path, body)?;
    to_address(address, credentials, request, ANSWER_PATIENCE)
        .await
        .ok()
}

/// Sends `request` to `address`: over TLS when it is a node of a cluster this process started
/// (see [`crate::trust`]), else in plain HTTP/1.1.
async fn to_address(
    address: &str,
    credentials: Option<&Credentials>,
    request: Request<Full<Bytes>>,
    patience: Duration,
) -> Result<Answer, NoAnswer> {
    match crate::trust::of(address) {
        Some(trust) => {
            let client = tls_client(&trust, credentials).ok_or(NoAnswer::NotSent)?;
            exchange_within(&client, request, patience).await
        }
        None => exchange_within(&http1_client(), request, patience).await,
    }
}

/// Like [`request`] within `patience`, saying why no answer came: [`NoAnswer::NotSent`] when
/// the node could not be reached at all (refused), so a write certainly did not happen.
pub async fn attempt(
    method: &str,
    address: impl Display,
    path: &str,
    body: &str,
    patience: Duration,
) -> Result<Answer, NoAnswer> {
    let secret = Some(crate::credentials::admin_token());
    let address = address.to_string();
    let request = build(secret, method, &address, path, body).ok_or(NoAnswer::NotSent)?;
    to_address(&address, None, request, patience).await
}

/// A request to `address` (`host:port`) with the token `secret`; `None` when the parts do not
/// make a request (a bad method or path).
fn build(
    secret: Option<&str>,
    method: &str,
    address: &str,
    path: &str,
    body: &str,
) -> Option<Request<Full<Bytes>>> {
    let scheme = if crate::trust::of(address).is_some() {
        "https"
    } else {
        "http"
    };
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{scheme}://{address}{path}"));
    if let Some(secret) = secret {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {secret}"));
    }
    request.body(Full::new(Bytes::from(body.to_string()))).ok()
}

/// Like [`request`], as the status and the JSON body; status 0 and `null` when nothing
/// answered (a stopped or hung node is an answer too).
pub async fn call(method: &str, address: impl Display, path: &str, body: &str) -> (u16, Value) {
    match request(method, address, path, body).await {
        Some(answer) => (answer.status.as_u16(), answer.json()),
        None => (0, Value::Null),
    }
}

/// Like [`call`], as the agent of node `name`: with a node certificate it gets first, the way
/// an agent does (a join with its cluster's agent token, naming the services of a registration
/// in `body`); status 0 when it could not get one.
pub async fn call_as_node(
    name: &str,
    method: &str,
    address: impl Display,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let address = address.to_string();
    let Some(trust) = crate::trust::of(&address) else {
        return (0, Value::Null);
    };
    // The certificate names the services a registration in `body` lists, as a join would.
    let listed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let services: Vec<&str> = listed["instances"]
        .as_array()
        .map(|instances| {
            instances
                .iter()
                .filter_map(|instance| instance["service"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let credentials = match trust.node_credentials(&address, name, &services).await {
        Ok(credentials) => credentials,
        Err(error) => return (0, Value::String(error.to_string())),
    };
    match request_as_node(&credentials, method, &address, path, body).await {
        Some(answer) => (answer.status.as_u16(), answer.json()),
        None => (0, Value::Null),
    }
}

/// GETs `path` from `address` as JSON; `None` when nothing answered or the status is not 2xx.
pub async fn get_json(address: impl Display, path: &str) -> Option<Value> {
    let answer = request("GET", address, path, "").await?;
    answer.status.is_success().then(|| answer.json())
}

/// GETs `path` from `address` as text; empty when nothing answered.
pub async fn get_text(address: impl Display, path: &str) -> String {
    request("GET", address, path, "")
        .await
        .map(|answer| answer.text())
        .unwrap_or_default()
}

/// Reads a counter or gauge from a Prometheus text page (an agent's `/metrics`), summing every
/// series of `name` whose labels contain `labels` (e.g. `service="svc"`); 0 when absent.
pub fn metric_in(page: &str, name: &str, labels: &str) -> f64 {
    page.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_matching_series_only() {
        let page = "# HELP hyphae_retries_total Retries.\n\
                    hyphae_retries_total{service=\"a\",route=\"x\"} 2\n\
                    hyphae_retries_total{service=\"a\",route=\"y\"} 3\n\
                    hyphae_retries_total{service=\"b\"} 7\n\
                    hyphae_retries_total_other 100\n\
                    hyphae_config_revision 4\n";
        assert_eq!(
            metric_in(page, "hyphae_retries_total", "service=\"a\""),
            5.0
        );
        assert_eq!(metric_in(page, "hyphae_retries_total", ""), 12.0);
        assert_eq!(metric_in(page, "hyphae_config_revision", ""), 4.0);
        assert_eq!(metric_in(page, "hyphae_missing", ""), 0.0);
    }
}
