//! The `hyphae` command line: argument types and one module per subcommand.
//! `main` only parses arguments and maps the outcome to an exit code.

pub mod acl;
pub mod apply;
pub mod ca;
pub mod client;
pub mod cluster;
pub mod completions;
pub mod describe;
pub mod diff;
pub mod get;
pub mod registry;
pub mod schema;
pub mod table;
pub mod token;
pub mod validate;

use clap::{Args, Parser, Subcommand};

/// hyphae operator CLI.
#[derive(Debug, Parser)]
#[command(name = "hyphae", version, about = "Operate a hyphae service mesh")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check policy files (or directories of them) without applying anything.
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of policy documents, for editor completion.
    Schema(schema::SchemaArgs),
    /// Validate policy files and write them to the control plane in one atomic change.
    Apply(apply::ApplyArgs),
    /// Read stored policies.
    Get(get::GetArgs),
    /// Delete a stored policy.
    Delete(get::DeleteArgs),
    /// Show one stored policy, its YAML, and the policies it refers to and is referred to by.
    Describe(describe::DescribeArgs),
    /// List registered services: protocol, instances passing/total, the nodes hosting them.
    Services(registry::RegistryArgs),
    /// List registered nodes: site, address, agent version, instances, revision; or forget one.
    Nodes(registry::NodesArgs),
    /// Inspect the control-plane cluster.
    Cluster(cluster::ClusterArgs),
    /// Manage access: the admin API's tokens.
    Acl(acl::AclArgs),
    /// Join tokens, which let a new host get its node certificate.
    Token(token::TokenArgs),
    /// The cluster's root certificate fingerprint (or `--pem`), for hosts to pin.
    Ca(ca::CaArgs),
    /// Print a shell completion script (bash, zsh or fish).
    Completions(completions::CompletionsArgs),
}

/// Where the control plane is, and the token to show it, for commands that talk to it.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// A control-plane node's `host:port` (any node: followers forward to the leader).
    #[arg(long, env = client::SERVER_ENV, default_value = client::DEFAULT_SERVER)]
    pub server: String,
    /// An owner-only file holding the admin API token's secret (the secret itself may be given
    /// in the `HYPHAE_TOKEN` environment variable instead; never as an argument).
    #[arg(long, value_name = "FILE", env = client::TOKEN_FILE_ENV)]
    pub token_file: Option<std::path::PathBuf>,
    /// The cluster's root certificate (PEM; `tls/ca.pem` in a control-plane node's data
    /// directory), which the node's certificate must chain to.
    #[arg(long, value_name = "FILE", env = client::CA_FILE_ENV)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Instead of `--ca-file`: the SHA-256 fingerprint of the cluster's root, pinned (the node
    /// presents the root itself).
    #[arg(long, value_name = "HEX", env = client::CA_FINGERPRINT_ENV, conflicts_with = "ca_file")]
    pub ca_fingerprint: Option<String>,
    /// An operator's client certificate directory (`hyphae acl cert create --out`), presented
    /// to the node; used instead of a token when no token is given. Its `ca.pem` is the
    /// cluster's root when neither `--ca-file` nor `--ca-fingerprint` is given.
    #[arg(long, value_name = "DIR", env = client::CERT_DIR_ENV)]
    pub cert_dir: Option<std::path::PathBuf>,
}

/// Where to read from, and whether a stale read will do, for commands that only read.
#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    /// Read from the node you talk to without a quorum round (may be slightly behind).
    #[arg(long)]
    pub stale: bool,
    /// Where the control plane is.
    #[command(flatten)]
    pub server: ServerArgs,
}

impl ReadArgs {
    /// `path` (which may carry a query already) with `stale=true` added to its query when
    /// `--stale` was given.
    pub fn path(&self, path: &str) -> String {
        if !self.stale {
            return path.to_string();
        }
        let separator = if path.contains('?') { '&' } else { '?' };
        format!("{path}{separator}stale=true")
    }
}

impl ServerArgs {
    /// The node to talk to.
    pub fn address(&self) -> String {
        self.server.clone()
    }

    /// A client for the node, carrying the token (`HYPHAE_TOKEN`, else `--token-file`).
    pub fn client(&self) -> anyhow::Result<client::ApiClient> {
        self.client_for(&self.server)
    }

    /// A client for another node of the same cluster, carrying the same token.
    pub fn client_for(&self, server: &str) -> anyhow::Result<client::ApiClient> {
        let token = match (std::env::var(client::TOKEN_ENV), &self.token_file) {
            (Ok(secret), _) if !secret.trim().is_empty() => Some(secret.trim().to_string()),
            (_, Some(path)) => Some(crate::secret_file::read(path)?),
            _ => None,
        };
        // An operator's certificate directory holds the cluster's root beside the certificate.
        let ca_file = self.ca_file.clone().or_else(|| {
            let in_cert_dir = self.cert_dir.as_ref()?.join("ca.pem");
            (self.ca_fingerprint.is_none() && in_cert_dir.is_file()).then_some(in_cert_dir)
        });
        let trust = match (&ca_file, &self.ca_fingerprint) {
            (Some(path), _) => {
                client::ServerTrust::Roots(std::fs::read_to_string(path).map_err(|error| {
                    anyhow::anyhow!(
                        "cannot read the root certificate {}: {error}",
                        path.display()
                    )
                })?)
            }
            (None, Some(fingerprint)) => client::ServerTrust::Pinned(fingerprint.clone()),
            (None, None) => anyhow::bail!(
                "the CLI checks the control plane's certificate: set {} to the cluster's root (tls/ca.pem in a control-plane node's data directory) or {} to its fingerprint",
                client::CA_FILE_ENV,
                client::CA_FINGERPRINT_ENV
            ),
        };
        let credentials = match &self.cert_dir {
            Some(dir) => {
                let material =
                    hyphae_policies::tls::files::CertificateFiles::new(dir.clone()).load()?;
                Some(hyphae_policies::tls::Credentials::from_pem(
                    &material.chain,
                    &material.key,
                )?)
            }
            None => None,
        };
        Ok(client::ApiClient::new(server, &trust, credentials.as_ref())?.with_token(token))
    }
}

/// How a command ended, as the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: the input had errors.
    Invalid,
}

/// Runs a parsed command, writing to `out`.
pub fn run(cli: Cli, out: &mut dyn std::io::Write) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Validate(args) => validate::run(&args, out),
        Command::Schema(args) => schema::run(&args, out),
        Command::Apply(args) => apply::run(&args, out),
        Command::Get(args) => get::run_get(&args, out),
        Command::Delete(args) => get::run_delete(&args, out),
        Command::Describe(args) => describe::run(&args, out),
        Command::Services(args) => registry::run_services(&args, out),
        Command::Nodes(args) => registry::run_nodes(&args, out),
        Command::Cluster(args) => cluster::run(&args, out),
        Command::Acl(args) => acl::run(&args, out),
        Command::Token(args) => token::run(&args, out),
        Command::Ca(args) => ca::run(&args, out),
        Command::Completions(args) => completions::run(&args, out),
    }
}
