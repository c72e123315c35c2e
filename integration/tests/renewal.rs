//! Certificate renewal and root rotation with real processes and real TLS, on certificates
//! that live six seconds: agents and the control-plane node renew theirs at two thirds of their
//! life while calls flow between two agents, and not one call fails; once every first
//! certificate has expired, a new caller still reaches the host. The cluster's root rotates
//! (a new root trusted everywhere, then signing, then the old one retired) under traffic with
//! no failed call either. And agents cut off from the control plane keep calling each other on
//! the certificates they hold.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyphae_integration::agent::Agent;
use hyphae_integration::backend::TestBackend;
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cluster::{Cluster, data_dir};
use hyphae_integration::eventually;
use hyphae_integration::http::get_text;
use hyphae_integration::mesh::upstream_port;

/// How long every certificate of the test's cluster lives.
const LIFETIME: &str = "6s";
/// Longest the traffic runs while waiting for renewals.
const TRAFFIC_FOR: Duration = Duration::from_secs(20);
/// Most calls the traffic makes.
const MOST_CALLS: usize = 50_000;

/// An agent of the cluster at `server`: `web` on `port` when given, else an upstream port for
/// `web` (returned).
fn agent(dir: &Path, name: &str, server: &str, port: Option<u16>) -> (Agent, String) {
    let upstream = format!("127.0.0.1:{}", upstream_port());
    let role = match port {
        Some(port) => format!("  services:\n    - {{name: web, port: {port}}}\n"),
        None => format!("  upstreams:\n    - {{listen: \"{upstream}\", service: web}}\n"),
    };
    let agent = Agent::start_in(
        &workspace_binary("hyphae-agent"),
        dir,
        name,
        &format!(
            "kind: AgentConfig\nmetadata: {{name: {name}}}\nspec:\n  controlPlane: [\"{server}\"]\n  dataDir: {}\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n{role}",
            dir.join(format!("{name}-data")).display()
        ),
    )
    .expect("start an agent");
    (agent, upstream)
}

/// A one-node cluster with `spec` in `dir/cp`, a host agent serving `backend` as `web` and a
/// caller that reaches it through the registry, both ready: the cluster, the two agents and
/// the caller's upstream address.
async fn mesh(dir: &Path, backend: &TestBackend, spec: &str) -> (Cluster, Agent, Agent, String) {
    let cluster = Cluster::start(
        &workspace_binary("hyphae-control-plane"),
        &dir.join("cp"),
        1,
        spec,
    )
    .expect("start the control plane");
    let server = cluster.node(1).address.to_string();
    let (host, _) = agent(dir, "host", &server, Some(backend.port()));
    let (caller, upstream) = agent(dir, "caller", &server, None);
    host.wait_ready().await;
    caller.wait_ready().await;
    eventually("the caller to reach the host's web", || async {
        get_text(&upstream, "/").await == "web"
    })
    .await;
    (cluster, host, caller, upstream)
}

/// A [`mesh`] whose certificates live [`LIFETIME`], and the TLS folders of its host, its
/// caller and its control-plane node.
struct ShortLived {
    cluster: Cluster,
    _agents: (Agent, Agent),
    upstream: String,
    folders: [PathBuf; 3],
}

async fn short_lived(dir: &Path, backend: &TestBackend) -> ShortLived {
    let spec = format!("  certificates: {{lifetime: {LIFETIME}}}\n");
    let (cluster, host, caller, upstream) = mesh(dir, backend, &spec).await;
    ShortLived {
        cluster,
        _agents: (host, caller),
        upstream,
        folders: [
            dir.join("host-data/tls"),
            dir.join("caller-data/tls"),
            data_dir(&dir.join("cp"), 1).join("tls"),
        ],
    }
}

/// Calls `upstream` while `more()` says so (at most [`TRAFFIC_FOR`] and [`MOST_CALLS`]): how
/// many calls, and the answers other than `web`.
async fn traffic(upstream: &str, mut more: impl FnMut() -> bool) -> (usize, Vec<String>) {
    let started = Instant::now();
    let (mut calls, mut failures) = (0, Vec::new());
    while more() && started.elapsed() < TRAFFIC_FOR && calls < MOST_CALLS {
        let answer = get_text(upstream, "/").await;
        calls += 1;
        if answer != "web" {
            failures.push(answer);
        }
    }
    (calls, failures)
}

/// The certificate a host keeps in `tls`, as text (empty while there is none).
fn certificate(tls: &Path) -> String {
    std::fs::read_to_string(tls.join("node.pem")).unwrap_or_default()
}

/// Counts how often a file's content changes.
struct Watched {
    path: PathBuf,
    last: String,
    changes: usize,
}

impl Watched {
    fn new(path: PathBuf) -> Watched {
        Watched {
            last: certificate(&path),
            path,
            changes: 0,
        }
    }

    fn look(&mut self) {
        let now = certificate(&self.path);
        if now != self.last && !now.is_empty() {
            self.changes += 1;
            self.last = now;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_under_traffic_and_no_call_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = TestBackend::start("web").await;
    let mesh = short_lived(dir.path(), &backend).await;
    let (upstream, folders) = (mesh.upstream.clone(), mesh.folders.clone());
    let server = mesh.cluster.node(1).address.to_string();

    let mut watched = folders.map(Watched::new);
    let (calls, failures) = traffic(&upstream, || {
        watched.iter_mut().for_each(Watched::look);
        watched.iter().any(|w| w.changes < 2)
    })
    .await;
    let changes: Vec<usize> = watched.iter().map(|w| w.changes).collect();
    assert!(
        changes.iter().all(|&c| c >= 2),
        "host, caller and control-plane node each renew twice in {TRAFFIC_FOR:?}: {changes:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed during renewals: {:?}",
        failures.len(),
        failures.first()
    );

    // Every first certificate has expired by now: a new caller's handshake with the host
    // works only with the host's renewed certificate.
    let (late, late_upstream) = agent(dir.path(), "late", &server, None);
    late.wait_ready().await;
    eventually("a new caller to reach the host", || async {
        get_text(&late_upstream, "/").await == "web"
    })
    .await;
}

/// How many roots a host's TLS folder trusts.
fn roots(tls: &Path) -> usize {
    std::fs::read_to_string(tls.join("ca.pem"))
        .ok()
        .and_then(|pem| hyphae_policies::tls::certificates(&pem).ok())
        .map_or(0, |roots| roots.len())
}

/// Whether the certificate in `tls` was signed by the root `root_pem`.
fn signed_by(tls: &Path, root_pem: &str) -> bool {
    let chain = certificate(tls);
    hyphae_policies::tls::certificates(&chain)
        .ok()
        .and_then(|certs| certs.first().cloned())
        .is_some_and(|leaf| hyphae_policies::tls::signed_by(leaf.as_ref(), root_pem))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_rotates_under_traffic_and_no_call_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = TestBackend::start("web").await;
    let mesh = short_lived(dir.path(), &backend).await;
    let (upstream, folders) = (mesh.upstream.clone(), mesh.folders.clone());
    let server = mesh.cluster.node(1).address.to_string();

    // Calls flow the whole time; each step waits for every host.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (stop, upstream) = (std::sync::Arc::clone(&stop), upstream.clone());
        async move {
            traffic(&upstream, || {
                !stop.load(std::sync::atomic::Ordering::Relaxed)
            })
            .await
        }
    });
    let cli = workspace_binary("hyphae");
    // Each step after `add` is refused for a minute, the time every host takes to follow;
    // this test watches every host's folder instead, and forces the step once they have.
    let rotate = |step: &str| {
        let output =
            hyphae_integration::cli::hyphae(&cli, &server, &["ca", "rotate", step, "--force"])
                .expect("run hyphae");
        assert!(output.success(), "{step}: {}", output.text);
    };
    let output = hyphae_integration::cli::hyphae(&cli, &server, &["ca", "rotate", "add"])
        .expect("run hyphae");
    assert!(output.success(), "add: {}", output.text);
    let early = hyphae_integration::cli::hyphae(&cli, &server, &["ca", "rotate", "activate"])
        .expect("run hyphae");
    assert!(
        !early.success() && early.text.contains("every host has followed"),
        "activate right after add is refused: {}",
        early.text
    );
    eventually("every host to trust both roots", || async {
        folders.iter().all(|tls| roots(tls) == 2)
    })
    .await;
    // The operator's own tools take the new set of roots too (`hyphae ca --pem`), before the
    // new root signs anything.
    mesh.cluster.trust().expect("the cluster's roots, both");
    rotate("activate");
    let new_root = hyphae_integration::http::get_json(&server, "/v1/ca")
        .await
        .and_then(|ca| ca["certPem"].as_str().map(str::to_string))
        .expect("the new signing root");
    eventually("every host to renew onto the new root", || async {
        folders.iter().all(|tls| signed_by(tls, &new_root))
    })
    .await;
    rotate("retire");
    eventually("every host to trust only the new root", || async {
        folders.iter().all(|tls| roots(tls) == 1)
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, failures) = traffic.await.expect("the traffic task");
    assert!(calls > 0, "calls flowed during the rotation");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed during the rotation: {:?}",
        failures.len(),
        failures.first()
    );

    // A host joining now pins the new root (`hyphae ca` prints its fingerprint).
    mesh.cluster.trust().expect("the cluster's new root");
    let (late, late_upstream) = agent(dir.path(), "late", &server, None);
    late.wait_ready().await;
    eventually("a new caller to reach the host", || async {
        get_text(&late_upstream, "/").await == "web"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_cut_off_from_the_control_plane_keep_serving_on_their_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = TestBackend::start("web").await;
    let (mut cluster, _host, caller, upstream) = mesh(dir.path(), &backend, "").await;

    cluster.node_mut(1).kill();
    let mut failures = Vec::new();
    for _ in 0..200 {
        let answer = get_text(&upstream, "/").await;
        if answer != "web" {
            failures.push(answer);
        }
    }
    assert!(
        failures.is_empty(),
        "calls fail without the control plane: {:?}",
        failures.first()
    );
    let left = caller.metric("hyphae_certificate_expiry_seconds", "").await;
    assert!(left > 0.0, "the certificate still has {left} s to live");
}
