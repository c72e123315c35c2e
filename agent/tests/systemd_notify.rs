//! The agent speaks systemd's notify protocol: READY=1 once listening, RELOADING=1 then READY=1
//! around a SIGHUP, WATCHDOG=1 while alive, STOPPING=1 on SIGTERM. A test socket stands in for
//! systemd.

use std::path::Path;

use hyphae_integration::agent::Agent;
use hyphae_integration::systemd::NotifySocket;
use hyphae_integration::{DEADLINE, Signal};

#[tokio::test]
async fn ready_reloading_watchdog_and_stopping_reach_the_notify_socket() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let socket = NotifySocket::bind(scratch.path()).expect("bind notify socket");
    let config = scratch.path().join("agent.yaml");
    std::fs::write(
        &config,
        "kind: AgentConfig\nmetadata: {name: n}\nspec:\n  listeners: {admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}\n",
    )
    .expect("write config");
    let binary = Path::new(env!("CARGO_BIN_EXE_hyphae-agent"));
    let mut agent = Agent::spawn(
        "n",
        Agent::command(binary, &config)
            .env("NOTIFY_SOCKET", socket.path())
            .env("WATCHDOG_USEC", "200000"),
        &config,
    )
    .expect("start agent");

    socket.expect("READY=1");
    socket.expect("WATCHDOG=1");
    agent.signal(Signal::HUP);
    let seen = socket.expect("READY=1");
    assert!(
        seen.iter().any(|m| m.lines().any(|l| l == "RELOADING=1")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|m| m.contains("MONOTONIC_USEC=")),
        "{seen:?}"
    );
    agent.signal(Signal::TERM);
    socket.expect("STOPPING=1");
    assert_eq!(
        agent.exit_code(DEADLINE).await,
        Some(0),
        "the agent exits 0 after SIGTERM"
    );
}
