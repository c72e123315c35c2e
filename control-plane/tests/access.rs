//! The admin API refuses anyone without a valid token, and a token's role bounds what it may
//! do: real `hyphae-control-plane` processes in a three-node cluster, real HTTP, and the
//! `hyphae acl token` CLI. No secret appears in any node's log.

use std::os::unix::fs::PermissionsExt;

use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cli::hyphae;
use hyphae_integration::cluster::Cluster;
use hyphae_integration::credentials::admin_token;
use hyphae_integration::eventually;
use hyphae_integration::http::{call, request_as};
use hyphae_integration::lone_node::LoneNode;
use hyphae_integration::policies::policy;

/// Creates a token with `role` through node `address`; returns its secret.
async fn token(address: std::net::SocketAddr, name: &str, role: &str, ttl: Option<&str>) -> String {
    let body = serde_json::json!({ "name": name, "role": role, "ttl": ttl }).to_string();
    let (status, created) = call("POST", address, "/v1/acl/tokens", &body).await;
    assert_eq!(status, 200, "{created}");
    created["secret"]
        .as_str()
        .expect("a secret in the answer")
        .to_string()
}

async fn status_as(
    secret: Option<&str>,
    method: &str,
    address: std::net::SocketAddr,
    path: &str,
    body: &str,
) -> u16 {
    request_as(secret, method, address, path, body)
        .await
        .map_or(0, |answer| answer.status.as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_a_token_whose_role_allows_the_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cluster, leader, follower) = Cluster::three_logged(dir.path(), "")
        .await
        .expect("a cluster with a leader");
    let doc = policy("catalog", 2);

    // Anonymous: every admin route is refused, reads and writes, and nothing is written.
    for (method, path, body) in [
        ("GET", "/v1/policies", ""),
        ("GET", "/v1/nodes", ""),
        ("GET", "/v1/cluster", ""),
        ("POST", "/v1/policies", doc.as_str()),
        ("DELETE", "/v1/policies/ServicePolicy/catalog", ""),
        (
            "POST",
            "/v1/cluster/members",
            "{\"id\": 9, \"address\": \"127.0.0.1:1\"}",
        ),
        ("DELETE", "/v1/cluster/members/2", ""),
        ("POST", "/v1/cluster/transfer-leader", ""),
        ("GET", "/v1/acl/tokens", ""),
    ] {
        for node in [leader, follower] {
            assert_eq!(
                status_as(None, method, node, path, body).await,
                401,
                "{method} {path}"
            );
            let wrong = Some("hyphae_0000000000000000000000000000000000000000");
            assert_eq!(
                status_as(wrong, method, node, path, body).await,
                401,
                "{method} {path}"
            );
        }
    }
    assert_eq!(
        status_as(None, "GET", leader, "/v1/openapi.json", "").await,
        200
    );
    let (_, stored) = call("GET", leader, "/v1/policies", "").await;
    assert_eq!(stored, serde_json::json!([]), "no anonymous write landed");

    // Roles: read reads, write also writes policies (even through a follower), admin also
    // changes membership and tokens.
    let read_secret = token(leader, "dashboard", "read", None).await;
    let write_secret = token(leader, "ci", "write", None).await;
    let read = Some(read_secret.as_str());
    let write = Some(write_secret.as_str());
    assert_eq!(
        status_as(read, "GET", follower, "/v1/policies", "").await,
        200
    );
    assert_eq!(
        status_as(read, "POST", leader, "/v1/policies", &doc).await,
        403
    );
    assert_eq!(
        status_as(write, "POST", follower, "/v1/policies", &doc).await,
        200
    );
    assert_eq!(
        status_as(write, "POST", leader, "/v1/cluster/transfer-leader", "").await,
        403
    );
    assert_eq!(
        status_as(write, "GET", leader, "/v1/acl/tokens", "").await,
        403
    );
    assert_eq!(
        status_as(write, "DELETE", leader, "/v1/acl/tokens/ci", "").await,
        403
    );

    // Revoked and expired tokens stop working on every node.
    let (status, _) = call("DELETE", leader, "/v1/acl/tokens/ci", "").await;
    assert_eq!(status, 200);
    for node in cluster.addresses() {
        eventually("the revoked token to be refused everywhere", || async {
            status_as(write, "GET", node, "/v1/policies?stale=true", "").await == 401
        })
        .await;
    }
    let brief = token(leader, "brief", "read", Some("1ms")).await;
    eventually("an expired token to be refused", || async {
        status_as(Some(&brief), "GET", leader, "/v1/policies", "").await == 401
    })
    .await;

    // The CLI manages tokens with an admin token, and lists them without secrets.
    let cli = workspace_binary("hyphae");
    let created = hyphae(
        &cli,
        leader,
        &["acl", "token", "create", "ops", "--role", "admin"],
    )
    .expect("run hyphae");
    assert!(created.success(), "{}", created.text);
    let secret = created
        .text
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_eq!(
        status_as(
            Some(&secret),
            "POST",
            leader,
            "/v1/cluster/transfer-leader",
            "{\"to\": 99}"
        )
        .await,
        409
    );
    let listed = hyphae(&cli, leader, &["acl", "token", "list"]).expect("run hyphae");
    assert!(listed.success(), "{}", listed.text);
    for name in ["bootstrap", "dashboard", "ops"] {
        assert!(listed.text.contains(name), "{}", listed.text);
    }
    assert!(!listed.text.contains(&secret));
    let revoked = hyphae(&cli, leader, &["acl", "token", "revoke", "ops"]).expect("run hyphae");
    assert!(revoked.success(), "{}", revoked.text);

    // Secrets stay out of the logs, which do name who wrote.
    let mut logs = String::new();
    for node in cluster.nodes() {
        logs.push_str(&std::fs::read_to_string(node.log_path()).unwrap_or_default());
    }
    assert!(
        logs.contains("admin write"),
        "writes are logged with who made them"
    );
    assert!(logs.contains("\"token\":\"ci\""), "{logs}");
    for secret in [admin_token(), &read_secret, &write_secret, &brief, &secret] {
        assert!(!logs.contains(secret), "a secret reached a log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_without_a_token_file_creates_an_owner_only_one_that_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = LoneNode::write(dir.path(), "solo", 1).expect("write config");
    let mut command = std::process::Command::new(workspace_binary("hyphae-control-plane"));
    command
        .args(["--init", "--config"])
        .arg(&files.config)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let (_node, ready) = hyphae_integration::Process::spawn_ready_json(
        "solo",
        &mut command,
        std::time::Duration::from_secs(30),
    )
    .expect("start the node");
    let address: std::net::SocketAddr = ready["listen"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a listen address");
    files
        .trust(&workspace_binary("hyphae"), address)
        .expect("the node's root");
    let file = files.data.join("bootstrap-admin-token");
    let mode = std::fs::metadata(&file)
        .expect("the token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let secret = std::fs::read_to_string(&file)
        .expect("read it")
        .trim()
        .to_string();
    assert!(secret.len() >= 32);
    eventually("the bootstrap token to work", || async {
        status_as(Some(&secret), "GET", address, "/v1/cluster", "").await == 200
    })
    .await;
    assert_eq!(
        status_as(None, "GET", address, "/v1/cluster", "").await,
        401
    );
}

/// Runs the `hyphae` CLI against `server` with the operator certificate in `cert_dir` and no
/// token: whether it succeeded, and what it printed.
fn hyphae_with_certificate(
    server: std::net::SocketAddr,
    cert_dir: &std::path::Path,
    args: &[&str],
) -> (bool, String) {
    let trust = hyphae_integration::trust::of(&server.to_string()).expect("a started cluster");
    let output = std::process::Command::new(workspace_binary("hyphae"))
        .args(args)
        .env("HYPHAE_SERVER", server.to_string())
        .env("HYPHAE_CA_FILE", &trust.roots_file)
        .env("HYPHAE_CERT_DIR", cert_dir)
        .env_remove("HYPHAE_TOKEN")
        .env_remove("HYPHAE_TOKEN_FILE")
        .output()
        .expect("run hyphae");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_may_use_client_certificates_with_a_role_revoked_like_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_cluster, leader, follower) = Cluster::three_logged(dir.path(), "")
        .await
        .expect("start the cluster");
    let cli = workspace_binary("hyphae");
    let reader = dir.path().join("alice");
    let writer = dir.path().join("bob");
    for (name, role, out) in [("alice", "read", &reader), ("bob", "write", &writer)] {
        let out = out.display().to_string();
        let created = hyphae(
            &cli,
            leader,
            &["acl", "cert", "create", name, "--role", role, "--out", &out],
        )
        .expect("run hyphae");
        assert!(created.success(), "{}", created.text);
    }
    let policy_file = dir.path().join("p.yaml");
    std::fs::write(&policy_file, policy("by-cert", 1)).expect("write a policy");
    let apply = ["apply", "-f", policy_file.to_str().expect("a path")];

    // Through a follower too: it forwards the certificate's identity to the leader.
    let (read, text) = hyphae_with_certificate(follower, &reader, &["get"]);
    assert!(read, "a read certificate reads: {text}");
    let (wrote, text) = hyphae_with_certificate(follower, &reader, &apply);
    assert!(
        !wrote && text.contains("403"),
        "a read certificate may not write: {text}"
    );
    let (wrote, text) = hyphae_with_certificate(follower, &writer, &apply);
    assert!(wrote, "a write certificate writes: {text}");

    // Revoked like a token, at once.
    let revoked = hyphae(&cli, leader, &["acl", "token", "revoke", "alice"]).expect("run hyphae");
    assert!(revoked.success(), "{}", revoked.text);
    let (read, text) = hyphae_with_certificate(leader, &reader, &["get"]);
    assert!(
        !read && text.contains("401"),
        "a revoked certificate: {text}"
    );
    // A new certificate under the revoked name does not bring the old one back.
    let renamed = dir.path().join("alice-2");
    let out = renamed.to_str().expect("a path");
    let created = hyphae(
        &cli,
        leader,
        &[
            "acl", "cert", "create", "alice", "--role", "read", "--out", out,
        ],
    )
    .expect("run hyphae");
    assert!(created.success(), "{}", created.text);
    let (read, text) = hyphae_with_certificate(leader, &reader, &["get"]);
    assert!(
        !read && text.contains("401"),
        "the revoked certificate stays revoked: {text}"
    );
    let (read, text) = hyphae_with_certificate(leader, &renamed, &["get"]);
    assert!(read, "the new certificate reads: {text}");

    // A certificate from another root does not get through the handshake.
    let other = dir.path().join("other-root");
    let stranger = dir.path().join("stranger");
    for args in [
        vec!["ca", "create", "--dir", other.to_str().expect("a path")],
        vec![
            "ca",
            "issue",
            "--ca",
            other.to_str().expect("a path"),
            "--node",
            "x",
            "--out",
            stranger.to_str().expect("a path"),
        ],
    ] {
        let output = std::process::Command::new(&cli)
            .args(&args)
            .output()
            .expect("run hyphae");
        assert!(output.status.success());
    }
    let (read, text) = hyphae_with_certificate(leader, &stranger, &["get"]);
    assert!(!read, "a certificate of another root is refused: {text}");
}
