//! A real three-node control-plane cluster of `hyphae-control-plane` processes on loopback:
//! writes through any node, reads everywhere, validation with positions, a leader killed and
//! replaced, a restarted node catching up, fast 503s without a quorum, members joining and
//! leaving, and leadership handed to another voter.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hyphae_integration::cluster::{Cluster, Node, SHORT_WRITE_TIMEOUT};
use hyphae_integration::http::{call, call_as_node};
use hyphae_integration::policies::policy;
use hyphae_integration::ports::free_ports;
use hyphae_integration::{DEADLINE, Signal, eventually};
use serde_json::Value;

const CONTROL_PLANE: &str = env!("CARGO_BIN_EXE_hyphae-control-plane");

/// The example policies shipped in the repository.
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/examples");

/// Three nodes configured in `dir` (short Raft timings), not started.
fn cluster(dir: &Path) -> Cluster {
    Cluster::configure(Path::new(CONTROL_PLANE), dir, 3, SHORT_WRITE_TIMEOUT)
        .expect("configure the cluster")
}

/// A one-node cluster in `dir`, started, initialized and leading.
async fn single_node(dir: &Path) -> Cluster {
    let node = Cluster::start(Path::new(CONTROL_PLANE), dir, 1, "").expect("start the node");
    eventually("the node to lead", || async {
        node.node(1).leader_seen().await == Some(1)
    })
    .await;
    node
}

/// Runs the `hyphae` CLI against `server`: exit code, and stdout followed by stderr.
fn hyphae(server: SocketAddr, args: &[&str]) -> (Option<i32>, String) {
    let output =
        hyphae_integration::cli::hyphae(Path::new(env!("CARGO_BIN_EXE_hyphae")), server, args)
            .expect("run hyphae");
    (output.code, output.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_replicates_survives_its_leader_and_refuses_without_quorum() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = cluster(dir.path());
    cluster.start_all().expect("start the nodes");
    for node in cluster.nodes() {
        eventually("a leader everyone agrees on", || async {
            node.leader_seen().await.is_some()
        })
        .await;
    }

    // A write sent to any node is applied once, and every node serves it.
    let leader = cluster.node(1).leader_seen().await.expect("leader");
    let follower = cluster
        .nodes()
        .iter()
        .find(|n| n.id != leader)
        .map(|n| n.address)
        .expect("a follower");
    let (status, written) = call("POST", follower, "/v1/policies", &policy("payments", 3)).await;
    assert_eq!(status, 200, "{written}");
    let revision = written["revision"].as_u64().expect("revision");
    for node in cluster.nodes() {
        eventually("the policy on every node", || async {
            let (status, body) = call(
                "GET",
                node.address,
                "/v1/policies/ServicePolicy/payments?stale=true",
                "",
            )
            .await;
            status == 200 && body["revision"].as_u64() == Some(revision)
        })
        .await;
    }

    // A bad policy is refused with its position, and nothing changes.
    let (status, refused) = call(
        "POST",
        cluster.node(3).address,
        "/v1/policies",
        &policy("payments", 30),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(refused["code"], "invalid-policy");
    assert_eq!(refused["diagnostics"][0]["path"], "spec.retries.attempts");
    assert_eq!(
        (
            refused["diagnostics"][0]["line"].as_u64(),
            refused["diagnostics"][0]["column"].as_u64()
        ),
        (Some(4), Some(23))
    );
    let (_, stored) = call(
        "GET",
        cluster.node(1).address,
        "/v1/policies/ServicePolicy/payments",
        "",
    )
    .await;
    assert_eq!(
        stored["revision"].as_u64(),
        Some(revision),
        "linearizable read sees the unchanged policy"
    );

    // Kill the leader: the others elect a new one and keep taking writes.
    let old_leader = cluster.node(1).leader_seen().await.expect("leader");
    cluster.node_mut(old_leader).kill();
    let survivor = cluster
        .nodes()
        .iter()
        .find(|n| n.is_running())
        .map(|n| n.address)
        .expect("survivor");
    eventually("a write accepted by the new leader", || async {
        call("POST", survivor, "/v1/policies", &policy("catalog", 1))
            .await
            .0
            == 200
    })
    .await;

    // The old leader restarts from disk and catches up.
    cluster
        .node_mut(old_leader)
        .start(false)
        .expect("restart the old leader");
    let restarted = cluster.node(old_leader).address;
    eventually("the restarted node to catch up", || async {
        call(
            "GET",
            restarted,
            "/v1/policies/ServicePolicy/catalog?stale=true",
            "",
        )
        .await
        .0 == 200
    })
    .await;

    // Without a quorum a write fails fast with 503, and succeeds again once it is back.
    let stopped: Vec<u64> = (1..=3).filter(|&id| id != old_leader).collect();
    for &id in &stopped {
        cluster.node(id).signal(Signal::STOP);
    }
    let started = Instant::now();
    let (status, answer) = call("POST", restarted, "/v1/policies", &policy("search", 1)).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused within the write timeout"
    );
    for &id in &stopped {
        cluster.node(id).signal(Signal::CONT);
    }
    eventually("writes to succeed after the quorum returns", || async {
        call("POST", restarted, "/v1/policies", &policy("search", 1))
            .await
            .0
            == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_applies_diffs_gets_and_deletes_against_a_single_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = single_node(dir.path()).await;
    let server = cluster.node(1).address;

    let (code, text) = hyphae(server, &["apply", "-f", EXAMPLES]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("skipped 4 node config document(s)")
            && text.contains("applied 9 object(s) at revision")
            && text.contains("(9 created, 0 updated, 0 unchanged)"),
        "{text}"
    );
    // The same files again change nothing.
    let (code, text) = hyphae(server, &["apply", "-f", EXAMPLES]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("(0 created, 0 updated, 9 unchanged)"),
        "{text}"
    );
    // `nodes` lists; `nodes forget` asks the node to forget one.
    let (code, text) = hyphae(server, &["nodes"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = hyphae(server, &["nodes", "forget", "ghost"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("no node named `ghost`"), "{text}");
    // A kind is checked before anything is asked, as `describe` checks it.
    for command in [&["get", "Rout"][..], &["delete", "route", "catalog-canary"]] {
        let (code, text) = hyphae(server, command);
        assert_eq!(code, Some(2), "{command:?}: {text}");
        assert!(text.contains("did you mean `Route`"), "{command:?}: {text}");
    }

    let (code, text) = hyphae(server, &["get"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("Route") && text.contains("catalog-canary"),
        "{text}"
    );

    // A changed file shows its diff and applies nothing.
    let changed = dir.path().join("changed.yaml");
    let services =
        std::fs::read_to_string(format!("{EXAMPLES}/services.yaml")).expect("read example");
    std::fs::write(&changed, services.replace("attempts: 3", "attempts: 4")).expect("write");
    let (code, text) = hyphae(
        server,
        &["apply", "-f", &changed.display().to_string(), "--dry-run"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("ServicePolicy/catalog: would change"),
        "{text}"
    );
    assert!(
        text.contains("-     attempts: 3") && text.contains("+     attempts: 4"),
        "{text}"
    );
    assert!(text.contains("ServicePolicy/frontend: unchanged"), "{text}");
    let (_, yaml) = hyphae(server, &["get", "ServicePolicy", "catalog", "-o", "yaml"]);
    assert!(
        yaml.contains("attempts: 3"),
        "the dry run changed nothing: {yaml}"
    );

    // A bad file is stopped locally, with its own path and position.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: ServicePolicy\nmetadata: {name: catalog}\nspec:\n  retries: {attempts: 40}\n",
    )
    .expect("write");
    let (code, text) = hyphae(server, &["apply", "-f", &bad.display().to_string()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{}:4:23: error: spec.retries.attempts",
            bad.display()
        )),
        "{text}"
    );

    let (code, text) = hyphae(server, &["delete", "Route", "payments"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = hyphae(server, &["get", "Route", "payments"]);
    assert_ne!(code, Some(0));
    assert!(text.contains("no Route named `payments`"), "{text}");

    let (code, text) = hyphae(server, &["cluster", "status"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("Leader"), "{text}");
    let node = cluster.node_mut(1);
    node.signal(Signal::TERM);
    assert_eq!(
        node.exit_code(DEADLINE).await,
        Some(0),
        "SIGTERM exits cleanly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_as_learners_become_voters_and_leave() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Node 1 starts the cluster alone; node 2 joins later with a control-plane join token and
    // adds itself (through node 1, listed as a member in its config).
    let ports = free_ports(2).expect("ports");
    let mut nodes =
        Cluster::configure_on(Path::new(CONTROL_PLANE), dir.path(), &ports, "").expect("configure");
    nodes.node_mut(1).start(true).expect("start node 1");
    let (first, second) = (nodes.node(1).address, nodes.node(2).address);
    nodes.trust().expect("the cluster's root");
    eventually("the first node to lead", || async {
        nodes.node(1).leader_seen().await == Some(1)
    })
    .await;
    let (code, text) = hyphae(
        first,
        &["apply", "-f", &format!("{EXAMPLES}/services.yaml")],
    );
    assert_eq!(code, Some(0), "{text}");
    let (_, status) = call("GET", first, "/v1/cluster", "").await;
    assert_eq!(status["voters"], serde_json::json!([1]), "{status}");

    // The second node joins: it catches up on what was written before it came.
    nodes.start_joining(&[2]).expect("start node 2");
    nodes.wait_voters(2).expect("node 2 becomes a voter");
    let (_, status) = call("GET", first, "/v1/cluster", "").await;
    assert_eq!(status["voters"], serde_json::json!([1, 2]), "{status}");
    // The membership change committed, so the leader's commit index comes to cover its whole
    // log (the keepers' first writes, the root certificate say, may still be on their way).
    eventually("the leader's commit index to cover its log", || async {
        let (_, status) = call("GET", first, "/v1/cluster", "").await;
        status["commitIndex"] == status["lastLogIndex"]
    })
    .await;
    eventually("the new voter to hold the earlier writes", || async {
        call(
            "GET",
            second,
            "/v1/policies/ServicePolicy/catalog?stale=true",
            "",
        )
        .await
        .0 == 200
    })
    .await;

    // It leaves again.
    let (code, text) = hyphae(second, &["cluster", "remove", "2"]);
    assert_eq!(code, Some(0), "{text}");
    let (_, status) = call("GET", first, "/v1/cluster", "").await;
    assert_eq!(status["voters"], serde_json::json!([1]), "{status}");
    nodes.node_mut(2).kill();
    let (code, text) = hyphae(first, &["apply", "-f", &format!("{EXAMPLES}/routes.yaml")]);
    assert_eq!(
        code,
        Some(0),
        "a one-node cluster writes alone again: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_a_chosen_voter_then_to_the_most_caught_up_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = cluster(dir.path());
    nodes.start_all().expect("start the nodes");
    let leader = nodes.leader().await.expect("a leader");
    let others: Vec<&Node> = nodes.nodes().iter().filter(|n| n.id != leader).collect();
    let (target, bystander) = (others[0].id, others[1].address);

    // Asked through a follower, which forwards to the leader.
    let (code, text) = hyphae(
        bystander,
        &["cluster", "transfer-leader", &target.to_string()],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("node {target} leads now")), "{text}");
    assert_eq!(nodes.leader().await.expect("a leader"), target);
    let (code, body) = call("POST", bystander, "/v1/policies", &policy("after", 1)).await;
    assert_eq!(code, 200, "writes work under the new leader: {body}");

    let (code, text) = hyphae(bystander, &["cluster", "members"]);
    assert_eq!(code, Some(0), "{text}");
    let target_row = text
        .lines()
        .find(|l| l.starts_with(&format!("{target} ")))
        .expect("a row for the new leader");
    assert!(
        target_row.contains("voter") && target_row.contains('*'),
        "{text}"
    );
    assert!(
        !text.lines().skip(1).any(|l| l.ends_with('-')),
        "the leader's view has every lag: {text}"
    );

    // Only voters can lead.
    let (code, body) = call(
        "POST",
        bystander,
        "/v1/cluster/transfer-leader",
        r#"{"to": 99}"#,
    )
    .await;
    assert_eq!((code, body["code"].as_str()), (409, Some("not-a-voter")));

    // Without a target, leadership goes to another voter.
    let (code, body) = call("POST", bystander, "/v1/cluster/transfer-leader", "").await;
    assert_eq!(code, 200, "{body}");
    let next = body["leader"].as_u64().expect("a leader");
    assert_ne!(next, target, "{body}");
    assert_eq!(nodes.leader().await.expect("a leader"), next);
    let (code, body) = call("POST", bystander, "/v1/policies", &policy("later", 1)).await;
    assert_eq!(code, 200, "{body}");
}

/// `text` with each run of spaces made one, so assertions do not depend on column widths.
fn squeeze(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
    words.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_a_policy_its_yaml_and_what_refers_to_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = single_node(dir.path()).await;
    let server = node.node(1).address;
    let (code, text) = hyphae(server, &["apply", "-f", EXAMPLES]);
    assert_eq!(code, Some(0), "{text}");
    let (_, stored) = call("GET", server, "/v1/policies/Route/catalog-canary", "").await;

    let (code, text) = hyphae(server, &["describe", "Route", "catalog-canary"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with(&format!(
            "Kind:      Route\nName:      catalog-canary\nRevision:  {}\n",
            stored["revision"]
        )),
        "{text}"
    );
    assert!(
        squeeze(&text).contains(
            "spec.rules[1].backends[0] backend catalog [version=v1], weight 90 ServicePolicy/catalog"
        ),
        "{text}"
    );
    assert!(
        text.contains("Other policies of the same service:\n  AccessPolicy/catalog\n"),
        "{text}"
    );
    let source = stored["source"].as_str().expect("source");
    assert!(text.ends_with(&format!("---\n{source}")), "{text}");

    let (code, text) = hyphae(server, &["describe", "ServicePolicy", "catalog", "--stale"]);
    assert_eq!(code, Some(0), "{text}");
    for referrer in [
        "Route/catalog-canary spec.service routes calls to catalog",
        "AccessPolicy/catalog spec.service who may call catalog",
        "AccessPolicy/payments spec.rules[0].from[0] allows catalog",
    ] {
        assert!(squeeze(&text).contains(referrer), "{referrer}: {text}");
    }

    let (code, text) = hyphae(server, &["describe", "Route", "nothing"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no Route named `nothing`"), "{text}");
    let (code, text) = hyphae(server, &["describe", "Rout", "catalog-canary"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("did you mean `Route`?"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_nodes_list_what_agents_registered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = single_node(dir.path()).await;
    let server = node.node(1).address;
    for (name, site, health) in [
        ("app-1", "eu-west", "passing"),
        ("app-2", "us-east", "critical"),
    ] {
        let registration = format!(
            r#"{{"name":"{name}","site":"{site}","address":"127.0.0.1:4143","agentVersion":"0.1.0","instances":[{{"service":"catalog","port":9000,"protocol":"grpc","health":"{health}"}}]}}"#
        );
        let (status, answer) =
            call_as_node(name, "POST", server, "/v1/agent/register", &registration).await;
        assert_eq!(status, 200, "{answer}");
    }

    let (code, text) = hyphae(server, &["services"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        squeeze(&text),
        "NAME PROTOCOL VIRTUAL-IP INSTANCES NODES\ncatalog grpc 127.64.0.1 1/2 app-1,app-2\n"
    );
    let (code, text) = hyphae(server, &["nodes", "--stale"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("NAME "), "{text}");
    assert!(
        squeeze(&text).contains("\napp-2 us-east 127.0.0.1:4143 0.1.0 1 "),
        "{text}"
    );
    let (code, text) = hyphae(server, &["nodes", "-o", "json"]);
    assert_eq!(code, Some(0), "{text}");
    let nodes: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(nodes[1]["instances"][0]["health"], "critical", "{nodes}");
    let (code, text) = hyphae(server, &["services", "-o", "yaml"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("name: catalog"), "{text}");
}
