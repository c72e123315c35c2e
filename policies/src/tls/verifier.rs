//! How a client checks a server: the chain ends at one of its roots (webpki, as rustls does
//! for the web), and the leaf carries the SPIFFE ID the server name asks for
//! ([`ServerIdentity`]), in the trust domain when the client knows it. A client that knows only
//! the root's fingerprint (a host joining, an operator's first call) pins it instead
//! ([`PinnedRoot`]): the root must come in the server's chain and hash to the pin.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use super::roots::{Trust, fingerprint};
use super::server_identity::ServerIdentity;
use super::spiffe::identities;

/// Checks servers against a [`Trust`].
#[derive(Debug)]
pub struct ServerVerifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

impl ServerVerifier {
    /// A verifier for servers under `trust`.
    pub fn new(trust: Trust, provider: Arc<CryptoProvider>) -> ServerVerifier {
        ServerVerifier { trust, provider }
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

macro_rules! signatures_by_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
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
    };
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
        verify(
            self.trust.roots(),
            self.trust.trust_domain(),
            &self.provider,
            end_entity,
            intermediates,
            server_name,
            now,
        )
    }

    signatures_by_provider!();
}

/// Trusts the root whose SHA-256 is the pin, found in the server's own chain, and remembers it
/// ([`PinnedRoot::root`]) so the host can trust it from then on.
#[derive(Debug)]
pub struct PinnedRoot {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
    found: Mutex<Option<CertificateDer<'static>>>,
}

impl PinnedRoot {
    /// A verifier for the root with this hex SHA-256 `fingerprint` (as `hyphae ca` prints
    /// it, with or without its `sha256:` prefix and colons).
    pub fn new(fingerprint: &str, provider: Arc<CryptoProvider>) -> PinnedRoot {
        let fingerprint = fingerprint.trim().to_ascii_lowercase();
        let fingerprint = fingerprint.strip_prefix("sha256:").unwrap_or(&fingerprint);
        PinnedRoot {
            fingerprint: fingerprint.replace(':', ""),
            provider,
            found: Mutex::new(None),
        }
    }

    /// The pinned root, once a server presented it.
    pub fn root(&self) -> Option<CertificateDer<'static>> {
        self.found.lock().ok().and_then(|found| found.clone())
    }
}

impl ServerCertVerifier for PinnedRoot {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let root = intermediates
            .iter()
            .find(|cert| fingerprint(cert.as_ref()) == self.fingerprint)
            .ok_or(Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
        let mut roots = RootCertStore::empty();
        roots
            .add(root.clone().into_owned())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let verified = verify(
            &roots,
            None,
            &self.provider,
            end_entity,
            intermediates,
            server_name,
            now,
        )?;
        if let Ok(mut found) = self.found.lock() {
            *found = Some(root.clone().into_owned());
        }
        Ok(verified)
    }

    signatures_by_provider!();
}
