//! The cluster's identity: a random id its first leader writes through Raft, once. Watch
//! readers send it back when they reconnect, so a node can tell a reader of a rebuilt cluster
//! (give it a snapshot) from one that is ahead of a lagging node (refuse; never send a reader
//! back in time). This keeper writes it; it never writes while a leadership transfer runs.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::state::Command;

/// How often a node without an identity looks again (it writes one only while it leads).
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Gives the cluster an identity if it has none, whenever this node leads; returns once the
/// applied state has one, or at `shutdown`.
pub async fn keep(node: Arc<Node>, shutdown: CancellationToken) {
    loop {
        if node.state.read(|state| state.cluster_id().is_some()).await {
            return;
        }
        let leading = {
            let metrics = node.raft.metrics();
            let metrics = metrics.borrow();
            metrics.current_leader == Some(metrics.id)
        };
        // Not while leadership is being handed over: a new entry could leave the target behind.
        if leading && !node.transfers.in_progress() {
            let id = format!("{:032x}", rand::random::<u128>());
            let write = node.raft.client_write(Command::SetClusterId { id });
            match tokio::time::timeout(node.config.spec.write_timeout.get(), write).await {
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot set the cluster's identity; will retry")
                }
                Err(_) => tracing::warn!("setting the cluster's identity timed out; will retry"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
    }
}
