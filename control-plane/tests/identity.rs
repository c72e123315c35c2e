//! Identities end to end: a cluster makes its root once and every node serves the same one; a
//! host with a join token and a CSR gets a certificate for its node and services, signed by
//! that root, with its site's lifetime; a join token is single use, site-bound, revocable and
//! expires. Real `hyphae-control-plane` processes and the real `hyphae` CLI.

use hyphae_control_plane::ca;
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cli::hyphae;
use hyphae_integration::cluster::Cluster;
use hyphae_integration::eventually::{DEADLINE, INTERVAL, wait_for};
use hyphae_integration::http::{call, call_as_node, request_as};
use rcgen::{CertificateParams, KeyPair};

/// A TLS handshake with `node`, checking its certificate as any HTTPS client does: signed by
/// `root_pem` and naming `name` (an IP address or a DNS name).
async fn checked_by_name(
    root_pem: &str,
    node: std::net::SocketAddr,
    name: &str,
) -> Result<(), String> {
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    for root in hyphae_policies::tls::certificates(root_pem).map_err(|e| e.to_string())? {
        roots.add(root).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server =
        rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let stream = tokio::net::TcpStream::connect(node)
        .await
        .map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server, stream)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A CSR for a fresh key (which stays here).
fn csr() -> String {
    let key = KeyPair::generate().expect("a key");
    CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("a CSR")
        .pem()
        .expect("PEM")
}

fn join_body(token: &str, name: &str, site: &str, csr: &str) -> String {
    serde_json::json!({
        "token": token, "name": name, "site": site, "services": ["web", "api"], "csrPem": csr,
    })
    .to_string()
}

/// Asks `address` for a certificate: the answer's status and body.
async fn join(
    address: std::net::SocketAddr,
    token: &str,
    name: &str,
    site: &str,
    csr: &str,
) -> (u16, serde_json::Value) {
    call(
        "POST",
        address,
        "/v1/agent/join",
        &join_body(token, name, site, csr),
    )
    .await
}

fn create_token(cli: &std::path::Path, server: std::net::SocketAddr, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let created = hyphae(cli, server, &all).expect("run hyphae");
    assert!(created.success(), "{}", created.text);
    created
        .text
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_a_join_token_gets_a_certificate_for_its_node_and_services() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cluster, leader, follower) = Cluster::three_logged(
        dir.path(),
        "  certificates: {trustDomain: mesh.example, siteLifetimes: {edge: 168h}}\n",
    )
    .await
    .expect("a cluster with a leader");
    let cli = workspace_binary("hyphae");

    // One root, made once, served by every node; the CLI prints what hosts pin.
    let mut roots = Vec::new();
    for node in cluster.addresses() {
        let root = wait_for(
            "the root to reach every node",
            DEADLINE,
            INTERVAL,
            || async {
                request_as(None, "GET", node, "/v1/ca", "")
                    .await
                    .filter(|a| a.status == 200)
                    .map(|a| a.json())
            },
        )
        .await
        .expect("the root in time");
        roots.push(root);
    }
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
    let fingerprint = roots[0]["fingerprint"].as_str().expect("a fingerprint");
    let shown = hyphae(&cli, follower, &["ca"]).expect("run hyphae");
    assert_eq!(shown.text.trim(), format!("sha256:{fingerprint}"));

    // Every node, the two that joined too, is checked by an ordinary HTTPS client given only
    // the root (`curl --cacert ca.pem`), by the address dialled or `localhost`, never by a
    // name its certificate does not carry.
    let root_pem = roots[0]["certPem"].as_str().expect("the root");
    for node in cluster.addresses() {
        for name in [node.ip().to_string(), "localhost".to_string()] {
            wait_for(
                "every node's certificate to name where it is reached",
                DEADLINE,
                INTERVAL,
                || async { checked_by_name(root_pem, node, &name).await.ok() },
            )
            .await
            .expect("the node's certificate names its address");
        }
        let other = checked_by_name(root_pem, node, "elsewhere.example").await;
        assert!(other.is_err(), "a name the node does not carry: {other:?}");
    }

    // A join through a follower: the certificate names the node and its services, chains to
    // the root, and lasts the site's lifetime.
    let edge = create_token(&cli, leader, &["--site", "edge"]);
    let (status, joined) = join(follower, &edge, "gw-1", "edge", &csr()).await;
    assert_eq!(status, 200, "{joined}");
    let cert_pem = joined["certPem"].as_str().expect("a certificate");
    let facts = ca::read(cert_pem, Some(root_pem)).expect("signed by the cluster's root");
    assert_eq!(
        facts.identities,
        [
            "spiffe://mesh.example/node/gw-1",
            "spiffe://mesh.example/service/web",
            "spiffe://mesh.example/service/api",
        ]
    );
    assert_eq!(
        facts.hosts,
        ca::HostNames::default(),
        "a host's names no address"
    );
    let hours = (facts.not_after - facts.not_before) / 3600;
    assert_eq!(
        hours, 168,
        "the edge site's lifetime (plus five minutes of skew)"
    );

    // Single use, site-bound, revocable, expiring; a bad CSR uses nothing; no anonymous lists.
    let again = join(leader, &edge, "gw-2", "edge", &csr()).await;
    assert_eq!(
        again.0, 403,
        "a used token admits no second host: {}",
        again.1
    );
    let core = create_token(&cli, leader, &["--site", "core", "--name", "core-1"]);
    let elsewhere = join(leader, &core, "gw-3", "edge", &csr()).await;
    assert_eq!(elsewhere.0, 403, "{}", elsewhere.1);
    let garbage = join(leader, &core, "app-1", "core", "not a csr").await;
    assert_eq!(garbage.0, 422, "{}", garbage.1);
    let revoked = hyphae(&cli, leader, &["token", "revoke", "core-1"]).expect("run hyphae");
    assert!(revoked.success(), "{}", revoked.text);
    let after = join(leader, &core, "app-1", "core", &csr()).await;
    assert_eq!(after.0, 403, "a revoked token: {}", after.1);
    let brief = create_token(&cli, leader, &["--ttl", "1ms"]);
    let late = join(leader, &brief, "app-2", "core", &csr()).await;
    assert_eq!(late.0, 403, "an expired token: {}", late.1);
    // A join may not take a registered node's name; an unbound token gets the default
    // lifetime whatever site the host names; a guess costs the cluster no log entry.
    let record = "{\"name\": \"app-9\", \"site\": \"core\", \"address\": \"10.0.0.9:4143\"}";
    assert_eq!(
        call_as_node("app-9", "POST", leader, "/v1/agent/register", record)
            .await
            .0,
        200
    );
    let any = create_token(&cli, leader, &["--uses", "2"]);
    let taken = join(leader, &any, "app-9", "core", &csr()).await;
    assert_eq!(taken.0, 403, "{}", taken.1);
    let (status, unbound) = join(leader, &any, "gw-9", "edge", &csr()).await;
    assert_eq!(status, 200, "{unbound}");
    let facts =
        ca::read(unbound["certPem"].as_str().expect("a certificate"), None).expect("a certificate");
    assert_eq!((facts.not_after - facts.not_before) / 3600, 24);
    let before = call("GET", leader, "/v1/cluster", "").await.1["lastLogIndex"].clone();
    for _ in 0..20 {
        let guess = join(follower, "hyphae_guess", "x-1", "core", &csr()).await;
        assert_eq!(guess.0, 403);
    }
    let after = call("GET", leader, "/v1/cluster", "").await.1["lastLogIndex"].clone();
    assert_eq!(before, after, "refused guesses wrote nothing");

    // A name a join took stays taken while its node is away (never registered here), until an
    // operator releases it.
    let again = create_token(&cli, leader, &[]);
    let (status, _) = join(leader, &again, "gw-9", "edge", &csr()).await;
    assert_eq!(status, 403, "a name a join already took");
    let (status, released) = call("DELETE", leader, "/v1/nodes/gw-9", "").await;
    assert_eq!(status, 200, "{released}");
    let (status, rejoined) = join(leader, &again, "gw-9", "edge", &csr()).await;
    assert_eq!(status, 200, "after the release: {rejoined}");

    let listed = hyphae(&cli, leader, &["token", "list"]).expect("run hyphae");
    assert!(
        listed.success() && listed.text.contains("NAME"),
        "{}",
        listed.text
    );
    let anonymous = request_as(None, "GET", leader, "/v1/join-tokens", "").await;
    assert_eq!(anonymous.map(|a| a.status.as_u16()), Some(401));

    let mut logs = String::new();
    for node in cluster.nodes() {
        logs.push_str(&std::fs::read_to_string(node.log_path()).unwrap_or_default());
    }
    assert!(logs.contains("a host joined"), "joins are logged");
    for secret in [&edge, &core, &brief] {
        assert!(
            !logs.contains(secret.as_str()),
            "a join token's secret reached a log"
        );
    }
}
