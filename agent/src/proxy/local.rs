//! Calls to an instance on this host. When the endpoint a call goes to is this node, the agent
//! hands the call to its own inbound side in-process instead of sending it over mutual TLS to
//! its own inbound port: that round trip cost an HTTP/2 encode and decode and TLS both ways,
//! half of what one call through one agent cost. Nothing else changes: the outbound side has
//! already applied routes, limits, retries and ejection, and the inbound side checks the access
//! policy against this node's own certificate, as a peer's call would be, and delivers it to the
//! instance the same way (decision 44).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::{Request, Response};
use rustls::sign::CertifiedKey;

use super::Proxy;
use super::inbound;
use crate::authz::Caller;
use crate::body::Body;
use crate::error::ProxyError;
use crate::identity::IdentitySlot;

/// This node as the caller of its own instances: the identities its certificate names, read
/// again only when the certificate changes (renewal, or the first one arriving).
#[derive(Default)]
pub struct OwnCaller {
    /// The certificate the caller was read from, and the caller.
    read: ArcSwapOption<(Arc<CertifiedKey>, Arc<Caller>)>,
}

impl OwnCaller {
    /// The caller this node's current certificate names; `None` before it has one, when a
    /// call to its own inbound port would have failed at the handshake too.
    fn current(&self, identity: &IdentitySlot) -> Option<Arc<Caller>> {
        let identity = identity.load_full()?;
        let key = identity.credentials.current();
        if let Some(read) = &*self.read.load()
            && Arc::ptr_eq(&read.0, &key)
        {
            return Some(Arc::clone(&read.1));
        }
        let leaf = key.cert.first()?;
        let caller = Arc::new(Caller::from_ids(
            hyphae_policies::tls::identities(leaf),
            identity.trust.trust_domain(),
        ));
        self.read.store(Some(Arc::new((key, Arc::clone(&caller)))));
        Some(caller)
    }
}

/// Delivers `request` (shaped for a peer: HTTP/2 form, the destination header) to this host's
/// instance as the inbound side would deliver it from a peer, answering what that peer would
/// get, the inbound side's own error answers included.
pub async fn deliver(proxy: &Proxy, request: Request<Body>) -> Result<Response<Body>, ProxyError> {
    let caller = proxy
        .tunnels
        .identity()
        .and_then(|identity| proxy.own_caller.current(identity))
        .ok_or_else(|| ProxyError::ConnectFailed {
            address: "this node".to_string(),
            reason: "this agent has no certificate yet".into(),
        })?;
    Ok(inbound::deliver(proxy, &caller, request).await)
}
