//! A host's own certificate and key, replaceable while connections run.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::roots::{TlsError, certificates, provider};

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

    /// The chain and key in use: the same `Arc` until the next [`Credentials::replace`], so a
    /// holder can tell whether what it read from them is still current.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.load_full()
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
