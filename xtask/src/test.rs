//! `cargo xtask test`: the README's test command. Installs what tests need on a fresh machine,
//! then runs every test. CI calls exactly this.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Python packages the tests use as real peers: grpcio is the gRPC client and server in the
/// agent's gRPC test; hypercorn (with its `h2`) the strict HTTP/1.1 and h2c server of the
/// agent's fidelity test.
const PYTHON_PACKAGES: [(&str, &str); 2] = [("grpc", "grpcio"), ("hypercorn", "hypercorn")];

/// Runs every test of the workspace.
pub fn run(args: &[String]) -> Result<()> {
    install_test_tools()?;
    // Tests in integration/ run the other crates' binaries: build them all first.
    util::run(util::cargo().args(["build", "--workspace", "--bins", "--locked"]))?;
    util::run(
        util::cargo()
            .args(["test", "--workspace", "--locked"])
            .args(args),
    )
}

/// Installs missing test peers, idempotently.
fn install_test_tools() -> Result<()> {
    for (module, package) in PYTHON_PACKAGES {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .context("python3 is needed by the tests")?
            .status
            .success();
        if present {
            continue;
        }
        eprintln!("xtask: installing {package} for the tests");
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                package,
            ])
            .status()
            .context("cannot run pip")?;
        if !status.success() {
            bail!("pip install {package} failed");
        }
    }
    Ok(())
}
