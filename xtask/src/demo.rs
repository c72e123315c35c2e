//! `cargo xtask demo`: the README's first command. Builds hyphae and shows, with real binaries
//! and real files, everything it does today; fails loudly if any step misbehaves.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::util;

/// Runs the demo.
pub fn run(_args: &[String]) -> Result<()> {
    let root = util::root();
    util::run(util::cargo().args(["build", "--workspace", "--bins", "--quiet"]))?;
    let bin = root.join("target/debug");
    let hyphae = bin.join("hyphae");
    let agent = bin.join("hyphae-agent");
    let examples = root.join("policies/examples");
    let scratch = root.join("target/demo");
    std::fs::create_dir_all(&scratch).context("create target/demo")?;

    stage("1. Validate the example fleet: frontend -> catalog -> payments over two sites");
    let output = show(
        Command::new(&hyphae)
            .arg("validate")
            .arg("--complete")
            .arg(&examples),
    )?;
    ensure!(output.status.success(), "the examples should be valid");

    stage("2. A broken policy is stopped before it reaches the mesh");
    let broken = scratch.join("catalog-broken.yaml");
    std::fs::write(&broken, broken_policy()).context("write the broken example")?;
    let output = show(
        Command::new(&hyphae)
            .current_dir(&root)
            .arg("validate")
            .arg(relative(&root, &broken)),
    )?;
    ensure!(
        output.status.code() == Some(1),
        "a broken policy must exit 1"
    );
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in ["reqest", "p2c-ewmaa", "perTryTimeout", "1.5"] {
        ensure!(
            text.contains(expected),
            "the report should mention `{expected}`"
        );
    }

    stage("3. The same errors, as JSON for scripts and editors");
    let output = util::capture(
        Command::new(&hyphae)
            .current_dir(&root)
            .args(["validate", "--format", "json"])
            .arg(relative(&root, &broken)),
    )?;
    let json = String::from_utf8_lossy(&output.stdout);
    let first_lines: Vec<&str> = json.lines().take(12).collect();
    println!("{}\n  ...", first_lines.join("\n"));

    stage("4. Each host's agent checks its own configuration file");
    for name in ["web-1", "app-1", "app-2"] {
        let file = examples.join(format!("agents/{name}.yaml"));
        let output = show(
            Command::new(&agent)
                .arg("--check")
                .arg("--config")
                .arg(&file),
        )?;
        ensure!(output.status.success(), "{name}'s config should be valid");
    }

    stage("5. JSON Schema for editor completion, generated from the same types");
    let output = util::capture(Command::new(&hyphae).arg("schema"))?;
    ensure!(output.status.success(), "hyphae schema failed");
    let schema_file = scratch.join("policy.schema.json");
    std::fs::write(&schema_file, &output.stdout).context("write the schema")?;
    println!(
        "wrote {} ({} bytes); point your editor's YAML language server at it",
        relative(&root, &schema_file),
        output.stdout.len()
    );

    // The clusters and fleets wait and call with the test-support library, which is async.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a runtime")?;
    stage(
        "6. A control-plane cluster: three Raft nodes, policies applied with the CLI, a leader killed",
    );
    runtime.block_on(crate::cluster::run(&bin, &scratch, &examples))?;

    stage(
        "7. A fleet on this machine: agents register with the control plane, calls by name (DNS, virtual IP), a crash healed, a lease lapsed",
    );
    runtime.block_on(crate::fleet::run(&bin, &scratch))?;

    stage("Done");
    println!(
        "Every step above ran the real hyphae binaries, every hop over TLS: the control plane's \
         port, and mutual TLS between agents; the frontend knew only the name catalog.mesh (see \
         README.md, \"Services by name with no setup\")."
    );
    Ok(())
}

fn stage(title: &str) {
    println!("\n=== {title} ===");
}

/// Runs a command, prints what it printed, and returns its output.
fn show(command: &mut Command) -> Result<std::process::Output> {
    println!(
        "$ {}",
        util::describe(command).replace(&util::root().display().to_string(), ".")
    );
    let output = util::capture(command)?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if output.status.code().is_none() {
        bail!("{} was killed", util::describe(command));
    }
    Ok(output)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The catalog policy from the examples, with four typical mistakes.
fn broken_policy() -> &'static str {
    "kind: ServicePolicy
metadata:
  name: catalog
spec:
  timeouts:
    reqest: 5s
  retries:
    attempts: 3
    perTryTimeout: 30s
    budget:
      ratio: 1.5
  loadBalancer:
    policy: p2c-ewmaa
"
}
