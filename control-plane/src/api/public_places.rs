//! Places for requests to public routes (joins) while their bodies are read: at most
//! `limits.maxPublicRequests` at once, and an eighth of them from one address, so callers
//! without a certificate or a token can neither fill a node's memory with bodies nor, from one
//! host, keep every other host from joining.

use std::net::IpAddr;
use std::sync::Arc;

use hyphae_policies::source_counts::{SourceCounts, SourcePlace};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A node's places for public requests.
pub struct PublicPlaces {
    open: Arc<Semaphore>,
    per_source: Arc<SourceCounts>,
}

/// One request's place, given back when it drops.
pub struct PublicPlace {
    _permit: OwnedSemaphorePermit,
    _source: Option<SourcePlace>,
}

impl PublicPlaces {
    /// `max` places, an eighth of them (at least one) for any one address.
    pub fn new(max: u32) -> PublicPlaces {
        PublicPlaces {
            open: Arc::new(Semaphore::new(max as usize)),
            per_source: SourceCounts::new((max / 8).max(1)),
        }
    }

    /// A place for a request from `address` (none when it came through a member); `None`
    /// when every place, or every place its address may take, is in use.
    pub fn take(&self, address: Option<IpAddr>) -> Option<PublicPlace> {
        let permit = Arc::clone(&self.open).try_acquire_owned().ok()?;
        let source = match address {
            Some(address) => Some(self.per_source.take(address)?),
            None => None,
        };
        Some(PublicPlace {
            _permit: permit,
            _source: source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_takes_an_eighth_and_places_come_back() {
        let places = PublicPlaces::new(16);
        let one: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let first = places.take(Some(one)).expect("a place");
        let second = places.take(Some(one)).expect("a place");
        assert!(places.take(Some(one)).is_none(), "two is an eighth of 16");
        assert!(places.take(Some(other)).is_some());
        drop(first);
        let again = places.take(Some(one)).expect("given back");
        drop((second, again));
        assert_eq!(places.per_source.sources(), 0);
        // Forwarded by a member: counted against the node only.
        let forwarded: Vec<_> = (0..16).filter_map(|_| places.take(None)).collect();
        assert_eq!(forwarded.len(), 16);
        assert!(places.take(None).is_none());
    }
}
