//! The one agent and haproxy measured again in turn, several rounds per protocol, after the
//! table: on a shared machine one row can run seconds apart from its peer in a different state
//! (haproxy's own HTTP/2 figure moved from 45.1k to 59.6k requests per CPU-second between two
//! runs, decision 94), so a single pair of rows cannot tell 0.97× from 1.0×. Each round's ratio
//! comes from two rows measured back to back; the median of the rounds is the figure to quote.

use anyhow::Result;
use serde_json::{Value, json};

use super::Bench;
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
        let mut sorted = self.ratios.clone();
        sorted.sort_by(f64::total_cmp);
        percentile(&sorted, 50.0)
    }
}

impl Bench {
    /// Measures the one agent and then haproxy over `protocol`, `rounds` times.
    pub(super) fn alternated(&self, protocol: Protocol, rounds: u32) -> Result<Alternated> {
        let mut ratios = Vec::new();
        for round in 1..=rounds {
            eprintln!("xtask: bench alternated round {round} of {rounds}");
            let agent = self.measure(Setup::OneAgent, protocol)?;
            let haproxy = self.measure(Setup::Haproxy, protocol)?;
            if let (Some(agent), Some(haproxy)) = (
                agent.requests_per_cpu_second(),
                haproxy.requests_per_cpu_second(),
            ) {
                ratios.push(agent / haproxy);
            }
        }
        Ok(Alternated { protocol, ratios })
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
}
