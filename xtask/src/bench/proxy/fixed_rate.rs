//! The fixed-rate rows: every path driven at one steady rate (`--rate`, default 10,000 requests
//! per second) by oha with its coordinated-omission correction, so each request's latency runs
//! from when it was due, not from when a stalled connection got round to sending it (wrk's and
//! h2load's closed loops hide such stalls). Reports p50 and p99, what the proxy adds to the
//! direct path, the proxy's CPU per request and its peak memory at that rate. A closed loop
//! measures CPU at saturation, where every wake-up finds many requests; at a steady rate most
//! wake-ups find one, which is how a host's proxy spends most of its life.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use super::load::Protocol;
use super::processes::stop;
use super::setup::Setup;
use super::{Bench, WARMUP};
use crate::bench::procfs::{cpu_seconds, memory_kib, with_descendants};
use crate::bench::report::{MILLIS_DECIMALS, relative, rounded, write};
use crate::util;

/// What oha measured at a fixed rate.
pub struct RateRow {
    /// The way requests took.
    pub setup: Setup,
    /// The protocol the client spoke.
    pub protocol: Protocol,
    /// Requests answered per second (the asked rate when the path keeps up).
    pub requests_per_second: f64,
    /// Share of requests answered with a status (not failed).
    pub success_rate: f64,
    /// Median latency from each request's due time.
    pub p50_ms: f64,
    /// 99th percentile latency from each request's due time.
    pub p99_ms: f64,
    /// The proxies' user and system CPU per request answered, in microseconds; `None` for
    /// direct. `/proc` counts CPU in clock ticks (10 ms), about 1% of a 10-second run here.
    pub cpu_micros_per_request: Option<f64>,
    /// The proxies' peak resident memory (`VmHWM`) at the end of the run; `None` for direct.
    pub rss_peak_kib: Option<u64>,
}

impl Bench {
    /// Starts `setup`, drives it at the fixed rate over `protocol` for `duration` and stops it.
    pub fn measure_fixed_rate(
        &self,
        setup: Setup,
        protocol: Protocol,
        duration: Duration,
    ) -> Result<RateRow> {
        eprintln!(
            "xtask: bench {} over {} at {} req/s",
            setup.name(),
            protocol.name(),
            self.options.rate
        );
        let mut target = self.start(setup)?;
        let address = target.address(protocol);
        let label = format!("{}-{}-rate", setup.slug(), protocol.name());
        self.oha(protocol, address, WARMUP, &format!("{label}-warmup"))?;
        let proxies = with_descendants(&target.proxies)?;
        let cpu_before = cpu_seconds(&proxies, self.ticks_per_second)?;
        let report = self.oha(protocol, address, duration, &label)?;
        let cpu = cpu_seconds(&proxies, self.ticks_per_second)? - cpu_before;
        let rss_peak_kib = if proxies.is_empty() {
            None
        } else {
            Some(memory_kib(&proxies, "VmHWM")?)
        };
        self.runtime.block_on(stop(target.processes().rev()));
        let answered = answered(&report);
        let cpu_micros_per_request =
            (!proxies.is_empty() && answered > 0).then(|| cpu * 1e6 / answered as f64);
        let number = |pointer: &str| {
            report
                .pointer(pointer)
                .and_then(Value::as_f64)
                .with_context(|| format!("oha's report has no {pointer}; see target/bench/"))
        };
        Ok(RateRow {
            setup,
            protocol,
            requests_per_second: number("/summary/requestsPerSec")?,
            success_rate: number("/summary/successRate")?,
            p50_ms: number("/latencyPercentiles/p50")? * 1000.0,
            p99_ms: number("/latencyPercentiles/p99")? * 1000.0,
            cpu_micros_per_request,
            rss_peak_kib,
        })
    }

    /// Runs oha at the fixed rate against `address` for `duration`; its JSON report, also
    /// kept in `target/bench/<label>.json`.
    fn oha(
        &self,
        protocol: Protocol,
        address: SocketAddr,
        duration: Duration,
        label: &str,
    ) -> Result<Value> {
        let mut command = Command::new(&self.tools.oha);
        command
            .args(["-z", &format!("{}s", duration.as_secs())])
            .args(["-c", &self.options.connections.to_string()])
            .args(["-q", &self.options.rate.to_string()])
            .args([
                "--latency-correction",
                "--no-tui",
                "--output-format",
                "json",
            ]);
        if protocol == Protocol::Http2 {
            command.arg("--http2");
        }
        command.arg(format!("http://{address}/"));
        let output = util::capture(&mut command)?;
        let saved = self.dir.join(format!("{label}.json"));
        write(&saved, &String::from_utf8_lossy(&output.stdout))?;
        ensure!(
            output.status.success(),
            "oha failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout)
            .with_context(|| format!("read oha's report in {}", relative(&saved)))
    }
}

/// Requests oha got an answer to, whatever its status.
fn answered(report: &Value) -> u64 {
    report
        .get("statusCodeDistribution")
        .and_then(Value::as_object)
        .map_or(0, |statuses| {
            statuses.values().filter_map(Value::as_u64).sum()
        })
}

/// The fixed-rate table: latency, what each proxy adds to the direct path, its CPU per request
/// and its memory.
pub fn table(rows: &[RateRow], rate: u32) -> String {
    let mut out = format!(
        "\nat a fixed {rate} req/s (oha, latency from each request's due time):\n\
         {:<18} {:<5} {:>9} {:>8} {:>9} {:>9} {:>11} {:>11} {:>11} {:>10}\n",
        "path",
        "proto",
        "req/s",
        "ok",
        "p50 ms",
        "p99 ms",
        "+p50 ms",
        "+p99 ms",
        "CPU us/req",
        "RSS peak"
    );
    for row in rows {
        let direct = rows
            .iter()
            .find(|r| r.setup == Setup::Direct && r.protocol == row.protocol);
        let added = |value: f64, base: fn(&RateRow) -> f64| match direct {
            Some(direct) if row.setup != Setup::Direct => format!("{:.2}", value - base(direct)),
            _ => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<18} {:<5} {:>9.0} {:>7.2}% {:>9.2} {:>9.2} {:>11} {:>11} {:>11} {:>10}\n",
            row.setup.name(),
            row.protocol.name(),
            row.requests_per_second,
            row.success_rate * 100.0,
            row.p50_ms,
            row.p99_ms,
            added(row.p50_ms, |d| d.p50_ms),
            added(row.p99_ms, |d| d.p99_ms),
            row.cpu_micros_per_request
                .map_or("-".to_string(), |micros| format!("{micros:.1}")),
            row.rss_peak_kib.map_or("-".to_string(), |kib| format!(
                "{:.1} MiB",
                kib as f64 / 1024.0
            )),
        ));
    }
    out
}

/// The fixed-rate rows for `proxy.json`.
pub fn json(rows: &[RateRow], rate: u32) -> Value {
    let ms = |x: f64| rounded(x, MILLIS_DECIMALS);
    json!({
        "rate": rate,
        "loadGenerator": "oha --latency-correction",
        "rows": rows.iter().map(|row| json!({
            "path": row.setup.name(),
            "protocol": row.protocol.name(),
            "requestsPerSecond": rounded(row.requests_per_second, 1),
            "successRate": row.success_rate,
            "latencyP50Ms": ms(row.p50_ms),
            "latencyP99Ms": ms(row.p99_ms),
            "proxyCpuMicrosPerRequest": row.cpu_micros_per_request.map(|m| rounded(m, 2)),
            "rssPeakKib": row.rss_peak_kib,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answered_status_counts_as_a_request_and_a_report_without_them_as_none() {
        let report = json!({ "statusCodeDistribution": { "200": 99_990, "502": 7 } });
        assert_eq!(answered(&report), 99_997);
        assert_eq!(answered(&json!({ "summary": {} })), 0);
    }
}
