//! The heartbeat flusher: while this node follows, it sends the leader the heartbeats it
//! answered ([`crate::heartbeat_batch`]) every [`FLUSH_INTERVAL`], one request for them all. It
//! never renews a lease itself, and never lets a failed batch pass unnoticed: the names are
//! retried and the node forwards heartbeats until a batch gets through again.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::heartbeat_batch::{
    BatchAnswer, FLUSH_INTERVAL, FLUSH_TIMEOUT, HEARTBEATS_PATH, HeartbeatBatch,
};
use crate::node::Node;

/// Runs the flusher of `node` until `shutdown`. While the node leads, whatever was queued
/// before it took over is renewed here; with no leader known, the names wait (within the
/// retry window) and heartbeats are forwarded, which answers the agents 503.
pub async fn keep(node: Arc<Node>, shutdown: CancellationToken) {
    let queue = &node.heartbeat_queue;
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(FLUSH_INTERVAL) => {}
        }
        let (me, leader_id) = {
            let metrics = node.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.id, metrics.current_leader)
        };
        // The metrics are no longer borrowed here: `member_address` borrows them again, and a
        // second read of the same lock while openraft waits to write them deadlocks (its lock
        // lets no new reader in ahead of a waiting writer), stopping the whole node.
        let leader = match leader_id {
            Some(id) if id == me => Leader::Itself,
            Some(id) => node.member_address(id).map_or(Leader::Unknown, Leader::At),
            None => Leader::Unknown,
        };
        let names = queue.take();
        let address = match leader {
            Leader::Itself => {
                // Queued while following: this node now keeps the leases (a new leader also
                // grants every registered node a full lease when it first looks).
                queue.set_delivering(false);
                for (name, _) in &names {
                    node.leases.renew(name);
                }
                continue;
            }
            Leader::Unknown => {
                queue.set_delivering(false);
                queue.retry(names, Instant::now());
                continue;
            }
            Leader::At(address) => address,
        };
        // An empty batch is sent too: every interval the leader confirms that it still takes
        // batches, so the node never answers heartbeats on the strength of an old one, and
        // while batches fail it is the probe that tells when they are taken again.
        let batch = HeartbeatBatch {
            nodes: names.iter().map(|(name, _)| name.clone()).collect(),
        };
        match send(&node, &address, &batch).await {
            Ok(answer) => {
                queue.set_delivering(true);
                if failing {
                    tracing::info!(leader = %address, "heartbeat batches reach the leader again");
                    failing = false;
                }
                if !answer.unknown.is_empty() {
                    tracing::debug!(unknown = ?answer.unknown, "the leader does not know some batched nodes; forwarding their heartbeats");
                    queue.leader_does_not_know(answer.unknown, Instant::now());
                }
            }
            Err(reason) => {
                queue.set_delivering(false);
                // One line when batches start failing, not one per interval.
                if !failing {
                    tracing::warn!(leader = %address, %reason, nodes = batch.nodes.len(), "cannot pass heartbeats to the leader; forwarding them one by one and retrying the batch");
                    failing = true;
                } else {
                    tracing::debug!(leader = %address, %reason, "heartbeat batch failed again");
                }
                queue.retry(names, Instant::now());
            }
        }
    }
}

/// Where the leader is, as this node knows it.
enum Leader {
    Itself,
    At(String),
    Unknown,
}

/// Sends `batch` to the leader at `address` within [`FLUSH_TIMEOUT`]; the leader's answer, or
/// why there is none. The answer names at most the batch's nodes; a member that says more is
/// cut off.
async fn send(node: &Node, address: &str, batch: &HeartbeatBatch) -> Result<BatchAnswer, String> {
    let limit = node.heartbeat_queue.max_answer_bytes();
    let exchange = node.post_to_member(address, HEARTBEATS_PATH, batch, limit);
    match tokio::time::timeout(FLUSH_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {FLUSH_TIMEOUT:?}")),
    }
}
