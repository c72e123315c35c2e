//! The cluster's certificate authority: the node that initialized the cluster made the root
//! before Raft started (it signed its own certificate with it, see [`crate::pki::found`]); this
//! keeper writes that root through Raft, once, whenever that node leads (the first entry
//! applied wins), then forgets the key file the root waited in. Never while a leadership
//! transfer runs.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::write_once_while_leading;
use crate::node::Node;
use crate::state::Command;

/// Stores the founding root if the cluster has none, whenever this node leads; returns once
/// the applied state has one, or at `shutdown`.
pub async fn keep(node: Arc<Node>, shutdown: CancellationToken) {
    let Some(root) = node.tls.founding_root.clone() else {
        return;
    };
    let files = node.tls.files.clone();
    write_once_while_leading(
        Arc::clone(&node),
        shutdown.clone(),
        "the cluster's certificate authority",
        |state| state.ca().is_some(),
        move || Some(Command::SetCa { ca: root.clone() }),
    )
    .await;
    if !shutdown.is_cancelled() {
        crate::pki::forget_founding_root(&files);
    }
}
