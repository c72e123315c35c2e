//! A node's limits, end to end. Its port bounds what anyone who reaches it can hold: silent and half-sent requests
//! are cut off by `headerReadTimeout`, stalled bodies by `bodyReadTimeout`, bodies by the
//! limit for their kind of caller, and connections by `maxConnections`. In-process: one node
//! started with `RunningNode::start` on `127.0.0.1:0`, spoken to over raw TCP and TLS (the
//! port speaks only TLS), with certificates the node's own root signs for the callers the
//! tests play (agents, peers).

use std::time::Duration;

use hyphae_control_plane::config::NodeConfig;
use hyphae_control_plane::daemon::{RunningNode, Start};
use hyphae_control_plane::pki::JoinTicket;
use hyphae_integration::credentials::{admin_token, bearer};
use hyphae_policies::tls::{self, Credentials, Kind, ServerIdentity, SpiffeId, TlsConnector};
use hyphae_policies::{ControlPlaneConfigSpec, ControlPlaneLimits, Member};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Longest any single expectation may take before the test fails (the limits are far shorter).
const DEADLINE: Duration = Duration::from_secs(20);

/// Fails unless `answer` has the status `status` and names `reason` (the limit it hit, or what
/// was expected instead).
fn assert_refused(answer: &str, status: u16, reason: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{answer}"
    );
    assert!(answer.contains(reason), "{answer}");
}

/// Starting a new cluster with this process's admin token.
fn init() -> Start {
    Start::Init {
        bootstrap_secret: admin_token().to_string(),
        root: None,
    }
}

/// Waits until `running` leads and has stored its bootstrap token.
async fn leads_with_a_token(running: &RunningNode) {
    let mut metrics = running.node.raft.metrics();
    tokio::time::timeout(
        DEADLINE,
        metrics.wait_for(|m| m.current_leader == Some(m.id)),
    )
    .await
    .expect("the node elects itself in time")
    .expect("metrics flow");
    tokio::time::timeout(DEADLINE, async {
        while running.node.state.read(|s| s.tokens().is_empty()).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bootstrap token is stored in time");
}

/// A one-node cluster with `limits`, leading, and its data directory.
async fn node(limits: ControlPlaneLimits) -> (RunningNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create a data directory");
    let config = NodeConfig {
        name: "limits".to_string(),
        spec: ControlPlaneConfigSpec {
            id: 1,
            listen: "127.0.0.1:0".parse().expect("an address"),
            data_dir: dir.path().join("control-plane"),
            limits,
            ..ControlPlaneConfigSpec::default()
        },
    };
    let running = RunningNode::start(config, init())
        .await
        .expect("start the node");
    leads_with_a_token(&running).await;
    (running, dir)
}

fn quick(limits: ControlPlaneLimits) -> ControlPlaneLimits {
    ControlPlaneLimits {
        header_read_timeout: hyphae_policies::Duration::from_millis(300),
        body_read_timeout: hyphae_policies::Duration::from_millis(300),
        ..limits
    }
}

/// Reads until the peer closes (or `DEADLINE`, which fails the test); returns what it sent.
async fn read_to_close(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    });
    read.await
        .expect("the node closes the connection within the deadline");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A TLS connection to `node` that checks its certificate and presents `credentials`.
async fn connect(node: &RunningNode, credentials: Option<&Credentials>) -> TlsStream<TcpStream> {
    try_connect(node, credentials)
        .await
        .expect("a TLS connection")
}

/// Like [`connect`], `None` when no TLS connection could be made (the node is at its
/// connection cap).
async fn try_connect(
    node: &RunningNode,
    credentials: Option<&Credentials>,
) -> Option<TlsStream<TcpStream>> {
    let config = tls::client_config(&node.node.tls.trust(), credentials, &[b"http/1.1"])
        .expect("a TLS client configuration");
    TlsConnector::new(config, ServerIdentity::ControlPlane, DEADLINE)
        .open("127.0.0.1", node.address.port())
        .await
        .ok()
}

/// One HTTP/1.1 exchange on a fresh TLS connection; the whole answer as text.
async fn exchange(node: &RunningNode, request: &(impl AsRef<[u8]> + ?Sized)) -> String {
    exchange_as(node, None, request).await
}

/// Like [`exchange`], presenting `credentials`.
async fn exchange_as(
    node: &RunningNode,
    credentials: Option<&Credentials>,
    request: &(impl AsRef<[u8]> + ?Sized),
) -> String {
    let mut stream = connect(node, credentials).await;
    stream
        .write_all(request.as_ref())
        .await
        .expect("send the request");
    read_to_close(&mut stream).await
}

/// Like [`exchange_as`], `None` when no TLS connection could be made.
async fn try_exchange_as(
    node: &RunningNode,
    credentials: Option<&Credentials>,
    request: &str,
) -> Option<String> {
    let mut stream = try_connect(node, credentials).await?;
    stream.write_all(request.as_bytes()).await.ok()?;
    Some(read_to_close(&mut stream).await)
}

/// Waits until a TLS connection to `node` is closed without an answer; fails the test with
/// `what` after [`DEADLINE`].
async fn until_refused(node: &RunningNode, what: &str) {
    tokio::time::timeout(DEADLINE, async { while !exchange_refused(node).await {} })
        .await
        .unwrap_or_else(|_| panic!("{what}"));
}

/// Waits until `node` answers `GET /v1/cluster` 200 to a caller presenting `credentials`;
/// fails the test with `what` after [`DEADLINE`].
async fn until_answered(node: &RunningNode, credentials: Option<&Credentials>, what: &str) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            if try_exchange_as(node, credentials, &get_cluster())
                .await
                .is_some_and(|answer| answer.starts_with("HTTP/1.1 200"))
            {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

/// A certificate `node`'s own root signs for `kind` `name`: the caller a test plays.
async fn credentials(node: &RunningNode, kind: Kind, name: &str) -> Credentials {
    let ca = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(ca) = node.node.state.read(|s| s.ca().cloned()).await {
                return ca;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the cluster stores its root in time");
    let (key, csr) = tls::join::key_and_request().expect("a key and a CSR");
    let trust_domain = &node.node.config.spec.certificates.trust_domain;
    let id = SpiffeId::new(trust_domain, kind, name).to_string();
    let now = hyphae_control_plane::tokens::now_ms();
    let leaf = hyphae_control_plane::ca::sign(&ca, &csr, &[id], now, 3_600_000).expect("signed");
    Credentials::from_pem(&format!("{leaf}{}", ca.cert_pem), &key).expect("usable credentials")
}

/// A GET of `path` with this process's admin token, closing the connection after the answer.
fn get(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nhost: node\r\nauthorization: {}\r\nconnection: close\r\n\r\n",
        bearer()
    )
}

fn get_cluster() -> String {
    get("/v1/cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_requests_are_cut_off_by_the_header_read_timeout() {
    let (running, _dir) = node(quick(ControlPlaneLimits::default())).await;
    let mut silent = TcpStream::connect(running.address).await.expect("connect");
    assert_eq!(
        read_to_close(&mut silent).await,
        "",
        "no answer, just a close"
    );

    let mut plaintext = TcpStream::connect(running.address).await.expect("connect");
    plaintext
        .write_all(get_cluster().as_bytes())
        .await
        .expect("send a plaintext request");
    let answer = read_to_close(&mut plaintext).await;
    assert!(
        !answer.contains("HTTP/1.1"),
        "plaintext HTTP gets no HTTP answer from a TLS port: {answer:?}"
    );

    let mut half = connect(&running, None).await;
    half.write_all(b"GET /v1/cluster HTTP/1.1\r\nhost: node\r\n")
        .await
        .expect("send half a head");
    let answer = read_to_close(&mut half).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "a half-sent head gets a close or a 408, got {answer:?}"
    );

    let answer = exchange(&running, &get_cluster()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408_and_bodies_are_bounded_per_kind_of_caller() {
    let limits = ControlPlaneLimits {
        max_agent_body_bytes: 2048,
        ..ControlPlaneLimits::default()
    };
    let (running, _dir) = node(quick(limits)).await;

    let stalled = format!(
        "POST /v1/policies HTTP/1.1\r\nhost: node\r\nauthorization: {}\r\ncontent-length: 1000\r\n\r\nkind: Serv",
        bearer()
    );
    let answer = exchange(&running, &stalled).await;
    assert_refused(&answer, 408, "bodyReadTimeout");

    let record = format!("{{\"name\": \"{}\"}}", "a".repeat(4096));
    let register = post("/v1/agent/register", &record);
    let agent = credentials(&running, Kind::Node, "a").await;
    let answer = exchange_as(&running, Some(&agent), &register).await;
    assert_refused(&answer, 413, "maxAgentBodyBytes");

    // The same size is fine for an admin request: it gets past the limit to the loader.
    let policy = format!(
        "kind: ServicePolicy\nmetadata: {{name: big}}\nspec: {{}}\n# {}\n",
        "x".repeat(4096)
    );
    let apply = post("/v1/policies", &policy);
    let answer = exchange(&running, &apply).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_to_public_routes_are_small_and_only_so_many_are_read_at_once() {
    // A join names its caller only in its body: anyone may send one, so its body may not be
    // as large as an admin's, and only `maxPublicRequests` are read at once.
    let limits = ControlPlaneLimits {
        max_public_body_bytes: 2048,
        // An eighth of them, two, from one address.
        max_public_requests: 16,
        ..ControlPlaneLimits::default()
    };
    let (running, _dir) = node(limits).await;
    let big = format!("{{\"token\": \"{}\"}}", "a".repeat(4096));
    for path in ["/v1/cluster/join", "/v1/agent/join"] {
        let answer = exchange(&running, &post(path, &big)).await;
        assert_refused(&answer, 413, "maxPublicBodyBytes");
    }
    // Two joins whose bodies are still coming hold the places this address may take.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&running, None).await;
        stream
            .write_all(
                b"POST /v1/cluster/join HTTP/1.1\r\nhost: node\r\ncontent-length: 1000\r\n\r\n{",
            )
            .await
            .expect("send a head");
        stalled.push(stream);
    }
    let busy = hyphae_integration::eventually::wait_for(
        "the third join to be refused",
        DEADLINE,
        Duration::from_millis(20),
        || async {
            let answer = exchange(&running, &post("/v1/cluster/join", "{}")).await;
            answer.starts_with("HTTP/1.1 503").then_some(answer)
        },
    )
    .await
    .unwrap_or_else(|timed_out| panic!("{timed_out}"));
    assert_refused(&busy, 503, "maxPublicRequests");
    // An operator's request is not a public one, and a read of a public route takes no
    // place: both are answered as before.
    let answer = exchange(&running, &get_cluster()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = exchange(&running, &get("/v1/ca")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Once the stalled ones are gone, their places are free.
    drop(stalled);
    hyphae_integration::eventually::wait_for(
        "a join to be read again",
        DEADLINE,
        Duration::from_millis(20),
        || async {
            let answer = exchange(&running, &post("/v1/cluster/join", "{}")).await;
            (!answer.starts_with("HTTP/1.1 503")).then_some(())
        },
    )
    .await
    .unwrap_or_else(|timed_out| panic!("{timed_out}"));
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_uploading_past_the_body_limit_reads_the_413_instead_of_a_reset() {
    let limits = ControlPlaneLimits {
        max_admin_body_bytes: 64 * 1024,
        ..ControlPlaneLimits::default()
    };
    let (running, _dir) = node(limits).await;
    let chunk = vec![b'#'; 64 * 1024];
    let chunks = 128; // 8 MiB in all: far more than the socket buffers hold.
    let head = format!(
        "POST /v1/policies HTTP/1.1\r\nhost: node\r\nauthorization: {}\r\ncontent-length: {}\r\n\r\n",
        bearer(),
        chunk.len() * chunks
    );
    let mut stream = connect(&running, None).await;
    // As curl and most clients do: the whole upload first, and a failed write ends the try.
    // The node answers after 64 KiB and closes; without a lingering close the rest of the
    // upload meets a reset, which also destroys the answer.
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    for sent in 0..chunks {
        if let Err(error) = stream.write_all(&chunk).await {
            panic!("the upload was cut off after {sent} chunks: {error}");
        }
    }
    stream.flush().await.expect("the upload is taken");
    let answer = read_to_close(&mut stream).await;
    assert_refused(&answer, 413, "maxAdminBodyBytes");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_node_lingers_on_keeps_its_place_under_the_cap() {
    let limits = ControlPlaneLimits {
        max_connections: 1,
        lingering_close_timeout: hyphae_policies::Duration::from_secs(60),
        ..ControlPlaneLimits::default()
    };
    let (running, _dir) = node(limits).await;
    // Answered and closed (`connection: close`) by the node, which then lingers: its client
    // keeps its own side open.
    let mut lingering = connect(&running, None).await;
    lingering
        .write_all(get_cluster().as_bytes())
        .await
        .expect("send the request");
    let answer = read_to_close(&mut lingering).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The node lingers for 60 s; for a second of it, every other connection is refused. (The
    // first may be refused only because the node has not yet let go of the served
    // connection, so one refusal proves nothing; a place given back too early is taken by
    // one of the next tries.)
    let watching = std::time::Instant::now();
    let mut tries = 0;
    while watching.elapsed() < Duration::from_secs(1) {
        assert!(
            exchange_refused(&running).await,
            "a connection beyond the cap was served after {tries} refusals, while the node \
             lingered on the one connection the cap allows"
        );
        tries += 1;
    }
    drop(lingering);
    until_answered(
        &running,
        None,
        "once the lingering client closes, its place is free",
    )
    .await;
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_and_idle_ones_free_their_place() {
    let limits = ControlPlaneLimits {
        max_connections: 8,
        header_read_timeout: hyphae_policies::Duration::from_secs(30),
        ..ControlPlaneLimits::default()
    };
    let (running, _dir) = node(limits).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(running.address).await.expect("connect"));
    }
    // The idle ones are accepted in order; a ninth request is closed unanswered.
    until_refused(
        &running,
        "a connection beyond the cap is closed without an answer",
    )
    .await;
    drop(idle);
    until_answered(
        &running,
        None,
        "once the idle connections close, the API answers again",
    )
    .await;
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_the_api_from_answering() {
    // Both ends of every connection live in this process: 2,000 descriptors and more.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(hard) = limit.maximum {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
    let (running, _dir) = node(ControlPlaneLimits::default()).await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(running.address).await.expect("connect"));
    }
    let answer = exchange(&running, &get_cluster()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle);
    running.stop().await.expect("stop");
}

/// A snapshot chunk for `/raft/snapshot`, framed as a leader at `term` would send it.
fn snapshot_chunk(term: u64, offset: u64, data: Vec<u8>) -> Vec<u8> {
    use hyphae_control_plane::raft::{LogId, SnapshotMeta, TypeConfig};
    let request = openraft::raft::InstallSnapshotRequest::<TypeConfig> {
        vote: openraft::Vote::new_committed(term, 2),
        meta: SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(term, 2), 100)),
            last_membership: openraft::StoredMembership::default(),
            snapshot_id: "forged".to_string(),
        },
        offset,
        data,
        done: false,
    };
    let body = hyphae_control_plane::snapshot_chunk::encode(&request).expect("encode a chunk");
    let mut raw = format!(
        "POST /raft/snapshot HTTP/1.1\r\nhost: node\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_chunk_that_does_not_continue_the_snapshot_is_refused_without_a_crash() {
    let (running, _dir) = node(ControlPlaneLimits {
        max_snapshot_bytes: 1024 * 1024,
        ..ControlPlaneLimits::default()
    })
    .await;
    // A member with a bug: the node's own identity passes the member check.
    let member = credentials(&running, Kind::ControlPlane, "1").await;
    let send = |request: Vec<u8>| {
        let (running, member) = (&running, &member);
        async move { exchange_as(running, Some(member), &request).await }
    };
    let outsider = credentials(&running, Kind::ControlPlane, "9").await;
    let refused = exchange_as(&running, Some(&outsider), &snapshot_chunk(5, 0, vec![1])).await;
    assert!(
        refused.starts_with("HTTP/1.1 403"),
        "a non-member: {refused}"
    );
    let anonymous = exchange(&running, &snapshot_chunk(5, 0, vec![1])).await;
    assert!(
        anonymous.starts_with("HTTP/1.1 403"),
        "no certificate: {anonymous}"
    );
    let first = send(snapshot_chunk(5, 0, vec![1, 2, 3])).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Once made the node allocate 2^62 bytes and abort.
    let far = send(snapshot_chunk(5, 1 << 62, vec![4])).await;
    assert!(far.starts_with("HTTP/1.1 400"), "{far}");
    for offset in [4, 9] {
        let answer = send(snapshot_chunk(5, offset, vec![4])).await;
        assert_refused(&answer, 400, "expected offset 3");
    }
    let oversized = send(snapshot_chunk(5, 3, vec![0; 1024 * 1024])).await;
    assert_refused(&oversized, 400, "maxSnapshotBytes");
    let next = send(snapshot_chunk(5, 3, vec![4])).await;
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");
    let answer = exchange(&running, &get_cluster()).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the node still serves: {answer}"
    );
    running.stop().await.expect("stop");
}

/// The JSON body of an HTTP/1.1 answer.
fn json_of(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// A POST of `body` to `path` with this process's admin token (agent and peer routes ignore
/// it), closing the connection after the answer.
fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: node\r\nauthorization: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        bearer(),
        body.len()
    )
}

/// A Route for `catalog` with `rules` rules: its stored form grows with each.
fn route(name: &str, rules: usize) -> String {
    let mut yaml =
        format!("kind: Route\nmetadata: {{name: {name}}}\nspec:\n  service: catalog\n  rules:\n");
    for rule in 0..rules {
        yaml.push_str(&format!(
            "    - matches: [{{path: {{prefix: /api/v{rule}}}}}]\n      backends: [{{service: catalog}}]\n"
        ));
    }
    yaml
}

/// This node's applied revision.
async fn revision(node: &RunningNode) -> Option<u64> {
    json_of(&exchange(node, &get_cluster()).await)["revision"].as_u64()
}

/// Whether a TLS connection to `node` is closed before it can carry a request (beyond the
/// connection cap).
async fn exchange_refused(node: &RunningNode) -> bool {
    let config = tls::client_config(&node.node.tls.trust(), None, &[b"http/1.1"])
        .expect("a TLS client configuration");
    let connector = TlsConnector::new(config, ServerIdentity::ControlPlane, DEADLINE);
    let Ok(mut stream) = connector.open("127.0.0.1", node.address.port()).await else {
        return true;
    };
    if stream.write_all(get_cluster().as_bytes()).await.is_err() {
        return true;
    }
    read_to_close(&mut stream).await.is_empty()
}

fn config(id: u64, dir: &std::path::Path, limits: &ControlPlaneLimits) -> NodeConfig {
    NodeConfig {
        name: format!("node-{id}"),
        spec: ControlPlaneConfigSpec {
            id,
            listen: "127.0.0.1:0".parse().expect("an address"),
            data_dir: dir.join(format!("node-{id}")),
            limits: limits.clone(),
            ..ControlPlaneConfigSpec::default()
        },
    }
}

/// A control-plane join token for `uses` nodes, made through `leader`'s API, with the root's
/// fingerprint: what a joining node starts with.
async fn join_ticket(leader: &RunningNode, uses: u32) -> JoinTicket {
    let body = format!("{{\"uses\": {uses}, \"controlPlane\": true}}");
    let answer = exchange(leader, &post("/v1/join-tokens", &body)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let roots = leader
        .node
        .tls
        .files
        .load()
        .expect("the leader's TLS files");
    let root = tls::certificates(&roots.roots).expect("a root");
    JoinTicket {
        secret: json_of(&answer)["secret"]
            .as_str()
            .expect("a secret")
            .to_string(),
        ca_fingerprint: tls::fingerprint(root[0].as_ref()),
    }
}

/// Waits until `leader` counts `voters` voters.
async fn has_voters(leader: &RunningNode, voters: usize) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let status = json_of(&exchange(leader, &get_cluster()).await);
            let count = status["members"].as_array().map_or(0, |members| {
                members.iter().filter(|m| m["voter"] == true).count()
            });
            if count == voters {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the joining nodes become voters in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_up_to_the_size_limit_commit_larger_ones_get_413_and_a_lagging_follower_catches_up_in_byte_sized_batches()
 {
    // Small limits, so a few writes outgrow one replication message and one peer body.
    let limits = ControlPlaneLimits {
        max_write_bytes: 64 * 1024,
        max_replication_bytes: 96 * 1024,
        max_peer_body_bytes: 160 * 1024,
        ..ControlPlaneLimits::default()
    };
    let dir = tempfile::tempdir().expect("a data directory");
    let leader = RunningNode::start(config(1, dir.path(), &limits), init())
        .await
        .expect("start node 1");
    leads_with_a_token(&leader).await;
    let ticket = join_ticket(&leader, 2).await;
    let mut followers = Vec::new();
    for id in [2, 3] {
        let mut joining = config(id, dir.path(), &limits);
        joining.spec.members = vec![Member {
            id: 1,
            address: leader.address.to_string(),
        }];
        let start = Start::Join {
            ticket: Some(ticket.clone()),
        };
        let follower = RunningNode::start(joining, start)
            .await
            .expect("start a follower");
        followers.push(follower);
    }
    has_voters(&leader, 3).await;

    // The largest Route that fits, found with dry runs (which check the size too).
    let fits = |rules: usize| {
        let request = post("/v1/policies?dryRun=true", &route("big", rules));
        let leader = &leader;
        async move { exchange(leader, &request).await }
    };
    let (mut small, mut large) = (1, 4096);
    assert!(fits(large).await.starts_with("HTTP/1.1 413"));
    while large - small > 1 {
        let middle = (small + large) / 2;
        let answer = fits(middle).await;
        if answer.starts_with("HTTP/1.1 200") {
            small = middle;
        } else {
            assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
            large = middle;
        }
    }
    let too_big = exchange(&leader, &post("/v1/policies", &route("big", large))).await;
    assert_refused(&too_big, 413, "maxWriteBytes");
    let before = revision(&leader).await;
    let applied = exchange(&leader, &post("/v1/policies", &route("big", small))).await;
    assert!(applied.starts_with("HTTP/1.1 200"), "{applied}");
    assert!(revision(&leader).await > before);

    // Node 3 misses several writes near the limit: together far more than one message or
    // one peer body may carry, so it can only catch up in batches sized in bytes.
    let lagging = followers.pop().expect("node 3");
    let lagging_config = {
        let mut config = config(3, dir.path(), &limits);
        config.spec.listen = lagging.address;
        config
    };
    lagging.stop().await.expect("stop node 3");
    for write in 0..6 {
        let answer = exchange(
            &leader,
            &post("/v1/policies", &route(&format!("big-{write}"), small)),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let target = revision(&leader).await;
    let restarted = RunningNode::start(lagging_config, Start::Join { ticket: None })
        .await
        .expect("restart node 3");
    let caught_up = tokio::time::timeout(DEADLINE, async {
        while revision(&restarted).await != target {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    caught_up.await.expect("node 3 catches up with the leader");
    let answer = exchange(&leader, &post("/v1/policies", &route("small", 1))).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the cluster keeps taking writes: {answer}"
    );
    for node in [restarted, leader].into_iter().chain(followers) {
        node.stop().await.expect("stop");
    }
}

fn registration(name: &str) -> String {
    let record = format!(
        "{{\"name\": \"{name}\", \"site\": \"a\", \"address\": \"10.0.0.1:4143\", \"instances\": []}}"
    );
    post("/v1/agent/register", &record)
}

/// Opens a watch stream as `agent` and returns the connection with the status line of its
/// answer.
async fn watch(node: &RunningNode, agent: &Credentials) -> (TlsStream<TcpStream>, String) {
    let mut stream = connect(node, Some(agent)).await;
    stream
        .write_all(b"GET /v1/agent/watch HTTP/1.1\r\nhost: node\r\n\r\n")
        .await
        .expect("send the request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match tokio::time::timeout(DEADLINE, stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// The watch request that asks for the stream on the connection itself.
const WATCH_UPGRADE_REQUEST: &[u8] = b"GET /v1/agent/watch HTTP/1.1\r\nhost: node\r\nconnection: upgrade\r\nupgrade: hyphae-watch\r\n\r\n";

/// Opens an upgraded watch as `credentials` (none: no certificate) and returns the
/// connection, the answer's head, and what came after it.
async fn watch_upgraded(
    node: &RunningNode,
    credentials: Option<&Credentials>,
) -> (TlsStream<TcpStream>, String, Vec<u8>) {
    try_watch_upgraded(node, credentials)
        .await
        .expect("a TLS connection")
}

/// Like [`watch_upgraded`], `None` when no TLS connection could be made (the node is at its
/// connection cap).
async fn try_watch_upgraded(
    node: &RunningNode,
    credentials: Option<&Credentials>,
) -> Option<(TlsStream<TcpStream>, String, Vec<u8>)> {
    let mut stream = try_connect(node, credentials).await?;
    stream.write_all(WATCH_UPGRADE_REQUEST).await.ok()?;
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match tokio::time::timeout(DEADLINE, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => read.extend_from_slice(&buffer[..n]),
            _ => break read.len(),
        }
    };
    let rest = read.split_off(head_end);
    Some((stream, String::from_utf8_lossy(&read).into_owned(), rest))
}

/// Waits until `node` upgrades a watch of `agent`'s (before the cluster has its identity it
/// answers 503 `not-ready`; at its connection cap it closes the connection); returns the
/// connection, the answer's head and what came after it. Fails the test with `what` after
/// [`DEADLINE`].
async fn until_upgraded(
    node: &RunningNode,
    agent: &Credentials,
    what: &str,
) -> (TlsStream<TcpStream>, String, Vec<u8>) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match try_watch_upgraded(node, Some(agent)).await {
                Some((stream, head, pending)) if head.starts_with("HTTP/1.1 101") => {
                    return (stream, head, pending);
                }
                Some((_, head, _)) => assert!(head.starts_with("HTTP/1.1 503"), "{head}"),
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"))
}

/// Reads the stream's lines (after `pending`, bytes already read) until one is an event of
/// `kind` (`snapshot`, `delta`); returns it.
async fn next_event(
    stream: &mut TlsStream<TcpStream>,
    pending: &mut Vec<u8>,
    kind: &str,
) -> serde_json::Value {
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event: serde_json::Value =
                    serde_json::from_slice(&line).expect("each line is a JSON event");
                if event["type"] == kind {
                    return event;
                }
            }
            let n = stream.read(&mut buffer).await.expect("read the stream");
            assert!(n > 0, "the stream ended before a {kind}");
            pending.extend_from_slice(&buffer[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a {kind} within the deadline"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_watch_needs_a_node_certificate_then_carries_the_snapshot_and_each_delta() {
    let (running, _dir) = node(ControlPlaneLimits::default()).await;
    let (_, refused, _) = watch_upgraded(&running, None).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let operator = credentials(&running, Kind::Operator, "op").await;
    let (_, refused, _) = watch_upgraded(&running, Some(&operator)).await;
    assert!(
        refused.starts_with("HTTP/1.1 401"),
        "only a node's certificate opens a watch: {refused}"
    );

    let a = credentials(&running, Kind::Node, "a").await;
    let (mut stream, head, mut pending) =
        until_upgraded(&running, &a, "the watch is upgraded once the node is ready").await;
    assert!(
        head.to_ascii_lowercase().contains("upgrade: hyphae-watch"),
        "{head}"
    );
    let snapshot = next_event(&mut stream, &mut pending, "snapshot").await;
    let applied = exchange(&running, &post("/v1/policies", &route("r", 1))).await;
    assert!(applied.starts_with("HTTP/1.1 200"), "{applied}");
    let delta = next_event(&mut stream, &mut pending, "delta").await;
    assert!(
        delta["revision"].as_u64() > snapshot["revision"].as_u64(),
        "{delta}"
    );
    assert_eq!(delta["upserts"][0]["name"], "r", "{delta}");

    // A stopping node ends the stream and closes the connection (read_to_close fails the
    // test if it stays open).
    let stopping = tokio::spawn(running.stop());
    read_to_close(&mut stream).await;
    stopping.await.expect("join").expect("stop");
}

/// Sends `body` to `path` up an upgraded watch and returns the node's answer line.
async fn ask_up(
    stream: &mut TlsStream<TcpStream>,
    pending: &mut Vec<u8>,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let mut line = serde_json::to_vec(&serde_json::json!({"path": path, "body": body}))
        .expect("encode a request line");
    line.push(b'\n');
    stream.write_all(&line).await.expect("send a request line");
    next_event(stream, pending, "answer").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_requests_up_an_upgraded_watch_are_answered_as_over_http_among_the_events() {
    let (running, _dir) = node(ControlPlaneLimits::default()).await;
    let a = credentials(&running, Kind::Node, "a").await;
    let (mut stream, head, mut pending) =
        until_upgraded(&running, &a, "the watch is upgraded once the node is ready").await;
    assert!(
        head.to_ascii_lowercase()
            .contains("hyphae-watch-uplink: agent-requests"),
        "an agent is told it may send its requests up: {head}"
    );
    next_event(&mut stream, &mut pending, "snapshot").await;
    let heartbeat = serde_json::json!({"node": "a"});
    // A leader is refused renewals until a quorum confirmed it: 503, as over HTTP.
    let answer = tokio::time::timeout(DEADLINE, async {
        loop {
            let answer = ask_up(
                &mut stream,
                &mut pending,
                "/v1/agent/heartbeat",
                heartbeat.clone(),
            )
            .await;
            if answer["status"] != 503 {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the leader is confirmed in time");
    assert_eq!(answer["status"], 404, "{answer}");
    assert_eq!(answer["body"]["code"], "unknown-node", "{answer}");

    let record =
        serde_json::json!({"name": "a", "site": "s", "address": "10.0.0.1:4143", "instances": []});
    let answer = ask_up(&mut stream, &mut pending, "/v1/agent/register", record).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert!(
        answer["body"]["ttlMs"].as_u64().is_some(),
        "a lease: {answer}"
    );
    let listed = exchange(&running, &get("/v1/nodes/a")).await;
    assert!(listed.starts_with("HTTP/1.1 200"), "registered: {listed}");
    let answer = ask_up(&mut stream, &mut pending, "/v1/agent/heartbeat", heartbeat).await;
    assert_eq!(answer["status"], 200, "{answer}");

    // The same checks as over HTTP: an agent speaks only for its own node.
    let answer = ask_up(
        &mut stream,
        &mut pending,
        "/v1/agent/heartbeat",
        serde_json::json!({"node": "b"}),
    )
    .await;
    assert_eq!(answer["status"], 403, "{answer}");
    let answer = ask_up(
        &mut stream,
        &mut pending,
        "/v1/policies",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        answer["status"], 404,
        "only the agent's registry requests: {answer}"
    );
    assert_eq!(answer["body"]["code"], "unknown-path", "{answer}");
    stream.write_all(b"hello\n").await.expect("send a bad line");
    let answer = next_event(&mut stream, &mut pending, "answer").await;
    assert_eq!(answer["status"], 400, "{answer}");

    // The stream goes on: a change still arrives, and leaving is a request like the others.
    let applied = exchange(&running, &post("/v1/policies", &route("r", 1))).await;
    assert!(applied.starts_with("HTTP/1.1 200"), "{applied}");
    let delta = next_event(&mut stream, &mut pending, "delta").await;
    assert_eq!(delta["upserts"][0]["name"], "r", "{delta}");
    let answer = ask_up(
        &mut stream,
        &mut pending,
        "/v1/agent/deregister",
        serde_json::json!({"node": "a"}),
    )
    .await;
    assert_eq!(answer["status"], 200, "{answer}");
    let listed = exchange(&running, &get("/v1/nodes/a")).await;
    assert!(listed.starts_with("HTTP/1.1 404"), "gone: {listed}");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_line_past_its_limit_or_stalled_midway_closes_the_watch_connection() {
    let (running, _dir) = node(quick(ControlPlaneLimits {
        max_agent_body_bytes: 1024,
        ..ControlPlaneLimits::default()
    }))
    .await;
    let a = credentials(&running, Kind::Node, "a").await;
    let (mut stream, _, _) =
        until_upgraded(&running, &a, "the watch is upgraded once the node is ready").await;
    // The body limit plus the envelope, and no newline.
    stream
        .write_all(&vec![b'x'; 1024 + 512 + 1])
        .await
        .expect("send a long line");
    read_to_close(&mut stream).await;

    let (mut stream, _, _) =
        until_upgraded(&running, &a, "the watch is upgraded once the node is ready").await;
    stream
        .write_all(b"{\"path\": \"/v1/agent/heartbeat\"")
        .await
        .expect("send half a line");
    // Closed after bodyReadTimeout (300 ms here); read_to_close fails the test if it stays.
    read_to_close(&mut stream).await;
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_watch_holds_its_connection_place_and_its_stream_place_until_it_ends() {
    let (running, _dir) = node(ControlPlaneLimits {
        max_connections: 1,
        reserved_member_connections: 0,
        max_watch_streams: 1,
        ..ControlPlaneLimits::default()
    })
    .await;
    let a = credentials(&running, Kind::Node, "a").await;
    let (stream, _, _) =
        until_upgraded(&running, &a, "the watch is upgraded once the node is ready").await;
    // hyper let go of the connection after the 101; its place stays taken.
    until_refused(
        &running,
        "the upgraded watch holds the only connection place",
    )
    .await;
    drop(stream);
    until_answered(&running, None, "a watch that ended gives its place back").await;
    until_upgraded(&running, &a, "and its stream's place under maxWatchStreams").await;
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_and_the_watch_streams_stay_within_their_caps() {
    let (running, _dir) = node(ControlPlaneLimits {
        max_nodes: 1,
        max_watch_streams: 2,
        ..ControlPlaneLimits::default()
    })
    .await;
    let a = credentials(&running, Kind::Node, "a").await;
    let b = credentials(&running, Kind::Node, "b").await;
    let first = exchange_as(&running, Some(&a), &registration("a")).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let again = exchange_as(&running, Some(&a), &registration("a")).await;
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "a known node registers again: {again}"
    );
    let second = exchange_as(&running, Some(&b), &registration("b")).await;
    assert_refused(&second, 422, "maxNodes");

    let mut open = Vec::new();
    while open.len() < 2 {
        let (stream, status) = watch(&running, &a).await;
        if status.starts_with("HTTP/1.1 200") {
            open.push(stream);
        } else {
            // `not-ready` until the cluster has its identity.
            assert!(status.starts_with("HTTP/1.1 503"), "{status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (_refused, status) = watch(&running, &a).await;
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    open.pop();
    tokio::time::timeout(DEADLINE, async {
        while !watch(&running, &a).await.1.starts_with("HTTP/1.1 200") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a closed stream frees its place");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_reconnecting_agents_costs_one_snapshot_encode_per_revision() {
    let (running, _dir) = node(ControlPlaneLimits::default()).await;
    let a = credentials(&running, Kind::Node, "a").await;
    // The first stream waits for the cluster's identity; the state is settled after it.
    loop {
        let (_stream, status) = watch(&running, &a).await;
        if status.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = running.node.watch.snapshot_encodes();
    let mut herd = Vec::new();
    for _ in 0..100 {
        let (stream, status) = watch(&running, &a).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        herd.push(stream);
    }
    assert_eq!(
        running.node.watch.snapshot_encodes(),
        before,
        "a hundred snapshots of one revision, no new encode"
    );
    let applied = exchange(&running, &post("/v1/policies", &route("r", 1))).await;
    assert!(applied.starts_with("HTTP/1.1 200"), "{applied}");
    for _ in 0..10 {
        let (stream, status) = watch(&running, &a).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        herd.push(stream);
    }
    assert_eq!(
        running.node.watch.snapshot_encodes(),
        before + 1,
        "one encode for the new revision"
    );
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_kept_for_members_stay_open_when_the_cap_is_reached_and_each_source_has_a_cap() {
    let limits = ControlPlaneLimits {
        max_connections: 4,
        reserved_member_connections: 1,
        header_read_timeout: hyphae_policies::Duration::from_secs(30),
        ..ControlPlaneLimits::default()
    };
    let (running, _dir) = node(limits).await;
    let member = credentials(&running, Kind::ControlPlane, "1").await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(running.address).await.expect("connect"));
    }
    // Beyond the cap, a client without a member's certificate gets no answer...
    until_refused(
        &running,
        "a non-member beyond the cap is closed without an answer",
    )
    .await;
    // ...and a member still does, on a place kept for it (once the refused client's place is
    // given back).
    until_answered(
        &running,
        Some(&member),
        "a member is answered beyond the cap",
    )
    .await;
    drop(idle);

    let (running, _dir) = node(ControlPlaneLimits {
        max_connections_per_source: 3,
        header_read_timeout: hyphae_policies::Duration::from_secs(30),
        ..ControlPlaneLimits::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(running.address).await.expect("connect"));
    }
    until_refused(&running, "a fourth connection from one address is closed").await;
    drop(idle);
    until_answered(
        &running,
        None,
        "once they close, the source is served again",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_would_outgrow_a_snapshot_are_refused_and_removals_still_work() {
    let (running, _dir) = node(ControlPlaneLimits {
        max_snapshot_bytes: 200_000,
        ..ControlPlaneLimits::default()
    })
    .await;
    // Routes of about 20 KB each: the state outgrows 90% of 200 KB within ten of them.
    let mut stored = 0;
    let refused = loop {
        let answer = exchange(
            &running,
            &post("/v1/policies", &route(&format!("r-{stored}"), 150)),
        )
        .await;
        if !answer.starts_with("HTTP/1.1 200") {
            break answer;
        }
        stored += 1;
        assert!(stored < 100, "the state never filled up");
    };
    assert_refused(&refused, 507, "maxSnapshotBytes");
    assert!(stored > 0, "some writes fit");
    let delete = format!(
        "DELETE /v1/policies/Route/r-0 HTTP/1.1\r\nhost: node\r\nauthorization: {}\r\nconnection: close\r\n\r\n",
        bearer()
    );
    let removed = exchange(&running, &delete).await;
    assert!(removed.starts_with("HTTP/1.1 200"), "{removed}");
    let again = exchange(&running, &post("/v1/policies", &route("small", 1))).await;
    assert!(again.starts_with("HTTP/1.1 200"), "room again: {again}");
    running.stop().await.expect("stop");
}
