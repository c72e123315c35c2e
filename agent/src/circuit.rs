//! Circuit breaking: per-endpoint passive outlier ejection and per-service request limits.
//! Ejection decisions are a small state machine driven by outcomes and a clock passed in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hyphae_policies::OutlierDetection;
use tokio::time::Instant;

/// How one try ended, as outlier detection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500.
    Success,
    /// A 5xx, a reset, a timeout or a failed connect.
    Failure,
}

/// Outlier-detection state of one endpoint.
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_failures: u32,
    window_start: Option<Instant>,
    window_requests: u32,
    window_failures: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
}

impl OutlierState {
    /// True while the endpoint is ejected.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| until > now)
    }

    /// When the current ejection ends, if ejected.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        self.ejected_until.filter(|until| *until > now)
    }

    /// Records an outcome; returns how long the endpoint is now ejected for, if this outcome
    /// ejected it. `may_eject` is false when the service already has its share ejected.
    pub fn record(
        &mut self,
        outcome: Outcome,
        now: Instant,
        policy: &OutlierDetection,
        may_eject: bool,
    ) -> Option<Duration> {
        if self.is_ejected(now) {
            return None;
        }
        if let Some(rate) = &policy.failure_rate {
            let window = rate.window.get();
            let start = *self.window_start.get_or_insert(now);
            if now.saturating_duration_since(start) >= window {
                self.window_start = Some(now);
                self.window_requests = 0;
                self.window_failures = 0;
            }
            self.window_requests += 1;
        }
        match outcome {
            Outcome::Success => {
                self.consecutive_failures = 0;
                None
            }
            Outcome::Failure => {
                self.consecutive_failures += 1;
                self.window_failures += 1;
                let by_count = policy.consecutive_failures > 0
                    && self.consecutive_failures >= policy.consecutive_failures;
                let by_rate = policy.failure_rate.as_ref().is_some_and(|rate| {
                    self.window_requests >= rate.min_requests
                        && f64::from(self.window_failures) / f64::from(self.window_requests)
                            >= rate.threshold
                });
                if !(by_count || by_rate) || !may_eject {
                    return None;
                }
                self.times_ejected += 1;
                let base = policy.base_ejection_time.get();
                let duration = base
                    .saturating_mul(self.times_ejected)
                    .min(policy.max_ejection_time.get().max(base));
                self.ejected_until = Some(now + duration);
                self.consecutive_failures = 0;
                self.window_start = None;
                self.window_requests = 0;
                self.window_failures = 0;
                Some(duration)
            }
        }
    }
}

/// Whether one more endpoint of `total` may be ejected when `ejected` already are.
pub fn may_eject(ejected: usize, total: usize, max_share: f64) -> bool {
    total > 0 && ((ejected + 1) as f64 / total as f64) <= max_share
}

/// A counter with a ceiling: requests in flight for one service.
#[derive(Debug, Default)]
pub struct Limit {
    current: Arc<AtomicU32>,
}

/// Holds one unit of a [`Limit`] until dropped.
#[derive(Debug)]
pub struct Permit {
    current: Arc<AtomicU32>,
}

impl Limit {
    /// Takes a unit if fewer than `max` are taken.
    pub fn try_acquire(&self, max: u32) -> Option<Permit> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit {
                current: Arc::clone(&self.current),
            })
    }

    /// Units taken now.
    pub fn current(&self) -> u32 {
        self.current.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.current.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyphae_policies::Duration as PolicyDuration;

    fn policy() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 3,
            base_ejection_time: PolicyDuration::from_secs(10),
            max_ejection_time: PolicyDuration::from_secs(25),
            ..OutlierDetection::default()
        }
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_time() {
        let policy = policy();
        let mut state = OutlierState::default();
        let mut now = Instant::now();
        let mut ejections = Vec::new();
        for _ in 0..3 {
            for _ in 0..3 {
                if let Some(d) = state.record(Outcome::Failure, now, &policy, true) {
                    ejections.push(d.as_secs());
                }
            }
            assert!(state.is_ejected(now));
            now += Duration::from_secs(60);
            assert!(!state.is_ejected(now));
        }
        assert_eq!(ejections, vec![10, 20, 25]);
    }

    #[test]
    fn a_success_resets_the_count_and_the_share_cap_holds() {
        let policy = policy();
        let mut state = OutlierState::default();
        let now = Instant::now();
        state.record(Outcome::Failure, now, &policy, true);
        state.record(Outcome::Failure, now, &policy, true);
        state.record(Outcome::Success, now, &policy, true);
        state.record(Outcome::Failure, now, &policy, true);
        assert!(!state.is_ejected(now));
        for _ in 0..5 {
            state.record(Outcome::Failure, now, &policy, false);
        }
        assert!(!state.is_ejected(now), "the share cap forbids ejection");
        assert!(may_eject(0, 2, 0.5));
        assert!(!may_eject(1, 2, 0.5));
    }

    #[test]
    fn a_failure_rate_over_the_window_ejects_once_enough_requests_are_seen() {
        let policy = OutlierDetection {
            consecutive_failures: 0,
            failure_rate: Some(hyphae_policies::FailureRate {
                threshold: 0.5,
                window: PolicyDuration::from_secs(10),
                min_requests: 10,
            }),
            ..policy()
        };
        let mut state = OutlierState::default();
        let now = Instant::now();
        // Alternating success and failure: 50% failures, never two in a row.
        for i in 0..9 {
            let outcome = if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            assert!(
                state.record(outcome, now, &policy, true).is_none(),
                "too few requests yet"
            );
        }
        assert!(state.record(Outcome::Failure, now, &policy, true).is_some());
        // A new window starts after the ejection: old failures do not count again.
        let later = now + Duration::from_secs(60);
        assert!(
            state
                .record(Outcome::Failure, later, &policy, true)
                .is_none()
        );
    }

    #[test]
    fn limits_refuse_past_the_ceiling_and_free_on_drop() {
        let limit = Limit::default();
        let a = limit.try_acquire(2);
        let b = limit.try_acquire(2);
        assert!(a.is_some() && b.is_some());
        assert!(limit.try_acquire(2).is_none());
        drop(a);
        assert!(limit.try_acquire(2).is_some());
    }
}
