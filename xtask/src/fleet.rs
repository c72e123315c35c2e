//! The demo fleet: a control-plane node and three agents on this machine (web-1 in eu-west
//! calling the catalog; app-1 in eu-west and app-2 in us-east hosting it). The agents register
//! their services and health, so web-1 finds the catalog by name; then traffic, a crash that
//! retries, ejection and health checks hide and heal, and an agent whose lease lapses.
//! Every process it starts is stopped when it returns, even on error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::local_cluster::LocalCluster;
use crate::util::{Processes, free_port};

/// Requests sent in each traffic round.
const ROUND: usize = 20;
/// Longest the demo waits for anything (a process to start, an ejection to end).
const PATIENCE: Duration = Duration::from_secs(30);
/// The catalog's ejection time in the demo policy, short so the healing is visible.
const EJECTION: &str = "3s";
/// The demo control plane's lease, short so an expiry is quick to see.
const LEASE: &str = "3s";

/// Runs the fleet scenario with the binaries in `bin`, keeping files under `scratch`.
pub fn run(bin: &Path, scratch: &Path) -> Result<()> {
    let agent = &bin.join("hyphae-agent");
    let dir = scratch.join("fleet");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).context("create the fleet directory")?;
    let mut processes = Processes::default();
    let cluster = LocalCluster::start_sized(
        bin,
        &dir.join("control-plane"),
        1,
        &format!("  leaseTtl: {LEASE}\n"),
    )?;
    cluster.wait_for_leader(&[1])?;
    let control_plane: SocketAddr = cluster
        .server(1)
        .parse()
        .context("the control plane's address")?;
    println!("control plane: one node at {control_plane} (leaseTtl {LEASE})");

    let (app1_port, app2_port) = (free_port()?, free_port()?);
    start_catalog(
        &mut processes,
        &dir,
        "app-1",
        "catalog v1 on app-1 (eu-west)",
        app1_port,
    )?;
    start_catalog(
        &mut processes,
        &dir,
        "app-2",
        "catalog v2 on app-2 (us-east)",
        app2_port,
    )?;
    let app1 = start_agent(
        &mut processes,
        agent,
        &dir,
        "app-1",
        &host_config(&dir, control_plane, "app-1", "eu-west", app1_port, "v1"),
    )?;
    let app2 = start_agent(
        &mut processes,
        agent,
        &dir,
        "app-2",
        &host_config(&dir, control_plane, "app-2", "us-east", app2_port, "v2"),
    )?;
    let upstream = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let web = start_agent(
        &mut processes,
        agent,
        &dir,
        "web-1",
        &web_config(&dir, control_plane, upstream),
    )?;
    println!(
        "agents: web-1 (eu-west, admin {}), app-1 (eu-west, inbound {}), app-2 (us-east, inbound {}); the frontend on web-1 calls http://{upstream} for the catalog",
        web.admin, app1.inbound, app2.inbound
    );
    println!(
        "no endpoint lists anywhere: the hosts register the catalog and web-1 follows the registry"
    );
    wait_for(
        "both catalog instances to register and pass their checks",
        || Ok(passing(control_plane)? == 2),
    )?;
    wait_for("web-1 to receive both from the control plane", || {
        let (_, endpoints) = http_get(web.admin, "/endpoints")?;
        Ok(endpoints.matches("\"catalog\"").count() == 2)
    })?;
    print_registry(control_plane)?;

    println!("\n-- traffic: {ROUND} calls from web-1 to the catalog");
    let tally = traffic(upstream)?;
    print_tally(&tally);
    ensure!(tally.failed == 0, "every call should succeed");
    ensure!(
        tally.by_site("eu-west") == ROUND,
        "calls should stay in web-1's own site"
    );

    println!("\n-- failure: the catalog on app-1 crashes");
    processes.stop("catalog-app-1");
    let tally = traffic(upstream)?;
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
    print!("{}", http_get(web.admin, "/endpoints")?.1);
    wait_for("app-1's health check to report the crash", || {
        Ok(passing(control_plane)? == 1)
    })?;
    println!("app-1's check failed; the control plane pushed it out of every caller's endpoints:");
    print_registry(control_plane)?;

    println!(
        "\n-- healing: app-1's catalog restarts; after its {EJECTION} ejection it gets its traffic back"
    );
    start_catalog(
        &mut processes,
        &dir,
        "app-1",
        "catalog v1 on app-1 (eu-west)",
        app1_port,
    )?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let tally = traffic(upstream)?;
        if tally.by_site("eu-west") == ROUND {
            print_tally(&tally);
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "app-1 never got its traffic back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    print_registry(control_plane)?;

    println!(
        "\n-- an agent dies: app-2's agent is killed; its lease ({LEASE}) lapses and it leaves the registry"
    );
    processes.stop("app-2");
    let killed = Instant::now();
    wait_for("app-2 to expire", || {
        let (_, nodes) = http_get(control_plane, "/v1/nodes?stale=true")?;
        Ok(!nodes.contains("\"app-2\""))
    })?;
    println!(
        "app-2 expired {:.1}s after it died",
        killed.elapsed().as_secs_f64()
    );
    print_registry(control_plane)?;
    let tally = traffic(upstream)?;
    print_tally(&tally);
    ensure!(tally.failed == 0, "every call should still succeed");

    let metrics = http_get(web.admin, "/metrics")?.1;
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
fn start_catalog(
    processes: &mut Processes,
    dir: &Path,
    host: &str,
    whoami: &str,
    port: u16,
) -> Result<()> {
    let root = dir.join(format!("catalog-{host}"));
    std::fs::create_dir_all(&root).context("create the sample service's directory")?;
    std::fs::write(root.join("whoami"), format!("{whoami}\n")).context("write whoami")?;
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start python3 -m http.server (python3 is needed for the sample services)")?;
    processes.add(&format!("catalog-{host}"), child);
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "the sample service on {host} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Where a started agent listens.
struct AgentAddresses {
    admin: SocketAddr,
    inbound: SocketAddr,
}

fn start_agent(
    processes: &mut Processes,
    agent: &Path,
    dir: &Path,
    name: &str,
    config: &str,
) -> Result<AgentAddresses> {
    let path: PathBuf = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).context("write an agent config")?;
    let mut child = Command::new(agent)
        .arg("--config")
        .arg(&path)
        .arg("--log-format")
        .arg("json")
        .env("HYPHAE_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("start the agent {name}"))?;
    let stdout = child.stdout.take().context("agent stdout")?;
    processes.add(name, child);
    let line = crate::util::ready_line(stdout, PATIENCE)
        .with_context(|| format!("agent {name} did not start"))?;
    let ready: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("agent {name} did not start: {line:?}"))?;
    let address = |key: &str| -> Result<SocketAddr> {
        ready["ready"][key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("agent {name} reported no {key} address"))
    };
    Ok(AgentAddresses {
        admin: address("admin")?,
        inbound: address("inbound")?,
    })
}

/// Polls `check` every 100 ms until it holds, for up to [`PATIENCE`].
fn wait_for(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if check().unwrap_or(false) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many catalog instances the control plane lists as passing.
fn passing(control_plane: SocketAddr) -> Result<usize> {
    let (_, body) = http_get(control_plane, "/v1/services/catalog?stale=true")?;
    Ok(body.matches("\"passing\"").count())
}

/// Prints the registry's view of the catalog, one line per instance.
fn print_registry(control_plane: SocketAddr) -> Result<()> {
    let (_, body) = http_get(control_plane, "/v1/services/catalog?stale=true")?;
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
  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}
  services:
    - name: catalog
      port: {port}
      tags: {{version: {version}}}
      check: {{http: /whoami, interval: 300ms, timeout: 250ms, rise: 1, fall: 1}}
",
        dir.join(format!("{node}-data")).display()
    )
}

fn web_config(dir: &Path, control_plane: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "kind: AgentConfig
metadata: {{name: web-1}}
spec:
  site: eu-west
  controlPlane: [\"{control_plane}\"]
  dataDir: {}
  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: 127.0.0.1:0, dns: null}}
  upstreams:
    - {{listen: \"{upstream}\", service: catalog}}
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

fn traffic(upstream: SocketAddr) -> Result<Tally> {
    let mut tally = Tally::default();
    for _ in 0..ROUND {
        match http_get(upstream, "/whoami") {
            Ok((200, body)) => tally.answers.push(body.trim().to_string()),
            Ok(_) | Err(_) => tally.failed += 1,
        }
    }
    Ok(tally)
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

/// A minimal HTTP/1.1 GET with `Connection: close`: status and body.
fn http_get(address: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, PATIENCE).context("connect")?;
    stream
        .set_read_timeout(Some(PATIENCE))
        .context("set timeout")?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: catalog.mesh\r\nConnection: close\r\n\r\n"
    )
    .context("send")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).context("read")?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    if status == 0 {
        bail!("no HTTP response from {address}");
    }
    Ok((status, body.to_string()))
}
