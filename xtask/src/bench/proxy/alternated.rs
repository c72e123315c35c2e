//! The one agent and haproxy measured again in turn, several rounds per protocol, after the
//! table: on a shared machine one row can run seconds apart from its peer in a different state
//! (haproxy's own HTTP/2 figure moved from 45.1k to 59.6k requests per CPU-second between two
//! runs, decision 94), so a single pair of rows cannot tell 0.97× from 1.0×. Each round's ratio
//! comes from two rows measured back to back; the median of the rounds is the figure to quote.
//! The same goes for latency at the fixed rate: one pair of 10-second rows put the agent's p50
//! 0.08 ms above haproxy's where three pairs by hand put it level (decision 97), so the two are
//! also driven in turn at the fixed rate, and each round's difference is kept.
//!
//! The order turns about every round (agent first, then haproxy first), so a machine that
//! drifts one way through a run does not favour whichever is always measured second.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::Bench;
use super::fixed_rate::RateRow;
use super::load::Protocol;
use super::setup::Setup;
use crate::bench::percentile::percentile;

/// One protocol's rounds.
pub struct Alternated {
    protocol: Protocol,
    /// The agent's requests per proxy CPU-second over haproxy's, one per round, in order.
    ratios: Vec<f64>,
}

impl Alternated {
    /// The middle round's ratio (the lower of the two middle ones for an even count).
    pub fn median(&self) -> Option<f64> {
        median(&self.ratios)
    }
}

/// One protocol's rounds at the fixed rate.
pub struct AlternatedLatency {
    protocol: Protocol,
    /// The agent's row and haproxy's, one pair per round, in order.
    rounds: Vec<(RateRow, RateRow)>,
}

impl AlternatedLatency {
    /// Each round's agent figure minus haproxy's, in milliseconds: what the agent adds beyond
    /// what haproxy adds, the direct path being the same for both.
    fn over(&self, of: Percentile) -> Vec<f64> {
        self.rounds.iter().map(|(a, h)| of(a) - of(h)).collect()
    }

    /// Each round's haproxy CPU per request over the agent's: the agent's requests per proxy
    /// CPU-second over haproxy's at the rate, read like the closed loops' rounds.
    fn cpu_ratios(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|(a, h)| Some(h.cpu_micros_per_request? / a.cpu_micros_per_request?))
            .collect()
    }
}

/// One latency percentile of a fixed-rate row.
type Percentile = fn(&RateRow) -> f64;

/// The percentiles compared, by name.
const PERCENTILES: [(&str, Percentile); 2] = [("p50", |r| r.p50_ms), ("p99", |r| r.p99_ms)];

/// The middle value (the lower of the two middle ones for an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 50.0)
}

/// Runs `measure` on the one agent and on haproxy in round `round`'s order (the agent first in
/// odd rounds, haproxy first in even ones) and gives back the agent's result, then haproxy's.
fn in_turn<T>(round: u32, mut measure: impl FnMut(Setup) -> Result<T>) -> Result<(T, T)> {
    if round % 2 == 1 {
        let agent = measure(Setup::OneAgent)?;
        Ok((agent, measure(Setup::Haproxy)?))
    } else {
        let haproxy = measure(Setup::Haproxy)?;
        Ok((measure(Setup::OneAgent)?, haproxy))
    }
}

impl Bench {
    /// Measures the one agent and haproxy over `protocol` in turn, `rounds` times.
    pub(super) fn alternated(&self, protocol: Protocol, rounds: u32) -> Result<Alternated> {
        let mut ratios = Vec::new();
        for round in 1..=rounds {
            eprintln!("xtask: bench alternated round {round} of {rounds}");
            let (agent, haproxy) = in_turn(round, |setup| self.measure(setup, protocol))?;
            if let (Some(agent), Some(haproxy)) = (
                agent.requests_per_cpu_second(),
                haproxy.requests_per_cpu_second(),
            ) {
                ratios.push(agent / haproxy);
            }
        }
        Ok(Alternated { protocol, ratios })
    }

    /// Drives the one agent and haproxy in turn at the fixed rate over `protocol`, `rounds`
    /// times, each for `duration`.
    pub(super) fn alternated_at_rate(
        &self,
        protocol: Protocol,
        rounds: u32,
        duration: Duration,
    ) -> Result<AlternatedLatency> {
        let mut pairs = Vec::new();
        for round in 1..=rounds {
            eprintln!("xtask: bench alternated at the fixed rate, round {round} of {rounds}");
            pairs.push(in_turn(round, |setup| {
                self.measure_fixed_rate(setup, protocol, duration)
            })?);
        }
        Ok(AlternatedLatency {
            protocol,
            rounds: pairs,
        })
    }
}

/// The rounds as printed under the tables.
pub fn table(rows: &[Alternated]) -> String {
    let mut out = String::from(
        "\none agent against haproxy, requests per proxy CPU-second, the two measured in turn:\n",
    );
    for row in rows {
        let ratios: Vec<String> = row.ratios.iter().map(|r| format!("{r:.2}x")).collect();
        let median = row.median().map_or("-".to_string(), |m| format!("{m:.2}x"));
        out.push_str(&format!(
            "{:<5} median {median:>6}   rounds: {}\n",
            row.protocol.name(),
            ratios.join(" ")
        ));
    }
    out
}

/// The rounds at the fixed rate as printed under the tables.
pub fn latency_table(rows: &[AlternatedLatency], rate: u32) -> String {
    let mut out = format!(
        "\none agent against haproxy at a fixed {rate} req/s, the two driven in turn: the agent's \
         latency minus haproxy's, ms (at or below 0: it adds no more than haproxy), and its \
         requests per proxy CPU-second over haproxy's (at or above 1.0x: as cheap):\n"
    );
    for row in rows {
        let pairs = |show: &dyn Fn(&RateRow) -> String| -> Vec<String> {
            row.rounds
                .iter()
                .map(|(a, h)| format!("{}/{}", show(a), show(h)))
                .collect()
        };
        for (name, of) in PERCENTILES {
            out.push_str(&rounds_line(
                row.protocol,
                name,
                &row.over(of),
                |v| format!("{v:+.2}"),
                ("agent/haproxy", pairs(&|r| format!("{:.2}", of(r)))),
            ));
        }
        let micros = |r: &RateRow| {
            r.cpu_micros_per_request
                .map_or("-".to_string(), |m| format!("{m:.1}"))
        };
        out.push_str(&rounds_line(
            row.protocol,
            "CPU",
            &row.cpu_ratios(),
            |r| format!("{r:.2}x"),
            ("agent/haproxy us/req", pairs(&micros)),
        ));
    }
    out
}

/// One line under the fixed-rate table: the median of `values`, each round's value, and each
/// round's two figures behind it (`pairs`, with what they are).
fn rounds_line(
    protocol: Protocol,
    label: &str,
    values: &[f64],
    show: impl Fn(f64) -> String,
    pairs: (&str, Vec<String>),
) -> String {
    let middle = median(values).map_or("-".to_string(), &show);
    let rounds: Vec<String> = values.iter().map(|&v| show(v)).collect();
    format!(
        "{:<5} {label} median {middle:>6}   rounds: {}   ({}: {})\n",
        protocol.name(),
        rounds.join(" "),
        pairs.0,
        pairs.1.join(" ")
    )
}

/// The rounds at the fixed rate for `proxy.json`: each round's two figures and the median of
/// their differences, per percentile.
pub fn latency_json(rows: &[AlternatedLatency]) -> Value {
    Value::Array(
        rows.iter()
            .map(|row| {
                let mut entry = json!({ "protocol": row.protocol.name() });
                for (name, of) in PERCENTILES {
                    entry[format!("{name}AgentMs")] =
                        json!(row.rounds.iter().map(|(a, _)| of(a)).collect::<Vec<_>>());
                    entry[format!("{name}HaproxyMs")] =
                        json!(row.rounds.iter().map(|(_, h)| of(h)).collect::<Vec<_>>());
                    entry[format!("{name}OverHaproxyMedianMs")] = json!(median(&row.over(of)));
                }
                let ratios = row.cpu_ratios();
                entry["agentOverHaproxyPerCpuSecondMedian"] = json!(median(&ratios));
                entry["agentOverHaproxyPerCpuSecond"] = json!(ratios);
                entry
            })
            .collect(),
    )
}

/// The rounds for `proxy.json`.
pub fn json(rows: &[Alternated]) -> Value {
    Value::Array(
        rows.iter()
            .map(|row| {
                json!({
                    "protocol": row.protocol.name(),
                    "agentOverHaproxyPerCpuSecond": row.ratios,
                    "median": row.median(),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_turns_about_every_round_and_the_results_keep_their_places() {
        for round in 1..=4 {
            let mut order = Vec::new();
            let (agent, haproxy) = in_turn(round, |setup| {
                order.push(setup);
                Ok(setup)
            })
            .unwrap();
            assert_eq!((agent, haproxy), (Setup::OneAgent, Setup::Haproxy));
            let expected = if round % 2 == 1 {
                [Setup::OneAgent, Setup::Haproxy]
            } else {
                [Setup::Haproxy, Setup::OneAgent]
            };
            assert_eq!(order, expected, "round {round}");
        }
    }

    #[test]
    fn the_median_is_the_middle_round() {
        let rounds = |ratios: &[f64]| Alternated {
            protocol: Protocol::Http2,
            ratios: ratios.to_vec(),
        };
        assert_eq!(rounds(&[1.08, 0.86, 1.04]).median(), Some(1.04));
        assert_eq!(rounds(&[0.9, 1.1]).median(), Some(0.9));
        assert_eq!(rounds(&[]).median(), None);
        let text = table(&[rounds(&[1.08, 0.86, 1.04])]);
        assert!(text.contains("median  1.04x"), "{text}");
        assert!(text.contains("1.08x 0.86x 1.04x"), "{text}");
    }

    #[test]
    fn latency_rounds_give_the_median_of_each_rounds_difference_and_cpu_ratio() {
        let row = |setup, p50_ms, p99_ms, cpu_micros| RateRow {
            setup,
            protocol: Protocol::Http1,
            requests_per_second: 10_000.0,
            success_rate: 1.0,
            p50_ms,
            p99_ms,
            cpu_micros_per_request: Some(cpu_micros),
            rss_peak_kib: Some(12_000),
        };
        let rounds = AlternatedLatency {
            protocol: Protocol::Http1,
            rounds: vec![
                (
                    row(Setup::OneAgent, 0.50, 1.20, 20.0),
                    row(Setup::Haproxy, 0.40, 1.50, 22.0),
                ),
                (
                    row(Setup::OneAgent, 0.45, 1.10, 25.0),
                    row(Setup::Haproxy, 0.50, 1.00, 20.0),
                ),
                (
                    row(Setup::OneAgent, 0.48, 1.30, 20.0),
                    row(Setup::Haproxy, 0.46, 1.25, 21.0),
                ),
            ],
        };
        // p50: +0.10, -0.05, +0.02 -> +0.02; p99: -0.30, +0.10, +0.05 -> +0.05.
        let text = latency_table(std::slice::from_ref(&rounds), 10_000);
        assert!(
            text.contains("h1    p50 median  +0.02   rounds: +0.10 -0.05 +0.02"),
            "{text}"
        );
        assert!(
            text.contains("h1    p99 median  +0.05   rounds: -0.30 +0.10 +0.05"),
            "{text}"
        );
        assert!(text.contains("0.50/0.40 0.45/0.50 0.48/0.46"), "{text}");
        // CPU: haproxy's over the agent's, 1.10, 0.80, 1.05 -> 1.05.
        assert!(
            text.contains("h1    CPU median  1.05x   rounds: 1.10x 0.80x 1.05x"),
            "{text}"
        );
        assert!(text.contains("20.0/22.0 25.0/20.0 20.0/21.0"), "{text}");
        let json = latency_json(&[rounds]);
        let median = |key: &str| json[0][key].as_f64().unwrap_or(f64::NAN);
        assert!(
            (median("p50OverHaproxyMedianMs") - 0.02).abs() < 1e-9,
            "{json}"
        );
        assert!(
            (median("p99OverHaproxyMedianMs") - 0.05).abs() < 1e-9,
            "{json}"
        );
        assert_eq!(json[0]["p99HaproxyMs"][2], 1.25);
        assert_eq!(json[0]["agentOverHaproxyPerCpuSecondMedian"], 1.05);
    }
}
