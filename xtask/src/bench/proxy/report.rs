//! The proxy bench's report: the table, the ratios to haproxy (and the mesh's to its peer, the
//! haproxy chain over mutual TLS), the TLS handshakes, and `proxy.json`. Reads rows; measures
//! nothing.

use std::process::Command;

use serde_json::{Value, json};

use super::fixed_rate::{self, RateRow};
use super::handshake::{HANDSHAKES, HandshakeCost};
use super::setup::Setup;
use super::{
    BACKEND_WORKERS, Bench, H2_STREAMS_PER_CONNECTION, LOAD_THREADS, PROXY_THREADS, Row, WARMUP,
};
use crate::bench::report::{self, MILLIS_DECIMALS, SECONDS_DECIMALS, first_line, rounded};

/// Decimal places of ratios in `proxy.json`.
const RATIO_DECIMALS: i32 = 3;
/// Decimal places of rates (requests per second, per CPU-second) in `proxy.json`.
const RATE_DECIMALS: i32 = 2;
/// Decimal places of microseconds in `proxy.json`.
const MICROS_DECIMALS: i32 = 1;

/// A row's ratios to a peer's row of the same protocol.
struct Ratios {
    /// Throughput ratio (higher is better).
    requests_per_second: f64,
    /// p99 latency ratio (lower is better).
    p99: f64,
    /// Requests per proxy CPU-second ratio (higher is better); `None` without a proxy.
    requests_per_cpu_second: Option<f64>,
    /// Peak memory ratio (lower is better); `None` without a proxy.
    rss_peak: Option<f64>,
}

/// `row` compared with `peer`'s row of the same protocol; `None` before `peer` has a row.
fn versus(row: &Row, rows: &[Row], peer: Setup) -> Option<Ratios> {
    let haproxy = rows
        .iter()
        .find(|r| r.setup == peer && r.protocol == row.protocol)?;
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    Some(Ratios {
        requests_per_second: ratio(
            row.load.requests_per_second,
            haproxy.load.requests_per_second,
        )?,
        p99: ratio(row.load.p99_ms, haproxy.load.p99_ms)?,
        requests_per_cpu_second: row
            .requests_per_cpu_second()
            .zip(haproxy.requests_per_cpu_second())
            .and_then(|(a, b)| ratio(a, b)),
        rss_peak: row
            .proxy
            .as_ref()
            .zip(haproxy.proxy.as_ref())
            .and_then(|(a, b)| ratio(a.rss_peak_kib as f64, b.rss_peak_kib as f64)),
    })
}

/// How this process, the handshake client, was built: a debug build runs rustls unoptimized,
/// which inflates the wall and client columns.
fn client_build() -> &'static str {
    if cfg!(debug_assertions) {
        "debug, rustls unoptimized"
    } else {
        "release"
    }
}

impl Bench {
    /// The human-readable report: settings, the table, ratios to haproxy and what each path
    /// is.
    pub fn table(&self, rows: &[Row], handshakes: &[HandshakeCost]) -> String {
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let mut out = format!(
            "\nproxy benchmark: {} s per row after {} s warm-up, {} connections, {} load thread, \
         proxies on {} thread, {} CPUs\n\n",
            self.options.duration.as_secs(),
            WARMUP.as_secs(),
            self.options.connections,
            LOAD_THREADS,
            PROXY_THREADS,
            cpus
        );
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        let dash = || "-".to_string();
        out.push_str(&format!(
            "{:<18} {:<5} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10} {:>10} {:>10}\n",
            "path",
            "proto",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "proxy CPU",
            "req/CPU-s",
            "RSS idle",
            "RSS peak"
        ));
        for row in rows {
            let cost = row.proxy.as_ref();
            out.push_str(&format!(
                "{:<18} {:<5} {:>9.0} {:>9.2} {:>9.2} {:>7} {:>9} {:>10} {:>10} {:>10}\n",
                row.setup.name(),
                row.protocol.name(),
                row.load.requests_per_second,
                row.load.p50_ms,
                row.load.p99_ms,
                row.load.errors,
                cost.map_or_else(dash, |c| format!("{:.2} s", c.cpu_seconds)),
                row.requests_per_cpu_second()
                    .map_or_else(dash, |r| format!("{r:.0}")),
                cost.map_or_else(dash, |c| mib(c.rss_idle_kib)),
                cost.map_or_else(dash, |c| mib(c.rss_peak_kib)),
            ));
        }
        let comparisons = [
            (
                Setup::Haproxy,
                &rows
                    .iter()
                    .filter(|r| r.setup != Setup::Haproxy)
                    .collect::<Vec<_>>(),
            ),
            (
                Setup::HaproxyChainTls,
                &rows.iter().filter(|r| r.setup == Setup::Mesh).collect(),
            ),
            (
                Setup::HaproxyChainTlsHttp1,
                &rows.iter().filter(|r| r.setup == Setup::Mesh).collect(),
            ),
        ];
        let times = |r: f64| format!("{r:.2}x");
        for (peer, compared) in comparisons {
            out.push_str(&format!(
                "\nvs {} (same protocol; req/s and req/CPU-s: higher is better, p99 and RSS: \
                 lower)\n{:<18} {:<5} {:>9} {:>9} {:>10} {:>10}\n",
                peer.name(),
                "path",
                "proto",
                "req/s",
                "p99",
                "req/CPU-s",
                "RSS peak"
            ));
            for row in compared.iter() {
                if let Some(r) = versus(row, rows, peer) {
                    out.push_str(&format!(
                        "{:<18} {:<5} {:>9} {:>9} {:>10} {:>10}\n",
                        row.setup.name(),
                        row.protocol.name(),
                        times(r.requests_per_second),
                        times(r.p99),
                        r.requests_per_cpu_second.map_or_else(dash, times),
                        r.rss_peak.map_or_else(dash, times),
                    ));
                }
            }
        }
        out.push_str(&format!(
            "\nTLS handshakes at the hop between the two proxies: {HANDSHAKES} new connections per \
             kind, one after another,\nfrom a client in this process (rustls on ring, TLS 1.3, \
             client certificate); each includes the TCP connect and the\nserver's first HTTP/2 \
             bytes; the client is this xtask build ({client_build}), so only the server column \
             compares\nthe proxies. Microseconds per connection:\n{:<18} {:<8} {:>9} {:>9} {:>11} {:>11}\n",
            "path",
            "kind",
            "resumed",
            "wall",
            "server CPU",
            "client CPU",
            client_build = client_build(),
        ));
        for cost in handshakes {
            out.push_str(&format!(
                "{:<18} {:<8} {:>9} {:>9.0} {:>11.0} {:>11.0}\n",
                cost.setup.name(),
                cost.kind.name(),
                format!("{}/{}", cost.resumed, cost.connections),
                cost.wall_micros,
                cost.server_cpu_micros,
                cost.client_cpu_micros,
            ));
        }
        out.push_str(
            "\npaths (h1: wrk; h2: h2load, prior knowledge; every proxy speaks HTTP/1.1 to the \
         backend):\n",
        );
        for setup in Setup::ALL {
            out.push_str(&format!("  {:<18} {}\n", setup.name(), setup.path()));
        }
        out.push_str(
            "proxy CPU: user+system seconds of every proxy process during the measured run \
         (both agents for the mesh, both haproxy for a chain, nginx master and worker); RSS \
         summed the same way, peak is VmHWM. TLS server CPU: the host agent, or the inner \
         haproxy.\n",
        );
        out
    }

    /// The machine-readable report.
    pub fn json(&self, rows: &[Row], handshakes: &[HandshakeCost], at_rate: &[RateRow]) -> Value {
        let ratio = |x: f64| rounded(x, RATIO_DECIMALS);
        let rate = |x: f64| rounded(x, RATE_DECIMALS);
        let entries: Vec<Value> = rows
            .iter()
            .map(|row| {
                let cost = row.proxy.as_ref();
                let ratios = |peer: Setup| {
                    versus(row, rows, peer).map(|r| {
                        json!({
                            "requestsPerSecond": ratio(r.requests_per_second),
                            "latencyP99": ratio(r.p99),
                            "requestsPerProxyCpuSecond": r.requests_per_cpu_second.map(ratio),
                            "rssPeak": r.rss_peak.map(ratio),
                        })
                    })
                };
                json!({
                    "path": row.setup.name(),
                    "description": row.setup.path(),
                    "protocol": row.protocol.name(),
                    "loadGenerator": row.protocol.load_generator(),
                    "requests": row.load.requests,
                    "errors": row.load.errors,
                    "requestsPerSecond": rate(row.load.requests_per_second),
                    "latencyP50Ms": rounded(row.load.p50_ms, MILLIS_DECIMALS),
                    "latencyP99Ms": rounded(row.load.p99_ms, MILLIS_DECIMALS),
                    "proxyProcesses": cost.map(|c| c.processes),
                    "proxyCpuSeconds": cost.map(|c| rounded(c.cpu_seconds, SECONDS_DECIMALS)),
                    "requestsPerProxyCpuSecond": row.requests_per_cpu_second().map(rate),
                    "rssIdleKib": cost.map(|c| c.rss_idle_kib),
                    "rssPeakKib": cost.map(|c| c.rss_peak_kib),
                    "backendCpuSeconds": rounded(row.backend_cpu_seconds, SECONDS_DECIMALS),
                    "vsHaproxy": ratios(Setup::Haproxy),
                    "vsHaproxyChainTls": ratios(Setup::HaproxyChainTls),
                    "vsHaproxyChainTlsHttp1": ratios(Setup::HaproxyChainTlsHttp1),
                })
            })
            .collect();
        json!({
            "benchmark": "proxy",
            "commit": report::commit(),
            "settings": {
                "durationSeconds": self.options.duration.as_secs(),
                "warmupSeconds": WARMUP.as_secs(),
                "connections": self.options.connections,
                "loadThreads": LOAD_THREADS,
                "h2StreamsPerConnection": H2_STREAMS_PER_CONNECTION,
                "proxyThreads": PROXY_THREADS,
                "backendWorkers": BACKEND_WORKERS,
            },
            "machine": report::machine(),
            "versions": {
                "hyphae-agent": first_line(Command::new(&self.agent).arg("--version")),
                "hyphae-agent-build": self.agent_build.name(),
                "haproxy": first_line(Command::new(&self.tools.haproxy).arg("-v")),
                "nginx": first_line(Command::new(&self.tools.nginx).arg("-v")),
                "wrk": first_line(Command::new(&self.tools.wrk).arg("-v")),
                "h2load": first_line(Command::new(&self.tools.h2load).arg("--version")),
                "oha": first_line(Command::new(&self.tools.oha).arg("--version")),
            },
            "rows": entries,
            "fixedRate": fixed_rate::json(at_rate, self.options.rate),
            "tlsHandshakes": handshakes.iter().map(|cost| {
                let micros = |x: f64| rounded(x, MICROS_DECIMALS);
                json!({
                    "path": cost.setup.name(),
                    "kind": cost.kind.name(),
                    "connections": cost.connections,
                    "resumed": cost.resumed,
                    "wallMicrosPerConnection": micros(cost.wall_micros),
                    "serverCpuMicrosPerConnection": micros(cost.server_cpu_micros),
                    "clientCpuMicrosPerConnection": micros(cost.client_cpu_micros),
                    "clientBuild": client_build(),
                })
            }).collect::<Vec<_>>(),
        })
    }
}
