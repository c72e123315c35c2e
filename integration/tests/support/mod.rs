//! Helpers shared by the multi-process tests: starting workspace binaries, free ports, tiny
//! backends and polling with a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A workspace binary, built by `cargo xtask test` (which builds every binary first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (cargo xtask test does)",
        path.display()
    );
    path
}

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` and returns it with its first stdout line (the ready line).
pub fn start(program: &Path, args: &[&str]) -> (Process, serde_json::Value) {
    let mut child = Command::new(program)
        .args(args)
        .env("HYPHAE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start process");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let line = receiver.recv_timeout(DEADLINE).expect("ready line in time");
    let ready =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a ready line ({e}): {line:?}"));
    (Process(child), ready)
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A backend that answers every request with its name.
pub async fn backend(name: &'static str) -> SocketAddr {
    checked_backend(name, Arc::new(AtomicBool::new(true))).await
}

/// A backend that answers `/healthz` with 200 while `healthy` holds and 503 otherwise, and
/// every other request with its name.
pub async fn checked_backend(name: &'static str, healthy: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let healthy = Arc::clone(&healthy);
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => {
                            let head = String::from_utf8_lossy(&buffer[..read]);
                            let answer = if head.starts_with("GET /healthz ")
                                && !healthy.load(Ordering::Acquire)
                            {
                                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                                    .to_string()
                            } else {
                                format!(
                                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                                    name.len()
                                )
                            };
                            if stream.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    address
}

/// GET through the agent's upstream port; the body names the backend.
pub async fn who_answers(upstream: SocketAddr) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(upstream).await.ok()?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        Some(
            text.rsplit("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .to_string(),
        )
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Polls `check` every 100 ms until it holds; fails the test after [`DEADLINE`].
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

/// GETs `path` from `server` (`host:port`) and reads the JSON answer; `None` on any failure
/// or a non-2xx status.
pub async fn get_json(server: &str, path: &str) -> Option<serde_json::Value> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(server).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 2") {
            return None;
        }
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to a child.
pub fn signal(process: &Process, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), process.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// One control-plane node of a test cluster.
pub struct ControlPlaneNode {
    /// The process (`None` while stopped).
    pub process: Option<Process>,
    /// `127.0.0.1:port`.
    pub address: String,
    /// Its configuration file.
    pub config: String,
}

/// Starts a control-plane cluster of `size` nodes in `dir`, with `spec` (YAML lines indented
/// by two spaces) added to every node's `spec`. Node 1 initializes it.
pub fn control_plane(dir: &Path, size: u64, spec: &str) -> Vec<ControlPlaneNode> {
    let ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
    let members: String = (1..=size)
        .zip(&ports)
        .map(|(id, port)| format!("    - {{id: {id}, address: \"127.0.0.1:{port}\"}}\n"))
        .collect();
    let mut nodes = Vec::new();
    for (id, port) in (1..=size).zip(&ports) {
        let config = dir.join(format!("cp-{id}.yaml"));
        std::fs::write(
            &config,
            format!(
                "kind: ControlPlaneConfig\nmetadata: {{name: cp-{id}}}\nspec:\n  id: {id}\n  listen: 127.0.0.1:{port}\n  dataDir: {}\n  members:\n{members}  heartbeatInterval: 100ms\n  electionTimeoutMin: 500ms\n  electionTimeoutMax: 1s\n  writeTimeout: 2s\n{spec}",
                dir.join(format!("cp-{id}-data")).display()
            ),
        )
        .expect("write config");
        let config = config.display().to_string();
        let mut args = vec!["--config", config.as_str()];
        if id == 1 {
            args.push("--init");
        }
        let (process, _) = start(&binary("hyphae-control-plane"), &args);
        nodes.push(ControlPlaneNode {
            process: Some(process),
            address: format!("127.0.0.1:{port}"),
            config,
        });
    }
    nodes
}

/// The id of the node every live node agrees leads, once they agree.
pub async fn leader(nodes: &[ControlPlaneNode]) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut seen = Vec::new();
        for node in nodes.iter().filter(|n| n.process.is_some()) {
            let view = get_json(&node.address, "/v1/cluster").await;
            seen.push(view.and_then(|v| v["leader"].as_u64()));
        }
        if let Some(Some(first)) = seen.first()
            && seen.iter().all(|s| *s == Some(*first))
        {
            return *first;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs `body` to `path` on `server` and reads the JSON answer with its status; `None` when
/// no answer came.
pub async fn post_json(server: &str, path: &str, body: &str) -> Option<(u16, serde_json::Value)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(server).await.ok()?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {server}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.get(9..12)?.parse().ok()?;
        Some((status, serde_json::from_str(body).unwrap_or_default()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}
