//! Calls to an instance on this host. When the endpoint a call goes to is this node, the agent
//! hands the call to its own inbound side in-process instead of sending it over mutual TLS to
//! its own inbound port: that round trip cost an HTTP/2 encode and decode and TLS both ways,
//! half of what one call through one agent cost. Nothing else changes: the outbound side has
//! already applied routes, limits, retries and ejection, and the inbound side checks the access
//! policy against this node's own certificate, as a peer's call would be, and delivers it to the
//! instance the same way (decision 44). The call is handed over as an [`OwnCall`], not in the
//! form a peer would receive: the destination and the authority go beside the request instead
//! of in a header and an absolute URI that the inbound side would read back (decision 58).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::Response;
use rustls::sign::CertifiedKey;

use super::Proxy;
use super::inbound::{self, OwnCall};
use crate::authz::Caller;
use crate::body::Body;
use crate::error::ProxyError;
use crate::identity::IdentitySlot;

/// This node as the caller of its own instances: the identities its certificate names, read
/// again only when the certificate changes (renewal, or the first one arriving).
#[derive(Default)]
pub struct OwnCaller {
    /// What was read from the current certificate.
    read: ArcSwapOption<Read>,
}

/// The caller one certificate names, and until when it may call.
struct Read {
    /// The certificate it was read from.
    key: Arc<CertifiedKey>,
    /// The caller it names.
    caller: Arc<Caller>,
    /// When the certificate stops being valid, seconds since the Unix epoch: after that its
    /// own inbound port would refuse it, and so does this path.
    not_after: Option<i64>,
}

impl OwnCaller {
    /// The caller this node's current certificate names; `None` before it has one or after it
    /// expired, when a call to its own inbound port would have failed at the handshake too.
    fn current(&self, identity: &IdentitySlot) -> Option<Arc<Caller>> {
        let identity = identity.load_full()?;
        let key = identity.credentials.current();
        let read = match &*self.read.load() {
            Some(read) if Arc::ptr_eq(&read.key, &key) => Arc::clone(read),
            _ => {
                let leaf = key.cert.first()?;
                let read = Arc::new(Read {
                    caller: Arc::new(Caller::from_ids(
                        hyphae_policies::tls::identities(leaf),
                        identity.trust.trust_domain(),
                    )),
                    not_after: identity.not_after(),
                    key: Arc::clone(&key),
                });
                self.read.store(Some(Arc::clone(&read)));
                read
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        // An unreadable expiry (never from a certificate the agent loaded) does not refuse.
        if read.not_after.is_some_and(|not_after| now > not_after) {
            return None;
        }
        Some(Arc::clone(&read.caller))
    }
}

/// Delivers `call` to this host's instance as the inbound side would deliver it from a peer,
/// answering what that peer would get, the inbound side's own error answers included.
pub async fn deliver(proxy: &Proxy, call: OwnCall) -> Result<Response<Body>, ProxyError> {
    let caller = proxy
        .tunnels
        .identity()
        .and_then(|identity| proxy.own_caller.current(identity))
        .ok_or_else(|| ProxyError::ConnectFailed {
            address: "this node".to_string(),
            reason: "this agent has no valid certificate (none yet, or expired)".into(),
        })?;
    let mut answer = inbound::deliver_own(proxy, &caller, call).await;
    // Only a peer agent says what phrase the instance gave: not the instance itself.
    answer.headers_mut().remove(super::headers::REASON);
    Ok(answer)
}
