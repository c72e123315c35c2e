//! A child process in its own process group, signalled through rustix and killed, with
//! everything it started, when dropped; and its ready line. Never leaves a process running
//! after its owner is gone, even when a test fails half-way.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rustix::process::{Pid, kill_process, kill_process_group};

use crate::Error;
use crate::eventually::{INTERVAL, wait_for};

pub use rustix::process::Signal;

/// How long a process may take to print its ready line, unless the caller says otherwise.
pub const READY_PATIENCE: Duration = Duration::from_secs(30);

/// A running child process. Dropping it SIGKILLs its whole process group and reaps it.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    /// Set once the child is reaped, so it is never signalled again (its id may be reused).
    exited: Option<ExitStatus>,
}

impl Process {
    /// Starts `command` as `name` in a new process group (so a stray SIGINT to the test does
    /// not reach it, and its own children die with it).
    pub fn spawn(name: &str, command: &mut Command) -> Result<Process, Error> {
        let child = command
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                name: name.to_string(),
                source,
            })?;
        Ok(Process {
            name: name.to_string(),
            child,
            exited: None,
        })
    }

    /// Starts `command` with stdout piped and waits up to `patience` for its first line, its
    /// ready line (hyphae's binaries print their bound addresses there). The rest of stdout
    /// is drained in the background so the child never writes into a closed pipe. A process
    /// that prints nothing in time is killed.
    pub fn spawn_ready(
        name: &str,
        command: &mut Command,
        patience: Duration,
    ) -> Result<(Process, String), Error> {
        let mut process = Process::spawn(name, command.stdout(Stdio::piped()))?;
        let stdout = process
            .child
            .stdout
            .take()
            .expect("stdout was piped just above");
        match first_line(stdout, patience) {
            Some(line) => Ok((process, line)),
            None => match process.try_exit() {
                Some(status) => Err(Error::Exited {
                    name: name.to_string(),
                    status,
                }),
                None => Err(Error::NoReadyLine {
                    name: name.to_string(),
                    waited: patience,
                }),
            },
        }
    }

    /// Like [`Process::spawn_ready`], for a ready line in JSON (`{"ready": {...}}`); returns
    /// the object under `ready`.
    pub fn spawn_ready_json(
        name: &str,
        command: &mut Command,
        patience: Duration,
    ) -> Result<(Process, serde_json::Value), Error> {
        let (process, line) = Process::spawn_ready(name, command, patience)?;
        let bad = |reason: String| Error::BadReadyLine {
            name: name.to_string(),
            line: line.clone(),
            reason,
        };
        let mut value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        match value.get_mut("ready") {
            Some(ready) => Ok((process, ready.take())),
            None => Err(bad("no `ready` key".to_string())),
        }
    }

    /// The name it was started under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process itself (not its group): `TERM`, `HUP`, `STOP`, `CONT`...
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        if self.exited.is_some() {
            return Err(std::io::Error::other(format!("{} has exited", self.name)));
        }
        kill_process(Pid::from_child(&self.child), signal).map_err(std::io::Error::from)
    }

    /// The exit status, if it has exited (reaping it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits up to `patience` for the process to exit on its own; `None` if it still runs.
    pub async fn exited(&mut self, patience: Duration) -> Option<ExitStatus> {
        let what = format!("{} to exit", self.name);
        wait_for(&what, patience, INTERVAL, || {
            let status = self.try_exit();
            async move { status }
        })
        .await
        .ok()
    }

    /// Stops the process the way a supervisor does: SIGTERM (a clean shutdown: a server drains,
    /// nginx's master stops its workers), then, when it has not exited within `patience`,
    /// SIGKILL to its whole group. Its exit status when it ended by itself (or had already
    /// ended); `None` when it had to be killed.
    pub async fn stop(&mut self, patience: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_exit() {
            return Some(status);
        }
        // A process that cannot be signalled is left to the SIGKILL below.
        if self.signal(Signal::TERM).is_ok()
            && let Some(status) = self.exited(patience).await
        {
            return Some(status);
        }
        self.kill();
        None
    }

    /// SIGKILLs the process group (no clean shutdown; a stopped process dies too) and reaps
    /// the process.
    pub fn kill(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        // The group id is the child's id (`process_group(0)`); the child is not reaped yet,
        // so the id still names this group. Errors mean the group is already gone.
        let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    /// The underlying child, for what this type does not wrap.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the first line of `stdout` within `patience` (without its newline); `None` when
/// nothing came in time or the stream closed first. A thread keeps draining the rest.
pub fn first_line(stdout: ChildStdout, patience: Duration) -> Option<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line).ok().filter(|&n| n > 0);
        // The receiver is gone only when the caller stopped waiting; it reports that itself.
        let _ = sender.send(read.map(|_| line.trim_end().to_string()));
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    receiver.recv_timeout(patience).ok().flatten()
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// Long enough to outlast any test; the processes are stopped long before.
    const FOREVER: &str = "sleep 600";
    /// How long a test gives a process to end.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// Whether process `pid` has ended: gone, or a zombie its new parent has not reaped yet.
    fn ended(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn stop_ends_a_process_with_sigterm() {
        let mut process =
            Process::spawn("sleeper", Command::new("sh").args(["-c", FOREVER])).expect("start sh");
        let status = process.stop(PATIENCE).await;
        assert_eq!(status.and_then(|s| s.signal()), Some(Signal::TERM.as_raw()));
        assert_eq!(process.stop(PATIENCE).await, status, "stopping twice");
    }

    #[tokio::test]
    async fn stop_kills_the_group_of_a_process_that_ignores_sigterm() {
        let script = format!("trap '' TERM; {FOREVER} & echo $!; wait");
        let (mut process, child) = Process::spawn_ready(
            "stubborn",
            Command::new("sh").args(["-c", &script]),
            READY_PATIENCE,
        )
        .expect("start sh");
        assert_eq!(process.stop(Duration::from_millis(200)).await, None);
        wait_for(
            "its child to die with the group",
            PATIENCE,
            INTERVAL,
            || {
                let gone = ended(&child);
                async move { gone.then_some(()) }
            },
        )
        .await
        .expect("the group is killed");
    }
}
