//! The recorded history: every operation the clients started, with when it was invoked, when
//! it completed and what came of it, shared by the clients while they run. Records; never
//! judges (that is [`super::checker`]'s work).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::time::Instant;

use super::checker::{Call, Operation, Value};

/// What an operation asked for, and for a read what it saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Wrote this value to the key.
    Write(Value),
    /// Read the key; `Some(None)` saw it absent, `None` got no value (the read did not succeed).
    Read(Option<Option<Value>>),
}

/// What came of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: a write committed, a read answered.
    Ok,
    /// Certainly did not happen (refused before anything was written, or never sent).
    Fail,
    /// May or may not have happened (no answer in time, a broken connection, a 503 that does
    /// not say nothing was written).
    Unknown,
}

impl Outcome {
    /// Its name in reports and in `history.json`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Unknown => "indeterminate",
        }
    }
}

/// One operation of one client on one key.
#[derive(Clone, Debug)]
pub struct Record {
    /// Its index in the history.
    pub id: usize,
    /// The client that ran it (the final reads have the id after the last client).
    pub client: usize,
    /// The key (policy `key-<n>`).
    pub key: usize,
    /// The node it was sent to, from 1.
    pub node: u64,
    /// What it did.
    pub action: Action,
    /// What came of it.
    pub outcome: Outcome,
    /// When it was sent, since the run began.
    pub invoked: Duration,
    /// When its answer came or the client gave up, since the run began.
    pub completed: Duration,
    /// The error code or failure that explains a failed or unknown outcome; empty when ok.
    pub note: String,
}

impl Record {
    /// The operation as the checker sees it; `None` for what certainly did not happen.
    pub fn as_operation(&self) -> Option<Operation> {
        let call = match self.action {
            Action::Write(value) => Call::Write(value),
            Action::Read(Some(seen)) => Call::Read(seen),
            Action::Read(None) => return None,
        };
        let returned = match self.outcome {
            Outcome::Ok => Some(micros(self.completed)),
            Outcome::Unknown => None,
            Outcome::Fail => return None,
        };
        Some(Operation {
            id: self.id,
            call,
            invoked: micros(self.invoked),
            returned,
        })
    }

    /// The record as JSON for `history.json`.
    pub fn json(&self) -> Json {
        let (kind, value) = match self.action {
            Action::Write(value) => ("write", json!(value)),
            Action::Read(seen) => ("read", json!(seen.flatten())),
        };
        json!({
            "id": self.id,
            "client": self.client,
            "key": self.key,
            "node": self.node,
            "op": kind,
            "value": value,
            "outcome": self.outcome.name(),
            "invokedUs": micros(self.invoked),
            "completedUs": micros(self.completed),
            "note": self.note,
        })
    }
}

/// Microseconds of `duration`, the checker's unit.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The operations of a run, appended by every client.
pub struct History {
    /// When the run began; every time in a record counts from here.
    pub start: Instant,
    records: Mutex<Vec<Record>>,
}

impl History {
    /// An empty history starting now.
    pub fn new() -> History {
        History {
            start: Instant::now(),
            records: Mutex::new(Vec::new()),
        }
    }

    /// Time since the run began.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Appends one finished operation (its `id` is assigned here).
    pub fn push(&self, mut record: Record) {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        record.id = records.len();
        records.push(record);
    }

    /// Every record so far, in the order they finished.
    pub fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The checker's view of `records`, one sub-history per key (P-compositionality).
pub fn per_key(records: &[Record]) -> BTreeMap<usize, Vec<Operation>> {
    let mut keys: BTreeMap<usize, Vec<Operation>> = BTreeMap::new();
    for record in records {
        if let Some(operation) = record.as_operation() {
            keys.entry(record.key).or_default().push(operation);
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::checker::{Verdict, check};

    fn record(action: Action, outcome: Outcome, invoked: u64, completed: u64) -> Record {
        Record {
            id: 0,
            client: 0,
            key: 0,
            node: 1,
            action,
            outcome,
            invoked: Duration::from_millis(invoked),
            completed: Duration::from_millis(completed),
            note: String::new(),
        }
    }

    #[test]
    fn failed_operations_are_left_out_and_unknown_writes_have_no_return() {
        let history = History::new();
        history.push(record(Action::Write(1), Outcome::Ok, 0, 10));
        history.push(record(Action::Write(2), Outcome::Fail, 20, 30));
        history.push(record(Action::Write(3), Outcome::Unknown, 40, 50));
        history.push(record(Action::Read(None), Outcome::Fail, 60, 70));
        history.push(record(Action::Read(Some(Some(3))), Outcome::Ok, 80, 90));
        let keys = per_key(&history.records());
        let operations = &keys[&0];
        assert_eq!(operations.len(), 3);
        assert_eq!(operations[1].returned, None);
        assert_eq!(operations[2].id, 4);
        assert_eq!(check(operations, 1000), Verdict::Linearizable);

        // A read of the value of a write that certainly failed.
        history.push(record(Action::Read(Some(Some(2))), Outcome::Ok, 100, 110));
        let keys = per_key(&history.records());
        assert!(matches!(
            check(&keys[&0], 1000),
            Verdict::NotLinearizable { stuck: 5, .. }
        ));
    }
}
