//! Nearest-rank percentiles of sorted samples, and the summary (p50, p99, max) the benchmarks
//! report latencies as. Arithmetic only.

use std::time::Duration;

/// The nearest-rank `p`th percentile of `sorted` (ascending); `None` when it is empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// Percentiles of a set of latencies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// How many latencies.
    pub samples: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Summary {
    /// Sorts `latencies` and summarizes them; `None` when there are none.
    pub fn of(latencies: &mut [Duration]) -> Option<Summary> {
        latencies.sort_unstable();
        Some(Summary {
            samples: latencies.len(),
            p50: percentile(latencies, 50.0)?,
            p99: percentile(latencies, 99.0)?,
            max: *latencies.last()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u32> = (1..=200).collect();
        assert_eq!(percentile(&values, 50.0), Some(100));
        assert_eq!(percentile(&values, 99.0), Some(198));
        assert_eq!(percentile(&values, 100.0), Some(200));
        assert_eq!(percentile(&values[..1], 99.0), Some(1));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
    }
}
