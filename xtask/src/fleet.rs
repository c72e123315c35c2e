//! The demo fleet: a control-plane node and three agents on this machine (web-1 in eu-west
//! calling the catalog; app-1 in eu-west and app-2 in us-east hosting it). The agents register
//! their services and health, so web-1 finds the catalog by name; then traffic, a crash that
//! retries, ejection and health checks hide and heal, and an agent whose lease lapses.
//! Every process it starts is stopped when it returns, even on error.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hyphae_integration::Process;
use hyphae_integration::agent::Agent;
use hyphae_integration::cluster::Cluster;
use hyphae_integration::dns::{ipv4_of, resolver_of};
use hyphae_integration::eventually::wait_for;
use hyphae_integration::http::request;
use hyphae_integration::process::READY_PATIENCE;
use tokio::time::Instant;

/// Requests sent in each traffic round.
const ROUND: usize = 20;
/// Longest the demo waits for anything (a process to start, an ejection to end).
const PATIENCE: Duration = Duration::from_secs(30);
/// How often a wait asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often the healing wait sends another round of traffic.
const ROUND_INTERVAL: Duration = Duration::from_millis(500);
/// The catalog's ejection time in the demo policy, short so the healing is visible.
const EJECTION: &str = "3s";
/// The demo control plane's lease, short so an expiry is quick to see.
const LEASE: &str = "3s";
/// The loopback address app-1's catalog instance listens on (a host of its own).
const APP1_IP: &str = "127.0.0.2";
/// The loopback address app-2's catalog instance listens on.
const APP2_IP: &str = "127.0.0.3";

/// Runs the fleet scenario with the binaries in `bin`, keeping files under `scratch`.
pub async fn run(bin: &Path, scratch: &Path) -> Result<()> {
    let agent = &bin.join("hyphae-agent");
    let dir = scratch.join("fleet");
    crate::util::empty_dir(&dir)?;
    let mut cluster = Cluster::configure(
        &bin.join("hyphae-control-plane"),
        &dir.join("control-plane"),
        1,
        &format!("  leaseTtl: {LEASE}\n"),
    )?;
    cluster.set_log_level("error");
    cluster.start_all()?;
    cluster.leader().await?;
    let control_plane = cluster.node(1).address;
    println!("control plane: one node at {control_plane} (leaseTtl {LEASE})");

    // Two "hosts" on one machine: each catalog instance on its own loopback address, on the
    // same port, as they would be on two machines.
    let app1_catalog = Catalog::start(&dir, "app-1", "catalog v1 on app-1 (eu-west)", APP1_IP, 0)?;
    let port = app1_catalog.port;
    let _app2_catalog = Catalog::start(
        &dir,
        "app-2",
        "catalog v2 on app-2 (us-east)",
        APP2_IP,
        port,
    )?;
    let app1 = start_agent(
        agent,
        &dir,
        "app-1",
        &host_config(&dir, control_plane, "app-1", "eu-west", APP1_IP, port, "v1"),
    )?;
    let app2 = start_agent(
        agent,
        &dir,
        "app-2",
        &host_config(&dir, control_plane, "app-2", "us-east", APP2_IP, port, "v2"),
    )?;
    let web = start_agent(agent, &dir, "web-1", &web_config(&dir, control_plane))?;
    let dns = web.dns.context("web-1 should serve DNS")?;
    println!(
        "agents: web-1 (eu-west, admin {}, DNS {dns}), app-1 (eu-west, inbound {}), app-2 (us-east, inbound {})",
        web.admin, app1.inbound, app2.inbound
    );
    println!(
        "no endpoint lists and no upstream ports anywhere: the hosts register the catalog, web-1 follows the registry"
    );
    // The frontend on web-1 knows only the name: web-1's DNS server answers it with the
    // catalog's virtual IP, where web-1's agent listens.
    let name = format!("catalog.mesh:{port}");
    let catalog = wait_for(
        "catalog.mesh to resolve through web-1's DNS server",
        PATIENCE,
        POLL_INTERVAL,
        || async {
            let resolver = resolver_of(dns)?;
            ipv4_of(&resolver, "catalog.mesh.").await.first().copied()
        },
    )
    .await?;
    let upstream = SocketAddr::from((catalog, port));
    println!(
        "the frontend calls http://{name}/whoami: web-1's DNS server says catalog.mesh is {catalog} (its virtual IP, the same on every host), and web-1's agent listens at {upstream}"
    );
    wait_until(
        "both catalog instances to register and pass their checks",
        || async { Ok(passing(control_plane).await? == 2) },
    )
    .await?;
    wait_until("web-1 to receive both from the control plane", || async {
        let (_, endpoints) = http_get(web.admin, "/endpoints").await?;
        Ok(endpoints.matches("\"catalog\"").count() == 2)
    })
    .await?;
    print_registry(control_plane).await?;

    println!("\n-- traffic: {ROUND} calls from web-1 to the catalog");
    let tally = traffic(upstream).await;
    print_tally(&tally);
    ensure!(tally.failed == 0, "every call should succeed");
    ensure!(
        tally.by_site("eu-west") == ROUND,
        "calls should stay in web-1's own site"
    );

    security(&dir, control_plane, upstream, app1.inbound).await?;

    println!("\n-- failure: the catalog on app-1 crashes");
    drop(app1_catalog);
    let tally = traffic(upstream).await;
    print_tally(&tally);
    ensure!(
        tally.failed == 0,
        "retries and ejection should hide the crash from the frontend"
    );
    ensure!(
        tally.by_site("us-east") > 0,
        "calls should spill over to the other site"
    );
    println!("web-1's view of the endpoints:");
    print!("{}", http_get(web.admin, "/endpoints").await?.1);
    wait_until("app-1's health check to report the crash", || async {
        Ok(passing(control_plane).await? == 1)
    })
    .await?;
    println!("app-1's check failed; the control plane pushed it out of every caller's endpoints:");
    print_registry(control_plane).await?;

    println!(
        "\n-- healing: app-1's catalog restarts; after its {EJECTION} ejection it gets its traffic back"
    );
    // On the address and port app-1's agent was configured with.
    let _app1_catalog = Catalog::start(
        &dir,
        "app-1",
        "catalog v1 on app-1 (eu-west)",
        APP1_IP,
        port,
    )?;
    let tally = wait_for(
        "app-1 to get its traffic back",
        PATIENCE,
        ROUND_INTERVAL,
        || async {
            let tally = traffic(upstream).await;
            (tally.by_site("eu-west") == ROUND).then_some(tally)
        },
    )
    .await?;
    print_tally(&tally);

    print_registry(control_plane).await?;

    println!(
        "\n-- an agent dies: app-2's agent is killed; its lease ({LEASE}) lapses and it leaves the registry"
    );
    drop(app2);
    let killed = Instant::now();
    wait_until("app-2 to expire", || async {
        let (_, nodes) = http_get(control_plane, "/v1/nodes?stale=true").await?;
        Ok(!nodes.contains("\"app-2\""))
    })
    .await?;
    println!(
        "app-2 expired {:.1}s after it died",
        killed.elapsed().as_secs_f64()
    );
    print_registry(control_plane).await?;
    let tally = traffic(upstream).await;
    print_tally(&tally);
    ensure!(tally.failed == 0, "every call should still succeed");

    let metrics = http_get(web.admin, "/metrics").await?.1;
    println!("\nweb-1's metrics for the catalog:");
    for line in metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("hyphae_requests_total")
                || l.starts_with("hyphae_retries_total")
                || l.starts_with("hyphae_outlier_ejections_total"))
    }) {
        println!("  {line}");
    }
    Ok(())
}

/// A sample service: Python's static file server answering `/whoami`.
struct Catalog {
    /// Where it listens.
    port: u16,
    /// Stopped when dropped.
    _process: Process,
}

impl Catalog {
    /// Starts the sample service of `host` on `ip`:`port` (port 0: a free one, read from the
    /// line it prints once it listens).
    fn start(dir: &Path, host: &str, whoami: &str, ip: &str, port: u16) -> Result<Catalog> {
        let root = dir.join(format!("catalog-{host}"));
        std::fs::create_dir_all(&root).context("create the sample service's directory")?;
        std::fs::write(root.join("whoami"), format!("{whoami}\n")).context("write whoami")?;
        // `-u`: its "Serving HTTP on 127.0.0.1 port N" line is not held in a buffer.
        let (process, line) = Process::spawn_ready(
            &format!("the sample service on {host}"),
            Command::new("python3")
                .args(["-u", "-m", "http.server", &port.to_string()])
                .args(["--bind", ip, "--directory"])
                .arg(&root)
                .stderr(Stdio::null()),
            READY_PATIENCE,
        )
        .context("start python3 -m http.server (python3 is needed for the sample services)")?;
        let port = line
            .split_whitespace()
            .skip_while(|word| *word != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("the sample service on {host} said {line:?}"))?;
        Ok(Catalog {
            port,
            _process: process,
        })
    }
}

/// Writes `config` to `dir/<name>.yaml` and starts the agent `name` on it, logging errors only.
fn start_agent(agent: &Path, dir: &Path, name: &str, config: &str) -> Result<Agent> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).context("write an agent config")?;
    let agent = Agent::spawn(
        name,
        Agent::command(agent, &path).env("HYPHAE_LOG", "error"),
        &path,
    )?;
    Ok(agent)
}

/// Polls `check` every [`POLL_INTERVAL`] until it holds, for up to [`PATIENCE`]; a check that
/// fails counts as not holding yet.
async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    wait_for(what, PATIENCE, POLL_INTERVAL, || {
        let holds = check();
        async move { holds.await.unwrap_or(false).then_some(()) }
    })
    .await?;
    Ok(())
}

/// How many catalog instances the control plane lists as passing.
async fn passing(control_plane: SocketAddr) -> Result<usize> {
    let (_, body) = http_get(control_plane, "/v1/services/catalog?stale=true").await?;
    Ok(body.matches("\"passing\"").count())
}

/// Prints the registry's view of the catalog, one line per instance.
async fn print_registry(control_plane: SocketAddr) -> Result<()> {
    let (_, body) = http_get(control_plane, "/v1/services/catalog?stale=true").await?;
    let catalog: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    println!("registry (GET /v1/services/catalog):");
    for instance in catalog["instances"].as_array().into_iter().flatten() {
        println!(
            "  {:<6} {:<8} {:<16} {}",
            instance["node"].as_str().unwrap_or_default(),
            instance["site"].as_str().unwrap_or_default(),
            instance["address"].as_str().unwrap_or_default(),
            instance["health"].as_str().unwrap_or_default(),
        );
    }
    Ok(())
}

fn host_config(
    dir: &Path,
    control_plane: SocketAddr,
    node: &str,
    site: &str,
    ip: &str,
    port: u16,
    version: &str,
) -> String {
    format!(
        "kind: AgentConfig
metadata: {{name: {node}}}
spec:
  site: {site}
  controlPlane: [\"{control_plane}\"]
  dataDir: {}
  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null, virtualIps: false}}
  services:
    - name: catalog
      address: {ip}
      port: {port}
      tags: {{version: {version}}}
      check: {{http: /whoami, interval: 300ms, timeout: 250ms, rise: 1, fall: 1}}
",
        dir.join(format!("{node}-data")).display()
    )
}

fn web_config(dir: &Path, control_plane: SocketAddr) -> String {
    format!(
        "kind: AgentConfig
metadata: {{name: web-1}}
spec:
  site: eu-west
  controlPlane: [\"{control_plane}\"]
  dataDir: {}
  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: 127.0.0.1:0, dns: 127.0.0.1:0}}
---
kind: ServicePolicy
metadata: {{name: catalog}}
spec:
  timeouts: {{connect: 500ms, request: 5s}}
  retries: {{attempts: 2}}
  circuitBreaker:
    outlierDetection: {{consecutiveFailures: 2, baseEjectionTime: {EJECTION}, maxEjectedShare: 0.5}}
  loadBalancer: {{locality: prefer-site}}
",
        dir.join("web-1-data").display()
    )
}

/// Answers of one traffic round.
#[derive(Default)]
struct Tally {
    answers: Vec<String>,
    failed: usize,
}

impl Tally {
    fn by_site(&self, site: &str) -> usize {
        self.answers.iter().filter(|a| a.contains(site)).count()
    }
}

async fn traffic(upstream: SocketAddr) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..ROUND {
        match http_get(upstream, "/whoami").await {
            Ok((200, body)) => tally.answers.push(body.trim().to_string()),
            Ok(_) | Err(_) => tally.failed += 1,
        }
    }
    tally
}

fn print_tally(tally: &Tally) {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for answer in &tally.answers {
        match counts.iter_mut().find(|(a, _)| a == answer) {
            Some((_, n)) => *n += 1,
            None => counts.push((answer.clone(), 1)),
        }
    }
    for (answer, n) in counts {
        println!("  {n:>2} x {answer}");
    }
    if tally.failed > 0 {
        println!("  {:>2} x failed", tally.failed);
    }
}

/// Shows who the agents are and what that buys: each joined with a join token and the pinned
/// root (its certificate's identities), a plaintext call to an inbound port reaches nothing,
/// and an access policy lets web-1 read the catalog but not write to it.
async fn security(
    dir: &Path,
    control_plane: SocketAddr,
    upstream: SocketAddr,
    app1_inbound: SocketAddr,
) -> Result<()> {
    println!(
        "\n-- identities: each agent joined with a join token and the root's pinned fingerprint"
    );
    for node in ["web-1", "app-1", "app-2"] {
        let chain = std::fs::read_to_string(dir.join(format!("{node}-data/tls/node.pem")))
            .with_context(|| format!("{node}'s certificate"))?;
        let leaf = hyphae_policies::tls::certificates(&chain)?;
        let ids: Vec<String> = hyphae_policies::tls::identities(&leaf[0])
            .iter()
            .map(ToString::to_string)
            .collect();
        println!("  {node}: {}", ids.join(", "));
    }
    let plaintext = plaintext_answer(app1_inbound).await;
    println!(
        "a plaintext request to app-1's inbound port (mutual TLS only): {}",
        if plaintext.is_empty() {
            "refused, no answer"
        } else {
            "ANSWERED"
        }
    );
    ensure!(
        plaintext.is_empty(),
        "the inbound port must refuse plaintext"
    );

    let policy = "kind: AccessPolicy\nmetadata: {name: catalog}\nspec:\n  service: catalog\n  defaultAction: deny\n  rules:\n    - from: [{node: web-1}]\n      methods: [GET, HEAD]\n";
    println!("an AccessPolicy: the catalog takes GET and HEAD from web-1, nothing else");
    let applied = request("POST", control_plane, "/v1/policies", policy).await;
    ensure!(
        applied.is_some_and(|answer| answer.status.is_success()),
        "the access policy should apply"
    );
    wait_until("both catalog agents to enforce the policy", || async {
        let answer = request("POST", upstream, "/whoami", "x").await;
        Ok(answer.is_some_and(|answer| answer.status.as_u16() == 403))
    })
    .await?;
    let denied = request("POST", upstream, "/whoami", "x")
        .await
        .context("an answer to the POST")?;
    println!(
        "  POST from web-1: {} hyphae-error: {}",
        denied.status.as_u16(),
        denied.header("hyphae-error").unwrap_or("-")
    );
    let (status, body) = http_get(upstream, "/whoami").await?;
    println!("  GET from web-1: {status} {}", body.trim());
    ensure!(status == 200, "GET should still be allowed");
    Ok(())
}

/// What an HTTP/1.1 request in plaintext to `address` gets back (empty: nothing).
async fn plaintext_answer(address: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return String::new();
    };
    let _ = stream
        .write_all(b"GET / HTTP/1.1\r\nhost: catalog\r\nhyphae-destination: catalog\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    if text.contains("HTTP/") {
        text
    } else {
        String::new()
    }
}

/// One GET: status and body.
async fn http_get(address: SocketAddr, path: &str) -> Result<(u16, String)> {
    match request("GET", address, path, "").await {
        Some(answer) => Ok((answer.status.as_u16(), answer.text())),
        None => bail!("no HTTP response from {address}"),
    }
}
