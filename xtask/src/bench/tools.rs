//! The programs the proxy bench drives (haproxy, nginx, wrk, h2load): found on this machine, or
//! installed from apt first. Never installs anything the bench does not run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::util;

/// Programs the bench drives and the Debian packages that hold them.
const TOOLS: [(&str, &str); 4] = [
    ("haproxy", "haproxy"),
    ("nginx", "nginx"),
    ("wrk", "wrk"),
    ("h2load", "nghttp2-client"),
];
/// Where root's programs live when `PATH` lacks them (haproxy and nginx are in `/usr/sbin`).
const SYSTEM_BIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

/// The programs the bench runs, found on this machine.
pub struct Tools {
    /// haproxy, one of the two proxies the agent is compared with.
    pub haproxy: PathBuf,
    /// nginx: the backend, and the other proxy.
    pub nginx: PathBuf,
    /// The HTTP/1.1 load generator.
    pub wrk: PathBuf,
    /// The HTTP/2 load generator (from nghttp2).
    pub h2load: PathBuf,
    /// The fixed-rate load generator, coordinated-omission corrected (from crates.io).
    pub oha: PathBuf,
}

impl Tools {
    /// Finds the tools, installing the missing ones from apt first (`apt-get update` once).
    pub fn ensure() -> Result<Tools> {
        let missing: Vec<&str> = TOOLS
            .iter()
            .filter(|(program, _)| find_program(program).is_none())
            .map(|(_, package)| *package)
            .collect();
        if !missing.is_empty() {
            eprintln!("xtask: installing {} for the bench", missing.join(" "));
            apt_install(&missing)?;
        }
        let require = |program: &str| {
            find_program(program)
                .with_context(|| format!("`{program}` is still not on PATH after installing it"))
        };
        Ok(Tools {
            haproxy: require("haproxy")?,
            nginx: require("nginx")?,
            wrk: require("wrk")?,
            h2load: require("h2load")?,
            oha: oha()?,
        })
    }
}

/// oha (not packaged in Debian): on `PATH`, or built once with `cargo install` into
/// `target/bench/tools/`, at the version the figures in README were taken with.
fn oha() -> Result<PathBuf> {
    let root = util::root().join(OHA_ROOT);
    let installed = root.join("bin/oha");
    if let Some(found) =
        find_program("oha").or_else(|| installed.is_file().then_some(installed.clone()))
    {
        return Ok(found);
    }
    eprintln!("xtask: building oha {OHA_VERSION} for the bench (once)");
    util::run(
        util::cargo()
            .args([
                "install",
                "--locked",
                "--quiet",
                "oha",
                "--version",
                OHA_VERSION,
                "--root",
            ])
            .arg(&root),
    )
    .context("cargo install oha")?;
    Ok(installed)
}

/// The oha release the bench installs when none is on `PATH`.
const OHA_VERSION: &str = "1.16.0";
/// Where that oha is installed, under the workspace root.
const OHA_ROOT: &str = "target/bench/tools";

/// Installs Debian `packages` (`apt-get update` first). Needs root.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let apt = || {
        let mut command = Command::new("apt-get");
        // Progress to stderr, so stdout holds only the report.
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::io::stderr());
        command
    };
    util::run(apt().arg("update")).context("apt-get update (this needs root)")?;
    util::run(apt().args(["install", "-y"]).args(packages))
        .context("apt-get install (this needs root)")
}

/// The executable `program` on `PATH` or in the system directories.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SYSTEM_BIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
