//! `hyphae token create|list|revoke`: join tokens, which let a new host get its node
//! certificate. A new token's secret is printed once, on stdout only; an admin token is needed.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::acl::{ListArgs, RevokeArgs};
use super::table::table_of;
use super::{Outcome, ServerArgs};
use crate::join_tokens::JoinTokenView;

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
        /// A token for control-plane nodes (`hyphae-control-plane --join-token-file`) rather
        /// than for agents.
        #[arg(long, conflicts_with = "site")]
        control_plane: bool,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List join tokens: name, uses left, expiry, site (never their secrets).
    List(ListArgs),
    /// Revoke a join token.
    Revoke(RevokeArgs),
}

/// Runs `hyphae token ...`.
pub fn run(args: &TokenArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    match &args.command {
        TokenCommand::Create {
            name,
            ttl,
            uses,
            site,
            control_plane,
            server,
        } => {
            let body = serde_json::json!({
                "name": name, "ttl": ttl, "uses": uses, "site": site, "controlPlane": control_plane,
            });
            super::acl::create_secret(server, JOIN_TOKENS_PATH, &body, out)
        }
        TokenCommand::List(ListArgs { output, server }) => {
            let tokens: Vec<JoinTokenView> = super::acl::list(server, JOIN_TOKENS_PATH)?;
            output.write(out, &tokens, join_tokens_table)
        }
        TokenCommand::Revoke(RevokeArgs { name, server }) => {
            super::acl::revoke(server, JOIN_TOKENS_PATH, name, "join token", out)
        }
    }
}

/// Join tokens as `NAME USES EXPIRES SITE`.
fn join_tokens_table(tokens: &[JoinTokenView]) -> String {
    let now = crate::tokens::now_ms();
    table_of(&["NAME", "USES", "EXPIRES", "SITE"], tokens, |token| {
        vec![
            token.name.clone(),
            token.uses_left.to_string(),
            super::acl::expires(Some(token.expires_at_ms), now),
            token.site.clone().unwrap_or_else(|| "any".to_string()),
        ]
    })
}
