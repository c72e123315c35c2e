//! What a client asks of a server, carried in the TLS server name.

use rustls::pki_types::ServerName;

use super::spiffe::{Kind, SpiffeId};

/// What a client requires of a server's certificate, beyond a chain to its roots. Carried as
/// the TLS server name, so one client configuration serves every peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerIdentity {
    /// Any control-plane node of the cluster.
    ControlPlane,
    /// The control-plane node with this Raft id (a Raft RPC's target).
    ControlPlaneNode(u64),
    /// The agent of this node.
    Node(String),
    /// The agent of any node of the mesh (an endpoint configured without its node's name).
    AnyNode,
}

/// Server name suffix that marks a node identity.
const NODE_SUFFIX: &str = ".node.hyphae.invalid";
/// Server name that asks for any control-plane node.
const CONTROL_PLANE_NAME: &str = "control-plane.hyphae.invalid";
/// Server name suffix that marks one control-plane node.
const CONTROL_PLANE_SUFFIX: &str = ".control-plane.hyphae.invalid";
/// Server name that asks for any node's agent.
const ANY_NODE_NAME: &str = "node.hyphae.invalid";

impl ServerIdentity {
    /// The TLS server name that carries it; `None` for a node name that is not a DNS label.
    pub fn server_name(&self) -> Option<ServerName<'static>> {
        let name = match self {
            ServerIdentity::ControlPlane => CONTROL_PLANE_NAME.to_string(),
            ServerIdentity::ControlPlaneNode(id) => format!("{id}{CONTROL_PLANE_SUFFIX}"),
            ServerIdentity::Node(node) => format!("{node}{NODE_SUFFIX}"),
            ServerIdentity::AnyNode => ANY_NODE_NAME.to_string(),
        };
        ServerName::try_from(name).ok()
    }

    /// Reads it back from a server name.
    pub fn from_server_name(name: &ServerName<'_>) -> Option<ServerIdentity> {
        let ServerName::DnsName(dns) = name else {
            return None;
        };
        let dns = dns.as_ref();
        if dns == CONTROL_PLANE_NAME {
            return Some(ServerIdentity::ControlPlane);
        }
        if dns == ANY_NODE_NAME {
            return Some(ServerIdentity::AnyNode);
        }
        if let Some(id) = dns
            .strip_suffix(CONTROL_PLANE_SUFFIX)
            .and_then(|id| id.parse().ok())
        {
            return Some(ServerIdentity::ControlPlaneNode(id));
        }
        dns.strip_suffix(NODE_SUFFIX)
            .filter(|node| !node.is_empty() && !node.contains('.'))
            .map(|node| ServerIdentity::Node(node.to_string()))
    }

    /// Whether a server with identity `id` is what this asks for.
    pub fn accepts(&self, id: &SpiffeId) -> bool {
        match self {
            ServerIdentity::ControlPlane => id.kind == Kind::ControlPlane,
            ServerIdentity::ControlPlaneNode(node) => {
                id.kind == Kind::ControlPlane && id.name == node.to_string()
            }
            ServerIdentity::Node(node) => id.kind == Kind::Node && id.name == *node,
            ServerIdentity::AnyNode => id.kind == Kind::Node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_identity_survives_the_trip_through_a_server_name() {
        for identity in [
            ServerIdentity::ControlPlane,
            ServerIdentity::Node("web-1".into()),
            ServerIdentity::AnyNode,
            ServerIdentity::ControlPlaneNode(3),
        ] {
            let name = identity.server_name().expect("a DNS name");
            assert_eq!(ServerIdentity::from_server_name(&name), Some(identity));
        }
        let other = ServerName::try_from("example.com").expect("a name");
        assert_eq!(ServerIdentity::from_server_name(&other), None);
    }
}
