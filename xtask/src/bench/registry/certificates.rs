//! Node certificates for the simulated agents, signed here with the cluster's root (the bench
//! started the cluster on a root whose key it holds), as many as there are agents, in about a
//! second: a join per agent would be a Raft write each and measure joins, not heartbeats. Never
//! issues anything but node certificates.

use std::path::Path;

use anyhow::{Context, Result};
use hyphae_policies::tls::{Credentials, Kind, SpiffeId, Trust};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};

/// The root certificate's file in the root's folder, as `hyphae ca create` names it.
const ROOT_FILE: &str = "ca.pem";
/// The root key's file in the root's folder, as `hyphae ca create` names it.
const ROOT_KEY_FILE: &str = "ca-key.pem";

/// Signs node certificates with the cluster's root.
pub struct NodeIssuer {
    /// The root and its key.
    issuer: rcgen::Issuer<'static, KeyPair>,
    /// The root, PEM: the end of every chain, and what the agents trust.
    root_pem: String,
    /// The trust domain the identities are in.
    trust_domain: String,
}

impl NodeIssuer {
    /// The root in `dir` (`ca.pem`, `ca-key.pem`), issuing identities in `trust_domain`.
    pub fn load(dir: &Path, trust_domain: &str) -> Result<NodeIssuer> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
        };
        let root_pem = read(ROOT_FILE)?;
        let key = KeyPair::from_pem(&read(ROOT_KEY_FILE)?).context("the root's key")?;
        let issuer =
            rcgen::Issuer::from_ca_cert_pem(&root_pem, key).context("the root certificate")?;
        Ok(NodeIssuer {
            issuer,
            root_pem,
            trust_domain: trust_domain.to_string(),
        })
    }

    /// The roots a simulated agent checks the nodes' certificates against.
    pub fn trust(&self) -> Result<Trust> {
        Trust::from_pem(&self.root_pem, None).context("the cluster's root")
    }

    /// A new key and a certificate naming node `node` hosting `service`, as a join gives an
    /// agent (usable as client and server; rcgen's default validity, which covers any run).
    pub fn node(&self, node: &str, service: &str) -> Result<Credentials> {
        let key = KeyPair::generate().context("a node key")?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = [(Kind::Node, node), (Kind::Service, service)]
            .into_iter()
            .map(|(kind, name)| {
                let id = SpiffeId::new(&self.trust_domain, kind, name).to_string();
                id.clone()
                    .try_into()
                    .map(SanType::URI)
                    .with_context(|| format!("identity {id}"))
            })
            .collect::<Result<_>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("sign the certificate of {node}"))?;
        let chain = format!("{}{}", cert.pem(), self.root_pem);
        Credentials::from_pem(&chain, &key.serialize_pem())
            .with_context(|| format!("the credentials of {node}"))
    }
}
