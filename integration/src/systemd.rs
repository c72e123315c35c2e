//! A stand-in for systemd's notify socket: a binary started with `NOTIFY_SOCKET` pointing at it
//! sends its `READY=1`, `WATCHDOG=1`, `STOPPING=1`... here, and tests wait for each in turn.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::eventually::DEADLINE;

/// How long one receive waits before the deadline is checked again.
const RECEIVE_SLICE: Duration = Duration::from_millis(100);

/// A bound notify socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds `dir/notify.sock`.
    pub fn bind(dir: &Path) -> std::io::Result<NotifySocket> {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path)?;
        socket.set_read_timeout(Some(RECEIVE_SLICE))?;
        Ok(NotifySocket { socket, path })
    }

    /// Its path: the value of `NOTIFY_SOCKET` for the process under test.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to [`DEADLINE`] for a message with the line `wanted` (such as `READY=1`);
    /// returns every message received until then, that one included. Fails the test when
    /// none comes.
    pub fn expect(&self, wanted: &str) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            match self.socket.recv(&mut buffer) {
                Ok(n) => {
                    let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    let found = message.lines().any(|l| l == wanted);
                    seen.push(message);
                    if found {
                        return seen;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
        panic!("no {wanted} within {DEADLINE:?}; saw {seen:?}");
    }
}
