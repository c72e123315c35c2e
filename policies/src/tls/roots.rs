//! The crypto provider every process uses, PEM certificates, fingerprints, and the roots a
//! host trusts.

use std::sync::{Arc, Once};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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

/// How far back a certificate's validity starts, so a host whose clock runs a little behind
/// accepts it at once; its life for renewal counts from after this.
pub const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// How often a host looks at whether its certificate is due for renewal: a twentieth of its
/// life, between a quarter second and thirty seconds.
pub fn renewal_check_interval(lifetime: std::time::Duration) -> std::time::Duration {
    (lifetime / 20).clamp(
        std::time::Duration::from_millis(250),
        MAX_RENEWAL_CHECK_INTERVAL,
    )
}

/// Longest a host goes between two looks at the cluster's roots (and its certificate): a root
/// rotation's steps wait at least twice this for every host to follow.
pub const MAX_RENEWAL_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Lower-case hex SHA-256 of `der`: how a root is pinned before it is trusted.
pub fn fingerprint(der: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// Whether the certificate `leaf` (DER) was signed by the root in `root_pem`: after a
/// rotation's activation, a host whose certificate was not renews at once.
pub fn signed_by(leaf: &[u8], root_pem: &str) -> bool {
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(leaf) else {
        return false;
    };
    let Ok((_, root)) = x509_parser::pem::parse_x509_pem(root_pem.as_bytes()) else {
        return false;
    };
    let Ok(root) = root.parse_x509() else {
        return false;
    };
    leaf.issuer() == root.subject() && leaf.verify_signature(Some(root.public_key())).is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_hex_sha256() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
