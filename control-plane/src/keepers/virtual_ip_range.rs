//! The block services' virtual IPs come from: the first leader writes the one its
//! configuration names, once, and every service gets an address from it. A node whose
//! configuration names another block says so: the cluster keeps the first, so addresses that
//! apps already hold never move.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::write_once_while_leading;
use crate::node::Node;
use crate::state::Command;

/// Fixes the cluster's virtual IP block if none is fixed, whenever this node leads; returns
/// once the applied state has one (warning when it differs from this node's setting), or at
/// `shutdown`.
pub async fn keep(node: Arc<Node>, shutdown: CancellationToken) {
    let configured = node.config.spec.virtual_ips;
    write_once_while_leading(
        Arc::clone(&node),
        shutdown,
        "the virtual IP block",
        |state| state.virtual_ips().range().is_some(),
        move || Some(Command::SetVirtualIpRange { range: configured }),
    )
    .await;
    let fixed = node.state.read(|state| state.virtual_ips().range()).await;
    if let Some(fixed) = fixed
        && fixed != configured
    {
        tracing::warn!(
            %fixed,
            %configured,
            "spec.virtualIps differs from the block the cluster fixed when it started; the cluster keeps its block"
        );
    }
}
