//! How many places (connections, requests) each source address holds, so that one host cannot
//! take every place of a port: the agent's inbound port, the control plane's API port and its
//! public routes all cap what one address may hold, with the same count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Places held per source address, each given back when its [`SourcePlace`] drops.
#[derive(Debug)]
pub struct SourceCounts {
    counts: Mutex<HashMap<IpAddr, u32>>,
    max: u32,
}

/// One place counted against its source address until it drops.
#[derive(Debug)]
pub struct SourcePlace {
    counts: Arc<SourceCounts>,
    source: IpAddr,
}

impl SourceCounts {
    /// Counts with at most `max` places per address.
    pub fn new(max: u32) -> Arc<SourceCounts> {
        Arc::new(SourceCounts {
            counts: Mutex::new(HashMap::new()),
            max,
        })
    }

    /// The cap per address.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// A place for `source`; `None` when it already holds `max`.
    pub fn take(self: &Arc<Self>, source: IpAddr) -> Option<SourcePlace> {
        match self.count(source) {
            (_, true) => None,
            (place, false) => Some(place),
        }
    }

    /// A place for `source` even beyond the cap, and whether `source` already held `max`: for
    /// a port that lets a capped source take a place of another kind (a member's reserve).
    pub fn count(self: &Arc<Self>, source: IpAddr) -> (SourcePlace, bool) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(source).or_insert(0);
        let was_full = *count >= self.max;
        *count += 1;
        let place = SourcePlace {
            counts: Arc::clone(self),
            source,
        };
        (place, was_full)
    }

    /// Addresses holding at least one place.
    pub fn sources(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for SourcePlace {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_max_and_places_come_back_when_dropped() {
        let counts = SourceCounts::new(2);
        let (one, other): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let first = counts.take(one).expect("a place");
        let second = counts.take(one).expect("a place");
        assert!(counts.take(one).is_none(), "one holds its two");
        let elsewhere = counts
            .take(other)
            .expect("another address is counted apart");
        let (beyond, was_full) = counts.count(one);
        assert!(was_full, "counted beyond the cap, and told so");
        drop((first, beyond));
        let again = counts.take(one).expect("given back");
        assert!(
            counts.take(one).is_none(),
            "two again: second and the one taken back"
        );
        drop((second, again, elsewhere));
        assert_eq!(
            counts.sources(),
            0,
            "no address is kept once it holds nothing"
        );
    }
}
