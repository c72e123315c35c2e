//! The policies control-plane tests write and read back: a small valid `ServicePolicy`, and
//! the names a node's `GET /v1/policies` lists.

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
