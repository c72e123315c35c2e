//! How a client checks a server: the chain ends at one of its roots (webpki, as rustls does
//! for the web), and the leaf carries the SPIFFE ID the server name asks for
//! ([`ServerIdentity`]), in the trust domain when the client knows it. A client that knows only
//! the root's fingerprint (a host joining, an operator's first call) pins it instead
//! ([`ServerVerifier::pinned`]): the root must come in the server's chain and hash to the pin.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, Error, PeerIncompatible, RootCertStore,
    SignatureScheme,
};

use super::roots::{Trust, fingerprint};
use super::server_identity::ServerIdentity;
use super::spiffe::identities;

/// Checks servers against a [`Trust`], or against a root pinned by its fingerprint.
#[derive(Debug)]
pub struct ServerVerifier {
    roots: Roots,
    provider: Arc<CryptoProvider>,
}

/// Where a verifier's roots come from.
#[derive(Debug)]
enum Roots {
    /// Roots the host holds.
    Trusted(Trust),
    /// The root whose SHA-256 is `fingerprint`, found in the server's own chain; remembered.
    Pinned {
        fingerprint: String,
        found: Mutex<Option<CertificateDer<'static>>>,
    },
}

impl ServerVerifier {
    /// A verifier for servers under `trust`.
    pub fn new(trust: Trust, provider: Arc<CryptoProvider>) -> ServerVerifier {
        ServerVerifier {
            roots: Roots::Trusted(trust),
            provider,
        }
    }

    /// A verifier for the root with this hex SHA-256 `fingerprint` (as `hyphae ca` prints it,
    /// with or without its `sha256:` prefix and colons), which the server must present in its
    /// chain; [`ServerVerifier::pinned_root`] then gives it, so the host can trust it from
    /// then on.
    pub fn pinned(fingerprint: &str, provider: Arc<CryptoProvider>) -> ServerVerifier {
        let fingerprint = fingerprint.trim().to_ascii_lowercase();
        let fingerprint = fingerprint.strip_prefix("sha256:").unwrap_or(&fingerprint);
        ServerVerifier {
            roots: Roots::Pinned {
                fingerprint: fingerprint.replace(':', ""),
                found: Mutex::new(None),
            },
            provider,
        }
    }

    /// The pinned root, once a server presented it.
    pub fn pinned_root(&self) -> Option<CertificateDer<'static>> {
        match &self.roots {
            Roots::Pinned { found, .. } => found.lock().ok().and_then(|found| found.clone()),
            Roots::Trusted(_) => None,
        }
    }
}

/// Checks `end_entity` chains to `roots` and names what `server_name` asks for.
fn verify(
    roots: &RootCertStore,
    trust_domain: Option<&str>,
    provider: &CryptoProvider,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<ServerCertVerified, Error> {
    let parsed = ParsedCertificate::try_from(end_entity)?;
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    )?;
    let wanted = ServerIdentity::from_server_name(server_name)
        .ok_or_else(|| Error::General(format!("`{server_name:?}` names no hyphae identity")))?;
    let named = identities(end_entity).into_iter().any(|id| {
        wanted.accepts(&id) && trust_domain.is_none_or(|domain| id.trust_domain == domain)
    });
    if named {
        Ok(ServerCertVerified::assertion())
    } else {
        Err(Error::InvalidCertificate(CertificateError::NotValidForName))
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let check = |roots: &RootCertStore, domain: Option<&str>| {
            verify(
                roots,
                domain,
                &self.provider,
                end_entity,
                intermediates,
                server_name,
                now,
            )
        };
        match &self.roots {
            Roots::Trusted(trust) => check(trust.roots(), trust.trust_domain()),
            Roots::Pinned {
                fingerprint: pin,
                found,
            } => {
                let root = intermediates
                    .iter()
                    .find(|cert| fingerprint(cert.as_ref()) == *pin)
                    .ok_or(Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
                let mut roots = RootCertStore::empty();
                roots
                    .add(root.clone().into_owned())
                    .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
                let verified = check(&roots, None)?;
                if let Ok(mut found) = found.lock() {
                    *found = Some(root.clone().into_owned());
                }
                Ok(verified)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Every hyphae connection is TLS 1.3.
        Err(Error::PeerIncompatible(PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
