//! Shared helpers of the control-plane process tests: a launcher for real
//! `hyphae-control-plane` processes on free loopback ports, an HTTP caller, polling with a
//! deadline and the `hyphae` CLI. Never sleeps to wait for a state: it polls.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Every wait gives up after this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One `hyphae-control-plane` process (or its place while it is stopped).
pub struct ControlPlane {
    /// Its Raft node id.
    pub id: u64,
    /// Its configuration file.
    pub config: std::path::PathBuf,
    /// Where it listens.
    pub address: SocketAddr,
    /// The running process, if any.
    pub child: Option<Child>,
}

impl ControlPlane {
    /// Starts the process and waits for its ready line.
    pub fn start(&mut self, init: bool) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hyphae-control-plane"));
        command
            .arg("--config")
            .arg(&self.config)
            .env("HYPHAE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if init {
            command.arg("--init");
        }
        let mut child = command.spawn().expect("start hyphae-control-plane");
        let stdout = child.stdout.take().expect("stdout");
        // Held before waiting, so a node that fails to start is still killed on drop.
        self.child = Some(child);
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(DEADLINE).expect("ready line in time");
        assert!(
            line.contains("\"ready\""),
            "node {} did not start: {line:?}",
            self.id
        );
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`...) to the running process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Whether its process is running (started and not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILLs the process (no clean shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A stopped process cannot die until it is continued.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.child.as_ref().map_or(0, |c| c.id()).to_string())
                .status();
        }
        self.kill();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Three nodes (not started) with short Raft timings, configured in `dir`.
pub fn cluster(dir: &std::path::Path) -> Vec<ControlPlane> {
    cluster_with(dir, "")
}

/// Like [`cluster`], with `extra` (indented `spec` lines such as `"  snapshotEvery: 20\n"`)
/// added to every node's configuration.
pub fn cluster_with(dir: &std::path::Path, extra: &str) -> Vec<ControlPlane> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let members: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    - {{id: {}, address: \"127.0.0.1:{p}\"}}\n", i + 1))
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let id = i as u64 + 1;
            let config = dir.join(format!("cp{id}.yaml"));
            let data = dir.join(format!("data{id}"));
            std::fs::write(
                &config,
                format!(
                    "kind: ControlPlaneConfig\nmetadata: {{name: cp-{id}}}\nspec:\n  id: {id}\n  listen: 127.0.0.1:{port}\n  dataDir: {}\n  members:\n{members}  heartbeatInterval: 100ms\n  electionTimeoutMin: 500ms\n  electionTimeoutMax: 1s\n  writeTimeout: 2s\n{extra}",
                    data.display()
                ),
            )
            .expect("write config");
            ControlPlane {
                id,
                config,
                address: SocketAddr::from(([127, 0, 0, 1], *port)),
                child: None,
            }
        })
        .collect()
}

/// Sends a request and returns the status and JSON body.
pub async fn call(method: &str, address: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let exchange = async {
        let response = client.request(request).await.ok()?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.ok()?.to_bytes();
        Some((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    };
    // No answer in time (a stopped or hung node) is an answer too: status 0.
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or((0, Value::Null))
}

/// Polls until `check` holds, failing after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader `node` knows of, if any.
pub async fn leader_seen_by(node: &ControlPlane) -> Option<u64> {
    status(node.address).await["leader"].as_u64()
}

/// `GET /v1/cluster` on `address` (`null` when it does not answer).
pub async fn status(address: SocketAddr) -> Value {
    call("GET", address, "/v1/cluster", "").await.1
}

/// Starts the three nodes of a new cluster (the first with `--init`) and returns the leader
/// they agree on.
pub async fn start_cluster(nodes: &mut [ControlPlane]) -> u64 {
    for (i, node) in nodes.iter_mut().enumerate() {
        node.start(i == 0);
    }
    agreed_leader(nodes).await
}

/// Polls until every running node names the same leader, itself running and leading, and
/// returns its id.
pub async fn agreed_leader(nodes: &[ControlPlane]) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(leader) = leader_if_agreed(nodes).await {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for a leader every running node agrees on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leader_if_agreed(nodes: &[ControlPlane]) -> Option<u64> {
    let mut seen = Vec::new();
    for node in nodes.iter().filter(|n| n.is_running()) {
        seen.push(leader_seen_by(node).await);
    }
    let first = seen.first().copied().flatten()?;
    let leader = nodes.iter().find(|n| n.id == first && n.is_running())?;
    let leading = status(leader.address).await["state"] == "Leader";
    (leading && seen.iter().all(|s| *s == Some(first))).then_some(first)
}

/// The node with `id`.
pub fn by_id(nodes: &mut [ControlPlane], id: u64) -> &mut ControlPlane {
    nodes
        .iter_mut()
        .find(|n| n.id == id)
        .expect("a node with that id")
}

/// Names of the `ServicePolicy` objects `address` holds in its applied state (`?stale=true`),
/// or `None` when it does not answer.
pub async fn stale_policy_names(address: SocketAddr) -> Option<BTreeSet<String>> {
    let (code, body) = call(
        "GET",
        address,
        "/v1/policies?kind=ServicePolicy&stale=true",
        "",
    )
    .await;
    policy_names(code, &body)
}

/// Names in a `GET /v1/policies` answer, or `None` for anything but a 200.
pub fn policy_names(code: u16, body: &Value) -> Option<BTreeSet<String>> {
    (code == 200).then(|| {
        body.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect()
    })
}

/// A small valid `ServicePolicy` document.
pub fn policy(name: &str, attempts: u32) -> String {
    format!(
        "kind: ServicePolicy\nmetadata: {{name: {name}}}\nspec:\n  retries: {{attempts: {attempts}}}\n"
    )
}

/// Runs the `hyphae` CLI against `server`: exit code, and stdout followed by stderr.
pub fn hyphae(server: SocketAddr, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hyphae"))
        .args(args)
        .env("HYPHAE_SERVER", server.to_string())
        .output()
        .expect("run hyphae");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

/// A one-node cluster in `dir`, started, initialized and leading.
pub async fn single_node(dir: &std::path::Path) -> ControlPlane {
    let port = free_port();
    let config = dir.join("solo.yaml");
    std::fs::write(
        &config,
        format!(
            "kind: ControlPlaneConfig\nmetadata: {{name: solo}}\nspec:\n  id: 1\n  listen: 127.0.0.1:{port}\n  dataDir: {}\n",
            dir.join("data").display()
        ),
    )
    .expect("write config");
    let mut node = ControlPlane {
        id: 1,
        config,
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        child: None,
    };
    node.start(true);
    eventually("the node to lead", || async {
        leader_seen_by(&node).await == Some(1)
    })
    .await;
    node
}
