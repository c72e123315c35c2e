//! A node that joined with a token adds itself to the cluster: it asks a member (listed in
//! `spec.members`) to make it a learner, then a voter (`POST /v1/cluster/members`, allowed to
//! a control-plane certificate for its own id), until it is one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// Pause between rounds of asking.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Asks `seeds` in turn to add this node until it is a voter, or `shutdown`.
pub async fn keep(node: Arc<Node>, seeds: Vec<String>, shutdown: CancellationToken) {
    let id = node.config.spec.id;
    let body = serde_json::json!({ "id": id, "address": node.config.advertised() }).to_string();
    loop {
        for seed in &seeds {
            if is_voter(&node) {
                tracing::info!("this node is a voter of the cluster");
                return;
            }
            let request = Request::post(format!("https://{seed}/v1/cluster/members"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.clone())));
            let Ok(request) = request else { return };
            let patience = node.config.spec.write_timeout.get() * 3;
            match tokio::time::timeout(patience, node.peers.request(request)).await {
                Ok(Ok(response)) if response.status().is_success() => {}
                Ok(Ok(response)) => {
                    tracing::info!(%seed, status = %response.status(), "not added yet; will ask again");
                }
                Ok(Err(error)) => tracing::info!(%seed, %error, "cannot ask to be added yet"),
                Err(_) => tracing::info!(%seed, "no answer to the request to be added"),
            }
        }
        if is_voter(&node) {
            tracing::info!("this node is a voter of the cluster");
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}

fn is_voter(node: &Node) -> bool {
    let metrics = node.raft.metrics();
    let metrics = metrics.borrow();
    let id = metrics.id;
    metrics
        .membership_config
        .membership()
        .voter_ids()
        .any(|voter| voter == id)
}
