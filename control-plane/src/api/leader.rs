//! Answers that need the leader: writes through Raft (answered after commit), the read barrier
//! of linearizable reads, and forwarding to the current leader. No quorum is a 503 within the
//! write timeout, never a hang.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use openraft::BasicNode;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};

use super::answer::{ApiError, ApiRequest, Routed};
use crate::node::Node;
use crate::raft::{NodeId, TypeConfig, encoded_len};
use crate::state::{Command, CommandResponse};
use crate::transfer;

use super::caller::{
    FORWARD_DEADLINE_HEADER, FORWARDED_CERTIFICATE_HEADER, FORWARDED_HEADER,
    FORWARDED_IDENTITY_HEADER,
};

/// Writes `command` through Raft and waits for it to be applied.
///
/// While this node hands its leadership over, writes are refused (503 `transfer-in-progress`,
/// retryable): an entry the target has not got would make it unelectable.
pub(crate) async fn write(node: &Node, command: Command) -> Result<CommandResponse, Routed> {
    let Some(_admitted) = node.transfers.admit_write() else {
        return Err(transfer_in_progress("").into());
    };
    let limits = &node.config.spec.limits;
    write_size_allowed(&command, limits.max_write_bytes)?;
    state_size_allowed(node, &command, limits.max_snapshot_bytes).await?;
    committed(node, node.raft.client_write(command))
        .await
        .map(|written| written.data)
}

/// Refuses (413 `write-too-large`) a command whose Raft entry would exceed
/// `limits.maxWriteBytes`: one entry must replicate within a heartbeat, and a peer must accept
/// it. Nothing is written.
pub(crate) fn write_size_allowed(command: &Command, limit: u32) -> Result<(), ApiError> {
    let size = encoded_len(command);
    if size > limit as usize {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "write-too-large",
            format!(
                "this write is {size} bytes as stored (objects in canonical form), over limits.maxWriteBytes ({limit}); nothing was written: split it into smaller writes"
            ),
        ));
    }
    Ok(())
}

/// The share of `limits.maxSnapshotBytes` the nodes and policies may fill: the rest is room
/// for the snapshot's envelope, the other tables, and writes racing this check.
const STATE_SHARE_OF_SNAPSHOT: f64 = 0.9;

/// Refuses (507 `state-too-large`) a write that adds to the nodes or policies when they would
/// then pass [`STATE_SHARE_OF_SNAPSHOT`] of `limits.maxSnapshotBytes`: a follower that needs a
/// snapshot could not take it. Removals and every other write go through.
async fn state_size_allowed(node: &Node, command: &Command, limit: u64) -> Result<(), ApiError> {
    if !matches!(
        command,
        Command::ApplyPolicies { .. } | Command::RegisterNode { .. }
    ) {
        return Ok(());
    }
    let now = node.state.read(|state| state.approx_bytes()).await;
    let after = now.saturating_add(encoded_len(command) as u64);
    let room = (limit as f64 * STATE_SHARE_OF_SNAPSHOT) as u64;
    if after > room {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "state-too-large",
            format!(
                "the nodes and policies would reach about {after} bytes, over {}% of limits.maxSnapshotBytes ({limit}): a follower could not take the snapshot; nothing was written (remove what is not needed, or raise the limit)",
                (STATE_SHARE_OF_SNAPSHOT * 100.0) as u32
            ),
        ));
    }
    Ok(())
}

/// Writes a removal through Raft: 404 when nothing named `name` existed, else the response.
pub(crate) async fn remove(
    node: &Node,
    command: Command,
    what: &str,
    name: &str,
) -> super::answer::Answer {
    let written = write(node, command).await?;
    if written.existed() != Some(false) {
        Ok(super::answer::json_response(StatusCode::OK, &written))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no {what} named `{name}`"),
        )
        .into())
    }
}

/// What a Raft write (a command or a membership change) resolves to.
type WriteResult = Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
>;

/// Waits for a Raft write to commit, within the write timeout; a follower's refusal becomes a
/// forward to the leader.
pub(crate) async fn committed(
    node: &Node,
    write: impl std::future::Future<Output = WriteResult>,
) -> Result<openraft::raft::ClientWriteResponse<TypeConfig>, Routed> {
    let timeout = node.config.spec.write_timeout.get();
    match tokio::time::timeout(timeout, write).await {
        Err(_) => Err(no_quorum(timeout).into()),
        Ok(Ok(written)) => Ok(written),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            Err(leader_or_unavailable(&forward))
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error)))) => {
            Err(ApiError::new(StatusCode::CONFLICT, "membership", error.to_string()).into())
        }
        Ok(Err(error)) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "raft", error.to_string()).into())
        }
    }
}

/// Linearizable reads (the default) confirm leadership with a quorum first; followers forward
/// them to the leader. `?stale=true` reads this node's applied state as it is.
pub(crate) async fn read_barrier(node: &Node, request: &ApiRequest) -> Result<(), Routed> {
    if request.flag("stale")? {
        return Ok(());
    }
    let timeout = node.config.spec.write_timeout.get();
    tokio::time::timeout(timeout, confirmed_leadership(node))
        .await
        .unwrap_or_else(|_| Err(no_quorum(timeout).into()))
}

/// openraft's read index round: the leader's heartbeat answered by a quorum, each within one
/// heartbeat interval. A round that a quorum did not answer in time (a loaded follower, a lost
/// message) is tried again one interval later, until the caller's timeout; any other answer
/// ends it. Never while a transfer runs: a round renews the voters' leader lease, which the
/// transfer waits out.
async fn confirmed_leadership(node: &Node) -> Result<(), Routed> {
    loop {
        if node.transfers.in_progress() {
            return Err(transfer_in_progress(", or read with ?stale=true").into());
        }
        match node.raft.ensure_linearizable().await {
            Ok(_) => return Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                tokio::time::sleep(node.config.spec.heartbeat_interval.get()).await;
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                return Err(leader_or_unavailable(&forward));
            }
            Err(error) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "raft",
                    error.to_string(),
                )
                .into());
            }
        }
    }
}

/// 503 `transfer-in-progress` (retryable) while this node hands its leadership over; `or` adds
/// another way out to the advice.
pub(crate) fn transfer_in_progress(or: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "transfer-in-progress",
        format!("leadership is moving to another node; retry in a moment{or}"),
    )
}

/// 503 `leader-changed`: a write may or may not have been applied by the old leader.
fn leader_changed_while_forwarded(leader: &str) -> Response<Full<Bytes>> {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "leader-changed",
        format!(
            "the leader changed while {leader} had this request; a write may or may not have been applied: read, then retry"
        ),
    )
    .into_response()
}

fn no_quorum(timeout: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-quorum",
        format!("no quorum answered within {timeout:?}; is a majority of the cluster up?"),
    )
}

/// Sends a request that only the leader answers on to the leader this node knows of, or
/// answers 503 when it knows none.
pub(crate) fn to_current_leader(metrics: &openraft::RaftMetrics<NodeId, BasicNode>) -> Routed {
    let leader = metrics.current_leader.and_then(|id| {
        metrics
            .membership_config
            .nodes()
            .find(|(n, _)| **n == id)
            .map(|(_, n)| n.clone())
    });
    leader_or_unavailable(&ForwardToLeader {
        leader_id: metrics.current_leader,
        leader_node: leader,
    })
}

fn leader_or_unavailable(forward: &ForwardToLeader<NodeId, BasicNode>) -> Routed {
    match &forward.leader_node {
        Some(leader) => Routed::Forward(leader.addr.clone()),
        None => Routed::Error(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-leader",
            "the cluster has no leader right now; try again shortly",
        )),
    }
}

/// Sends the request on to the leader and relays its answer. If this node learns of another
/// leader (or of an election) first, the request is given up at once with 503
/// `leader-changed`, rather than waiting out the write timeout on a leader that may be paused
/// or cut off: the client retries against the new one.
pub(crate) async fn forward(
    node: &Node,
    request: &ApiRequest,
    leader: &str,
) -> Response<Full<Bytes>> {
    let query = if request.query.is_empty() {
        String::new()
    } else {
        format!("?{}", request.query)
    };
    let mut upstream = Request::builder()
        .method(request.method.clone())
        .uri(format!("https://{leader}{}{query}", request.path))
        .header(FORWARDED_HEADER, "1");
    if let Some(authorization) = &request.authorization {
        upstream = upstream.header(http::header::AUTHORIZATION, authorization);
    }
    if let Some(identities) = request.peer.forwarded() {
        upstream = upstream.header(FORWARDED_IDENTITY_HEADER, identities);
    }
    if let Some(fingerprint) = request.peer.fingerprint() {
        upstream = upstream.header(FORWARDED_CERTIFICATE_HEADER, fingerprint);
    }
    let timeout = if request.path == transfer::TRANSFER_PATH {
        // The transfer itself, the target's late answer, then resuming the held voters.
        node.config.spec.transfer_timeout.get() + transfer::ANSWER_SLACK * 3
    } else {
        node.config.spec.write_timeout.get()
    };
    let deadline = crate::tokens::now_ms()
        .saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    let upstream = upstream
        .header(FORWARD_DEADLINE_HEADER, deadline)
        .body(Full::new(request.body.clone()));
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_GATEWAY, "forward", e.to_string())
                .into_response();
        }
    };
    let exchange = async {
        let response = node
            .peers
            .request(upstream)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>(Response::from_parts(parts, Full::new(bytes)))
    };
    let forwarded_to = node.raft.metrics().borrow().current_leader;
    let mut metrics = node.raft.metrics();
    let leader_changed = async {
        // A transfer changes the leader itself: its answer is the one to wait for.
        if request.path == transfer::TRANSFER_PATH {
            std::future::pending::<()>().await;
        }
        let _ = metrics.wait_for(|m| m.current_leader != forwarded_to).await;
    };
    let answered = tokio::select! {
        answered = tokio::time::timeout(timeout, exchange) => answered,
        () = leader_changed => return leader_changed_while_forwarded(leader),
    };
    match answered {
        Ok(Ok(response)) => response,
        Ok(Err(reason)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "leader-unreachable",
            format!(
                "cannot reach the leader at {leader}: {reason}; a write may or may not have been applied: read, then retry"
            ),
        )
        .into_response(),
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-quorum",
            format!(
                "the leader at {leader} did not answer within {timeout:?} (no quorum, or this node cannot reach it); a write may or may not have been applied, and one the leader gets from now on is refused: read, then retry"
            ),
        )
        .into_response(),
    }
}
