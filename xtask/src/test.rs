//! `cargo xtask test`: the README's test command. Installs what tests need on a fresh machine,
//! then runs every test. CI calls exactly this.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Python packages the tests use as real peers: grpcio is the gRPC client and server in the
/// agent's gRPC and conformance tests; hypercorn (with its `h2` and `h11`) the strict HTTP/1.1
/// and h2c server of the agent's fidelity and conformance tests; websockets the WebSocket
/// server and client of the conformance test.
const PYTHON_PACKAGES: [(&str, &str); 3] = [
    ("grpc", "grpcio"),
    ("hypercorn", "hypercorn"),
    ("websockets", "websockets"),
];

/// Command-line clients the agent's conformance test drives, each with the Debian/Ubuntu
/// package that has it: curl, and nghttp2-client's nghttp and h2load.
const CLIENT_TOOLS: [(&str, &str); 3] = [
    ("curl", "curl"),
    ("nghttp", "nghttp2-client"),
    ("h2load", "nghttp2-client"),
];

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
    install_client_tools()?;
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

/// Installs the missing [`CLIENT_TOOLS`] with apt-get (after an `apt-get update`), only when one
/// is missing; with sudo when not run as root.
fn install_client_tools() -> Result<()> {
    let mut missing: Vec<&str> = CLIENT_TOOLS
        .iter()
        .filter(|(tool, _)| {
            // `--version` exits 0 on each of them; a tool that cannot start is missing.
            !Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|output| output.status.success())
        })
        .map(|(_, package)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {} for the tests", missing.join(" "));
    let root = util::capture(Command::new("id").arg("-u"))
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
    let apt = |args: &[&str]| {
        let mut command = match root {
            true => Command::new("apt-get"),
            false => {
                let mut sudo = Command::new("sudo");
                sudo.arg("apt-get");
                sudo
            }
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    util::run(&mut apt(&["update", "-q"]))
        .context("apt-get is needed to install curl and nghttp2-client")?;
    util::run(apt(&["install", "-y", "-q", "--no-install-recommends"]).args(missing))
}
