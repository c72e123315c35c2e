//! The agent's one client for the control plane: it knows the nodes' addresses, talks mutual
//! TLS (presenting the node's certificate) to one node at a time, moves to the next after a
//! failure with jittered backoff, bounds connects and requests with timeouts, and speaks JSON.
//! The watch ([`crate::watch`]) gets a connection of its own, upgraded from HTTP/1.1, and the
//! agent's registry requests ([`crate::register`]) travel up that connection while it takes
//! them ([`crate::uplink`], decision 57); other requests, and those when no watch connection
//! takes them, go over HTTP/2. It must never know what the messages mean.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyphae_policies::tls::{ServerIdentity, TlsConnector};
use hyphae_policies::watch::{
    UPLINK_AGENT_REQUESTS, UPLINK_HEADER, UPLINK_PATHS, UplinkRequest, WATCH_UPGRADE,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::uplink::{Answered, Reply, Uplink, UplinkFailure};

/// Longest a connect to a control-plane node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First wait before trying again after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest the agent reads a refusal's body for its detail; the refusal stands without it.
pub const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// An HTTP/2 connection to a node is closed after this long without a request. While the
/// watch connection carries the registry's requests (decision 57), HTTP/2 is only needed for
/// the certificate's checks and renewals, retries after the watch connection failed, and
/// whenever no watch connection takes requests: no node should keep a second connection per
/// agent for that. Longer than the default heartbeat interval (5 s), so an agent whose node
/// takes no requests up its watch keeps one connection for its heartbeats.
pub const REQUEST_CONNECTION_IDLE: Duration = Duration::from_secs(10);
/// Room reserved for one read of an upgraded watch connection: a delta is a few hundred
/// bytes, a snapshot takes as many reads as it needs.
pub const WATCH_READ_BYTES: usize = 16 * 1024;
/// The ALPN name of HTTP/1.1, which the watch's connections offer.
const ALPN_HTTP1: &[u8] = b"http/1.1";
/// hyper refuses an HTTP/1.1 read buffer smaller than this.
const MIN_HTTP1_BUFFER: usize = 8192;

/// Why a request to the control plane failed. Each carries the node it went to; transport
/// and decoding failures keep their cause as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The request body could not be encoded as JSON.
    #[error("cannot encode the request to {path} as JSON")]
    Encode {
        /// The API path.
        path: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// The request could not be built (an unusable address or path).
    #[error("cannot build a request for {uri}")]
    Request {
        /// The URI it would have gone to.
        uri: String,
        /// What http said.
        #[source]
        source: http::Error,
    },
    /// The agent has no certificate to talk to the control plane with (yet).
    #[error("no certificate to talk to the control plane with yet (see the join's log lines)")]
    NoIdentity,
    /// The node could not be reached, or the connection failed before an answer.
    #[error("cannot reach control-plane node {server}")]
    Unreachable {
        /// The node, `host:port`.
        server: String,
        /// The connect or protocol error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The node did not answer in time.
    #[error("control-plane node {server} gave no answer in {after:?}")]
    Timeout {
        /// The node, `host:port`.
        server: String,
        /// The timeout it broke.
        after: Duration,
    },
    /// The node answered with a status other than success.
    #[error("control-plane node {server} answered {status}: {message}")]
    Refused {
        /// The node, `host:port`.
        server: String,
        /// The status.
        status: StatusCode,
        /// The API's machine-readable error code (`code` in the JSON body), if any.
        code: Option<String>,
        /// The body, as text.
        message: String,
    },
    /// The watch connection a request went up ended before its answer came.
    #[error("the watch connection to control-plane node {server} ended before the answer")]
    WatchConnectionClosed {
        /// The node, `host:port`.
        server: String,
    },
    /// The answer's body could not be read.
    #[error("cannot read the answer of control-plane node {server}")]
    Body {
        /// The node, `host:port`.
        server: String,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
    /// The answer was not the JSON expected.
    #[error("control-plane node {server} answered with unreadable JSON")]
    Decode {
        /// The node, `host:port`.
        server: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
}

impl ControlPlaneError {
    /// The API's error code of a refusal (`unknown-node`...), so a caller can react to it.
    pub fn code(&self) -> Option<&str> {
        match self {
            ControlPlaneError::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// A client for the configured control-plane nodes. Clones share connections; each keeps its
/// own place in the list and its own backoff.
#[derive(Clone)]
pub struct ControlPlaneClient {
    /// Set once the node has its certificate; shared by every clone.
    client: Arc<ArcSwapOption<Client<TlsConnector, Full<Bytes>>>>,
    /// The same for watch streams: HTTP/1.1, a connection per stream, never pooled.
    watch_client: Arc<ArcSwapOption<Client<TlsConnector, Full<Bytes>>>>,
    /// The watch connection that takes registry requests now, if any; shared by every clone.
    uplink: Arc<Uplink>,
    /// This clone's last request up the watch connection failed: its next ones go over
    /// HTTP/2, to the next node, until one is served (the watched node may be cut off from the
    /// leader while its stream still flows).
    avoid_uplink: bool,
    max_header_bytes: u32,
    servers: Arc<[String]>,
    /// Index (modulo the list) of the node in use.
    next: usize,
    /// The wait before the next try after a failure.
    backoff: Duration,
}

impl ControlPlaneClient {
    /// A client for `servers` (`host:port`), starting at a random one so agents spread over
    /// the nodes; it accepts header lists up to `max_header_bytes` (`limits.maxHeaderBytes`).
    /// Until [`ControlPlaneClient::use_tls`], every request fails with
    /// [`ControlPlaneError::NoIdentity`].
    pub fn new(servers: Vec<String>, max_header_bytes: u32) -> Self {
        let next = rand::random_range(0..servers.len().max(1));
        ControlPlaneClient {
            client: Arc::new(ArcSwapOption::empty()),
            watch_client: Arc::new(ArcSwapOption::empty()),
            uplink: Arc::new(Uplink::default()),
            avoid_uplink: false,
            max_header_bytes,
            servers: servers.into(),
            next,
            backoff: BACKOFF_MIN,
        }
    }

    /// Talks mutual TLS with `tls` (the node's certificate) from now on, in every clone.
    pub fn use_tls(&self, tls: Arc<rustls::ClientConfig>) {
        // The watch's connections speak HTTP/1.1 (they are upgraded to the bare stream), so
        // they offer only that protocol in the handshake.
        let mut watch = (*tls).clone();
        watch.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_max_header_list_size(self.max_header_bytes)
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(REQUEST_CONNECTION_IDLE)
            .build(TlsConnector::new(
                tls,
                ServerIdentity::ControlPlane,
                CONNECT_TIMEOUT,
            ));
        self.client.store(Some(Arc::new(client)));
        let watch_client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .http1_max_buf_size((self.max_header_bytes as usize).max(MIN_HTTP1_BUFFER))
            .build(TlsConnector::new(
                Arc::new(watch),
                ServerIdentity::ControlPlane,
                CONNECT_TIMEOUT,
            ));
        self.watch_client.store(Some(Arc::new(watch_client)));
    }

    /// The watch connection that takes registry requests, shared by every clone.
    pub fn uplink(&self) -> &Arc<Uplink> {
        &self.uplink
    }

    /// Every configured node; empty when the agent runs without a control plane.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The node in use now (empty when none is configured).
    pub fn server(&self) -> &str {
        self.next
            .checked_rem(self.servers.len())
            .and_then(|i| self.servers.get(i))
            .map_or("", String::as_str)
    }

    /// Moves to the next node, after a failure or a stream that ended; this clone's next
    /// requests go over HTTP/2 until one is served.
    pub fn fail_over(&mut self) {
        self.next = self.next.wrapping_add(1);
        self.avoid_uplink = true;
    }

    /// The node served: the next failure waits the shortest backoff again, and requests go up
    /// the watch connection again when one takes them.
    pub fn served(&mut self) {
        self.backoff = BACKOFF_MIN;
        self.avoid_uplink = false;
    }

    /// Waits the current backoff (jittered) and doubles it up to [`BACKOFF_MAX`]; false when
    /// `shutdown` came first.
    pub async fn back_off(&mut self, shutdown: &CancellationToken) -> bool {
        let wait = jittered(&mut self.backoff, BACKOFF_MAX);
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }

    /// POSTs `body` as JSON to `path` and reads the JSON answer, all within `timeout`: up the
    /// watch connection when `path` is a registry request and one takes them, else over HTTP/2
    /// to the node in use.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, ControlPlaneError> {
        if !self.avoid_uplink && UPLINK_PATHS.contains(&path) && self.uplink.is_open() {
            let line = uplink_line(path, body).map_err(|source| ControlPlaneError::Encode {
                path: path.to_string(),
                source,
            })?;
            if let Some(Reply { server, outcome }) = self.uplink.send(line, timeout).await {
                return match outcome {
                    Ok(Answered { status, body }) => answered(&server, status, body),
                    Err(UplinkFailure::Closed) => {
                        Err(ControlPlaneError::WatchConnectionClosed { server })
                    }
                    Err(UplinkFailure::TimedOut) => Err(ControlPlaneError::Timeout {
                        server,
                        after: timeout,
                    }),
                };
            }
        }
        let server = self.server();
        let json = serde_json::to_vec(body).map_err(|source| ControlPlaneError::Encode {
            path: path.to_string(),
            source,
        })?;
        let uri = format!("https://{server}{path}");
        let request = http::Request::post(&uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .map_err(|source| ControlPlaneError::Request { uri, source })?;
        self.exchange_json(request, timeout).await
    }

    /// GETs `path` from the node in use and reads its JSON answer, all within `timeout`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, ControlPlaneError> {
        let uri = format!("https://{}{path}", self.server());
        let request = http::Request::get(&uri)
            .body(Full::new(Bytes::new()))
            .map_err(|source| ControlPlaneError::Request { uri, source })?;
        self.exchange_json(request, timeout).await
    }

    /// Sends `request` to the node in use and reads its JSON answer, all within `timeout`;
    /// an answer other than success is a [`ControlPlaneError::Refused`].
    async fn exchange_json<T: DeserializeOwned>(
        &self,
        request: http::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<T, ControlPlaneError> {
        let server = self.server();
        let exchange = async {
            let response = self.send(request).await?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|source| ControlPlaneError::Body {
                    server: server.to_string(),
                    source,
                })?
                .to_bytes();
            if !status.is_success() {
                return Err(refused(server, status, &body));
            }
            serde_json::from_slice(&body).map_err(|source| ControlPlaneError::Decode {
                server: server.to_string(),
                source,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ControlPlaneError::Timeout {
                    server: server.to_string(),
                    after: timeout,
                })
            })
    }

    /// Opens the watch stream `path_and_query` on the node in use, on a connection of its own:
    /// an HTTP/1.1 request with `Upgrade: hyphae-watch`, which the node answers with `101
    /// Switching Protocols` and then the stream on the bare connection (an HTTP/2 stream on a
    /// shared connection costs a node three times the memory: decision 56). A node that
    /// answers with the stream as its body instead is read as such. The answer's head must
    /// arrive within `timeout`.
    pub async fn open_watch(
        &self,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<WatchStream, ControlPlaneError> {
        let server = self.server();
        let uri = format!("https://{server}{path_and_query}");
        let request = http::Request::get(&uri)
            .header(http::header::CONNECTION, "upgrade")
            .header(http::header::UPGRADE, WATCH_UPGRADE)
            .body(Full::new(Bytes::new()))
            .map_err(|source| ControlPlaneError::Request { uri, source })?;
        let Some(client) = self.watch_client.load_full() else {
            return Err(ControlPlaneError::NoIdentity);
        };
        let open = async {
            let mut response =
                client
                    .request(request)
                    .await
                    .map_err(|source| ControlPlaneError::Unreachable {
                        server: server.to_string(),
                        source,
                    })?;
            let status = response.status();
            if status == StatusCode::SWITCHING_PROTOCOLS {
                let takes_requests = response
                    .headers()
                    .get(UPLINK_HEADER)
                    .is_some_and(|value| value == UPLINK_AGENT_REQUESTS);
                let connection = hyper::upgrade::on(&mut response).await.map_err(|source| {
                    ControlPlaneError::Body {
                        server: server.to_string(),
                        source,
                    }
                })?;
                return Ok(WatchStream::Connection {
                    io: TokioIo::new(connection),
                    takes_requests,
                });
            }
            if status.is_success() {
                return Ok(WatchStream::Body(response.into_body()));
            }
            let body = tokio::time::timeout(REFUSAL_READ_TIMEOUT, response.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|body| body.to_bytes())
                .unwrap_or_default();
            Err(refused(server, status, &body))
        };
        tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| ControlPlaneError::Timeout {
                server: server.to_string(),
                after: timeout,
            })?
    }

    async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, ControlPlaneError> {
        let Some(client) = self.client.load_full() else {
            return Err(ControlPlaneError::NoIdentity);
        };
        client
            .request(request)
            .await
            .map_err(|source| ControlPlaneError::Unreachable {
                server: self.server().to_string(),
                source,
            })
    }
}

/// A watch stream as it arrives: the bare connection after an upgrade, or an answer's body.
pub enum WatchStream {
    /// The connection, taken over by the stream after `101 Switching Protocols`.
    Connection {
        /// The connection.
        io: TokioIo<hyper::upgrade::Upgraded>,
        /// The node takes the agent's registry requests up it (decision 57).
        takes_requests: bool,
    },
    /// The answer's body, from a node that did not upgrade.
    Body(Incoming),
}

impl WatchStream {
    /// Appends the stream's next bytes to `buffer`, reserving [`WATCH_READ_BYTES`] of room
    /// for a read of the connection; 0 at the stream's end. Cancel-safe: bytes read are in
    /// `buffer`.
    pub async fn read_into(&mut self, buffer: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            WatchStream::Connection { io, .. } => {
                buffer.reserve(WATCH_READ_BYTES);
                io.read_buf(buffer).await
            }
            WatchStream::Body(body) => loop {
                let Some(frame) = body.frame().await else {
                    return Ok(0);
                };
                let frame = frame.map_err(std::io::Error::other)?;
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    buffer.extend_from_slice(&data);
                    return Ok(data.len());
                }
            },
        }
    }

    /// Whether registry requests may go up this stream.
    pub fn takes_requests(&self) -> bool {
        matches!(
            self,
            WatchStream::Connection {
                takes_requests: true,
                ..
            }
        )
    }

    /// Sends one request line up the connection; an error when the stream takes none.
    pub async fn send_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            WatchStream::Connection {
                io,
                takes_requests: true,
            } => {
                io.write_all(line).await?;
                io.flush().await
            }
            _ => Err(std::io::Error::other("this watch stream takes no requests")),
        }
    }
}

/// A refusal, with the API's error code when the body is the control plane's JSON error.
fn refused(server: &str, status: StatusCode, body: &[u8]) -> ControlPlaneError {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("code")?.as_str().map(str::to_owned));
    ControlPlaneError::Refused {
        server: server.to_string(),
        status,
        code,
        message: String::from_utf8_lossy(body).trim().to_string(),
    }
}

/// `body` for `path` as one line to send up a watch connection, newline included.
fn uplink_line<B: Serialize>(path: &str, body: &B) -> Result<Bytes, serde_json::Error> {
    let request = UplinkRequest {
        path: path.to_string(),
        body: serde_json::to_value(body)?,
    };
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    Ok(Bytes::from(line))
}

/// An answer that came up the watch connection as a JSON value: the `T` it holds, or the
/// refusal it says, as the same answer over HTTP would be read.
fn answered<T: DeserializeOwned>(
    server: &str,
    status: StatusCode,
    body: serde_json::Value,
) -> Result<T, ControlPlaneError> {
    if status.is_success() {
        return serde_json::from_value(body).map_err(|source| ControlPlaneError::Decode {
            server: server.to_string(),
            source,
        });
    }
    let message = match &body {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    Err(refused(server, status, message.as_bytes()))
}

/// The current retry delay, jittered (×0.5–1.5), doubling it up to `cap` for next time.
pub fn jittered(retry: &mut Duration, cap: Duration) -> Duration {
    let wait = retry.mul_f64(rand::random_range(0.5..1.5));
    *retry = (*retry * 2).min(cap);
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default `limits.maxHeaderBytes`.
    fn header_bytes() -> u32 {
        hyphae_policies::AgentLimits::default().max_header_bytes
    }

    #[test]
    fn failing_over_cycles_through_every_node() {
        let mut client = ControlPlaneClient::new(
            vec!["a:1".into(), "b:2".into(), "c:3".into()],
            header_bytes(),
        );
        let mut seen: Vec<String> = (0..3)
            .map(|_| {
                let server = client.server().to_string();
                client.fail_over();
                server
            })
            .collect();
        seen.sort();
        assert_eq!(seen, ["a:1", "b:2", "c:3"]);
        assert_eq!(
            ControlPlaneClient::new(Vec::new(), header_bytes()).server(),
            ""
        );
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_stays_jittered() {
        let mut retry = Duration::from_millis(100);
        let wait = jittered(&mut retry, Duration::from_millis(300));
        assert!((50..=150).contains(&wait.as_millis()), "{wait:?}");
        assert_eq!(retry, Duration::from_millis(200));
        jittered(&mut retry, Duration::from_millis(300));
        assert_eq!(retry, Duration::from_millis(300));
    }

    #[test]
    fn an_answer_up_the_watch_connection_reads_as_the_same_answer_over_http() {
        let lease: hyphae_policies::registry::Lease = answered(
            "a:1",
            StatusCode::OK,
            serde_json::json!({"ttlMs": 15000, "revision": 7}),
        )
        .unwrap();
        assert_eq!(lease.revision, 7);
        let refusal = answered::<serde_json::Value>(
            "a:1",
            StatusCode::NOT_FOUND,
            serde_json::json!({"code": "unknown-node", "message": "who?"}),
        )
        .unwrap_err();
        assert_eq!(refusal.code(), Some("unknown-node"));
        let refusal = answered::<serde_json::Value>(
            "a:1",
            StatusCode::BAD_GATEWAY,
            serde_json::Value::String("down".into()),
        )
        .unwrap_err();
        assert!(matches!(
            refusal,
            ControlPlaneError::Refused { status: StatusCode::BAD_GATEWAY, ref message, .. } if message == "down"
        ));
        let line = uplink_line("/v1/agent/heartbeat", &serde_json::json!({"node": "n"})).unwrap();
        assert_eq!(
            line,
            "{\"path\":\"/v1/agent/heartbeat\",\"body\":{\"node\":\"n\"}}\n"
        );
    }

    #[test]
    fn a_refusal_keeps_the_api_error_code() {
        let error = refused(
            "a:1",
            StatusCode::NOT_FOUND,
            br#"{"code":"unknown-node","message":"who?"}"#,
        );
        assert_eq!(error.code(), Some("unknown-node"));
        assert_eq!(
            refused("a:1", StatusCode::BAD_GATEWAY, b"down").code(),
            None
        );
    }
}
