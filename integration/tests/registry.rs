//! The fleet's registry with real processes: agents register their services with the control
//! plane, callers reach them by name with no static endpoints, failing health checks and dead
//! agents take instances out of rotation, and a leader election expires nobody who is alive.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hyphae_integration::agent::Agent;
use hyphae_integration::backend::TestBackend;
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cluster::{Cluster, SHORT_WRITE_TIMEOUT};
use hyphae_integration::http::{get_json, get_text, metric_in};
use hyphae_integration::ports::free_ports;
use hyphae_integration::{DEADLINE, Signal, eventually};

/// Lease of the single-node tests: short, so expiry is quick to see.
const LEASE: Duration = Duration::from_secs(2);

/// An agent hosting `web` on `port`, checked at `/healthz` five times a second.
fn host(dir: &Path, name: &str, port: u16, control_plane: &[String]) -> Agent {
    Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir,
        name,
        &format!(
            "kind: AgentConfig\nmetadata: {{name: {name}}}\nspec:\n  controlPlane: {control_plane:?}\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  services:\n    - name: web\n      port: {port}\n      check: {{http: /healthz, interval: 200ms, timeout: 150ms, rise: 1, fall: 1}}\n",
            dir.join(format!("{name}-data")).display()
        ),
    )
    .expect("start a host agent")
}

/// A calling agent with an upstream port for `web`, and no endpoints of its own.
fn caller(dir: &Path, control_plane: &[String]) -> Agent {
    // An upstream port is fixed by the config (port 0 is refused): chosen ahead.
    let upstream = format!("127.0.0.1:{}", free_ports(1).expect("a port")[0]);
    Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir,
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  controlPlane: {control_plane:?}\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  upstreams:\n    - {{listen: \"{upstream}\", service: web}}\n---\nkind: ServicePolicy\nmetadata: {{name: web}}\nspec:\n  loadBalancer: {{policy: round-robin}}\n",
            dir.join("caller-data").display()
        ),
    )
    .expect("start the caller agent")
}

/// The health of each instance of `web`, by node, as the control plane lists it.
async fn web_instances(server: &str) -> Vec<(String, String)> {
    let Some(web) = get_json(server, "/v1/services/web?stale=true").await else {
        return Vec::new();
    };
    web["instances"]
        .as_array()
        .map(|instances| {
            instances
                .iter()
                .map(|i| {
                    (
                        i["node"].as_str().unwrap_or_default().to_string(),
                        i["health"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The names of the registered nodes.
async fn node_names(server: &str) -> Option<BTreeSet<String>> {
    let nodes = get_json(server, "/v1/nodes?stale=true").await?;
    Some(
        nodes
            .as_array()?
            .iter()
            .filter_map(|n| Some(n["name"].as_str()?.to_string()))
            .collect(),
    )
}

/// Whether the next `calls` calls through `upstream` all reach `backend`.
async fn all_reach(upstream: SocketAddr, backend: &str, calls: usize) -> bool {
    for _ in 0..calls {
        if get_text(upstream, "/").await != backend {
            return false;
        }
    }
    true
}

fn strings(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
        .collect()
}

/// A control plane of `size` nodes in `dir/cp` whose node leases last `lease`.
fn leased_control_plane(dir: &Path, size: usize, lease: Duration) -> Cluster {
    Cluster::start(
        &workspace_binary("hyphae-control-plane"),
        &dir.join("cp"),
        size,
        &format!("{SHORT_WRITE_TIMEOUT}  leaseTtl: {}ms\n", lease.as_millis()),
    )
    .expect("start the control plane")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_reach_registered_services_by_name_and_follow_health_and_leases() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = leased_control_plane(dir.path(), 1, LEASE);
    let server = nodes.node(1).address.to_string();
    let servers = vec![server.clone()];
    let b = TestBackend::start("b").await;
    let c = TestBackend::start("c").await;
    let mut host_b = host(dir.path(), "host-b", b.port(), &servers);
    let host_c = host(dir.path(), "host-c", c.port(), &servers);
    let caller = caller(dir.path(), &servers);
    let upstream = caller.upstream("web");

    eventually("both instances of web to register and pass", || async {
        web_instances(&server).await == strings(&[("host-b", "passing"), ("host-c", "passing")])
    })
    .await;
    // The leader shows how long each lease still runs; never more than a whole lease.
    eventually("the leader to show host-b's lease", || async {
        let Some(node) = get_json(&server, "/v1/nodes/host-b").await else {
            return false;
        };
        node["leaseRemainingMs"]
            .as_u64()
            .is_some_and(|left| left <= u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX))
    })
    .await;
    eventually("calls by name to reach both hosts", || async {
        let mut seen = BTreeSet::new();
        for _ in 0..6 {
            seen.insert(get_text(upstream, "/").await);
        }
        seen == BTreeSet::from(["b".to_string(), "c".to_string()])
    })
    .await;

    // host-b's check fails: the control plane hears of it and callers stop sending it calls.
    b.set_healthy(false);
    eventually("host-b to be reported critical", || async {
        web_instances(&server).await == strings(&[("host-b", "critical"), ("host-c", "passing")])
    })
    .await;
    eventually("every call to go to host-c", || all_reach(upstream, "c", 8)).await;
    b.set_healthy(true);
    eventually("host-b to pass again", || async {
        web_instances(&server).await == strings(&[("host-b", "passing"), ("host-c", "passing")])
    })
    .await;

    // host-c dies without a word: its lease lapses and it leaves the registry.
    host_c.signal(Signal::KILL);
    let killed = Instant::now();
    eventually("host-c to expire", || async {
        node_names(&server)
            .await
            .is_some_and(|names| !names.contains("host-c"))
    })
    .await;
    let expired_after = killed.elapsed();
    assert!(
        expired_after >= LEASE / 2,
        "host-c went after {expired_after:?}, before its lease ({LEASE:?}) could lapse"
    );
    eventually("every call to go to host-b", || all_reach(upstream, "b", 8)).await;

    // The caller's admin endpoint says it is live on the control plane and registered. Read
    // until it does: CI once got an empty page here from one read (stop 39), with the agent up.
    eventually(
        "the caller to report itself connected and registered",
        || async {
            let metrics = caller.metrics().await;
            [
                "hyphae_control_plane_connected 1",
                "hyphae_control_plane_registered 1",
                "hyphae_control_plane_staleness_seconds",
            ]
            .iter()
            .all(|line| metrics.contains(line))
        },
    )
    .await;

    // Every agent keeps one connection to the control plane: its heartbeats and health
    // reports went up its watch connection (decision 57), not over a connection beside it.
    let uplinked = |path: &'static str| {
        let server = server.clone();
        async move {
            let page = get_text(&server, "/v1/metrics").await;
            metric_in(
                &page,
                "hyphae_control_plane_uplink_requests_total",
                &format!("path=\"{path}\""),
            )
        }
    };
    assert!(
        uplinked("/v1/agent/heartbeat").await > 0.0,
        "heartbeats up the watch"
    );
    assert!(
        uplinked("/v1/agent/health").await > 0.0,
        "health reports up the watch"
    );
    let pid = host_b.process().id();
    let established = || {
        let port = nodes.node(1).address.port();
        std::process::Command::new("ss")
            .args([
                "-Htnp",
                "state",
                "established",
                "dst",
                &format!("127.0.0.1:{port}"),
            ])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|line| line.contains(&format!("pid={pid},")))
                    .count()
            })
            .unwrap_or(0)
    };
    // Its certificate check at start went over HTTP/2, idle since: closed after 10 s.
    eventually(
        "host-b to hold one connection to the control plane",
        || async { established() == 1 },
    )
    .await;

    // host-b stops cleanly: it deregisters on its way out and exits 0.
    host_b.signal(Signal::TERM);
    eventually("host-b to deregister", || async {
        node_names(&server)
            .await
            .is_some_and(|names| !names.contains("host-b"))
    })
    .await;
    assert_eq!(host_b.exit_code(DEADLINE).await, Some(0), "host-b exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_election_expires_no_live_agent() {
    // Long enough that a loaded CI machine never misses three heartbeats in a row.
    let lease = Duration::from_secs(4);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = leased_control_plane(dir.path(), 3, lease);
    let servers: Vec<String> = nodes.addresses().iter().map(ToString::to_string).collect();
    let web = TestBackend::start("web").await;
    let _alive = host(dir.path(), "alive", web.port(), &servers);
    let doomed = host(dir.path(), "doomed", web.port(), &servers);
    eventually("both agents to register", || async {
        node_names(&servers[0]).await.is_some_and(|names| {
            names == BTreeSet::from(["alive".to_string(), "doomed".to_string()])
        })
    })
    .await;

    // The leader and one agent die together.
    let old = nodes.leader().await.expect("a leader");
    nodes.node_mut(old).kill();
    doomed.signal(Signal::KILL);
    drop(doomed);
    // A leader is only agreed on among running nodes, so this is a new one.
    let new = nodes.leader().await.expect("a new leader");
    assert_ne!(new, old);
    let survivor = nodes
        .nodes()
        .iter()
        .find(|n| n.is_running())
        .map(|n| n.address.to_string())
        .expect("a survivor");

    // For two leases after the election, the live agent is registered at every look, and the
    // dead one goes once its lease (granted afresh by the new leader) lapses.
    let watch_until = Instant::now() + lease * 2;
    let mut doomed_gone = false;
    while Instant::now() < watch_until || !doomed_gone {
        // An unanswered read (the survivor may be mid-election too) tells nothing.
        if let Some(names) = node_names(&survivor).await {
            assert!(names.contains("alive"), "the live agent expired: {names:?}");
            doomed_gone |= !names.contains("doomed");
        }
        assert!(
            watch_until.elapsed() < DEADLINE,
            "the dead agent never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_the_control_plane_refuses_keeps_the_nodes_running_registration() {
    // A reload adding a service the node's certificate does not name is refused by the
    // control plane (403). The agent kept retrying the new registration and stopped
    // heartbeating the one it had: its lease lapsed, and every service of the host left the
    // registry, and DNS, with it.
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = leased_control_plane(dir.path(), 1, LEASE);
    let server = nodes.node(1).address.to_string();
    let b = TestBackend::start("b").await;
    let host_b = host(
        dir.path(),
        "host-b",
        b.port(),
        std::slice::from_ref(&server),
    );
    eventually("web on host-b to register and pass", || async {
        web_instances(&server).await == strings(&[("host-b", "passing")])
    })
    .await;
    let config = std::fs::read_to_string(&host_b.config).expect("the agent's config");
    std::fs::write(
        &host_b.config,
        config.replace(
            "  services:\n",
            &format!("  services:\n    - {{name: unnamed, port: {}}}\n", b.port()),
        ),
    )
    .expect("rewrite the config");
    host_b.signal(Signal::HUP);
    // Its `/ready` says it is not registered as it now is configured.
    eventually("the re-registration to be refused", || async {
        get_json(host_b.admin, "/ready")
            .await
            .is_some_and(|ready| ready["controlPlane"]["registered"] == false)
    })
    .await;
    // Three leases later host-b and its web are still there.
    let watched = Instant::now();
    while watched.elapsed() < LEASE * 3 {
        assert_eq!(
            web_instances(&server).await,
            strings(&[("host-b", "passing")]),
            "after {:?} of refused re-registration",
            watched.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
