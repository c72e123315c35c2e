//! The control-plane node speaks systemd's notify protocol: READY=1 once it serves, WATCHDOG=1
//! while Raft runs, STOPPING=1 on SIGTERM, then a clean exit. A test socket stands in for
//! systemd.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

fn expect(socket: &UnixDatagram, wanted: &str) {
    let deadline = Instant::now() + DEADLINE;
    let mut buffer = [0u8; 4096];
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            if message.lines().any(|l| l == wanted) {
                return;
            }
            seen.push(message);
        }
    }
    panic!("no {wanted} within {DEADLINE:?}; saw {seen:?}");
}

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("socket timeout");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let config = dir.path().join("cp.yaml");
    std::fs::write(
        &config,
        format!(
            "kind: ControlPlaneConfig\nmetadata: {{name: cp}}\nspec:\n  id: 1\n  listen: 127.0.0.1:{port}\n  dataDir: {}\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyphae-control-plane"))
        .arg("--config")
        .arg(&config)
        .arg("--init")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("HYPHAE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node");
    expect(&socket, "READY=1");
    expect(&socket, "WATCHDOG=1");
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(killed.success());
    expect(&socket, "STOPPING=1");
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(Instant::now() < deadline, "node did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
