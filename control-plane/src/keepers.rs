//! Background work a node runs beside its port, each a loop over a started [`crate::node::Node`]
//! until shutdown: nothing here serves requests.
//!
//! - [`election`]: stands this node for election when no leader is heard, after a pre-vote.
//! - [`lease_expiry`]: expires agents whose lease lapsed, while this node leads.
//! - [`heartbeat_flush`]: passes the heartbeats a follower answered to the leader, in batches.
//! - [`cluster_identity`]: gives a new cluster its identity, once.
//! - [`bootstrap_token`]: stores the initializing node's bootstrap admin token, once.
//! - [`certificate_authority`]: stores the cluster's root certificate, once.
//! - [`node_certificate`]: renews this node's certificate at two thirds of its life.
//! - [`membership`]: adds a node that joined with a token to the cluster.
//! - [`virtual_ip_range`]: fixes the block services' virtual IPs come from, once.

pub mod bootstrap_token;
pub mod certificate_authority;
pub mod cluster_identity;
pub mod election;
pub mod heartbeat_flush;
pub mod lease_expiry;
pub mod membership;
pub mod node_certificate;
pub mod virtual_ip_range;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::state::{Command, State};

/// Longest a keeper that waits to lead sleeps between looks (it also wakes when Raft's
/// metrics change).
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Writes `command()` through Raft whenever this node leads, until `done` holds for the applied
/// state (or `shutdown`); a `None` command is skipped this round. Never writes while leadership is being handed over: a new entry could
/// leave the target behind. A failed write is logged and tried again.
pub async fn write_once_while_leading(
    node: Arc<Node>,
    shutdown: CancellationToken,
    what: &'static str,
    done: impl Fn(&State) -> bool + Send + Sync + 'static,
    command: impl Fn() -> Option<Command>,
) {
    let done = Arc::new(done);
    let mut metrics = node.raft.metrics();
    loop {
        let check = Arc::clone(&done);
        if node.state.read(move |state| check(state)).await {
            return;
        }
        let leading = {
            let now = metrics.borrow_and_update();
            now.current_leader == Some(now.id)
        };
        if leading
            && let Some(admitted) = node.transfers.admit_write()
            && let Some(command) = command()
        {
            let write = node.raft.client_write(command);
            let written = tokio::time::timeout(node.config.spec.write_timeout.get(), write).await;
            drop(admitted);
            match written {
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => tracing::warn!(%error, "cannot write {what}; will retry"),
                Err(_) => tracing::warn!("writing {what} timed out; will retry"),
            }
        }
        // Wakes as soon as leadership changes, so a new leader writes at once.
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = tokio::time::timeout(CHECK_INTERVAL, metrics.changed()) => {
                // Raft has stopped: nothing more can be written (and no spinning on it).
                if let Ok(Err(_)) = changed {
                    return;
                }
            }
        }
    }
}
