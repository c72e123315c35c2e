//! `cargo xtask bench proxy`: the agent's data path against haproxy and nginx on this machine —
//! same backend, same load generator, one thread each — printed as a table and written to
//! `target/bench/proxy.json`. A benchmark, not a test: `cargo test` never runs it and it never
//! fails because something is slow, only because something is broken.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::util;

mod push;

/// Where generated configs, logs, raw load-generator output and `proxy.json` go, under the
/// workspace root.
const BENCH_DIR: &str = "target/bench";
/// Seconds of measured load per row unless `--duration` says otherwise.
const DEFAULT_DURATION_SECS: u64 = 10;
/// Concurrent client connections unless `--connections` says otherwise.
const DEFAULT_CONNECTIONS: u32 = 50;
/// Most `--connections` accepted: every proxy below is configured for several times this many.
const MAX_CONNECTIONS: u32 = 1000;
/// Load-generator threads: one, so the client takes the same share of the machine in every row.
const LOAD_THREADS: u32 = 1;
/// HTTP/2 streams per connection in the h2 rows: one, so as many requests are in flight as in
/// the HTTP/1.1 rows.
const H2_STREAMS_PER_CONNECTION: u32 = 1;
/// Agent worker threads, haproxy threads, nginx worker processes: one each, so every proxy
/// works with one core.
const PROXY_THREADS: u32 = 1;
/// Worker processes of the backend nginx.
const BACKEND_WORKERS: u32 = 1;
/// Unmeasured load before each row, so connections and pools are open and warm.
const WARMUP: Duration = Duration::from_secs(1);
/// Per-request timeout of wrk: a stalled request counts as an error instead of hanging.
const WRK_REQUEST_TIMEOUT: &str = "5s";
/// Longest a process may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a process may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often start and stop waits poll.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Timeout of one readiness request.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections each haproxy and nginx process accepts (clients and backend together).
const PROXY_MAX_CONNECTIONS: u32 = 4 * MAX_CONNECTIONS;
/// Idle kept-alive connections nginx keeps to the backend.
const NGINX_UPSTREAM_IDLE: u32 = MAX_CONNECTIONS;
/// Requests on one kept-alive connection before nginx closes it: effectively unlimited, as in
/// haproxy and the agent, so no row pays for reconnects.
const KEEPALIVE_REQUESTS: u32 = 1_000_000;
/// haproxy's connect timeout to the backend.
const HAPROXY_CONNECT_TIMEOUT: &str = "5s";
/// haproxy's and nginx's idle timeout on client and backend connections.
const PROXY_IDLE_TIMEOUT: &str = "60s";
/// The agents' drain deadline, so stopping them does not wait for the default 30 s.
const AGENT_DRAIN_TIMEOUT: &str = "1s";
/// Log level of the agents (stderr, into `target/bench/`).
const AGENT_LOG_LEVEL: &str = "warn";
/// The site every bench agent is in.
const AGENT_SITE: &str = "bench";
/// The service name the agents give the backend.
const SERVICE: &str = "backend";
/// What the backend answers to every request.
const BACKEND_BODY: &str = "hello from the bench backend";
/// Programs the bench drives and the Debian packages that hold them.
const TOOLS: [(&str, &str); 4] = [
    ("haproxy", "haproxy"),
    ("nginx", "nginx"),
    ("wrk", "wrk"),
    ("h2load", "nghttp2-client"),
];
/// Where root's programs live when `PATH` lacks them (haproxy and nginx are in `/usr/sbin`).
const SYSTEM_BIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

const USAGE: &str = "usage: cargo xtask bench proxy [--duration SECS] [--connections N]

Starts a backend (nginx, `return 200`), the agent (release build, 1 worker thread), haproxy and
nginx (1 thread / 1 worker each), drives every path with the same load (wrk for HTTP/1.1, h2load
for HTTP/2), prints a table and writes target/bench/proxy.json. Configs and logs go to
target/bench/.

options:
  --duration SECS    measured seconds per row (default 10)
  --connections N    concurrent client connections (default 50, at most 1000)";

/// Runs `cargo xtask bench <what>`.
pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("proxy") => proxy(&args[1..]),
        Some("push") => push::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}\n\n{}", push::USAGE);
            Ok(())
        }
        Some(other) => bail!("unknown benchmark `{other}`: `proxy` or `push`"),
        None => bail!("which benchmark? `proxy` or `push`"),
    }
}

/// What the command line asked for.
#[derive(Clone, Copy, Debug)]
struct Options {
    /// Measured load per row.
    duration: Duration,
    /// Concurrent client connections.
    connections: u32,
}

impl Options {
    /// Parses `--duration SECS` and `--connections N`; `None` for `--help`.
    fn parse(args: &[String]) -> Result<Option<Options>> {
        let mut options = Options {
            duration: Duration::from_secs(DEFAULT_DURATION_SECS),
            connections: DEFAULT_CONNECTIONS,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
            };
            match arg.as_str() {
                "--duration" => {
                    let text = value("--duration")?;
                    let secs: u64 = text
                        .parse()
                        .with_context(|| format!("--duration `{text}` is not whole seconds"))?;
                    ensure!(secs > 0, "--duration must be at least 1 second");
                    options.duration = Duration::from_secs(secs);
                }
                "--connections" => {
                    let text = value("--connections")?;
                    let connections: u32 = text
                        .parse()
                        .with_context(|| format!("--connections `{text}` is not a number"))?;
                    ensure!(
                        (LOAD_THREADS..=MAX_CONNECTIONS).contains(&connections),
                        "--connections must be between {LOAD_THREADS} and {MAX_CONNECTIONS}"
                    );
                    options.connections = connections;
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                other => bail!("unknown option `{other}`\n\n{USAGE}"),
            }
        }
        Ok(Some(options))
    }
}

/// `cargo xtask bench proxy`.
fn proxy(args: &[String]) -> Result<()> {
    let Some(options) = Options::parse(args)? else {
        return Ok(());
    };
    let tools = Tools::ensure()?;
    util::run(util::cargo().args(["build", "--release", "--quiet", "-p", "hyphae-agent"]))?;
    let root = util::root();
    let dir = root.join(BENCH_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let mut backend_processes = Processes::default();
    let backend = Backend::start(&tools, &dir, &mut backend_processes)?;
    let bench = Bench {
        options,
        agent: root.join("target/release/hyphae-agent"),
        tools,
        ticks_per_second: clock_ticks()?,
        backend,
        dir,
    };
    let mut rows = Vec::new();
    for protocol in Protocol::ALL {
        for setup in Setup::ALL {
            rows.push(bench.measure(setup, protocol)?);
        }
    }
    drop(backend_processes);

    print!("{}", report(&bench, &rows));
    let json_file = bench.dir.join("proxy.json");
    let text = serde_json::to_string_pretty(&bench.json(&rows)).context("encode proxy.json")?;
    fs::write(&json_file, text + "\n").with_context(|| format!("write {}", json_file.display()))?;
    println!("\nwrote {}", relative(&json_file));
    Ok(())
}

/// The programs the bench runs, found on this machine.
struct Tools {
    /// haproxy, one of the two proxies the agent is compared with.
    haproxy: PathBuf,
    /// nginx: the backend, and the other proxy.
    nginx: PathBuf,
    /// The HTTP/1.1 load generator.
    wrk: PathBuf,
    /// The HTTP/2 load generator (from nghttp2).
    h2load: PathBuf,
}

impl Tools {
    /// Finds the tools, installing the missing ones from apt first (`apt-get update` once).
    fn ensure() -> Result<Tools> {
        let missing: Vec<&str> = TOOLS
            .iter()
            .filter(|(program, _)| find_program(program).is_none())
            .map(|(_, package)| *package)
            .collect();
        if !missing.is_empty() {
            eprintln!("xtask: installing {} for the bench", missing.join(" "));
            let apt = || {
                let mut command = Command::new("apt-get");
                // Progress to stderr, so stdout holds only the report.
                command
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdout(std::io::stderr());
                command
            };
            util::run(apt().arg("update")).context("apt-get update (this needs root)")?;
            util::run(apt().args(["install", "-y"]).args(&missing))
                .context("apt-get install (this needs root)")?;
        }
        let require = |program: &str| {
            find_program(program)
                .with_context(|| format!("`{program}` is still not on PATH after installing it"))
        };
        Ok(Tools {
            haproxy: require("haproxy")?,
            nginx: require("nginx")?,
            wrk: require("wrk")?,
            h2load: require("h2load")?,
        })
    }
}

/// The executable `program` on `PATH` or in the system directories.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SYSTEM_BIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Everything a row needs: settings, programs, the shared backend, the output folder.
struct Bench {
    /// The command line.
    options: Options,
    /// haproxy, nginx and the load generators.
    tools: Tools,
    /// The release build of `hyphae-agent`.
    agent: PathBuf,
    /// Unit of the CPU times in `/proc/PID/stat`.
    ticks_per_second: f64,
    /// The backend, running for the whole bench.
    backend: Backend,
    /// `target/bench/`, absolute.
    dir: PathBuf,
}

/// The backend every row ends at: nginx answering `return 200` on HTTP/1.1 and h2c.
struct Backend {
    /// Its HTTP/1.1 listener, which every proxy forwards to.
    http1: SocketAddr,
    /// Its h2c listener, for the direct HTTP/2 row.
    http2: SocketAddr,
    /// The nginx master (its worker is found through `/proc`).
    pid: u32,
}

impl Backend {
    /// Starts the backend nginx and waits until it answers.
    fn start(tools: &Tools, dir: &Path, processes: &mut Processes) -> Result<Backend> {
        let (http1, http2) = (free_address()?, free_address()?);
        let location =
            format!("default_type text/plain;\n            return 200 \"{BACKEND_BODY}\\n\";");
        let site = NginxSite {
            name: "backend",
            purpose: "the backend every row ends at",
            workers: BACKEND_WORKERS,
            listen: (http1, http2),
            http_extra: "",
            location: &location,
        };
        let pid = site.start(tools, dir, processes)?;
        Ok(Backend { http1, http2, pid })
    }
}

/// HTTP/1.1 driven by wrk, or HTTP/2 (prior knowledge, cleartext) driven by h2load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// HTTP/1.1, keep-alive, driven by wrk.
    Http1,
    /// HTTP/2 with prior knowledge over cleartext, driven by h2load.
    Http2,
}

impl Protocol {
    /// Every protocol, in table order.
    const ALL: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

    /// Short name for the table, file names and JSON.
    fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::Http2 => "h2",
        }
    }

    /// The program that drives it.
    fn load_generator(self) -> &'static str {
        match self {
            Protocol::Http1 => "wrk",
            Protocol::Http2 => "h2load",
        }
    }
}

/// One way from the client to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// No proxy: the baseline.
    Direct,
    /// One agent process: its upstream port leads to a static service whose endpoint is the
    /// same agent's inbound listener, which hosts the backend. Both halves of the mesh path
    /// (outbound, the HTTP/2 tunnel, inbound) run in one process on one thread.
    OneAgent,
    /// The real mesh path: a caller agent, an HTTP/2 tunnel, the host agent in front of the
    /// backend.
    Mesh,
    /// haproxy as a reverse proxy.
    Haproxy,
    /// nginx as a reverse proxy.
    Nginx,
}

impl Setup {
    /// Every setup, in table order.
    const ALL: [Setup; 5] = [
        Setup::Direct,
        Setup::OneAgent,
        Setup::Mesh,
        Setup::Haproxy,
        Setup::Nginx,
    ];

    /// Name for the table and JSON.
    fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::OneAgent => "hyphae 1 agent",
            Setup::Mesh => "hyphae mesh",
            Setup::Haproxy => "haproxy",
            Setup::Nginx => "nginx",
        }
    }

    /// A file-name-friendly form of the name.
    fn slug(self) -> String {
        self.name().replace(' ', "-")
    }

    /// The way a request takes, for the legend and JSON.
    fn path(self) -> &'static str {
        match self {
            Setup::Direct => "client -> backend",
            Setup::OneAgent => {
                "client -> agent upstream port -> h2 tunnel to the same agent's inbound -> backend"
            }
            Setup::Mesh => "client -> caller agent -> h2 tunnel -> host agent -> backend",
            Setup::Haproxy => "client -> haproxy -> backend (http-reuse always)",
            Setup::Nginx => "client -> nginx proxy_pass (upstream keepalive) -> backend",
        }
    }
}

/// What a row drives load at: the processes in the way and their addresses.
struct Target {
    /// Everything the setup started; dropping it stops them.
    processes: Processes,
    /// The proxy processes (children such as nginx workers are found when measuring).
    proxies: Vec<u32>,
    /// Where HTTP/1.1 load goes.
    http1: SocketAddr,
    /// Where HTTP/2 load goes.
    http2: SocketAddr,
}

impl Target {
    /// Where load over `protocol` goes.
    fn address(&self, protocol: Protocol) -> SocketAddr {
        match protocol {
            Protocol::Http1 => self.http1,
            Protocol::Http2 => self.http2,
        }
    }
}

/// One line of the table.
struct Row {
    /// The way requests took.
    setup: Setup,
    /// The protocol the client spoke.
    protocol: Protocol,
    /// What the load generator measured.
    load: Load,
    /// What the proxies consumed; `None` for the direct row.
    proxy: Option<ProxyCost>,
    /// CPU the backend used during the measured run, to show whether it was the limit.
    backend_cpu_seconds: f64,
}

/// What the proxy processes of a row consumed, summed over them.
struct ProxyCost {
    /// How many processes (two agents for the mesh; nginx master and worker).
    processes: usize,
    /// User plus system CPU seconds during the measured run.
    cpu_seconds: f64,
    /// Resident memory after start, before any load.
    rss_idle_kib: u64,
    /// Peak resident memory (`VmHWM`) at the end of the run.
    rss_peak_kib: u64,
}

impl Row {
    /// Requests completed per second of proxy CPU; `None` without a proxy.
    fn requests_per_cpu_second(&self) -> Option<f64> {
        let cost = self.proxy.as_ref()?;
        (cost.cpu_seconds > 0.0).then(|| self.load.requests as f64 / cost.cpu_seconds)
    }
}

impl Bench {
    /// Starts `setup`, loads it over `protocol`, measures it and stops it.
    fn measure(&self, setup: Setup, protocol: Protocol) -> Result<Row> {
        eprintln!(
            "xtask: bench {} over {} ({})",
            setup.name(),
            protocol.name(),
            setup.path()
        );
        let mut target = self.start(setup)?;
        let address = target.address(protocol);
        let proxies = with_descendants(&target.proxies)?;
        let backend = with_descendants(&[self.backend.pid])?;
        let rss_idle_kib = memory_kib(&proxies, "VmRSS")?;

        let label = format!("{}-{}", setup.slug(), protocol.name());
        let warmup = self.load(protocol, address, WARMUP, &format!("{label}-warmup"))?;
        ensure!(
            warmup.requests > warmup.errors,
            "{} over {} answered no request successfully while warming up; see {BENCH_DIR}/",
            setup.name(),
            protocol.name()
        );

        let proxy_cpu = cpu_seconds(&proxies, self.ticks_per_second)?;
        let backend_cpu = cpu_seconds(&backend, self.ticks_per_second)?;
        let load = self.load(protocol, address, self.options.duration, &label)?;
        // A proxy that died under load has no figures worth reporting.
        target.processes.ensure_running()?;
        let proxy_cpu = cpu_seconds(&proxies, self.ticks_per_second)? - proxy_cpu;
        let backend_cpu = cpu_seconds(&backend, self.ticks_per_second)? - backend_cpu;
        let rss_peak_kib = memory_kib(&proxies, "VmHWM")?;
        // Stop this row's processes before the next row starts.
        drop(target.processes);

        Ok(Row {
            setup,
            protocol,
            load,
            proxy: (!proxies.is_empty()).then_some(ProxyCost {
                processes: proxies.len(),
                cpu_seconds: proxy_cpu,
                rss_idle_kib,
                rss_peak_kib,
            }),
            backend_cpu_seconds: backend_cpu,
        })
    }

    /// Starts the processes of `setup` and waits until a request through them succeeds.
    fn start(&self, setup: Setup) -> Result<Target> {
        let mut processes = Processes::default();
        let backend_port = self.backend.http1.port();
        let (proxies, http1, http2) = match setup {
            Setup::Direct => (vec![], self.backend.http1, self.backend.http2),
            Setup::OneAgent => {
                let inbound = free_address()?;
                let agent = self.start_agent(
                    &mut processes,
                    "one",
                    &agent_config(
                        &self.dir,
                        "bench-one",
                        inbound,
                        Some(backend_port),
                        Some((free_address()?, inbound)),
                    ),
                )?;
                let upstream = agent.upstream.context("the agent bound no upstream port")?;
                (vec![agent.pid], upstream, upstream)
            }
            Setup::Mesh => {
                let host = self.start_agent(
                    &mut processes,
                    "host",
                    &agent_config(
                        &self.dir,
                        "bench-host",
                        free_address()?,
                        Some(backend_port),
                        None,
                    ),
                )?;
                let caller = self.start_agent(
                    &mut processes,
                    "caller",
                    &agent_config(
                        &self.dir,
                        "bench-caller",
                        free_address()?,
                        None,
                        Some((free_address()?, host.inbound)),
                    ),
                )?;
                let upstream = caller
                    .upstream
                    .context("the caller agent bound no upstream port")?;
                (vec![caller.pid, host.pid], upstream, upstream)
            }
            Setup::Haproxy => {
                let (http1, http2) = (free_address()?, free_address()?);
                let config = self.dir.join("haproxy.cfg");
                write(&config, &haproxy_config(http1, http2, self.backend.http1))?;
                let mut command = Command::new(&self.tools.haproxy);
                command.arg("-db").arg("-f").arg(&config);
                let pid = processes
                    .spawn(
                        "haproxy",
                        &mut command,
                        &self.dir.join("haproxy.log"),
                        Stdout::Log,
                    )?
                    .id();
                (vec![pid], http1, http2)
            }
            Setup::Nginx => {
                let addresses = (free_address()?, free_address()?);
                let upstream = format!(
                    "upstream backend {{
        server {};
        keepalive {NGINX_UPSTREAM_IDLE};
        keepalive_requests {KEEPALIVE_REQUESTS};
        keepalive_timeout {PROXY_IDLE_TIMEOUT};
    }}",
                    self.backend.http1
                );
                let location = "proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";";
                let site = NginxSite {
                    name: "proxy",
                    purpose: "nginx as a reverse proxy",
                    workers: PROXY_THREADS,
                    listen: addresses,
                    http_extra: &upstream,
                    location,
                };
                let pid = site.start(&self.tools, &self.dir, &mut processes)?;
                (vec![pid], addresses.0, addresses.1)
            }
        };
        wait_until_ok(http1, &mut processes, setup.name())?;
        Ok(Target {
            processes,
            proxies,
            http1,
            http2,
        })
    }

    /// Starts an agent with `yaml` and reads its ready line.
    fn start_agent(&self, processes: &mut Processes, name: &str, yaml: &str) -> Result<Agent> {
        let config = self.dir.join(format!("agent-{name}.yaml"));
        write(&config, yaml)?;
        let log = self.dir.join(format!("agent-{name}.log"));
        let mut command = Command::new(&self.agent);
        command
            .arg("--config")
            .arg(&config)
            .args(["--log-format", "human"])
            .args(["--worker-threads", &PROXY_THREADS.to_string()])
            .env("HYPHAE_LOG", AGENT_LOG_LEVEL);
        let child = processes.spawn(&format!("agent {name}"), &mut command, &log, Stdout::Pipe)?;
        let pid = child.id();
        let stdout = child
            .stdout
            .take()
            .context("the agent's stdout is not piped")?;
        let line = util::ready_line(stdout, START_TIMEOUT)
            .with_context(|| format!("agent {name} did not start; see {}", relative(&log)))?;
        let ready: Value = serde_json::from_str(&line).with_context(|| {
            format!(
                "agent {name} did not start (stdout {line:?}); see {}",
                relative(&log)
            )
        })?;
        let ready = &ready["ready"];
        let address = |value: &Value| value.as_str().and_then(|s| s.parse().ok());
        Ok(Agent {
            pid,
            inbound: address(&ready["inbound"])
                .with_context(|| format!("agent {name}'s ready line has no inbound: {line}"))?,
            upstream: ready["upstreams"]
                .as_array()
                .and_then(|list| list.first())
                .and_then(|pair| address(&pair[1])),
        })
    }

    /// Drives `address` for `duration` with the protocol's load generator; its output goes to
    /// `target/bench/<label>.txt`.
    fn load(
        &self,
        protocol: Protocol,
        address: SocketAddr,
        duration: Duration,
        label: &str,
    ) -> Result<Load> {
        let url = format!("http://{address}/");
        let secs = duration.as_secs().to_string();
        let connections = self.options.connections.to_string();
        let threads = LOAD_THREADS.to_string();
        let latency_log = self.dir.join(format!("{label}-latency.tsv"));
        let mut command = match protocol {
            Protocol::Http1 => {
                let mut command = Command::new(&self.tools.wrk);
                command.args([
                    "-t",
                    &threads,
                    "-c",
                    &connections,
                    "-d",
                    &format!("{secs}s"),
                    "--timeout",
                    WRK_REQUEST_TIMEOUT,
                    "--latency",
                    &url,
                ]);
                command
            }
            Protocol::Http2 => {
                let mut command = Command::new(&self.tools.h2load);
                command
                    .args(["-t", &threads, "-c", &connections, "-D", &secs])
                    .args(["-m", &H2_STREAMS_PER_CONNECTION.to_string()])
                    .arg("--log-file")
                    .arg(&latency_log)
                    .arg(&url);
                command
            }
        };
        let output = util::capture(&mut command)?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let saved = self.dir.join(format!("{label}.txt"));
        write(
            &saved,
            &format!(
                "$ {}\n{text}{}",
                util::describe(&command),
                String::from_utf8_lossy(&output.stderr)
            ),
        )?;
        ensure!(
            output.status.success(),
            "{} failed with {}; see {}",
            protocol.load_generator(),
            output.status,
            relative(&saved)
        );
        let load = match protocol {
            Protocol::Http1 => parse_wrk(&text),
            Protocol::Http2 => fs::read_to_string(&latency_log)
                .with_context(|| format!("read {}", relative(&latency_log)))
                .and_then(|log| parse_h2load(&text, &log)),
        };
        load.with_context(|| format!("read the results in {}", relative(&saved)))
    }

    /// The machine-readable report.
    fn json(&self, rows: &[Row]) -> Value {
        let ratio = |x: f64| rounded(x, RATIO_DECIMALS);
        let rate = |x: f64| rounded(x, RATE_DECIMALS);
        let entries: Vec<Value> = rows
            .iter()
            .map(|row| {
                let cost = row.proxy.as_ref();
                let ratios = versus_haproxy(row, rows).map(|r| {
                    json!({
                        "requestsPerSecond": ratio(r.requests_per_second),
                        "latencyP99": ratio(r.p99),
                        "requestsPerProxyCpuSecond": r.requests_per_cpu_second.map(ratio),
                        "rssPeak": r.rss_peak.map(ratio),
                    })
                });
                json!({
                    "path": row.setup.name(),
                    "description": row.setup.path(),
                    "protocol": row.protocol.name(),
                    "loadGenerator": row.protocol.load_generator(),
                    "requests": row.load.requests,
                    "errors": row.load.errors,
                    "requestsPerSecond": rate(row.load.requests_per_second),
                    "latencyP50Ms": rounded(row.load.p50_ms, MILLIS_DECIMALS),
                    "latencyP99Ms": rounded(row.load.p99_ms, MILLIS_DECIMALS),
                    "proxyProcesses": cost.map(|c| c.processes),
                    "proxyCpuSeconds": cost.map(|c| rounded(c.cpu_seconds, SECONDS_DECIMALS)),
                    "requestsPerProxyCpuSecond": row.requests_per_cpu_second().map(rate),
                    "rssIdleKib": cost.map(|c| c.rss_idle_kib),
                    "rssPeakKib": cost.map(|c| c.rss_peak_kib),
                    "backendCpuSeconds": rounded(row.backend_cpu_seconds, SECONDS_DECIMALS),
                    "vsHaproxy": ratios,
                })
            })
            .collect();
        json!({
            "benchmark": "proxy",
            "commit": commit(),
            "settings": {
                "durationSeconds": self.options.duration.as_secs(),
                "warmupSeconds": WARMUP.as_secs(),
                "connections": self.options.connections,
                "loadThreads": LOAD_THREADS,
                "h2StreamsPerConnection": H2_STREAMS_PER_CONNECTION,
                "proxyThreads": PROXY_THREADS,
                "backendWorkers": BACKEND_WORKERS,
            },
            "machine": {
                "cpus": std::thread::available_parallelism().map(usize::from).ok(),
                "kernel": first_line(Command::new("uname").arg("-r")),
            },
            "versions": {
                "hyphae-agent": first_line(Command::new(&self.agent).arg("--version")),
                "haproxy": first_line(Command::new(&self.tools.haproxy).arg("-v")),
                "nginx": first_line(Command::new(&self.tools.nginx).arg("-v")),
                "wrk": first_line(Command::new(&self.tools.wrk).arg("-v")),
                "h2load": first_line(Command::new(&self.tools.h2load).arg("--version")),
            },
            "rows": entries,
        })
    }
}

/// A started agent.
struct Agent {
    /// Its process.
    pid: u32,
    /// Its inbound listener, for callers' static endpoints.
    inbound: SocketAddr,
    /// Its first upstream port, when it has one.
    upstream: Option<SocketAddr>,
}

/// A bench agent's configuration. `service_port` hosts the backend behind the inbound
/// listener; `upstream` is (upstream port, endpoint) for calling it.
fn agent_config(
    dir: &Path,
    name: &str,
    inbound: SocketAddr,
    service_port: Option<u16>,
    upstream: Option<(SocketAddr, SocketAddr)>,
) -> String {
    let mut yaml = format!(
        "# Generated by `cargo xtask bench proxy`.
kind: AgentConfig
metadata: {{name: {name}}}
spec:
  site: {AGENT_SITE}
  dataDir: {data_dir}
  listeners: {{admin: 127.0.0.1:0, inbound: {inbound}, httpProxy: null, dns: null}}
  limits: {{drainTimeout: {AGENT_DRAIN_TIMEOUT}}}
",
        data_dir = dir.join(format!("agent-{name}-data")).display()
    );
    if let Some(port) = service_port {
        yaml.push_str(&format!(
            "  services:\n    - {{name: {SERVICE}, port: {port}}}\n"
        ));
    }
    if let Some((listen, endpoint)) = upstream {
        yaml.push_str(&format!(
            "  upstreams:
    - {{listen: {listen}, service: {SERVICE}}}
  staticServices:
    - name: {SERVICE}
      endpoints: [{{address: \"{endpoint}\", site: {AGENT_SITE}}}]
"
        ));
    }
    yaml
}

/// haproxy with one thread, keep-alive to clients and connection reuse to the backend.
fn haproxy_config(http1: SocketAddr, http2: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "# Generated by `cargo xtask bench proxy`: haproxy as a reverse proxy, one thread.
global
    nbthread {PROXY_THREADS}
    maxconn {PROXY_MAX_CONNECTIONS}

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect {HAPROXY_CONNECT_TIMEOUT}
    timeout client {PROXY_IDLE_TIMEOUT}
    timeout server {PROXY_IDLE_TIMEOUT}

frontend bench
    bind {http1}
    bind {http2} proto h2
    default_backend backend

backend backend
    server backend {backend}
"
    )
}

/// An nginx instance: the backend or the proxy.
struct NginxSite<'a> {
    /// Its folder is `target/bench/nginx-<name>/`.
    name: &'a str,
    /// A line for the config's header.
    purpose: &'a str,
    /// Worker processes.
    workers: u32,
    /// HTTP/1.1 and h2c listeners.
    listen: (SocketAddr, SocketAddr),
    /// More directives in the `http` block (an `upstream`).
    http_extra: &'a str,
    /// The body of `location /`.
    location: &'a str,
}

impl NginxSite<'_> {
    /// Writes the configuration under `target/bench/nginx-<name>/`, starts nginx on it in the
    /// foreground (a master and its workers) and waits until it answers; returns the master's
    /// pid.
    fn start(&self, tools: &Tools, dir: &Path, processes: &mut Processes) -> Result<u32> {
        let NginxSite {
            name,
            purpose,
            workers,
            listen: (http1, http2),
            http_extra,
            location,
        } = *self;
        let prefix = dir.join(format!("nginx-{name}"));
        fs::create_dir_all(&prefix).with_context(|| format!("create {}", prefix.display()))?;
        let p = prefix.display();
        let config = format!(
            "# Generated by `cargo xtask bench proxy`: {purpose}.
daemon off;
worker_processes {workers};
pid {p}/nginx.pid;
error_log {p}/error.log warn;

events {{
    worker_connections {PROXY_MAX_CONNECTIONS};
}}

http {{
    access_log off;
    keepalive_requests {KEEPALIVE_REQUESTS};
    keepalive_timeout {PROXY_IDLE_TIMEOUT};
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;

    {http_extra}

    server {{
        listen {http1};
        listen {http2} http2;
        location / {{
            {location}
        }}
    }}
}}
"
        );
        let config_file = prefix.join("nginx.conf");
        write(&config_file, &config)?;
        let mut command = Command::new(&tools.nginx);
        command
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(&config_file);
        let pid = processes
            .spawn(
                &format!("nginx {name}"),
                &mut command,
                &prefix.join("stderr.log"),
                Stdout::Log,
            )?
            .id();
        wait_until_ok(http1, processes, &format!("nginx {name}"))?;
        Ok(pid)
    }
}

/// What a load generator measured.
#[derive(Clone, Debug, Default)]
struct Load {
    /// Requests completed (answered, whatever the status).
    requests: u64,
    /// Requests that failed: non-2xx/3xx answers, socket errors, resets, timeouts.
    errors: u64,
    /// Throughput as the load generator computed it.
    requests_per_second: f64,
    /// Median latency.
    p50_ms: f64,
    /// 99th percentile latency.
    p99_ms: f64,
}

/// Reads wrk's `--latency` report.
fn parse_wrk(text: &str) -> Result<Load> {
    let mut load = Load::default();
    let (mut p50, mut p99, mut rps, mut requests) = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("50%") {
            p50 = Some(wrk_time_ms(value.trim())?);
        } else if let Some(value) = line.strip_prefix("99%") {
            p99 = Some(wrk_time_ms(value.trim())?);
        } else if let Some(value) = line.strip_prefix("Requests/sec:") {
            rps = Some(number(value.trim(), "Requests/sec")?);
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            requests = Some(number(count, "requests")?);
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.errors += number::<u64>(value.trim(), "non-2xx responses")?;
        } else if let Some(value) = line.strip_prefix("Socket errors:") {
            // `connect 0, read 0, write 0, timeout 0`
            for part in value.split(',') {
                let count = part.split_whitespace().last().unwrap_or("0");
                load.errors += number::<u64>(count, "socket errors")?;
            }
        }
    }
    load.p50_ms = p50.context("wrk printed no 50% latency")?;
    load.p99_ms = p99.context("wrk printed no 99% latency")?;
    load.requests_per_second = rps.context("wrk printed no Requests/sec")?;
    load.requests = requests.context("wrk printed no request count")?;
    Ok(load)
}

/// A wrk duration (`612.00us`, `1.07ms`, `2.00s`) in milliseconds.
fn wrk_time_ms(text: &str) -> Result<f64> {
    const UNITS: [(&str, f64); 5] = [
        ("us", 0.001),
        ("ms", 1.0),
        ("s", 1000.0),
        ("m", 60_000.0),
        ("h", 3_600_000.0),
    ];
    UNITS
        .iter()
        .find_map(|(unit, scale)| Some((text.strip_suffix(unit)?, scale)))
        .with_context(|| format!("unknown unit in wrk time `{text}`"))
        .and_then(|(value, scale)| Ok(number::<f64>(value, "latency")? * scale))
}

/// Reads h2load's report and its per-request log (tab-separated: start time in µs, status,
/// duration in µs) for the percentiles, which h2load does not print.
fn parse_h2load(text: &str, latency_log: &str) -> Result<Load> {
    let mut load = Load::default();
    let (mut rps, mut requests) = (None, None);
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // `finished in 3.00s, 31085.67 req/s, 1.21MB/s`
            let value = rest
                .split(", ")
                .find_map(|part| part.strip_suffix(" req/s"))
                .context("h2load printed no req/s")?;
            rps = Some(number(value, "req/s")?);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // `93257 total, 93307 started, 93257 done, 93257 succeeded, 0 failed, ...`
            let counts: BTreeMap<&str, &str> = rest
                .split(", ")
                .filter_map(|part| part.split_once(' ').map(|(n, what)| (what, n)))
                .collect();
            let count = |what: &str| {
                counts
                    .get(what)
                    .with_context(|| format!("h2load printed no `{what}` count"))
                    .and_then(|n| number::<u64>(n, what))
            };
            requests = Some(count("done")?);
            // `failed` includes `errored` and non-2xx/3xx answers.
            load.errors = count("failed")? + count("timeout")?;
        }
    }
    load.requests_per_second = rps.context("h2load printed no `finished in` line")?;
    load.requests = requests.context("h2load printed no `requests:` line")?;
    let mut micros: Vec<u64> = latency_log
        .lines()
        .filter_map(|line| line.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    ensure!(!micros.is_empty(), "h2load logged no request");
    micros.sort_unstable();
    let percentile_ms = |p: f64| percentile(&micros, p).map_or(0.0, |us| us as f64 / 1000.0);
    load.p50_ms = percentile_ms(50.0);
    load.p99_ms = percentile_ms(99.0);
    Ok(load)
}

/// The nearest-rank `p`th percentile of `sorted` (ascending); `None` when it is empty.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// Decimal places of ratios in `proxy.json`.
const RATIO_DECIMALS: i32 = 3;
/// Decimal places of seconds in `proxy.json`: CPU times are whole 1/100 s clock ticks.
const SECONDS_DECIMALS: i32 = 2;
/// Decimal places of milliseconds in `proxy.json`: the tools measure whole microseconds.
const MILLIS_DECIMALS: i32 = 3;
/// Decimal places of rates (requests per second, per CPU-second) in `proxy.json`.
const RATE_DECIMALS: i32 = 2;

/// `value` rounded to `decimals` places, so `proxy.json` holds no float noise such as
/// `0.48999999999999977` (CPU times are whole clock ticks to begin with).
fn rounded(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

/// Parses a number from a tool's output, saying which one on failure.
fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T> {
    text.trim()
        .parse()
        .ok()
        .with_context(|| format!("`{text}` is not a number ({what})"))
}

/// A row's ratios to haproxy's row of the same protocol.
struct Ratios {
    /// Throughput ratio (higher is better).
    requests_per_second: f64,
    /// p99 latency ratio (lower is better).
    p99: f64,
    /// Requests per proxy CPU-second ratio (higher is better); `None` without a proxy.
    requests_per_cpu_second: Option<f64>,
    /// Peak memory ratio (lower is better); `None` without a proxy.
    rss_peak: Option<f64>,
}

/// `row` compared with haproxy's row of the same protocol; `None` before haproxy has a row.
fn versus_haproxy(row: &Row, rows: &[Row]) -> Option<Ratios> {
    let haproxy = rows
        .iter()
        .find(|r| r.setup == Setup::Haproxy && r.protocol == row.protocol)?;
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    Some(Ratios {
        requests_per_second: ratio(
            row.load.requests_per_second,
            haproxy.load.requests_per_second,
        )?,
        p99: ratio(row.load.p99_ms, haproxy.load.p99_ms)?,
        requests_per_cpu_second: row
            .requests_per_cpu_second()
            .zip(haproxy.requests_per_cpu_second())
            .and_then(|(a, b)| ratio(a, b)),
        rss_peak: row
            .proxy
            .as_ref()
            .zip(haproxy.proxy.as_ref())
            .and_then(|(a, b)| ratio(a.rss_peak_kib as f64, b.rss_peak_kib as f64)),
    })
}

/// The human-readable report: settings, the table, ratios to haproxy and what each path is.
fn report(bench: &Bench, rows: &[Row]) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mut out = format!(
        "\nproxy benchmark: {} s per row after {} s warm-up, {} connections, {} load thread, \
         proxies on {} thread, {} CPUs\n\n",
        bench.options.duration.as_secs(),
        WARMUP.as_secs(),
        bench.options.connections,
        LOAD_THREADS,
        PROXY_THREADS,
        cpus
    );
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let dash = || "-".to_string();
    out.push_str(&format!(
        "{:<15} {:<5} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10} {:>10} {:>10}\n",
        "path",
        "proto",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "proxy CPU",
        "req/CPU-s",
        "RSS idle",
        "RSS peak"
    ));
    for row in rows {
        let cost = row.proxy.as_ref();
        out.push_str(&format!(
            "{:<15} {:<5} {:>9.0} {:>9.2} {:>9.2} {:>7} {:>9} {:>10} {:>10} {:>10}\n",
            row.setup.name(),
            row.protocol.name(),
            row.load.requests_per_second,
            row.load.p50_ms,
            row.load.p99_ms,
            row.load.errors,
            cost.map_or_else(dash, |c| format!("{:.2} s", c.cpu_seconds)),
            row.requests_per_cpu_second()
                .map_or_else(dash, |r| format!("{r:.0}")),
            cost.map_or_else(dash, |c| mib(c.rss_idle_kib)),
            cost.map_or_else(dash, |c| mib(c.rss_peak_kib)),
        ));
    }
    out.push_str(&format!(
        "\nvs haproxy (same protocol; req/s and req/CPU-s: higher is better, p99 and RSS: lower)\n\
         {:<15} {:<5} {:>9} {:>9} {:>10} {:>10}\n",
        "path", "proto", "req/s", "p99", "req/CPU-s", "RSS peak"
    ));
    let times = |r: f64| format!("{r:.2}x");
    for row in rows.iter().filter(|r| r.setup != Setup::Haproxy) {
        if let Some(r) = versus_haproxy(row, rows) {
            out.push_str(&format!(
                "{:<15} {:<5} {:>9} {:>9} {:>10} {:>10}\n",
                row.setup.name(),
                row.protocol.name(),
                times(r.requests_per_second),
                times(r.p99),
                r.requests_per_cpu_second.map_or_else(dash, times),
                r.rss_peak.map_or_else(dash, times),
            ));
        }
    }
    out.push_str(
        "\npaths (h1: wrk; h2: h2load, prior knowledge; every proxy speaks HTTP/1.1 to the \
         backend):\n",
    );
    for setup in Setup::ALL {
        out.push_str(&format!("  {:<15} {}\n", setup.name(), setup.path()));
    }
    out.push_str(
        "proxy CPU: user+system seconds of every proxy process during the measured run \
         (both agents for the mesh, nginx master and worker); RSS summed the same way, \
         peak is VmHWM.\n",
    );
    out
}

/// How the child's stdout is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stdout {
    /// Into its log file, with stderr.
    Log,
    /// Piped, for the caller to read.
    Pipe,
}

/// A started process and where its output goes.
struct Running {
    /// For messages.
    name: String,
    /// The process.
    child: Child,
    /// Where its stderr goes.
    log: PathBuf,
}

/// Processes the bench started; dropping this stops them all, whether the bench succeeded,
/// failed or panicked.
#[derive(Default)]
struct Processes {
    /// In start order; stopped in reverse.
    running: Vec<Running>,
}

impl Processes {
    /// Starts `command` with stderr (and stdout unless piped) appended to `log`.
    fn spawn(
        &mut self,
        name: &str,
        command: &mut Command,
        log: &Path,
        stdout: Stdout,
    ) -> Result<&mut Child> {
        let file = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let out = match stdout {
            Stdout::Log => Stdio::from(
                file.try_clone()
                    .with_context(|| format!("reopen {}", log.display()))?,
            ),
            Stdout::Pipe => Stdio::piped(),
        };
        command.stdin(Stdio::null()).stdout(out).stderr(file);
        eprintln!("$ {}", util::describe(command));
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}: {}", util::describe(command)))?;
        self.running.push(Running {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        });
        let last = self.running.len() - 1;
        Ok(&mut self.running[last].child)
    }

    /// Fails, pointing at the log, when any process has exited.
    fn ensure_running(&mut self) -> Result<()> {
        for running in &mut self.running {
            if let Some(status) = running
                .child
                .try_wait()
                .with_context(|| format!("check on {}", running.name))?
            {
                bail!(
                    "{} exited with {status}; see {}",
                    running.name,
                    relative(&running.log)
                );
            }
        }
        Ok(())
    }
}

impl Drop for Processes {
    /// SIGTERM to each process (nginx's master stops its workers), then SIGKILL to whatever is
    /// left after [`STOP_TIMEOUT`], children included.
    fn drop(&mut self) {
        for running in self.running.iter_mut().rev() {
            let pid = running.child.id();
            if matches!(running.child.try_wait(), Ok(Some(_))) {
                continue;
            }
            // Children are only needed if SIGTERM is ignored; without /proc, the process alone.
            let descendants = with_descendants(&[pid]).unwrap_or_else(|_| vec![pid]);
            signal("TERM", &[pid]);
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match running.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                    _ => {
                        eprintln!(
                            "xtask: {} did not stop within {STOP_TIMEOUT:?}; killing it",
                            running.name
                        );
                        signal("KILL", &descendants);
                        if let Err(error) = running.child.wait() {
                            eprintln!("xtask: cannot reap {}: {error}", running.name);
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// Sends `SIG<name>` to `pids`, reporting (not failing on) errors: this runs while cleaning up.
fn signal(name: &str, pids: &[u32]) {
    let mut command = Command::new("kill");
    command
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string));
    match command.output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => eprintln!(
            "xtask: {} failed: {}",
            util::describe(&command),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => eprintln!("xtask: cannot run {}: {error}", util::describe(&command)),
    }
}

/// Polls `GET /` at `address` until it answers 200, failing early if a process exits.
fn wait_until_ok(address: SocketAddr, processes: &mut Processes, what: &str) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let last = match http_status(address) {
            Ok(200) => return Ok(()),
            Ok(status) => format!("status {status}"),
            Err(error) => format!("{error:#}"),
        };
        processes.ensure_running()?;
        if Instant::now() >= deadline {
            bail!("{what} at {address} did not answer 200 within {START_TIMEOUT:?}: {last}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The status of one HTTP/1.1 `GET /` to `address`.
fn http_status(address: SocketAddr) -> Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, CHECK_TIMEOUT)
        .with_context(|| format!("connect to {address}"))?;
    stream
        .set_read_timeout(Some(CHECK_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CHECK_TIMEOUT)))
        .context("set socket timeouts")?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .with_context(|| format!("send to {address}"))?;
    let mut status_line = String::new();
    BufReader::new(stream)
        .read_line(&mut status_line)
        .with_context(|| format!("read from {address}"))?;
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP status in {status_line:?}"))
}

/// A free port on 127.0.0.1 (bound, then released for the process that will use it).
fn free_address() -> Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .context("find a free port on 127.0.0.1")
}

/// `roots` and every process descended from them, found through `/proc`.
fn with_descendants(roots: &[u32]) -> Result<Vec<u32>> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in fs::read_dir("/proc").context("list /proc")? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read; it is no one's child then.
        if let Ok(fields) = stat_fields(pid)
            && let Some(ppid) = fields.get(STAT_PPID).and_then(|p| p.parse().ok())
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = BTreeSet::new();
    let mut queue: Vec<u32> = roots.to_vec();
    while let Some(pid) = queue.pop() {
        if found.insert(pid) {
            queue.extend(children.get(&pid).into_iter().flatten());
        }
    }
    Ok(found.into_iter().collect())
}

/// Index of the parent pid among the fields after the command name in `/proc/PID/stat`
/// (field 4 of `proc(5)`, counting from 1 with pid and comm as fields 1 and 2).
const STAT_PPID: usize = 1;
/// Index of `utime` (field 14), counted the same way.
const STAT_UTIME: usize = 11;
/// Index of `stime` (field 15).
const STAT_STIME: usize = 12;

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let (_, rest) = text
        .rsplit_once(')')
        .with_context(|| format!("unexpected {path}: {text:?}"))?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// User plus system CPU seconds consumed so far by `pids`, summed.
fn cpu_seconds(pids: &[u32], ticks_per_second: f64) -> Result<f64> {
    let mut ticks = 0_u64;
    for &pid in pids {
        let fields = stat_fields(pid)?;
        for index in [STAT_UTIME, STAT_STIME] {
            let value = fields
                .get(index)
                .with_context(|| format!("/proc/{pid}/stat is too short"))?;
            ticks += number::<u64>(value, "CPU ticks")?;
        }
    }
    Ok(ticks as f64 / ticks_per_second)
}

/// A memory figure of `/proc/PID/status` (`VmRSS`, `VmHWM`) in KiB, summed over `pids`.
fn memory_kib(pids: &[u32], field: &str) -> Result<u64> {
    let mut total = 0;
    for &pid in pids {
        let path = format!("/proc/{pid}/status");
        let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .with_context(|| format!("no {field} in {path}"))?;
        total += number::<u64>(value.trim().trim_end_matches("kB"), field)?;
    }
    Ok(total)
}

/// Clock ticks per second, the unit of `/proc/PID/stat` CPU times.
fn clock_ticks() -> Result<f64> {
    let output = util::capture(Command::new("getconf").arg("CLK_TCK"))?;
    ensure!(output.status.success(), "getconf CLK_TCK failed");
    number(&String::from_utf8_lossy(&output.stdout), "CLK_TCK")
}

/// The commit the bench ran on, `-dirty` when the tree had changes; `unknown` without git.
fn commit() -> String {
    let git = |args: &[&str]| {
        util::capture(Command::new("git").current_dir(util::root()).args(args))
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match (
        git(&["rev-parse", "--short", "HEAD"]),
        git(&["status", "--porcelain"]),
    ) {
        (Some(hash), Some(changes)) if !changes.is_empty() => format!("{hash}-dirty"),
        (Some(hash), _) => hash,
        (None, _) => "unknown".to_string(),
    }
}

/// The first non-empty line a command prints (stdout, then stderr), for version strings;
/// `unknown` when it cannot run — versions are informational.
fn first_line(command: &mut Command) -> String {
    util::capture(command)
        .ok()
        .and_then(|output| {
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            text.lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Writes a generated file.
fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// `path` relative to the workspace root, for messages.
fn relative(path: &Path) -> String {
    let root = util::root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 3s test @ http://127.0.0.1:40547/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.08ms    1.19ms  18.70ms   84.07%
    Req/Sec    16.05k     1.98k   24.29k    83.33%
  Latency Distribution
     50%  952.00us
     75%    3.52ms
     90%    4.08ms
     99%    1.20s
  47993 requests in 3.01s, 7.00MB read
  Non-2xx or 3xx responses: 7
  Socket errors: connect 1, read 2, write 0, timeout 3
Requests/sec:  15968.91
Transfer/sec:      2.33MB
";

    const H2LOAD: &str = "finished in 3.01s, 14523.00 req/s, 796.91KB/s
requests: 43569 total, 43619 started, 43569 done, 43560 succeeded, 9 failed, 2 errored, 1 timeout
status codes: 43560 2xx, 0 3xx, 0 4xx, 7 5xx
";

    #[test]
    fn wrk_reports_are_read_with_their_units_and_errors() {
        let load = parse_wrk(WRK).unwrap();
        assert_eq!(load.requests, 47993);
        assert_eq!(load.errors, 7 + 1 + 2 + 3);
        assert!((load.requests_per_second - 15968.91).abs() < 1e-9);
        assert!((load.p50_ms - 0.952).abs() < 1e-9);
        assert!((load.p99_ms - 1200.0).abs() < 1e-9);
        assert!(
            parse_wrk("Requests/sec: 1\n").is_err(),
            "missing figures are errors"
        );
    }

    #[test]
    fn h2load_reports_take_percentiles_from_the_request_log() {
        let log: String = (1..=100)
            .map(|i| format!("1795780166798927\t200\t{}\n", i * 1000))
            .collect();
        let load = parse_h2load(H2LOAD, &log).unwrap();
        assert_eq!(load.requests, 43569);
        assert_eq!(load.errors, 9 + 1);
        assert!((load.requests_per_second - 14523.0).abs() < 1e-9);
        assert!((load.p50_ms - 50.0).abs() < 1e-9);
        assert!((load.p99_ms - 99.0).abs() < 1e-9);
        assert!(
            parse_h2load(H2LOAD, "").is_err(),
            "an empty log is an error"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u32> = (1..=200).collect();
        assert_eq!(percentile(&values, 50.0), Some(100));
        assert_eq!(percentile(&values, 99.0), Some(198));
        assert_eq!(percentile(&values, 100.0), Some(200));
        assert_eq!(percentile(&values[..1], 99.0), Some(1));
        assert_eq!(percentile::<u32>(&[], 50.0), None);
    }

    #[test]
    fn options_have_defaults_and_bounds() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let options = Options::parse(&[]).unwrap().unwrap();
        assert_eq!(options.duration, Duration::from_secs(DEFAULT_DURATION_SECS));
        assert_eq!(options.connections, DEFAULT_CONNECTIONS);
        let options = Options::parse(&args(&["--duration", "3", "--connections", "8"]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (options.duration, options.connections),
            (Duration::from_secs(3), 8)
        );
        for bad in [
            &["--duration", "0"][..],
            &["--connections", "0"],
            &["--connections", "100000"],
            &["--duration"],
            &["--fast"],
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
