//! SPIFFE IDs as hyphae uses them: `spiffe://<trust domain>/<kind>/<name>`, where the kind is
//! `node` (an agent's host), `service` (a workload on it) or `control-plane` (a Raft member, by
//! its node id). Read from a certificate's URI SANs.

use std::fmt;

use rustls::pki_types::CertificateDer;

/// What an identity names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A host running an agent.
    Node,
    /// A service hosted by a node.
    Service,
    /// A control-plane node, named by its Raft node id.
    ControlPlane,
    /// An operator holding a client certificate for the admin API, by name.
    Operator,
}

impl Kind {
    /// Its path segment.
    pub fn segment(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::ControlPlane => "control-plane",
            Kind::Operator => "operator",
        }
    }

    fn from_segment(segment: &str) -> Option<Kind> {
        [
            Kind::Node,
            Kind::Service,
            Kind::ControlPlane,
            Kind::Operator,
        ]
        .into_iter()
        .find(|kind| kind.segment() == segment)
    }
}

/// One identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The trust domain (the cluster's `certificates.trustDomain`).
    pub trust_domain: String,
    /// What it names.
    pub kind: Kind,
    /// The node, service or control-plane node id.
    pub name: String,
}

impl SpiffeId {
    /// The identity of `kind` `name` in `trust_domain`.
    pub fn new(trust_domain: &str, kind: Kind, name: &str) -> SpiffeId {
        SpiffeId {
            trust_domain: trust_domain.to_string(),
            kind,
            name: name.to_string(),
        }
    }

    /// Reads `spiffe://<domain>/<kind>/<name>`; `None` for anything else (other shapes, other
    /// schemes, empty parts, extra segments).
    pub fn parse(uri: &str) -> Option<SpiffeId> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (domain, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || domain.is_empty() || name.is_empty() {
            return None;
        }
        Some(SpiffeId::new(domain, Kind::from_segment(kind)?, name))
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/{}/{}",
            self.trust_domain,
            self.kind.segment(),
            self.name
        )
    }
}

/// The hyphae identities in `cert`'s URI SANs (other SANs and other URIs are ignored); empty
/// for a certificate that does not parse.
pub fn identities(cert: &CertificateDer<'_>) -> Vec<SpiffeId> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => SpiffeId::parse(uri),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_back_from_their_text_and_nothing_else_does() {
        for id in [
            SpiffeId::new("hyphae.local", Kind::Node, "web-1"),
            SpiffeId::new("a.b", Kind::Service, "web"),
            SpiffeId::new("a.b", Kind::ControlPlane, "3"),
        ] {
            assert_eq!(SpiffeId::parse(&id.to_string()), Some(id));
        }
        for bad in [
            "spiffe://d/node",
            "spiffe://d/node/",
            "spiffe:///node/x",
            "spiffe://d/node/x/y",
            "spiffe://d/pod/x",
            "https://d/node/x",
        ] {
            assert_eq!(SpiffeId::parse(bad), None, "{bad}");
        }
    }
}
