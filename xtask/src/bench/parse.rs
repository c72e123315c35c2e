//! Reading the load generators' reports (wrk, h2load) and numbers out of tools' output. Text in,
//! figures out: nothing here runs a program.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};

use super::percentile::percentile;

/// What a load generator measured.
#[derive(Clone, Debug, Default)]
pub struct Load {
    /// Requests completed (answered, whatever the status).
    pub requests: u64,
    /// Requests that failed: non-2xx/3xx answers, socket errors, resets, timeouts.
    pub errors: u64,
    /// Throughput as the load generator computed it.
    pub requests_per_second: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
}

/// Reads wrk's `--latency` report.
pub fn parse_wrk(text: &str) -> Result<Load> {
    let mut load = Load::default();
    let (mut p50, mut p99, mut rps, mut requests) = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("50%") {
            p50 = Some(wrk_time_ms(value.trim())?);
        } else if let Some(value) = line.strip_prefix("99%") {
            p99 = Some(wrk_time_ms(value.trim())?);
        } else if let Some(value) = line.strip_prefix("Requests/sec:") {
            rps = Some(number(value.trim(), "Requests/sec")?);
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            requests = Some(number(count, "requests")?);
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.errors += number::<u64>(value.trim(), "non-2xx responses")?;
        } else if let Some(value) = line.strip_prefix("Socket errors:") {
            // `connect 0, read 0, write 0, timeout 0`
            for part in value.split(',') {
                let count = part.split_whitespace().last().unwrap_or("0");
                load.errors += number::<u64>(count, "socket errors")?;
            }
        }
    }
    load.p50_ms = p50.context("wrk printed no 50% latency")?;
    load.p99_ms = p99.context("wrk printed no 99% latency")?;
    load.requests_per_second = rps.context("wrk printed no Requests/sec")?;
    load.requests = requests.context("wrk printed no request count")?;
    Ok(load)
}

/// A wrk duration (`612.00us`, `1.07ms`, `2.00s`) in milliseconds.
fn wrk_time_ms(text: &str) -> Result<f64> {
    const UNITS: [(&str, f64); 5] = [
        ("us", 0.001),
        ("ms", 1.0),
        ("s", 1000.0),
        ("m", 60_000.0),
        ("h", 3_600_000.0),
    ];
    UNITS
        .iter()
        .find_map(|(unit, scale)| Some((text.strip_suffix(unit)?, scale)))
        .with_context(|| format!("unknown unit in wrk time `{text}`"))
        .and_then(|(value, scale)| Ok(number::<f64>(value, "latency")? * scale))
}

/// Reads h2load's report and its per-request log (tab-separated: start time in µs, status,
/// duration in µs) for the percentiles, which h2load does not print.
pub fn parse_h2load(text: &str, latency_log: &str) -> Result<Load> {
    let mut load = Load::default();
    let (mut rps, mut requests) = (None, None);
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // `finished in 3.00s, 31085.67 req/s, 1.21MB/s`
            let value = rest
                .split(", ")
                .find_map(|part| part.strip_suffix(" req/s"))
                .context("h2load printed no req/s")?;
            rps = Some(number(value, "req/s")?);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // `93257 total, 93307 started, 93257 done, 93257 succeeded, 0 failed, ...`
            let counts: BTreeMap<&str, &str> = rest
                .split(", ")
                .filter_map(|part| part.split_once(' ').map(|(n, what)| (what, n)))
                .collect();
            let count = |what: &str| {
                counts
                    .get(what)
                    .with_context(|| format!("h2load printed no `{what}` count"))
                    .and_then(|n| number::<u64>(n, what))
            };
            requests = Some(count("done")?);
            // `failed` includes `errored` and non-2xx/3xx answers.
            load.errors = count("failed")? + count("timeout")?;
        }
    }
    load.requests_per_second = rps.context("h2load printed no `finished in` line")?;
    load.requests = requests.context("h2load printed no `requests:` line")?;
    let mut micros: Vec<u64> = latency_log
        .lines()
        .filter_map(|line| line.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    ensure!(!micros.is_empty(), "h2load logged no request");
    micros.sort_unstable();
    let percentile_ms = |p: f64| percentile(&micros, p).map_or(0.0, |us| us as f64 / 1000.0);
    load.p50_ms = percentile_ms(50.0);
    load.p99_ms = percentile_ms(99.0);
    Ok(load)
}

/// Parses a number from a tool's output, saying which one on failure.
pub fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T> {
    text.trim()
        .parse()
        .ok()
        .with_context(|| format!("`{text}` is not a number ({what})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 3s test @ http://127.0.0.1:40547/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.08ms    1.19ms  18.70ms   84.07%
    Req/Sec    16.05k     1.98k   24.29k    83.33%
  Latency Distribution
     50%  952.00us
     75%    3.52ms
     90%    4.08ms
     99%    1.20s
  47993 requests in 3.01s, 7.00MB read
  Non-2xx or 3xx responses: 7
  Socket errors: connect 1, read 2, write 0, timeout 3
Requests/sec:  15968.91
Transfer/sec:      2.33MB
";

    const H2LOAD: &str = "finished in 3.01s, 14523.00 req/s, 796.91KB/s
requests: 43569 total, 43619 started, 43569 done, 43560 succeeded, 9 failed, 2 errored, 1 timeout
status codes: 43560 2xx, 0 3xx, 0 4xx, 7 5xx
";

    #[test]
    fn wrk_reports_are_read_with_their_units_and_errors() {
        let load = parse_wrk(WRK).unwrap();
        assert_eq!(load.requests, 47993);
        assert_eq!(load.errors, 7 + 1 + 2 + 3);
        assert!((load.requests_per_second - 15968.91).abs() < 1e-9);
        assert!((load.p50_ms - 0.952).abs() < 1e-9);
        assert!((load.p99_ms - 1200.0).abs() < 1e-9);
        assert!(
            parse_wrk("Requests/sec: 1\n").is_err(),
            "missing figures are errors"
        );
    }

    #[test]
    fn h2load_reports_take_percentiles_from_the_request_log() {
        let log: String = (1..=100)
            .map(|i| format!("1795780166798927\t200\t{}\n", i * 1000))
            .collect();
        let load = parse_h2load(H2LOAD, &log).unwrap();
        assert_eq!(load.requests, 43569);
        assert_eq!(load.errors, 9 + 1);
        assert!((load.requests_per_second - 14523.0).abs() < 1e-9);
        assert!((load.p50_ms - 50.0).abs() < 1e-9);
        assert!((load.p99_ms - 99.0).abs() < 1e-9);
        assert!(
            parse_h2load(H2LOAD, "").is_err(),
            "an empty log is an error"
        );
    }
}
