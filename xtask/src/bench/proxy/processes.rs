//! The processes a proxy row starts, run by the test-support library (each in its own process
//! group, killed with it on drop, even on failure): their output in `target/bench/`, waited on
//! until they answer, stopped with SIGTERM and then SIGKILL once measured.

use std::cell::Cell;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyphae_integration::Process;
use hyphae_integration::eventually::wait_for;
use hyphae_integration::http::request;
use tokio::runtime::Runtime;

use crate::bench::report::relative;
use crate::util;

/// Longest a process may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a process may take to exit after SIGTERM before its group gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the start wait polls.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Timeout of one readiness request.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Points `command`'s stdout and stderr at a new file `log` (a launcher that reads the ready
/// line pipes stdout again), closes its stdin and prints the command line.
pub fn logged<'c>(command: &'c mut Command, log: &Path) -> Result<&'c mut Command> {
    let file = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let out = file
        .try_clone()
        .with_context(|| format!("reopen {}", log.display()))?;
    command.stdin(Stdio::null()).stdout(out).stderr(file);
    eprintln!("$ {}", util::describe(command));
    Ok(command)
}

/// The name a process logging to `log` goes by, so every message about it says where to look.
pub fn named(name: &str, log: &Path) -> String {
    format!("{name} (log: {})", relative(log))
}

/// Starts `command` as `name` with its output in `log`.
pub fn spawn(name: &str, command: &mut Command, log: &Path) -> Result<Process> {
    Ok(Process::spawn(&named(name, log), logged(command, log)?)?)
}

/// Fails, naming it, when any of `processes` has exited.
pub fn ensure_running<'p>(processes: impl IntoIterator<Item = &'p mut Process>) -> Result<()> {
    for process in processes {
        if let Some(status) = process.try_exit() {
            bail!("{} exited with {status}", process.name());
        }
    }
    Ok(())
}

/// Stops each of `processes` in turn: SIGTERM (nginx's master stops its workers, an agent
/// drains), then SIGKILL to its group after [`STOP_TIMEOUT`].
pub async fn stop<'p>(processes: impl IntoIterator<Item = &'p mut Process>) {
    for process in processes {
        if process.stop(STOP_TIMEOUT).await.is_none() {
            eprintln!(
                "xtask: {} did not stop within {STOP_TIMEOUT:?}; killed it",
                process.name()
            );
        }
    }
}

/// Polls `GET /` at `address` until it answers 200, failing early if one of `processes` exits.
pub fn wait_until_ok(
    runtime: &Runtime,
    address: SocketAddr,
    processes: &mut [&mut Process],
    what: &str,
) -> Result<()> {
    let last_status = Cell::new(None);
    let answered = runtime.block_on(wait_for(what, START_TIMEOUT, POLL_INTERVAL, || {
        let running = ensure_running(processes.iter_mut().map(|p| &mut **p));
        let last_status = &last_status;
        async move {
            if let Err(exited) = running {
                return Some(Err(exited));
            }
            let answer = tokio::time::timeout(CHECK_TIMEOUT, request("GET", address, "/", ""));
            let status = answer.await.ok().flatten().map(|a| a.status.as_u16());
            last_status.set(status);
            (status == Some(200)).then_some(Ok(()))
        }
    }));
    match answered {
        Ok(result) => result,
        Err(_) => match last_status.get() {
            Some(status) => bail!(
                "{what} at {address} did not answer 200 within {START_TIMEOUT:?}: status {status}"
            ),
            None => bail!("{what} at {address} did not answer within {START_TIMEOUT:?}"),
        },
    }
}
