//! This node's own certificate: renewed at two thirds of its life from the cluster's root,
//! which every control-plane node holds in its replicated state (decision 34), so renewal needs
//! no other node. New handshakes use the new certificate; open connections keep theirs. A
//! certificate that does not name where the node is reached (a joined node's, signed by the
//! leader) is replaced at once.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// Renews the node's certificate whenever two thirds of its life have passed, until
/// `shutdown`. A renewal that fails is logged and tried again at the next check.
pub async fn keep(node: Arc<Node>, shutdown: CancellationToken) {
    let every =
        hyphae_policies::tls::renewal_check_interval(node.config.spec.certificates.lifetime.get());
    loop {
        let wait = match renew_if_due(&node).await {
            Ok(Checked::Done) => every,
            // A node that has just joined learns the root with its first entries: look again
            // soon, so its certificate names its hosts within moments.
            Ok(Checked::NoRootYet) => every.min(NO_ROOT_RECHECK),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot renew this node's certificate; will retry"
                );
                every
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// How soon a node whose state holds no root yet looks again.
const NO_ROOT_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// What a check found.
enum Checked {
    /// The certificate is current, or was renewed.
    Done,
    /// The replicated state holds no root yet.
    NoRootYet,
}

async fn renew_if_due(node: &Node) -> anyhow::Result<Checked> {
    let Some(root) = node.state.read(|state| state.ca().cloned()).await else {
        return Ok(Checked::NoRootYet);
    };
    // A rotation step changed the roots: trust exactly the cluster's bundle.
    if node.tls.trust_roots(&root.bundle())? {
        tracing::info!(fingerprint = %root.fingerprint, "trusting the cluster's new set of roots");
    }
    let Some(not_after) = node.tls.not_after() else {
        return Ok(Checked::Done);
    };
    let spec = &node.config.spec;
    let lifetime = spec.certificates.lifetime.get();
    let now_ms = crate::tokens::now_ms();
    let remaining_ms = (not_after * 1000).saturating_sub(i64::try_from(now_ms).unwrap_or(i64::MAX));
    let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
    let leaf = node.tls.credentials.leaf();
    // After a rotation's activation the signing root changed: renew onto it at once.
    let signed_by_root = leaf
        .as_ref()
        .is_some_and(|leaf| crate::ca::signed_by(leaf.as_ref(), &root.cert_pem));
    // A joined node's certificate (signed by the leader, which names only its identity), one
    // from before certificates named hosts, or a changed `listen`/`advertise`: renew at once.
    let hosts = crate::pki::host_names(spec);
    let named = leaf
        .as_ref()
        .and_then(|leaf| crate::ca::host_names_in(leaf.as_ref()));
    let reason = if remaining_ms <= lifetime_ms / 3 {
        "a third of its lifetime is left"
    } else if !signed_by_root {
        "the cluster's signing root changed"
    } else if named.is_none() {
        // A certificate whose names cannot be read would be renewed at every check: say so.
        tracing::warn!("this node's certificate names cannot be read; issuing a new one");
        "its names cannot be read"
    } else if named.as_ref() != Some(&hosts) {
        "the names it should carry changed"
    } else {
        return Ok(Checked::Done);
    };
    let (chain, key) = crate::pki::issue(
        &root,
        &spec.certificates.trust_domain,
        spec.id,
        &hosts,
        now_ms,
        lifetime,
    )?;
    node.tls.renew(&chain, &key)?;
    tracing::info!(?hosts, reason, "renewed this node's certificate");
    Ok(Checked::Done)
}
