//! The demo's control plane: a three-node Raft cluster on this machine, policies applied with
//! the `hyphae` CLI, the leader killed and replaced, and the dead node restarted and caught up.
//! Every process it starts is stopped when it returns, even on error.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::local_cluster::{LocalCluster, NODES, PATIENCE, POLL_INTERVAL, run_hyphae};

/// Runs the scenario with the binaries in `bin`, keeping data under `scratch`.
pub fn run(bin: &Path, scratch: &Path, examples: &Path) -> Result<()> {
    let mut cluster = LocalCluster::start(bin, &scratch.join("control-plane"))?;
    let all: Vec<usize> = (1..=NODES).collect();
    let servers = cluster.servers().to_vec();
    let hyphae = cluster.hyphae();
    let leader = cluster.wait_for_leader(&all)?;
    println!("three nodes up; node {leader} leads");
    show(&hyphae, &servers[0], &["cluster", "status"])?;

    println!("\n-- apply the example policies through node 2 (a follower forwards to the leader)");
    let examples = examples.display().to_string();
    let output = show(&hyphae, &servers[1], &["apply", "-f", &examples])?;
    ensure!(output.contains("applied"), "apply should succeed");
    show(&hyphae, &servers[2], &["get", "--stale"])?;

    println!("\n-- kill the leader (node {leader}, SIGKILL); the others elect a new one");
    cluster.kill(leader);
    let survivors: Vec<usize> = all.iter().copied().filter(|&id| id != leader).collect();
    let new_leader = cluster.wait_for_leader(&survivors)?;
    ensure!(new_leader != leader, "a new leader should take over");
    println!("node {new_leader} leads now");
    let survivor = cluster.server(survivors[0]).to_string();
    let change = scratch.join("control-plane").join("catalog-change.yaml");
    std::fs::write(
        &change,
        "kind: ServicePolicy\nmetadata: {name: catalog}\nspec:\n  retries: {attempts: 1}\n",
    )
    .context("write a change")?;
    let change = change.display().to_string();
    show(&hyphae, &survivor, &["apply", "-f", &change, "--dry-run"])?;
    let output = show(&hyphae, &survivor, &["apply", "-f", &change])?;
    ensure!(
        output.contains("applied"),
        "writes should go on with two of three nodes"
    );

    println!("\n-- restart node {leader}: it catches up from the others");
    cluster.restart(leader)?;
    let restarted = cluster.server(leader);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let output = run_hyphae(
            &hyphae,
            restarted,
            &["get", "ServicePolicy", "catalog", "--stale", "-o", "yaml"],
        )?;
        if output.contains("attempts: 1") {
            break;
        }
        ensure!(Instant::now() < deadline, "node {leader} never caught up");
        std::thread::sleep(POLL_INTERVAL);
    }
    show(&hyphae, restarted, &["cluster", "status"])?;
    Ok(())
}

/// Runs `hyphae` against `server`, printing the command and its output.
fn show(hyphae: &Path, server: &str, args: &[&str]) -> Result<String> {
    println!(
        "$ HYPHAE_SERVER={server} hyphae {}",
        args.join(" ").replace(&root_prefix(), "")
    );
    let output = run_hyphae(hyphae, server, args)?;
    print!("{output}");
    Ok(output)
}

fn root_prefix() -> String {
    format!("{}/", crate::util::root().display())
}
