//! Launches control-plane nodes from the `hyphae-control-plane` binary: a cluster of N members
//! on loopback (configs, data and one log per node in one folder), single nodes, restarts,
//! signals, and the leader every running node agrees on. Dropping it kills every node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use std::sync::Arc;

use crate::Error;
use crate::eventually::{DEADLINE, TimedOut, wait_for};
use crate::http::call;
use crate::ports::free_ports;
use crate::process::{Process, READY_PATIENCE, Signal};
use crate::trust::ClusterTrust;

/// Raft timing of test clusters: the default heartbeat, election timeouts twice the defaults
/// (500 ms to 1 s), so a leader slowed by a loaded machine (debug builds, tests in parallel)
/// keeps its leadership through the tests that do not fault it. The nemesis runs the defaults
/// ([`Cluster::configure_with_default_timing`]).
const TEST_RAFT_TIMING: &str =
    "  heartbeatInterval: 100ms\n  electionTimeoutMin: 1s\n  electionTimeoutMax: 2s\n";
/// Spec lines tests add so that a write without a quorum is refused after 2 s, not the
/// default 5 s.
pub const SHORT_WRITE_TIMEOUT: &str = "  writeTimeout: 2s\n";
/// How often [`Cluster::leader`] asks the nodes again.
const LEADER_POLL: Duration = Duration::from_millis(100);
/// The log level of the nodes unless [`Cluster::set_log_level`] says otherwise (their logs go
/// to `cp-<id>.log`).
const LOG_LEVEL: &str = "warn";

/// One `hyphae-control-plane` process, or its place while it is stopped.
pub struct Node {
    /// Its Raft node id.
    pub id: u64,
    /// Its configuration file.
    pub config: PathBuf,
    /// Where it listens (port 0 until a node configured with port 0 first started).
    pub address: SocketAddr,
    binary: PathBuf,
    log: PathBuf,
    log_level: String,
    process: Option<Process>,
    /// The join token file and root fingerprint it joins with when it has no certificate.
    ticket: Option<(PathBuf, String)>,
    /// The network namespace it runs in (see [`crate::netns`]), `None` for this process's.
    namespace: Option<String>,
}

impl Node {
    /// A node of `binary` configured by the file `config` (written by the caller), listening on
    /// `address` (port 0: the port it reports when it first starts, kept for restarts), logging
    /// to `log`. Starts nothing.
    pub fn new(binary: &Path, id: u64, config: PathBuf, address: SocketAddr, log: PathBuf) -> Node {
        Node {
            id,
            config,
            address,
            binary: binary.to_path_buf(),
            log,
            log_level: LOG_LEVEL.to_string(),
            process: None,
            ticket: None,
            namespace: None,
        }
    }

    /// Its data directory, read from its configuration.
    fn data_dir(&self) -> Option<PathBuf> {
        let text = std::fs::read_to_string(&self.config).ok()?;
        text.lines()
            .find_map(|line| line.trim().strip_prefix("dataDir:"))
            .map(|dir| PathBuf::from(dir.trim()))
    }

    /// Whether it has its certificate (it joined or initialized once).
    pub fn has_certificate(&self) -> bool {
        self.data_dir()
            .is_some_and(|dir| dir.join("tls/node.pem").exists())
    }

    /// Starts the process (with `--init` when `init`) and waits for its ready line. A node
    /// configured with port 0 learns its port here and keeps it: its config is rewritten, so
    /// a restart listens on the same address.
    pub fn start(&mut self, init: bool) -> Result<(), Error> {
        let name = format!("control-plane node {}", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| write_error(&self.log, source))?;
        let mut command = crate::netns::command_in(self.namespace.as_deref(), &self.binary);
        command
            .arg("--config")
            .arg(&self.config)
            .env("HYPHAE_LOG", &self.log_level)
            .stdin(Stdio::null())
            .stderr(log);
        if init {
            let token_file = self
                .config
                .with_file_name(format!("cp-{}-admin-token", self.id));
            crate::credentials::write_token_file(&token_file)
                .map_err(|source| write_error(&token_file, source))?;
            command
                .arg("--init")
                .arg("--bootstrap-token-file")
                .arg(&token_file);
            // Every cluster of the process shares one root with the static agents it starts.
            let cli = self.binary.with_file_name("hyphae");
            command
                .arg("--ca-dir")
                .arg(crate::trust::shared_root(&cli)?);
        } else if let Some((token_file, fingerprint)) = &self.ticket
            && !self.has_certificate()
        {
            command
                .arg("--join-token-file")
                .arg(token_file)
                .arg("--ca-fingerprint")
                .arg(fingerprint);
        }
        let (process, ready) = Process::spawn_ready_json(&name, &mut command, READY_PATIENCE)
            .map_err(|error| self.pointing_at_log(error))?;
        // Held before the checks below, so a node that started wrong is still killed.
        self.process = Some(process);
        let listen: SocketAddr = ready["listen"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::BadReadyLine {
                name: name.clone(),
                line: ready.to_string(),
                reason: "no listen address".to_string(),
            })?;
        if self.address.port() == 0 {
            let text = std::fs::read_to_string(&self.config)
                .map_err(|source| write_error(&self.config, source))?;
            let pinned = text.replace(
                &format!("listen: {}", self.address),
                &format!("listen: {listen}"),
            );
            std::fs::write(&self.config, pinned)
                .map_err(|source| write_error(&self.config, source))?;
            self.address = listen;
        }
        Ok(())
    }

    /// The file its stderr (its log) goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn pointing_at_log(&self, error: Error) -> Error {
        match error {
            Error::NoReadyLine { name, waited } => Error::NoReadyLine {
                name: format!("{name} (log: {})", self.log.display()),
                waited,
            },
            other => other,
        }
    }

    /// Its log file (the process's stderr).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Sets what its log keeps from the next start on (`HYPHAE_LOG`: `error`, `warn`...).
    pub fn set_log_level(&mut self, level: &str) {
        self.log_level = level.to_string();
    }

    /// Whether its process runs (started and not killed).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::id)
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`...) to the running process; fails the test when
    /// it is not running.
    pub fn signal(&self, signal: Signal) {
        let process = self
            .process
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.id));
        if let Err(error) = process.signal(signal) {
            panic!("cannot signal node {}: {error}", self.id);
        }
    }

    /// SIGKILLs the process (no clean shutdown) and reaps it.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Waits up to `patience` for the process to exit (after a SIGTERM); its exit code, `None`
    /// when it still runs, was killed by a signal or was not running.
    pub async fn exit_code(&mut self, patience: Duration) -> Option<i32> {
        let status = self.process.as_mut()?.exited(patience).await?;
        self.process = None;
        status.code()
    }

    /// The leader this node knows of, if it answers and knows one.
    pub async fn leader_seen(&self) -> Option<u64> {
        status(self.address).await["leader"].as_u64()
    }
}

/// Nodes of one cluster, ids 1 to N (node `id` at index `id - 1`).
pub struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    /// Writes the configs of a new cluster of `size` members of `binary` in `dir`, each with
    /// `spec` (YAML lines indented by two spaces) added to its `spec`; starts nothing. A
    /// one-node cluster listens on port 0 and learns its port when it starts; a larger one
    /// needs its members' addresses in every config, so their ports are chosen ahead.
    pub fn configure(binary: &Path, dir: &Path, size: usize, spec: &str) -> Result<Cluster, Error> {
        let ports = if size == 1 {
            vec![0]
        } else {
            free_ports(size)?
        };
        Cluster::configure_on(binary, dir, &ports, spec)
    }

    /// Like [`Cluster::configure`], one node per port of `ports`, for a test that must name a
    /// node's address before it starts (an agent pointed at a control plane that comes later).
    pub fn configure_on(
        binary: &Path,
        dir: &Path,
        ports: &[u16],
        spec: &str,
    ) -> Result<Cluster, Error> {
        let addresses: Vec<SocketAddr> = ports
            .iter()
            .map(|&port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect();
        Cluster::configure_in(binary, dir, None, &addresses, spec)
    }

    /// Like [`Cluster::configure_on`], one node per address of `addresses` (its `listen` and
    /// what the others know it by), every node running in the network namespace `namespace`
    /// when given (see [`crate::netns`]; the CLI and join-token calls to it go there too).
    pub fn configure_in(
        binary: &Path,
        dir: &Path,
        namespace: Option<&str>,
        addresses: &[SocketAddr],
        spec: &str,
    ) -> Result<Cluster, Error> {
        Cluster::write_configs(binary, dir, namespace, addresses, TEST_RAFT_TIMING, spec)
    }

    /// Like [`Cluster::configure`], with the product's default Raft timing rather than the
    /// tests' slower one: what the nemesis measures failover with.
    pub fn configure_with_default_timing(
        binary: &Path,
        dir: &Path,
        size: usize,
        spec: &str,
    ) -> Result<Cluster, Error> {
        let addresses: Vec<SocketAddr> = free_ports(size)?
            .into_iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect();
        Cluster::write_configs(binary, dir, None, &addresses, "", spec)
    }

    fn write_configs(
        binary: &Path,
        dir: &Path,
        namespace: Option<&str>,
        addresses: &[SocketAddr],
        timing: &str,
        spec: &str,
    ) -> Result<Cluster, Error> {
        std::fs::create_dir_all(dir).map_err(|source| write_error(dir, source))?;
        let size = addresses.len();
        let members: String = if size == 1 {
            String::new()
        } else {
            let lines: String = addresses
                .iter()
                .enumerate()
                .map(|(i, a)| format!("    - {{id: {}, address: \"{a}\"}}\n", i + 1))
                .collect();
            format!("  members:\n{lines}")
        };
        let mut nodes = Vec::new();
        for (id, &address) in (1..).zip(addresses) {
            let config = dir.join(format!("cp-{id}.yaml"));
            std::fs::write(
                &config,
                format!(
                    "kind: ControlPlaneConfig\nmetadata: {{name: cp-{id}}}\nspec:\n  id: {id}\n  listen: {address}\n  dataDir: {}\n{members}{timing}{spec}",
                    data_dir(dir, id).display()
                ),
            )
            .map_err(|source| write_error(&config, source))?;
            let log = dir.join(format!("cp-{id}.log"));
            let mut node = Node::new(binary, id, config, address, log);
            node.namespace = namespace.map(str::to_string);
            nodes.push(node);
        }
        Ok(Cluster { nodes })
    }

    /// Configures a cluster (see [`Cluster::configure`]) and starts every node, node 1 with
    /// `--init`; returns once each printed its ready line.
    pub fn start(binary: &Path, dir: &Path, size: usize, spec: &str) -> Result<Cluster, Error> {
        let mut cluster = Cluster::configure(binary, dir, size, spec)?;
        cluster.start_all()?;
        Ok(cluster)
    }

    /// One node of the workspace's control plane in `dir/cp`, with [`SHORT_WRITE_TIMEOUT`],
    /// and its address: the control plane of a test about agents.
    pub fn lone_in(dir: &Path) -> Result<(Cluster, String), Error> {
        let binary = crate::binaries::workspace_binary("hyphae-control-plane");
        let cluster = Cluster::start(&binary, &dir.join("cp"), 1, SHORT_WRITE_TIMEOUT)?;
        let address = cluster.node(1).address.to_string();
        Ok((cluster, address))
    }

    /// Starts every node: node 1 with `--init`, then the others, each joining with a
    /// control-plane join token (made through node 1 with the `hyphae` CLI) the first time;
    /// returns once every node is a voter.
    pub fn start_all(&mut self) -> Result<(), Error> {
        let Some(first) = self.nodes.first_mut() else {
            return Ok(());
        };
        first.start(true)?;
        let others: Vec<u64> = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| *id != 1)
            .collect();
        self.start_joining(&others)?;
        self.wait_voters(self.nodes.len())
    }

    /// Starts nodes `ids` (node 1 runs): those without a certificate join with a
    /// control-plane join token made through node 1, and then add themselves to the cluster.
    pub fn start_joining(&mut self, ids: &[u64]) -> Result<(), Error> {
        let trust = self.trust()?;
        let server = self.node(1).address.to_string();
        let joining = self
            .nodes
            .iter()
            .filter(|n| ids.contains(&n.id) && !n.has_certificate())
            .count();
        if joining > 0 {
            let token = block_on(wait_for(
                "node 1 to make a control-plane join token",
                DEADLINE,
                LEADER_POLL,
                || async { trust.new_join_token(&server, true, joining as u32).ok() },
            ))
            .map_err(|timed_out| Error::Credentials(timed_out.to_string()))?;
            for node in self.nodes.iter_mut().filter(|n| ids.contains(&n.id)) {
                node.ticket = Some((token.clone(), trust.fingerprint.clone()));
            }
        }
        for node in self.nodes.iter_mut().filter(|n| ids.contains(&n.id)) {
            node.start(false)?;
        }
        Ok(())
    }

    /// Waits until node 1 counts `count` voters.
    pub fn wait_voters(&self, count: usize) -> Result<(), Error> {
        let first = self.node(1).address;
        let voters = |status: &Value| {
            status["members"].as_array().map_or(0, |members| {
                members.iter().filter(|m| m["voter"] == true).count()
            })
        };
        block_on(wait_for(
            "every node to be a voter",
            DEADLINE,
            LEADER_POLL,
            || async { (voters(&status(first).await) == count).then_some(()) },
        ))
        .map_err(|timed_out| Error::Credentials(timed_out.to_string()))
    }

    /// The root and join tokens of this cluster, read from node 1's data directory and
    /// registered under every node's address (see [`crate::trust`]).
    pub fn trust(&self) -> Result<Arc<ClusterTrust>, Error> {
        let first = &self.nodes[0];
        let dir = first
            .data_dir()
            .ok_or_else(|| Error::Credentials("node 1's config names no dataDir".into()))?;
        let cli = first.binary.with_file_name("hyphae");
        let folder = first.config.parent().unwrap_or(Path::new("."));
        let trust = Arc::new(
            ClusterTrust::read(&cli, folder, &dir)?.in_namespace(first.namespace.as_deref()),
        );
        crate::trust::register(&self.addresses(), Arc::clone(&trust));
        Ok(trust)
    }

    /// Configures a cluster with `spec`, starts every node logging at `level` (the tests that
    /// read the logs want `info`), and waits for a leader; returns the cluster with the
    /// leader's and a follower's address.
    pub async fn start_logged(
        binary: &Path,
        dir: &Path,
        size: usize,
        spec: &str,
        level: &str,
    ) -> Result<(Cluster, SocketAddr, SocketAddr), Error> {
        let mut cluster = Cluster::configure(binary, dir, size, spec)?;
        cluster.set_log_level(level);
        cluster.start_all()?;
        let leader = cluster
            .leader()
            .await
            .map_err(|timed_out| Error::NoLeader(timed_out.to_string()))?;
        let follower = cluster
            .nodes
            .iter()
            .find(|n| n.id != leader)
            .map_or(cluster.node(leader).address, |n| n.address);
        let leader = cluster.node(leader).address;
        Ok((cluster, leader, follower))
    }

    /// Three nodes of the workspace's `hyphae-control-plane` with `spec` in `dir`, logging at
    /// `info` (the access tests read the logs), once they have a leader: the cluster, the
    /// leader's and a follower's address.
    pub async fn three_logged(
        dir: &Path,
        spec: &str,
    ) -> Result<(Cluster, SocketAddr, SocketAddr), Error> {
        let binary = crate::binaries::workspace_binary("hyphae-control-plane");
        Cluster::start_logged(&binary, dir, 3, spec, "info").await
    }

    /// Sets what every node's log keeps from its next start on (see [`Node::set_log_level`]).
    pub fn set_log_level(&mut self, level: &str) {
        for node in &mut self.nodes {
            node.set_log_level(level);
        }
    }

    /// Every node, node 1 first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `id`; panics when there is none.
    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("the cluster has no node {id}"))
    }

    /// Node `id`, to start, stop or signal; panics when there is none.
    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("the cluster has no node {id}"))
    }

    /// Every node's address, node 1 first.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.address).collect()
    }

    /// Waits up to [`DEADLINE`] until every running node names the same leader, itself running
    /// and saying it leads; returns its id.
    pub async fn leader(&self) -> Result<u64, TimedOut> {
        wait_for(
            "a leader every running node agrees on",
            DEADLINE,
            LEADER_POLL,
            || self.agreed_leader(),
        )
        .await
    }

    async fn agreed_leader(&self) -> Option<u64> {
        let mut seen = Vec::new();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            seen.push(node.leader_seen().await);
        }
        let first = seen.first().copied().flatten()?;
        let leader = self
            .nodes
            .iter()
            .find(|n| n.id == first && n.is_running())?;
        let leading = status(leader.address).await["state"] == "Leader";
        (leading && seen.iter().all(|s| *s == Some(first))).then_some(first)
    }
}

/// Runs `future` to completion on a runtime of its own (on another thread, so a caller inside
/// a runtime can wait for it too).
fn block_on<F: std::future::Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for a set-up step")
                    .block_on(future)
            })
            .join()
            .expect("a set-up step does not panic")
    })
}

/// Where [`Cluster::configure`] in `dir` puts node `id`'s data (the Raft store).
pub fn data_dir(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("data-{id}"))
}

/// `GET /v1/cluster` on `address` (`null` when it does not answer). A node in a network
/// namespace is asked from inside it, with `hyphae cluster status`.
pub async fn status(address: SocketAddr) -> Value {
    let namespaced =
        crate::trust::of(&address.to_string()).is_some_and(|trust| trust.namespace().is_some());
    if !namespaced {
        return call("GET", address, "/v1/cluster", "").await.1;
    }
    let cli = crate::binaries::workspace_binary("hyphae");
    let asked = tokio::task::spawn_blocking(move || {
        crate::cli::hyphae(&cli, address, &["cluster", "status", "-o", "json"])
    })
    .await;
    match asked {
        Ok(Ok(output)) if output.success() => {
            serde_json::from_str(&output.text).unwrap_or(Value::Null)
        }
        _ => Value::Null,
    }
}

fn write_error(path: &Path, source: std::io::Error) -> Error {
    Error::Write {
        path: path.display().to_string(),
        source,
    }
}
