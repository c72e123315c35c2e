//! What both benches' reports share: rounding, the commit and machine they ran on, tool versions,
//! paths in messages, and writing `target/bench/<name>.json`. Never measures anything.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::util;

/// Decimal places of seconds in the JSON reports: CPU times are whole 1/100 s clock ticks.
pub const SECONDS_DECIMALS: i32 = 2;
/// Decimal places of milliseconds in the JSON reports: the tools measure whole microseconds.
pub const MILLIS_DECIMALS: i32 = 3;

/// `value` rounded to `decimals` places, so the JSON reports hold no float noise such as
/// `0.48999999999999977` (CPU times are whole clock ticks to begin with).
pub fn rounded(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

/// The commit the bench ran on, `-dirty` when the tree had changes; `unknown` without git.
pub fn commit() -> String {
    let git = |args: &[&str]| {
        util::capture(Command::new("git").current_dir(util::root()).args(args))
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match (
        git(&["rev-parse", "--short", "HEAD"]),
        git(&["status", "--porcelain"]),
    ) {
        (Some(hash), Some(changes)) if !changes.is_empty() => format!("{hash}-dirty"),
        (Some(hash), _) => hash,
        (None, _) => "unknown".to_string(),
    }
}

/// The machine the bench ran on: CPUs and kernel, for the JSON reports.
pub fn machine() -> Value {
    json!({
        "cpus": std::thread::available_parallelism().map(usize::from).ok(),
        "kernel": first_line(Command::new("uname").arg("-r")),
    })
}

/// The first non-empty line a command prints (stdout, then stderr), for version strings;
/// `unknown` when it cannot run — versions are informational.
pub fn first_line(command: &mut Command) -> String {
    util::capture(command)
        .ok()
        .and_then(|output| {
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            text.lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Writes `report` as `<dir>/<name>` (pretty JSON) and says where, after the table.
pub fn write_json(dir: &Path, name: &str, report: &Value) -> Result<()> {
    let file = dir.join(name);
    let text = serde_json::to_string_pretty(report).with_context(|| format!("encode {name}"))?;
    write(&file, &(text + "\n"))?;
    println!("\nwrote {}", relative(&file));
    Ok(())
}

/// Writes a file the bench generates: a config, raw output, a report.
pub fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// `path` relative to the workspace root, for messages.
pub fn relative(path: &Path) -> String {
    let root = util::root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}
