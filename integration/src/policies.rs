//! The policies control-plane tests write and read back: a small valid `ServicePolicy`, a
//! padded one to fill a node's disk with, and the names a node's `GET /v1/policies` lists.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::Value;

use crate::http::call;

/// A small valid `ServicePolicy` document called `name` with `attempts` retries.
pub fn policy(name: &str, attempts: u32) -> String {
    format!(
        "kind: ServicePolicy\nmetadata: {{name: {name}}}\nspec:\n  retries: {{attempts: {attempts}}}\n"
    )
}

/// A valid `ServicePolicy` called `name` carrying `pad_bytes` of padding (as a label, which
/// hyphae stores as given).
pub fn padded_policy(name: &str, pad_bytes: usize) -> String {
    format!(
        "kind: ServicePolicy\nmetadata: {{name: {name}, labels: {{pad: {}}}}}\nspec:\n  retries: {{attempts: 2}}\n",
        "x".repeat(pad_bytes)
    )
}

/// What [`apply_until_silent`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Writes answered 200.
    pub committed: usize,
    /// Writes answered at all.
    pub answered: usize,
}

/// Padding of each policy [`apply_until_silent`] writes.
pub const FILL_PAD_BYTES: usize = 100 * 1024;
/// Most policies [`apply_until_silent`] writes: about 10 MB, far more than a
/// [`crate::tmpfs::SMALL_DISK`] holds.
pub const FILL_TRIES: usize = 100;

/// POSTs up to [`FILL_TRIES`] padded policies (`p0`, `p1`...; see [`padded_policy`]) to
/// `address`, one at a time, until one gets no answer (the node closed its port or is gone):
/// how a test fills a node's disk.
pub async fn apply_until_silent(address: SocketAddr) -> Applied {
    let mut applied = Applied {
        committed: 0,
        answered: 0,
    };
    for i in 0..FILL_TRIES {
        let body = padded_policy(&format!("p{i}"), FILL_PAD_BYTES);
        match call("POST", address, "/v1/policies", &body).await.0 {
            0 => break,
            200 => applied.committed += 1,
            _ => {}
        }
        applied.answered += 1;
    }
    applied
}

/// Names in a `GET /v1/policies` answer, or `None` for anything but a 200.
pub fn policy_names(code: u16, body: &Value) -> Option<BTreeSet<String>> {
    (code == 200).then(|| {
        body.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect()
    })
}

/// Names of the `ServicePolicy` objects `address` holds in its applied state (`?stale=true`),
/// or `None` when it does not answer.
pub async fn stale_policy_names(address: SocketAddr) -> Option<BTreeSet<String>> {
    let (code, body) = call(
        "GET",
        address,
        "/v1/policies?kind=ServicePolicy&stale=true",
        "",
    )
    .await;
    policy_names(code, &body)
}
