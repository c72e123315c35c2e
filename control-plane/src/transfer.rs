//! Leadership transfer, which openraft 0.9 lacks (decision 17): the leader stops letting writes
//! into its log and waits for those in flight, waits for the target to catch up, asks the other
//! voters to hold their elections, stops its own heartbeats and asks the target to campaign
//! until the voters' leader lease runs out and it wins. Nothing it pauses stays paused: every
//! pause ends by itself after `transferTimeout`.

use std::time::Duration;

use http::StatusCode;
use openraft::{RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::node::Node;
use crate::raft::{NodeId, Raft};

/// Admin path of the leadership transfer; it may take up to `transferTimeout`.
pub const TRANSFER_PATH: &str = "/v1/cluster/transfer-leader";

/// Peer RPC: stop starting elections for `millis` (0 resumes them at once).
pub const HOLD_ELECTIONS_PATH: &str = "/raft/hold-elections";
/// Peer RPC: campaign until elected or `millis` pass.
pub const ELECT_PATH: &str = "/raft/elect";

/// Time allowed on top of a peer's own work for its answer to arrive: the target's campaign
/// ends at the transfer deadline, its answer comes this much later at most; a voter asked to
/// resume elections after the deadline answers within it (its hold also runs out by itself).
pub const ANSWER_SLACK: Duration = Duration::from_secs(1);

/// Body of both transfer RPCs.
#[derive(Debug, Serialize, Deserialize)]
struct Millis {
    millis: u64,
}

/// Answer of [`ELECT_PATH`].
#[derive(Debug, Serialize, Deserialize)]
struct Campaign {
    elected: bool,
}

/// Why a transfer did not happen; each variant maps to one API status and code.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The requested target cannot lead.
    #[error("node {0} is not a voter of this cluster; only voters can lead")]
    NotAVoter(NodeId),
    /// No voter other than the leader exists.
    #[error("there is no other voter to hand leadership to")]
    NoTarget,
    /// Another transfer is running on this leader.
    #[error("a leadership transfer is already running; wait for it to end")]
    InProgress,
    /// This node stopped leading before the transfer began.
    #[error("this node is no longer the leader; retry the request")]
    NotLeader,
    /// The target kept lagging.
    #[error("node {target} did not catch up within {waited:?} ({lag} entries behind); is it up?")]
    Behind {
        /// The target.
        target: NodeId,
        /// Its last known lag.
        lag: u64,
        /// How long the leader waited.
        waited: Duration,
    },
    /// Writes already in Raft did not finish in time (no quorum?).
    #[error("writes already in flight did not finish within {waited:?}; is a quorum up?")]
    WritesInFlight {
        /// How long the leader waited.
        waited: Duration,
    },
    /// The target could not be asked to campaign.
    #[error("cannot ask node {target} to campaign: {reason}")]
    Unreachable {
        /// The target.
        target: NodeId,
        /// What failed.
        reason: String,
    },
    /// The target campaigned but did not win in time.
    #[error("node {target} did not win an election within {waited:?}; elections resume normally")]
    NotElected {
        /// The target.
        target: NodeId,
        /// How long the transfer took in all.
        waited: Duration,
    },
}

impl TransferError {
    /// The API status and code for this failure.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            TransferError::NotAVoter(_) => (StatusCode::CONFLICT, "not-a-voter"),
            TransferError::NoTarget => (StatusCode::CONFLICT, "no-target"),
            TransferError::InProgress => (StatusCode::CONFLICT, "transfer-in-progress"),
            TransferError::NotLeader => (StatusCode::SERVICE_UNAVAILABLE, "not-leader"),
            TransferError::Behind { .. } => (StatusCode::CONFLICT, "target-behind"),
            TransferError::WritesInFlight { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "writes-in-flight")
            }
            TransferError::Unreachable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "target-unreachable")
            }
            TransferError::NotElected { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "transfer-failed")
            }
        }
    }
}

/// The leader's own heartbeats, off while the target campaigns (they would renew the voters'
/// leader lease); back on when dropped, whatever happened (failure, timeout, the request going
/// away). It never stands for election itself while it leads ([`crate::keepers::election`]).
struct PausedLeader(Raft);

impl PausedLeader {
    fn new(raft: &Raft) -> Self {
        raft.runtime_config().heartbeat(false);
        PausedLeader(raft.clone())
    }
}

impl Drop for PausedLeader {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}

type Metrics = RaftMetrics<NodeId, openraft::BasicNode>;

/// Hands leadership from this node (the leader) to `to`, or to the most caught-up other voter.
/// Returns the new leader.
pub async fn transfer(node: &Node, to: Option<NodeId>) -> Result<NodeId, TransferError> {
    let _running = node.transfers.start().ok_or(TransferError::InProgress)?;
    let me = node.config.spec.id;
    let timeout = node.config.spec.transfer_timeout.get();
    let started = Instant::now();
    let deadline = started + timeout;
    let metrics = node.raft.metrics().borrow().clone();
    if !leads(&metrics, me) {
        return Err(TransferError::NotLeader);
    }
    let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
    let target = match to {
        Some(id) if id == me => return Ok(me),
        Some(id) if !voters.contains(&id) => return Err(TransferError::NotAVoter(id)),
        Some(id) => id,
        None => most_caught_up(&metrics, me).ok_or(TransferError::NoTarget)?,
    };
    // From here until the transfer ends nothing enters the log, so once the target has matched
    // it, it stays caught up; writes admitted before wait out their commit (or give up).
    let _writes_closed = tokio::time::timeout_at(deadline, node.transfers.close_writes())
        .await
        .map_err(|_| TransferError::WritesInFlight {
            waited: started.elapsed(),
        })?;
    caught_up(node, target, deadline).await?;

    let others: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|&v| v != me && v != target)
        .collect();
    for &voter in &others {
        let hold = Millis {
            millis: millis(timeout),
        };
        // A voter that cannot be told is most likely down, and then it cannot campaign either;
        // one that does not answer gets no more than `ANSWER_SLACK` of the transfer's time.
        let asked_by = deadline.min(Instant::now() + ANSWER_SLACK);
        let held: Result<serde_json::Value, String> =
            call(node, voter, HOLD_ELECTIONS_PATH, &hold, asked_by).await;
        if let Err(reason) = held {
            tracing::warn!(voter, %reason, "cannot hold a voter's elections for a transfer");
        }
    }
    let paused = PausedLeader::new(&node.raft);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let campaign: Result<Campaign, String> = call(
        node,
        target,
        ELECT_PATH,
        &Millis {
            millis: millis(remaining),
        },
        deadline + ANSWER_SLACK,
    )
    .await;
    drop(paused);
    // A held voter's hold ends by itself once it sees the new leader's term; this node, no
    // longer the leader then, could not release it anyway (only the leader moves leadership).
    let elected = matches!(campaign, Ok(Campaign { elected: true }));
    for &voter in others.iter().filter(|_| !elected) {
        let resume = Millis { millis: 0 };
        let resumed: Result<serde_json::Value, String> = call(
            node,
            voter,
            HOLD_ELECTIONS_PATH,
            &resume,
            Instant::now() + ANSWER_SLACK,
        )
        .await;
        if let Err(reason) = resumed {
            tracing::warn!(voter, %reason, "cannot resume a voter's elections; its hold runs out by itself");
        }
    }
    match campaign {
        Err(reason) => Err(TransferError::Unreachable { target, reason }),
        Ok(Campaign { elected: false }) => Err(TransferError::NotElected {
            target,
            waited: started.elapsed(),
        }),
        Ok(Campaign { elected: true }) => {
            // Answer once this node knows too, so the cluster view it answers with is current
            // (the campaign may have ended after the transfer's own deadline).
            let mut metrics = node.raft.metrics();
            let _ = tokio::time::timeout(
                ANSWER_SLACK * 2,
                metrics.wait_for(|m| m.current_leader == Some(target)),
            )
            .await;
            Ok(target)
        }
    }
}

/// Serves the transfer RPCs a leader sends to voters: `None` when `path` is not one of them.
pub async fn serve_rpc(node: &Node, path: &str, body: &[u8]) -> Option<Result<Vec<u8>, String>> {
    if path != HOLD_ELECTIONS_PATH && path != ELECT_PATH {
        return None;
    }
    let request: Millis = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return Some(Err(e.to_string())),
    };
    // A peer's request never pauses this node longer than its own transfer timeout.
    let duration =
        Duration::from_millis(request.millis).min(node.config.spec.transfer_timeout.get());
    let answer = if path == HOLD_ELECTIONS_PATH {
        let term = node.raft.metrics().borrow().current_term;
        node.transfers.hold_elections(duration, term);
        serde_json::to_vec(&serde_json::json!({}))
    } else {
        serde_json::to_vec(&Campaign {
            elected: campaign(node, duration).await,
        })
    };
    Some(answer.map_err(|e| e.to_string()))
}

/// Starts elections, one every heartbeat interval, until this node leads or `duration`
/// passes. Voters refuse while their leader lease lasts, so the first tries usually fail. No
/// pre-vote: the leader asked for this election (as Raft's TimeoutNow).
async fn campaign(node: &Node, duration: Duration) -> bool {
    let me = node.config.spec.id;
    let deadline = Instant::now() + duration;
    let retry = node.config.spec.heartbeat_interval.get();
    let mut metrics = node.raft.metrics();
    loop {
        if leads(&metrics.borrow(), me) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        if let Err(error) = node.raft.trigger().elect().await {
            tracing::warn!(%error, "cannot start an election");
            return false;
        }
        let next = (Instant::now() + retry).min(deadline);
        let _ = tokio::time::timeout_at(next, metrics.wait_for(|m| leads(m, me))).await;
    }
}

fn leads(metrics: &Metrics, id: NodeId) -> bool {
    metrics.state == ServerState::Leader && metrics.current_leader == Some(id)
}

/// The voter other than `me` with the highest matched log index.
fn most_caught_up(metrics: &Metrics, me: NodeId) -> Option<NodeId> {
    let replication = metrics.replication.as_ref()?;
    metrics
        .membership_config
        .membership()
        .voter_ids()
        .filter(|&v| v != me)
        .max_by_key(|v| replication.get(v).copied().flatten().map(|l| l.index))
}

/// Waits until `target` has matched every entry of the leader's log.
async fn caught_up(node: &Node, target: NodeId, deadline: Instant) -> Result<(), TransferError> {
    let me = node.config.spec.id;
    let started = Instant::now();
    let lag_of = |m: &Metrics| -> Option<u64> {
        let matched = m.replication.as_ref()?.get(&target).copied().flatten();
        Some(crate::raft::lag(m.last_log_index, matched))
    };
    let mut metrics = node.raft.metrics();
    // `let _` releases the borrowed metrics at once; the state is read again below.
    let _ = tokio::time::timeout_at(
        deadline,
        metrics.wait_for(|m| !leads(m, me) || lag_of(m) == Some(0)),
    )
    .await;
    let current = node.raft.metrics().borrow().clone();
    if !leads(&current, me) {
        return Err(TransferError::NotLeader);
    }
    match lag_of(&current) {
        Some(0) => Ok(()),
        lag => Err(TransferError::Behind {
            target,
            lag: lag.unwrap_or(u64::MAX),
            waited: started.elapsed(),
        }),
    }
}

/// POSTs `body` to a transfer RPC of voter `id` and decodes its answer, within `deadline`.
async fn call<T: serde::de::DeserializeOwned>(
    node: &Node,
    id: NodeId,
    path: &str,
    body: &impl Serialize,
    deadline: Instant,
) -> Result<T, String> {
    let address = node
        .member_address(id)
        .ok_or_else(|| format!("node {id} is not a member"))?;
    // A transfer RPC's answer is a few fields; the deadline bounds how long it is read.
    let exchange = node.post_to_member(&address, path, body, usize::MAX);
    tokio::time::timeout_at(deadline, exchange)
        .await
        .map_err(|_| format!("node {id} at {address} did not answer in time"))?
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
