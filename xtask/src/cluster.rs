//! The demo's control plane: a three-node Raft cluster on this machine, policies applied with
//! the `hyphae` CLI, the leader killed and replaced, and the dead node restarted and caught up.
//! Every process it starts is stopped when it returns, even on error.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use hyphae_integration::cli::{hyphae, hyphae_as};
use hyphae_integration::cluster::Cluster;
use hyphae_integration::eventually::wait_for;

/// Nodes in the demo's cluster, with ids 1, 2, 3.
const NODES: usize = 3;
/// Longest the demo waits for the restarted node to catch up.
const PATIENCE: Duration = Duration::from_secs(30);
/// How often the catch-up wait asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Runs the scenario with the binaries in `bin`, keeping data under `scratch`.
pub async fn run(bin: &Path, scratch: &Path, examples: &Path) -> Result<()> {
    let dir = scratch.join("control-plane");
    crate::util::empty_dir(&dir)?;
    let mut cluster = Cluster::configure(&bin.join("hyphae-control-plane"), &dir, NODES, "")?;
    cluster.set_log_level("error");
    cluster.start_all()?;
    let servers: Vec<String> = cluster
        .addresses()
        .iter()
        .map(ToString::to_string)
        .collect();
    let hyphae = bin.join("hyphae");
    let leader = cluster.leader().await?;
    println!("three nodes up; node {leader} leads");
    show(&hyphae, &servers[0], &["cluster", "status"])?;

    println!(
        "\n-- the admin API needs a token: node 1 wrote the bootstrap admin token to an owner-only file at --init"
    );
    let refused = hyphae_as(&hyphae, &servers[0], None, &["get"]).context("run hyphae")?;
    println!("$ HYPHAE_SERVER={} hyphae get   (no token)", servers[0]);
    print!("{}", refused.text);
    ensure!(!refused.success(), "an anonymous read must be refused");
    println!(
        "$ HYPHAE_SERVER={} hyphae acl token create ci --role write --ttl 24h",
        servers[0]
    );
    let created = run_hyphae(
        &hyphae,
        &servers[0],
        &[
            "acl", "token", "create", "ci", "--role", "write", "--ttl", "24h",
        ],
    )?;
    let ci = created
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    println!("(its secret, printed once; the cluster keeps only a hash)");
    show(&hyphae, &servers[0], &["acl", "token", "list"])?;

    println!(
        "\n-- apply the example policies with the `ci` token through node 2 (a follower forwards to the leader)"
    );
    let examples = examples.display().to_string();
    let output = show_as(&hyphae, &servers[1], &ci, &["apply", "-f", &examples])?;
    ensure!(output.contains("applied"), "apply should succeed");
    show(&hyphae, &servers[2], &["get", "--stale"])?;
    let forbidden = hyphae_as(
        &hyphae,
        &servers[1],
        Some(&ci),
        &["cluster", "transfer-leader"],
    )
    .context("run hyphae")?;
    println!(
        "$ HYPHAE_SERVER={} hyphae cluster transfer-leader   (the `ci` token)",
        servers[1]
    );
    print!("{}", forbidden.text);
    ensure!(
        !forbidden.success(),
        "a write token must not move leadership"
    );

    println!("\n-- kill the leader (node {leader}, SIGKILL); the others elect a new one");
    cluster.node_mut(leader).kill();
    // Only running nodes are asked, and the leader they agree on must itself run.
    let new_leader = cluster.leader().await?;
    ensure!(new_leader != leader, "a new leader should take over");
    println!("node {new_leader} leads now");
    let survivor = (1..)
        .take(NODES)
        .find(|&id| id != leader)
        .map(|id| cluster.node(id).address.to_string())
        .context("a surviving node")?;
    let change = dir.join("catalog-change.yaml");
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
    cluster.node_mut(leader).start(false)?;
    let restarted = cluster.node(leader).address.to_string();
    let args = ["get", "ServicePolicy", "catalog", "--stale", "-o", "yaml"];
    wait_for(
        &format!("node {leader} to catch up"),
        PATIENCE,
        POLL_INTERVAL,
        || async {
            run_hyphae(&hyphae, &restarted, &args)
                .ok()
                .filter(|output| output.contains("attempts: 1"))
        },
    )
    .await?;
    show(&hyphae, &restarted, &["cluster", "status"])?;
    Ok(())
}

/// Runs `hyphae args` against `server` and returns what it printed (stdout, then stderr);
/// fails when it fails.
fn run_hyphae(hyphae_bin: &Path, server: &str, args: &[&str]) -> Result<String> {
    let output = hyphae(hyphae_bin, server, args).context("run hyphae")?;
    ensure!(
        output.success(),
        "hyphae {} failed: {}",
        args.join(" "),
        output.text
    );
    Ok(output.text)
}

/// Like [`show`], with the token `secret`.
fn show_as(hyphae: &Path, server: &str, secret: &str, args: &[&str]) -> Result<String> {
    println!(
        "$ HYPHAE_SERVER={server} hyphae {}   (the `ci` token)",
        args.join(" ").replace(&root_prefix(), "")
    );
    let output = hyphae_as(hyphae, server, Some(secret), args).context("run hyphae")?;
    ensure!(
        output.success(),
        "hyphae {} failed: {}",
        args.join(" "),
        output.text
    );
    print!("{}", output.text);
    Ok(output.text)
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
