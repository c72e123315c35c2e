//! Why starting a process (an agent, a node, a peer), or preparing what it needs, failed.
//! Every variant names the process or path and what to look at; nothing here panics, so xtask
//! can report it.

use std::time::Duration;

/// A process that could not be started or did not report that it was ready.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be run at all.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// The process, as the caller named it.
        name: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// It printed no line on stdout in time (it failed to start, or hangs).
    #[error("{name} printed no ready line within {waited:?} (it failed to start; see its log)")]
    NoReadyLine {
        /// The process.
        name: String,
        /// How long it was given.
        waited: Duration,
    },
    /// It exited before it printed its ready line (a bad config, a port in use...).
    #[error("{name} exited with {status} before it was ready (see its log or stderr)")]
    Exited {
        /// The process.
        name: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// Its first line is not the ready line expected.
    #[error("{name} did not start: its first line is {line:?}, not a ready line ({reason})")]
    BadReadyLine {
        /// The process.
        name: String,
        /// What it printed.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or directory the launch needs could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A test file system could not be mounted.
    #[error("cannot mount a tmpfs on {path}: {reason}")]
    Mount {
        /// The mount point.
        path: String,
        /// What failed.
        reason: String,
    },
    /// No port could be reserved.
    #[error("cannot reserve a loopback port: {0}")]
    Port(std::io::Error),
    /// The cluster's nodes did not agree on a leader in time.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// A network namespace, or a link or route in one, could not be set up.
    #[error("cannot set up the test's namespaces: `{step}` failed: {reason}")]
    Namespace {
        /// The command that failed.
        step: String,
        /// What it said.
        reason: String,
    },
    /// The cluster's certificates or join tokens could not be had.
    #[error("cluster credentials: {0}")]
    Credentials(String),
}
