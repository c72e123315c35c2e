//! `hyphae acl token create|list|revoke`: the admin API's tokens. A new token's secret is
//! printed once, on stdout only; the cluster keeps its hash.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::get::Output;
use super::table::table_of;
use super::{Outcome, ServerArgs};
use crate::tokens::{Role, TokenView};

/// Path of the token API.
pub const TOKENS_PATH: &str = "/v1/acl/tokens";

/// Arguments of `hyphae acl`.
#[derive(Debug, Args)]
pub struct AclArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AclCommand,
}

/// `hyphae acl` subcommands.
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Admin API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Operators' client certificates for the admin API.
    #[command(subcommand)]
    Cert(CertCommand),
}

/// Who a token or an operator certificate is for, what it may do, and for how long.
#[derive(Debug, Args)]
pub struct Grant {
    /// Its name: who uses it, as the audit log shows (a lower-case DNS label).
    pub name: String,
    /// What it may do: `read`, `write` (policies) or `admin` (membership, tokens).
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// How long it works (`1h`, `720h`).
    #[arg(long)]
    pub ttl: Option<hyphae_policies::Duration>,
}

/// `hyphae acl cert` subcommands (each needs an admin token).
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a key here and get a client certificate for it (`operator/<name>`, with a role);
    /// write both, with the cluster's root, into a directory for `--cert-dir`. Revoke it with
    /// `hyphae acl token revoke <name>`.
    Create {
        /// Who it is for, what it may do, how long (default: the cluster's certificate
        /// lifetime).
        #[command(flatten)]
        grant: Grant,
        /// The directory to write (`ca.pem`, `node.pem`, `node-key.pem` owner-only).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `hyphae acl token` subcommands (each needs an admin token).
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token (or replace one of the same name) and print its secret, once.
    Create {
        /// Who it is for, what it may do, how long (forever when no `--ttl`).
        #[command(flatten)]
        grant: Grant,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List tokens: name, role, expiry (never their secrets).
    List(ListArgs),
    /// Revoke a token on every node at once.
    Revoke(RevokeArgs),
}

/// Arguments of a `list` of tokens.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Where the control plane is.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of a `revoke` of one token.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's name.
    pub name: String,
    /// Where the control plane is.
    #[command(flatten)]
    pub server: ServerArgs,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

/// Runs `hyphae acl ...`.
pub fn run(args: &AclArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    let command = match &args.command {
        AclCommand::Token(command) => command,
        AclCommand::Cert(CertCommand::Create {
            grant,
            out: dir,
            server,
        }) => return create_certificate(server, grant, dir, out),
    };
    match command {
        TokenCommand::Create { grant, server } => {
            let Grant { name, role, ttl } = grant;
            let body = serde_json::json!({ "name": name, "role": role, "ttl": ttl });
            create_secret(server, TOKENS_PATH, &body, out)
        }
        TokenCommand::List(ListArgs { output, server }) => {
            let tokens: Vec<TokenView> = list(server, TOKENS_PATH)?;
            output.write(out, &tokens, tokens_table)
        }
        TokenCommand::Revoke(RevokeArgs { name, server }) => {
            revoke(server, TOKENS_PATH, name, "token", out)
        }
    }
}

/// Path of the operator certificate API.
pub const CERTIFICATES_PATH: &str = "/v1/acl/certificates";

/// Makes a key, asks for its certificate as the operator `grant` names, and writes both with
/// the root into `dir`.
fn create_certificate(
    server: &ServerArgs,
    grant: &Grant,
    dir: &std::path::Path,
    out: &mut dyn std::io::Write,
) -> Result<Outcome> {
    let Grant { name, role, ttl } = grant;
    let (key, csr) = hyphae_policies::tls::join::key_and_request()?;
    let body = serde_json::json!({ "name": name, "role": role, "ttl": ttl, "csrPem": csr });
    let answer = server
        .client()?
        .expect_ok("POST", CERTIFICATES_PATH, &body.to_string())?;
    let joined: crate::wire::Joined = serde_json::from_value(answer)
        .context("the answer to POST /v1/acl/certificates is not in the expected form")?;
    let chain = joined.chain_pem();
    hyphae_policies::tls::files::CertificateFiles::new(dir.to_path_buf()).save(
        Some(&joined.ca_pem),
        &chain,
        &key,
    )?;
    writeln!(
        out,
        "wrote {} for {} (use it with --cert-dir or HYPHAE_CERT_DIR)",
        dir.display(),
        joined.identities.join(", ")
    )?;
    Ok(Outcome::Success)
}

/// POSTs `body` to `path`, which creates something with a secret, and prints the secret: once,
/// on stdout only.
pub(super) fn create_secret(
    server: &ServerArgs,
    path: &str,
    body: &serde_json::Value,
    out: &mut dyn std::io::Write,
) -> Result<Outcome> {
    let answer = server
        .client()?
        .expect_ok("POST", path, &body.to_string())?;
    let secret = answer["secret"]
        .as_str()
        .with_context(|| format!("the answer to POST {path} holds no secret"))?;
    writeln!(out, "{secret}")?;
    Ok(Outcome::Success)
}

/// GETs the list at `path`.
pub(super) fn list<T: serde::de::DeserializeOwned>(
    server: &ServerArgs,
    path: &str,
) -> Result<Vec<T>> {
    let answer = server.client()?.expect_ok("GET", path, "")?;
    serde_json::from_value(answer)
        .with_context(|| format!("the answer to GET {path} is not in the expected form"))
}

/// DELETEs `path/name` and says so.
pub(super) fn revoke(
    server: &ServerArgs,
    path: &str,
    name: &str,
    what: &str,
    out: &mut dyn std::io::Write,
) -> Result<Outcome> {
    server
        .client()?
        .expect_ok("DELETE", &format!("{path}/{name}"), "")?;
    writeln!(out, "revoked {what} `{name}`")?;
    Ok(Outcome::Success)
}

/// Tokens as `NAME ROLE EXPIRES REVISION` (expiry as the time left, `never` or `expired`).
fn tokens_table(tokens: &[TokenView]) -> String {
    let now = crate::tokens::now_ms();
    table_of(&["NAME", "ROLE", "EXPIRES", "REVISION"], tokens, |token| {
        vec![
            token.name.clone(),
            token.role.name().to_string(),
            expires(token.expires_at_ms, now),
            token.revision.to_string(),
        ]
    })
}

/// An expiry for a table: `never`, `expired`, or the time left.
pub fn expires(at_ms: Option<u64>, now_ms: u64) -> String {
    match at_ms {
        None => "never".to_string(),
        Some(at) if at <= now_ms => "expired".to_string(),
        Some(at) => format!(
            "in {}",
            hyphae_policies::Duration::from_secs((at - now_ms) / 1000)
        ),
    }
}
