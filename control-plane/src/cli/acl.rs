//! `hyphae acl token create|list|revoke`: the admin API's tokens. A new token's secret is
//! printed once, on stdout only; the cluster keeps its hash.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::get::Output;
use super::table::table;
use super::{Outcome, ServerArgs};
use crate::tokens::{Role, TokenView};
use crate::wire::CreatedToken;

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
}

/// `hyphae acl token` subcommands (each needs an admin token).
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token (or replace one of the same name) and print its secret, once.
    Create {
        /// Its name: who uses it, as the audit log shows (a lower-case DNS label).
        name: String,
        /// What it may do: `read`, `write` (policies) or `admin` (membership, tokens).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// How long it works (`1h`, `720h`); forever when absent.
        #[arg(long)]
        ttl: Option<hyphae_policies::Duration>,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List tokens: name, role, expiry (never their secrets).
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a token on every node at once.
    Revoke {
        /// The token's name.
        name: String,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

/// Runs `hyphae acl ...`.
pub fn run(args: &AclArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    let AclCommand::Token(command) = &args.command;
    match command {
        TokenCommand::Create {
            name,
            role,
            ttl,
            server,
        } => {
            let body = serde_json::json!({ "name": name, "role": role, "ttl": ttl }).to_string();
            let answer = server.client()?.expect_ok("POST", TOKENS_PATH, &body)?;
            let created: CreatedToken = serde_json::from_value(answer)
                .context("the control plane's answer is not a created token")?;
            writeln!(out, "{}", created.secret)?;
            Ok(Outcome::Success)
        }
        TokenCommand::List { output, server } => {
            let answer = server.client()?.expect_ok("GET", TOKENS_PATH, "")?;
            let tokens: Vec<TokenView> = serde_json::from_value(answer)
                .context("the control plane's token list is not in the expected form")?;
            let text = match output {
                Output::Table => tokens_table(&tokens),
                Output::Json => serde_json::to_string_pretty(&tokens)? + "\n",
                Output::Yaml => serde_saphyr::to_string(&tokens).context("encode as YAML")?,
            };
            out.write_all(text.as_bytes())?;
            Ok(Outcome::Success)
        }
        TokenCommand::Revoke { name, server } => {
            server
                .client()?
                .expect_ok("DELETE", &format!("{TOKENS_PATH}/{name}"), "")?;
            writeln!(out, "revoked token `{name}`")?;
            Ok(Outcome::Success)
        }
    }
}

/// Tokens as `NAME ROLE EXPIRES REVISION` (expiry as the time left, `never` or `expired`).
fn tokens_table(tokens: &[TokenView]) -> String {
    let now = crate::tokens::now_ms();
    let rows = tokens
        .iter()
        .map(|token| {
            vec![
                token.name.clone(),
                token.role.name().to_string(),
                expires(token.expires_at_ms, now),
                token.revision.to_string(),
            ]
        })
        .collect();
    table(&["NAME", "ROLE", "EXPIRES", "REVISION"], rows)
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
