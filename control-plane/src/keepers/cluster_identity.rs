//! The cluster's identity: a random id its first leader writes through Raft, once. Watch
//! readers send it back when they reconnect, so a node can tell a reader of a rebuilt cluster
//! (give it a snapshot) from one that is ahead of a lagging node (refuse; never send a reader
//! back in time). This keeper writes it; it never writes while a leadership transfer runs.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::write_once_while_leading;
use crate::node::Node;
use crate::state::Command;

/// Gives the cluster an identity if it has none, whenever this node leads; returns once the
/// applied state has one, or at `shutdown`.
pub async fn keep(node: Arc<Node>, shutdown: CancellationToken) {
    write_once_while_leading(
        node,
        shutdown,
        "the cluster's identity",
        |state| state.cluster_id().is_some(),
        || {
            Some(Command::SetClusterId {
                id: format!("{:032x}", rand::random::<u128>()),
            })
        },
    )
    .await;
}
