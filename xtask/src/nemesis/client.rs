//! The clients: tokio tasks that each write or linearizably read a random key through their
//! own node, one operation at a time, each bounded by a timeout, and record every operation
//! with what came of it. They never retry an operation: a retry would hide an outcome.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyphae_integration::http::{Answer, NoAnswer, attempt};
use hyphae_policies::{LoadOptions, load_str};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value as Json;
use tokio::time::Instant;

use super::checker::Value;
use super::history::{Action, History, Outcome, Record};

/// The label of a written policy that carries the written value.
const VALUE_LABEL: &str = "nemesis";
/// Share of operations that are writes.
const WRITE_SHARE: f64 = 0.5;
/// Longest one operation may take; a write without an answer by then has an unknown outcome.
/// Above the nodes' default write timeout (5 s), so their own `no-quorum` answers arrive.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(6);
/// Pause of a client after an operation that did not succeed, so a dead node is not hammered.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(20);
/// Most operations one client starts, whatever the duration.
const MAX_OPERATIONS: u64 = 1_000_000;
/// 503 codes of the admin API that say a write was refused before anything was written.
const NOTHING_WRITTEN: [&str; 3] = ["transfer-in-progress", "no-leader", "not-leader"];

/// What every client shares.
pub struct Workload {
    /// Every node's address, node 1 first.
    pub addresses: Vec<SocketAddr>,
    /// How many keys (`key-0` ... `key-<k-1>`).
    pub keys: usize,
    /// Where operations are recorded.
    pub history: Arc<History>,
    /// The next value to write; every write writes a value of its own, from 1.
    pub next_value: AtomicU64,
    /// Set when the clients should stop (after their current operation).
    pub stopped: AtomicBool,
}

/// The policy name of key `key`.
pub fn key_name(key: usize) -> String {
    format!("key-{key}")
}

/// Runs client `client` until the workload is stopped, or `deadline` at the latest, with its
/// own random stream from `seed`.
///
/// Each client talks to one node (client `c` to node index `c mod N`; followers forward to the
/// leader), as Jepsen's clients do: a paused node then holds only its own clients, and the
/// others show what the rest of the cluster does. With a random node per operation, every
/// client would soon wait on the paused node, and the gap in acknowledged writes would measure
/// the clients, not the cluster.
pub async fn run(workload: Arc<Workload>, client: usize, seed: u64, deadline: Instant) {
    let mut rng = StdRng::seed_from_u64(seed);
    let node = client % workload.addresses.len();
    for _ in 0..MAX_OPERATIONS {
        if workload.stopped.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let key = rng.random_range(0..workload.keys);
        let outcome = if rng.random_bool(WRITE_SHARE) {
            let value = workload.next_value.fetch_add(1, Ordering::Relaxed);
            write(&workload, client, node, key, value).await
        } else {
            read(&workload, client, node, key).await
        };
        if outcome != Outcome::Ok {
            tokio::time::sleep(PAUSE_AFTER_FAILURE).await;
        }
    }
}

/// Writes `value` to `key` through node index `node`, records it and returns its outcome.
pub async fn write(
    workload: &Workload,
    client: usize,
    node: usize,
    key: usize,
    value: Value,
) -> Outcome {
    let body = format!(
        "kind: ServicePolicy\nmetadata:\n  name: {}\n  labels: {{{VALUE_LABEL}: \"{value}\"}}\nspec:\n  retries: {{attempts: 1}}\n",
        key_name(key)
    );
    let operation = Operation {
        client,
        node,
        key,
        method: "POST",
        path: "/v1/policies".to_string(),
        body,
    };
    perform(workload, operation, |answer| {
        let (outcome, note) = write_outcome(answer);
        (Action::Write(value), outcome, note)
    })
    .await
}

/// Reads `key` linearizably through node index `node`, records it and returns its outcome.
pub async fn read(workload: &Workload, client: usize, node: usize, key: usize) -> Outcome {
    let operation = Operation {
        client,
        node,
        key,
        method: "GET",
        path: format!("/v1/policies/ServicePolicy/{}", key_name(key)),
        body: String::new(),
    };
    perform(workload, operation, |answer| {
        let (seen, note) = read_outcome(answer);
        let outcome = if seen.is_some() {
            Outcome::Ok
        } else {
            Outcome::Fail
        };
        (Action::Read(seen), outcome, note)
    })
    .await
}

/// One operation's request: who sends it where, about which key.
struct Operation {
    client: usize,
    /// Index of the node in [`Workload::addresses`].
    node: usize,
    key: usize,
    method: &'static str,
    path: String,
    body: String,
}

/// Sends `operation`'s request within [`OPERATION_TIMEOUT`], records what `judge` makes of the
/// answer, with the times around it, and returns the outcome.
async fn perform(
    workload: &Workload,
    operation: Operation,
    judge: impl FnOnce(&Result<Answer, NoAnswer>) -> (Action, Outcome, String),
) -> Outcome {
    let invoked = workload.history.now();
    let answer = attempt(
        operation.method,
        workload.addresses[operation.node],
        &operation.path,
        &operation.body,
        OPERATION_TIMEOUT,
    )
    .await;
    let completed = workload.history.now();
    let (action, outcome, note) = judge(&answer);
    workload.history.push(Record {
        id: 0,
        client: operation.client,
        key: operation.key,
        node: operation.node as u64 + 1,
        action,
        outcome,
        invoked,
        completed,
        note,
    });
    outcome
}

/// The error code of an admin API answer (`{"code": ...}`), or its status.
fn code(answer: &Answer) -> String {
    answer.json()["code"]
        .as_str()
        .map_or_else(|| answer.status.as_u16().to_string(), str::to_string)
}

/// What a write's answer says happened, with a note for anything but success: acknowledged
/// (200), certainly not written (never sent, a 4xx, or a 503 whose code says nothing was
/// written), or unknown (no answer, a broken connection, `no-quorum` and every other 5xx).
pub fn write_outcome(answer: &Result<Answer, NoAnswer>) -> (Outcome, String) {
    match answer {
        Ok(answer) if answer.status.is_success() => (Outcome::Ok, String::new()),
        Ok(answer) if answer.status.is_client_error() => (Outcome::Fail, code(answer)),
        Ok(answer) => {
            let code = code(answer);
            if NOTHING_WRITTEN.contains(&code.as_str()) {
                (Outcome::Fail, code)
            } else {
                (Outcome::Unknown, code)
            }
        }
        Err(NoAnswer::NotSent) => (Outcome::Fail, "not-sent".to_string()),
        Err(NoAnswer::Lost) => (Outcome::Unknown, "no-answer".to_string()),
    }
}

/// What a linearizable read saw: `Some(Some(v))` the value `v`, `Some(None)` the key absent
/// (404 `not-found`), `None` no answer worth anything (with a note). A stored policy without a
/// readable value label reads as value 0, which no write writes: the checker then rejects it.
pub fn read_outcome(answer: &Result<Answer, NoAnswer>) -> (Option<Option<Value>>, String) {
    match answer {
        Ok(answer) if answer.status.is_success() => {
            let stored = answer.json();
            match stored_value(&stored) {
                Some(value) => (Some(Some(value)), String::new()),
                None => (Some(Some(0)), format!("unreadable: {stored}")),
            }
        }
        Ok(answer) => {
            let code = code(answer);
            if code == "not-found" {
                (Some(None), String::new())
            } else {
                (None, code)
            }
        }
        Err(NoAnswer::NotSent) => (None, "not-sent".to_string()),
        Err(NoAnswer::Lost) => (None, "no-answer".to_string()),
    }
}

/// The value a stored policy (`{"source": YAML, ...}`) carries in its value label.
pub fn stored_value(stored: &Json) -> Option<Value> {
    let source = stored["source"].as_str()?;
    let report = load_str("stored", source, LoadOptions::default());
    let object = report.objects.first()?;
    object
        .policy
        .metadata()
        .labels
        .get(VALUE_LABEL)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;

    fn answer(status: u16, body: &str) -> Result<Answer, NoAnswer> {
        Ok(Answer {
            status: StatusCode::from_u16(status).expect("a valid status"),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        })
    }

    #[test]
    fn only_answers_that_say_nothing_was_written_fail_a_write() {
        let answers = [
            (200, "{\"revision\": 3}", Outcome::Ok),
            (422, "{\"code\": \"invalid-policy\"}", Outcome::Fail),
            (503, "{\"code\": \"no-leader\"}", Outcome::Fail),
            (503, "{\"code\": \"transfer-in-progress\"}", Outcome::Fail),
            (503, "{\"code\": \"no-quorum\"}", Outcome::Unknown),
            (503, "{\"code\": \"leader-unreachable\"}", Outcome::Unknown),
            (500, "", Outcome::Unknown),
        ];
        for (status, body, expected) in answers {
            assert_eq!(write_outcome(&answer(status, body)).0, expected, "{body}");
        }
        assert_eq!(write_outcome(&Err(NoAnswer::NotSent)).0, Outcome::Fail);
        assert_eq!(write_outcome(&Err(NoAnswer::Lost)).0, Outcome::Unknown);
    }

    #[test]
    fn reads_see_the_value_label_or_absence() {
        let stored = serde_json::json!({
            "kind": "ServicePolicy",
            "name": "key-1",
            "source": "kind: ServicePolicy\nmetadata:\n  name: key-1\n  labels:\n    nemesis: '42'\nspec:\n  retries:\n    attempts: 1\n",
            "revision": 7,
        });
        assert_eq!(
            read_outcome(&answer(200, &stored.to_string())).0,
            Some(Some(42))
        );
        assert_eq!(
            read_outcome(&answer(404, "{\"code\": \"not-found\"}")).0,
            Some(None)
        );
        assert_eq!(
            read_outcome(&answer(503, "{\"code\": \"no-quorum\"}")).0,
            None
        );
        assert_eq!(read_outcome(&answer(200, "{}")).0, Some(Some(0)));
        assert_eq!(read_outcome(&Err(NoAnswer::Lost)).0, None);
    }
}
