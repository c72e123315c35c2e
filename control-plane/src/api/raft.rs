//! Peer RPCs on the node's port: Raft's own (append, vote, snapshot; [`crate::network`]), the
//! pre-vote ([`crate::pre_vote`]), the leadership-transfer ones ([`crate::transfer`]) and
//! members' heartbeat batches
//! ([`super::registry::renew_batch`]). Answers `None` for any other path, so the admin API gets
//! it.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::answer::{ApiError, bytes_response};
use crate::heartbeat_batch::HEARTBEATS_PATH;
use crate::network::{self, RpcRefused};
use crate::node::Node;
use crate::pre_vote::{self, PRE_VOTE_PATH};
use crate::transfer;

/// Whether `path` is one of the peer RPCs.
pub(crate) fn is_rpc(path: &str) -> bool {
    [
        network::APPEND_PATH,
        network::VOTE_PATH,
        network::SNAPSHOT_PATH,
        transfer::HOLD_ELECTIONS_PATH,
        transfer::ELECT_PATH,
        PRE_VOTE_PATH,
        HEARTBEATS_PATH,
    ]
    .contains(&path)
}

/// Answers a peer RPC at `path`, or `None` when `path` is not one.
pub(crate) async fn answer(node: &Node, path: &str, body: &[u8]) -> Option<Response<Full<Bytes>>> {
    if path == HEARTBEATS_PATH {
        return Some(super::registry::renew_batch(node, body).await);
    }
    let max_snapshot = node.config.spec.limits.max_snapshot_bytes;
    let contact = &node.leader_contact;
    let served = network::serve_rpc(
        &node.raft,
        &node.snapshots,
        max_snapshot,
        contact,
        path,
        body,
    );
    let answer = match served.await {
        Some(answer) => answer,
        None if path == PRE_VOTE_PATH => pre_vote::answer(node, body)
            .await
            .map_err(RpcRefused::Invalid),
        None => transfer::serve_rpc(node, path, body)
            .await?
            .map_err(RpcRefused::Invalid),
    };
    Some(match answer {
        Ok(json) => bytes_response(StatusCode::OK, json, "application/json"),
        Err(RpcRefused::Invalid(message)) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad-rpc", message).into_response()
        }
        Err(RpcRefused::Unavailable(message)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage", message).into_response()
        }
    })
}
