//! Endpoint choice: power of two random choices over peak-EWMA latency (or in-flight requests,
//! or round robin), restricted to the caller's site while it has usable endpoints. Pure
//! decisions over a slice of candidates; the clock and the dice are passed in.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use hyphae_policies::{BalancePolicy, Locality};
use tokio::time::Instant;

/// Latency assumed for an endpoint that has not answered yet.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast old latency samples fade (the EWMA's time constant).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Peak-EWMA latency: jumps up to a slow sample at once, decays back slowly.
#[derive(Debug)]
pub struct PeakEwma {
    cost_ns: f64,
    stamp: Instant,
}

impl PeakEwma {
    /// A fresh estimate at [`DEFAULT_RTT`].
    pub fn new(now: Instant) -> Self {
        PeakEwma {
            cost_ns: DEFAULT_RTT.as_nanos() as f64,
            stamp: now,
        }
    }

    /// Records one round trip.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt_ns = rtt.as_nanos() as f64;
        let elapsed = now.saturating_duration_since(self.stamp).as_nanos() as f64;
        self.stamp = now;
        if rtt_ns > self.cost_ns {
            self.cost_ns = rtt_ns;
        } else {
            let decay = (-elapsed / EWMA_DECAY.as_nanos() as f64).exp();
            self.cost_ns = self.cost_ns * decay + rtt_ns * (1.0 - decay);
        }
    }

    /// Current estimate, in nanoseconds.
    pub fn cost_ns(&self) -> f64 {
        self.cost_ns
    }
}

/// Live load of one endpoint, shared by every request that uses it.
#[derive(Debug)]
pub struct EndpointLoad {
    /// Requests in flight.
    pub in_flight: AtomicU32,
    /// Latency estimate.
    pub ewma: Mutex<PeakEwma>,
}

impl EndpointLoad {
    /// A fresh endpoint.
    pub fn new(now: Instant) -> Self {
        EndpointLoad {
            in_flight: AtomicU32::new(0),
            ewma: Mutex::new(PeakEwma::new(now)),
        }
    }

    /// Score for P2C: lower is better. EWMA latency weighed by the queue it would join.
    fn score(&self, policy: BalancePolicy) -> f64 {
        let in_flight = f64::from(self.in_flight.load(Ordering::Relaxed));
        match policy {
            BalancePolicy::LeastRequest => in_flight,
            BalancePolicy::P2cEwma | BalancePolicy::RoundRobin => {
                let cost = self.ewma.lock().map(|e| e.cost_ns()).unwrap_or(f64::MAX);
                cost * (in_flight + 1.0)
            }
        }
    }
}

/// One candidate for a request.
pub struct Candidate<'a> {
    /// Index in the caller's list.
    pub index: usize,
    /// Whether it is in the caller's site.
    pub local_site: bool,
    /// Whether outlier detection has it ejected.
    pub ejected: bool,
    /// Whether it was already tried for this request.
    pub tried: bool,
    /// Its load.
    pub load: &'a EndpointLoad,
}

/// Picks an endpoint; `dice` returns a uniform number below its argument.
///
/// Usable endpoints are those not ejected; if every endpoint is ejected, all are usable again
/// (better to try a suspect than to fail for sure). With `prefer-site`, the caller's site is
/// used while it has usable endpoints. Endpoints already tried for this request are avoided
/// when there is another choice.
pub fn pick(
    candidates: &[Candidate<'_>],
    policy: BalancePolicy,
    locality: Locality,
    round_robin: &AtomicUsize,
    dice: &mut dyn FnMut(usize) -> usize,
) -> Option<usize> {
    let usable: Vec<&Candidate<'_>> = {
        let healthy: Vec<_> = candidates.iter().filter(|c| !c.ejected).collect();
        if healthy.is_empty() {
            candidates.iter().collect()
        } else {
            healthy
        }
    };
    let in_site: Vec<_> = match locality {
        Locality::PreferSite => usable.iter().copied().filter(|c| c.local_site).collect(),
        Locality::Any => Vec::new(),
    };
    let pool = if in_site.is_empty() { usable } else { in_site };
    let fresh: Vec<_> = pool.iter().copied().filter(|c| !c.tried).collect();
    let pool = if fresh.is_empty() { pool } else { fresh };
    match pool.len() {
        0 => None,
        1 => Some(pool[0].index),
        n if policy == BalancePolicy::RoundRobin => {
            Some(pool[round_robin.fetch_add(1, Ordering::Relaxed) % n].index)
        }
        n => {
            let a = dice(n);
            let b = (a + 1 + dice(n - 1)) % n;
            let (first, second) = (pool[a], pool[b]);
            if first.load.score(policy) <= second.load.score(policy) {
                Some(first.index)
            } else {
                Some(second.index)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(index: usize, load: &EndpointLoad) -> Candidate<'_> {
        Candidate {
            index,
            local_site: true,
            ejected: false,
            tried: false,
            load,
        }
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let start = Instant::now();
        let mut ewma = PeakEwma::new(start);
        ewma.observe(Duration::from_millis(300), start);
        assert_eq!(ewma.cost_ns(), 300e6);
        ewma.observe(Duration::from_millis(10), start + Duration::from_secs(30));
        assert!(ewma.cost_ns() < 30e6, "{}", ewma.cost_ns());
    }

    #[test]
    fn p2c_prefers_the_faster_endpoint() {
        let now = Instant::now();
        let fast = EndpointLoad::new(now);
        let slow = EndpointLoad::new(now);
        fast.ewma
            .lock()
            .unwrap()
            .observe(Duration::from_millis(5), now);
        slow.ewma
            .lock()
            .unwrap()
            .observe(Duration::from_millis(50), now);
        let candidates = [candidate(0, &slow), candidate(1, &fast)];
        let rr = AtomicUsize::new(0);
        let mut seed = 7usize;
        let mut dice = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 33) % n
        };
        let picks: Vec<_> = (0..100)
            .filter_map(|_| {
                pick(
                    &candidates,
                    BalancePolicy::P2cEwma,
                    Locality::Any,
                    &rr,
                    &mut dice,
                )
            })
            .collect();
        assert!(picks.iter().all(|&i| i == 1));
    }

    #[test]
    fn locality_spills_over_only_when_the_site_has_nothing_usable() {
        let now = Instant::now();
        let load = EndpointLoad::new(now);
        let rr = AtomicUsize::new(0);
        let mut dice = |_n: usize| 0;
        let mut local = candidate(0, &load);
        let remote = Candidate {
            local_site: false,
            ..candidate(1, &load)
        };
        let choose = |c: &[Candidate<'_>], dice: &mut dyn FnMut(usize) -> usize| {
            pick(c, BalancePolicy::P2cEwma, Locality::PreferSite, &rr, dice)
        };
        assert_eq!(
            choose(&[Candidate { ..local }, Candidate { ..remote }], &mut dice),
            Some(0)
        );
        local.ejected = true;
        assert_eq!(
            choose(&[Candidate { ..local }, Candidate { ..remote }], &mut dice),
            Some(1)
        );
    }

    #[test]
    fn a_retry_avoids_the_endpoint_already_tried() {
        let now = Instant::now();
        let load = EndpointLoad::new(now);
        let rr = AtomicUsize::new(0);
        let mut dice = |_n: usize| 0;
        let tried = Candidate {
            tried: true,
            ..candidate(0, &load)
        };
        let other = candidate(1, &load);
        let picked = pick(
            &[tried, other],
            BalancePolicy::P2cEwma,
            Locality::Any,
            &rr,
            &mut dice,
        );
        assert_eq!(picked, Some(1));
    }
}
