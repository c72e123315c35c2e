//! The end of a run: every node's own applied state (`?stale=true`) compared, once the
//! writes have stopped and every fault is healed. Waits with a deadline; never repairs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hyphae_integration::eventually::wait_for;
use hyphae_integration::http::get_json;

/// Longest the nodes may take to hold the same state after the last write.
const PATIENCE: Duration = Duration::from_secs(30);
/// How often their states are compared again.
const POLL: Duration = Duration::from_millis(250);

/// What one node holds: `(kind, name)` → `(revision, source)`.
pub type State = BTreeMap<(String, String), (u64, String)>;

/// Node `address`'s applied policies; `None` when it does not answer.
async fn state(address: SocketAddr) -> Option<State> {
    let list = get_json(address, "/v1/policies?stale=true").await?;
    let state = list
        .as_array()?
        .iter()
        .filter_map(|p| {
            let key = (
                p["kind"].as_str()?.to_string(),
                p["name"].as_str()?.to_string(),
            );
            let value = (p["revision"].as_u64()?, p["source"].as_str()?.to_string());
            Some((key, value))
        })
        .collect();
    Some(state)
}

/// Every node's state (`None` for one that did not answer).
async fn states(addresses: &[SocketAddr]) -> Vec<Option<State>> {
    let mut states = Vec::new();
    for &address in addresses {
        states.push(state(address).await);
    }
    states
}

/// Waits until every node answers with the same state; `Ok` with it, or `Err` with what each
/// node held at the deadline, described.
pub async fn compare(addresses: &[SocketAddr]) -> Result<State, String> {
    let agreed = wait_for(
        "every node to hold the same policies",
        PATIENCE,
        POLL,
        || async {
            let states = states(addresses).await;
            let first = states.first()?.clone()?;
            states
                .iter()
                .all(|s| s.as_ref() == Some(&first))
                .then_some(first)
        },
    )
    .await;
    match agreed {
        Ok(state) => Ok(state),
        Err(_) => Err(differences(&states(addresses).await)),
    }
}

/// Where the nodes' states differ from node 1's, one line per node and policy.
pub fn differences(states: &[Option<State>]) -> String {
    let Some(Some(first)) = states.first() else {
        return "node 1 did not answer".to_string();
    };
    let mut lines = Vec::new();
    for (id, other) in (1..).zip(states) {
        let Some(other) = other else {
            lines.push(format!("node {id} did not answer"));
            continue;
        };
        let keys: std::collections::BTreeSet<_> = first.keys().chain(other.keys()).collect();
        for key in keys {
            let (a, b) = (first.get(key), other.get(key));
            if a != b {
                lines.push(format!(
                    "node {id}: {} {} at revision {:?}, node 1 at {:?}",
                    key.0,
                    key.1,
                    b.map(|v| v.0),
                    a.map(|v| v.0)
                ));
            }
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_node_and_the_policy() {
        let key = ("ServicePolicy".to_string(), "key-0".to_string());
        let one: State = [(key.clone(), (5, "a".to_string()))].into();
        let behind: State = [(key, (3, "b".to_string()))].into();
        let text = differences(&[Some(one.clone()), Some(one), Some(behind), None]);
        assert_eq!(
            text,
            "node 3: ServicePolicy key-0 at revision Some(3), node 1 at Some(5)\nnode 4 did not answer"
        );
    }
}
