//! Issue 13 end to end, namespaced: a 3-node control plane and agents on four hosts in two
//! sites, each host a network namespace of its own (so each agent owns the virtual IPs on its
//! own `lo`), joined by a bridge in a namespace of its own. Unmodified clients (`curl`,
//! `getent`, bash's `/dev/tcp`) run inside a host through `ip netns exec` and reach services
//! by name, the host's resolver pointed at its agent; nothing is sent from the root namespace.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hyphae_integration::agent::Agent;
use hyphae_integration::binaries::workspace_binary;
use hyphae_integration::cli;
use hyphae_integration::cluster::{Cluster, SHORT_WRITE_TIMEOUT};
use hyphae_integration::eventually::wait_for;
use hyphae_integration::http::metric_in;
use hyphae_integration::netns::{self, Namespaces};
use hyphae_integration::process::{Process, READY_PATIENCE};
use hyphae_integration::{DEADLINE, eventually};
use hyphae_policies::VirtualIpRange;
use tokio::time::Instant;

/// The control plane's nodes, all in the `cp` namespace, one port each.
const CONTROL_PLANE_PORTS: [u16; 3] = [7001, 7002, 7003];
/// Where every agent takes calls from peers, on its host's bridge address (each namespace has
/// ports of its own, so fixed ports never collide).
const INBOUND_PORT: u16 = 4143;
/// Where every agent's admin endpoint listens, inside its host.
const ADMIN: &str = "127.0.0.1:4191";
/// Where every agent answers DNS inside its host: port 53, where the host's resolver asks.
const DNS: &str = "127.0.0.1:53";
/// The port `payments` listens on, on both hosts that run it.
const PAYMENTS_PORT: u16 = 8080;
/// The port of the line echo on host C.
const ECHO_PORT: u16 = 7007;
/// The port of the HTTP server outside the mesh (on the `up` host) the external services name.
const EXTERNAL_PORT: u16 = 8081;
/// The name outside the mesh the upstream DNS server knows.
const OUTSIDE_NAME: &str = "example.test";
/// Longest one client command may run (each also bounds itself).
const CLIENT_PATIENCE: Duration = Duration::from_secs(5);
/// How often a wait asks again.
const POLL: Duration = Duration::from_millis(20);
/// Requests sent from A while its site's only `payments` instance goes away, at most.
const FAILOVER_REQUESTS: usize = 200;
/// Answers in a row from site-2 that show traffic has moved there.
const SETTLED: usize = 10;

/// A script of this test's peers (`tests/transparency/`).
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/transparency")
        .join(name)
}

/// Starts `python3 script args...` on host `label`, waiting for its "ready" line.
fn peer(net: &Namespaces, label: &str, name: &str, args: &[&str]) -> Process {
    let mut command = net.command(label, "python3");
    command.arg(script(name)).args(args).stdin(Stdio::null());
    let (process, line) =
        Process::spawn_ready(&format!("{name} on {label}"), &mut command, READY_PATIENCE)
            .unwrap_or_else(|e| panic!("start {name} on {label}: {e}"));
    assert_eq!(line.trim(), "ready", "{name} on {label}");
    process
}

/// Starts the agent of host `label` in `site`, hosting `services` (flow-style YAML entries),
/// its DNS forwarding other names to `upstream`.
fn agent(
    net: &Namespaces,
    dir: &Path,
    label: &str,
    site: &str,
    control_plane: &[SocketAddr],
    upstream: Ipv4Addr,
    services: &[String],
) -> Agent {
    let name = format!("host-{label}");
    let members: Vec<String> = control_plane.iter().map(|a| format!("\"{a}\"")).collect();
    let services: String = if services.is_empty() {
        String::new()
    } else {
        let entries: String = services.iter().map(|s| format!("    - {s}\n")).collect();
        format!("  services:\n{entries}")
    };
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "kind: AgentConfig\nmetadata: {{name: {name}}}\nspec:\n  site: {site}\n  controlPlane: [{}]\n  dataDir: {}\n  listeners: {{admin: \"{ADMIN}\", inbound: \"{}:{INBOUND_PORT}\", httpProxy: null, dns: \"{DNS}\"}}\n  dns: {{upstreams: [\"{upstream}:53\"]}}\n{services}",
            members.join(", "),
            dir.join(format!("{name}-data")).display(),
            net.host(label).address,
        ),
    )
    .expect("write an agent config");
    let command = Agent::command(&workspace_binary("hyphae-agent"), &config);
    let mut inside = netns::moved_into(&net.host(label).namespace, &command);
    let agent = Agent::spawn(&name, &mut inside, &config)
        .unwrap_or_else(|e| panic!("start the agent of {label}: {e}"));
    // Programs started on the host resolve names through its agent, as after the one-line
    // setup the README gives hosts without systemd-resolved.
    net.resolve_through(label, Ipv4Addr::LOCALHOST)
        .expect("point the host's resolver at its agent");
    agent
}

/// Runs `program args...` on host `label` to completion; its stdout when it succeeded, else
/// why not (its stderr).
async fn try_on(
    net: &Namespaces,
    label: &str,
    program: &str,
    args: &[&str],
) -> Result<String, String> {
    let mut command: Command = net.command(label, program);
    command.args(args).stdin(Stdio::null());
    let output = tokio::time::timeout(
        CLIENT_PATIENCE,
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .map_err(|_| format!("{program} ran over {CLIENT_PATIENCE:?}"))?
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// Like [`try_on`], without the reason.
async fn run_on(net: &Namespaces, label: &str, program: &str, args: &[&str]) -> Option<String> {
    try_on(net, label, program, args).await.ok()
}

/// The IPv4 address `name` resolves to on host `label` (glibc's resolver, as any program's).
async fn resolve(net: &Namespaces, label: &str, name: &str) -> Option<Ipv4Addr> {
    let out = run_on(net, label, "getent", &["ahostsv4", name]).await?;
    out.split_whitespace().next()?.parse().ok()
}

/// The body `curl http://<authority>/` gets on host `label`, or what curl said.
async fn try_curl(net: &Namespaces, label: &str, authority: &str) -> Result<String, String> {
    let url = format!("http://{authority}/");
    try_on(net, label, "curl", &["-sSf", "--max-time", "3", &url]).await
}

/// Like [`try_curl`]; `None` on any failure.
async fn curl(net: &Namespaces, label: &str, authority: &str) -> Option<String> {
    try_curl(net, label, authority).await.ok()
}

/// Sends `line` to `host:port` with bash's `/dev/tcp` on host `label` and reads one line back.
async fn echo(net: &Namespaces, label: &str, host: &str, port: u16, line: &str) -> Option<String> {
    let script = format!("exec 3<>/dev/tcp/{host}/{port} && echo \"$0\" >&3 && head -n1 <&3");
    let out = run_on(net, label, "timeout", &["3", "bash", "-c", &script, line]).await?;
    Some(out.trim_end().to_string())
}

/// The virtual IP the control plane at `server` gave `service` (`hyphae services`).
async fn virtual_ip(server: &str, service: &str) -> Option<Ipv4Addr> {
    let server = server.to_string();
    let listed = tokio::task::spawn_blocking(move || {
        cli::hyphae(
            &workspace_binary("hyphae"),
            server,
            &["services", "-o", "json"],
        )
    })
    .await
    .ok()?
    .ok()?;
    let services: serde_json::Value = serde_json::from_str(&listed.text).ok()?;
    services.as_array()?.iter().find(|s| s["name"] == service)?["virtualIp"]
        .as_str()?
        .parse()
        .ok()
}

/// Applies `yaml` on the control plane at `server` with `hyphae apply`.
fn apply(dir: &Path, server: &str, name: &str, yaml: &str) {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("write a policy file");
    let file = file.display().to_string();
    let applied = cli::hyphae(&workspace_binary("hyphae"), server, &["apply", "-f", &file])
        .expect("run hyphae apply");
    assert!(applied.success(), "hyphae apply {name}: {}", applied.text);
}

/// An `ExternalService` called `name` at the HTTP server on `address`.
fn external(name: &str, address: Ipv4Addr) -> String {
    format!(
        "kind: ExternalService\nmetadata: {{name: {name}}}\nspec:\n  addresses: [{address}]\n  ports: [{{port: {EXTERNAL_PORT}, protocol: http}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_hosts_reach_services_by_name_across_sites_and_ride_out_failures() {
    if let Some(why) = netns::unavailable() {
        eprintln!("skipped: {why} (this test makes network namespaces; CI runs it as root)");
        return;
    }
    let started = Instant::now();
    // Declared first, so it is dropped last: after every process in the namespaces is gone.
    let net = Namespaces::create(&["cp", "a", "b", "c", "d", "up"]).expect("make the namespaces");
    let dir = tempfile::tempdir().expect("temp dir");
    let up = net.host("up").address;

    // 1. A 3-node control plane in its own namespace, four hosts in two sites.
    let cp = net.host("cp");
    let members: Vec<SocketAddr> = CONTROL_PLANE_PORTS
        .iter()
        .map(|&port| SocketAddr::from((cp.address, port)))
        .collect();
    let mut nodes = Cluster::configure_in(
        &workspace_binary("hyphae-control-plane"),
        &dir.path().join("cp"),
        Some(&cp.namespace),
        &members,
        SHORT_WRITE_TIMEOUT,
    )
    .expect("configure the control plane");
    nodes.start_all().expect("start the control plane");
    let server = members[0].to_string();

    let outside_address = Ipv4Addr::new(10, 200, up.octets()[2], 77);
    let _dns_upstream = peer(
        &net,
        "up",
        "dns_upstream.py",
        &[&up.to_string(), OUTSIDE_NAME, &outside_address.to_string()],
    );
    let _external = peer(
        &net,
        "up",
        "named_http.py",
        &["external", &EXTERNAL_PORT.to_string(), &up.to_string()],
    );
    let payments_port = PAYMENTS_PORT.to_string();
    let mut payments_b = Some(peer(&net, "b", "named_http.py", &["b", &payments_port]));
    let _payments_d = peer(&net, "d", "named_http.py", &["d", &payments_port]);
    let _echo_c = peer(&net, "c", "line_echo.py", &[&ECHO_PORT.to_string()]);

    let payments = format!(
        "{{name: payments, port: {PAYMENTS_PORT}, check: {{http: /healthz, interval: 200ms, timeout: 150ms, rise: 1, fall: 1}}}}"
    );
    let echo_service = format!("{{name: echo, port: {ECHO_PORT}, protocol: tcp}}");
    let start = |label: &str, site: &str, services: &[String]| {
        agent(&net, dir.path(), label, site, &members, up, services)
    };
    let _agent_a = start("a", "site-1", &[]);
    let _agent_b = start("b", "site-1", std::slice::from_ref(&payments));
    let mut agent_c = start("c", "site-2", &[echo_service]);
    let mut agent_d = start("d", "site-2", std::slice::from_ref(&payments));

    // 2. On A, `payments.mesh` resolves through A's agent to the address the control plane
    // gave payments, and plain `curl http://payments.mesh:8080/` reaches B, in A's own site.
    let payments_ip = wait_for("payments to get a virtual IP", DEADLINE, POLL, || {
        virtual_ip(&server, "payments")
    })
    .await
    .expect("a virtual IP for payments");
    eventually("payments.mesh to resolve on A", || async {
        resolve(&net, "a", "payments.mesh").await == Some(payments_ip)
    })
    .await;
    let payments_at = format!("payments.mesh:{PAYMENTS_PORT}");
    eventually("payments to answer by name on A", || async {
        curl(&net, "a", &payments_at).await.is_some()
    })
    .await;
    // Site-2's instance can reach A's snapshot a moment before B does; once B answers, every
    // call must stay with it.
    eventually("B to answer A's calls", || async {
        curl(&net, "a", &payments_at).await.as_deref() == Some("b")
    })
    .await;
    for _ in 0..SETTLED {
        assert_eq!(
            curl(&net, "a", &payments_at).await.as_deref(),
            Some("b"),
            "A's calls stay in site-1 while B serves"
        );
    }
    assert_eq!(
        resolve(&net, "a", "nothing-here.mesh").await,
        None,
        "an unknown mesh name does not resolve"
    );

    // 3. An opaque TCP protocol (a line echo on C) by name.
    eventually("a line to come back from echo.mesh on A", || async {
        echo(&net, "a", "echo.mesh", ECHO_PORT, "hello across hosts")
            .await
            .as_deref()
            == Some("hello across hosts")
    })
    .await;

    // 4. A name outside the mesh is forwarded to the host's upstream resolver.
    assert_eq!(
        resolve(&net, "a", OUTSIDE_NAME).await,
        Some(outside_address),
        "{OUTSIDE_NAME} through A's agent and the upstream on `up`"
    );

    // 5. Site-1's only payments instance dies: A's calls move to site-2.
    drop(payments_b.take());
    let mut failures = 0;
    let mut in_a_row = 0;
    let mut sent = 0;
    let failover = Instant::now();
    while sent < FAILOVER_REQUESTS && in_a_row < SETTLED {
        sent += 1;
        match try_curl(&net, "a", &payments_at).await.as_deref() {
            Ok("d") => in_a_row += 1,
            Ok(_) => in_a_row = 0,
            Err(why) => {
                eprintln!("failover: call {sent} failed: {why}");
                failures += 1;
                in_a_row = 0;
            }
        }
    }
    let failover = failover.elapsed();
    eprintln!(
        "failover: {failures} failed of {sent} requests; traffic settled on D after {failover:?}"
    );
    assert_eq!(in_a_row, SETTLED, "A's calls end up on D ({sent} sent)");
    // A call whose try fails on B (site-1's only instance, its instance gone: the try never
    // reached an application) is retried, and the retry leaves the site once every endpoint
    // in it was tried: no call fails while A learns that B is gone. The default retry budget
    // allows that many retries.
    assert_eq!(
        failures, 0,
        "{failures} of {sent} calls failed while payments moved to site-2"
    );

    let sites_url = format!("http://{ADMIN}/sites");
    let sites: serde_json::Value = serde_json::from_str(
        &run_on(&net, "a", "curl", &["-sSf", "--max-time", "3", &sites_url])
            .await
            .expect("A's /sites"),
    )
    .expect("/sites is JSON");
    let serving = |site: &str| {
        sites.as_array().and_then(|all| {
            all.iter()
                .find(|s| s["service"] == "payments" && s["site"] == site)
                .and_then(|s| s["serving"].as_bool())
        })
    };
    assert_eq!(serving("site-2"), Some(true), "A's /sites: {sites}");

    // 6. Site-2 loses the control plane: it keeps serving from what it last knew, and a
    // change made meanwhile reaches it once the link is back, with no restart.
    let site_2 = [net.host("c").address, net.host("d").address];
    for host in site_2 {
        net.ip("cp", &["route", "add", "blackhole", &format!("{host}/32")])
            .expect("cut site-2 off the control plane");
    }
    apply(dir.path(), &server, "ledger", &external("ledger", up));
    // External services are not in `hyphae services`: A, still connected, says where it is.
    let ledger_ip = wait_for("ledger.mesh to resolve on A", DEADLINE, POLL, || {
        resolve(&net, "a", "ledger.mesh")
    })
    .await
    .expect("ledger.mesh on A");
    assert!(
        "127.64.0.0/10"
            .parse::<VirtualIpRange>()
            .expect("the default block")
            .contains(ledger_ip),
        "ledger.mesh is {ledger_ip}, outside the virtual IP block"
    );
    assert_eq!(
        resolve(&net, "c", "ledger.mesh").await,
        None,
        "C is cut off: it has not heard of ledger"
    );
    assert_eq!(
        curl(&net, "c", &payments_at).await.as_deref(),
        Some("d"),
        "C still reaches payments while cut off"
    );
    assert_eq!(
        echo(&net, "d", "echo.mesh", ECHO_PORT, "still here")
            .await
            .as_deref(),
        Some("still here"),
        "D still reaches echo on C while cut off"
    );
    for host in site_2 {
        net.ip("cp", &["route", "del", "blackhole", &format!("{host}/32")])
            .expect("restore site-2's link");
    }
    let ledger_at = format!("ledger.mesh:{EXTERNAL_PORT}");
    for label in ["c", "d"] {
        eventually(
            &format!("ledger.mesh to resolve on {label} after the cut"),
            || async { resolve(&net, label, "ledger.mesh").await == Some(ledger_ip) },
        )
        .await;
        eventually(
            &format!("ledger to answer by name on {label} after the cut"),
            || async { curl(&net, label, &ledger_at).await.as_deref() == Some("external") },
        )
        .await;
    }
    assert!(
        agent_c.process().try_exit().is_none(),
        "C's agent never restarted"
    );
    assert!(
        agent_d.process().try_exit().is_none(),
        "D's agent never restarted"
    );

    // 7. A new service applied on the control plane, reachable by name from every host.
    let applied = Instant::now();
    apply(dir.path(), &server, "audit", &external("audit", up));
    let audit_at = format!("audit.mesh:{EXTERNAL_PORT}");
    let reachable = |label: &'static str| {
        let (net, audit_at) = (&net, &audit_at);
        async move {
            wait_for(
                &format!("audit to answer by name on {label}"),
                DEADLINE,
                POLL,
                || async {
                    (curl(net, label, audit_at).await.as_deref() == Some("external"))
                        .then(|| applied.elapsed())
                },
            )
            .await
            .unwrap_or_else(|timed_out| panic!("{timed_out}"))
        }
    };
    let times = tokio::join!(
        reachable("a"),
        reachable("b"),
        reachable("c"),
        reachable("d")
    );
    let times = [times.0, times.1, times.2, times.3];
    let slowest = times.iter().max().copied().unwrap_or_default();
    eprintln!(
        "a new service was reachable by name from every host {slowest:?} from the start of `hyphae apply` (per host: {times:?})"
    );
    // Egress is the mesh's like any call: A's agent counts the calls to the external service
    // (its admin port is inside A, so it is read from there).
    let metrics_url = format!("http://{ADMIN}/metrics");
    let page = run_on(
        &net,
        "a",
        "curl",
        &["-sSf", "--max-time", "3", &metrics_url],
    )
    .await
    .expect("A's metrics");
    assert!(
        metric_in(&page, "hyphae_requests_total", r#"service="audit""#) >= 1.0,
        "A's agent counts its calls to audit"
    );
    eprintln!("the test ran for {:?}", started.elapsed());
}
