//! `hyphae ca`: the cluster's root certificate and the fingerprint joining hosts pin; and, for
//! hosts that run without a control plane (a lone edge box, a static mesh), an operator's own
//! CA on disk: `hyphae ca create` makes one, `hyphae ca issue` a node certificate from it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hyphae_policies::tls::files::CertificateFiles;
use hyphae_policies::tls::{Kind, SpiffeId};

use super::{Outcome, ServerArgs};
use crate::ca::{self, StoredCa};
use crate::wire::CaView;

use crate::ca::{ROOT_FILE, ROOT_KEY_FILE, load_dir as load};

/// Arguments of `hyphae ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// What to do; without a subcommand, print the cluster's root fingerprint.
    #[command(subcommand)]
    pub command: Option<CaCommand>,
    /// Print every root to trust (PEM: the signing root, and during a rotation the next and
    /// retiring ones) instead of the signing root's fingerprint.
    #[arg(long)]
    pub pem: bool,
    /// Where the control plane is.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `hyphae ca` subcommands: `create` and `issue` work on files and talk to no control plane;
/// `rotate` steps the cluster's root through a rotation.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// One step of a rotation of the cluster's root (admin token): `add` a new root every
    /// host trusts (nothing is signed with it yet), `activate` it once every host trusts it
    /// (hosts renew onto it), `retire` the old one once every host has renewed.
    Rotate {
        /// `add`, `activate` or `retire`.
        #[arg(value_parser = ["add", "activate", "retire"])]
        step: String,
        /// Take `activate` or `retire` within a minute of the step before, which is refused
        /// otherwise so that every host has followed: only when no host can be behind.
        #[arg(long)]
        force: bool,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Make a root certificate and key in a directory (`ca.pem`, `ca-key.pem` owner-only).
    Create {
        /// The directory (created when missing; an existing root there is kept).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The trust domain its certificates name.
        #[arg(long, default_value = "hyphae.local")]
        trust_domain: String,
    },
    /// Make a node certificate and key from the root in `--ca`, into a host's TLS directory
    /// (`ca.pem`, `node.pem`, `node-key.pem` owner-only; an agent's `dataDir/tls`).
    Issue {
        /// The root's directory (from `hyphae ca create`).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The node it names (its agent's `metadata.name`).
        #[arg(long)]
        node: String,
        /// A service the node hosts (repeat for each).
        #[arg(long = "service")]
        services: Vec<String>,
        /// The host's TLS directory to write.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// How long it is valid.
        #[arg(long, default_value = "720h")]
        lifetime: hyphae_policies::Duration,
        /// The trust domain it names (the root's).
        #[arg(long, default_value = "hyphae.local")]
        trust_domain: String,
    },
}

/// Runs `hyphae ca`.
pub fn run(args: &CaArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    match &args.command {
        Some(CaCommand::Rotate {
            step,
            force,
            server,
        }) => {
            // `force` only when given: older nodes refuse a field they do not know.
            let mut body = serde_json::json!({ "step": step });
            if *force {
                body["force"] = true.into();
            }
            let body = body.to_string();
            let answer = server.client()?.expect_ok("POST", "/v1/ca/rotate", &body)?;
            let ca: CaView = serde_json::from_value(answer)
                .context("the control plane's CA is not in the expected form")?;
            let trusted =
                hyphae_policies::tls::certificates(&ca.bundle_pem).map_or(0, |roots| roots.len());
            writeln!(
                out,
                "signing root sha256:{}; {trusted} root(s) trusted",
                ca.fingerprint
            )?;
            Ok(Outcome::Success)
        }
        Some(CaCommand::Create { dir, trust_domain }) => {
            let root = create(dir, trust_domain)?;
            writeln!(out, "sha256:{}", root.fingerprint)?;
            Ok(Outcome::Success)
        }
        Some(CaCommand::Issue {
            ca,
            node,
            services,
            out: target,
            lifetime,
            trust_domain,
        }) => {
            let root = load(ca)?;
            let mut identities = vec![SpiffeId::new(trust_domain, Kind::Node, node).to_string()];
            identities.extend(
                services
                    .iter()
                    .map(|service| SpiffeId::new(trust_domain, Kind::Service, service).to_string()),
            );
            let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
            let (chain, key) = ca::issue(
                &root,
                &identities,
                &ca::HostNames::default(),
                crate::tokens::now_ms(),
                lifetime_ms,
            )?;
            CertificateFiles::new(target.clone()).save(Some(&root.cert_pem), &chain, &key)?;
            writeln!(
                out,
                "wrote {} for {}",
                target.display(),
                identities.join(", ")
            )?;
            Ok(Outcome::Success)
        }
        None => {
            let answer = args.server.client()?.expect_ok("GET", "/v1/ca", "")?;
            let ca: CaView = serde_json::from_value(answer)
                .context("the control plane's CA is not in the expected form")?;
            if args.pem {
                out.write_all(ca.bundle_pem.as_bytes())?;
            } else {
                writeln!(out, "sha256:{}", ca.fingerprint)?;
            }
            Ok(Outcome::Success)
        }
    }
}

/// The root in `dir`, made there first when there is none.
fn create(dir: &Path, trust_domain: &str) -> Result<StoredCa> {
    if dir.join(ROOT_FILE).exists() {
        return load(dir);
    }
    let root = ca::generate(trust_domain, crate::tokens::now_ms())?;
    let files = CertificateFiles::new(dir.to_path_buf());
    files.save_private(ROOT_KEY_FILE, &root.key_pem)?;
    std::fs::write(dir.join(ROOT_FILE), &root.cert_pem)
        .with_context(|| format!("cannot write {}", dir.join(ROOT_FILE).display()))?;
    Ok(root)
}
