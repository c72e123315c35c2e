//! gRPC through two agents with a real gRPC client and server (Python grpcio, installed by
//! `cargo xtask test`): unary, server streaming with trailers, error statuses, and retries
//! driven by `grpc-status`.

use std::path::Path;
use std::process::Command;

use hyphae_integration::Process;
use hyphae_integration::agent::Agent;
use hyphae_integration::command::succeeds;
use hyphae_integration::mesh::upstream_port;
use hyphae_integration::process::READY_PATIENCE;

const AGENT: &str = env!("CARGO_BIN_EXE_hyphae-agent");

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/peer.py")
}

/// Starts the Python gRPC server (on port 0) and returns it with the port it printed.
fn grpc_server() -> (Process, u16) {
    let (server, line) = Process::spawn_ready(
        "the gRPC server",
        Command::new("python3").arg(script()).arg("server"),
        READY_PATIENCE,
    )
    .unwrap_or_else(|e| panic!("{e} (is grpcio installed? run `cargo xtask test`)"));
    let port = line.trim().parse().unwrap_or_else(|_| {
        panic!("gRPC server did not start: {line:?} (is grpcio installed? run `cargo xtask test`)")
    });
    (server, port)
}

fn grpc_client(target: std::net::SocketAddr) -> serde_json::Value {
    let output = succeeds(
        "the gRPC client",
        Command::new("python3")
            .arg(script())
            .arg("client")
            .arg(target.to_string()),
    );
    serde_json::from_slice(&output.stdout).expect("client JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_streaming_trailers_and_retries_cross_two_agents() {
    let (_server, port) = grpc_server();
    let host = Agent::start_yaml(
        Path::new(AGENT),
        "host",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: host}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  services:\n    - {{name: echo, port: {port}, protocol: grpc}}\n"
        ),
    )
    .expect("start host");
    let caller = Agent::start_yaml(
        Path::new(AGENT),
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  upstreams:\n    - {{listen: 127.0.0.1:{}, service: echo}}\n  staticServices:\n    - name: echo\n      protocol: grpc\n      endpoints: [{{address: \"{}\"}}]\n---\nkind: ServicePolicy\nmetadata: {{name: echo}}\nspec:\n  retries: {{attempts: 2, grpcStatuses: [unavailable]}}\n",
            upstream_port(),
            host.inbound
        ),
    )
    .expect("start caller");
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
    assert!(
        caller
            .metric("hyphae_retries_total", "service=\"echo\"")
            .await
            >= 4.0
    );
}
