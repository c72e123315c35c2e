//! Who may call what: each route's required access, and the check of the caller's bearer token
//! against the replicated token table. Runs before a request's body is read, so an anonymous
//! caller costs the node no buffer. Never logs a secret.

use http::{HeaderMap, Method, StatusCode};

use super::answer::ApiError;
use crate::node::Node;
use crate::tokens::{self, Refused, Role};

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: the OpenAPI document.
    Public,
    /// An agent (registration, heartbeats, health, watch). Open until agents present node
    /// certificates (mutual TLS).
    Agent,
    /// Another control-plane node (Raft and transfer RPCs). Open until peers present node
    /// certificates (mutual TLS).
    Peer,
    /// An operator token with at least this role.
    Token(Role),
}

/// The access `method path` requires.
pub(crate) fn required(method: &Method, path: &str) -> Access {
    if path.starts_with(PEER_RPC_PREFIX) {
        return Access::Peer;
    }
    if path.starts_with(AGENT_PREFIX) {
        return Access::Agent;
    }
    if path == "/v1/openapi.json" || path == "/v1/ca" {
        return Access::Public;
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
    if path.starts_with("/v1/cluster/") && !reads {
        // Membership and leadership.
        return Access::Token(Role::Admin);
    }
    Access::Token(if reads { Role::Read } else { Role::Write })
}

/// Paths of peer RPCs (Raft's and leadership transfer's).
pub(crate) const PEER_RPC_PREFIX: &str = "/raft/";
/// Paths of the agent API (registration, heartbeats, health, watch).
pub(crate) const AGENT_PREFIX: &str = "/v1/agent/";
/// Paths of the access-control API (tokens).
const ACL_PREFIX: &str = "/v1/acl/";

/// Path of the join-token API.
const JOIN_TOKENS: &str = "/v1/join-tokens";

/// Who a request came from, once its access was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Nobody needed to say (public, agent and peer routes for now).
    Unchecked,
    /// The named token.
    Token(String),
    /// A token this follower does not know, perhaps created a moment ago and not yet applied
    /// here: the request goes to the leader, which checks it against the newest table.
    AskLeader,
}

/// Checks the caller of `method path` against what the route requires: 401 without a valid
/// token, 403 with one whose role is too low. A follower that does not know a token, for a
/// request not forwarded already, answers [`Caller::AskLeader`].
pub(crate) async fn check(
    node: &Node,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let Access::Token(needs) = required(method, path) else {
        return Ok(Caller::Unchecked);
    };
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
    let decided = node
        .state
        .read(|state| tokens::authorize(state.tokens(), secret, needs, now))
        .await;
    match decided {
        Ok(name) => Ok(Caller::Token(name)),
        Err(Refused::Invalid)
            if !headers.contains_key(super::leader::FORWARDED_HEADER) && !leads(node) =>
        {
            Ok(Caller::AskLeader)
        }
        Err(refused) => {
            let (status, code) = match refused {
                Refused::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
                Refused::Missing | Refused::Invalid => (StatusCode::UNAUTHORIZED, "unauthorized"),
            };
            tracing::warn!(%method, path, reason = %refused, "admin request refused");
            Err(ApiError::new(status, code, refused.to_string()))
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
        assert_eq!(post("/v1/agent/join"), Access::Agent);
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
