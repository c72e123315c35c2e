//! `hyphae token create|list|revoke`: join tokens, which let a new host get its node
//! certificate. A new token's secret is printed once, on stdout only; an admin token is needed.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::get::Output;
use super::table::table;
use super::{Outcome, ServerArgs};
use crate::join_tokens::JoinTokenView;
use crate::wire::CreatedJoinToken;

/// Path of the join-token API.
pub const JOIN_TOKENS_PATH: &str = "/v1/join-tokens";

/// Arguments of `hyphae token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// `hyphae token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token and print its secret, once.
    Create {
        /// Its name (default: a generated one).
        #[arg(long)]
        name: Option<String>,
        /// How long it works.
        #[arg(long, default_value = "1h")]
        ttl: hyphae_policies::Duration,
        /// How many hosts may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// The only site it admits.
        #[arg(long)]
        site: Option<String>,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List join tokens: name, uses left, expiry, site (never their secrets).
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a join token.
    Revoke {
        /// The token's name.
        name: String,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Runs `hyphae token ...`.
pub fn run(args: &TokenArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    match &args.command {
        TokenCommand::Create {
            name,
            ttl,
            uses,
            site,
            server,
        } => {
            let body = serde_json::json!({ "name": name, "ttl": ttl, "uses": uses, "site": site })
                .to_string();
            let answer = server
                .client()?
                .expect_ok("POST", JOIN_TOKENS_PATH, &body)?;
            let created: CreatedJoinToken = serde_json::from_value(answer)
                .context("the control plane's answer is not a created join token")?;
            writeln!(out, "{}", created.secret)?;
            Ok(Outcome::Success)
        }
        TokenCommand::List { output, server } => {
            let answer = server.client()?.expect_ok("GET", JOIN_TOKENS_PATH, "")?;
            let tokens: Vec<JoinTokenView> = serde_json::from_value(answer)
                .context("the control plane's join-token list is not in the expected form")?;
            let text = match output {
                Output::Table => join_tokens_table(&tokens),
                Output::Json => serde_json::to_string_pretty(&tokens)? + "\n",
                Output::Yaml => serde_saphyr::to_string(&tokens).context("encode as YAML")?,
            };
            out.write_all(text.as_bytes())?;
            Ok(Outcome::Success)
        }
        TokenCommand::Revoke { name, server } => {
            server
                .client()?
                .expect_ok("DELETE", &format!("{JOIN_TOKENS_PATH}/{name}"), "")?;
            writeln!(out, "revoked join token `{name}`")?;
            Ok(Outcome::Success)
        }
    }
}

/// Join tokens as `NAME USES EXPIRES SITE`.
fn join_tokens_table(tokens: &[JoinTokenView]) -> String {
    let now = crate::tokens::now_ms();
    let rows = tokens
        .iter()
        .map(|token| {
            vec![
                token.name.clone(),
                token.uses_left.to_string(),
                super::acl::expires(Some(token.expires_at_ms), now),
                token.site.clone().unwrap_or_else(|| "any".to_string()),
            ]
        })
        .collect();
    table(&["NAME", "USES", "EXPIRES", "SITE"], rows)
}
