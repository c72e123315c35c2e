//! `hyphae apply -f FILE_OR_DIR`: validates locally (positions in your files), then writes every
//! object in one atomic request; `--dry-run` shows what would change, as a diff.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use hyphae_policies::{Completeness, LoadOptions, load_paths};

use super::diff::line_diff;
use super::{Outcome, ServerArgs};

/// Arguments of `hyphae apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Files or directories of policies.
    #[arg(
        short = 'f',
        long = "file",
        required = true,
        value_name = "FILE_OR_DIR"
    )]
    pub paths: Vec<PathBuf>,
    /// Show what would change and apply nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the control plane is.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Runs `hyphae apply`.
pub fn run(args: &ApplyArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    let report = load_paths(
        &args.paths,
        LoadOptions {
            completeness: Completeness::Partial,
            ..LoadOptions::default()
        },
    );
    for diagnostic in &report.diagnostics {
        write!(out, "{diagnostic}")?;
    }
    if report.has_errors() {
        writeln!(out, "nothing applied: {} error(s)", report.error_count())?;
        return Ok(Outcome::Invalid);
    }
    let mut body = String::new();
    let mut objects = Vec::new();
    // Node configuration files in the same tree are skipped: each node reads its own.
    for object in report
        .objects
        .iter()
        .filter(|o| !o.policy.kind().is_local_config())
    {
        let source = serde_saphyr::to_string(&object.policy)?;
        body.push_str("---\n");
        body.push_str(&source);
        objects.push((
            object.policy.kind().name(),
            object.policy.name().to_string(),
            source,
        ));
    }
    let local = report.objects.len() - objects.len();
    if local > 0 {
        writeln!(
            out,
            "skipped {local} node config document(s) (AgentConfig, ControlPlaneConfig): each node reads its own file"
        )?;
    }
    if objects.is_empty() {
        writeln!(
            out,
            "nothing to apply: no cluster policies in the given files"
        )?;
        return Ok(Outcome::Invalid);
    }
    let client = args.server.client()?;
    if args.dry_run {
        client.expect_ok("POST", "/v1/policies?dryRun=true", &body)?;
        for (kind, name, source) in &objects {
            let stored = client.send("GET", &format!("/v1/policies/{kind}/{name}"), "")?;
            match stored.body["source"].as_str() {
                Some(old) if old == source => writeln!(out, "{kind}/{name}: unchanged")?,
                Some(old) => {
                    writeln!(out, "{kind}/{name}: would change")?;
                    for line in line_diff(old, source)
                        .iter()
                        .filter(|l| !l.starts_with("  "))
                    {
                        writeln!(out, "    {line}")?;
                    }
                }
                None => writeln!(out, "{kind}/{name}: would be created")?,
            }
        }
        writeln!(out, "dry run: nothing applied")?;
        return Ok(Outcome::Success);
    }
    let answer = client.expect_ok("POST", "/v1/policies", &body)?;
    writeln!(
        out,
        "applied {} object(s) at revision {} ({} created, {} updated, {} unchanged)",
        objects.len(),
        answer["revision"],
        answer["created"],
        answer["updated"],
        answer["unchanged"].as_u64().unwrap_or(0)
    )?;
    Ok(Outcome::Success)
}
