//! Linearizability of one register's history: the Wing–Gong search with Lowe's memoization
//! (the algorithm of Knossos' `wgl` and of porcupine). Pure: it never does I/O, and it never
//! searches past its step budget: it answers "could not decide" instead of hanging.
//!
//! A history is checked one key at a time (P-compositionality: a history of independent
//! registers is linearizable when each register's sub-history is). An operation whose outcome
//! is unknown (a write that timed out) has no return: it may take effect at any moment after
//! its invocation, or never.

use std::collections::HashSet;

/// A value a register holds. Absent (never written) is `None` in [`Call::Read`].
pub type Value = u64;

/// What an operation did to the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Wrote this value.
    Write(Value),
    /// Read the register and saw this value (`None`: the key was absent).
    Read(Option<Value>),
}

/// One operation of a register's history: its call and its real-time interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Its id in the whole history, for reports.
    pub id: usize,
    /// What it did.
    pub call: Call,
    /// When it was invoked (any monotonic unit; microseconds in the nemesis).
    pub invoked: u64,
    /// When its answer came, at or after `invoked`; `None` when its outcome is unknown.
    pub returned: Option<u64>,
}

/// What the search found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations, each placed within its interval, explains every read.
    Linearizable,
    /// No such order exists.
    NotLinearizable {
        /// The operation the deepest attempt could not place before it returned.
        stuck: usize,
        /// How many operations that attempt had placed.
        placed: usize,
        /// Operations checked (after dropping those that constrain nothing).
        operations: usize,
    },
    /// The search used its whole budget without an answer.
    Undecided {
        /// Steps taken.
        steps: u64,
    },
}

/// Checks one register's history within `max_steps` search steps.
pub fn check(history: &[Operation], max_steps: u64) -> Verdict {
    let operations = prepare(history);
    Search::new(&operations).run(max_steps)
}

/// Drops what constrains nothing and tightens what it safely can, without changing the
/// answer:
/// - a read with no answer saw nothing;
/// - a write with an unknown outcome whose value no completed read saw can always be placed
///   after everything else (or never), so it changes no verdict;
/// - when every written value is distinct, a write with an unknown outcome whose value a read
///   saw must have taken effect before that read returned: its return becomes the earliest such
///   read's. This keeps the search's pending set small under long faults.
fn prepare(history: &[Operation]) -> Vec<Operation> {
    let written: Vec<Value> = history
        .iter()
        .filter_map(|op| match op.call {
            Call::Write(value) => Some(value),
            Call::Read(_) => None,
        })
        .collect();
    let distinct = written.iter().collect::<HashSet<_>>().len() == written.len();
    let first_seen = |value: Value| {
        history
            .iter()
            .filter(|op| op.call == Call::Read(Some(value)))
            .filter_map(|op| op.returned)
            .min()
    };
    history
        .iter()
        .filter_map(|op| match (op.call, op.returned) {
            (_, Some(_)) => Some(*op),
            (Call::Read(_), None) => None,
            (Call::Write(value), None) => {
                let seen = first_seen(value)?;
                Some(Operation {
                    returned: distinct.then_some(seen.max(op.invoked)),
                    ..*op
                })
            }
        })
        .collect()
}

/// The register's state after `call`, when `call` is legal in `state`.
fn step(state: Option<Value>, call: Call) -> Option<Option<Value>> {
    match call {
        Call::Write(value) => Some(Some(value)),
        Call::Read(seen) => (seen == state).then_some(state),
    }
}

/// End of the event list.
const NIL: usize = usize::MAX;
/// The list's head sentinel.
const HEAD: usize = 0;

/// One entry of the event list: an operation's call or its return.
#[derive(Clone, Copy)]
struct Event {
    operation: usize,
    is_call: bool,
}

/// The search state: events in time order as a doubly linked list that operations are lifted
/// out of as they are placed and put back when the search backtracks.
struct Search<'a> {
    operations: &'a [Operation],
    /// Events, index 0 the head sentinel.
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Each operation's call and return entries.
    call_entry: Vec<usize>,
    return_entry: Vec<Option<usize>>,
    /// A 128-bit random label per operation; the XOR of the placed ones names the placed set in
    /// the memo (Zobrist hashing: exact sets would cost memory linear in the history per entry).
    labels: Vec<u128>,
}

impl<'a> Search<'a> {
    fn new(operations: &'a [Operation]) -> Search<'a> {
        let mut timeline: Vec<(u64, bool, usize)> = Vec::new();
        for (i, op) in operations.iter().enumerate() {
            timeline.push((op.invoked, true, i));
            if let Some(returned) = op.returned {
                timeline.push((returned.max(op.invoked), false, i));
            }
        }
        // At equal times calls come first: such operations count as concurrent, the
        // permissive reading of a clock tie.
        timeline.sort_by_key(|&(time, is_call, i)| (time, !is_call, i));
        let mut events = vec![Event {
            operation: NIL,
            is_call: false,
        }];
        let mut call_entry = vec![NIL; operations.len()];
        let mut return_entry = vec![None; operations.len()];
        for (_, is_call, i) in timeline {
            let entry = events.len();
            if is_call {
                call_entry[i] = entry;
            } else {
                return_entry[i] = Some(entry);
            }
            events.push(Event {
                operation: i,
                is_call,
            });
        }
        let count = events.len();
        let next = (0..count)
            .map(|i| if i + 1 < count { i + 1 } else { NIL })
            .collect();
        let prev = (0..count).map(|i| i.wrapping_sub(1)).collect();
        let mut seed = 0x6e65_6d65_7369_7321_u64;
        let labels = (0..operations.len())
            .map(|_| (u128::from(splitmix(&mut seed)) << 64) | u128::from(splitmix(&mut seed)))
            .collect();
        Search {
            operations,
            events,
            next,
            prev,
            call_entry,
            return_entry,
            labels,
        }
    }

    fn unlink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = entry;
        if next != NIL {
            self.prev[next] = entry;
        }
    }

    /// Takes operation `i`'s events out of the list (it is placed).
    fn lift(&mut self, i: usize) {
        self.unlink(self.call_entry[i]);
        if let Some(entry) = self.return_entry[i] {
            self.unlink(entry);
        }
    }

    /// Puts operation `i`'s events back, undoing [`Search::lift`] (in reverse order).
    fn unlift(&mut self, i: usize) {
        if let Some(entry) = self.return_entry[i] {
            self.relink(entry);
        }
        self.relink(self.call_entry[i]);
    }

    fn run(mut self, max_steps: u64) -> Verdict {
        let mut state: Option<Value> = None;
        let mut placed: u128 = 0;
        let mut memo: HashSet<(u128, Option<Value>)> = HashSet::new();
        // Placed operations with the state before each.
        let mut stack: Vec<(usize, Option<Value>)> = Vec::new();
        let mut deepest = (0, NIL);
        let mut entry = self.next[HEAD];
        for _ in 0..max_steps {
            // Only calls of operations without a return are left: place them last, or never.
            if entry == NIL {
                return Verdict::Linearizable;
            }
            let event = self.events[entry];
            if event.is_call {
                let i = event.operation;
                if let Some(after) = step(state, self.operations[i].call) {
                    let with = placed ^ self.labels[i];
                    if memo.insert((with, after)) {
                        stack.push((i, state));
                        state = after;
                        placed = with;
                        self.lift(i);
                        entry = self.next[HEAD];
                        continue;
                    }
                }
                entry = self.next[entry];
            } else {
                // An operation returned before it could be placed: undo the last placement.
                if stack.len() >= deepest.0 {
                    deepest = (stack.len(), event.operation);
                }
                let Some((i, before)) = stack.pop() else {
                    return Verdict::NotLinearizable {
                        stuck: self.operations[deepest.1].id,
                        placed: deepest.0,
                        operations: self.operations.len(),
                    };
                };
                placed ^= self.labels[i];
                state = before;
                self.unlift(i);
                entry = self.next[self.call_entry[i]];
            }
        }
        Verdict::Undecided { steps: max_steps }
    }
}

/// SplitMix64: a fixed stream of well-mixed labels, so a check is repeatable.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Enough for every test history here; the budget test uses far less.
    const BUDGET: u64 = 1_000_000;

    fn write(id: usize, value: Value, invoked: u64, returned: u64) -> Operation {
        Operation {
            id,
            call: Call::Write(value),
            invoked,
            returned: Some(returned),
        }
    }

    /// A write whose outcome is unknown (it timed out): no return.
    fn unknown_write(id: usize, value: Value, invoked: u64) -> Operation {
        Operation {
            id,
            call: Call::Write(value),
            invoked,
            returned: None,
        }
    }

    fn read(id: usize, seen: Option<Value>, invoked: u64, returned: u64) -> Operation {
        Operation {
            id,
            call: Call::Read(seen),
            invoked,
            returned: Some(returned),
        }
    }

    fn rejected(history: &[Operation]) -> bool {
        matches!(check(history, BUDGET), Verdict::NotLinearizable { .. })
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let history = [
            read(0, None, 0, 1),
            write(1, 1, 2, 3),
            read(2, Some(1), 4, 5),
            write(3, 2, 6, 7),
            read(4, Some(2), 8, 9),
        ];
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
        assert_eq!(check(&[], BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_rejected() {
        let history = [
            write(0, 1, 0, 10),
            write(1, 2, 20, 30),
            read(2, Some(1), 40, 50),
        ];
        assert_eq!(
            check(&history, BUDGET),
            Verdict::NotLinearizable {
                stuck: 2,
                placed: 2,
                operations: 3
            }
        );
        // The key read as absent after a write completed is stale too.
        assert!(rejected(&[write(0, 1, 0, 10), read(1, None, 20, 30)]));
    }

    #[test]
    fn a_read_of_a_value_never_written_is_rejected() {
        assert!(rejected(&[read(0, Some(7), 0, 10)]));
        assert!(rejected(&[write(0, 1, 0, 10), read(1, Some(7), 5, 15)]));
        // A write that failed for certain is not in the history the checker gets, so a read
        // of its value is a read of a value never written.
        assert!(rejected(&[
            write(0, 1, 0, 10),
            read(1, Some(1), 20, 30),
            read(2, Some(2), 40, 50)
        ]));
    }

    #[test]
    fn reads_that_see_values_in_an_impossible_order_are_rejected() {
        // Two writes in flight together: one read sees 1 then 2, another later sees 1 again;
        // 1 was written once, so it cannot come back.
        let history = [
            write(0, 1, 0, 100),
            write(1, 2, 0, 100),
            read(2, Some(1), 10, 20),
            read(3, Some(2), 30, 40),
            read(4, Some(1), 50, 60),
        ];
        assert!(rejected(&history));
        // 2 was written after 1 completed; once a read saw 2, a later read cannot see 1.
        let history = [
            write(0, 1, 0, 5),
            write(1, 2, 6, 100),
            read(2, Some(2), 10, 20),
            read(3, Some(1), 30, 40),
        ];
        assert!(rejected(&history));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read that saw the key absent overlaps the write, so it can come first.
        let history = [
            write(0, 1, 0, 100),
            read(1, Some(1), 10, 20),
            read(2, None, 5, 30),
        ];
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
        // While 2 is being written, a read overlapping the one that saw 2 may still see 1.
        let history = [
            write(0, 1, 0, 10),
            write(1, 2, 20, 100),
            read(2, Some(2), 30, 40),
            read(3, Some(1), 25, 50),
        ];
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
        // Two writes in flight, readers agree on one order.
        let history = [
            write(0, 1, 0, 100),
            write(1, 2, 0, 100),
            read(2, Some(2), 10, 20),
            read(3, Some(1), 30, 40),
            read(4, Some(1), 50, 60),
        ];
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn a_write_with_an_unknown_outcome_may_take_effect_late_or_never() {
        // Seen: it took effect.
        let seen = [unknown_write(0, 1, 0), read(1, Some(1), 50, 60)];
        assert_eq!(check(&seen, BUDGET), Verdict::Linearizable);
        // Never seen: it may never have happened.
        let unseen = [unknown_write(0, 1, 0), read(1, None, 50, 60)];
        assert_eq!(check(&unseen, BUDGET), Verdict::Linearizable);
        // It took effect long after it was given up on.
        let late = [
            write(0, 1, 0, 10),
            unknown_write(1, 2, 20),
            read(2, Some(1), 30, 40),
            read(3, Some(2), 1000, 1010),
        ];
        assert_eq!(check(&late, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn a_write_with_an_unknown_outcome_still_takes_effect_once_and_after_its_call() {
        // Once 2 was seen, 1 cannot come back.
        let history = [
            write(0, 1, 0, 10),
            unknown_write(1, 2, 20),
            read(2, Some(2), 30, 40),
            read(3, Some(1), 50, 60),
        ];
        assert!(rejected(&history));
        // A value read before its write was invoked.
        assert!(rejected(&[
            unknown_write(0, 1, 100),
            read(1, Some(1), 10, 20)
        ]));
        // The same checks when written values repeat (nothing is tightened then).
        let repeated = [
            write(0, 1, 0, 10),
            unknown_write(1, 2, 20),
            read(2, Some(2), 30, 40),
            read(3, Some(1), 50, 60),
            unknown_write(4, 2, 70),
        ];
        assert!(rejected(&repeated));
        let repeated_ok = [
            write(0, 1, 0, 10),
            unknown_write(1, 2, 20),
            read(2, Some(2), 30, 40),
            write(3, 1, 45, 48),
            read(4, Some(1), 50, 60),
            unknown_write(5, 2, 70),
            read(6, Some(2), 80, 90),
        ];
        assert_eq!(check(&repeated_ok, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn unknown_reads_constrain_nothing() {
        let history = [
            write(0, 1, 0, 10),
            Operation {
                id: 1,
                call: Call::Read(Some(9)),
                invoked: 20,
                returned: None,
            },
        ];
        assert_eq!(check(&history, BUDGET), Verdict::Linearizable);
    }

    /// A random history of `clients` clients on an atomic register: each operation takes
    /// effect at one instant inside its interval, so the history is linearizable by
    /// construction. Some writes lose their answer (unknown outcome).
    fn atomic_history(seed: u64, operations: usize, clients: usize) -> Vec<Operation> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut state = None;
        let mut free_at = vec![0_u64; clients];
        let mut history = Vec::new();
        // The instant the next operation takes effect, strictly increasing.
        let mut now = 0;
        for id in 0..operations {
            now += rng.random_range(1..5);
            let client = rng.random_range(0..clients);
            // A busy client's next operation takes effect once it is free again.
            now = now.max(free_at[client]);
            let invoked = now
                .saturating_sub(rng.random_range(0..30))
                .max(free_at[client]);
            let returned = now + rng.random_range(0..30);
            free_at[client] = returned + 1;
            let call = if rng.random_bool(0.5) {
                state = Some(id as Value + 1);
                Call::Write(id as Value + 1)
            } else {
                Call::Read(state)
            };
            let lost = matches!(call, Call::Write(_)) && rng.random_bool(0.05);
            history.push(Operation {
                id,
                call,
                invoked,
                returned: (!lost).then_some(returned),
            });
        }
        history
    }

    #[test]
    fn long_concurrent_histories_of_an_atomic_register_are_accepted() {
        for seed in 0..20 {
            let history = atomic_history(seed, 2000, 10);
            assert_eq!(
                check(&history, BUDGET * 10),
                Verdict::Linearizable,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn a_long_history_with_one_read_from_the_future_is_rejected() {
        for seed in 0..20 {
            let mut history = atomic_history(seed, 2000, 10);
            // A read half-way through sees a value whose write was invoked after it returned.
            let (at, returned) = history
                .iter()
                .enumerate()
                .skip(1000)
                .find_map(|(i, op)| match (op.call, op.returned) {
                    (Call::Read(_), Some(returned)) => Some((i, returned)),
                    _ => None,
                })
                .expect("a completed read");
            let future = history
                .iter()
                .find_map(|op| match op.call {
                    Call::Write(value) if op.invoked > returned => Some(value),
                    _ => None,
                })
                .expect("a later write");
            history[at].call = Call::Read(Some(future));
            assert!(
                matches!(
                    check(&history, BUDGET * 10),
                    Verdict::NotLinearizable { stuck, .. } if stuck == at
                ),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn a_search_past_its_budget_is_undecided_not_a_verdict() {
        let history = atomic_history(1, 2000, 10);
        assert_eq!(check(&history, 10), Verdict::Undecided { steps: 10 });
    }
}
