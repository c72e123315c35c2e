//! The processes a proxy row starts: spawned with their output in `target/bench/`, waited on
//! until they answer, and stopped (SIGTERM, then SIGKILL) when dropped, even on failure.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::procfs::with_descendants;
use crate::bench::report::relative;
use crate::util;

/// Longest a process may take to start answering.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a process may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often start and stop waits poll.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Timeout of one readiness request.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How the child's stdout is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdout {
    /// Into its log file, with stderr.
    Log,
    /// Piped, for the caller to read.
    Pipe,
}

/// A started process and where its output goes.
struct Running {
    /// For messages.
    name: String,
    /// The process.
    child: Child,
    /// Where its stderr goes.
    log: PathBuf,
}

/// Processes the bench started; dropping this stops them all, whether the bench succeeded,
/// failed or panicked.
#[derive(Default)]
pub struct Processes {
    /// In start order; stopped in reverse.
    running: Vec<Running>,
}

impl Processes {
    /// Starts `command` with stderr (and stdout unless piped) appended to `log`.
    pub fn spawn(
        &mut self,
        name: &str,
        command: &mut Command,
        log: &Path,
        stdout: Stdout,
    ) -> Result<&mut Child> {
        let file = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let out = match stdout {
            Stdout::Log => Stdio::from(
                file.try_clone()
                    .with_context(|| format!("reopen {}", log.display()))?,
            ),
            Stdout::Pipe => Stdio::piped(),
        };
        command.stdin(Stdio::null()).stdout(out).stderr(file);
        eprintln!("$ {}", util::describe(command));
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}: {}", util::describe(command)))?;
        self.running.push(Running {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        });
        let last = self.running.len() - 1;
        Ok(&mut self.running[last].child)
    }

    /// Fails, pointing at the log, when any process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        for running in &mut self.running {
            if let Some(status) = running
                .child
                .try_wait()
                .with_context(|| format!("check on {}", running.name))?
            {
                bail!(
                    "{} exited with {status}; see {}",
                    running.name,
                    relative(&running.log)
                );
            }
        }
        Ok(())
    }
}

impl Drop for Processes {
    /// SIGTERM to each process (nginx's master stops its workers), then SIGKILL to whatever is
    /// left after [`STOP_TIMEOUT`], children included.
    fn drop(&mut self) {
        for running in self.running.iter_mut().rev() {
            let pid = running.child.id();
            if matches!(running.child.try_wait(), Ok(Some(_))) {
                continue;
            }
            // Children are only needed if SIGTERM is ignored; without /proc, the process alone.
            let descendants = with_descendants(&[pid]).unwrap_or_else(|_| vec![pid]);
            signal("TERM", &[pid]);
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match running.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                    _ => {
                        eprintln!(
                            "xtask: {} did not stop within {STOP_TIMEOUT:?}; killing it",
                            running.name
                        );
                        signal("KILL", &descendants);
                        if let Err(error) = running.child.wait() {
                            eprintln!("xtask: cannot reap {}: {error}", running.name);
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// Sends `SIG<name>` to `pids`, reporting (not failing on) errors: this runs while cleaning up.
fn signal(name: &str, pids: &[u32]) {
    let mut command = Command::new("kill");
    command
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string));
    match command.output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => eprintln!(
            "xtask: {} failed: {}",
            util::describe(&command),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => eprintln!("xtask: cannot run {}: {error}", util::describe(&command)),
    }
}

/// Polls `GET /` at `address` until it answers 200, failing early if a process exits.
pub fn wait_until_ok(address: SocketAddr, processes: &mut Processes, what: &str) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let last = match http_status(address) {
            Ok(200) => return Ok(()),
            Ok(status) => format!("status {status}"),
            Err(error) => format!("{error:#}"),
        };
        processes.ensure_running()?;
        if Instant::now() >= deadline {
            bail!("{what} at {address} did not answer 200 within {START_TIMEOUT:?}: {last}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The status of one HTTP/1.1 `GET /` to `address`.
fn http_status(address: SocketAddr) -> Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, CHECK_TIMEOUT)
        .with_context(|| format!("connect to {address}"))?;
    stream
        .set_read_timeout(Some(CHECK_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CHECK_TIMEOUT)))
        .context("set socket timeouts")?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .with_context(|| format!("send to {address}"))?;
    let mut status_line = String::new();
    BufReader::new(stream)
        .read_line(&mut status_line)
        .with_context(|| format!("read from {address}"))?;
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP status in {status_line:?}"))
}

/// A free address on 127.0.0.1 for a process to listen on.
pub fn free_address() -> Result<SocketAddr> {
    let port = hyphae_integration::ports::free_ports(1)?
        .pop()
        .context("no free port")?;
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}
