//! Log compaction in a real three-node cluster: a follower that was down while the leader
//! snapshotted and purged the entries it lacks catches up through install-snapshot.

use std::path::Path;

use hyphae_integration::cluster::{Cluster, SHORT_WRITE_TIMEOUT, status};
use hyphae_integration::eventually;
use hyphae_integration::http::call;
use hyphae_integration::policies::{policy, stale_policy_names};

/// Policies written while the follower is down: several snapshots' worth.
const WRITES: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restarted_after_compaction_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = Cluster::start(
        Path::new(env!("CARGO_BIN_EXE_hyphae-control-plane")),
        dir.path(),
        3,
        &format!("{SHORT_WRITE_TIMEOUT}  snapshotEvery: 20\n  logsKeptAfterSnapshot: 0\n"),
    )
    .expect("start the cluster");
    let leader = nodes.leader().await.expect("a leader");
    let leader_address = nodes.node(leader).address;
    let follower_id = nodes
        .nodes()
        .iter()
        .map(|n| n.id)
        .find(|&id| id != leader)
        .expect("a follower");
    let follower = nodes.node_mut(follower_id);
    let before = status(follower.address).await;
    assert!(
        before["snapshot"].is_null(),
        "no snapshot yet on a new cluster: {before}"
    );
    let follower_last = before["lastLogIndex"].as_u64().expect("last log index");
    follower.kill();

    let names: Vec<String> = (0..WRITES).map(|i| format!("compacted-{i}")).collect();
    for name in &names {
        // A loaded machine may hold an election meanwhile: a refused write is tried again (an
        // apply of the same document is idempotent).
        eventually(&format!("{name} to be written"), || async {
            call("POST", leader_address, "/v1/policies", &policy(name, 1))
                .await
                .0
                == 200
        })
        .await;
    }
    eventually("the leader to purge what the follower lacks", || async {
        status(leader_address).await["purged"]
            .as_u64()
            .is_some_and(|purged| purged > follower_last)
    })
    .await;

    // The follower comes back unable to build snapshots of its own, so a snapshot there can
    // only be one the leader installed.
    let config = std::fs::read_to_string(&follower.config).expect("read config");
    std::fs::write(
        &follower.config,
        config.replace("snapshotEvery: 20", "snapshotEvery: 1000000"),
    )
    .expect("write config");
    let purged = status(leader_address).await["purged"]
        .as_u64()
        .expect("purged index");
    follower.start(false).expect("restart the follower");
    let follower_address = follower.address;
    eventually("the follower to hold every policy", || async {
        stale_policy_names(follower_address)
            .await
            .is_some_and(|held| names.iter().all(|n| held.contains(n)))
    })
    .await;
    let after = status(follower_address).await;
    let snapshot = after["snapshot"]
        .as_u64()
        .expect("a snapshot on the follower");
    assert!(
        snapshot >= purged,
        "caught up by snapshot: its snapshot covers {snapshot}, the leader had purged up to {purged}: {after}"
    );
}
