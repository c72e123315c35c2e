//! The cluster's certificate authority: a self-signed root made once, and node certificates
//! signed from a certificate signing request (CSR), whose private key never leaves the host
//! that made it. Each certificate carries SPIFFE IDs (`spiffe://<trust domain>/node/<name>`,
//! `.../service/<name>`) chosen here, never copied from the request. No I/O.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How long a new root is valid: rotate it well before, by adding a new root to the bundle.
pub const ROOT_LIFETIME_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
/// How far back a certificate's validity starts, so a host whose clock runs a little behind
/// accepts it at once.
pub const CLOCK_SKEW_MS: u64 = hyphae_policies::tls::CLOCK_SKEW.as_millis() as u64;

/// The root as the replicated state keeps it. The key is replicated with Raft to every
/// control-plane node (in each node's store, which only the service user can read) so any
/// leader can sign; it never goes to agents (watch streams do not carry it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredCa {
    /// The root certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Lower-case hex SHA-256 of the root certificate's DER: what joining hosts pin.
    pub fingerprint: String,
    /// During a rotation: the next root, trusted everywhere before it signs anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Box<StoredCa>>,
    /// Earlier roots still trusted (PEM), until retired: certificates they signed keep
    /// working while hosts renew.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring: Vec<String>,
    /// When the last rotation step (add or activate) was applied, by the leader's clock (ms
    /// since the Unix epoch): the next step waits [`ROTATION_SETTLE_MS`] after it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stepped_ms: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// How long after `add` (or `activate`) the next rotation step is refused: every host looks
/// at the cluster's roots at most [`hyphae_policies::tls::MAX_RENEWAL_CHECK_INTERVAL`] apart,
/// so after twice that each has trusted the new root (or renewed onto it). Activating sooner
/// would present hosts that have not yet fetched the new root a certificate they cannot
/// check, and they could never fetch it again. A host that was down longer is not covered:
/// `force` overrides the wait, for a cluster known to have none.
pub const ROTATION_SETTLE_MS: u64 =
    2 * hyphae_policies::tls::MAX_RENEWAL_CHECK_INTERVAL.as_millis() as u64;

impl std::fmt::Debug for StoredCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key: a root printed in a log or a panic gives nothing away.
        f.debug_struct("StoredCa")
            .field("fingerprint", &self.fingerprint)
            .field("next", &self.next)
            .field("retiring", &self.retiring.len())
            .finish_non_exhaustive()
    }
}

impl StoredCa {
    /// Every root hosts must trust now, PEM: the signing one, the next, the retiring ones.
    pub fn bundle(&self) -> String {
        let mut bundle = self.cert_pem.clone();
        if let Some(next) = &self.next {
            bundle.push_str(&next.cert_pem);
        }
        for root in &self.retiring {
            bundle.push_str(root);
        }
        bundle
    }

    /// The next step of a rotation applied to this root: `Add` trusts `new` without signing
    /// with it, `Activate` makes the next root the signer (the old one keeps being trusted),
    /// `Retire` stops trusting the earlier roots.
    ///
    /// `now_ms` is the leader's clock when the step was asked for; `activate` and `retire`
    /// are refused within [`ROTATION_SETTLE_MS`] of the step before them unless `force`.
    pub fn rotated(
        &self,
        step: RotationStep,
        now_ms: u64,
        force: bool,
    ) -> Result<StoredCa, String> {
        let mut rotated = self.clone();
        let settled = |step: &str, before: &str| {
            let ready_ms = self.stepped_ms.saturating_add(ROTATION_SETTLE_MS);
            // `now_ms` is 0 in an entry a leader wrote before the wait existed: applied as
            // that leader applied it, so every node's root stays the same.
            if force || now_ms == 0 || now_ms >= ready_ms {
                return Ok(());
            }
            Err(format!(
                "the root was {before} {} s ago; hosts look at the cluster's roots at most {} s apart, so {step} in {} s, once every host has followed (or force it, when no host can be behind)",
                now_ms.saturating_sub(self.stepped_ms) / 1000,
                hyphae_policies::tls::MAX_RENEWAL_CHECK_INTERVAL.as_secs(),
                (ready_ms - now_ms).div_ceil(1000),
            ))
        };
        match step {
            RotationStep::Add(new) => {
                if self.next.is_some() {
                    return Err("a next root is added already: activate it first".into());
                }
                rotated.next = Some(new);
                rotated.stepped_ms = now_ms;
            }
            RotationStep::Activate => {
                let Some(next) = rotated.next.take() else {
                    return Err("no next root to activate: add one first".into());
                };
                settled("activate", "added")?;
                let mut retiring = vec![self.cert_pem.clone()];
                retiring.extend(self.retiring.iter().cloned());
                rotated = StoredCa {
                    next: None,
                    retiring,
                    stepped_ms: now_ms,
                    ..*next
                };
            }
            RotationStep::Retire => {
                if self.next.is_some() {
                    return Err("the next root is not active yet: activate it first".into());
                }
                if !self.retiring.is_empty() {
                    settled("retire", "activated")?;
                }
                rotated.retiring.clear();
            }
        }
        Ok(rotated)
    }
}

/// One step of a root rotation (see [`StoredCa::rotated`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RotationStep {
    /// Trust this new root everywhere, not signing with it yet.
    Add(Box<StoredCa>),
    /// Sign with the next root from now on.
    Activate,
    /// Stop trusting the earlier roots.
    Retire,
}

/// What a CA operation could not do.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The request is not a valid, self-signed CSR.
    #[error("the certificate signing request is not valid: {0}")]
    BadRequest(#[source] rcgen::Error),
    /// A SPIFFE ID is not a valid URI for a certificate.
    #[error("`{0}` cannot be a certificate URI")]
    BadIdentity(String),
    /// Building or signing failed.
    #[error("cannot build the certificate: {0}")]
    Build(#[source] rcgen::Error),
    /// A time is outside what certificates can express.
    #[error("{0} ms since the Unix epoch is not a certificate time")]
    Time(u64),
}

/// The SPIFFE ID of node `name`.
pub fn node_id(trust_domain: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/node/{name}")
}

/// The SPIFFE ID of service `name`.
pub fn service_id(trust_domain: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/service/{name}")
}

/// Lower-case hex SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    hyphae_policies::tls::fingerprint(der)
}

fn at(ms: u64) -> Result<OffsetDateTime, CaError> {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| CaError::Time(ms))
}

/// A new root for `trust_domain`, valid from `now_ms` for [`ROOT_LIFETIME_MS`].
pub fn generate(trust_domain: &str, now_ms: u64) -> Result<StoredCa, CaError> {
    let key = KeyPair::generate().map_err(CaError::Build)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        format!("hyphae root CA ({trust_domain})"),
    );
    name.push(DnType::OrganizationName, "hyphae");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at(now_ms.saturating_sub(CLOCK_SKEW_MS))?;
    params.not_after = at(now_ms.saturating_add(ROOT_LIFETIME_MS))?;
    params.serial_number = Some(serial());
    let cert = params.self_signed(&key).map_err(CaError::Build)?;
    Ok(StoredCa {
        fingerprint: fingerprint(cert.der()),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        next: None,
        retiring: Vec::new(),
        stepped_ms: 0,
    })
}

fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

/// What a certificate says, read back: for hosts checking what they were given, and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Its URI SANs (the SPIFFE IDs), in order.
    pub identities: Vec<String>,
    /// Its DNS and IP SANs, in order.
    pub hosts: HostNames,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// Whether it may sign certificates.
    pub is_ca: bool,
}

/// Reads `cert_pem` and, when `root_pem` is given, checks that the root signed it.
pub fn read(cert_pem: &str, root_pem: Option<&str>) -> Result<Facts, String> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let cert = pem.parse_x509().map_err(|e| e.to_string())?;
    if let Some(root_pem) = root_pem {
        let (_, root) =
            x509_parser::pem::parse_x509_pem(root_pem.as_bytes()).map_err(|e| e.to_string())?;
        let root = root.parse_x509().map_err(|e| e.to_string())?;
        cert.verify_signature(Some(root.public_key()))
            .map_err(|e| format!("not signed by the root: {e}"))?;
        if cert.issuer() != root.subject() {
            return Err("its issuer is not the root".into());
        }
    }
    let (identities, hosts) = names(&cert)?;
    Ok(Facts {
        identities,
        hosts,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
    })
}

/// Whether the certificate `leaf` (DER) was signed by the root in `root_pem`.
pub fn signed_by(leaf: &[u8], root_pem: &str) -> bool {
    hyphae_policies::tls::signed_by(leaf, root_pem)
}

/// Where a control-plane node's API is reached, named in its certificate beside its SPIFFE ID
/// so that an ordinary HTTPS client given the cluster's root (`curl --cacert ca.pem`) can
/// check it like any server. Hosts' own verifiers read only the SPIFFE IDs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostNames {
    /// DNS names (`localhost`, an advertised host name).
    pub dns: Vec<String>,
    /// IP addresses (loopback, the listen and advertised addresses).
    pub ips: Vec<IpAddr>,
}

/// Signs the key in `csr_pem` into a certificate valid from `now_ms` for `lifetime_ms`,
/// usable for TLS as client and server, naming exactly `identities` (SPIFFE URIs).
pub fn sign(
    ca: &StoredCa,
    csr_pem: &str,
    identities: &[String],
    now_ms: u64,
    lifetime_ms: u64,
) -> Result<String, CaError> {
    sign_naming(
        ca,
        csr_pem,
        identities,
        &HostNames::default(),
        now_ms,
        lifetime_ms,
    )
}

/// [`sign`], naming `hosts` too.
fn sign_naming(
    ca: &StoredCa,
    csr_pem: &str,
    identities: &[String],
    hosts: &HostNames,
    now_ms: u64,
    lifetime_ms: u64,
) -> Result<String, CaError> {
    let request =
        CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::BadRequest)?;
    let mut params = CertificateParams::default();
    let uris = identities.iter().map(|id| {
        id.clone()
            .try_into()
            .map(SanType::URI)
            .map_err(|_| CaError::BadIdentity(id.clone()))
    });
    let dns = hosts.dns.iter().map(|name| {
        name.clone()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|_| CaError::BadIdentity(name.clone()))
    });
    let ips = hosts.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip)));
    params.subject_alt_names = uris.chain(dns).chain(ips).collect::<Result<_, _>>()?;
    let mut name = DistinguishedName::new();
    if let Some(first) = identities.first() {
        name.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = at(now_ms.saturating_sub(CLOCK_SKEW_MS))?;
    params.not_after = at(now_ms.saturating_add(lifetime_ms))?;
    params.serial_number = Some(serial());
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::from_pem(&ca.key_pem).map_err(CaError::Build)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(CaError::Build)?;
    let cert = params
        .signed_by(&request.public_key, &issuer)
        .map_err(CaError::Build)?;
    Ok(cert.pem())
}

/// File of an operator's root certificate, in its directory (`hyphae ca create`).
pub const ROOT_FILE: &str = "ca.pem";
/// File of an operator's root key, in its directory (owner-only).
pub const ROOT_KEY_FILE: &str = "ca-key.pem";

/// An operator's root and its key from `dir` (`ca.pem`, and `ca-key.pem` readable only by its
/// owner): for `hyphae ca issue`, and `--init --ca-dir` to start a cluster with it.
pub fn load_dir(dir: &std::path::Path) -> anyhow::Result<StoredCa> {
    use anyhow::Context;
    let cert_pem = std::fs::read_to_string(dir.join(ROOT_FILE))
        .with_context(|| format!("cannot read {}", dir.join(ROOT_FILE).display()))?;
    let key_pem = hyphae_policies::secret_file::read_pem(&dir.join(ROOT_KEY_FILE))?;
    let der = hyphae_policies::tls::certificates(&cert_pem)?;
    KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{} holds no usable key", dir.join(ROOT_KEY_FILE).display()))?;
    Ok(StoredCa {
        fingerprint: fingerprint(der[0].as_ref()),
        cert_pem,
        key_pem,
        next: None,
        retiring: Vec::new(),
        stepped_ms: 0,
    })
}

/// A new key and a certificate for it naming `identities` and `hosts`, signed by `root`: the chain (leaf,
/// then root) and the key, PEM. For hosts whose key is made where the root's key is: a
/// control-plane node's own certificate, and `hyphae ca issue` for an operator's own PKI.
pub fn issue(
    root: &StoredCa,
    identities: &[String],
    hosts: &HostNames,
    now_ms: u64,
    lifetime_ms: u64,
) -> Result<(String, String), CaError> {
    let key = KeyPair::generate().map_err(CaError::Build)?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|request| request.pem())
        .map_err(CaError::Build)?;
    let leaf = sign_naming(root, &csr, identities, hosts, now_ms, lifetime_ms)?;
    Ok((format!("{leaf}{}", root.cert_pem), key.serialize_pem()))
}

/// The DNS and IP names in the certificate `der`; `None` when it does not parse.
pub fn host_names_in(der: &[u8]) -> Option<HostNames> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    names(&cert).ok().map(|(_, hosts)| hosts)
}

/// A certificate's URI SANs, in order, and its DNS and IP SANs.
fn names(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<(Vec<String>, HostNames), String> {
    use x509_parser::extensions::GeneralName;
    let mut identities = Vec::new();
    let mut hosts = HostNames::default();
    let Some(san) = cert.subject_alternative_name().map_err(|e| e.to_string())? else {
        return Ok((identities, hosts));
    };
    for name in &san.value.general_names {
        match name {
            GeneralName::URI(uri) => identities.push((*uri).to_string()),
            GeneralName::DNSName(dns) => hosts.dns.push((*dns).to_string()),
            GeneralName::IPAddress(bytes) => {
                if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                    hosts.ips.push(IpAddr::from(octets));
                } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                    hosts.ips.push(IpAddr::from(octets));
                }
            }
            _ => {}
        }
    }
    Ok((identities, hosts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_certificate_names_only_the_identities_given_and_chains_to_the_root() {
        let now = 1_800_000_000_000;
        let ca = generate("example.org", now).expect("a root");
        let key = KeyPair::generate().expect("a key");
        let mut asked = CertificateParams::new(vec!["evil.example".to_string()]).expect("params");
        asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = asked
            .serialize_request(&key)
            .expect("a CSR")
            .pem()
            .expect("PEM");
        let ids = [
            node_id("example.org", "web-1"),
            service_id("example.org", "web"),
        ];
        let pem = sign(&ca, &csr, &ids, now, 24 * 3600 * 1000).expect("signed");
        let facts = read(&pem, Some(&ca.cert_pem)).expect("signed by the root");
        assert!(!facts.is_ca, "the CSR asked for a CA; it gets a leaf");
        assert_eq!(
            facts.identities,
            [
                "spiffe://example.org/node/web-1",
                "spiffe://example.org/service/web"
            ]
        );
        assert_eq!(
            facts.not_after - facts.not_before,
            (24 * 3600 * 1000 + CLOCK_SKEW_MS as i64) / 1000
        );
        let (_, root) = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes()).expect("PEM");
        assert_eq!(fingerprint(&root.contents), ca.fingerprint);
        let other = generate("example.org", now).expect("another root");
        assert!(
            read(&pem, Some(&other.cert_pem)).is_err(),
            "another root did not sign it"
        );
    }

    #[test]
    fn each_rotation_step_waits_for_every_host_to_follow_the_one_before() {
        let now = 1_800_000_000_000;
        let ca = generate("example.org", now).expect("a root");
        let next = Box::new(generate("example.org", now).expect("the next root"));
        let added = ca
            .rotated(RotationStep::Add(next.clone()), now, false)
            .expect("add");
        let early = added.rotated(RotationStep::Activate, now + ROTATION_SETTLE_MS - 1, false);
        assert!(
            early.as_ref().is_err_and(|why| why.contains("in 1 s")),
            "{early:?}"
        );
        let active = added
            .rotated(RotationStep::Activate, now + ROTATION_SETTLE_MS, false)
            .expect("activate, a minute on");
        assert_eq!(active.fingerprint, next.fingerprint);
        let then = now + ROTATION_SETTLE_MS;
        assert!(
            active
                .rotated(RotationStep::Retire, then + 1000, false)
                .is_err()
        );
        assert!(
            active
                .rotated(RotationStep::Retire, then + 1000, true)
                .is_ok()
        );
        let retired = active
            .rotated(RotationStep::Retire, then + ROTATION_SETTLE_MS, false)
            .expect("retire, a minute on");
        assert!(retired.retiring.is_empty());
        assert!(
            retired
                .rotated(RotationStep::Retire, then + ROTATION_SETTLE_MS, false)
                .is_ok(),
            "retiring nothing waits for nothing"
        );
        assert!(
            added.rotated(RotationStep::Activate, now, true).is_ok(),
            "forced"
        );
        assert!(
            added.rotated(RotationStep::Activate, 0, false).is_ok(),
            "an entry from before the wait is applied as its leader applied it"
        );
    }

    #[test]
    fn a_request_that_is_not_a_csr_is_refused() {
        let ca = generate("example.org", 1_800_000_000_000).expect("a root");
        assert!(matches!(
            sign(&ca, "not a csr", &[], 1_800_000_000_000, 1000),
            Err(CaError::BadRequest(_))
        ));
    }
}
