//! `cargo xtask bench registry`: what a fleet's heartbeats cost the control plane. A three-node
//! control plane, N simulated agents in worker processes (each with its own node certificate
//! and connection, spread round-robin over the nodes, as real agents spread), every agent
//! registering once and then heart-beating as the agent does (a third of the lease); over a
//! steady window, each node's CPU and RSS and the heartbeats' rate, errors and latency. Prints
//! a table and writes `target/bench/registry.json`. Fails only when something is broken, never
//! because it is slow.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hyphae_integration::trust;
use hyphae_policies::CertificatesConfig;
use serde_json::{Value, json};

use super::BENCH_DIR;
use super::percentile::Summary;
use super::procfs::{clock_ticks, cpu_seconds, load_average, machine_busy_seconds, memory_kib};
use super::push::{NODES, Node, limits_spec, raise_fd_limit, start_cluster};
use super::report::{
    self, MILLIS_DECIMALS, SECONDS_DECIMALS, commit, first_line, relative, rounded, write_json,
};
use crate::options::{Bounded, parse_options};
use crate::util;
use worker::Share;

mod certificates;
mod worker;

/// `--agents`: agents to simulate. At most 45,000: each node's share of the connections
/// (15,000) then stays under its default `maxConnections` (16,384).
const AGENTS: Bounded<usize> = Bounded::new("--agents", 20_000, 1..=45_000);
/// `--duration`: seconds of the steady window measured.
const DURATION_SECS: Bounded<u64> = Bounded::new("--duration", 30, 5..=300);
/// Agents per worker process. Each agent holds a connection, so a file descriptor, and one
/// process may hold only as many as its hard open-file limit (often 20,000, which only root's
/// `ulimit -Hn` raises): the agents are spread over processes of at most this many.
const AGENTS_PER_WORKER: usize = 10_000;
/// Measured with the cluster idle, before any agent connects: what the nodes cost doing
/// nothing (Raft heartbeats, keepers), to set the window's figures against.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// Heartbeat intervals waited after the last registration before the window: every agent
/// has beaten since, and the registrations' Raft work (snapshots, compaction) has settled.
const SETTLE_INTERVALS: u32 = 2;
/// Longest the whole population may take to register; agents still unregistered then are
/// left out (and reported).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(180);
/// Issue 11's target: the heartbeats of 20,000 agents under this much of one core on the
/// leader, in percent.
const LEADER_CPU_TARGET_PERCENT: f64 = 10.0;
/// The argument that makes this binary a worker process (not a user option: the coordinator
/// passes it to the copies of itself it starts).
const WORKER_ARG: &str = "--worker";

/// `cargo xtask bench registry --help`.
pub const USAGE: &str = "usage: cargo xtask bench registry [--agents N] [--duration SECS]

Starts a three-node control plane (release build) and N simulated agents in worker processes
of this binary (10,000 each), each agent with its own node certificate (signed with the
cluster's root) and its own HTTP/2 connection to one node, round-robin over the nodes. Every
agent registers once, then heartbeats every third of the lease as the agent does (followers
answer heartbeats themselves and pass them to the leader in batches every 100 ms). After the registrations settle it measures a steady window:
each node's CPU (user+system, as % of one core) and RSS, the heartbeats answered per second,
errors, and heartbeat latency p50/p99 as the agents see it. Prints a table and writes
target/bench/registry.json; node logs go to target/bench/registry-cluster/.

options:
  --agents N        agents to simulate (default 20000, at most 45000)
  --duration SECS   seconds of the steady window (default 30)

Every agent holds a file descriptor in a worker and on a node: the bench raises its soft
open-file limit to the hard limit, and asks for `ulimit -n` when even that is too low.";

/// What the command line asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Options {
    /// Agents to simulate.
    agents: usize,
    /// The steady window.
    duration: Duration,
}

impl Options {
    /// Parses `--agents N` and `--duration SECS`; `None` for `--help`.
    fn parse(args: &[String]) -> Result<Option<Options>> {
        let mut options = Options {
            agents: AGENTS.default,
            duration: Duration::from_secs(DURATION_SECS.default),
        };
        let names = [AGENTS.name, DURATION_SECS.name];
        let run = parse_options(args, USAGE, &names, |name, text| {
            if name == AGENTS.name {
                options.agents = AGENTS.parse(text)?;
            } else {
                options.duration = Duration::from_secs(DURATION_SECS.parse(text)?);
            }
            Ok(())
        })?;
        Ok(run.then_some(options))
    }
}

/// `cargo xtask bench registry`.
pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some(WORKER_ARG) {
        return worker::run();
    }
    let Some(options) = Options::parse(args)? else {
        return Ok(());
    };
    if super::ran_in_release("registry", args)? {
        return Ok(());
    }
    let root = util::root();
    let bin = root.join("target/release");
    // The nodes inherit this limit; each holds its share of the agents' connections.
    let fd_limit = raise_fd_limit(options.agents.div_ceil(NODES))?;
    let dir = root.join(BENCH_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let cluster_dir = dir.join("registry-cluster");
    util::empty_dir(&cluster_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a runtime")?;

    eprintln!(
        "xtask: bench registry with {} agents, a {:?} window",
        options.agents, options.duration
    );
    let spec = format!(
        "{}    maxNodes: {}\n",
        limits_spec(options.agents),
        options.agents
    );
    let (cluster, leader, nodes) = start_cluster(
        &bin.join("hyphae-control-plane"),
        &cluster_dir,
        &spec,
        &runtime,
    )?;
    let bench = Bench {
        options,
        ticks_per_second: clock_ticks()?,
        root_dir: trust::shared_root(&bin.join("hyphae"))?.to_path_buf(),
        nodes,
        leader,
    };
    let mut measured = bench
        .measure()
        .with_context(|| format!("node logs are in {}", relative(&cluster_dir)))?;
    let leader_after = runtime.block_on(cluster.leader())?;
    measured.leader_after = leader_after;
    drop(cluster);

    print!("{}", bench.report(&measured));
    let versions = json!({
        "hyphae-control-plane":
            first_line(Command::new(bin.join("hyphae-control-plane")).arg("--version")),
    });
    write_json(
        &dir,
        "registry.json",
        &bench.json(&measured, fd_limit, versions),
    )
}

/// The run's settings and the cluster it measures.
struct Bench {
    /// What the command line asked for.
    options: Options,
    /// Clock ticks per second of `/proc`'s CPU times.
    ticks_per_second: f64,
    /// The cluster's root, with its key, which the workers sign the agents' certificates with.
    root_dir: PathBuf,
    /// The nodes, node 1 first.
    nodes: Vec<Node>,
    /// The leader when the agents started.
    leader: u64,
}

/// What the run measured.
struct Measured {
    /// Worker processes the agents ran in.
    workers: usize,
    /// Agents that registered.
    registered: usize,
    /// From starting the workers until every agent registered (or gave up).
    register_wall: Duration,
    /// Registration attempts that failed (each tried again).
    register_errors: u64,
    /// The first of them.
    first_register_error: Option<String>,
    /// The lease the control plane granted.
    ttl: Duration,
    /// The heartbeat interval the agents derived from it.
    every: Duration,
    /// The steady window, as measured.
    window: Duration,
    /// Heartbeats answered in the window.
    answered: u64,
    /// Heartbeats that failed in the window.
    errors: u64,
    /// The first of them.
    first_error: Option<String>,
    /// Heartbeat latencies in the window, over every agent.
    latency: Option<Summary>,
    /// Each node, node 1 first.
    nodes: Vec<NodeCost>,
    /// User plus system CPU seconds of the workers during the window.
    workers_cpu_seconds: f64,
    /// CPU seconds the rest of the machine used during the window: high values mean the
    /// figures are disturbed by other work.
    others_cpu_seconds: f64,
    /// The leader after the window (a change means an election disturbed the run).
    leader_after: u64,
}

/// What one node did.
struct NodeCost {
    /// Node id (1-based).
    id: u64,
    /// Whether it led.
    leader: bool,
    /// Agents talking to it.
    agents: usize,
    /// Heartbeats of its agents answered in the window.
    answered: u64,
    /// Their latencies.
    latency: Option<Summary>,
    /// CPU seconds per second with no agent connected.
    idle_cpu: f64,
    /// CPU seconds spent while the agents registered.
    register_cpu_seconds: f64,
    /// CPU seconds during the window.
    cpu_seconds: f64,
    /// Resident memory before any agent connected.
    rss_idle_kib: u64,
    /// Resident memory with every agent registered, at the window's start.
    rss_registered_kib: u64,
    /// Resident memory at the window's end.
    rss_after_kib: u64,
    /// Peak resident memory (`VmHWM`) at the window's end.
    rss_peak_kib: u64,
}

impl Bench {
    /// Measures the idle cluster, registers the agents, lets them settle, and measures the
    /// steady window.
    fn measure(&self) -> Result<Measured> {
        let agents = self.options.agents;
        let pids: Vec<u32> = self.nodes.iter().map(|n| n.pid).collect();
        let rss = |field: &str| -> Result<Vec<u64>> {
            pids.iter().map(|&pid| memory_kib(&[pid], field)).collect()
        };
        let cpu = |pids: &[u32]| -> Result<Vec<f64>> {
            pids.iter()
                .map(|&pid| cpu_seconds(&[pid], self.ticks_per_second))
                .collect()
        };
        let spent = |after: &[f64], before: &[f64]| -> Vec<f64> {
            after.iter().zip(before).map(|(a, b)| a - b).collect()
        };

        let before = cpu(&pids)?;
        let idle_started = Instant::now();
        std::thread::sleep(IDLE_WINDOW);
        let idle_wall = idle_started.elapsed().as_secs_f64();
        let idle_cpu: Vec<f64> = spent(&cpu(&pids)?, &before)
            .into_iter()
            .map(|s| s / idle_wall)
            .collect();
        let rss_idle = rss("VmRSS")?;

        let leader_pid = self
            .nodes
            .iter()
            .find(|n| n.id == self.leader)
            .map_or(0, |n| n.pid);
        eprintln!(
            "xtask: node {} leads (pid {leader_pid}); registering {agents} agents",
            self.leader
        );
        let before = cpu(&pids)?;
        let registering = Instant::now();
        let mut workers = Vec::new();
        for (index, first) in (0..agents).step_by(AGENTS_PER_WORKER).enumerate() {
            let share = Share {
                nodes: self.nodes.iter().map(|n| n.address).collect(),
                first,
                count: AGENTS_PER_WORKER.min(agents - first),
                root_dir: self.root_dir.clone(),
                trust_domain: CertificatesConfig::default().trust_domain,
                register_timeout: REGISTER_TIMEOUT,
            };
            workers.push(Worker::start(index, &share)?);
        }
        let mut registered = 0;
        let mut register_errors = 0;
        let mut first_register_error = None;
        let mut ttl_ms = 0;
        for worker in &mut workers {
            let line = worker.read()?;
            registered += line["registered"].as_u64().unwrap_or(0) as usize;
            register_errors += line["registerErrors"].as_u64().unwrap_or(0);
            ttl_ms = ttl_ms.max(line["ttlMs"].as_u64().unwrap_or(0));
            if first_register_error.is_none() {
                first_register_error = line["firstRegisterError"].as_str().map(str::to_string);
            }
        }
        let register_wall = registering.elapsed();
        let register_cpu = spent(&cpu(&pids)?, &before);
        ensure!(
            registered > 0,
            "no agent registered within {REGISTER_TIMEOUT:?}; the first failure: {}",
            first_register_error.as_deref().unwrap_or("?")
        );
        let ttl = Duration::from_millis(ttl_ms);
        let every = worker::heartbeat_interval(ttl);
        eprintln!(
            "xtask: {registered} agents registered in {:.1} s; a heartbeat every {every:?}; \
             settling for {:?}",
            register_wall.as_secs_f64(),
            every * SETTLE_INTERVALS
        );
        std::thread::sleep(every * SETTLE_INTERVALS);

        let worker_pids: Vec<u32> = workers.iter().map(Worker::pid).collect();
        let rss_registered = rss("VmRSS")?;
        let nodes_before = cpu(&pids)?;
        let workers_before: f64 = cpu(&worker_pids)?.iter().sum();
        let machine_before = machine_busy_seconds(self.ticks_per_second)?;
        for worker in &mut workers {
            worker.send("measure")?;
        }
        let started = Instant::now();
        eprintln!(
            "xtask: measuring for {:?} (leader pid {leader_pid})",
            self.options.duration
        );
        std::thread::sleep(self.options.duration);
        for worker in &mut workers {
            worker.send("report")?;
        }
        let window = started.elapsed();
        let nodes_cpu = spent(&cpu(&pids)?, &nodes_before);
        let workers_cpu = cpu(&worker_pids)?.iter().sum::<f64>() - workers_before;
        let machine = machine_busy_seconds(self.ticks_per_second)? - machine_before;
        let (rss_after, rss_peak) = (rss("VmRSS")?, rss("VmHWM")?);

        let mut answered = vec![0_u64; self.nodes.len()];
        let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); self.nodes.len()];
        let mut errors = 0;
        let mut first_error = None;
        for worker in &mut workers {
            let report = worker.read()?;
            for (slot, count) in answered.iter_mut().enumerate() {
                *count += report["answered"][slot].as_u64().unwrap_or(0);
            }
            for (slot, list) in latencies.iter_mut().enumerate() {
                let values = report["latenciesUs"][slot].as_array();
                list.extend(
                    values
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_u64)
                        .map(Duration::from_micros),
                );
            }
            errors += report["errors"].as_u64().unwrap_or(0);
            if first_error.is_none() {
                first_error = report["firstError"].as_str().map(str::to_string);
            }
        }
        drop(workers);

        let mut all: Vec<Duration> = latencies.iter().flatten().copied().collect();
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| NodeCost {
                id: node.id,
                leader: node.id == self.leader,
                agents: agents / NODES + usize::from(i < agents % NODES),
                answered: answered[i],
                latency: Summary::of(&mut latencies[i]),
                idle_cpu: idle_cpu[i],
                register_cpu_seconds: register_cpu[i],
                cpu_seconds: nodes_cpu[i],
                rss_idle_kib: rss_idle[i],
                rss_registered_kib: rss_registered[i],
                rss_after_kib: rss_after[i],
                rss_peak_kib: rss_peak[i],
            })
            .collect();
        Ok(Measured {
            workers: agents.div_ceil(AGENTS_PER_WORKER),
            registered,
            register_wall,
            register_errors,
            first_register_error,
            ttl,
            every,
            window,
            answered: answered.iter().sum(),
            errors,
            first_error,
            latency: Summary::of(&mut all),
            nodes,
            workers_cpu_seconds: workers_cpu,
            others_cpu_seconds: (machine - nodes_cpu.iter().sum::<f64>() - workers_cpu).max(0.0),
            leader_after: self.leader,
        })
    }

    /// The human-readable report.
    fn report(&self, m: &Measured) -> String {
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let window = m.window.as_secs_f64();
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let dash = || "-".to_string();
        let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
        let agents = self.options.agents;
        let mut out = format!(
            "\nregistry benchmark: {agents} agents on {NODES} control-plane nodes ({} worker \
             processes), lease {:?}, a heartbeat every {:?}; {cpus} CPUs\n\
             registration: {} of {agents} agents in {:.1} s ({:.0}/s), {} failed attempts\n\
             window {window:.1} s: {:.0} heartbeats/s answered (expected about {:.0}), {} \
             errors, latency p50 {} ms, p99 {} ms, max {} ms\n\n",
            m.workers,
            m.ttl,
            m.every,
            m.registered,
            m.register_wall.as_secs_f64(),
            m.registered as f64 / m.register_wall.as_secs_f64(),
            m.register_errors,
            m.answered as f64 / window,
            m.registered as f64 / m.every.as_secs_f64(),
            m.errors,
            m.latency.map_or_else(dash, |s| ms(s.p50)),
            m.latency.map_or_else(dash, |s| ms(s.p99)),
            m.latency.map_or_else(dash, |s| ms(s.max)),
        );
        out.push_str(&format!(
            "{:>4} {:<9} {:>6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>9} {:>9} {:>10} {:>9}\n",
            "node",
            "role",
            "agents",
            "beats/s",
            "p50 ms",
            "p99 ms",
            "CPU %",
            "idle %",
            "reg CPU s",
            "RSS idle",
            "RSS steady",
            "RSS peak"
        ));
        for n in &m.nodes {
            out.push_str(&format!(
                "{:>4} {:<9} {:>6} {:>8.0} {:>7} {:>7} {:>7.1} {:>8.1} {:>9.1} {:>9} {:>10} {:>9}\n",
                n.id,
                if n.leader { "leader" } else { "follower" },
                n.agents,
                n.answered as f64 / window,
                n.latency.map_or_else(dash, |s| ms(s.p50)),
                n.latency.map_or_else(dash, |s| ms(s.p99)),
                n.cpu_seconds / window * 100.0,
                n.idle_cpu * 100.0,
                n.register_cpu_seconds,
                mib(n.rss_idle_kib),
                mib(n.rss_after_kib),
                mib(n.rss_peak_kib),
            ));
        }
        out.push_str(&format!(
            "(CPU %: user+system of one core over the window; idle %: the same before any agent \
             connected; beats/s and latency: the agents talking to that node, a follower \
             answering theirs and batching them to the leader; RSS in MiB)\n\
             target (issue 11): the leader under {LEADER_CPU_TARGET_PERCENT:.0}% of one core; \
             workers' CPU {:.1}% and the rest of the machine's {:.1}% of one core in the window\n",
            m.workers_cpu_seconds / window * 100.0,
            m.others_cpu_seconds / window * 100.0,
        ));
        if m.leader_after != self.leader {
            out.push_str(&format!(
                "\nleadership moved from node {} to node {} during the run: the figures are \
                 disturbed\n",
                self.leader, m.leader_after
            ));
        }
        if let Some(error) = &m.first_error {
            out.push_str(&format!("\nfirst heartbeat error: {error}\n"));
        }
        if let Some(error) = &m.first_register_error {
            out.push_str(&format!("first registration error: {error}\n"));
        }
        out
    }

    /// The machine-readable report, in the shape of `push.json`.
    fn json(&self, m: &Measured, fd_limit: u64, versions: Value) -> Value {
        let ms = |d: Duration| rounded(d.as_secs_f64() * 1000.0, MILLIS_DECIMALS);
        let seconds = |s: f64| rounded(s, SECONDS_DECIMALS);
        let percent = |s: f64| rounded(s * 100.0, 1);
        let window = m.window.as_secs_f64();
        let summary = |s: &Option<Summary>| {
            s.map(|s| {
                json!({
                    "samples": s.samples,
                    "latencyP50Ms": ms(s.p50),
                    "latencyP99Ms": ms(s.p99),
                    "latencyMaxMs": ms(s.max),
                })
            })
        };
        let mut machine = report::machine();
        machine["loadAverageAtEnd"] = json!(load_average());
        json!({
            "benchmark": "registry",
            "commit": commit(),
            "settings": {
                "nodes": NODES,
                "agents": self.options.agents,
                "windowSeconds": self.options.duration.as_secs(),
                "workers": m.workers,
                "agentsPerWorker": AGENTS_PER_WORKER,
                "leaseTtlMs": m.ttl.as_millis() as u64,
                "heartbeatIntervalMs": m.every.as_millis() as u64,
                "openFileLimit": fd_limit,
            },
            "machine": machine,
            "versions": versions,
            "registration": {
                "registered": m.registered,
                "seconds": seconds(m.register_wall.as_secs_f64()),
                "failedAttempts": m.register_errors,
                "firstError": m.first_register_error,
            },
            "window": {
                "seconds": seconds(window),
                "heartbeatsAnswered": m.answered,
                "heartbeatsPerSecond": rounded(m.answered as f64 / window, 1),
                "errors": m.errors,
                "firstError": m.first_error,
                "latency": summary(&m.latency),
                "workersCpuPercent": percent(m.workers_cpu_seconds / window),
                "othersCpuPercent": percent(m.others_cpu_seconds / window),
                "leaderAfter": m.leader_after,
            },
            "leaderCpuTargetPercent": LEADER_CPU_TARGET_PERCENT,
            "nodes": m.nodes.iter().map(|n| json!({
                "id": n.id,
                "role": if n.leader { "leader" } else { "follower" },
                "agents": n.agents,
                "heartbeatsPerSecond": rounded(n.answered as f64 / window, 1),
                "latency": summary(&n.latency),
                "cpuPercent": percent(n.cpu_seconds / window),
                "cpuSeconds": seconds(n.cpu_seconds),
                "idleCpuPercent": percent(n.idle_cpu),
                "registerCpuSeconds": seconds(n.register_cpu_seconds),
                "rssIdleKib": n.rss_idle_kib,
                "rssRegisteredKib": n.rss_registered_kib,
                "rssAfterKib": n.rss_after_kib,
                "rssPeakKib": n.rss_peak_kib,
            })).collect::<Vec<_>>(),
        })
    }
}

/// A worker process of this binary, simulating a share of the agents; killed when dropped.
struct Worker {
    /// Its place among the workers, for messages.
    index: usize,
    /// The process.
    child: Child,
    /// Where its commands go.
    stdin: ChildStdin,
    /// Where its answers come from.
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts worker `index` on `share`.
    fn start(index: usize, share: &Share) -> Result<Worker> {
        let exe = std::env::current_exe().context("find this binary")?;
        let mut child = Command::new(&exe)
            .args(["bench", "registry", WORKER_ARG])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start worker {index} ({})", exe.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("worker {index} has no pipes");
        };
        let mut worker = Worker {
            index,
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        worker.send(&share.to_json().to_string())?;
        Ok(worker)
    }

    /// Its process id.
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it one line.
    fn send(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .with_context(|| format!("worker {} stopped (its errors are above)", self.index))
    }

    /// Its next answer.
    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        let read = self
            .stdout
            .read_line(&mut line)
            .with_context(|| format!("read worker {}", self.index))?;
        ensure!(
            read > 0,
            "worker {} exited (its errors are above)",
            self.index
        );
        serde_json::from_str(&line).with_context(|| format!("worker {} said {line:?}", self.index))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Everything it measured was read; its agents need no goodbye.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_have_defaults_and_bounds() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Options::parse(&[]).unwrap().unwrap(),
            Options {
                agents: 20_000,
                duration: Duration::from_secs(30)
            }
        );
        let options = Options::parse(&args(&["--agents", "500", "--duration", "10"]))
            .unwrap()
            .unwrap();
        assert_eq!(options.agents, 500);
        assert_eq!(options.duration, Duration::from_secs(10));
        for bad in [
            &["--agents", "0"][..],
            &["--agents", "50000"],
            &["--duration", "1"],
            &["--duration"],
            &["--fast"],
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(Options::parse(&args(&["--help"])).unwrap().is_none());
    }
}
