//! The first call of a host that has no certificate yet: a new key and a CSR
//! ([`key_and_request`]; the key never leaves the host), posted with a join token to a
//! control-plane node whose root is pinned by fingerprint ([`post_pinned`]), like kubeadm's
//! discovery hash.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::CertificateDer;

use super::config::{ALPN_HTTP, client_config_verified_by};
use super::connector::TlsConnector;
use super::roots::{TlsError, provider};
use super::server_identity::ServerIdentity;
use super::verifier::ServerVerifier;

/// Why a pinned call failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No key or CSR could be made.
    #[error("cannot make a key and a certificate request: {0}")]
    Key(#[from] rcgen::Error),
    /// The TLS client could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The node could not be reached, or did not present the pinned root.
    #[error("cannot reach {server} (or it did not present the pinned root): {reason}")]
    Unreachable {
        /// The node.
        server: String,
        /// What failed.
        reason: String,
    },
    /// No answer in time.
    #[error("no answer from {0} in time")]
    Timeout(String),
}

/// A new ECDSA P-256 key and a CSR for it, PEM; the CA chooses every name, so the CSR asks for
/// none.
pub fn key_and_request() -> Result<(String, String), JoinError> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    Ok((key.serialize_pem(), csr))
}

/// POSTs `body` (JSON) to `path` on control-plane node `server` (`host:port`) after checking
/// that it presents the root with SHA-256 `fingerprint`; returns the status, the body and that
/// root.
pub async fn post_pinned(
    server: &str,
    path: &str,
    body: Vec<u8>,
    fingerprint: &str,
    timeout: Duration,
) -> Result<(StatusCode, Bytes, CertificateDer<'static>), JoinError> {
    let pinned = Arc::new(ServerVerifier::pinned(fingerprint, provider()));
    let config = client_config_verified_by(pinned.clone(), None, &ALPN_HTTP)?;
    let connector = TlsConnector::new(config, ServerIdentity::ControlPlane, timeout);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(connector);
    let unreachable = |reason: String| JoinError::Unreachable {
        server: server.to_string(),
        reason,
    };
    let request = http::Request::post(format!("https://{server}{path}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| unreachable(e.to_string()))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| unreachable(crate::error_chain::ErrorChain(&e).to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok::<_, JoinError>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| JoinError::Timeout(server.to_string()))??;
    let root = pinned
        .pinned_root()
        .ok_or_else(|| unreachable("it did not present the pinned root".into()))?;
    Ok((status, body, root))
}
