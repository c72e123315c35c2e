//! `hyphae get|delete`: read stored policies (a table, JSON or their YAML) and delete them.

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

use hyphae_policies::Kind;

use super::schema::parse_kind;
use super::{Outcome, ReadArgs, ServerArgs};

/// How to print what was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns for people.
    Table,
    /// The API's JSON.
    Json,
    /// YAML: the stored documents themselves for policies, the records for the registry.
    Yaml,
}

impl Output {
    /// Prints `records` in this format: `table` lays them out for people.
    pub fn write<T: serde::Serialize>(
        self,
        out: &mut dyn std::io::Write,
        records: &[T],
        table: fn(&[T]) -> String,
    ) -> Result<Outcome> {
        let text = match self {
            Output::Table => table(records),
            Output::Json => serde_json::to_string_pretty(records)? + "\n",
            Output::Yaml => serde_saphyr::to_string(&records)
                .map_err(|e| anyhow::anyhow!("encode as YAML: {e}"))?,
        };
        out.write_all(text.as_bytes())?;
        Ok(Outcome::Success)
    }
}

/// Arguments of `hyphae get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// A kind (`ServicePolicy`, `Route`...); without it, every policy.
    #[arg(value_parser = parse_kind)]
    pub kind: Option<Kind>,
    /// A name within the kind.
    pub name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Where to read from, and whether a stale read will do.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `hyphae delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The kind.
    #[arg(value_parser = parse_kind)]
    pub kind: Kind,
    /// The name.
    pub name: String,
    /// Where the control plane is.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Runs `hyphae get`.
pub fn run_get(args: &GetArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    let client = args.read.server.client()?;
    // A kind and a name read one policy; anything less, a list.
    let (path, one) = match (&args.kind, &args.name) {
        (Some(kind), Some(name)) => (format!("/v1/policies/{kind}/{name}"), true),
        (Some(kind), None) => (format!("/v1/policies?kind={kind}"), false),
        (None, _) => ("/v1/policies".to_string(), false),
    };
    let answer = client.expect_ok("GET", &args.read.path(&path), "")?;
    let policies = if one { vec![answer] } else { list(&answer)? };
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&policies)?)?,
        Output::Yaml => {
            for policy in &policies {
                writeln!(out, "---")?;
                write!(out, "{}", policy["source"].as_str().unwrap_or_default())?;
            }
        }
        Output::Table => {
            writeln!(out, "{:<18} {:<32} {:>8}", "KIND", "NAME", "REVISION")?;
            for policy in &policies {
                writeln!(
                    out,
                    "{:<18} {:<32} {:>8}",
                    policy["kind"].as_str().unwrap_or_default(),
                    policy["name"].as_str().unwrap_or_default(),
                    policy["revision"]
                )?;
            }
        }
    }
    Ok(Outcome::Success)
}

fn list(value: &Value) -> Result<Vec<Value>> {
    match value.as_array() {
        Some(items) => Ok(items.clone()),
        None => bail!("the control plane answered with something other than a list"),
    }
}

/// Runs `hyphae delete`.
pub fn run_delete(args: &DeleteArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    let client = args.server.client()?;
    let answer = client.expect_ok(
        "DELETE",
        &format!("/v1/policies/{}/{}", args.kind, args.name),
        "",
    )?;
    if answer["existed"].as_bool() == Some(true) {
        writeln!(
            out,
            "deleted {}/{} at revision {}",
            args.kind, args.name, answer["revision"]
        )?;
        Ok(Outcome::Success)
    } else {
        writeln!(out, "no {} named `{}`", args.kind, args.name)?;
        Ok(Outcome::Invalid)
    }
}
