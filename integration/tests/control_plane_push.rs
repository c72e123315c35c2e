//! The control plane feeding an agent, with real processes: a policy applied with the CLI
//! changes how the agent routes within moments; with the control plane gone the agent keeps
//! serving what it was told, and after a restart it serves the copy saved on disk.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::{backend, binary, eventually, free_port, get_json, start, who_answers};

fn host_config(name: &str, port: u16, version: &str) -> String {
    format!(
        "kind: AgentConfig\nmetadata: {{name: {name}}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  services:\n    - {{name: svc, port: {port}, tags: {{version: {version}}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_pushed_by_the_control_plane_steer_an_agent_and_survive_its_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path.display().to_string()
    };
    let agent_bin = binary("hyphae-agent");
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let (_h1, h1) = start(
        &agent_bin,
        &[
            "--config",
            &write("h1.yaml", &host_config("h1", v1.port(), "v1")),
        ],
    );
    let (_h2, h2) = start(
        &agent_bin,
        &[
            "--config",
            &write("h2.yaml", &host_config("h2", v2.port(), "v2")),
        ],
    );

    let cp_port = free_port();
    let cp_config = write(
        "cp.yaml",
        &format!(
            "kind: ControlPlaneConfig\nmetadata: {{name: cp}}\nspec:\n  id: 1\n  listen: 127.0.0.1:{cp_port}\n  dataDir: {}\n",
            dir.path().join("cp-data").display()
        ),
    );
    let (control_plane, _) = start(
        &binary("hyphae-control-plane"),
        &["--config", &cp_config, "--init"],
    );

    let upstream = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let caller_config = write(
        "caller.yaml",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  controlPlane: [\"127.0.0.1:{cp_port}\"]\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  upstreams:\n    - {{listen: \"{upstream}\", service: svc}}\n  staticServices:\n    - name: svc\n      endpoints:\n        - {{address: {}, tags: {{version: v1}}}}\n        - {{address: {}, tags: {{version: v2}}}}\n---\nkind: ServicePolicy\nmetadata: {{name: svc}}\nspec:\n  loadBalancer: {{policy: round-robin}}\n",
            dir.path().join("caller-data").display(),
            h1["ready"]["inbound"],
            h2["ready"]["inbound"],
        ),
    );
    let (caller, caller_ready) = start(&agent_bin, &["--config", &caller_config]);
    let caller_admin = caller_ready["ready"]["admin"]
        .as_str()
        .expect("admin address")
        .to_string();

    // Without a route, round robin alternates between v1 and v2.
    let answers = [who_answers(upstream).await, who_answers(upstream).await];
    assert!(
        answers.contains(&"v1".to_string()) && answers.contains(&"v2".to_string()),
        "{answers:?}"
    );

    // Push a route that sends everything to v2, then one that sends everything to v1.
    let hyphae = binary("hyphae");
    let server = format!("127.0.0.1:{cp_port}");
    for version in ["v2", "v1"] {
        let route = write(
            &format!("route-{version}.yaml"),
            &format!(
                "kind: Route\nmetadata: {{name: svc}}\nspec:\n  service: svc\n  rules:\n    - backends: [{{service: svc, subset: {{version: {version}}}}}]\n"
            ),
        );
        let status = Command::new(&hyphae)
            .args(["apply", "-f", &route, "--server", &server])
            .status()
            .expect("run hyphae apply");
        assert!(status.success());
        eventually(&format!("every call to go to {version}"), || async {
            for _ in 0..5 {
                if who_answers(upstream).await != version {
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
        assert_eq!(who_answers(upstream).await, "v1");
    }

    // The agent restarts with no control plane: it serves the route saved on disk. The save
    // is asynchronous (it fsyncs, which can take a while on a busy disk): wait until the file
    // holds the revision being served before killing the agent.
    let saved = dir
        .path()
        .join("caller-data")
        .join("control-plane-snapshot.json");
    eventually("the served state to be saved on disk", || async {
        let served = get_json(&caller_admin, "/ready").await;
        let served = served.and_then(|r| r["controlPlane"]["revision"].as_u64());
        let on_disk = std::fs::read(&saved)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["revision"].as_u64());
        served.is_some() && served == on_disk
    })
    .await;
    drop(caller);
    let (_caller, _) = start(&agent_bin, &["--config", &caller_config]);
    eventually("the restarted agent to serve the saved route", || async {
        who_answers(upstream).await == "v1"
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            who_answers(upstream).await,
            "v1",
            "the saved route, not a random endpoint"
        );
    }
}
