//! `/v1/cluster`: this node's view of the cluster, membership changes and leadership
//! transfer. Membership changes go through Raft; a transfer runs on the leader only.

use http::StatusCode;
use openraft::BasicNode;

use super::answer::{Answer, ApiError, ApiRequest, json_body, json_body_or_default, json_response};
use super::caller::Caller;
use super::leader::{committed, to_current_leader};
use crate::node::Node;
use crate::raft::{NodeId, lag};
use crate::transfer;
use crate::wire::{ClusterMember, ClusterStatus, NewMember, TransferTo};

/// `POST /v1/cluster/members` adds a node as a learner, lets it catch up, then makes it a voter;
/// `DELETE /v1/cluster/members/{id}` removes a voter. Both answer with the new cluster view.
pub(crate) async fn change_members(
    node: &Node,
    request: &ApiRequest,
    remove: Option<&str>,
) -> Answer {
    if let Some(id) = remove {
        let id: NodeId = id.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-id",
                format!("`{id}` is not a node id"),
            )
        })?;
        let change = openraft::ChangeMembers::RemoveVoters([id].into());
        let _admitted = admit_write(node)?;
        committed(node, node.raft.change_membership(change, false)).await?;
        return status(node).await;
    }
    let member: NewMember = json_body(request, "{\"id\": N, \"address\": \"host:port\"}")?;
    if let Caller::Member(caller) = request.caller
        && caller != member.id
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "control-plane node {caller} may add only itself, not node {}",
                member.id
            ),
        )
        .into());
    }
    let learner = BasicNode::new(&member.address);
    let _admitted = admit_write(node)?;
    committed(node, node.raft.add_learner(member.id, learner, true)).await?;
    let change = openraft::ChangeMembers::AddVoterIds([member.id].into());
    committed(node, node.raft.change_membership(change, false)).await?;
    status(node).await
}

/// Lets a membership change into Raft (see [`crate::leadership::Transfers::admit_write`]), or
/// refuses it while leadership is being handed over.
fn admit_write(node: &Node) -> Result<crate::leadership::WriteAdmitted<'_>, ApiError> {
    node.transfers
        .admit_write()
        .ok_or_else(|| super::leader::transfer_in_progress(""))
}

/// `POST /v1/cluster/transfer-leader`: the leader hands leadership over (see
/// [`transfer::transfer`]); followers forward it. Answers with the new cluster view.
pub(crate) async fn transfer_leader(node: &Node, request: &ApiRequest) -> Answer {
    let body: TransferTo = json_body_or_default(request, "{\"to\": N} or {}")?;
    let metrics = node.raft.metrics().borrow().clone();
    if metrics.state != openraft::ServerState::Leader {
        return Err(to_current_leader(&metrics));
    }
    match transfer::transfer(node, body.to).await {
        Ok(_) => status(node).await,
        Err(error) => {
            let (status, code) = error.status();
            Err(ApiError::new(status, code, error.to_string()).into())
        }
    }
}

/// `GET /v1/cluster`: this node's view — its role, the leader, term, indexes, the snapshot and
/// compaction point, members (with their replication lag when this node leads).
pub(crate) async fn status(node: &Node) -> Answer {
    let metrics = node.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let members: Vec<ClusterMember> = metrics
        .membership_config
        .nodes()
        .map(|(id, n)| ClusterMember {
            id: *id,
            address: n.addr.clone(),
            voter: membership.voter_ids().any(|v| v == *id),
            lag: metrics.replication.as_ref().map(|replication| {
                lag(
                    metrics.last_log_index,
                    replication.get(id).copied().flatten(),
                )
            }),
        })
        .collect();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let revision = node.state.read(|state| state.revision()).await;
    let status = ClusterStatus {
        id: metrics.id,
        name: node.config.name.clone(),
        state: format!("{:?}", metrics.state),
        leader: metrics.current_leader,
        term: metrics.current_term,
        last_log_index: metrics.last_log_index,
        commit_index: node.commit_index.get(),
        last_applied: metrics.last_applied.map(|l| l.index),
        snapshot: metrics.snapshot.map(|l| l.index),
        purged: metrics.purged.map(|l| l.index),
        revision,
        members,
        voters,
    };
    Ok(json_response(StatusCode::OK, &status))
}
