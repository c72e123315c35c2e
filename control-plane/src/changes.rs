//! Which objects each recent revision changed, kept in memory so watch streams send only what
//! changed — to a reader that keeps up, and to one that reconnects with `?since=REV` — instead
//! of the whole state. Not replicated: after a restart or a snapshot install a node only knows
//! the changes it applied itself since then, and older `since` values get a full snapshot.

use std::collections::{BTreeSet, VecDeque};

use crate::state::StateKey;

/// The keys changed by each of the last revisions that changed anything.
#[derive(Debug)]
pub struct ChangeLog {
    /// Every change after this revision is remembered; changes at or before it may not be.
    floor: u64,
    /// (revision, keys it changed), oldest first; revisions that changed nothing are absent.
    entries: VecDeque<(u64, Vec<StateKey>)>,
    /// Most entries kept; the oldest go first and raise `floor`.
    capacity: usize,
}

impl ChangeLog {
    /// A log that knows nothing before `floor` and remembers up to `capacity` revisions.
    pub fn new(floor: u64, capacity: usize) -> Self {
        ChangeLog {
            floor,
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// How many revisions it remembers at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records that `revision` changed `keys`; revisions must arrive in increasing order.
    pub fn record(&mut self, revision: u64, keys: Vec<StateKey>) {
        if keys.is_empty() {
            return;
        }
        if self.entries.len() == self.capacity
            && let Some((dropped, _)) = self.entries.pop_front()
        {
            self.floor = dropped;
        }
        self.entries.push_back((revision, keys));
    }

    /// Every key changed after `revision`, or `None` when changes that old are no longer
    /// remembered (the reader needs a snapshot).
    pub fn since(&self, revision: u64) -> Option<BTreeSet<StateKey>> {
        if revision < self.floor {
            return None;
        }
        let start = self.entries.partition_point(|(r, _)| *r <= revision);
        Some(
            self.entries
                .range(start..)
                .flat_map(|(_, keys)| keys.iter().cloned())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> StateKey {
        StateKey::Node(name.into())
    }

    #[test]
    fn changes_since_a_revision_are_the_union_of_later_entries() {
        let mut log = ChangeLog::new(10, 100);
        log.record(11, vec![node("a")]);
        log.record(12, vec![]);
        log.record(13, vec![node("b"), node("a")]);
        assert_eq!(log.since(10), Some([node("a"), node("b")].into()));
        assert_eq!(log.since(11), Some([node("a"), node("b")].into()));
        assert_eq!(log.since(13), Some(BTreeSet::new()));
        assert_eq!(log.since(9), None, "before the floor");
    }

    #[test]
    fn dropping_old_entries_raises_the_floor() {
        let mut log = ChangeLog::new(0, 2);
        log.record(1, vec![node("a")]);
        log.record(2, vec![node("b")]);
        log.record(3, vec![node("c")]);
        assert_eq!(log.since(0), None, "revision 1 was forgotten");
        assert_eq!(log.since(1), Some([node("b"), node("c")].into()));
        let fresh = ChangeLog::new(7, 2);
        assert_eq!(fresh.since(6), None);
        assert_eq!(fresh.since(7), Some(BTreeSet::new()));
    }
}
