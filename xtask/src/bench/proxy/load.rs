//! Driving load at a row: HTTP/1.1 with wrk, HTTP/2 with h2load, their raw output kept under
//! `target/bench/`. Starts no proxy; only the load generator for one run.

use std::fs;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::{Bench, H2_STREAMS_PER_CONNECTION, LOAD_THREADS};
use crate::bench::parse::{Load, parse_h2load, parse_wrk};
use crate::bench::report::{relative, write};
use crate::util;

/// Per-request timeout of wrk: a stalled request counts as an error instead of hanging.
const WRK_REQUEST_TIMEOUT: &str = "5s";

/// HTTP/1.1 driven by wrk, or HTTP/2 (prior knowledge, cleartext) driven by h2load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, keep-alive, driven by wrk.
    Http1,
    /// HTTP/2 with prior knowledge over cleartext, driven by h2load.
    Http2,
}

impl Protocol {
    /// Every protocol, in table order.
    pub const ALL: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

    /// Short name for the table, file names and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::Http2 => "h2",
        }
    }

    /// The program that drives it.
    pub fn load_generator(self) -> &'static str {
        match self {
            Protocol::Http1 => "wrk",
            Protocol::Http2 => "h2load",
        }
    }
}

impl Bench {
    /// Drives `address` for `duration` with the protocol's load generator; its output goes to
    /// `target/bench/<label>.txt`.
    pub fn load(
        &self,
        protocol: Protocol,
        address: SocketAddr,
        duration: Duration,
        label: &str,
    ) -> Result<Load> {
        let url = format!("http://{address}/");
        let secs = duration.as_secs().to_string();
        let connections = self.options.connections.to_string();
        let threads = LOAD_THREADS.to_string();
        let latency_log = self.dir.join(format!("{label}-latency.tsv"));
        let mut command = match protocol {
            Protocol::Http1 => {
                let mut command = Command::new(&self.tools.wrk);
                command.args([
                    "-t",
                    &threads,
                    "-c",
                    &connections,
                    "-d",
                    &format!("{secs}s"),
                    "--timeout",
                    WRK_REQUEST_TIMEOUT,
                    "--latency",
                    &url,
                ]);
                command
            }
            Protocol::Http2 => {
                let mut command = Command::new(&self.tools.h2load);
                command
                    .args(["-t", &threads, "-c", &connections, "-D", &secs])
                    .args(["-m", &H2_STREAMS_PER_CONNECTION.to_string()])
                    .arg("--log-file")
                    .arg(&latency_log)
                    .arg(&url);
                command
            }
        };
        let output = util::capture(&mut command)?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let saved = self.dir.join(format!("{label}.txt"));
        write(
            &saved,
            &format!(
                "$ {}\n{text}{}",
                util::describe(&command),
                String::from_utf8_lossy(&output.stderr)
            ),
        )?;
        ensure!(
            output.status.success(),
            "{} failed with {}; see {}",
            protocol.load_generator(),
            output.status,
            relative(&saved)
        );
        let load = match protocol {
            Protocol::Http1 => parse_wrk(&text),
            Protocol::Http2 => fs::read_to_string(&latency_log)
                .with_context(|| format!("read {}", relative(&latency_log)))
                .and_then(|log| parse_h2load(&text, &log)),
        };
        load.with_context(|| format!("read the results in {}", relative(&saved)))
    }
}
