//! The agents' HTTP/2 connections end to end, with real processes and a real HTTP/2 server
//! (hyper's, in the test) that limits its streams and holds its answers: calls above a
//! server's stream limit reach it on more connections, toward an instance (on both mesh paths)
//! and toward a peer agent; a server's GOAWAY sends later calls to a new connection; calls
//! waiting for a connection that cannot be opened share the one attempt's failure.

use std::path::Path;

use hyphae_integration::agent::Agent;
use hyphae_integration::backend::Http2Backend;
use hyphae_integration::http::{Answer, get, http1_client};
use hyphae_integration::mesh::{self, caller_agent, endpoint};

const AGENT: &str = env!("CARGO_BIN_EXE_hyphae-agent");

/// Starts `calls` GETs of `/` at once to `entry`.
fn start_calls(entry: std::net::SocketAddr, calls: usize) -> Vec<tokio::task::JoinHandle<Answer>> {
    (0..calls)
        .map(|_| {
            tokio::spawn(async move { get(&http1_client(), &format!("http://{entry}/")).await })
        })
        .collect()
}

/// Waits for every call, each of which must have been answered 200 by the server.
async fn all_answered(calls: Vec<tokio::task::JoinHandle<Answer>>) -> Vec<String> {
    let mut bodies = Vec::new();
    for call in calls {
        let answer = call.await.expect("a call task");
        assert_eq!(answer.status, 200, "{:?}", answer.header("hyphae-error"));
        bodies.push(answer.text());
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_above_an_http2_instances_stream_limit_reach_it_on_more_connections() {
    let server = Http2Backend::start(2).await;
    for path in mesh::both_paths(AGENT, server.port(), "http2", "") {
        let before = server.connections();
        server.set_holding(true);
        let calls = start_calls(path.entry, 6);
        // On one connection the instance would see 2 at a time and the rest would wait.
        server.wait_holding(6).await;
        assert_eq!(
            server.connections() - before,
            3,
            "{}: 6 calls, 2 streams per connection",
            path.name
        );
        server.set_holding(false);
        all_answered(calls).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_above_a_peer_agents_stream_limit_reach_it_on_more_connections() {
    let server = Http2Backend::start(100).await;
    let host = Agent::start_yaml(
        Path::new(AGENT),
        "host",
        &format!(
            "kind: AgentConfig
metadata: {{name: host}}
spec:
  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}
  services:
    - {{name: app, port: {}, protocol: http2}}
  limits: {{maxConcurrentStreams: 2}}
",
            server.port()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let caller = caller_agent(AGENT, "app", &[endpoint(&host, "one")], "");
    let calls = start_calls(caller.upstream("app"), 6);
    // The host's inbound port takes 2 streams per connection: 6 calls need 3 of them.
    server.wait_holding(6).await;
    assert_eq!(
        caller
            .metric("hyphae_http2_connections_opened_total", "to=\"peer\"")
            .await,
        3.0
    );
    assert_eq!(server.connections(), 1, "the instance allows 100 streams");
    server.set_holding(false);
    all_answered(calls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_instances_goaway_calls_go_on_a_new_connection_and_those_on_the_old_one_finish() {
    let server = Http2Backend::start(100).await;
    let agent = mesh::one_agent(AGENT, "app", server.port(), "http2", "");
    let entry = agent.upstream("app");
    let held = start_calls(entry, 1);
    server.wait_holding(1).await;
    server.go_away();
    agent
        .metric_reaches("hyphae_http2_goaways_total", "to=\"instance\"", 1.0)
        .await;
    server.set_holding(false);
    let answer = get(&http1_client(), &format!("http://{entry}/")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "connection 2");
    assert_eq!(all_answered(held).await, ["connection 1"]);
    assert_eq!(server.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_waiting_for_a_connection_that_cannot_be_opened_fail_with_it_not_one_after_another() {
    // An HTTP/2 instance that accepts connections and never says a word: every handshake
    // ends at the service's connect timeout (1 s). Calls that queue for one attempt share its
    // failure; each trying in turn, the last of 8 waited 8 s and made 8 attempts.
    const CALLS: usize = 8;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the silent instance");
    let port = listener.local_addr().expect("its address").port();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&attempts);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let no_retries =
        "---\nkind: ServicePolicy\nmetadata: {name: app}\nspec:\n  retries: {attempts: 0}\n";
    let agent = mesh::one_agent(AGENT, "app", port, "http2", no_retries);
    let calls = start_calls(agent.upstream("app"), CALLS);
    for call in calls {
        let answer = call.await.expect("a call task");
        // The instance is this node's own: its connect timeout reaches the caller as the
        // peer side reports it, 502 `connect-failed`.
        assert_eq!(answer.status, 502, "{:?}", answer.header("hyphae-error"));
        assert_eq!(answer.header("hyphae-error"), Some("connect-failed"));
    }
    // One attempt for the calls that waited for it (and one more for a call that came only
    // after it failed), not one per call.
    let made = attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert!(made <= 2, "{made} connection attempts for {CALLS} calls");
}
