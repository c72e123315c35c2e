//! This node's own certificate: renewed at two thirds of its life from the cluster's root,
//! which every control-plane node holds in its replicated state (decision 34), so renewal needs
//! no other node. New handshakes use the new certificate; open connections keep theirs.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// Renews the node's certificate whenever two thirds of its life have passed, until
/// `shutdown`. A renewal that fails is logged and tried again at the next check.
pub async fn keep(node: Arc<Node>, shutdown: CancellationToken) {
    let every =
        hyphae_policies::tls::renewal_check_interval(node.config.spec.certificates.lifetime.get());
    loop {
        if let Err(error) = renew_if_due(&node).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot renew this node's certificate; will retry"
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn renew_if_due(node: &Node) -> anyhow::Result<()> {
    let Some(root) = node.state.read(|state| state.ca().cloned()).await else {
        return Ok(());
    };
    // A rotation step changed the roots: trust exactly the cluster's bundle.
    if node.tls.trust_roots(&root.bundle())? {
        tracing::info!(fingerprint = %root.fingerprint, "trusting the cluster's new set of roots");
    }
    let Some(not_after) = node.tls.not_after() else {
        return Ok(());
    };
    let spec = &node.config.spec;
    let lifetime = spec.certificates.lifetime.get();
    let now_ms = crate::tokens::now_ms();
    let remaining_ms = (not_after * 1000).saturating_sub(i64::try_from(now_ms).unwrap_or(i64::MAX));
    let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
    // After a rotation's activation the signing root changed: renew onto it at once.
    let signed_by_root = node
        .tls
        .credentials
        .leaf()
        .is_some_and(|leaf| crate::ca::signed_by(leaf.as_ref(), &root.cert_pem));
    if remaining_ms > lifetime_ms / 3 && signed_by_root {
        return Ok(());
    }
    let (chain, key) = crate::pki::issue(
        &root,
        &spec.certificates.trust_domain,
        spec.id,
        now_ms,
        lifetime,
    )?;
    node.tls.renew(&chain, &key)?;
    tracing::info!("renewed this node's certificate");
    Ok(())
}
