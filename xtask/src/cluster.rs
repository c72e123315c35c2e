//! The demo's control plane: a three-node Raft cluster on this machine, policies applied with
//! the `hyphae` CLI, the leader killed and replaced, and the dead node restarted and caught up.
//! Every process it starts is stopped when it returns, even on error.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::util::{Processes, free_port};

/// Longest the demo waits for an election or a catch-up.
const PATIENCE: Duration = Duration::from_secs(30);

/// Runs the scenario with the binaries in `bin`, keeping data under `scratch`.
pub fn run(bin: &Path, scratch: &Path, examples: &Path) -> Result<()> {
    let dir = scratch.join("control-plane");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).context("create the control-plane directory")?;
    let ports = [free_port()?, free_port()?, free_port()?];
    let members: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    - {{id: {}, address: \"127.0.0.1:{p}\"}}\n", i + 1))
        .collect();
    let mut processes = Processes::default();
    for (i, port) in ports.iter().enumerate() {
        let id = i + 1;
        std::fs::write(
            dir.join(format!("cp-{id}.yaml")),
            format!(
                "kind: ControlPlaneConfig\nmetadata: {{name: cp-{id}}}\nspec:\n  id: {id}\n  listen: 127.0.0.1:{port}\n  dataDir: {}\n  members:\n{members}  heartbeatInterval: 100ms\n  electionTimeoutMin: 500ms\n  electionTimeoutMax: 1s\n",
                dir.join(format!("data-{id}")).display()
            ),
        )
        .context("write a node config")?;
        start_node(&mut processes, bin, &dir, id, id == 1)?;
    }
    let servers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let hyphae = bin.join("hyphae");
    let leader = wait_for_leader(&hyphae, &servers)?;
    println!("three nodes up; node {leader} leads");
    show(&hyphae, &servers[0], &["cluster", "status"])?;

    println!("\n-- apply the example policies through node 2 (a follower forwards to the leader)");
    let examples = examples.display().to_string();
    let output = show(&hyphae, &servers[1], &["apply", "-f", &examples])?;
    ensure!(output.contains("applied"), "apply should succeed");
    show(&hyphae, &servers[2], &["get", "--stale"])?;

    println!("\n-- kill the leader (node {leader}, SIGKILL); the others elect a new one");
    processes.stop(&format!("cp-{leader}"));
    let survivors: Vec<String> = servers
        .iter()
        .enumerate()
        .filter(|(i, _)| i + 1 != leader)
        .map(|(_, s)| s.clone())
        .collect();
    let new_leader = wait_for_leader(&hyphae, &survivors)?;
    ensure!(new_leader != leader, "a new leader should take over");
    println!("node {new_leader} leads now");
    let change = dir.join("catalog-change.yaml");
    std::fs::write(
        &change,
        "kind: ServicePolicy\nmetadata: {name: catalog}\nspec:\n  retries: {attempts: 1}\n",
    )
    .context("write a change")?;
    let change = change.display().to_string();
    show(
        &hyphae,
        &survivors[0],
        &["apply", "-f", &change, "--dry-run"],
    )?;
    let output = show(&hyphae, &survivors[0], &["apply", "-f", &change])?;
    ensure!(
        output.contains("applied"),
        "writes should go on with two of three nodes"
    );

    println!("\n-- restart node {leader}: it catches up from the others");
    start_node(&mut processes, bin, &dir, leader, false)?;
    let restarted = &servers[leader - 1];
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
        std::thread::sleep(Duration::from_millis(200));
    }
    show(&hyphae, restarted, &["cluster", "status"])?;
    Ok(())
}

fn start_node(
    processes: &mut Processes,
    bin: &Path,
    dir: &Path,
    id: usize,
    init: bool,
) -> Result<()> {
    let mut command = Command::new(bin.join("hyphae-control-plane"));
    command
        .arg("--config")
        .arg(dir.join(format!("cp-{id}.yaml")))
        .env("HYPHAE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if init {
        command.arg("--init");
    }
    let mut child = command.spawn().context("start hyphae-control-plane")?;
    let stdout = child.stdout.take().context("node stdout")?;
    processes.add(&format!("cp-{id}"), child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("read the node's ready line")?;
    ensure!(
        line.contains("\"ready\""),
        "node {id} did not start: {line:?}"
    );
    Ok(())
}

/// Polls `hyphae cluster status -o json` on `servers` until one of them names a leader that is
/// itself among `servers` (a dead leader can still be named for a moment after it died).
fn wait_for_leader(hyphae: &Path, servers: &[String]) -> Result<usize> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let statuses: Vec<serde_json::Value> = servers
            .iter()
            .filter_map(|server| {
                run_hyphae(hyphae, server, &["cluster", "status", "-o", "json"]).ok()
            })
            .filter_map(|output| serde_json::from_str(&output).ok())
            .collect();
        let alive = |id: u64| statuses.iter().any(|s| s["id"].as_u64() == Some(id));
        if let Some(leader) = statuses
            .iter()
            .filter_map(|s| s["leader"].as_u64())
            .find(|&id| alive(id))
        {
            return usize::try_from(leader).context("leader id");
        }
        ensure!(Instant::now() < deadline, "no leader was elected");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run_hyphae(hyphae: &Path, server: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(hyphae)
        .args(args)
        .env("HYPHAE_SERVER", server)
        .output()
        .context("run hyphae")?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    ensure!(
        output.status.success(),
        "hyphae {} failed: {text}",
        args.join(" ")
    );
    Ok(text)
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
