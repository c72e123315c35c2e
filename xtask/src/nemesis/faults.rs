//! The nemesis proper: one fault at a time against the cluster (SIGKILL then restart, SIGSTOP
//! then SIGCONT, a leadership transfer), each held for a bounded time and healed before the
//! next. It never leaves a node killed or paused when it returns.

use std::time::Duration;

use anyhow::{Context, Result};
use hyphae_integration::Signal;
use hyphae_integration::cluster::Cluster;
use hyphae_integration::http::attempt;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value as Json, json};
use tokio::time::Instant;

use super::history::{History, micros};

/// Quiet time between faults, drawn from this range: long enough for writes to resume.
const QUIET: std::ops::Range<Duration> = Duration::from_millis(1000)..Duration::from_millis(3000);
/// How long a killed node stays down or a paused one stays stopped, drawn from this range.
const HOLD: std::ops::Range<Duration> = Duration::from_millis(500)..Duration::from_millis(4000);
/// Longest a leadership transfer request may take: the nodes' default `transferTimeout`
/// (10 s), plus the slack they allow for the target's and the voters' answers (3 × 1 s), plus
/// a margin.
const TRANSFER_PATIENCE: Duration = Duration::from_secs(15);
/// Most faults in one run, whatever the duration.
const MAX_FAULTS: usize = 10_000;

/// The kinds of fault, drawn in turn at random.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SIGKILL the leader, restart it after the hold.
    KillLeader,
    /// SIGKILL a follower, restart it after the hold.
    KillFollower,
    /// SIGSTOP the leader, SIGCONT it after the hold.
    PauseLeader,
    /// SIGSTOP a follower, SIGCONT it after the hold.
    PauseFollower,
    /// Ask the leader to hand leadership to another node.
    TransferLeader,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 5] = [
        Kind::KillLeader,
        Kind::KillFollower,
        Kind::PauseLeader,
        Kind::PauseFollower,
        Kind::TransferLeader,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::KillLeader => "kill leader",
            Kind::KillFollower => "kill follower",
            Kind::PauseLeader => "pause leader",
            Kind::PauseFollower => "pause follower",
            Kind::TransferLeader => "transfer leader",
        }
    }
}

/// One injected fault.
#[derive(Clone, Debug)]
pub struct Fault {
    /// What it was.
    pub kind: Kind,
    /// The node it hit (for a transfer, the leader asked).
    pub node: u64,
    /// When it was injected, since the run began.
    pub injected: Duration,
    /// When it was healed (restarted, resumed, the transfer answered).
    pub healed: Duration,
    /// What happened beyond that: a transfer's answer, a restart's failure.
    pub note: String,
}

impl Fault {
    /// The fault as JSON for `history.json`.
    pub fn json(&self) -> Json {
        json!({
            "kind": self.kind.name(),
            "node": self.node,
            "injectedUs": micros(self.injected),
            "healedUs": micros(self.healed),
            "note": self.note,
        })
    }
}

/// Injects faults one at a time until `until`, healing each before the next. Returns what it
/// did; an error only when the cluster cannot be driven at all (a node that will not restart).
pub async fn run(
    cluster: &mut Cluster,
    history: &History,
    rng: &mut StdRng,
    until: Instant,
) -> Result<Vec<Fault>> {
    let mut faults = Vec::new();
    for _ in 0..MAX_FAULTS {
        let quiet = rng.random_range(QUIET);
        if Instant::now() + quiet >= until {
            break;
        }
        tokio::time::sleep(quiet).await;
        // Every node runs here; a cluster without an agreed leader now is a finding, reported
        // by the write gap, and the next fault waits for one.
        let Ok(leader) = cluster.leader().await else {
            continue;
        };
        if Instant::now() >= until {
            break;
        }
        let followers: Vec<u64> = cluster
            .nodes()
            .iter()
            .map(|n| n.id)
            .filter(|&id| id != leader)
            .collect();
        let follower = followers[rng.random_range(0..followers.len())];
        let kind = Kind::ALL[rng.random_range(0..Kind::ALL.len())];
        let hold = rng.random_range(HOLD);
        let fault = inject(cluster, history, kind, leader, follower, hold).await?;
        faults.push(fault);
    }
    Ok(faults)
}

/// Injects one fault, holds it for `hold` and heals it.
async fn inject(
    cluster: &mut Cluster,
    history: &History,
    kind: Kind,
    leader: u64,
    follower: u64,
    hold: Duration,
) -> Result<Fault> {
    let node = match kind {
        Kind::KillLeader | Kind::PauseLeader | Kind::TransferLeader => leader,
        Kind::KillFollower | Kind::PauseFollower => follower,
    };
    let injected = history.now();
    let mut note = String::new();
    match kind {
        Kind::KillLeader | Kind::KillFollower => {
            cluster.node_mut(node).kill();
            tokio::time::sleep(hold).await;
            // Starting waits for the node's ready line on this thread.
            let started = tokio::task::block_in_place(|| cluster.node_mut(node).start(false));
            started.with_context(|| format!("restart node {node}"))?;
        }
        Kind::PauseLeader | Kind::PauseFollower => {
            cluster.node(node).signal(Signal::STOP);
            tokio::time::sleep(hold).await;
            cluster.node(node).signal(Signal::CONT);
        }
        Kind::TransferLeader => {
            let address = cluster.node(node).address;
            let path = "/v1/cluster/transfer-leader";
            note = match attempt("POST", address, path, "{}", TRANSFER_PATIENCE).await {
                Ok(answer) if answer.status.is_success() => {
                    format!("new leader {}", answer.json()["leader"])
                }
                Ok(answer) => format!(
                    "refused {}: {}",
                    answer.status.as_u16(),
                    answer.json()["code"]
                ),
                Err(_) => format!("no answer within {TRANSFER_PATIENCE:?}"),
            };
        }
    }
    Ok(Fault {
        kind,
        node,
        injected,
        healed: history.now(),
        note,
    })
}
