//! `cargo xtask check-systemd`: verifies the unit files under `systemd/` with
//! `systemd-analyze verify` (any complaint fails) and reports each unit's exposure score.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Where the units expect the binaries once installed.
const INSTALLED_BIN_DIR: &str = "/usr/bin/";

/// Verifies every `*.service` under `systemd/`.
pub fn run(_args: &[String]) -> Result<()> {
    let root = util::root();
    util::run(util::cargo().args(["build", "--workspace", "--bins", "--quiet"]))?;
    let built = root.join("target/debug");
    let scratch = root.join("target/check-systemd");
    std::fs::create_dir_all(&scratch).context("create target/check-systemd")?;
    let mut units: Vec<_> = std::fs::read_dir(root.join("systemd"))
        .context("read systemd/")?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    if units.is_empty() {
        bail!("no unit files under systemd/");
    }
    for unit in units {
        let name = unit.file_name().context("unit file name")?.to_owned();
        let text =
            std::fs::read_to_string(&unit).with_context(|| format!("read {}", unit.display()))?;
        // Point ExecStart at the freshly built binaries so verify can check they run.
        let local = text.replace(INSTALLED_BIN_DIR, &format!("{}/", built.display()));
        let copy = scratch.join(&name);
        std::fs::write(&copy, local).context("write unit copy")?;
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .context("systemd-analyze is needed (apt-get install systemd)")?;
        let complaints = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if !output.status.success() || !complaints.is_empty() {
            bail!(
                "{}: systemd-analyze verify failed:\n{complaints}",
                name.to_string_lossy()
            );
        }
        let security = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(&copy)
            .output()
            .context("run systemd-analyze security")?;
        let summary = String::from_utf8_lossy(&security.stdout);
        let exposure = summary.lines().last().unwrap_or("no exposure score");
        println!(
            "{}: verify ok; {}",
            name.to_string_lossy(),
            exposure.trim_start_matches('→').trim()
        );
    }
    Ok(())
}
