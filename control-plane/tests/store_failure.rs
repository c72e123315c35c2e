//! A node whose store fails, with a real process: its data directory is a 2 MiB tmpfs that
//! fills up, a write to the Raft store fails, Raft stops, and the node exits non-zero with a
//! log line saying why (so systemd restarts it) instead of answering reads from a state that
//! no longer advances. The mount needs root; without it the test says so and skips.

use std::path::Path;

use hyphae_integration::DEADLINE;
use hyphae_integration::cluster::{Cluster, SHORT_WRITE_TIMEOUT, data_dir};
use hyphae_integration::http::call;
use hyphae_integration::policies::{FILL_TRIES, apply_until_silent};
use hyphae_integration::tmpfs::{SMALL_DISK, Tmpfs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_store_fills_up_exits_instead_of_serving_stale_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Declared first so it is dropped last: unmounted once the node is gone, even on failure.
    let disk: Option<Tmpfs>;
    let mut cluster = Cluster::configure(
        Path::new(env!("CARGO_BIN_EXE_hyphae-control-plane")),
        dir.path(),
        1,
        SHORT_WRITE_TIMEOUT,
    )
    .expect("configure the node");
    disk = Tmpfs::mount(&data_dir(dir.path(), 1), SMALL_DISK).expect("mount the small disk");
    if disk.is_none() {
        eprintln!(
            "SKIPPED a_node_whose_store_fills_up_exits_instead_of_serving_stale_reads: mounting a tmpfs needs root (CI runs it as root)"
        );
        return;
    }
    cluster.start_all().expect("start the node");
    cluster.leader().await.expect("the node leads");
    let address = cluster.node(1).address;

    let applied = apply_until_silent(address).await;
    assert!(
        applied.committed > 0 && applied.answered < FILL_TRIES,
        "{applied:?}: the disk holds a few writes, then the node stops answering"
    );
    let node = cluster.node_mut(1);
    let log = node.log().to_path_buf();
    assert_eq!(
        node.exit_code(DEADLINE).await,
        Some(1),
        "the node exits with an error; log: {}",
        log.display()
    );
    let text = std::fs::read_to_string(&log).expect("read the log");
    assert!(
        text.contains("Raft has stopped") && text.contains("No space left on device"),
        "{text}"
    );
    let (status, _) = call("GET", address, "/v1/policies?stale=true", "").await;
    assert_eq!(status, 0, "nothing answers reads any more");
    drop(cluster);
    drop(disk);
}
