//! `hyphae validate`: reads policy files and prints every problem, compiler-style or as JSON.
//! Never touches a running system.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use hyphae_policies::{Completeness, LoadOptions, Report, load_paths};
use serde::Serialize;

use super::Outcome;

/// Arguments of `hyphae validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files or directories (every `.yaml`/`.yml` under them, recursively).
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Treat the files as the whole configuration: references to services no file defines
    /// become errors instead of warnings.
    #[arg(long)]
    pub complete: bool,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `FILE:LINE:COL: error: ...` with a caret under the fault.
    Text,
    /// One JSON document, for scripts and editors.
    Json,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    errors: usize,
    warnings: usize,
    files: &'a [String],
    objects: Vec<JsonObject<'a>>,
    diagnostics: &'a [hyphae_policies::Diagnostic],
}

#[derive(Serialize)]
struct JsonObject<'a> {
    kind: &'static str,
    name: &'a str,
    file: &'a str,
    document: usize,
}

/// Runs `hyphae validate`.
pub fn run(args: &ValidateArgs, out: &mut dyn std::io::Write) -> anyhow::Result<Outcome> {
    let options = LoadOptions {
        completeness: if args.complete {
            Completeness::Complete
        } else {
            Completeness::Partial
        },
        ..LoadOptions::default()
    };
    let report = load_paths(&args.paths, options);
    match args.format {
        Format::Text => write_text(&report, out)?,
        Format::Json => write_json(&report, out)?,
    }
    Ok(if report.has_errors() {
        Outcome::Invalid
    } else {
        Outcome::Success
    })
}

fn write_text(report: &Report, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for diagnostic in &report.diagnostics {
        writeln!(out, "{diagnostic}")?;
    }
    let files = plural(report.files.len(), "file");
    if report.has_errors() {
        writeln!(
            out,
            "invalid: {}, {} in {files}",
            plural(report.error_count(), "error"),
            plural(report.warning_count(), "warning"),
        )
    } else {
        writeln!(
            out,
            "ok: {} in {files}, {}",
            plural(report.objects.len(), "object"),
            plural(report.warning_count(), "warning"),
        )
    }
}

fn write_json(report: &Report, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let json = JsonReport {
        valid: !report.has_errors(),
        errors: report.error_count(),
        warnings: report.warning_count(),
        files: &report.files,
        objects: report
            .objects
            .iter()
            .map(|o| JsonObject {
                kind: o.policy.kind().name(),
                name: o.policy.name(),
                file: &o.file,
                document: o.document,
            })
            .collect(),
        diagnostics: &report.diagnostics,
    };
    serde_json::to_writer_pretty(&mut *out, &json)?;
    writeln!(out)
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
