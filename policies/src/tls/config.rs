//! Server and client configurations: TLS 1.3 only, ALPN for HTTP, our verifiers.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};

use super::credentials::Credentials;
use super::roots::{TlsError, Trust, provider};
use super::verifier::ServerVerifier;

/// ALPN protocols of a port that speaks HTTP/2 and HTTP/1.1.
pub const ALPN_HTTP: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// ALPN protocol of an HTTP/2-only client.
pub const ALPN_H2: [&[u8]; 1] = [b"h2"];

/// A server that presents `credentials` and checks any client certificate against `trust`;
/// a client without one is let through the handshake (`optional_clients`) when the port's
/// routes decide who may do what (the control plane: tokens or certificates), else refused.
pub fn server_config(
    credentials: &Credentials,
    trust: &Trust,
    optional_clients: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(trust.roots()), provider.clone());
    if optional_clients {
        verifier = verifier.allow_unauthenticated();
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.build()?)
        .with_cert_resolver(Arc::new(credentials.clone()));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client that checks servers against `trust` (see [`ServerVerifier`]) and presents
/// `credentials` when it has them.
pub fn client_config(
    trust: &Trust,
    credentials: Option<&Credentials>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = ServerVerifier::new(trust.clone(), provider());
    client_config_verified_by(Arc::new(verifier), credentials, alpn)
}

/// A client whose servers `verifier` checks.
pub fn client_config_verified_by(
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    credentials: Option<&Credentials>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match credentials {
        Some(credentials) => builder.with_client_cert_resolver(Arc::new(credentials.clone())),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
