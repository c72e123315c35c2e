//! `hyphae cluster status|members|add|remove|transfer-leader`: the cluster as the node you ask
//! sees it, and changes to its members and leader.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::get::Output;
use super::{Outcome, ServerArgs};

/// Arguments of `hyphae cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// `hyphae cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, indexes and members.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Add a node (started without --init) as a voter: it joins as a learner, catches up, then
    /// votes.
    Add {
        /// Its node id (`spec.id` in its configuration).
        id: u64,
        /// Its `host:port`.
        address: String,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a node from the voters.
    Remove {
        /// Its node id.
        id: u64,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Members with their address, role and replication lag (as the leader sees it).
    Members {
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Hand leadership to a voter (default: the most caught-up one), e.g. before restarting
    /// the leader's host.
    TransferLeader {
        /// The voter to lead next.
        id: Option<u64>,
        /// Where the control plane is.
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Runs `hyphae cluster ...`.
pub fn run(args: &ClusterArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    let (status, output) = match &args.command {
        ClusterCommand::Status { output, server } => (
            server.client()?.expect_ok("GET", "/v1/cluster", "")?,
            *output,
        ),
        ClusterCommand::Add {
            id,
            address,
            server,
        } => {
            let body = serde_json::json!({ "id": id, "address": address }).to_string();
            let status = server
                .client()?
                .expect_ok("POST", "/v1/cluster/members", &body)?;
            writeln!(out, "node {id} ({address}) is a voter")?;
            (status, Output::Table)
        }
        ClusterCommand::Remove { id, server } => {
            let path = format!("/v1/cluster/members/{id}");
            let status = server.client()?.expect_ok("DELETE", &path, "")?;
            writeln!(out, "node {id} removed")?;
            (status, Output::Table)
        }
        ClusterCommand::Members { server } => {
            return members(server, out);
        }
        ClusterCommand::TransferLeader { id, server } => {
            let body = serde_json::json!({ "to": id }).to_string();
            let status =
                server
                    .client()?
                    .expect_ok("POST", "/v1/cluster/transfer-leader", &body)?;
            writeln!(out, "node {} leads now", status["leader"])?;
            (status, Output::Table)
        }
    };
    match output {
        Output::Table => {}
        Output::Json => {
            writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
            return Ok(Outcome::Success);
        }
        Output::Yaml => {
            let yaml = serde_saphyr::to_string(&status).context("encode as YAML")?;
            out.write_all(yaml.as_bytes())?;
            return Ok(Outcome::Success);
        }
    }
    writeln!(
        out,
        "node {} ({}): {}; leader {}; term {}; last log {}; committed {}; applied {}",
        status["id"],
        status["name"].as_str().unwrap_or_default(),
        status["state"].as_str().unwrap_or_default(),
        status["leader"],
        status["term"],
        status["lastLogIndex"],
        status["commitIndex"],
        status["lastApplied"]
    )?;
    writeln!(out, "{:<6} {:<28} ROLE", "ID", "ADDRESS")?;
    let leader = status["leader"].as_u64();
    for member in status["members"].as_array().into_iter().flatten() {
        let id = member["id"].as_u64();
        let role = if id == leader { "leader" } else { role(member) };
        writeln!(
            out,
            "{:<6} {:<28} {role}",
            id.unwrap_or_default(),
            member["address"].as_str().unwrap_or_default()
        )?;
    }
    Ok(Outcome::Success)
}

fn role(member: &serde_json::Value) -> &'static str {
    if member["voter"].as_bool() == Some(false) {
        "learner"
    } else {
        "voter"
    }
}

/// `hyphae cluster members`: the table comes from the leader, which alone knows each member's
/// lag; when the leader cannot be reached, the node asked answers without lag.
fn members(server: &ServerArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    let mut status = server.client()?.expect_ok("GET", "/v1/cluster", "")?;
    let leader = status["leader"].as_u64();
    if status["state"] != "Leader"
        && let Some(address) = status["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"].as_u64() == leader && leader.is_some())
            .and_then(|m| m["address"].as_str())
        && let Ok(from_leader) = server
            .client_for(address)
            .and_then(|c| c.expect_ok("GET", "/v1/cluster", ""))
    {
        status = from_leader;
    }
    writeln!(
        out,
        "{:<6} {:<28} {:<8} {:<7} LAG",
        "ID", "ADDRESS", "ROLE", "LEADER"
    )?;
    for member in status["members"].as_array().into_iter().flatten() {
        let id = member["id"].as_u64();
        let lag = member["lag"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |l| l.to_string());
        writeln!(
            out,
            "{:<6} {:<28} {:<8} {:<7} {lag}",
            id.unwrap_or_default(),
            member["address"].as_str().unwrap_or_default(),
            role(member),
            if id.is_some() && id == leader {
                "*"
            } else {
                ""
            },
        )?;
    }
    Ok(Outcome::Success)
}
