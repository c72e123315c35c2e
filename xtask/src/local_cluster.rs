//! A three-node `hyphae-control-plane` cluster on 127.0.0.1, shared by the demo and
//! `bench push`: configs, processes, ready lines, the leader. Never leaves a node running:
//! dropping it stops every node.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::util::{Processes, free_port};

/// Nodes in the cluster, with ids 1, 2, 3.
pub const NODES: usize = 3;
/// Longest the cluster waits for a node to start, an election or a catch-up.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// How often leader and catch-up waits poll.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Raft timing of every node: fast, since all nodes share one machine.
const RAFT_TIMING: &str =
    "  heartbeatInterval: 100ms\n  electionTimeoutMin: 500ms\n  electionTimeoutMax: 1s\n";

/// A running cluster; its files (configs, data, one log per node) live in one folder.
pub struct LocalCluster {
    /// Where `hyphae-control-plane` and `hyphae` are.
    bin: PathBuf,
    /// Configs, data folders and logs.
    dir: PathBuf,
    /// `127.0.0.1:PORT` of node 1, 2, 3 (index `id - 1`).
    servers: Vec<String>,
    /// Process ids of the running nodes, by index `id - 1`.
    pids: Vec<Option<u32>>,
    /// The node processes, named `cp-<id>`.
    processes: Processes,
}

impl LocalCluster {
    /// Empties `dir`, writes a config per node and starts the [`NODES`] nodes with the binaries
    /// in `bin`; node 1 initializes the cluster. Returns once every node printed its ready line.
    pub fn start(bin: &Path, dir: &Path) -> Result<LocalCluster> {
        Self::start_sized(bin, dir, NODES, "")
    }

    /// Like [`LocalCluster::start`], with `size` nodes and `extra` (YAML lines indented by two
    /// spaces) added to every node's `spec`.
    pub fn start_sized(bin: &Path, dir: &Path, size: usize, extra: &str) -> Result<LocalCluster> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("empty {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let ports = (0..size)
            .map(|_| free_port())
            .collect::<Result<Vec<u16>>>()?;
        let members: String = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("    - {{id: {}, address: \"127.0.0.1:{p}\"}}\n", i + 1))
            .collect();
        let mut cluster = LocalCluster {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            servers: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            pids: vec![None; size],
            processes: Processes::default(),
        };
        for (i, port) in ports.iter().enumerate() {
            let id = i + 1;
            std::fs::write(
                dir.join(format!("cp-{id}.yaml")),
                format!(
                    "kind: ControlPlaneConfig\nmetadata: {{name: cp-{id}}}\nspec:\n  id: {id}\n  listen: 127.0.0.1:{port}\n  dataDir: {}\n  members:\n{members}{RAFT_TIMING}{extra}",
                    dir.join(format!("data-{id}")).display()
                ),
            )
            .context("write a node config")?;
            cluster.start_node(id, id == 1)?;
        }
        Ok(cluster)
    }

    /// `127.0.0.1:PORT` of every node, node 1 first.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// `127.0.0.1:PORT` of node `id`.
    pub fn server(&self, id: usize) -> &str {
        &self.servers[id - 1]
    }

    /// The process id of node `id`, when it runs.
    pub fn pid(&self, id: usize) -> Option<u32> {
        self.pids.get(id - 1).copied().flatten()
    }

    /// The `hyphae` CLI.
    pub fn hyphae(&self) -> PathBuf {
        self.bin.join("hyphae")
    }

    /// Kills node `id` (SIGKILL).
    pub fn kill(&mut self, id: usize) {
        self.processes.stop(&format!("cp-{id}"));
        self.pids[id - 1] = None;
    }

    /// Starts node `id` again on its existing data.
    pub fn restart(&mut self, id: usize) -> Result<()> {
        self.start_node(id, false)
    }

    /// Starts node `id` (with `--init` for the first start of node 1) and waits for its ready
    /// line; stderr is appended to `cp-<id>.log`.
    fn start_node(&mut self, id: usize, init: bool) -> Result<()> {
        let log_path = self.dir.join(format!("cp-{id}.log"));
        let log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let mut command = Command::new(self.bin.join("hyphae-control-plane"));
        command
            .arg("--config")
            .arg(self.dir.join(format!("cp-{id}.yaml")))
            .env("HYPHAE_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if init {
            command.arg("--init");
        }
        let mut child = command.spawn().context("start hyphae-control-plane")?;
        let stdout = child.stdout.take().context("node stdout")?;
        self.pids[id - 1] = Some(child.id());
        self.processes.add(&format!("cp-{id}"), child);
        let line = crate::util::ready_line(stdout, PATIENCE)
            .with_context(|| format!("node {id} did not start; see {}", log_path.display()))?;
        ensure!(
            line.contains("\"ready\""),
            "node {id} did not start: {line:?}; see {}",
            log_path.display()
        );
        Ok(())
    }

    /// Polls `hyphae cluster status -o json` on the nodes `ids` until one of them names a
    /// leader that is itself among `ids` (a dead leader can still be named for a moment after
    /// it died).
    pub fn wait_for_leader(&self, ids: &[usize]) -> Result<usize> {
        let hyphae = self.hyphae();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let statuses: Vec<serde_json::Value> = ids
                .iter()
                .filter_map(|&id| {
                    run_hyphae(
                        &hyphae,
                        self.server(id),
                        &["cluster", "status", "-o", "json"],
                    )
                    .ok()
                })
                .filter_map(|output| serde_json::from_str(&output).ok())
                .collect();
            // The named leader must itself answer, and say it leads (a deposed leader can still
            // be named by a node for a moment).
            let leads = |id: u64| {
                statuses
                    .iter()
                    .any(|s| s["id"].as_u64() == Some(id) && s["state"] == "Leader")
            };
            if let Some(leader) = statuses
                .iter()
                .filter_map(|s| s["leader"].as_u64())
                .find(|&id| leads(id))
            {
                return usize::try_from(leader).context("leader id");
            }
            ensure!(Instant::now() < deadline, "no leader was elected");
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// Runs `hyphae args` against `server` and returns what it printed (stdout, then stderr);
/// fails when it fails.
pub fn run_hyphae(hyphae: &Path, server: &str, args: &[&str]) -> Result<String> {
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
