//! Query rate limits: a token bucket for all clients together and one per client address.
//! Decides only; the caller answers `REFUSED` and counts. Never blocks or waits.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::time::Instant;

/// Per-source buckets. Sources share them by hash, so memory stays fixed however many
/// addresses (spoofed ones included) send queries; two sources sharing a bucket share its rate.
pub const SOURCE_BUCKETS: usize = 1024;

/// Whether a query may be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within both limits.
    Allowed,
    /// Over `maxQueriesPerSecond`.
    OverGlobal,
    /// Over `maxQueriesPerSecondPerSource` for its address.
    OverSource,
}

/// The token buckets. Each holds up to one second of its rate, so a burst of that many queries
/// passes at once.
pub(crate) struct RateLimit {
    global_rate: f64,
    source_rate: f64,
    hasher: RandomState,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    global: Bucket,
    sources: Vec<Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: rate,
            updated: now,
        }
    }

    /// Refills for the time since the last call, then takes a token if there is one.
    fn take(&mut self, rate: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl RateLimit {
    /// Buckets for `global` queries per second overall and `per_source` per address.
    pub(crate) fn new(global: u32, per_source: u32, now: Instant) -> RateLimit {
        let (global_rate, source_rate) = (f64::from(global), f64::from(per_source));
        RateLimit {
            global_rate,
            source_rate,
            hasher: RandomState::new(),
            buckets: Mutex::new(Buckets {
                global: Bucket::full(global_rate, now),
                sources: vec![Bucket::full(source_rate, now); SOURCE_BUCKETS],
            }),
        }
    }

    /// Whether a query from `source` at `now` is within the limits; takes its tokens if so.
    /// The source is checked first, so one noisy client spends its own budget, not everyone's.
    pub(crate) fn check(&self, source: IpAddr, now: Instant) -> Verdict {
        let index = self.bucket_of(source);
        // A panic while the lock was held cannot leave a bucket half-updated: take the state.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.sources[index].take(self.source_rate, now) {
            return Verdict::OverSource;
        }
        if !buckets.global.take(self.global_rate, now) {
            return Verdict::OverGlobal;
        }
        Verdict::Allowed
    }

    /// The per-source bucket `source` draws from.
    fn bucket_of(&self, source: IpAddr) -> usize {
        // Truncating the hash is fine: any bits pick a bucket.
        (self.hasher.hash_one(source) % SOURCE_BUCKETS as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    #[test]
    fn a_burst_of_one_seconds_worth_passes_then_the_rate_refills() {
        let start = Instant::now();
        let limit = RateLimit::new(1000, 3, start);
        for _ in 0..3 {
            assert_eq!(limit.check(A, start), Verdict::Allowed);
        }
        assert_eq!(limit.check(A, start), Verdict::OverSource);
        // A third of a second later, one token is back.
        let later = start + Duration::from_millis(334);
        assert_eq!(limit.check(A, later), Verdict::Allowed);
        assert_eq!(limit.check(A, later), Verdict::OverSource);
    }

    #[test]
    fn the_global_limit_covers_every_source() {
        let start = Instant::now();
        let limit = RateLimit::new(2, 1000, start);
        assert_eq!(limit.check(A, start), Verdict::Allowed);
        assert_eq!(limit.check(B, start), Verdict::Allowed);
        assert_eq!(limit.check(B, start), Verdict::OverGlobal);
        assert_eq!(limit.check(A, start), Verdict::OverGlobal);
    }

    #[test]
    fn one_noisy_source_does_not_spend_the_global_budget() {
        let start = Instant::now();
        let limit = RateLimit::new(5, 2, start);
        // Two more sources that draw from buckets of their own.
        let mut others = (1..=u8::MAX)
            .map(|last| IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, last)))
            .filter(|ip| limit.bucket_of(*ip) != limit.bucket_of(A));
        let b = others.next().unwrap();
        let c = others
            .find(|ip| limit.bucket_of(*ip) != limit.bucket_of(b))
            .unwrap();
        let allowed = (0..100)
            .filter(|_| limit.check(A, start) == Verdict::Allowed)
            .count();
        assert_eq!(allowed, 2);
        assert_eq!(limit.check(b, start), Verdict::Allowed);
        assert_eq!(limit.check(b, start), Verdict::Allowed);
        assert_eq!(limit.check(b, start), Verdict::OverSource);
        assert_eq!(limit.check(c, start), Verdict::Allowed);
        assert_eq!(limit.check(c, start), Verdict::OverGlobal);
    }
}
