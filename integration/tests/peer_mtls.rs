//! The agents' inbound port as an attacker and as a mesh peer meet it, with real processes and
//! real TLS: it speaks only mutual TLS with a node certificate of the mesh's root (plaintext
//! HTTP/2 and HTTP/1.1, no client certificate, a certificate from another root, an expired
//! one all end at the handshake and reach no
//! instance, loopback-only ones included); a caller refuses a peer that is not the node its
//! endpoint names; and a service's `AccessPolicy` decides by caller, path and method, a refusal
//! being a 403 `hyphae-error: denied` that the callee counts.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyphae_integration::agent::Agent;
use hyphae_integration::backend::TestBackend;
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::command::succeeds;
use hyphae_integration::http::get;
use hyphae_integration::http::http1_client;
use hyphae_integration::mesh::upstream_port;
use hyphae_integration::trust::shared_root;
use hyphae_integration::{DEADLINE, eventually};
use hyphae_policies::tls::files::CertificateFiles;
use hyphae_policies::tls::{self, Credentials, ServerIdentity, Trust};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A host agent `name` in front of `backend` as service `web`, loopback only, guarded by an
/// access policy that lets node `caller` GET under `/open` and nothing else.
fn guarded_host(dir: &Path, backend: &TestBackend) -> Agent {
    Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir,
        "host",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: host}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  services:\n    - {{name: web, port: {}}}\n---\nkind: AccessPolicy\nmetadata: {{name: web}}\nspec:\n  service: web\n  defaultAction: deny\n  rules:\n    - from: [{{node: caller}}]\n      paths: [/open]\n      methods: [GET]\n",
            backend.port()
        ),
    )
    .expect("start the host agent")
}

/// A caller agent with an upstream port for `web` whose one endpoint is `host`'s inbound
/// port, said to be on node `node`.
fn caller(dir: &Path, host: &Agent, node: &str) -> (Agent, String) {
    let upstream = format!("127.0.0.1:{}", upstream_port());
    let agent = Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir,
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  upstreams:\n    - {{listen: \"{upstream}\", service: web}}\n  staticServices:\n    - name: web\n      endpoints: [{{address: \"{}\", node: {node}}}]\n",
            host.inbound
        ),
    )
    .expect("start the caller agent");
    (agent, upstream)
}

/// A guarded host in front of a backend and a caller whose endpoint says the host is `node`:
/// their directory, the backend, both agents and the caller's upstream address for `web`.
async fn guarded_pair(node: &str) -> (tempfile::TempDir, TestBackend, Agent, Agent, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = TestBackend::start("web").await;
    let host = guarded_host(dir.path(), &backend);
    let (caller, upstream) = caller(dir.path(), &host, node);
    (dir, backend, host, caller, upstream)
}

/// Whether an HTTP/2 request for `web` sent on `io` gets any answer.
async fn answered<T>(io: T) -> bool
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Ok((mut sender, connection)) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await
    else {
        return false;
    };
    tokio::spawn(connection);
    let request = http::Request::get("http://web/")
        .header("hyphae-destination", "web")
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let exchange = async {
        let response = sender.send_request(request).await.ok()?;
        response.into_body().collect().await.ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
        .is_some()
}

/// A TLS connection to `host`'s inbound port presenting `credentials`, checking the server
/// against `roots`; `None` when the handshake fails on this side.
async fn tls_to(
    host: &Agent,
    roots: &str,
    credentials: &Credentials,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let trust = Trust::from_pem(roots, None).expect("roots");
    let config = tls::client_config(&trust, Some(credentials), &tls::ALPN_H2).expect("a client");
    tls::TlsConnector::new(
        config,
        ServerIdentity::AnyNode,
        std::time::Duration::from_secs(10),
    )
    .open("127.0.0.1", host.inbound.port())
    .await
    .ok()
}

/// Whether a request for `web` over TLS with `credentials` gets an answer from `host`.
async fn reaches(host: &Agent, roots: &str, credentials: &Credentials) -> bool {
    match tls_to(host, roots, credentials).await {
        Some(stream) => answered(TokioIo::new(stream)).await,
        None => false,
    }
}

/// Issues node `node`'s certificate from the root in `ca` into `out`, valid `lifetime`.
fn issue(ca: &Path, node: &str, out: &Path, lifetime: &str) -> Credentials {
    succeeds(
        "hyphae ca issue",
        std::process::Command::new(workspace_binary("hyphae"))
            .args(["ca", "issue", "--ca"])
            .arg(ca)
            .args(["--node", node, "--lifetime", lifetime, "--out"])
            .arg(out),
    );
    let material = CertificateFiles::new(out.to_path_buf())
        .load()
        .expect("the issued files");
    Credentials::from_pem(&material.chain, &material.key).expect("credentials")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_port_admits_only_mesh_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = TestBackend::start("web").await;
    let host = guarded_host(dir.path(), &backend);
    let cli = workspace_binary("hyphae");
    let root = shared_root(&cli).expect("the shared root");
    let roots = std::fs::read_to_string(root.join("ca.pem")).expect("the root");

    // Plaintext HTTP/2 with a destination header, the way through to a loopback-only
    // instance before: no answer.
    let plain = tokio::net::TcpStream::connect(host.inbound)
        .await
        .expect("connect");
    assert!(
        !answered(TokioIo::new(plain)).await,
        "plaintext reaches nothing"
    );

    // Plaintext HTTP/1.1 with a destination header: no HTTP answer at all.
    let mut plain = tokio::net::TcpStream::connect(host.inbound)
        .await
        .expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: web\r\nhyphae-destination: web\r\n\r\n")
        .await
        .expect("write");
    let mut reply = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut reply)).await;
    assert!(closed.is_ok(), "plaintext HTTP/1.1 held its connection");
    assert!(
        !reply.windows(5).any(|w| w == b"HTTP/"),
        "plaintext HTTP/1.1 got an answer: {}",
        String::from_utf8_lossy(&reply)
    );

    // TLS without a client certificate: the server's own is fine, the caller has none.
    let trust = Trust::from_pem(&roots, None).expect("roots");
    let config = tls::client_config(&trust, None, &tls::ALPN_H2).expect("a client");
    let anonymous = tls::TlsConnector::new(
        config,
        ServerIdentity::AnyNode,
        std::time::Duration::from_secs(10),
    )
    .open("127.0.0.1", host.inbound.port())
    .await;
    if let Ok(stream) = anonymous {
        assert!(
            !answered(TokioIo::new(stream)).await,
            "a caller without a certificate reaches nothing"
        );
    }

    // A certificate from another root: refused at the handshake.
    let other = dir.path().join("other-ca");
    succeeds(
        "hyphae ca create",
        std::process::Command::new(&cli)
            .args(["ca", "create", "--dir"])
            .arg(&other),
    );
    let stranger = issue(&other, "caller", &dir.path().join("stranger"), "1h");
    assert!(
        !reaches(&host, &roots, &stranger).await,
        "a certificate of another root reaches nothing"
    );

    // An expired certificate of the mesh's own root: refused too.
    // (Certificate times have whole seconds: it expires within one.)
    let expired = issue(root, "caller", &dir.path().join("expired"), "1ms");
    eventually("an expired certificate to reach nothing", || async {
        !reaches(&host, &roots, &expired).await
    })
    .await;

    // A valid certificate of the mesh reaches the service (the policy admits `caller` on
    // `/open` only, so `/` is denied by the policy, not at the handshake).
    let member = issue(root, "caller", &dir.path().join("member"), "1h");
    assert!(
        reaches(&host, &roots, &member).await,
        "a mesh peer gets an answer"
    );
    let refused = host.metric("hyphae_inbound_tls_refused_total", "").await;
    assert!(refused >= 5.0, "each refusal is counted: {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_policy_decides_by_caller_path_and_method() {
    let (_dir, _backend, host, caller, upstream) = guarded_pair("host").await;
    let client = http1_client();

    let open = get(&client, &format!("http://{upstream}/open/page")).await;
    assert_eq!(open.status, 200, "{}", open.text());
    assert_eq!(open.text(), "web");
    let beside = get(&client, &format!("http://{upstream}/openly")).await;
    assert_eq!(
        beside.status,
        403,
        "a prefix ends on a segment: {}",
        beside.text()
    );
    let dotted = get(&client, &format!("http://{upstream}/open/../secret")).await;
    assert_eq!(
        dotted.status,
        400,
        "a path that could pass as another: {}",
        dotted.text()
    );
    let closed = get(&client, &format!("http://{upstream}/secret")).await;
    assert_eq!(closed.status, 403, "{}", closed.text());
    assert_eq!(closed.header("hyphae-error"), Some("denied"));
    let posted = hyphae_integration::http::send(
        &client,
        "POST",
        &format!("http://{upstream}/open/page"),
        "x",
    )
    .await;
    assert_eq!(posted.status, 403, "the rule covers GET only");
    assert_eq!(
        host.metric(
            "hyphae_access_denied_total",
            "caller=\"caller\",service=\"web\""
        )
        .await,
        3.0
    );
    drop(caller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_refuses_a_peer_that_is_not_the_node_its_endpoint_names() {
    let (_dir, _backend, _host, _caller, upstream) = guarded_pair("someone-else").await;
    let answer = get(&http1_client(), &format!("http://{upstream}/open")).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(answer.header("hyphae-error"), Some("connect-failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_wide_policy_denies_every_service_without_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (web, admin) = (
        TestBackend::start("web").await,
        TestBackend::start("admin").await,
    );
    let host = Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir.path(),
        "host",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: host}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  services:\n    - {{name: web, port: {}}}\n    - {{name: admin, port: {}}}\n---\nkind: AccessPolicy\nmetadata: {{name: mesh}}\nspec:\n  service: \"*\"\n  defaultAction: deny\n---\nkind: AccessPolicy\nmetadata: {{name: web}}\nspec:\n  service: web\n  defaultAction: allow\n",
            web.port(),
            admin.port()
        ),
    )
    .expect("start the host agent");
    let (web_port, admin_port) = (upstream_port(), upstream_port());
    let _caller = Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir.path(),
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  upstreams:\n    - {{listen: \"127.0.0.1:{web_port}\", service: web}}\n    - {{listen: \"127.0.0.1:{admin_port}\", service: admin}}\n  staticServices:\n    - name: web\n      endpoints: [{{address: \"{0}\", node: host}}]\n    - name: admin\n      endpoints: [{{address: \"{0}\", node: host}}]\n",
            host.inbound
        ),
    )
    .expect("start the caller agent");
    let client = http1_client();
    let allowed = get(&client, &format!("http://127.0.0.1:{web_port}/")).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let denied = get(&client, &format!("http://127.0.0.1:{admin_port}/")).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(denied.header("hyphae-error"), Some("denied"));
}

/// A call whose endpoint is the caller's own node goes to the instance in-process, not over
/// mutual TLS to its own inbound port (decision 44), and the access policy still decides it
/// with the node's own certificate as the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_an_instance_on_the_callers_own_node_skips_the_tunnel_but_not_the_policy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = TestBackend::start("web").await;
    // One agent, `solo`, hosts `web` and calls it: its endpoint is its own inbound port, on
    // its own node. The policy lets `solo` GET under /open only.
    let ports = hyphae_integration::ports::free_ports(2).expect("ports");
    let (inbound, upstream) = (ports[0], ports[1]);
    let solo = Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir.path(),
        "solo",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: solo}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: \"127.0.0.1:{inbound}\", httpProxy: null, dns: null}}\n  services:\n    - {{name: web, port: {}}}\n  upstreams:\n    - {{listen: \"127.0.0.1:{upstream}\", service: web}}\n  staticServices:\n    - name: web\n      endpoints: [{{address: \"127.0.0.1:{inbound}\", node: solo}}]\n---\nkind: AccessPolicy\nmetadata: {{name: web}}\nspec:\n  service: web\n  defaultAction: deny\n  rules:\n    - from: [{{node: solo}}]\n      paths: [/open]\n      methods: [GET]\n",
            backend.port()
        ),
    )
    .expect("start the agent");
    let client = http1_client();
    let base = format!("http://127.0.0.1:{upstream}");

    for _ in 0..3 {
        let open = get(&client, &format!("{base}/open/page")).await;
        assert_eq!(open.status, 200, "{}", open.text());
        assert_eq!(open.text(), "web");
    }
    let closed = get(&client, &format!("{base}/secret")).await;
    assert_eq!(closed.status, 403, "{}", closed.text());
    // `/%6Fpen` is `/open` to the server, and the rules read it so (decision 76); `..;` is
    // `..` to Tomcat, and refused before it is checked.
    let encoded = get(&client, &format!("{base}/%6Fpen/page")).await;
    assert_eq!(encoded.status, 200, "{}", encoded.text());
    let climbing = get(&client, &format!("{base}/open/..;/secret")).await;
    assert_eq!(climbing.status, 400, "{}", climbing.text());
    assert_eq!(closed.header("hyphae-error"), Some("denied"));
    let posted =
        hyphae_integration::http::send(&client, "POST", &format!("{base}/open"), "x").await;
    assert_eq!(posted.status, 403, "the rule covers GET only");
    assert_eq!(
        solo.metric(
            "hyphae_access_denied_total",
            "caller=\"solo\",service=\"web\""
        )
        .await,
        2.0
    );
    let page = solo.metrics().await;
    assert_eq!(
        hyphae_integration::http::metric_in(&page, "hyphae_requests_total", "status_class=\"2xx\""),
        4.0,
        "{page}"
    );
    // Over the tunnel, the pooled connection to its own inbound port would still be open.
    assert_eq!(
        hyphae_integration::http::metric_in(
            &page,
            "hyphae_connections_open",
            "listener=\"inbound\""
        ),
        0.0,
        "{page}"
    );
    // An upgrade is checked by the method it carries, not as a GET: Docker's attach is a POST.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
        .await
        .expect("connect to the upstream port");
    stream
        .write_all(b"POST /open HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n")
        .await
        .expect("send the upgrade");
    let mut head = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buffer[..n]),
            other => panic!("no answer to the upgrade: {other:?}"),
        }
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 403 "),
        "the rule covers GET only: {head}"
    );
}
