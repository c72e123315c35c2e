//! Nearest-rank percentiles of sorted samples, as both benchmarks report latencies.

/// The nearest-rank `p`th percentile of `sorted` (ascending); `None` when it is empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
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
