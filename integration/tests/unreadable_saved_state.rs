//! An agent whose saved control-plane state is damaged, with real processes: it starts without
//! it and says so (`/ready` 503 with the reason, `hyphae_saved_snapshot_unreadable` 1) while no
//! control plane answers, and turns ready once one sends a fresh state, which it saves. And an
//! agent with no control plane does not serve a state it finds saved in its data directory.

use hyphae_integration::agent::Agent;
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cluster::Cluster;
use hyphae_integration::eventually;
use hyphae_integration::http::request;
use hyphae_integration::ports::free_ports;

/// The saved state's file in the agent's data directory (`hyphae_agent::persist::SNAPSHOT_FILE`).
const SNAPSHOT_FILE: &str = "control-plane-snapshot.json";
const UNREADABLE: &str = "hyphae_saved_snapshot_unreadable";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_saved_state_keeps_the_agent_unready_until_a_control_plane_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("agent-data");
    // The agent has been part of the mesh (it holds its certificate), and the control plane
    // is down when it starts again with a damaged saved state.
    let port = free_ports(1).expect("a port")[0];
    let mut control_plane = Cluster::configure_on(
        &workspace_binary("hyphae-control-plane"),
        &dir.path().join("cp"),
        &[port],
        "",
    )
    .expect("configure the control plane");
    control_plane.start_all().expect("start the control plane");
    let yaml = format!(
        "kind: AgentConfig\nmetadata: {{name: edge}}\nspec:\n  controlPlane: [\"127.0.0.1:{port}\"]\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n",
        data.display()
    );
    let agent = Agent::start_in(&workspace_binary("hyphae-agent"), dir.path(), "edge", &yaml)
        .expect("start the agent");
    eventually("the agent to join and save a state", || async {
        data.join("tls/node.pem").exists() && data.join(SNAPSHOT_FILE).exists()
    })
    .await;
    drop(agent);
    control_plane.node_mut(1).kill();
    std::fs::write(data.join(SNAPSHOT_FILE), b"{\"revision\": 7, \"polic").expect("garbage");
    let agent = Agent::start_in(&workspace_binary("hyphae-agent"), dir.path(), "edge", &yaml)
        .expect("start the agent again");

    // The saved state is read before the ready line: the first answer already tells.
    let ready = request("GET", agent.admin, "/ready", "")
        .await
        .expect("/ready answers");
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.text());
    let reason = ready.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("saved control-plane state cannot be used")
            && reason.contains("is not a saved snapshot"),
        "{}",
        ready.text()
    );
    let page = agent.metrics().await;
    assert!(page.contains(&format!("{UNREADABLE} 1")), "{page}");

    control_plane
        .start_all()
        .expect("start the control plane again");
    agent.wait_ready().await;
    let page = agent.metrics().await;
    assert!(page.contains(&format!("{UNREADABLE} 0")), "{page}");
    eventually("the fresh state to replace the damaged file", || async {
        std::fs::read(data.join(SNAPSHOT_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|saved| saved["revision"].as_u64().is_some())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_control_plane_does_not_serve_a_saved_state() {
    // A state saved by an agent that followed a control plane (here: a node `elsewhere`
    // hosting `ghost`) lies in the data directory of an agent configured without one. Nothing
    // would ever refresh it, so it must not be served.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("agent-data");
    std::fs::create_dir_all(&data).expect("data dir");
    let saved = r#"{"revision":10,"policies":[],"nodes":[{"name":"elsewhere","site":"default","address":"127.0.0.1:9","agentVersion":"0.1.0","instances":[{"service":"ghost","port":9,"protocol":"http","health":"passing"}],"revision":8}],"cluster":"ec08aae09e193d83b2ba2597b5d45b0e","virtual_ips":{"ghost":"127.64.0.1"}}"#;
    std::fs::write(data.join(SNAPSHOT_FILE), saved).expect("write the saved state");
    let yaml = format!(
        "kind: AgentConfig\nmetadata: {{name: lone}}\nspec:\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n",
        data.display()
    );
    let agent = Agent::start_in(&workspace_binary("hyphae-agent"), dir.path(), "lone", &yaml)
        .expect("start the agent");
    // The saved state is read, when it is, before the ready line: its config would be the
    // second revision served.
    assert_eq!(agent.metric("hyphae_config_revision", "").await, 1.0);
    let state = request("GET", agent.admin, "/config", "")
        .await
        .expect("the admin endpoint answers");
    assert_eq!(state.status.as_u16(), 200, "{}", state.text());
    assert!(!state.text().contains("ghost"), "{}", state.text());
    assert_eq!(
        std::fs::read_to_string(data.join(SNAPSHOT_FILE)).expect("still there"),
        saved,
        "the file is left as it was"
    );
}
