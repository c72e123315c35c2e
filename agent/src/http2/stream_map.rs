//! The maps a connection keeps its streams in: keyed by stream id, hashed with one
//! multiplication. std's SipHash cost each proxied HTTP/2 request about 1,700 instructions
//! over the dozen lookups its two maps make (decision 94). SipHash guards against keys chosen
//! to collide; here the client may only raise its ids (RFC 9113 §5.1.1) and hold at most
//! `max_concurrent_streams` open, so ids chosen to collide make a lookup scan at most that
//! many entries.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use super::frame::StreamId;

/// A connection's streams by id.
pub type StreamMap<V> = HashMap<StreamId, V, BuildStreamHasher>;

/// An empty [`StreamMap`].
pub fn new<V>() -> StreamMap<V> {
    HashMap::with_hasher(BuildStreamHasher)
}

/// Makes a [`StreamHasher`] for each key.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildStreamHasher;

impl BuildHasher for BuildStreamHasher {
    type Hasher = StreamHasher;

    fn build_hasher(&self) -> StreamHasher {
        StreamHasher(0)
    }
}

/// Fibonacci hashing: the id times 2^64 divided by the golden ratio.
#[derive(Debug, Default)]
pub struct StreamHasher(u64);

/// 2^64 / φ, odd: the multiplication spreads consecutive ids over the whole word.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for StreamHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(GOLDEN);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = (self.0 ^ u64::from(id)).wrapping_mul(GOLDEN);
    }

    /// The product's high half, where every bit of the id has reached, comes down to the low
    /// bits the table picks its bucket with.
    fn finish(&self) -> u64 {
        self.0.rotate_left(32)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn a_clients_odd_ids_spread_over_the_buckets() {
        // Client streams are odd and rise by two: with the product's low bits (or the id
        // itself) every id would land in an odd bucket and half the table would stay empty.
        let buckets = 1024;
        let used: HashSet<u64> = (0..buckets)
            .map(|n| BuildStreamHasher.hash_one(2 * n as u32 + 1) % buckets)
            .collect();
        assert!(
            used.len() > buckets as usize * 6 / 10,
            "{} buckets used",
            used.len()
        );
        let even = used.iter().filter(|bucket| *bucket % 2 == 0).count();
        assert!(
            even > used.len() / 3,
            "{even} of {} buckets even",
            used.len()
        );
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut map = new();
        for id in (1..2_000u32).step_by(2) {
            map.insert(id, id * 10);
        }
        for id in (1..2_000u32).step_by(2) {
            assert_eq!(map.get(&id), Some(&(id * 10)));
        }
        assert_eq!(map.get(&2), None);
        assert_eq!(map.remove(&999), Some(9_990));
        assert_eq!(map.len(), 999);
    }
}
