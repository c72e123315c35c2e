//! gRPC through two agents with a real gRPC client and server (Python grpcio, installed by
//! `cargo xtask test`): unary, server streaming with trailers, error statuses, and retries
//! driven by `grpc-status`.

mod support;

use std::process::{Child, Command, Stdio};

use support::*;

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/peer.py")
}

/// Starts the Python gRPC server and returns it with its port.
fn grpc_server() -> (Peer, u16) {
    let mut child = Command::new("python3")
        .arg(script())
        .arg("server")
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (cargo xtask test installs grpcio)");
    let line = first_line(&mut child);
    let port = line.trim().parse().unwrap_or_else(|_| {
        panic!("gRPC server did not start: {line:?} (is grpcio installed? run `cargo xtask test`)")
    });
    (Peer(child), port)
}

fn grpc_client(target: std::net::SocketAddr) -> serde_json::Value {
    let output = Command::new("python3")
        .arg(script())
        .arg("client")
        .arg(target.to_string())
        .output()
        .expect("run the gRPC client");
    assert!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("client JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_streaming_trailers_and_retries_cross_two_agents() {
    let (_server, port) = grpc_server();
    let host = Agent::start(
        "host",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: host}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  services:\n    - {{name: echo, port: {port}, protocol: grpc}}\n"
        ),
    );
    let caller = Agent::start(
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  upstreams:\n    - {{listen: 127.0.0.1:{}, service: echo}}\n  staticServices:\n    - name: echo\n      protocol: grpc\n      endpoints: [{{address: \"{}\"}}]\n---\nkind: ServicePolicy\nmetadata: {{name: echo}}\nspec:\n  retries: {{attempts: 2, grpcStatuses: [unavailable]}}\n",
            free_port(),
            host.inbound
        ),
    );
    let result = tokio::task::spawn_blocking({
        let target = caller.upstream("echo");
        move || grpc_client(target)
    })
    .await
    .unwrap();
    assert_eq!(result["unary"], "echo:hello");
    assert_eq!(
        result["stream"],
        serde_json::json!(["0", "1", "2", "3", "4"])
    );
    assert_eq!(result["stream_code"], "OK");
    assert_eq!(
        result["stream_trailers"]["x-served-by"], "peer",
        "trailing metadata crossed both agents"
    );
    // Every other Flaky call fails with UNAVAILABLE at the server; the agent retries it.
    assert_eq!(result["flaky"].as_array().map(Vec::len), Some(4));
    assert!(
        result["flaky"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o.as_str().unwrap().starts_with("ok")),
        "{result}"
    );
    assert_eq!(
        result["broken"], "INVALID_ARGUMENT",
        "non-retryable statuses pass through"
    );
    assert_eq!(result["broken_details"], "bad argument");
    assert!(metric(&caller, "hyphae_retries_total", "service=\"echo\"").await >= 4.0);
}
