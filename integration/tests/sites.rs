//! Sites with real processes: a caller keeps its calls in its own site while enough of the
//! site is usable, fails over to the other site as soon as the site's usable share falls below
//! `loadBalancer.failoverThreshold` (not only when the whole site is down), and comes back
//! when the site recovers; `/sites` and the `hyphae_site_*` metrics show where calls go.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use hyphae_integration::agent::Agent;
use hyphae_integration::backend::{Behaviour, TestBackend};
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cluster::Cluster;
use hyphae_integration::eventually;
use hyphae_integration::http::{get_json, get_text};
use hyphae_integration::ports::free_ports;

/// An agent in `site` hosting `web` on `port`, checked five times a second.
fn host(dir: &Path, name: &str, site: &str, port: u16, control_plane: &str) -> Agent {
    Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir,
        name,
        &format!(
            "kind: AgentConfig\nmetadata: {{name: {name}}}\nspec:\n  site: {site}\n  controlPlane: [\"{control_plane}\"]\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null, virtualIps: false}}\n  services:\n    - {{name: web, port: {port}, check: {{http: /healthz, interval: 200ms, timeout: 150ms, rise: 1, fall: 1}}}}\n",
            dir.join(format!("{name}-data")).display()
        ),
    )
    .expect("start a host agent")
}

/// Which backends the next calls through `upstream` reach.
async fn reached(upstream: SocketAddr) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        seen.insert(get_text(upstream, "/").await);
    }
    seen
}

/// Whether `/sites` of the agent at `admin` says calls to `web` go to `site`.
async fn serving(admin: SocketAddr, site: &str) -> Option<bool> {
    let sites = get_json(admin, "/sites").await?;
    sites
        .as_array()?
        .iter()
        .find(|s| s["service"] == "web" && s["site"] == site)?["serving"]
        .as_bool()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_over_to_another_site_when_the_local_share_falls_below_the_threshold() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_control_plane, server) = Cluster::lone_in(dir.path()).expect("start the control plane");
    let a1 = TestBackend::start("a1").await;
    let a2 = TestBackend::start("a2").await;
    let b1 = TestBackend::start("b1").await;
    let _hosts = [
        host(dir.path(), "host-a1", "site-a", a1.port(), &server),
        host(dir.path(), "host-a2", "site-a", a2.port(), &server),
        host(dir.path(), "host-b1", "site-b", b1.port(), &server),
    ];
    let upstream = SocketAddr::from(([127, 0, 0, 1], free_ports(1).expect("a port")[0]));
    let caller = Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir.path(),
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  site: site-a\n  controlPlane: [\"{server}\"]\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null, virtualIps: false}}\n  upstreams:\n    - {{listen: \"{upstream}\", service: web}}\n---\nkind: ServicePolicy\nmetadata: {{name: web}}\nspec:\n  loadBalancer: {{policy: round-robin, failoverThreshold: 0.6}}\n",
            dir.path().join("caller-data").display()
        ),
    )
    .expect("start the caller");

    eventually("the caller to know all three instances", || async {
        serving(caller.admin, "site-b").await.is_some()
            && serving(caller.admin, "site-a").await.is_some()
    })
    .await;
    eventually(
        "calls to stay in site-a, on both of its instances",
        || async { reached(upstream).await == set(&["a1", "a2"]) },
    )
    .await;
    assert_eq!(serving(caller.admin, "site-a").await, Some(true));
    assert_eq!(serving(caller.admin, "site-b").await, Some(false));

    // One of site-a's two instances fails its check: half the site is usable, under 0.6.
    a2.set(Behaviour {
        healthy: false,
        ..Behaviour::default()
    });
    eventually("calls to spill over to site-b", || async {
        reached(upstream).await == set(&["a1", "b1"])
    })
    .await;
    assert_eq!(serving(caller.admin, "site-b").await, Some(true));
    assert_eq!(
        caller
            .metric("hyphae_site_serving", r#"service="web",site="site-b""#)
            .await,
        1.0
    );
    assert_eq!(
        caller
            .metric(
                "hyphae_site_registered_instances",
                r#"service="web",site="site-a""#
            )
            .await,
        2.0
    );

    // The site recovers: calls come back to it alone.
    a2.set(Behaviour::default());
    eventually("calls to return to site-a", || async {
        reached(upstream).await == set(&["a1", "a2"])
    })
    .await;
    assert_eq!(serving(caller.admin, "site-b").await, Some(false));
}
