//! Elections of a real three-node cluster under the faults that used to cost availability: a
//! follower back from a pause must not depose a healthy leader (pre-vote), and leadership
//! transfers must succeed while writes keep arriving (the write gate). Timings are the test
//! clusters' (heartbeat 100 ms, election timeout 1 s to 2 s).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyphae_integration::cluster::{Cluster, Node, SHORT_WRITE_TIMEOUT, status};
use hyphae_integration::http::call;
use hyphae_integration::policies::policy;
use hyphae_integration::{Signal, eventually};
use tokio::time::Instant;

const CONTROL_PLANE: &str = env!("CARGO_BIN_EXE_hyphae-control-plane");

/// Longer than the test clusters' `electionTimeoutMax` (2 s), with room for a slow machine.
const LONGER_THAN_AN_ELECTION: Duration = Duration::from_secs(3);
/// How long the follower stays paused: longer than any election timer it could have, openraft's
/// own included (its leader lease plus a random timeout, up to 4 s here), so without a pre-vote
/// it would stand the moment it resumes.
const PAUSE: Duration = Duration::from_secs(5);

/// A three-node cluster of the test timings, started.
fn three_nodes(dir: &Path) -> Cluster {
    Cluster::start(Path::new(CONTROL_PLANE), dir, 3, SHORT_WRITE_TIMEOUT).expect("start the nodes")
}

/// The id of a node other than `leader`.
fn a_follower(nodes: &Cluster, leader: u64) -> u64 {
    nodes
        .nodes()
        .iter()
        .find(|n| n.id != leader)
        .map(|n| n.id)
        .expect("a follower")
}

async fn term_of(node: &Node) -> Option<u64> {
    status(node.address).await["term"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_back_from_a_pause_does_not_depose_the_leader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = three_nodes(dir.path());
    let leader = nodes.leader().await.expect("a leader");
    let term = term_of(nodes.node(leader))
        .await
        .expect("the leader's term");
    let follower = a_follower(&nodes, leader);

    nodes.node(follower).signal(Signal::STOP);
    // While it is stopped, the rest of the cluster goes on writing; its own election timer
    // runs out many times over.
    let paused = Instant::now();
    let mut written = 0;
    while paused.elapsed() < PAUSE {
        let (code, body) = call(
            "POST",
            nodes.node(leader).address,
            "/v1/policies",
            &policy(&format!("p{written}"), 1),
        )
        .await;
        assert_eq!(
            code, 200,
            "writes go on without the paused follower: {body}"
        );
        written += 1;
    }
    nodes.node(follower).signal(Signal::CONT);

    // Back, it hears the leader again and catches up, without raising its term.
    eventually("the follower to follow the leader again", || async {
        nodes.node(follower).leader_seen().await == Some(leader)
    })
    .await;
    let watched = Instant::now();
    while watched.elapsed() < LONGER_THAN_AN_ELECTION {
        for node in nodes.nodes() {
            let seen = status(node.address).await;
            assert_eq!(
                (seen["leader"].as_u64(), seen["term"].as_u64()),
                (Some(leader), Some(term)),
                "node {} after the follower came back: {seen}",
                node.id
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = call(
        "POST",
        nodes.node(follower).address,
        "/v1/policies",
        &policy("after", 1),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_transfers_succeed_while_writes_keep_arriving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = three_nodes(dir.path());
    nodes.leader().await.expect("a leader");

    // Writers on every node, as fast as they are answered, until the transfers are done.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for (index, address) in nodes.addresses().into_iter().enumerate() {
        let (stop, acknowledged) = (Arc::clone(&stop), Arc::clone(&acknowledged));
        writers.spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("w{index}-{}", round % 4);
                let (code, _) = call("POST", address, "/v1/policies", &policy(&name, 1)).await;
                if code == 200 {
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                round += 1;
            }
        });
    }

    const TRANSFERS: usize = 6;
    for transfer in 0..TRANSFERS {
        let before = acknowledged.load(Ordering::SeqCst);
        eventually("writes to be acknowledged before the next transfer", || {
            let acknowledged = Arc::clone(&acknowledged);
            async move { acknowledged.load(Ordering::SeqCst) >= before + 5 }
        })
        .await;
        let leader = nodes.leader().await.expect("a leader");
        let (code, body) = call(
            "POST",
            nodes.node(leader).address,
            "/v1/cluster/transfer-leader",
            "",
        )
        .await;
        assert_eq!(code, 200, "transfer {transfer} from node {leader}: {body}");
        let new_leader = body["leader"].as_u64().expect("the new leader");
        assert_ne!(new_leader, leader, "transfer {transfer}: {body}");
    }
    let before = acknowledged.load(Ordering::SeqCst);
    eventually("writes to go on after the last transfer", || {
        let acknowledged = Arc::clone(&acknowledged);
        async move { acknowledged.load(Ordering::SeqCst) >= before + 5 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    while writers.join_next().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_gives_up_a_connection_its_peer_stopped_answering_and_reconnects() {
    // A partition (here: a stopped process, whose kernel still acknowledges TCP) leaves the
    // leader's connection to a follower open but silent. Without PINGs the leader kept
    // sending into it until TCP gave up, seconds after the follower was back; now it gives
    // the connection up after `electionTimeoutMax` without a PING's answer.
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = three_nodes(dir.path());
    let leader = nodes.leader().await.expect("a leader");
    let follower = a_follower(&nodes, leader);
    let leader_pid = nodes.node(leader).pid().expect("the leader runs");
    let follower_address = nodes.node(follower).address;
    // The leader's established connections to the follower, by local port (`ss`).
    let connections = || -> std::collections::BTreeSet<String> {
        std::process::Command::new("ss")
            .args(["-Htnp", "state", "established", "dst"])
            .arg(follower_address.to_string())
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|line| line.contains(&format!("pid={leader_pid},")))
                    .filter_map(|line| line.split_whitespace().nth(2).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = connections();
    assert!(!before.is_empty(), "the leader replicates to the follower");
    nodes.node(follower).signal(Signal::STOP);
    // The stopped follower's kernel still acknowledges every segment: only a PING unanswered
    // tells the leader the connection is dead.
    eventually("the leader to give up its silent connections", || async {
        connections().is_disjoint(&before)
    })
    .await;
    nodes.node(follower).signal(Signal::CONT);
    // A new connection: the follower is reached and applies what it missed.
    let (code, body) = call(
        "POST",
        nodes.node(leader).address,
        "/v1/policies",
        &policy("after-the-pause", 1),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    eventually(
        "the follower to apply the write made after it came back",
        || async {
            let (code, _) = call(
                "GET",
                nodes.node(follower).address,
                "/v1/policies/ServicePolicy/after-the-pause?stale=true",
                "",
            )
            .await;
            code == 200
        },
    )
    .await;
}
