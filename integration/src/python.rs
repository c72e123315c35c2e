//! Real peers written in Python (hypercorn, h11, grpcio, websockets), started from a script
//! that binds 127.0.0.1 and prints its port as its ready line. `cargo xtask test` installs the
//! packages; a missing one fails the test with that hint, never skips it.

use std::path::Path;
use std::process::Command;

use crate::process::{Process, READY_PATIENCE};

/// Starts `python3 script args...` and returns it with the port it printed.
pub fn python_server(script: &Path, args: &[&str]) -> (Process, u16) {
    let name = script.file_name().map_or_else(
        || script.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let hint = "are the Python test peers installed? run `cargo xtask test`";
    let (server, line) = Process::spawn_ready(
        &name,
        Command::new("python3").arg(script).args(args),
        READY_PATIENCE,
    )
    .unwrap_or_else(|e| panic!("{e} ({hint})"));
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name} did not start: {line:?} ({hint})"));
    (server, port)
}
