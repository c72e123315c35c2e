//! The bootstrap admin token: the node that initializes a cluster stores the hash of its
//! secret (read from, or written to, an owner-only file) the first time it leads, unless the
//! cluster already has a token. The secret itself never enters Raft or a log.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::write_once_while_leading;
use crate::node::Node;
use crate::state::Command;
use crate::tokens::{Role, StoredToken};

/// The bootstrap token's name, as the audit log shows it; revoke it once named tokens exist.
pub const NAME: &str = "bootstrap";

/// The bootstrap token whose secret hashes to `hash`.
pub fn token(hash: String) -> StoredToken {
    StoredToken {
        name: NAME.to_string(),
        role: Role::Admin,
        hash,
        expires_at_ms: None,
        certificate: None,
        revision: 0,
    }
}

/// Stores `token` whenever this node leads, until the cluster has any token (or `shutdown`).
pub async fn keep(node: Arc<Node>, token: StoredToken, shutdown: CancellationToken) {
    write_once_while_leading(
        node,
        shutdown,
        "the bootstrap admin token",
        |state| !state.tokens().is_empty(),
        move || {
            Some(Command::CreateToken {
                token: token.clone(),
                only_if_none: true,
            })
        },
    )
    .await;
}
