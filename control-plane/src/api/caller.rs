//! Who is calling: what the TLS handshake proved about the connection's peer ([`Peer`]), what
//! the access check made of the caller ([`Caller`]), and the headers a node forwarding a
//! request to its leader sets on the caller's behalf. Imports nothing else of the API, so the
//! access check, the request type and forwarding can all use it.

use http::HeaderMap;
use hyphae_policies::tls::{Kind, SpiffeId};
use rustls::pki_types::CertificateDer;

use crate::node::Node;

/// Header a node sets on a request it forwards to the leader; such a request is never
/// forwarded again.
pub const FORWARDED_HEADER: &str = "hyphae-forwarded";

/// On a forwarded request: when the forwarding node gives up waiting for the leader's answer
/// (milliseconds since the Unix epoch, by its clock). A request that reaches the leader later,
/// held up by a partition that TCP outlasted, is refused rather than applied after the caller
/// was already told it failed.
pub const FORWARD_DEADLINE_HEADER: &str = "hyphae-forward-deadline";

/// How far past its [`FORWARD_DEADLINE_HEADER`] a forwarded request may arrive and still be
/// taken, for the two nodes' clocks not agreeing exactly (NTP keeps them within
/// milliseconds). A follower whose clock is further behind has its forwards refused, with the
/// lateness in the answer and the log so the skew shows.
pub const FORWARD_DEADLINE_SLACK_MS: u64 = 1_000;

/// How many milliseconds past its [`FORWARD_DEADLINE_HEADER`] and the slack a forwarded
/// request arrived at `now_ms`; `None` when it is in time, or says no deadline (a node of an
/// older version).
pub fn forward_expired(headers: &HeaderMap, now_ms: u64) -> Option<u64> {
    headers
        .get(FORWARD_DEADLINE_HEADER)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        .and_then(|deadline| now_ms.checked_sub(deadline.saturating_add(FORWARD_DEADLINE_SLACK_MS)))
        .filter(|&late| late > 0)
}

/// Header a node forwarding a request to its leader sets to the identity the original caller's
/// certificate proved; honoured only from a current member.
pub(crate) const FORWARDED_IDENTITY_HEADER: &str = "hyphae-forwarded-identity";

/// Header a node forwarding a request to its leader sets to the fingerprint of the original
/// caller's certificate; honoured only from a current member.
pub(crate) const FORWARDED_CERTIFICATE_HEADER: &str = "hyphae-forwarded-certificate";

/// Who the TLS handshake proved the connection's peer to be: the hyphae identities of this
/// cluster's trust domain in its certificate; none for a client that sent no certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    ids: Vec<SpiffeId>,
    /// How long its certificate was issued for (without the clock skew allowance), when it
    /// sent one: a renewal gets no longer.
    lifetime_ms: Option<u64>,
    /// Its certificate's SHA-256 fingerprint, when it sent one: an operator's certificate is
    /// honoured only as the very one its token entry names.
    fingerprint: Option<String>,
    /// Whether the connection came from this host (a loopback address).
    local: bool,
    /// The address the connection came from; none for a request a member forwarded.
    address: Option<std::net::IpAddr>,
}

impl Peer {
    /// The identities in `certificate` (the leaf the client presented) in `trust_domain`.
    pub fn from_certificate(certificate: Option<&CertificateDer<'_>>, trust_domain: &str) -> Peer {
        let ids = certificate
            .map(hyphae_policies::tls::identities)
            .unwrap_or_default()
            .into_iter()
            .filter(|id| id.trust_domain == trust_domain)
            .collect();
        let lifetime_ms = certificate.and_then(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let validity = cert.validity();
            let seconds = validity.not_after.timestamp() - validity.not_before.timestamp();
            let skew = hyphae_policies::tls::CLOCK_SKEW.as_secs() as i64;
            u64::try_from((seconds - skew).max(0))
                .ok()
                .map(|s| s * 1000)
        });
        let fingerprint = certificate.map(|der| hyphae_policies::tls::fingerprint(der.as_ref()));
        Peer {
            ids,
            lifetime_ms,
            fingerprint,
            local: false,
            address: None,
        }
    }

    /// The same peer, connected from `address`.
    pub fn from_address(mut self, address: std::net::IpAddr) -> Peer {
        self.local = address.is_loopback();
        self.address = Some(address);
        self
    }

    /// The address it connected from, when it connected itself (not through a member).
    pub fn address(&self) -> Option<std::net::IpAddr> {
        self.address
    }

    /// Whether it connected from this host: only then may it register a loopback address,
    /// which names this host (a node forwarding a registration checked it first).
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// Its certificate's SHA-256 fingerprint, when it sent one.
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    /// How long its certificate was issued for, when it sent one.
    pub fn lifetime_ms(&self) -> Option<u64> {
        self.lifetime_ms
    }

    /// The control-plane node id it proved, if any.
    pub fn control_plane(&self) -> Option<u64> {
        self.ids
            .iter()
            .find(|id| id.kind == Kind::ControlPlane)
            .and_then(|id| id.name.parse().ok())
    }

    /// The node (agent) it proved, if any.
    pub fn node(&self) -> Option<&str> {
        self.ids
            .iter()
            .find(|id| id.kind == Kind::Node)
            .map(|id| id.name.as_str())
    }

    /// The operator it proved (an admin API client certificate), if any.
    pub fn operator(&self) -> Option<&str> {
        self.ids
            .iter()
            .find(|id| id.kind == Kind::Operator)
            .map(|id| id.name.as_str())
    }

    /// Every identity it proved.
    pub fn ids(&self) -> &[SpiffeId] {
        &self.ids
    }

    /// The services its node hosts, as its certificate names them.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.ids
            .iter()
            .filter(|id| id.kind == Kind::Service)
            .map(|id| id.name.as_str())
    }

    /// Its identities as a forwarding node passes them on (comma-separated; SPIFFE IDs hold no
    /// comma), or `None` when it proved none.
    pub(crate) fn forwarded(&self) -> Option<String> {
        (!self.ids.is_empty()).then(|| {
            self.ids
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// The peer a forwarded request speaks for: when `self` (the forwarding connection) is a
    /// current member of `node`'s cluster, the identity it passes on in `headers`, or nobody
    /// (the original caller sent no certificate); else `self`.
    pub(crate) fn speaking_for(self, node: &Node, headers: &HeaderMap) -> Peer {
        if !headers.contains_key(FORWARDED_HEADER) {
            return self;
        }
        match self.control_plane() {
            Some(id) if node.is_member(id) => Peer {
                // The forwarding member checked where the caller connected from.
                local: true,
                address: None,
                lifetime_ms: None,
                fingerprint: headers
                    .get(FORWARDED_CERTIFICATE_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string),
                ids: headers
                    .get(FORWARDED_IDENTITY_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .map(|ids| ids.split(',').filter_map(SpiffeId::parse).collect())
                    .unwrap_or_default(),
            },
            _ => self,
        }
    }
}

/// Who a request came from, once its access was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Nobody needed to say (public and agent routes for now).
    Unchecked,
    /// The control-plane node with this id (a member calling a peer RPC, or a joining node
    /// adding itself).
    Member(u64),
    /// The named token.
    Token(String),
    /// A token this follower does not know, perhaps created a moment ago and not yet applied
    /// here: the request goes to the leader, which checks it against the newest table.
    AskLeader,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_expires_only_after_a_deadline_it_names() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            forward_expired(&headers, 5),
            None,
            "no deadline, none passed"
        );
        headers.insert(
            FORWARD_DEADLINE_HEADER,
            http::HeaderValue::from_static("10"),
        );
        assert_eq!(
            forward_expired(&headers, 10 + FORWARD_DEADLINE_SLACK_MS),
            None
        );
        assert_eq!(
            forward_expired(&headers, 12 + FORWARD_DEADLINE_SLACK_MS),
            Some(2)
        );
        headers.insert(
            FORWARD_DEADLINE_HEADER,
            http::HeaderValue::from_static("soon"),
        );
        assert_eq!(
            forward_expired(&headers, 5_000),
            None,
            "unreadable: as none"
        );
    }

    #[test]
    fn only_a_loopback_connection_is_local() {
        let peer = || Peer::from_certificate(None, "mesh.test");
        assert!(peer().from_address([127, 0, 0, 1].into()).is_local());
        assert!(
            peer()
                .from_address(std::net::Ipv6Addr::LOCALHOST.into())
                .is_local()
        );
        assert!(!peer().from_address([10, 200, 0, 1].into()).is_local());
        assert!(!peer().is_local(), "unknown origin is not local");
    }
}
