//! The control plane feeding an agent, with real processes: a policy applied with the CLI
//! changes how the agent routes within moments; with the control plane gone the agent keeps
//! serving what it was told, and after a restart it serves the copy saved on disk.

use std::path::Path;

use hyphae_integration::agent::Agent;
use hyphae_integration::backend::TestBackend;
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cli;
use hyphae_integration::cluster::Cluster;
use hyphae_integration::eventually;
use hyphae_integration::http::{get_json, get_text};
use hyphae_integration::ports::free_ports;

/// A host agent `name` in `dir` serving `backend` as version `version` of `svc`.
fn host(dir: &Path, name: &str, backend: &TestBackend, version: &str) -> Agent {
    let yaml = format!(
        "kind: AgentConfig\nmetadata: {{name: {name}}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  services:\n    - {{name: svc, port: {}, tags: {{version: {version}}}}}\n",
        backend.port()
    );
    Agent::start_in(&workspace_binary("hyphae-agent"), dir, name, &yaml)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_pushed_by_the_control_plane_steer_an_agent_and_survive_its_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path.display().to_string()
    };
    let agent_bin = workspace_binary("hyphae-agent");
    let (v1, v2) = (
        TestBackend::start("v1").await,
        TestBackend::start("v2").await,
    );
    let (h1, h2) = (
        host(dir.path(), "h1", &v1, "v1"),
        host(dir.path(), "h2", &v2, "v2"),
    );

    let control_plane = Cluster::start(
        &workspace_binary("hyphae-control-plane"),
        &dir.path().join("cp"),
        1,
        "",
    )
    .expect("start the control plane");
    let server = control_plane.node(1).address;

    // An upstream port is fixed by the config (port 0 is refused): chosen ahead.
    let upstream = format!("127.0.0.1:{}", free_ports(1).expect("a port")[0]);
    let caller_config = write(
        "caller.yaml",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  controlPlane: [\"{server}\"]\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  upstreams:\n    - {{listen: \"{upstream}\", service: svc}}\n  staticServices:\n    - name: svc\n      endpoints:\n        - {{address: \"{}\", tags: {{version: v1}}}}\n        - {{address: \"{}\", tags: {{version: v2}}}}\n---\nkind: ServicePolicy\nmetadata: {{name: svc}}\nspec:\n  loadBalancer: {{policy: round-robin}}\n",
            dir.path().join("caller-data").display(),
            h1.inbound,
            h2.inbound,
        ),
    );
    let caller = Agent::start::<&str>(&agent_bin, "caller", caller_config.as_ref(), &[])
        .expect("start caller");
    caller.wait_ready().await;

    // Without a route, round robin alternates between v1 and v2.
    let answers = [
        get_text(&upstream, "/").await,
        get_text(&upstream, "/").await,
    ];
    assert!(
        answers.contains(&"v1".to_string()) && answers.contains(&"v2".to_string()),
        "{answers:?}"
    );

    // Push a route that sends everything to v2, then one that sends everything to v1.
    let hyphae = workspace_binary("hyphae");
    let server = server.to_string();
    for version in ["v2", "v1"] {
        let route = write(
            &format!("route-{version}.yaml"),
            &format!(
                "kind: Route\nmetadata: {{name: svc}}\nspec:\n  service: svc\n  rules:\n    - backends: [{{service: svc, subset: {{version: {version}}}}}]\n"
            ),
        );
        let applied = cli::hyphae(&hyphae, &server, &["apply", "-f", &route]).expect("run hyphae");
        assert!(applied.success(), "{}", applied.text);
        eventually(&format!("every call to go to {version}"), || async {
            for _ in 0..5 {
                if get_text(&upstream, "/").await != version {
                    return false;
                }
            }
            true
        })
        .await;
    }

    // The control plane goes away: the agent keeps serving the last route.
    drop(control_plane);
    for _ in 0..10 {
        assert_eq!(get_text(&upstream, "/").await, "v1");
    }

    // The agent restarts with no control plane: it serves the route saved on disk. The save
    // is asynchronous (it fsyncs, which can take a while on a busy disk): wait until the file
    // holds the revision being served before killing the agent.
    let saved = dir
        .path()
        .join("caller-data")
        .join("control-plane-snapshot.json");
    eventually("the served state to be saved on disk", || async {
        let served = get_json(caller.admin, "/ready").await;
        let served = served.and_then(|r| r["controlPlane"]["revision"].as_u64());
        let on_disk = std::fs::read(&saved)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["revision"].as_u64());
        served.is_some() && served == on_disk
    })
    .await;
    drop(caller);
    let _caller = Agent::start::<&str>(&agent_bin, "caller", caller_config.as_ref(), &[])
        .expect("restart caller");
    eventually("the restarted agent to serve the saved route", || async {
        get_text(&upstream, "/").await == "v1"
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            get_text(&upstream, "/").await,
            "v1",
            "the saved route, not a random endpoint"
        );
    }
}
