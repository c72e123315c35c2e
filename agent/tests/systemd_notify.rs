//! The agent speaks systemd's notify protocol: READY=1 once listening, RELOADING=1 then READY=1
//! around a SIGHUP, WATCHDOG=1 while alive, STOPPING=1 on SIGTERM. A test socket stands in for
//! systemd.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Waits for a notification containing `wanted`, returning every message seen until then.
fn expect(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buffer) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                let found = message.lines().any(|l| l == wanted);
                seen.push(message);
                if found {
                    return seen;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    panic!("no {wanted} within {DEADLINE:?}; saw {seen:?}");
}

#[test]
fn ready_reloading_watchdog_and_stopping_reach_the_notify_socket() {
    let scratch = Scratch::new("notify");
    let socket_path = scratch.0.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("socket timeout");
    let config = scratch.0.join("agent.yaml");
    std::fs::write(
        &config,
        "kind: AgentConfig\nmetadata: {name: n}\nspec:\n  listeners: {admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}\n",
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyphae-agent"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("HYPHAE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start agent");
    let pid = child.id().to_string();
    let kill = |signal: &str| {
        assert!(
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(&pid)
                .status()
                .expect("kill")
                .success()
        );
    };

    expect(&socket, "READY=1");
    expect(&socket, "WATCHDOG=1");
    kill("HUP");
    let seen = expect(&socket, "READY=1");
    assert!(
        seen.iter().any(|m| m.lines().any(|l| l == "RELOADING=1")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|m| m.contains("MONOTONIC_USEC=")),
        "{seen:?}"
    );
    kill("TERM");
    expect(&socket, "STOPPING=1");
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
