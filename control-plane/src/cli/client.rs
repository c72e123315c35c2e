//! The CLI's connection to a control-plane node's admin API: one request, one JSON answer,
//! API errors turned into readable messages.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyphae_policies::tls::{self, ServerIdentity, ServerVerifier, TlsConnector, Trust};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Environment variable naming the control-plane node to talk to.
pub const SERVER_ENV: &str = "HYPHAE_SERVER";
/// Node used when neither `--server` nor `HYPHAE_SERVER` says otherwise.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7400";
/// Environment variable holding the admin API token's secret.
pub const TOKEN_ENV: &str = "HYPHAE_TOKEN";
/// Environment variable naming an owner-only file that holds the token's secret.
pub const TOKEN_FILE_ENV: &str = "HYPHAE_TOKEN_FILE";
/// Environment variable naming the cluster's root certificate (PEM).
pub const CA_FILE_ENV: &str = "HYPHAE_CA_FILE";
/// Environment variable naming an operator's client certificate directory.
pub const CERT_DIR_ENV: &str = "HYPHAE_CERT_DIR";
/// Environment variable holding the cluster root's SHA-256 fingerprint, to pin.
pub const CA_FINGERPRINT_ENV: &str = "HYPHAE_CA_FINGERPRINT";
/// Longest the CLI waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the CLI waits for an answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A control-plane node's admin API.
pub struct ApiClient {
    server: String,
    token: Option<String>,
    client: Client<TlsConnector, Full<Bytes>>,
    runtime: tokio::runtime::Runtime,
}

/// How the CLI knows the control plane's certificate is the cluster's.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// The root, PEM.
    Roots(String),
    /// The root's SHA-256 fingerprint; the node presents the root in its chain.
    Pinned(String),
}

/// An answer: status and JSON body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body (`null` when empty or not JSON).
    pub body: Value,
}

impl ApiClient {
    /// A client for `server` (`host:port`, or an `https://` URL prefix) that checks the
    /// node's certificate by `trust` and presents `credentials` (an operator's certificate)
    /// when given.
    pub fn new(
        server: &str,
        trust: &ServerTrust,
        credentials: Option<&tls::Credentials>,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the client runtime")?;
        let server = server.trim_end_matches('/');
        if let Some(rest) = server.strip_prefix("http://") {
            bail!("the control plane speaks only TLS: use https://{rest} or host:port");
        }
        let server = if server.starts_with("https://") {
            server.to_string()
        } else {
            format!("https://{server}")
        };
        let config = match trust {
            ServerTrust::Roots(pem) => {
                tls::client_config(&Trust::from_pem(pem, None)?, credentials, &tls::ALPN_HTTP)?
            }
            ServerTrust::Pinned(fingerprint) => {
                // The verifier's forms: any case, `sha256:` in front, colons between bytes.
                let lowered = fingerprint.trim().to_ascii_lowercase();
                let hex = lowered
                    .strip_prefix("sha256:")
                    .unwrap_or(&lowered)
                    .replace(':', "");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!(
                        "`{fingerprint}` is not a root's fingerprint: 64 hex digits, as `hyphae ca` prints it"
                    );
                }
                tls::client_config_verified_by(
                    std::sync::Arc::new(ServerVerifier::pinned(fingerprint, tls::provider())),
                    credentials,
                    &tls::ALPN_HTTP,
                )?
            }
        };
        let connector = TlsConnector::new(config, ServerIdentity::ControlPlane, CONNECT_TIMEOUT);
        Ok(ApiClient {
            server,
            token: None,
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime,
        })
    }

    /// The same client, sending `token` as `Authorization: Bearer` on every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Sends a request; fails only when the node cannot be reached.
    pub fn send(&self, method: &str, path: &str, body: &str) -> Result<Answer> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.server));
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .context("build the request")?;
        let server = self.server.clone();
        self.runtime.block_on(async {
            let exchange = async {
                let response = self.client.request(request).await.map_err(|error| {
                    let hint = unreachable_hint(&format!("{:#}", anyhow::Error::new(error)));
                    anyhow::anyhow!(
                        "cannot reach the control plane at {server}: {hint} (set --server or {SERVER_ENV})"
                    )
                })?;
                let status = response.status().as_u16();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .context("read the answer")?
                    .to_bytes();
                Ok::<_, anyhow::Error>(Answer {
                    status,
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                })
            };
            tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .with_context(|| format!("no answer from {server} within {REQUEST_TIMEOUT:?}"))?
        })
    }

    /// Sends a request and returns the body of a 2xx answer; other answers become errors.
    pub fn expect_ok(&self, method: &str, path: &str, body: &str) -> Result<Value> {
        ok_body(self.send(method, path, body)?)
    }

    /// `GET`s an endpoint that older control planes lack and decodes its JSON answer. A 404
    /// there means "no such API", not "no such object", so the error says to upgrade the node.
    pub fn get_newer<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let answer = self.send("GET", path, "")?;
        if answer.status == 404 {
            let endpoint = path.split('?').next().unwrap_or(path);
            bail!(
                "the control plane at {} does not serve GET {endpoint}: it is older than this \
                 hyphae CLI; upgrade it (or ask a node that runs the newer version)",
                self.server
            );
        }
        serde_json::from_value(ok_body(answer)?)
            .with_context(|| format!("the answer to GET {path} is not in the expected form"))
    }
}

/// The body of a 2xx answer; any other answer becomes an error with the API's message and code.
fn ok_body(answer: Answer) -> Result<Value> {
    if (200..300).contains(&answer.status) {
        return Ok(answer.body);
    }
    let code = answer.body["code"].as_str().unwrap_or("error");
    if answer.status == 401 {
        bail!(
            "the control plane wants a valid admin token (HTTP 401): set {TOKEN_ENV}, or {TOKEN_FILE_ENV} / --token-file to an owner-only file holding it"
        );
    }
    let message = answer.body["message"]
        .as_str()
        .unwrap_or("the control plane refused the request");
    bail!("{message} ({code}, HTTP {})", answer.status)
}

/// What a failure to reach a node most likely means, for the error the CLI prints: the
/// commonest mistakes have causes that TLS names in its own words.
fn unreachable_hint(error: &str) -> String {
    if ["UnknownIssuer", "BadSignature"]
        .iter()
        .any(|cause| error.contains(cause))
    {
        format!(
            "its certificate does not come from the root the CLI was given ({CA_FILE_ENV}, {CA_FINGERPRINT_ENV} or the `ca.pem` of {CERT_DIR_ENV}: is it this cluster's, and current after a rotation?): {error}"
        )
    } else if error.contains("InvalidContentType") || error.contains("corrupt message") {
        format!(
            "it does not speak TLS there (is that a control-plane API port? an agent's admin port speaks plain HTTP): {error}"
        )
    } else {
        error.to_string()
    }
}
