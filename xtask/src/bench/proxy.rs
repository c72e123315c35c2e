//! `cargo xtask bench proxy`: the agent's data path against haproxy and nginx on this machine —
//! same backend, same load generator, one thread each; the two-agent mesh (mutual TLS between
//! the agents) beside two haproxy chained over mutual TLS, and what a TLS handshake costs at
//! either hop — printed as a table and written to `target/bench/proxy.json`. Fails only because
//! something is broken, never because it is slow.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use certificates::Certificates;
use tokio::runtime::Runtime;

use super::BENCH_DIR;
use super::parse::Load;
use super::procfs::{clock_ticks, cpu_seconds, memory_kib, with_descendants};
use super::report::write_json;
use super::tools::Tools;
use crate::options::{Bounded, parse_options};
use crate::util;
use load::Protocol;
use nginx::Backend;
use processes::{ensure_running, stop};
use setup::Setup;

mod alternated;
mod certificates;
pub mod cycles;
mod fixed_rate;
mod handshake;
mod haproxy;
pub mod hot_functions;
mod load;
mod nginx;
pub mod pgo;
mod processes;
mod report;
mod setup;

/// Load-generator threads: one, so the client takes the same share of the machine in every row.
const LOAD_THREADS: u32 = 1;
/// `--duration`: seconds of measured load per row.
const DURATION_SECS: Bounded<u64> = Bounded::new("--duration", 10, 1..=u64::MAX);
/// `--connections`: concurrent client connections; at least one per load-generator thread, and
/// at most what every proxy below is configured for several times over.
const CONNECTIONS: Bounded<u32> = Bounded::new("--connections", 50, LOAD_THREADS..=1000);
/// `--rate`: requests per second of the fixed-rate rows (oha, coordinated-omission corrected).
const RATE: Bounded<u32> = Bounded::new("--rate", 10_000, 100..=1_000_000);
/// `--rounds`: times the one agent and haproxy are measured again in turn for each protocol
/// (see [`alternated`]).
const ROUNDS: Bounded<u32> = Bounded::new("--rounds", 5, 1..=15);
/// `--latency-rounds`: times the one agent and haproxy are driven in turn at the fixed rate for
/// each protocol, each for half of `--duration`. A p99 moves with the machine between two
/// 10-second rows by more than the proxies differ (±0.3 ms against 0.1), so twice the pairs,
/// each pair closer together in time, in the time five full rounds took (decision 99).
const LATENCY_ROUNDS: Bounded<u32> = Bounded::new("--latency-rounds", 10, 1..=30);
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
/// Connections each haproxy and nginx process accepts (clients and backend together).
const PROXY_MAX_CONNECTIONS: u32 = 4 * CONNECTIONS.max();
/// Requests on one kept-alive connection before nginx closes it: effectively unlimited, as in
/// haproxy and the agent, so no row pays for reconnects.
const KEEPALIVE_REQUESTS: u32 = 1_000_000;
/// haproxy's and nginx's idle timeout on client and backend connections.
const PROXY_IDLE_TIMEOUT: &str = "60s";

/// `cargo xtask bench proxy --help`.
pub const USAGE: &str =
    "usage: cargo xtask bench proxy [--duration SECS] [--connections N] [--rate N] [--rounds N]
                               [--latency-rounds N]

Starts a backend (nginx, `return 200`), the agent (release build, 1 worker thread), haproxy
alone and two chained (plaintext or mutual TLS between them, like the mesh's two agents) and
nginx (1 thread / 1 worker each), drives every path with the same load (wrk for HTTP/1.1, h2load
for HTTP/2), drives every path again at a fixed rate with oha (latency from each request's due
time), measures the one agent and haproxy again in turn (`--rounds` times per protocol, the
median ratio steadier than one pair of rows on a busy machine) in closed loops and
(`--latency-rounds` times) at the fixed rate (the median of each round's latency difference),
times new TLS connections to the agent's inbound port and to the inner haproxy, prints tables
and writes target/bench/proxy.json. Configs, certificates and logs go to target/bench/.

options:
  --duration SECS    measured seconds per row (default 10)
  --connections N    concurrent client connections (default 50, at most 1000)
  --rate N           requests per second of the fixed-rate rows (default 10000)
  --rounds N         rounds of the one agent and haproxy measured in turn in closed loops
                     (default 5, 1 to 15), the order turning each round
  --latency-rounds N rounds of the two driven in turn at the fixed rate, each for half of
                     --duration (default 10, 1 to 30)
  --agent BUILD      `release` (default) or `pgo`: the agent `cargo xtask pgo` builds, trained
                     and built first";
/// What the command line asked for.
#[derive(Clone, Copy, Debug)]
struct Options {
    /// Measured load per row.
    duration: Duration,
    /// Concurrent client connections.
    connections: u32,
    /// Requests per second of the fixed-rate rows.
    rate: u32,
    /// Rounds of the one agent and haproxy measured in turn.
    rounds: u32,
    /// Rounds of the two driven in turn at the fixed rate.
    latency_rounds: u32,
}

impl Options {
    /// How long each round at the fixed rate lasts: half a row in whole seconds (what oha's
    /// `-z` is given), at least one.
    fn latency_round(&self) -> Duration {
        Duration::from_secs((self.duration.as_secs() / 2).max(1))
    }

    /// Parses `--duration SECS` and `--connections N`; `None` for `--help`.
    fn parse(args: &[String]) -> Result<Option<Options>> {
        let mut options = Options {
            duration: Duration::from_secs(DURATION_SECS.default),
            connections: CONNECTIONS.default,
            rate: RATE.default,
            rounds: ROUNDS.default,
            latency_rounds: LATENCY_ROUNDS.default,
        };
        let names = [
            DURATION_SECS.name,
            CONNECTIONS.name,
            RATE.name,
            ROUNDS.name,
            LATENCY_ROUNDS.name,
        ];
        let run = parse_options(args, USAGE, &names, |name, text| {
            if name == DURATION_SECS.name {
                options.duration = Duration::from_secs(DURATION_SECS.parse(text)?);
            } else if name == RATE.name {
                options.rate = RATE.parse(text)?;
            } else if name == ROUNDS.name {
                options.rounds = ROUNDS.parse(text)?;
            } else if name == LATENCY_ROUNDS.name {
                options.latency_rounds = LATENCY_ROUNDS.parse(text)?;
            } else {
                options.connections = CONNECTIONS.parse(text)?;
            }
            Ok(())
        })?;
        Ok(run.then_some(options))
    }
}

/// `cargo xtask bench proxy`.
pub fn run(args: &[String]) -> Result<()> {
    let (agent_build, args) = pgo::AgentBuild::take(args)?;
    let Some(options) = Options::parse(&args)? else {
        return Ok(());
    };
    let mut bench = Bench::new(options)?;
    agent_build.prepare(&mut bench)?;
    let hot_functions = hot_functions::coverage(&bench.agent)?;
    hot_functions.report();
    let mut rows = Vec::new();
    for protocol in Protocol::ALL {
        for setup in Setup::ALL {
            rows.push(bench.measure(setup, protocol)?);
        }
    }
    let mut turns = Vec::new();
    for protocol in Protocol::ALL {
        turns.push(bench.alternated(protocol, options.rounds)?);
    }
    let mut at_rate = Vec::new();
    for protocol in Protocol::ALL {
        for setup in Setup::ALL {
            at_rate.push(bench.measure_fixed_rate(setup, protocol, options.duration)?);
        }
    }
    let mut turns_at_rate = Vec::new();
    for protocol in Protocol::ALL {
        turns_at_rate.push(bench.alternated_at_rate(
            protocol,
            options.latency_rounds,
            options.latency_round(),
        )?);
    }
    let mut handshakes = Vec::new();
    for setup in HANDSHAKE_SETUPS {
        handshakes.extend(bench.handshakes(setup)?);
    }
    bench.runtime.block_on(stop([&mut bench.backend.process]));

    print!(
        "{}{}{}{}",
        bench.table(&rows, &handshakes),
        alternated::table(&turns),
        fixed_rate::table(&at_rate, options.rate),
        alternated::latency_table(&turns_at_rate, options.rate)
    );
    let mut json = bench.json(&rows, &handshakes, &at_rate);
    json["hotFunctions"] = hot_functions.json();
    json["alternated"] = alternated::json(&turns);
    json["alternatedAtRate"] = alternated::latency_json(&turns_at_rate);
    write_json(&bench.dir, "proxy.json", &json)
}

/// The rows whose TLS hop the handshake measurement times: the mesh and its peer.
const HANDSHAKE_SETUPS: [Setup; 2] = [Setup::Mesh, Setup::HaproxyChainTls];

/// Everything a row needs: settings, programs, the shared backend, the output folder.
struct Bench {
    /// Runs the readiness checks and the stops.
    runtime: Runtime,
    /// The command line.
    options: Options,
    /// haproxy, nginx and the load generators.
    tools: Tools,
    /// The build of `hyphae-agent` measured: the release build unless `--agent pgo`.
    agent: PathBuf,
    /// Which build `agent` is.
    agent_build: pgo::AgentBuild,
    /// Unit of the CPU times in `/proc/PID/stat`.
    ticks_per_second: f64,
    /// The backend, running for the whole bench.
    backend: Backend,
    /// haproxy's certificates and the handshake client's.
    certificates: Certificates,
    /// `target/bench/`, absolute.
    dir: PathBuf,
    /// A program and its arguments that each agent and haproxy runs under (`cargo xtask
    /// hot-functions` and `bench cycles` run them under callgrind); empty for the bench.
    proxy_wrapper: Vec<OsString>,
}

impl Bench {
    /// Builds the agent (release), issues the bench's certificates and starts the backend.
    fn new(options: Options) -> Result<Bench> {
        let tools = Tools::ensure()?;
        // The agent, and the `hyphae` CLI beside it, which issues the agents' certificates (the
        // test-support library's `Agent::command`) and haproxy's.
        util::run(util::cargo().args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "hyphae-agent",
            "-p",
            "hyphae-control-plane",
            "--bin",
            "hyphae-agent",
            "--bin",
            "hyphae",
        ]))?;
        let root = util::root();
        let dir = root.join(BENCH_DIR);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        remove_agent_certificates(&dir)?;
        let certificates =
            Certificates::issue(&root.join("target/release/hyphae"), &dir.join("tls"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start a runtime")?;
        let backend = Backend::start(&tools, &dir, &runtime)?;
        Ok(Bench {
            runtime,
            options,
            agent: root.join("target/release/hyphae-agent"),
            agent_build: pgo::AgentBuild::Release,
            tools,
            ticks_per_second: clock_ticks()?,
            backend,
            certificates,
            dir,
            proxy_wrapper: Vec::new(),
        })
    }
}

/// Removes the certificate folders earlier runs issued to their agents: each start of an agent
/// issues one of its own beside its config (`<node>-tls-<random>`, [`setup::AGENT_NODES`]).
fn remove_agent_certificates(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("read {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let issued = setup::AGENT_NODES.iter().any(|node| {
            name.strip_prefix(node)
                .is_some_and(|rest| rest.starts_with("-tls-"))
        });
        if issued && entry.path().is_dir() {
            fs::remove_dir_all(entry.path())
                .with_context(|| format!("remove {}", entry.path().display()))?;
        }
    }
    Ok(())
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
    /// How many processes (two agents for the mesh, two haproxy for a chain; nginx master and
    /// worker).
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
        let backend = with_descendants(&[self.backend.process.id()])?;
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
        ensure_running(target.processes())?;
        let proxy_cpu = cpu_seconds(&proxies, self.ticks_per_second)? - proxy_cpu;
        let backend_cpu = cpu_seconds(&backend, self.ticks_per_second)? - backend_cpu;
        let rss_peak_kib = memory_kib(&proxies, "VmHWM")?;
        // Stop this row's processes before the next row starts, the last started first.
        self.runtime.block_on(stop(target.processes().rev()));

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agents_certificate_folders_of_earlier_runs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for folder in [
            "bench-one-tls-0a1b2c3d",
            "bench-caller-tls-ffffffff",
            "bench-host-tls-12345678",
            "tls",
            "nginx",
        ] {
            fs::create_dir(dir.path().join(folder)).unwrap();
        }
        fs::write(dir.path().join("haproxy-tls-1.cfg"), "").unwrap();
        fs::write(dir.path().join("bench-one-tls-note"), "").unwrap();
        remove_agent_certificates(dir.path()).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["bench-one-tls-note", "haproxy-tls-1.cfg", "nginx", "tls"]
        );
    }

    #[test]
    fn options_have_defaults_and_bounds() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let options = Options::parse(&[]).unwrap().unwrap();
        assert_eq!(options.duration, Duration::from_secs(DURATION_SECS.default));
        assert_eq!(options.connections, CONNECTIONS.default);
        assert_eq!(options.rounds, ROUNDS.default);
        assert_eq!(options.latency_rounds, LATENCY_ROUNDS.default);
        assert_eq!(options.latency_round(), Duration::from_secs(5));
        let options = Options::parse(&args(&[
            "--duration",
            "3",
            "--connections",
            "8",
            "--rate",
            "500",
            "--rounds",
            "5",
            "--latency-rounds",
            "20",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                options.duration,
                options.connections,
                options.rate,
                options.rounds,
                options.latency_rounds
            ),
            (Duration::from_secs(3), 8, 500, 5, 20)
        );
        // Half of three seconds in whole seconds, as oha is given them; a one-second row's
        // rounds still last a second.
        assert_eq!(options.latency_round(), Duration::from_secs(1));
        let short = Options::parse(&args(&["--duration", "1"]))
            .unwrap()
            .unwrap();
        assert_eq!(short.latency_round(), Duration::from_secs(1));
        for bad in [
            &["--duration", "0"][..],
            &["--connections", "0"],
            &["--connections", "100000"],
            &["--rate", "0"],
            &["--rounds", "0"],
            &["--rounds", "16"],
            &["--latency-rounds", "0"],
            &["--latency-rounds", "31"],
            &["--duration"],
            &["--fast"],
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
