//! The control-plane node speaks systemd's notify protocol: READY=1 once it serves, WATCHDOG=1
//! while Raft runs, STOPPING=1 on SIGTERM, then a clean exit. A test socket stands in for
//! systemd.

use std::process::{Command, Stdio};

use hyphae_integration::lone_node::LoneNode;
use hyphae_integration::systemd::NotifySocket;
use hyphae_integration::{DEADLINE, Process, Signal};

#[tokio::test]
async fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = NotifySocket::bind(dir.path()).expect("bind notify socket");
    let files = LoneNode::write(dir.path(), "cp", 1).expect("write config");
    let mut node = Process::spawn(
        "node",
        Command::new(env!("CARGO_BIN_EXE_hyphae-control-plane"))
            .arg("--config")
            .arg(&files.config)
            .arg("--init")
            .env("NOTIFY_SOCKET", socket.path())
            .env("WATCHDOG_USEC", "200000")
            .env("HYPHAE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("start node");
    socket.expect("READY=1");
    socket.expect("WATCHDOG=1");
    node.signal(Signal::TERM).expect("signal the node");
    socket.expect("STOPPING=1");
    let status = node.exited(DEADLINE).await;
    assert!(status.is_some(), "node did not exit after SIGTERM");
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}
