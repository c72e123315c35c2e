//! This node's TLS material (decision 36), in `<dataDir>/tls/`: the roots it trusts (`ca.pem`),
//! its own chain and key (`node.pem`, `node-key.pem`, owner-only), and, on the node that made
//! the cluster's root, that root with its key (`ca-key.pem`, owner-only) until the cluster has
//! stored it in Raft. A node gets its own certificate in one of two ways: the initializing node
//! makes the root and signs its own; every other node joins with a control-plane join token
//! and the root's fingerprint ([`join`]). Its certificate names it
//! `spiffe://<trust domain>/control-plane/<id>`, and the addresses and names its API is
//! reached at ([`host_names`]), so `curl --cacert ca.pem https://127.0.0.1:7400/...` checks it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use arc_swap::ArcSwap;
use hyphae_policies::ControlPlaneConfigSpec;
use hyphae_policies::tls::files::CertificateFiles;
use hyphae_policies::tls::join::{key_and_request, post_pinned};
use hyphae_policies::tls::{self, Credentials, Kind, SpiffeId, Trust};
use rustls::{ClientConfig, ServerConfig};

use crate::ca::{self, HostNames, StoredCa};
use crate::wire::{ControlPlaneJoin, Joined};

/// The folder of a node's TLS files.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}
/// The founding root's key, beside the node's own files until the cluster stores the root.
const ROOT_KEY_FILE: &str = "ca-key.pem";

/// How long a joining node waits for a seed to answer one attempt.
const JOIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a node needs to join a cluster: a control-plane join token's secret and the SHA-256
/// fingerprint of the cluster's root.
#[derive(Debug, Clone)]
pub struct JoinTicket {
    /// The join token's secret.
    pub secret: String,
    /// Lower-case hex SHA-256 of the root certificate's DER.
    pub ca_fingerprint: String,
}

/// A node's TLS set-up: its credentials (replaced on renewal), the roots, and the server and
/// peer-client configurations built from them (replaced when the roots change in a rotation).
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// Where the files live.
    pub files: CertificateFiles,
    /// Its own certificate and key.
    pub credentials: Credentials,
    /// The roots it trusts, as text and as a store.
    roots: Arc<ArcSwap<(String, Trust)>>,
    /// The port's server configuration: a client certificate is optional (operators may use
    /// tokens), and checked against the roots when presented.
    pub server: Arc<ArcSwap<ServerConfig>>,
    /// The configuration of its clients toward other nodes (HTTP/2, its own certificate).
    pub peer_client: Arc<ArcSwap<ClientConfig>>,
    /// On the node that made the cluster's root: the root, until the cluster stores it.
    pub founding_root: Option<StoredCa>,
    trust_domain: String,
}

impl NodeTls {
    fn open(files: CertificateFiles, trust_domain: &str) -> anyhow::Result<NodeTls> {
        let material = files.load()?;
        let trust = Trust::from_pem(&material.roots, Some(trust_domain))?;
        let credentials = Credentials::from_pem(&material.chain, &material.key)?;
        let founding_root = match files.load_private(ROOT_KEY_FILE) {
            Some(key_pem) => {
                let der = tls::certificates(&material.roots)?;
                Some(StoredCa {
                    fingerprint: tls::fingerprint(der[0].as_ref()),
                    cert_pem: material.roots.clone(),
                    key_pem,
                    next: None,
                    retiring: Vec::new(),
                    stepped_ms: 0,
                })
            }
            None => None,
        };
        Ok(NodeTls {
            server: Arc::new(ArcSwap::new(tls::server_config(
                &credentials,
                &trust,
                true,
                &tls::ALPN_HTTP,
            )?)),
            peer_client: Arc::new(ArcSwap::new(tls::client_config(
                &trust,
                Some(&credentials),
                &tls::ALPN_H2,
            )?)),
            roots: Arc::new(ArcSwap::from_pointee((material.roots, trust))),
            files,
            credentials,
            founding_root,
            trust_domain: trust_domain.to_string(),
        })
    }

    /// The roots it trusts now.
    pub fn trust(&self) -> Trust {
        self.roots.load().1.clone()
    }

    /// Trusts exactly the roots in `bundle_pem` from now on (a rotation's step): writes them,
    /// and rebuilds the server and peer-client configurations. Returns whether they changed.
    pub fn trust_roots(&self, bundle_pem: &str) -> anyhow::Result<bool> {
        if self.roots.load().0 == bundle_pem {
            return Ok(false);
        }
        let trust = Trust::from_pem(bundle_pem, Some(&self.trust_domain))?;
        let server = tls::server_config(&self.credentials, &trust, true, &tls::ALPN_HTTP)?;
        let client = tls::client_config(&trust, Some(&self.credentials), &tls::ALPN_H2)?;
        let material = self.files.load()?;
        self.files
            .save(Some(bundle_pem), &material.chain, &material.key)?;
        self.server.store(server);
        self.peer_client.store(client);
        self.roots.store(Arc::new((bundle_pem.to_string(), trust)));
        Ok(true)
    }

    /// Writes a renewed chain and key and uses them for every handshake from now on. A chain
    /// no root this node trusts signed is refused and the certificate in use kept: peers that
    /// trust what this node trusts would refuse it at every handshake.
    pub fn renew(&self, chain_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        if !issued_under(chain_pem, &self.roots.load().0) {
            bail!(
                "the renewed certificate is not signed by a root this node trusts; keeping the one in use"
            );
        }
        self.files.save(None, chain_pem, key_pem)?;
        self.credentials.replace(chain_pem, key_pem)?;
        Ok(())
    }

    /// When its certificate stops being valid, in seconds since the Unix epoch.
    pub fn not_after(&self) -> Option<i64> {
        let leaf = self.credentials.leaf()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(cert.validity().not_after.timestamp())
    }
}

/// Whether the first certificate of `chain_pem` was signed by one of the roots in `bundle_pem`.
fn issued_under(chain_pem: &str, bundle_pem: &str) -> bool {
    let (Ok(chain), Ok(roots)) = (tls::certificates(chain_pem), tls::certificates(bundle_pem))
    else {
        return false;
    };
    let Some(Ok((_, leaf))) = chain
        .first()
        .map(|leaf| x509_parser::parse_x509_certificate(leaf.as_ref()))
    else {
        return false;
    };
    roots.iter().any(|root| {
        x509_parser::parse_x509_certificate(root.as_ref()).is_ok_and(|(_, root)| {
            leaf.issuer() == root.subject()
                && leaf.verify_signature(Some(root.public_key())).is_ok()
        })
    })
}

/// This node's TLS set-up from its data directory, if it has one.
pub fn load(data_dir: &Path, trust_domain: &str) -> anyhow::Result<Option<NodeTls>> {
    let files = CertificateFiles::new(tls_dir(data_dir));
    if !files.exist() {
        return Ok(None);
    }
    NodeTls::open(files, trust_domain).map(Some)
}

/// On the node that initializes a cluster: makes the cluster's root (or takes the operator's
/// `root`) and this node's certificate, and writes them (the root's key too, until the
/// cluster stores it).
pub fn found(
    data_dir: &Path,
    trust_domain: &str,
    id: u64,
    hosts: &HostNames,
    lifetime: Duration,
    root: Option<StoredCa>,
) -> anyhow::Result<NodeTls> {
    let files = CertificateFiles::new(tls_dir(data_dir));
    let now = crate::tokens::now_ms();
    let root = match root {
        Some(root) => root,
        None => ca::generate(trust_domain, now)?,
    };
    let (chain, key) = issue(&root, trust_domain, id, hosts, now, lifetime)?;
    files.save_private(ROOT_KEY_FILE, &root.key_pem)?;
    files.save(Some(&root.cert_pem), &chain, &key)?;
    tracing::info!(fingerprint = %root.fingerprint, "made the cluster's root certificate");
    NodeTls::open(files, trust_domain)
}

/// A certificate for control-plane node `id`, reached at `hosts`, signed by `root`, with a new
/// key: the chain (leaf then root) and the key, PEM.
pub fn issue(
    root: &StoredCa,
    trust_domain: &str,
    id: u64,
    hosts: &HostNames,
    now_ms: u64,
    lifetime: Duration,
) -> anyhow::Result<(String, String)> {
    let identity = SpiffeId::new(trust_domain, Kind::ControlPlane, &id.to_string()).to_string();
    let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
    Ok(ca::issue(root, &[identity], hosts, now_ms, lifetime_ms)?)
}

/// The names a node's certificate gives for where its API is reached: `localhost` and the
/// loopback addresses (where an operator on the host calls it), the address it listens on
/// unless that is every address, and the host it advertises, an IP address or a DNS name.
/// An advertised name that is not a plain DNS name is left out rather than refused.
pub fn host_names(spec: &ControlPlaneConfigSpec) -> HostNames {
    let mut hosts = HostNames {
        dns: vec!["localhost".to_string()],
        ips: vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
    };
    let add_ip = |ip: IpAddr, hosts: &mut HostNames| {
        if !ip.is_unspecified() && !hosts.ips.contains(&ip) {
            hosts.ips.push(ip);
        }
    };
    add_ip(spec.listen.ip(), &mut hosts);
    let Some(address) = spec.advertise.as_deref() else {
        return hosts;
    };
    let host = advertised_host(address);
    if let Ok(ip) = host.parse::<IpAddr>() {
        add_ip(ip, &mut hosts);
        return hosts;
    }
    // A fully qualified name's trailing dot names the same host.
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if is_dns_name(&name) {
        if !hosts.dns.contains(&name) {
            hosts.dns.push(name);
        }
    } else {
        tracing::warn!(
            advertise = address,
            "the advertised host is neither an IP address nor a DNS name; the node's certificate leaves it out, so clients that check names must reach the node by another"
        );
    }
    hosts
}

/// The host part of an advertised address: `host:port`, `[v6]:port`, `[v6]`, a bare IPv6
/// address (its colons are no port) or a bare host.
fn advertised_host(address: &str) -> &str {
    if let Some(bracketed) = address.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    if address.matches(':').count() > 1 {
        return address;
    }
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

/// Letters, digits, hyphens and dots, in labels of 1 to 63 bytes, the last not all digits
/// (`10.0.0.256` is a mistyped address, not a name): what a certificate may name.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Joins a cluster through one of `seeds` (tried in turn): pins the root by the ticket's
/// fingerprint in the seed's own TLS chain, sends a CSR with the join token, and writes what
/// it gets. The private key never leaves this host.
pub async fn join(
    data_dir: &Path,
    trust_domain: &str,
    id: u64,
    seeds: &[String],
    ticket: &JoinTicket,
) -> anyhow::Result<NodeTls> {
    if seeds.is_empty() {
        bail!("no cluster member to join through: list the cluster's nodes under spec.members");
    }
    let (key, csr) = key_and_request()?;
    let request = serde_json::to_vec(&ControlPlaneJoin {
        token: ticket.secret.clone(),
        id,
        csr_pem: csr,
    })?;
    let mut retry = Duration::from_millis(200);
    for round in 1..=JOIN_ROUNDS {
        for seed in seeds {
            match join_through(seed, &request, &ticket.ca_fingerprint).await {
                Ok(joined) => {
                    let files = CertificateFiles::new(tls_dir(data_dir));
                    let chain = joined.chain_pem();
                    files.save(Some(&joined.ca_pem), &chain, &key)?;
                    tracing::info!(%seed, identities = ?joined.identities, "joined the cluster; got this node's certificate");
                    return NodeTls::open(files, trust_domain);
                }
                Err(Attempt::Refused(why)) => bail!("{seed} refused the join: {why}"),
                Err(Attempt::Failed(error)) => {
                    tracing::warn!(%seed, round, error = format!("{error:#}"), "cannot join through this member yet; will retry");
                }
            }
        }
        let wait = retry.mul_f64(rand::random_range(0.5..1.5));
        retry = (retry * 2).min(Duration::from_secs(5));
        tokio::time::sleep(wait).await;
    }
    bail!("could not join through any member after {JOIN_ROUNDS} rounds")
}

/// Rounds over every seed before a join gives up (the service manager starts it again).
const JOIN_ROUNDS: u32 = 20;

/// How one join attempt failed.
enum Attempt {
    /// The seed refused it (4xx): retrying will not help.
    Refused(String),
    /// Anything else: the seed may be starting or leaderless.
    Failed(anyhow::Error),
}

async fn join_through(seed: &str, request: &[u8], fingerprint: &str) -> Result<Joined, Attempt> {
    let (status, body, root) = post_pinned(
        seed,
        CONTROL_PLANE_JOIN_PATH,
        request.to_vec(),
        fingerprint,
        JOIN_ATTEMPT_TIMEOUT,
    )
    .await
    .map_err(|error| Attempt::Failed(error.into()))?;
    let text = || format!("{status}: {}", String::from_utf8_lossy(&body));
    if status.is_client_error() {
        return Err(Attempt::Refused(text()));
    }
    if !status.is_success() {
        return Err(Attempt::Failed(anyhow::anyhow!(text())));
    }
    let joined: Joined = serde_json::from_slice(&body)
        .map_err(|error| Attempt::Failed(anyhow::anyhow!("an unreadable answer: {error}")))?;
    let answered = tls::certificates(&joined.ca_pem).map_err(|e| Attempt::Failed(e.into()))?;
    if !answered.contains(&root) {
        return Err(Attempt::Refused(
            "it answered with a root other than the pinned one".into(),
        ));
    }
    Ok(joined)
}

/// Path of the control-plane join.
pub const CONTROL_PLANE_JOIN_PATH: &str = "/v1/cluster/join";

/// Forgets the founding root's key file once the cluster stores the root.
pub fn forget_founding_root(files: &CertificateFiles) {
    if let Err(error) = files.remove_private(ROOT_KEY_FILE) {
        tracing::warn!(%error, "cannot remove the founding root's key file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_no_trusted_root_signed_is_refused_and_the_certificate_in_use_kept() {
        let dir = tempfile::TempDir::new().expect("a temporary directory");
        let hosts = hosts_for("127.0.0.1:7400", None);
        let lifetime = Duration::from_secs(3600);
        let now = crate::tokens::now_ms();
        let root = ca::generate("test.mesh", now).expect("a root");
        let node = found(
            dir.path(),
            "test.mesh",
            1,
            &hosts,
            lifetime,
            Some(root.clone()),
        )
        .expect("a founded node");
        let in_use = node.credentials.leaf();
        let files = CertificateFiles::new(tls_dir(dir.path()));
        let on_disk = files.load().expect("the node's files").chain;
        let stranger = ca::generate("test.mesh", now).expect("another root");
        let (chain, key) =
            issue(&stranger, "test.mesh", 1, &hosts, now, lifetime).expect("a certificate");
        let refused = node.renew(&chain, &key);
        assert!(refused.is_err(), "a certificate of another root was taken");
        assert_eq!(node.credentials.leaf(), in_use);
        assert_eq!(files.load().expect("the node's files").chain, on_disk);
        let (chain, key) =
            issue(&root, "test.mesh", 1, &hosts, now, lifetime).expect("a certificate");
        node.renew(&chain, &key)
            .expect("a certificate of its own root");
        assert_ne!(node.credentials.leaf(), in_use);
    }

    fn hosts_for(listen: &str, advertise: Option<&str>) -> HostNames {
        host_names(&ControlPlaneConfigSpec {
            listen: listen.parse().expect("an address"),
            advertise: advertise.map(str::to_string),
            ..ControlPlaneConfigSpec::default()
        })
    }

    #[test]
    fn a_node_is_named_by_loopback_its_listen_address_and_what_it_advertises() {
        let loopback: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
        let every = hosts_for("0.0.0.0:7400", None);
        assert_eq!(
            (every.dns, every.ips),
            (vec!["localhost".into()], loopback.clone())
        );
        let ip = "10.200.0.5".parse::<IpAddr>().expect("an address");
        let listening = hosts_for("10.200.0.5:7400", Some("10.200.0.5:7400"));
        assert_eq!(
            listening.ips,
            [loopback.clone(), vec![ip]].concat(),
            "once each"
        );
        let named = hosts_for("0.0.0.0:7400", Some("CP-1.Example.org:7400"));
        assert_eq!(named.dns, ["localhost", "cp-1.example.org"]);
        let v6 = hosts_for("[::]:7400", Some("[fd00::5]:7400"));
        assert_eq!(
            v6.ips.last(),
            Some(&"fd00::5".parse::<IpAddr>().expect("v6"))
        );
        // A bare or bracketed IPv6 address without a port, a trailing dot, capitals that
        // repeat `localhost`.
        for (advertise, ip) in [("fd00::5", "fd00::5"), ("[fd00::6]", "fd00::6")] {
            let hosts = hosts_for("0.0.0.0:7400", Some(advertise));
            assert_eq!(
                hosts.ips.last(),
                Some(&ip.parse::<IpAddr>().expect("v6")),
                "{advertise}"
            );
        }
        let dotted = hosts_for("0.0.0.0:7400", Some("cp-1.example.org.:7400"));
        assert_eq!(dotted.dns, ["localhost", "cp-1.example.org"]);
        let local = hosts_for("0.0.0.0:7400", Some("LOCALHOST:7400"));
        assert_eq!(local.dns, ["localhost"], "once");
        for odd in [
            "bad_name:7400",
            "-x.example:7400",
            "ünï.example:7400",
            "10.0.0.256:7400",
        ] {
            let hosts = hosts_for("0.0.0.0:7400", Some(odd));
            assert_eq!(hosts.dns, ["localhost"], "{odd} is left out");
        }
    }
}
