//! The bench's own certificates, issued with the real `hyphae ca issue` from the root the agents'
//! certificates come from (the test-support library's shared root): one for each haproxy of the
//! TLS chain (certificate and key in one PEM file, as haproxy reads them) and one for the
//! handshake client. Kept under `target/bench/tls/`; never used outside the bench.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hyphae_integration::trust::issue_static;
use hyphae_policies::tls::files::CertificateFiles;
use hyphae_policies::tls::{self, Credentials, Kind, Trust};

use crate::bench::report::write;
use crate::util;

/// Node name of the haproxy that takes the load generator's plaintext.
pub const HAPROXY_EDGE: &str = "bench-haproxy-1";
/// Node name of the haproxy in front of the backend, which the edge reaches over mutual TLS.
pub const HAPROXY_INNER: &str = "bench-haproxy-2";
/// Node name of the handshake client.
const CLIENT: &str = "bench-client";

/// Mode of the files holding a private key.
const OWNER_ONLY: u32 = 0o600;

/// The files the haproxy chain over mutual TLS reads.
pub struct HaproxyFiles {
    /// The root every bench certificate chains to (`ca.pem`), for haproxy's `ca-file`.
    pub roots: PathBuf,
    /// [`HAPROXY_EDGE`]'s certificate and key in one file, for haproxy's `crt`.
    pub edge: PathBuf,
    /// [`HAPROXY_INNER`]'s certificate and key in one file.
    pub inner: PathBuf,
}

/// What the TLS rows and the handshake measurement need.
pub struct Certificates {
    /// haproxy's.
    pub haproxy: HaproxyFiles,
    /// The handshake client's certificate.
    pub client: Credentials,
    /// The root and trust domain, to check servers with.
    pub trust: Trust,
}

impl Certificates {
    /// Issues every certificate into a new `dir` (emptied first) with the `hyphae` CLI `cli`.
    pub fn issue(cli: &Path, dir: &Path) -> Result<Certificates> {
        util::empty_dir(dir)?;
        let issue = |node: &str| -> Result<CertificateFiles> {
            let out = dir.join(node);
            issue_static(cli, node, &[], &out)
                .with_context(|| format!("issue a certificate for {node}"))?;
            Ok(CertificateFiles::new(out))
        };
        let haproxy_pem = |node: &str| -> Result<PathBuf> {
            let material = issue(node)?.load()?;
            let path = dir.join(format!("{node}.pem"));
            write(&path, &format!("{}{}", material.chain, material.key))?;
            // It holds a private key: owner-only, like the key file it was made from.
            fs::set_permissions(&path, fs::Permissions::from_mode(OWNER_ONLY))
                .with_context(|| format!("restrict {}", path.display()))?;
            Ok(path)
        };
        let edge = haproxy_pem(HAPROXY_EDGE)?;
        let inner = haproxy_pem(HAPROXY_INNER)?;
        let client = issue(CLIENT)?;
        let material = client.load()?;
        let credentials = Credentials::from_pem(&material.chain, &material.key)?;
        let leaf = credentials
            .leaf()
            .context("`hyphae ca issue` wrote a chain without a certificate")?;
        let domain = tls::identities(&leaf)
            .into_iter()
            .find(|id| id.kind == Kind::Node)
            .map(|id| id.trust_domain)
            .context("`hyphae ca issue` wrote a certificate that names no node")?;
        let roots = dir.join("ca.pem");
        write(&roots, &material.roots)?;
        Ok(Certificates {
            haproxy: HaproxyFiles { roots, edge, inner },
            trust: Trust::from_pem(&material.roots, Some(&domain))?,
            client: credentials,
        })
    }
}
