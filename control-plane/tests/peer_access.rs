//! The control-plane port as an attacker meets it, with real processes and real TLS: Raft,
//! transfer and heartbeat-batch RPCs from anyone but a current member (no certificate, an
//! agent's, a control-plane certificate of a node that is no member) are refused and logged,
//! transfer RPCs from a member that does not lead are refused, and an agent's certificate
//! speaks only for its own node. Also the honest path of the batch RPC: an agent that
//! heartbeats only through a follower keeps its lease. Certificates are signed with the cluster's own root (every cluster a test
//! process starts shares one), the way a member with a bug or a stolen agent key would hold
//! them.

use std::net::SocketAddr;
use std::path::Path;

use hyphae_control_plane::heartbeat_batch::HEARTBEATS_PATH;
use hyphae_control_plane::network::{APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use hyphae_control_plane::pre_vote::PRE_VOTE_PATH;
use hyphae_control_plane::transfer::{ELECT_PATH, HOLD_ELECTIONS_PATH};
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cluster::Cluster;
use hyphae_integration::eventually;
use hyphae_integration::http::{request_as, request_as_member, request_as_node};
use hyphae_integration::trust::shared_root;
use hyphae_policies::tls::{Credentials, Kind, SpiffeId};

/// A certificate for `kind` `name` from the root every cluster of this process starts with.
fn credentials(kind: Kind, name: &str) -> Credentials {
    let root_dir = shared_root(&workspace_binary("hyphae")).expect("the shared root");
    let root = hyphae_control_plane::ca::load_dir(root_dir).expect("the root and its key");
    let id = SpiffeId::new("hyphae.local", kind, name).to_string();
    let now = hyphae_control_plane::tokens::now_ms();
    let (chain, key) =
        hyphae_control_plane::ca::issue(&root, &[id], &Default::default(), now, 3_600_000)
            .expect("signed");
    Credentials::from_pem(&chain, &key).expect("credentials")
}

/// The status of a POST of `body` to `path` on `node` as `who` (anonymous when `None`).
async fn status(who: Option<&Credentials>, node: SocketAddr, path: &str, body: &str) -> u16 {
    let answer = match who {
        Some(credentials) => request_as_node(credentials, "POST", node, path, body).await,
        None => request_as(None, "POST", node, path, body).await,
    };
    answer.map_or(0, |answer| answer.status.as_u16())
}

/// The node's count of refusals for `reason` (`GET /v1/metrics`, read role).
async fn refused(node: SocketAddr, reason: &str) -> f64 {
    let page = hyphae_integration::http::get_text(node, "/v1/metrics").await;
    hyphae_integration::http::metric_in(
        &page,
        "hyphae_control_plane_refused_total",
        &format!("reason=\"{reason}\""),
    )
}

/// The id of the node at `address`.
fn id_of(cluster: &Cluster, address: SocketAddr) -> u64 {
    cluster
        .nodes()
        .iter()
        .find(|n| n.address == address)
        .expect("a node of the cluster")
        .id
}

fn log_of(dir: &Path, id: u64) -> String {
    std::fs::read_to_string(dir.join(format!("cp-{id}.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_rpcs_need_a_members_certificate_and_agents_speak_only_for_themselves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cluster, leader, follower) = Cluster::three_logged(dir.path(), "")
        .await
        .expect("a cluster with a leader");
    let leader_id = id_of(&cluster, leader);
    let follower_id = id_of(&cluster, follower);
    let outsider = credentials(Kind::ControlPlane, "9");
    let member = credentials(Kind::ControlPlane, &follower_id.to_string());
    let agent = credentials(Kind::Node, "app-1");

    for path in [
        APPEND_PATH,
        VOTE_PATH,
        PRE_VOTE_PATH,
        SNAPSHOT_PATH,
        ELECT_PATH,
        HOLD_ELECTIONS_PATH,
        HEARTBEATS_PATH,
    ] {
        assert_eq!(
            status(None, follower, path, "{}").await,
            403,
            "anonymous {path}"
        );
        assert_eq!(
            status(Some(&agent), follower, path, "{}").await,
            403,
            "an agent's certificate on {path}"
        );
        assert_eq!(
            status(Some(&outsider), follower, path, "{}").await,
            403,
            "a control-plane certificate of no member on {path}"
        );
    }
    for path in [ELECT_PATH, HOLD_ELECTIONS_PATH] {
        assert_eq!(
            status(Some(&member), follower, path, "{}").await,
            403,
            "a member that does not lead may not move leadership ({path})"
        );
    }
    // A member may ask for a pre-vote; a follower that hears its leader says no, whatever the
    // term, and changes nothing.
    let asked = request_as_node(
        &member,
        "POST",
        follower,
        PRE_VOTE_PATH,
        r#"{"term": 1000000, "last_log_id": null}"#,
    )
    .await
    .expect("an answer");
    assert_eq!(asked.status.as_u16(), 200, "{}", asked.text());
    let answer = asked.json();
    assert_eq!(answer["granted"], false, "{answer}");
    assert!(
        answer["refused"]
            .as_str()
            .is_some_and(|reason| reason.contains("heard from the leader")),
        "{answer}"
    );
    assert!(answer["term"].as_u64().is_some_and(|term| term < 1_000_000));
    let log = log_of(dir.path(), follower_id);
    assert!(log.contains("peer RPC refused"), "each refusal is logged");
    assert!(refused(follower, "peer-rpc").await >= 20.0, "and counted");

    // The agent API: a node certificate, for its own node only.
    let record = |name: &str| {
        format!(
            "{{\"name\": \"{name}\", \"site\": \"a\", \"address\": \"10.0.0.1:4143\", \"instances\": []}}"
        )
    };
    let register = "/v1/agent/register";
    assert_eq!(status(None, leader, register, &record("app-1")).await, 401);
    assert_eq!(
        status(Some(&agent), leader, register, &record("app-2")).await,
        403,
        "a registration for another node's name"
    );
    // Its own registration goes through (retried, as an agent does, over a moment without a
    // confirmed leader).
    eventually("the agent's own registration to be taken", || async {
        status(Some(&agent), leader, register, &record("app-1")).await == 200
    })
    .await;
    let with_payments = "{\"name\": \"app-1\", \"site\": \"a\", \"address\": \"10.0.0.1:4143\", \"instances\": [{\"service\": \"payments\", \"port\": 443}]}";
    assert_eq!(
        status(Some(&agent), leader, register, with_payments).await,
        403,
        "a registration of a service the certificate does not name"
    );
    let heartbeat = "{\"node\": \"app-2\"}";
    assert_eq!(
        status(Some(&agent), leader, "/v1/agent/heartbeat", heartbeat).await,
        403,
        "a heartbeat for another node's name"
    );
    eventually("the agent's own heartbeat to be taken", || async {
        status(
            Some(&agent),
            leader,
            "/v1/agent/heartbeat",
            "{\"node\": \"app-1\"}",
        )
        .await
            == 200
    })
    .await;
    let log = log_of(dir.path(), leader_id);
    assert!(
        log.contains("agent request for another node refused"),
        "each refusal is logged"
    );
    assert!(refused(leader, "agent").await >= 3.0, "and counted");
    assert!(
        !log.contains(hyphae_integration::credentials::admin_token()),
        "no secret in the log"
    );
}

/// A node's value of the counter `name` on `/v1/metrics`.
async fn counter(node: SocketAddr, name: &str) -> f64 {
    let page = hyphae_integration::http::get_text(node, "/v1/metrics").await;
    hyphae_integration::http::metric_in(&page, name, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_heartbeating_only_through_a_follower_keeps_its_lease() {
    let lease = std::time::Duration::from_secs(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = format!(
        "{}  leaseTtl: {}ms\n",
        hyphae_integration::cluster::SHORT_WRITE_TIMEOUT,
        lease.as_millis()
    );
    let (mut cluster, leader, follower) = Cluster::three_logged(dir.path(), &spec)
        .await
        .expect("a cluster with a leader");
    let follower_id = id_of(&cluster, follower);
    let record = |name: &str| {
        format!(
            "{{\"name\": \"{name}\", \"site\": \"a\", \"address\": \"10.0.0.1:4143\", \"instances\": []}}"
        )
    };
    let kept = credentials(Kind::Node, "kept");
    let silent = credentials(Kind::Node, "silent");
    for (who, name) in [(&kept, "kept"), (&silent, "silent")] {
        eventually("the registration to be taken", || async {
            status(Some(who), leader, "/v1/agent/register", &record(name)).await == 200
        })
        .await;
    }
    // `kept` heartbeats three times per lease, to the follower only, for four leases; `silent`
    // never does, and shows the leases are enforced meanwhile.
    let started = std::time::Instant::now();
    while started.elapsed() < lease * 4 {
        let answer = status(
            Some(&kept),
            follower,
            "/v1/agent/heartbeat",
            "{\"node\": \"kept\"}",
        )
        .await;
        assert_eq!(answer, 200, "a heartbeat through the follower");
        tokio::time::sleep(lease / 3).await;
    }
    let names = hyphae_integration::http::get_json(leader, "/v1/nodes")
        .await
        .expect("the registry");
    let names: Vec<&str> = names
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["kept"],
        "after four leases only the heartbeating node is left"
    );
    assert!(
        counter(follower, "hyphae_control_plane_heartbeats_batched_total").await >= 1.0,
        "the follower answered heartbeats itself"
    );
    assert!(
        counter(leader, "hyphae_control_plane_batched_renewals_total").await >= 1.0,
        "and the leader renewed them from its batches"
    );

    // A member's batch renews registered nodes only, and only the leader takes one.
    let member = credentials(Kind::ControlPlane, &follower_id.to_string());
    let batch = "{\"nodes\": [\"kept\", \"ghost\"]}";
    let answer = request_as_node(&member, "POST", leader, HEARTBEATS_PATH, batch)
        .await
        .expect("an answer");
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let answer = answer.json();
    assert_eq!(answer["renewed"], 1, "{answer}");
    assert_eq!(answer["unknown"], serde_json::json!(["ghost"]), "{answer}");
    assert_eq!(
        status(Some(&member), follower, HEARTBEATS_PATH, batch).await,
        503,
        "a node that does not lead takes no batch"
    );

    // With the other nodes dead, the follower stops acknowledging heartbeats before it even
    // calls an election (the test clusters' electionTimeoutMin, 1 s, after the last word
    // from the leader): its next batch fails, and heartbeats then go on to the dead leader and
    // fail, so the agent would try another node.
    let others: Vec<u64> = cluster
        .nodes()
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != follower_id)
        .collect();
    for id in others {
        cluster.node_mut(id).kill();
    }
    let killed = std::time::Instant::now();
    let election_timeout_min = std::time::Duration::from_secs(1);
    let beat = || {
        status(
            Some(&kept),
            follower,
            "/v1/agent/heartbeat",
            "{\"node\": \"kept\"}",
        )
    };
    while beat().await == 200 {
        assert!(
            killed.elapsed() < election_timeout_min,
            "the follower still acknowledges heartbeats {:?} after the leader died",
            killed.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for _ in 0..10 {
        assert_ne!(beat().await, 200, "a heartbeat no leader will renew");
        tokio::time::sleep(lease / 20).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_that_reaches_the_leader_after_its_deadline_is_refused_not_applied() {
    // A partition held a follower's forwarded write in TCP's queue; the follower answered its
    // caller 503 after `writeTimeout`, and the write reached the leader when the link came
    // back, seconds later, and was applied over newer ones. The forward now carries the
    // moment the follower gives up, and the leader refuses it after that.
    let dir = tempfile::tempdir().expect("temp dir");
    let (cluster, leader, follower) = Cluster::three_logged(dir.path(), "")
        .await
        .expect("a cluster with a leader");
    let follower_id = id_of(&cluster, follower);
    let member = credentials(Kind::ControlPlane, &follower_id.to_string());
    let policy =
        |name: &str| format!("kind: ServicePolicy\nmetadata: {{name: {name}}}\nspec: {{}}\n");
    let now = hyphae_control_plane::tokens::now_ms();
    let forwarded = |deadline: u64| {
        vec![
            ("hyphae-forwarded", "1".to_string()),
            ("hyphae-forward-deadline", deadline.to_string()),
        ]
    };
    let late = request_as_member(
        &member,
        "POST",
        leader,
        "/v1/policies",
        &policy("late"),
        &forwarded(now - 5_000),
    )
    .await
    .expect("an answer");
    assert_eq!(late.status, 503, "{}", late.text());
    assert!(late.text().contains("forward-expired"), "{}", late.text());
    let in_time = request_as_member(
        &member,
        "POST",
        leader,
        "/v1/policies",
        &policy("in-time"),
        &forwarded(now + 60_000),
    )
    .await
    .expect("an answer");
    assert_eq!(in_time.status, 200, "{}", in_time.text());
    let listed = hyphae_integration::http::request("GET", leader, "/v1/policies", "")
        .await
        .expect("the policies")
        .text();
    assert!(listed.contains("in-time"), "{listed}");
    assert!(
        !listed.contains("late"),
        "the late write was applied: {listed}"
    );
}
