//! The control plane feeding an agent, with real processes: a policy applied with the CLI
//! changes how the agent routes within moments; with the control plane gone the agent keeps
//! serving what it was told, and after a restart it serves the copy saved on disk.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(30);

/// A workspace binary, built by `cargo xtask test` (which builds every binary first).
fn binary(name: &str) -> PathBuf {
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

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` and returns it with its first stdout line (the ready line).
fn start(program: &Path, args: &[&str]) -> (Process, serde_json::Value) {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A backend that answers every request with its name.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                                name.len()
                            );
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
async fn who_answers(upstream: SocketAddr) -> String {
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

async fn eventually<F, Fut>(what: &str, mut check: F)
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

fn host_config(name: &str, port: u16, version: &str) -> String {
    format!(
        "kind: AgentConfig\nmetadata: {{name: {name}}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  services:\n    - {{name: svc, port: {port}, tags: {{version: {version}}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_pushed_by_the_control_plane_steer_an_agent_and_survive_its_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path.display().to_string()
    };
    let agent_bin = binary("hyphae-agent");
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let (_h1, h1) = start(
        &agent_bin,
        &[
            "--config",
            &write("h1.yaml", &host_config("h1", v1.port(), "v1")),
        ],
    );
    let (_h2, h2) = start(
        &agent_bin,
        &[
            "--config",
            &write("h2.yaml", &host_config("h2", v2.port(), "v2")),
        ],
    );

    let cp_port = free_port();
    let cp_config = write(
        "cp.yaml",
        &format!(
            "kind: ControlPlaneConfig\nmetadata: {{name: cp}}\nspec:\n  id: 1\n  listen: 127.0.0.1:{cp_port}\n  dataDir: {}\n",
            dir.path().join("cp-data").display()
        ),
    );
    let (control_plane, _) = start(
        &binary("hyphae-control-plane"),
        &["--config", &cp_config, "--init"],
    );

    let upstream = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let caller_config = write(
        "caller.yaml",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  controlPlane: [\"127.0.0.1:{cp_port}\"]\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  upstreams:\n    - {{listen: \"{upstream}\", service: svc}}\n  staticServices:\n    - name: svc\n      endpoints:\n        - {{address: {}, tags: {{version: v1}}}}\n        - {{address: {}, tags: {{version: v2}}}}\n---\nkind: ServicePolicy\nmetadata: {{name: svc}}\nspec:\n  loadBalancer: {{policy: round-robin}}\n",
            dir.path().join("caller-data").display(),
            h1["ready"]["inbound"],
            h2["ready"]["inbound"],
        ),
    );
    let (caller, _) = start(&agent_bin, &["--config", &caller_config]);

    // Without a route, round robin alternates between v1 and v2.
    let answers = [who_answers(upstream).await, who_answers(upstream).await];
    assert!(
        answers.contains(&"v1".to_string()) && answers.contains(&"v2".to_string()),
        "{answers:?}"
    );

    // Push a route that sends everything to v2, then one that sends everything to v1.
    let hyphae = binary("hyphae");
    let server = format!("127.0.0.1:{cp_port}");
    for version in ["v2", "v1"] {
        let route = write(
            &format!("route-{version}.yaml"),
            &format!(
                "kind: Route\nmetadata: {{name: svc}}\nspec:\n  service: svc\n  rules:\n    - backends: [{{service: svc, subset: {{version: {version}}}}}]\n"
            ),
        );
        let status = Command::new(&hyphae)
            .args(["apply", "-f", &route, "--server", &server])
            .status()
            .expect("run hyphae apply");
        assert!(status.success());
        eventually(&format!("every call to go to {version}"), || async {
            for _ in 0..5 {
                if who_answers(upstream).await != version {
                    return false;
                }
            }
            true
        })
        .await;
    }

    // The control plane goes away: the agent keeps serving the last route.
    drop(control_plane);
    for _ in 0..10 {
        assert_eq!(who_answers(upstream).await, "v1");
    }

    // The agent restarts with no control plane: it serves the route saved on disk.
    drop(caller);
    let (_caller, _) = start(&agent_bin, &["--config", &caller_config]);
    eventually("the restarted agent to serve the saved route", || async {
        who_answers(upstream).await == "v1"
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            who_answers(upstream).await,
            "v1",
            "the saved route, not a random endpoint"
        );
    }
}
