//! Who may call what: each route's required access, the check of the caller's certificate
//! (peers: a current member's; transfer RPCs: the leader's) and of its bearer token against
//! the replicated token table. Runs before a request's body is read, so an anonymous caller
//! costs the node no buffer. Never logs a secret.

use http::{HeaderMap, Method, StatusCode};

use super::caller::{Caller, Peer};

use super::answer::ApiError;
use crate::node::Node;
use crate::tokens::{self, Refused, Role};

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: the OpenAPI document.
    Public,
    /// An agent's node certificate (registration, heartbeats, health, watch, renewal); the
    /// handlers check it names the node a request is about.
    Agent,
    /// A current member's certificate (Raft, transfer and heartbeat-batch RPCs; transfer RPCs
    /// only the leader's).
    Peer,
    /// An operator token with at least this role.
    Token(Role),
}

/// The access `method path` requires.
pub(crate) fn required(method: &Method, path: &str) -> Access {
    if path.starts_with(PEER_RPC_PREFIX) {
        return Access::Peer;
    }
    if path == "/v1/openapi.json"
        || path == "/v1/ca"
        || path == crate::pki::CONTROL_PLANE_JOIN_PATH
        || path == hyphae_policies::registry::JOIN_PATH
    {
        // Public, or (joins) checked by the join token in the body.
        return Access::Public;
    }
    if path.starts_with(AGENT_PREFIX) {
        return Access::Agent;
    }
    let reads = *method == Method::GET || *method == Method::HEAD;
    if path == ACL_PREFIX.trim_end_matches('/')
        || path.starts_with(ACL_PREFIX)
        || path == JOIN_TOKENS
        || path.starts_with(&format!("{JOIN_TOKENS}/"))
    {
        // Tokens are the keys to the cluster: admin only, even to list them.
        return Access::Token(Role::Admin);
    }
    if (path.starts_with("/v1/cluster/")
        || path.starts_with("/v1/ca/")
        || path.starts_with("/v1/nodes/"))
        && !reads
    {
        // Membership, leadership, the cluster's root, and which names hosts may join as.
        return Access::Token(Role::Admin);
    }
    Access::Token(if reads { Role::Read } else { Role::Write })
}

/// Paths of peer RPCs (Raft's, leadership transfer's, heartbeat batches).
pub(crate) const PEER_RPC_PREFIX: &str = "/raft/";
/// Paths of the agent API (registration, heartbeats, health, watch).
pub(crate) const AGENT_PREFIX: &str = "/v1/agent/";
/// Paths of the access-control API (tokens).
const ACL_PREFIX: &str = "/v1/acl/";

/// Path of the join-token API.
const JOIN_TOKENS: &str = "/v1/join-tokens";

/// Path of membership changes, which a joining node may call for itself.
pub(crate) const MEMBERS_PATH: &str = "/v1/cluster/members";

/// Checks the caller of `method path` against what the route requires: 401 without a valid
/// token, 403 with one whose role is too low. A follower that does not know a token, for a
/// request not forwarded already, answers [`Caller::AskLeader`].
pub(crate) async fn check(
    node: &Node,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<Caller, ApiError> {
    let needs = match required(method, path) {
        Access::Token(needs) => needs,
        Access::Peer => return member(node, path, peer),
        Access::Agent => return agent(path, peer),
        Access::Public => return Ok(Caller::Unchecked),
    };
    if *method == Method::POST
        && path == MEMBERS_PATH
        && let Some(id) = peer.control_plane()
    {
        // A node that joined with a token adds itself; the handler checks it names itself.
        return Ok(Caller::Member(id));
    }
    let secret = bearer(headers);
    let now = tokens::now_ms();
    // The node that initialized the cluster knows its bootstrap token before the cluster
    // stores it: a caller presenting it meanwhile waits (within the write timeout) for the
    // stored token rather than being refused, and nothing is honoured that was not stored.
    if let (Some(pending), Some(secret)) = (node.pending_bootstrap.get(), secret)
        && tokens::hash(secret) == pending.hash
    {
        bootstrap_stored(node).await;
    }
    // A bearer token decides when there is one; else an operator's client certificate.
    let operator = secret.is_none().then(|| peer.operator()).flatten();
    let decided = node
        .state
        .read(|state| match operator {
            Some(name) => {
                tokens::authorize_certificate(state.tokens(), name, peer.fingerprint(), needs, now)
            }
            None => tokens::authorize(state.tokens(), secret, needs, now),
        })
        .await;
    match decided {
        Ok(name) => Ok(Caller::Token(name)),
        Err(Refused::Invalid)
            if !headers.contains_key(super::caller::FORWARDED_HEADER) && !leads(node) =>
        {
            Ok(Caller::AskLeader)
        }
        Err(refused) => {
            let (status, code) = match refused {
                Refused::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
                Refused::Missing | Refused::Invalid => (StatusCode::UNAUTHORIZED, "unauthorized"),
            };
            tracing::warn!(%method, path, reason = %refused, "admin request refused");
            crate::refusals::count(crate::refusals::Refusal::Admin);
            Err(ApiError::new(status, code, refused.to_string()))
        }
    }
}

/// Checks a peer RPC's caller: a current member's certificate (any control-plane certificate
/// while this node knows no membership yet, as when it waits to be added), and for the
/// transfer RPCs the certificate of the leader this node follows.
fn member(node: &Node, path: &str, peer: &Peer) -> Result<Caller, ApiError> {
    let refuse = |reason: String| {
        tracing::warn!(path, %reason, "peer RPC refused");
        crate::refusals::count(crate::refusals::Refusal::PeerRpc);
        Err(ApiError::new(StatusCode::FORBIDDEN, "not-a-member", reason))
    };
    let Some(id) = peer.control_plane() else {
        return refuse("peer RPCs need a control-plane node's certificate".into());
    };
    let metrics = node.raft.metrics();
    let metrics = metrics.borrow();
    let mut members = metrics.membership_config.nodes().map(|(member, _)| *member);
    let knows_members = metrics.membership_config.nodes().next().is_some();
    if knows_members && !members.any(|member| member == id) {
        return refuse(format!("node {id} is not a member of this cluster"));
    }
    let transfer =
        path == crate::transfer::ELECT_PATH || path == crate::transfer::HOLD_ELECTIONS_PATH;
    if transfer && metrics.current_leader != Some(id) {
        return refuse(format!(
            "node {id} is not the leader; only the leader moves leadership"
        ));
    }
    Ok(Caller::Member(id))
}

/// Checks an agent route's caller: a node certificate of this cluster.
fn agent(path: &str, peer: &Peer) -> Result<Caller, ApiError> {
    match peer.node() {
        Some(_) => Ok(Caller::Unchecked),
        None => {
            tracing::warn!(path, "agent request without a node certificate refused");
            crate::refusals::count(crate::refusals::Refusal::Agent);
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "agent routes need the node's certificate (mutual TLS)",
            ))
        }
    }
}

/// Waits, at most the write timeout, until the cluster has stored a token.
async fn bootstrap_stored(node: &Node) {
    let mut revisions = node.state.subscribe();
    let wait = async {
        while node.state.read(|state| state.tokens().is_empty()).await {
            if revisions.changed().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(node.config.spec.write_timeout.get(), wait).await;
}

/// Whether this node leads now.
fn leads(node: &Node) -> bool {
    let metrics = node.raft.metrics();
    let metrics = metrics.borrow();
    metrics.current_leader == Some(metrics.id)
}

/// The secret of an `Authorization: Bearer <secret>` header, if there is one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| secret.trim())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_requires_what_it_exposes() {
        let get = |path| required(&Method::GET, path);
        let post = |path| required(&Method::POST, path);
        assert_eq!(get("/v1/openapi.json"), Access::Public);
        assert_eq!(post("/raft/append"), Access::Peer);
        assert_eq!(
            post(crate::heartbeat_batch::HEARTBEATS_PATH),
            Access::Peer,
            "members only pass heartbeats on"
        );
        assert_eq!(post("/v1/agent/register"), Access::Agent);
        assert_eq!(get("/v1/agent/watch"), Access::Agent);
        assert_eq!(get("/v1/policies"), Access::Token(Role::Read));
        assert_eq!(get("/v1/nodes/a"), Access::Token(Role::Read));
        assert_eq!(get("/v1/cluster"), Access::Token(Role::Read));
        assert_eq!(post("/v1/policies"), Access::Token(Role::Write));
        assert_eq!(
            required(&Method::DELETE, "/v1/policies/Route/a"),
            Access::Token(Role::Write)
        );
        assert_eq!(post("/v1/cluster/members"), Access::Token(Role::Admin));
        assert_eq!(
            post("/v1/cluster/transfer-leader"),
            Access::Token(Role::Admin)
        );
        assert_eq!(get("/v1/acl/tokens"), Access::Token(Role::Admin));
        assert_eq!(
            required(&Method::DELETE, "/v1/acl/tokens/ci"),
            Access::Token(Role::Admin)
        );
        assert_eq!(get("/v1/acl"), Access::Token(Role::Admin));
        assert_eq!(get("/v1/join-tokens"), Access::Token(Role::Admin));
        assert_eq!(
            required(&Method::DELETE, "/v1/join-tokens/j"),
            Access::Token(Role::Admin)
        );
        assert_eq!(get("/v1/ca"), Access::Public);
        assert_eq!(post("/v1/agent/join"), Access::Public);
        assert_eq!(post("/v1/cluster/join"), Access::Public);
        assert_eq!(post("/v1/ca/rotate"), Access::Token(Role::Admin));
        assert_eq!(
            required(&Method::DELETE, "/v1/nodes/web-1"),
            Access::Token(Role::Admin)
        );
        assert_eq!(
            post("/v1/unknown"),
            Access::Token(Role::Write),
            "unknown paths are not open"
        );
    }

    #[test]
    fn only_a_bearer_header_carries_a_secret() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            "Basic abc".parse().expect("a value"),
        );
        assert_eq!(bearer(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().expect("a value"),
        );
        assert_eq!(bearer(&headers), Some("s3cret"));
        headers.insert(
            http::header::AUTHORIZATION,
            "bearer  ".parse().expect("a value"),
        );
        assert_eq!(bearer(&headers), None);
    }
}
