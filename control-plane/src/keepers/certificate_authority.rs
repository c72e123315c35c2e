//! The cluster's certificate authority: its first leader makes the root and writes it through
//! Raft, once (the first entry applied wins, so two leaders racing agree). Never while a
//! leadership transfer runs.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::write_once_while_leading;
use crate::node::Node;
use crate::state::Command;

/// Gives the cluster a root if it has none, whenever this node leads; returns once the applied
/// state has one, or at `shutdown`. A root that cannot be made is logged and tried again.
pub async fn keep(node: Arc<Node>, shutdown: CancellationToken) {
    let trust_domain = node.config.spec.certificates.trust_domain.clone();
    write_once_while_leading(
        node,
        shutdown,
        "the cluster's certificate authority",
        |state| state.ca().is_some(),
        move || match crate::ca::generate(&trust_domain, crate::tokens::now_ms()) {
            Ok(ca) => Some(Command::SetCa { ca }),
            Err(error) => {
                tracing::error!(%error, "cannot make the cluster's root certificate");
                None
            }
        },
    )
    .await;
}
