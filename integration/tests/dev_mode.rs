//! `hyphae-agent --dev`: one process is a whole mesh. Its embedded control plane takes CLI
//! writes, the agent registers its own services there, and calls by name reach them through
//! the registry alone. When the embedded control plane's store fails (its disk, a 2 MiB tmpfs
//! that needs root to mount, fills up), the agent exits with an error instead of serving on.

use std::process::Command;

use hyphae_integration::agent::Agent;
use hyphae_integration::backend::TestBackend;
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::credentials::write_token_file;
use hyphae_integration::http::{get_json, get_text};
use hyphae_integration::policies::{FILL_TRIES, apply_until_silent};
use hyphae_integration::ports::free_ports;
use hyphae_integration::tmpfs::{SMALL_DISK, Tmpfs};
use hyphae_integration::trust::register_node;
use hyphae_integration::{DEADLINE, eventually};

/// `--dev` with its control plane on `server` and its data (and admin token) in `data`.
fn dev_args(server: &str, data: &std::path::Path) -> Vec<String> {
    ["--dev", "--dev-listen", server, "--dev-data-dir"]
        .iter()
        .map(ToString::to_string)
        .chain([data.display().to_string()])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dev_agent_is_a_working_mesh() {
    let dir = tempfile::tempdir().expect("temp dir");
    let web = TestBackend::start("web").await;
    // Neither an upstream (its port is fixed by the config) nor the embedded control plane
    // (the ready line does not report it) can take port 0: their ports are chosen ahead.
    let ports = free_ports(2).expect("ports");
    let (upstream, server) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    );
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "kind: AgentConfig\nmetadata: {{name: laptop}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  services:\n    - {{name: web, port: {}}}\n  upstreams:\n    - {{listen: \"{upstream}\", service: web}}\n",
            web.port()
        ),
    )
    .expect("write config");
    // The dev control plane keeps its admin token in its data directory; written first, it is
    // the token this test's helpers send.
    let dev_data = dir.path().join("dev");
    let token_file = dev_data.join("admin-token");
    write_token_file(&token_file).expect("write the admin token");
    let _agent = Agent::start(
        &workspace_binary("hyphae-agent"),
        "laptop",
        &config,
        &dev_args(&server, &dev_data),
    )
    .expect("start the dev agent");
    let trust = register_node(
        &workspace_binary("hyphae"),
        dir.path(),
        &dev_data.join("control-plane"),
        &[server.parse().expect("an address")],
    )
    .expect("the dev control plane's root");

    eventually("the agent to register its service", || async {
        get_json(&server, "/v1/services/web")
            .await
            .is_some_and(|web| web["instances"][0]["node"] == "laptop")
    })
    .await;
    eventually("a call by name to reach the service", || async {
        get_text(&upstream, "/").await == "web"
    })
    .await;
    // A config that names no `dataDir` keeps the state saved from the dev control plane with
    // that control plane's data, not in the default `/var/lib/hyphae` a host's agent reads.
    eventually(
        "the agent to save the dev control plane's state",
        || async { dev_data.join("agent/control-plane-snapshot.json").exists() },
    )
    .await;

    let policy = dir.path().join("web.yaml");
    std::fs::write(
        &policy,
        "kind: ServicePolicy\nmetadata: {name: web}\nspec:\n  timeouts: {request: 3s}\n",
    )
    .expect("write policy");
    let apply = |token_file: Option<&std::path::Path>| {
        let mut command = Command::new(workspace_binary("hyphae"));
        command
            .args([
                "apply",
                "-f",
                &policy.display().to_string(),
                "--server",
                &server,
            ])
            .env_remove("HYPHAE_TOKEN")
            .env_remove("HYPHAE_TOKEN_FILE")
            .env("HYPHAE_CA_FILE", &trust.roots_file);
        if let Some(file) = token_file {
            command.env("HYPHAE_TOKEN_FILE", file);
        }
        command.output().expect("run hyphae apply")
    };
    let anonymous = apply(None);
    assert!(
        !anonymous.status.success(),
        "--dev refuses an anonymous write"
    );
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("admin token"),
        "{}",
        String::from_utf8_lossy(&anonymous.stderr)
    );
    let output = apply(Some(&token_file));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = get_json(&server, "/v1/policies/ServicePolicy/web")
        .await
        .expect("stored");
    assert!(
        stored["source"]
            .as_str()
            .is_some_and(|s| s.contains("request: 3s")),
        "{stored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_agent_whose_control_plane_store_fills_up_exits_with_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dev_data = dir.path().join("dev");
    // `--dev-data-dir` keeps the control plane's store in `control-plane/` under it.
    let Some(_disk) =
        Tmpfs::mount(&dev_data.join("control-plane"), SMALL_DISK).expect("mount the small disk")
    else {
        eprintln!(
            "SKIPPED a_dev_agent_whose_control_plane_store_fills_up_exits_with_an_error: mounting a tmpfs needs root (CI runs it as root)"
        );
        return;
    };
    let server = format!("127.0.0.1:{}", free_ports(1).expect("a port")[0]);
    let yaml = format!(
        "kind: AgentConfig\nmetadata: {{name: laptop}}\nspec:\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n",
        dir.path().join("agent-data").display()
    );
    write_token_file(&dev_data.join("admin-token")).expect("write the admin token");
    let mut agent = Agent::start_in_with(
        &workspace_binary("hyphae-agent"),
        dir.path(),
        "laptop",
        &yaml,
        &dev_args(&server, &dev_data),
    )
    .expect("start the dev agent");
    register_node(
        &workspace_binary("hyphae"),
        dir.path(),
        &dev_data.join("control-plane"),
        &[server.parse().expect("an address")],
    )
    .expect("the dev control plane's root");

    let applied = apply_until_silent(server.parse().expect("an address")).await;
    assert!(
        applied.committed > 0 && applied.answered < FILL_TRIES,
        "{applied:?}: the disk holds a few writes, then the control plane stops answering"
    );
    assert_eq!(agent.exit_code(DEADLINE).await, Some(1));
}
