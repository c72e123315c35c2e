//! The virtual IP of every mesh service, as the replicated state keeps it. A service gets an
//! address when its first instance registers (or its `ExternalService` is applied) and keeps
//! it while anything names it. Addresses are handed out from a cursor that only moves forward
//! through the range, so a released address comes back only after the whole range was used:
//! a client still holding an old DNS answer is not sent to a newer service for a long time.
//!
//! Everything here is a pure function of the commands applied in log order, like the rest of
//! the state: every node assigns the same address to the same service.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use hyphae_policies::VirtualIpRange;
use serde::{Deserialize, Serialize};

/// The saved part of the table: what a snapshot and the disk carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedVirtualIps {
    /// The block addresses come from, once the first leader fixed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<VirtualIpRange>,
    /// Where the next search for a free address starts, as an offset into the block.
    #[serde(default)]
    pub cursor: u32,
    /// Each service's address.
    #[serde(default)]
    pub assigned: BTreeMap<String, Ipv4Addr>,
    /// Addresses of services nothing names any more, held for them until the block has no
    /// other free address: a service whose only host restarts (its agent deregisters on the
    /// way down) comes back at the address its clients resolved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dormant: BTreeMap<String, DormantIp>,
    /// How many addresses went dormant so far: orders them, oldest handed out first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub released: u64,
}

/// A dormant service's address, and when it went dormant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DormantIp {
    /// The address.
    pub address: Ipv4Addr,
    /// The table's `released` count when it went dormant.
    pub since: u64,
}

/// Most dormant addresses held; beyond it the oldest is given up. The table is saved whole
/// with every change of an address and is not counted in the state's size limit, so it is
/// kept small: about 100 KiB at 100 bytes an entry, more services than restart at once.
pub const MAX_DORMANT: usize = 1_024;

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// Every service's virtual IP, and how many registrations and policies name each service.
/// Two tables are equal when they hold the same addresses and counts, however many changes
/// led there.
#[derive(Debug, Clone, Default)]
pub struct VirtualIps {
    /// What is saved.
    saved: SavedVirtualIps,
    /// The offsets in use, to find a free one without scanning the services.
    used: BTreeSet<u32>,
    /// How many instances and `ExternalService` objects name each service; rebuilt from the
    /// nodes and policies, never saved.
    names: BTreeMap<String, u32>,
    /// Counts changes of `saved`, so a command's effect on the table is cheap to tell.
    generation: u64,
}

impl PartialEq for VirtualIps {
    fn eq(&self, other: &Self) -> bool {
        self.saved == other.saved && self.names == other.names
    }
}

impl Eq for VirtualIps {}

impl VirtualIps {
    /// The saved table, to write to disk or into a snapshot.
    pub fn saved(&self) -> &SavedVirtualIps {
        &self.saved
    }

    /// Every service's address, by service name.
    pub fn assigned(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.saved.assigned
    }

    /// The block in use, once fixed.
    pub fn range(&self) -> Option<VirtualIpRange> {
        self.saved.range
    }

    /// A number that changes whenever the saved table does.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Puts back a table read from disk or a snapshot. The name counts are rebuilt by the
    /// caller from the nodes and policies it restores, before or after this.
    pub fn restore(&mut self, saved: SavedVirtualIps) {
        self.used = match saved.range {
            Some(range) => saved
                .assigned
                .values()
                .chain(saved.dormant.values().map(|dormant| &dormant.address))
                .filter_map(|address| range.offset(*address))
                .collect(),
            None => BTreeSet::new(),
        };
        self.saved = saved;
        self.generation += 1;
    }

    /// Fixes the block, unless one is fixed already (the first applied wins), and gives every
    /// named service an address. Returns the block in force.
    pub fn set_range(&mut self, range: VirtualIpRange) -> VirtualIpRange {
        if let Some(fixed) = self.saved.range {
            return fixed;
        }
        self.saved.range = Some(range);
        self.saved.cursor = 1;
        self.generation += 1;
        let names: Vec<String> = self.names.keys().cloned().collect();
        for name in names {
            self.assign(&name);
        }
        range
    }

    /// One more instance or policy names `service`.
    pub fn name(&mut self, service: &str) {
        let count = self.names.entry(service.to_owned()).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.assign(service);
        }
    }

    /// One instance or policy less names `service`; at zero its address goes dormant: held
    /// for it, out of DNS, until the block needs it for another service.
    pub fn unname(&mut self, service: &str) {
        let Some(count) = self.names.get_mut(service) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count > 0 {
            return;
        }
        self.names.remove(service);
        if let Some(address) = self.saved.assigned.remove(service) {
            if self.saved.dormant.len() >= MAX_DORMANT {
                self.give_up_oldest_dormant();
            }
            self.saved.released += 1;
            let since = self.saved.released;
            self.saved
                .dormant
                .insert(service.to_owned(), DormantIp { address, since });
            self.generation += 1;
        }
    }

    /// Frees the address that went dormant first. Returns whether there was one.
    fn give_up_oldest_dormant(&mut self) -> bool {
        let Some(oldest) = self
            .saved
            .dormant
            .iter()
            .min_by_key(|(_, dormant)| dormant.since)
            .map(|(name, _)| name.clone())
        else {
            return false;
        };
        if let Some(dormant) = self.saved.dormant.remove(&oldest)
            && let Some(offset) = self.saved.range.and_then(|r| r.offset(dormant.address))
        {
            self.used.remove(&offset);
        }
        true
    }

    /// Gives `service` the next free address after the cursor, if it has none and the block
    /// is fixed and not full.
    fn assign(&mut self, service: &str) {
        let Some(range) = self.saved.range else {
            return;
        };
        if self.saved.assigned.contains_key(service) {
            return;
        }
        if let Some(dormant) = self.saved.dormant.remove(service) {
            self.saved
                .assigned
                .insert(service.to_owned(), dormant.address);
            self.generation += 1;
            return;
        }
        let size = range.size();
        // Offset 0 is the block's own address; it is never handed out.
        let usable = size - 1;
        if self.used.len() as u64 >= u64::from(usable) && !self.give_up_oldest_dormant() {
            return;
        }
        let mut offset = self.saved.cursor.clamp(1, size - 1);
        while self.used.contains(&offset) {
            offset = if offset + 1 >= size { 1 } else { offset + 1 };
        }
        let Some(address) = range.address(offset) else {
            return;
        };
        self.used.insert(offset);
        self.saved.assigned.insert(service.to_owned(), address);
        self.saved.cursor = if offset + 1 >= size { 1 } else { offset + 1 };
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> VirtualIpRange {
        text.parse().unwrap()
    }

    #[test]
    fn services_named_before_the_range_get_addresses_when_it_is_fixed() {
        let mut ips = VirtualIps::default();
        ips.name("web");
        assert!(ips.assigned().is_empty());
        ips.set_range(range("127.64.0.0/10"));
        assert_eq!(ips.assigned()["web"], Ipv4Addr::new(127, 64, 0, 1));
        ips.name("db");
        assert_eq!(ips.assigned()["db"], Ipv4Addr::new(127, 64, 0, 2));
        assert_eq!(
            ips.set_range(range("127.1.0.0/16")),
            range("127.64.0.0/10"),
            "the first range wins"
        );
    }

    #[test]
    fn an_address_is_kept_while_anything_names_the_service() {
        let mut ips = VirtualIps::default();
        ips.set_range(range("127.64.0.0/10"));
        ips.name("web");
        ips.name("web");
        ips.unname("web");
        assert_eq!(ips.assigned()["web"], Ipv4Addr::new(127, 64, 0, 1));
        ips.unname("web");
        assert!(ips.assigned().is_empty());
        ips.name("api");
        assert_eq!(
            ips.assigned()["api"],
            Ipv4Addr::new(127, 64, 0, 2),
            "a dormant address is not handed out to another service before the block is full"
        );
        ips.name("web");
        assert_eq!(
            ips.assigned()["web"],
            Ipv4Addr::new(127, 64, 0, 1),
            "a service named again gets its dormant address back"
        );
    }

    #[test]
    fn dormant_addresses_are_bounded_and_survive_a_restore() {
        let mut ips = VirtualIps::default();
        ips.set_range(range("127.64.0.0/10"));
        for index in 0..=MAX_DORMANT {
            let name = format!("s{index}");
            ips.name(&name);
            ips.unname(&name);
        }
        assert_eq!(ips.saved().dormant.len(), MAX_DORMANT);
        assert!(
            !ips.saved().dormant.contains_key("s0"),
            "the oldest gave way"
        );
        let mut restored = VirtualIps::default();
        restored.restore(ips.saved().clone());
        restored.name("s1");
        ips.name("s1");
        assert_eq!(restored.assigned()["s1"], Ipv4Addr::new(127, 64, 0, 2));
        assert_eq!(restored.assigned(), ips.assigned());
        restored.name("new");
        ips.name("new");
        assert_eq!(restored.assigned(), ips.assigned());
    }

    #[test]
    fn a_full_block_wraps_to_free_addresses_and_then_stops_assigning() {
        let mut ips = VirtualIps::default();
        ips.set_range(range("127.1.0.0/30"));
        for name in ["a", "b", "c"] {
            ips.name(name);
        }
        assert_eq!(ips.assigned().len(), 3);
        ips.name("d");
        assert!(
            !ips.assigned().contains_key("d"),
            "only three usable addresses"
        );
        let b = ips.assigned()["b"];
        ips.unname("b");
        ips.name("e");
        assert_eq!(
            ips.assigned()["e"],
            b,
            "the only free address, after the wrap"
        );
    }

    #[test]
    fn a_restored_table_continues_where_it_left_off() {
        let mut ips = VirtualIps::default();
        ips.set_range(range("127.64.0.0/10"));
        ips.name("web");
        ips.name("db");
        let mut restored = VirtualIps::default();
        restored.name("web");
        restored.name("db");
        restored.restore(ips.saved().clone());
        restored.name("api");
        ips.name("api");
        assert_eq!(restored.assigned(), ips.assigned());
    }
}
