//! Durability under leader crashes: a writer keeps writing through every node while the test
//! SIGKILLs the leader at random moments and restarts it (at once, or after the others elected
//! a new leader), many times; every write the cluster acknowledged must be on every node at
//! the end. The seed is printed; rerun a failure with
//! `HYPHAE_TEST_SEED=<seed>`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyphae_integration::cluster::{Cluster, SHORT_WRITE_TIMEOUT};
use hyphae_integration::eventually::{INTERVAL, wait_for};
use hyphae_integration::http::call;
use hyphae_integration::policies::{policy, policy_names, stale_policy_names};
use hyphae_integration::{DEADLINE, eventually};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How many times the leader is killed.
const KILL_CYCLES: usize = 20;
/// The kill lands after 1 to this many more write attempts have started, so it hits writes at
/// every stage: arriving, forwarded, appended, committed, answered.
const MAX_ATTEMPTS_BEFORE_KILL: u64 = 12;
/// Pause of the writer after a failed attempt, so a dead node is not hammered in a tight loop.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// What the writer has done, shared with the test.
struct Writes {
    /// Names of the writes the cluster answered 200 to.
    acknowledged: Mutex<Vec<String>>,
    /// Set when the writer should stop.
    stop: AtomicBool,
}

/// Writes distinct policies round-robin through every node until told to stop, counting the
/// attempts it starts in `attempts`.
async fn write_until_stopped(
    addresses: Vec<SocketAddr>,
    writes: Arc<Writes>,
    attempts: tokio::sync::watch::Sender<u64>,
) {
    let mut n: u64 = 0;
    while !writes.stop.load(Ordering::SeqCst) {
        n += 1;
        attempts.send_replace(n);
        let name = format!("acked-{n}");
        let address = addresses[(n as usize) % addresses.len()];
        let (code, _) = call("POST", address, "/v1/policies", &policy(&name, 1)).await;
        if code == 200 {
            writes.acknowledged.lock().expect("lock").push(name);
        } else {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_the_leader_being_killed_at_random_moments() {
    let seed = std::env::var("HYPHAE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("seed {seed} (rerun with HYPHAE_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = Cluster::start(
        Path::new(env!("CARGO_BIN_EXE_hyphae-control-plane")),
        dir.path(),
        3,
        SHORT_WRITE_TIMEOUT,
    )
    .expect("start the cluster");
    nodes.leader().await.expect("a leader");
    let addresses: Vec<SocketAddr> = nodes.addresses();
    let writes = Arc::new(Writes {
        acknowledged: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let (attempts, mut attempts_seen) = tokio::sync::watch::channel(0);
    let writer = tokio::spawn(write_until_stopped(
        addresses,
        Arc::clone(&writes),
        attempts,
    ));

    for cycle in 0..KILL_CYCLES {
        let leader = nodes.leader().await.expect("a leader");
        let kill_at = *attempts_seen.borrow() + rng.random_range(1..=MAX_ATTEMPTS_BEFORE_KILL);
        tokio::time::timeout(DEADLINE, attempts_seen.wait_for(|&n| n >= kill_at))
            .await
            .expect("the writer keeps attempting")
            .expect("the writer is running");
        nodes.node_mut(leader).kill();
        // A node restarted at once still holds its committed vote and leads again in the same
        // term; every other cycle the survivors elect a new leader first, so both paths run.
        let successor = if cycle % 2 == 0 {
            Some(nodes.leader().await.expect("a new leader"))
        } else {
            None
        };
        println!(
            "cycle {cycle}: killed leader {leader} at attempt {kill_at}; new leader before restart: {successor:?}"
        );
        nodes
            .node_mut(leader)
            .start(false)
            .expect("restart the old leader");
    }
    nodes.leader().await.expect("a leader");
    writes.stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let acknowledged = writes.acknowledged.lock().expect("lock").clone();
    println!("{} acknowledged writes", acknowledged.len());
    assert!(
        acknowledged.len() >= KILL_CYCLES,
        "too few acknowledged writes ({}) to mean anything",
        acknowledged.len()
    );

    // Linearizable reads through every node (followers forward them to the leader).
    for node in nodes.nodes() {
        // Leadership may still move on a loaded machine: ask again until a read is answered.
        let held = wait_for("a linearizable read", DEADLINE, INTERVAL, || async {
            let (code, body) =
                call("GET", node.address, "/v1/policies?kind=ServicePolicy", "").await;
            policy_names(code, &body)
        })
        .await
        .expect("a linearizable read answered");
        let missing: Vec<&String> = acknowledged.iter().filter(|n| !held.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "seed {seed}: acknowledged writes lost: {missing:?}"
        );
    }
    // Every node's own applied state, once it has caught up.
    for node in nodes.nodes() {
        eventually("every acknowledged write in every node's state", || async {
            stale_policy_names(node.address)
                .await
                .is_some_and(|held| acknowledged.iter().all(|n| held.contains(n)))
        })
        .await;
    }
}
