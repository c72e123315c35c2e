//! Pre-vote (Raft thesis §9.6), which openraft 0.9 lacks (decision 47). Before a node raises
//! its term to stand for election it asks the voters whether they would vote for it: each says
//! yes only when it has not heard from a leader within `electionTimeoutMin` (a leader: when a
//! quorum has not answered it that recently) and the candidate's log is at least as up to date
//! as its own. A node back from a pause or a partition so learns that the leader is alive
//! without raising its term, and never deposes a healthy leader.
//!
//! This module is the question and its answer; [`crate::keepers::election`] decides when to
//! ask, and starts the election.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::node::Node;
use crate::raft::{LogId, NodeId};

/// Peer RPC: would you vote for me?
pub const PRE_VOTE_PATH: &str = "/raft/pre-vote";

/// The question a would-be candidate asks every voter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    /// The term it would stand in: its current term plus one.
    pub term: u64,
    /// Its last log entry.
    pub last_log_id: Option<LogId>,
}

/// A voter's answer, with its reason when it is no.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteAnswer {
    /// Whether it would vote for the candidate now.
    pub granted: bool,
    /// The voter's own term.
    pub term: u64,
    /// Why not, for the candidate's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Answers a pre-vote request (the body of [`PRE_VOTE_PATH`]) as this node would vote now.
/// Nothing changes here: no term, no vote, no timer.
pub async fn answer(node: &Node, body: &[u8]) -> Result<Vec<u8>, String> {
    let request: PreVoteRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let answer = decide(node, &request).await;
    serde_json::to_vec(&answer).map_err(|e| e.to_string())
}

async fn decide(node: &Node, request: &PreVoteRequest) -> PreVoteAnswer {
    let lease = node.config.spec.election_timeout_min.get();
    let (term, leading_heard) = {
        let metrics = node.raft.metrics();
        let metrics = metrics.borrow();
        let leading = metrics.state == ServerState::Leader;
        let quorum_heard = metrics
            .millis_since_quorum_ack
            .is_some_and(|millis| Duration::from_millis(millis) < lease);
        (metrics.current_term, leading.then_some(quorum_heard))
    };
    let refuse = |reason: String| PreVoteAnswer {
        granted: false,
        term,
        refused: Some(reason),
    };
    if request.term <= term {
        return refuse(format!(
            "its term {} is not above mine ({term})",
            request.term
        ));
    }
    match leading_heard {
        Some(true) => return refuse("I lead, and a quorum answered me recently".into()),
        Some(false) => {}
        None if node.leader_contact.within(lease) => {
            return refuse(format!(
                "I heard from the leader within electionTimeoutMin ({lease:?})"
            ));
        }
        None => {}
    }
    match last_log_id(node).await {
        Ok(mine) if request.last_log_id >= mine => PreVoteAnswer {
            granted: true,
            term,
            refused: None,
        },
        Ok(mine) => refuse(format!(
            "its last log entry {:?} is behind mine {mine:?}",
            request.last_log_id
        )),
        Err(reason) => refuse(reason),
    }
}

/// This node's last log entry, as its store holds it (openraft 0.9 does not show it).
pub async fn last_log_id(node: &Node) -> Result<Option<LogId>, String> {
    use openraft::storage::RaftLogStorage;
    let mut log = node.log.clone();
    log.get_log_state()
        .await
        .map(|state| state.last_log_id)
        .map_err(|e| format!("cannot read the log: {e}"))
}

/// Asks every other voter of `configs` (one set, or two during a joint change) whether it
/// would vote for this node in `request.term`, each within `patience`. True once a quorum of
/// every config (this node's own yes included) said yes; false when every voter answered (or
/// ran out of time) without one.
pub async fn canvass(
    node: &Arc<Node>,
    configs: &[BTreeSet<NodeId>],
    request: PreVoteRequest,
    patience: Duration,
) -> bool {
    let me = node.config.spec.id;
    let mut granted = BTreeSet::from([me]);
    if quorum_of_each(configs, &granted) {
        return true;
    }
    let voters: BTreeSet<NodeId> = configs.iter().flatten().copied().collect();
    let mut asks = JoinSet::new();
    for voter in voters.into_iter().filter(|&v| v != me) {
        let Some(address) = node.member_address(voter) else {
            continue;
        };
        let node = Arc::clone(node);
        let request = request.clone();
        asks.spawn(async move {
            // A pre-vote answer is three fields; 4 KiB is plenty.
            let ask = node.post_to_member::<PreVoteAnswer>(&address, PRE_VOTE_PATH, &request, 4096);
            let answer = tokio::time::timeout(patience, ask)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {patience:?}")));
            (voter, answer)
        });
    }
    while let Some(joined) = asks.join_next().await {
        let Ok((voter, answer)) = joined else {
            continue;
        };
        match answer {
            Ok(PreVoteAnswer { granted: true, .. }) => {
                granted.insert(voter);
                if quorum_of_each(configs, &granted) {
                    return true;
                }
            }
            Ok(PreVoteAnswer { refused, term, .. }) => {
                tracing::debug!(
                    voter,
                    term,
                    reason = refused.as_deref().unwrap_or(""),
                    "pre-vote refused"
                );
            }
            Err(reason) => tracing::debug!(voter, %reason, "no pre-vote answer"),
        }
    }
    false
}

/// Whether `granted` holds a majority of every config (both, during a joint change).
pub fn quorum_of_each(configs: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|config| config.intersection(granted).count() * 2 > config.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_quorum_is_a_majority_of_every_config() {
        let three = [set(&[1, 2, 3])];
        assert!(!quorum_of_each(&three, &set(&[1])));
        assert!(quorum_of_each(&three, &set(&[1, 3])));
        let alone = [set(&[1])];
        assert!(quorum_of_each(&alone, &set(&[1])));
        let four = [set(&[1, 2, 3, 4])];
        assert!(
            !quorum_of_each(&four, &set(&[1, 2])),
            "half is not a majority"
        );
        let joint = [set(&[1, 2, 3]), set(&[3, 4, 5])];
        assert!(
            !quorum_of_each(&joint, &set(&[1, 2])),
            "only the old config"
        );
        assert!(quorum_of_each(&joint, &set(&[1, 3, 4])));
        assert!(!quorum_of_each(&[], &set(&[1])), "no config, no quorum");
    }
}
