//! The control plane's HTTP API from a node running in the test process: what the OpenAPI
//! document lists is what the node serves. Logic, not the process boundary, so no process.

use std::path::Path;

use hyphae_control_plane::config::NodeConfig;
use hyphae_control_plane::daemon::{RunningNode, Start};
use hyphae_integration::cluster::status;
use hyphae_integration::eventually;
use hyphae_integration::http::call;
use hyphae_integration::policies::policy;
use hyphae_policies::ControlPlaneConfigSpec;

/// A one-node cluster in this process, on a port of its own under `dir`, once it leads.
fn init() -> Start {
    Start::Init {
        bootstrap_secret: hyphae_integration::credentials::admin_token().to_string(),
        root: None,
    }
}

async fn leading_node(dir: &Path) -> RunningNode {
    let config = NodeConfig {
        name: "solo".to_string(),
        spec: ControlPlaneConfigSpec {
            id: 1,
            listen: "127.0.0.1:0".parse().expect("an address"),
            data_dir: dir.join("data"),
            ..ControlPlaneConfigSpec::default()
        },
    };
    let node = RunningNode::start(config, init())
        .await
        .expect("start the node");
    let address = node.address;
    hyphae_integration::trust::register_node(
        Path::new(env!("CARGO_BIN_EXE_hyphae")),
        dir,
        &dir.join("data"),
        &[address],
    )
    .expect("the node's root");
    eventually("the node to lead", || async {
        status(address).await["leader"] == 1
    })
    .await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_its_openapi_document() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = leading_node(dir.path()).await;
    let (status, document) = call("GET", node.address, "/v1/openapi.json", "").await;
    assert_eq!(status, 200, "{document}");
    assert_eq!(
        &document,
        hyphae_control_plane::openapi::document(),
        "the served document is the one the library builds"
    );
    assert!(document["paths"]["/v1/policies"]["post"].is_object());

    // Every documented operation is served: none answers `unknown-path`. (The watch stream
    // is left out: it would not end; the watch tests open it.)
    let paths = document["paths"].as_object().expect("paths");
    for (template, operations) in paths {
        if template == hyphae_policies::watch::WATCH_PATH {
            continue;
        }
        let path = template
            .replace("{kind}", "ServicePolicy")
            .replace("{name}", "missing")
            .replace("{id}", "99");
        for method in operations.as_object().expect("operations").keys() {
            let (status, body) = call(&method.to_uppercase(), node.address, &path, "").await;
            assert_ne!(
                body["code"], "unknown-path",
                "{method} {template} is documented but not served ({status})"
            );
        }
    }

    // A flag the API cannot read is refused, never guessed: `dryRun=1` must not write.
    let (status, body) = call(
        "POST",
        node.address,
        "/v1/policies?dryRun=1",
        &policy("flagged", 1),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad-flag")),
        "{body}"
    );
    let (status, _) = call(
        "GET",
        node.address,
        "/v1/policies/ServicePolicy/flagged",
        "",
    )
    .await;
    assert_eq!(status, 404, "nothing was written");
    node.stop().await.expect("the node stops cleanly");
}
