//! TLS for every hyphae port: rustls on ring, TLS 1.3 only (decision 36). A peer is known by
//! the SPIFFE IDs in its certificate ([`spiffe`]), checked against the cluster's roots
//! ([`Trust`]); what a client expects of a server travels in the TLS server name
//! ([`ServerIdentity`]), since our certificates carry no DNS names. A host's own certificate
//! ([`Credentials`]) can be replaced while connections run, so renewal drops nothing.

pub mod connector;
pub mod files;
pub mod join;
pub mod spiffe;
pub mod verifier;

use std::sync::{Arc, Once};

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};

pub use self::connector::{TlsConnection, TlsConnector};
pub use self::spiffe::{Kind, SpiffeId, identities};
pub use self::verifier::ServerVerifier;

/// ALPN protocols of a port that speaks HTTP/2 and HTTP/1.1.
pub const ALPN_HTTP: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// ALPN protocol of an HTTP/2-only client.
pub const ALPN_H2: [&[u8]; 1] = [b"h2"];

/// What a TLS set-up could not do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM text holds no certificate, or one that does not parse.
    #[error("no certificate in the PEM text: {0}")]
    Certificate(String),
    /// A PEM text holds no private key, or one ring cannot use.
    #[error("no usable private key in the PEM text: {0}")]
    Key(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The roots cannot check client certificates.
    #[error("client verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The one crypto provider of every process: ring, which rcgen already uses (two providers
/// compiled in would make rustls' defaults ambiguous).
pub fn provider() -> Arc<CryptoProvider> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Another part of the process may have installed ring already: that is the same.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Lower-case hex SHA-256 of `der`: how a root is pinned before it is trusted.
pub fn fingerprint(der: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring_sha256(der);
    digest.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

fn ring_sha256(data: &[u8]) -> Vec<u8> {
    // rustls' provider exposes its hash; SHA-256 is always there.
    let hash = rustls::crypto::ring::default_provider()
        .cipher_suites
        .iter()
        .find_map(|suite| suite.tls13().map(|s| s.common.hash_provider))
        .filter(|hash| hash.algorithm() == rustls::crypto::hash::HashAlgorithm::SHA256);
    match hash {
        Some(hash) => hash.hash(data).as_ref().to_vec(),
        None => Vec::new(),
    }
}

/// Every certificate in `pem`, in order.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate("none found".into()));
    }
    Ok(certs)
}

/// The roots a host trusts: the cluster's CA, or several while a CA is rotated.
#[derive(Debug, Clone)]
pub struct Trust {
    roots: Arc<RootCertStore>,
    /// The trust domain every peer's SPIFFE IDs must be in, when known.
    trust_domain: Option<String>,
}

impl Trust {
    /// The roots in `pem` (one or more certificates), for peers in `trust_domain` (any when
    /// `None`: a client that pinned the root by fingerprint need not know the domain).
    pub fn from_pem(pem: &str, trust_domain: Option<&str>) -> Result<Trust, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(pem)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::Certificate(e.to_string()))?;
        }
        Ok(Trust {
            roots: Arc::new(roots),
            trust_domain: trust_domain.map(str::to_string),
        })
    }

    /// The root store.
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// The trust domain peers must be in, when known.
    pub fn trust_domain(&self) -> Option<&str> {
        self.trust_domain.as_deref()
    }
}

/// A host's own certificate chain and key, shared by its server and its clients, and replaced
/// in place on renewal: new handshakes use the new one, live connections keep theirs.
#[derive(Debug, Clone)]
pub struct Credentials(Arc<ArcSwap<CertifiedKey>>);

impl Credentials {
    /// The chain in `chain_pem` (leaf first) with the key in `key_pem` (PKCS#8).
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Credentials, TlsError> {
        Ok(Credentials(Arc::new(ArcSwap::from_pointee(certified(
            chain_pem, key_pem,
        )?))))
    }

    /// Uses `chain_pem` and `key_pem` for every handshake from now on.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        self.0.store(Arc::new(certified(chain_pem, key_pem)?));
        Ok(())
    }

    /// The leaf certificate in use.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.0.load().cert.first().cloned()
    }
}

fn certified(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Key(e.to_string()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Key(e.to_string()))
}

impl ResolvesServerCert for Credentials {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl ResolvesClientCert for Credentials {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

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

/// What a client requires of a server's certificate, beyond a chain to its roots. Carried as
/// the TLS server name, so one client configuration serves every peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerIdentity {
    /// Any control-plane node of the cluster.
    ControlPlane,
    /// The agent of this node.
    Node(String),
}

/// Server name suffix that marks a node identity.
const NODE_SUFFIX: &str = ".node.hyphae.invalid";
/// Server name that asks for any control-plane node.
const CONTROL_PLANE_NAME: &str = "control-plane.hyphae.invalid";

impl ServerIdentity {
    /// The TLS server name that carries it; `None` for a node name that is not a DNS label.
    pub fn server_name(&self) -> Option<ServerName<'static>> {
        let name = match self {
            ServerIdentity::ControlPlane => CONTROL_PLANE_NAME.to_string(),
            ServerIdentity::Node(node) => format!("{node}{NODE_SUFFIX}"),
        };
        ServerName::try_from(name).ok()
    }

    /// Reads it back from a server name.
    pub fn from_server_name(name: &ServerName<'_>) -> Option<ServerIdentity> {
        let ServerName::DnsName(dns) = name else {
            return None;
        };
        let dns = dns.as_ref();
        if dns == CONTROL_PLANE_NAME {
            return Some(ServerIdentity::ControlPlane);
        }
        dns.strip_suffix(NODE_SUFFIX)
            .filter(|node| !node.is_empty() && !node.contains('.'))
            .map(|node| ServerIdentity::Node(node.to_string()))
    }

    /// Whether a server with identity `id` is what this asks for.
    pub fn accepts(&self, id: &SpiffeId) -> bool {
        match self {
            ServerIdentity::ControlPlane => id.kind == Kind::ControlPlane,
            ServerIdentity::Node(node) => id.kind == Kind::Node && id.name == *node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_identity_survives_the_trip_through_a_server_name() {
        for identity in [
            ServerIdentity::ControlPlane,
            ServerIdentity::Node("web-1".into()),
        ] {
            let name = identity.server_name().expect("a DNS name");
            assert_eq!(ServerIdentity::from_server_name(&name), Some(identity));
        }
        let other = ServerName::try_from("example.com").expect("a name");
        assert_eq!(ServerIdentity::from_server_name(&other), None);
    }

    #[test]
    fn the_fingerprint_is_hex_sha256() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
