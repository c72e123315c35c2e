//! Small helpers shared by subcommands: locating the workspace and running commands loudly.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The `cargo` that is running us.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

/// Runs `command`, streaming its output; fails when it fails.
pub fn run(command: &mut Command) -> Result<()> {
    eprintln!("$ {}", describe(command));
    let status = command
        .status()
        .with_context(|| format!("cannot start {}", describe(command)))?;
    if !status.success() {
        bail!("{} failed with {status}", describe(command));
    }
    Ok(())
}

/// Runs `command` and captures its output, whatever its exit status.
pub fn capture(command: &mut Command) -> Result<Output> {
    command
        .output()
        .with_context(|| format!("cannot start {}", describe(command)))
}

/// A shell-like rendering of a command for logs.
pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Child processes, killed on drop.
#[derive(Default)]
pub struct Processes(Vec<(String, Child)>);

impl Processes {
    /// Adopts a child under `name`.
    pub fn add(&mut self, name: &str, child: Child) {
        self.0.push((name.to_string(), child));
    }

    /// Kills and reaps the child called `name`.
    pub fn stop(&mut self, name: &str) {
        if let Some(index) = self.0.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.0.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("find a free port")?
        .port())
}

/// Reads a child's first line on stdout (its ready line) within `timeout`; a thread keeps
/// draining the rest so the child never writes into a closed pipe.
pub fn ready_line(stdout: ChildStdout, timeout: Duration) -> Result<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line).map(|_| line);
        // The receiver is gone only when the caller stopped waiting; it reports that itself.
        let _ = sender.send(read);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    receiver
        .recv_timeout(timeout)
        .map_err(|_| anyhow::anyhow!("no ready line within {timeout:?}"))?
        .context("read the ready line")
}
