//! The lease keeper: while this node leads, it confirms its leadership with a quorum and
//! expires the nodes whose lease lapsed ([`crate::lease`] holds the table) through Raft. It
//! never expires anything while a leadership transfer runs.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::state::{Command, CommandResponse};

/// Runs the lease keeper of `node` until `shutdown`: while the node leads, nodes whose lease
/// lapsed are removed through Raft; a failed write is logged and tried again next round.
pub async fn keep(node: Arc<Node>, shutdown: CancellationToken) {
    let interval = node.leases.check_interval();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let metrics = node.raft.metrics().borrow().clone();
        let leading = (metrics.current_leader == Some(metrics.id)).then_some(metrics.current_term);
        if leading.is_some() && node.transfers.in_progress() {
            // A confirmation round renews the voters' leader lease, which a transfer waits out.
        } else if leading.is_some() {
            let confirm = node.raft.ensure_linearizable();
            if let Ok(Ok(_)) = tokio::time::timeout(interval, confirm).await {
                node.leases.set_confirmed(Some(Instant::now()));
            }
        } else {
            node.leases.set_confirmed(None);
        }
        let registered: Vec<(String, u64)> = node
            .state
            .read(|state| {
                state
                    .nodes()
                    .map(|n| (n.name.clone(), n.revision))
                    .collect()
            })
            .await;
        let lapsed = node.leases.lapsed(leading, &registered, Instant::now());
        if lapsed.is_empty() {
            continue;
        }
        let Some(_admitted) = node.transfers.admit_write() else {
            continue;
        };
        let names: Vec<&str> = lapsed.iter().map(|n| n.name.as_str()).collect();
        tracing::info!(nodes = ?names, ttl = ?node.leases.ttl(), "leases lapsed; expiring the nodes");
        let write = node
            .raft
            .client_write(Command::ExpireNodes { nodes: lapsed });
        match tokio::time::timeout(node.config.spec.write_timeout.get(), write).await {
            Ok(Ok(written)) => {
                if let CommandResponse::NodesExpired { expired, .. } = written.data {
                    for name in &expired {
                        node.leases.forget(name);
                    }
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot expire nodes; will retry"),
            Err(_) => tracing::warn!("expiring nodes timed out; will retry"),
        }
    }
}
