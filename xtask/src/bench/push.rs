//! `cargo xtask bench push`: how long a policy change takes to reach every agent. A three-node
//! control plane, N simulated agents in this process (one watch stream each, HTTP/2 unless
//! `--transport` says otherwise, spread
//! round-robin over the nodes, received on `--receivers` threads of their own), K policy writes
//! to the leader; for each write, the time from its answer until each agent holds the new
//! revision. Prints a table and writes
//! `target/bench/push.json`. Fails only when something is broken, never because it is slow.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyphae_integration::cluster::Cluster;
use hyphae_integration::http::tls_stream;
use hyphae_integration::trust;
use hyphae_policies::registry::{HEARTBEAT_PATH, REGISTER_PATH};
use hyphae_policies::tls::Credentials;
use hyphae_policies::watch::{WATCH_PATH, WATCH_UPGRADE};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;

use super::BENCH_DIR;
use super::percentile::Summary;
use super::procfs::{clock_ticks, cpu_seconds, load_average, machine_busy_seconds, memory_kib};
use super::report::{
    self, MILLIS_DECIMALS, SECONDS_DECIMALS, commit, first_line, relative, rounded, write_json,
};
use crate::options::{Bounded, parse_options};
use crate::util;

/// Nodes in the control plane, with ids 1, 2, 3.
pub(super) const NODES: usize = 3;
/// What the nodes log: errors only, since the bench measures them and logging is work.
pub(super) const NODE_LOG_LEVEL: &str = "error";
/// `--agents`: population sizes, measured in this order (1000 then 5000 unless given). Each
/// agent is a connection, and so a file descriptor, here and on a node.
const AGENTS: Bounded<usize, [usize; 2]> = Bounded::new("--agents", [1000, 5000], 1..=50_000);
/// `--rounds`: policy writes per population size.
const ROUNDS: Bounded<u32> = Bounded::new("--rounds", 10, 1..=1000);
/// `--receivers`: threads that receive the simulated agents' streams, each a single-threaded
/// runtime with its own I/O driver, agent `i` on thread `i mod R`. Two, one per core of the
/// machine the figures come from: with one, the nodes had written everything while this
/// process was still decrypting and parsing what they wrote on one core, the other idle, and
/// the figure measured that queue, not the control plane (decision 53). Real agents receive on
/// hosts of their own. The coordinator (writes, progress) runs on the main thread beside them.
const RECEIVERS: Bounded<usize> = Bounded::new("--receivers", 2, 1..=64);
/// `--transport`: how each simulated agent carries its watch: `upgrade` (an HTTP/1.1
/// connection taken over by the stream, `Upgrade: hyphae-watch`, as agents watch since
/// decision 57), `http2` (a stream on an HTTP/2 connection, as agents watched before) or
/// `http1` (an HTTP/1.1 connection with the stream as a chunked body, measured in decision 56).
const TRANSPORT: &str = "--transport";
/// `--api-connection uplink|shared|http2|none`: where each simulated agent sends its
/// heartbeats, one every [`HEARTBEAT_INTERVAL`]. `uplink` (the default with `--transport
/// upgrade`, as agents do since decision 57): up its watch connection. `shared` (the default
/// with `--transport http2`, as agents did before): as `POST`s on the HTTP/2 connection its
/// watch is a stream of. `http2`: none, but it keeps a second, HTTP/2 connection to its node
/// (idle after one small exchange), so a node's memory per agent counts both (decision 56).
/// `none`: no heartbeats (the default with `--transport http1`).
const API_CONNECTION: &str = "--api-connection";
/// How often a simulated agent heartbeats up its watch connection: a third of the default
/// 15 s lease, as agents do.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// The node every simulated agent's certificate names, registered once before they connect so
/// their heartbeats renew a lease as real agents' do.
const AGENT_NAME: &str = "bench-agent";
/// `--control-plane PATH`: the node binary to measure instead of the workspace's release build,
/// so two builds can be measured in alternating runs on the same machine state.
const CONTROL_PLANE: &str = "--control-plane";
/// Agents connecting at once (from connect until their snapshot), so the nodes' accept
/// backlogs never overflow into SYN retries.
const CONNECT_CONCURRENCY: usize = 128;
/// Longest the whole population may take to connect and receive its snapshots.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a round waits for every agent to hold the revision it wrote; agents still behind
/// then count as missed.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a policy write may take to be answered.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Quiet time before each write, so every round starts from idle streams.
const ROUND_GAP: Duration = Duration::from_millis(200);
/// How often the coordinator checks how many agents are behind (the agents timestamp their
/// own arrivals, so this does not affect the figures).
const PROGRESS_POLL: Duration = Duration::from_millis(5);
/// Pause before an agent whose stream failed connects again.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);
/// Connections from this host each node takes beyond its share of the agents: the peers'
/// Raft connections and the bench's writes, which share the agents' source address.
const SPARE_SOURCE_CONNECTIONS: usize = 64;
/// File descriptors the bench needs beside one per agent: the nodes' pipes, the runtime, the
/// write connection, logs.
const SPARE_FDS: u64 = 256;
/// The example policies stored before the agents connect (one write), so snapshots and the
/// nodes' per-revision work have a realistic size. Under `policies/examples/`.
const SEED_FILES: [&str; 4] = [
    "services.yaml",
    "routes.yaml",
    "access.yaml",
    "external.yaml",
];
/// The `ServicePolicy` each round rewrites.
const CHANGED_POLICY: &str = "bench-push";

/// `cargo xtask bench push --help`.
pub const USAGE: &str =
    "usage: cargo xtask bench push [--agents N ...] [--rounds K] [--receivers R]
                               [--transport upgrade|http2|http1]
                               [--api-connection uplink|http2|none]
                               [--control-plane PATH]

Starts a three-node control plane (release build), opens N simulated agents in this process
(one watch stream each on a TLS connection of its own, upgraded from HTTP/1.1 as agents watch
unless --transport says otherwise, heartbeating up it every 5 s, round-robin over the nodes,
received on R threads), waits for every snapshot, then
writes one small ServicePolicy to the leader K times. For each write it measures the time from
the write's answer until each agent holds its revision, and prints p50, p99 and max over all
agents and rounds, with each node's CPU and RSS and this process's CPU. Writes
target/bench/push.json; node logs go to target/bench/push-cluster/.

options:
  --agents N     agents to simulate; repeat or separate with commas (default 1000 then 5000)
  --rounds K     policy writes per population size (default 10)
  --receivers R  threads receiving the agents' streams, each with its own runtime (default 2;
                 1 is how the bench measured before decision 53)
  --transport T  how each agent carries its watch, on a TLS connection of its own: upgrade
                 (HTTP/1.1 upgraded to the bare stream, as agents watch; the default), http2
                 (an HTTP/2 stream, as agents watched before decision 57) or http1 (an
                 HTTP/1.1 chunked body)
  --api-connection A
                 uplink: each agent heartbeats up its watch connection every 5 s, as agents
                 do (the default with --transport upgrade, and only with it); shared: each
                 heartbeats as a POST on its watch's HTTP/2 connection, as agents did before
                 (the default with --transport http2, and only with it); http2: no
                 heartbeats, but a second, HTTP/2 connection per agent (idle after one small
                 request); none: no heartbeats (the default with --transport http1)
  --control-plane PATH
                 measure this hyphae-control-plane binary instead of target/release's (A/B
                 runs of two builds)

Every agent holds a file descriptor here and on a node: the bench raises its soft open-file
limit to the hard limit, and asks for `ulimit -n` when even that is too low.";

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Options {
    /// Population sizes, measured in this order, each on a fresh cluster.
    agents: Vec<usize>,
    /// Policy writes per population size.
    rounds: u32,
    /// Threads receiving the agents' streams.
    receivers: usize,
    /// The node binary, when not the workspace's release build.
    control_plane: Option<PathBuf>,
    /// How each agent carries its watch.
    transport: Transport,
    /// Where each agent sends its heartbeats.
    api_connection: ApiConnection,
}

/// Where a simulated agent sends its heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ApiConnection {
    /// Nowhere: it only watches.
    None,
    /// On a second, HTTP/2 connection to its node (one small exchange, then idle).
    Http2,
    /// Up its upgraded watch connection, every [`HEARTBEAT_INTERVAL`] (decision 57).
    Uplink,
    /// As `POST`s on its watch's HTTP/2 connection, every [`HEARTBEAT_INTERVAL`], as agents
    /// did before decision 57.
    Shared,
}

impl ApiConnection {
    /// `uplink`, `http2` or `none`.
    fn parse(text: &str) -> Result<ApiConnection> {
        match text {
            "uplink" => Ok(ApiConnection::Uplink),
            "shared" => Ok(ApiConnection::Shared),
            "http2" => Ok(ApiConnection::Http2),
            "none" => Ok(ApiConnection::None),
            other => bail!("{API_CONNECTION} `{other}`: expected uplink, shared, http2 or none"),
        }
    }

    /// As the report and the JSON name it.
    fn name(self) -> &'static str {
        match self {
            ApiConnection::None => "none",
            ApiConnection::Http2 => "http2",
            ApiConnection::Uplink => "uplink",
            ApiConnection::Shared => "shared",
        }
    }

    /// Whether each agent heartbeats.
    fn heartbeats(self) -> bool {
        matches!(self, ApiConnection::Uplink | ApiConnection::Shared)
    }

    /// Connections each agent holds to its node.
    fn connections_per_agent(self) -> usize {
        match self {
            ApiConnection::Http2 => 2,
            ApiConnection::None | ApiConnection::Uplink | ApiConnection::Shared => 1,
        }
    }
}

/// How a simulated agent carries its watch stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    /// One HTTP/2 connection per agent, the stream on it, as agents watched before
    /// decision 57.
    Http2,
    /// One HTTP/1.1 connection per agent, the stream as its chunked body.
    Http1,
    /// One HTTP/1.1 connection per agent, taken over by the stream after `101 Switching
    /// Protocols` (decision 56), as agents watch.
    Upgrade,
}

impl Transport {
    /// `upgrade`, `http2` or `http1`.
    fn parse(text: &str) -> Result<Transport> {
        match text {
            "upgrade" => Ok(Transport::Upgrade),
            "http1" => Ok(Transport::Http1),
            "http2" => Ok(Transport::Http2),
            other => bail!("{TRANSPORT} `{other}`: expected upgrade, http2 or http1"),
        }
    }

    /// As the report and the JSON name it.
    fn name(self) -> &'static str {
        match self {
            Transport::Upgrade => "upgrade",
            Transport::Http1 => "http1",
            Transport::Http2 => "http2",
        }
    }
}

impl Options {
    /// Parses `--agents N[,N...]` (repeatable), `--rounds K` and `--receivers R`; `None` for
    /// `--help`.
    fn parse(args: &[String]) -> Result<Option<Options>> {
        let mut agents = Vec::new();
        let mut rounds = ROUNDS.default;
        let mut receivers = RECEIVERS.default;
        let mut control_plane = None;
        let mut transport = Transport::Upgrade;
        let mut api_connection = None;
        let names = [
            AGENTS.name,
            ROUNDS.name,
            RECEIVERS.name,
            CONTROL_PLANE,
            TRANSPORT,
            API_CONNECTION,
        ];
        let run = parse_options(args, USAGE, &names, |name, text| {
            if name == AGENTS.name {
                for text in text.split(',') {
                    agents.push(AGENTS.parse(text)?);
                }
            } else if name == ROUNDS.name {
                rounds = ROUNDS.parse(text)?;
            } else if name == RECEIVERS.name {
                receivers = RECEIVERS.parse(text)?;
            } else if name == TRANSPORT {
                transport = Transport::parse(text)?;
            } else if name == API_CONNECTION {
                api_connection = Some(ApiConnection::parse(text)?);
            } else {
                control_plane = Some(PathBuf::from(text));
            }
            Ok(())
        })?;
        if !run {
            return Ok(None);
        }
        if agents.is_empty() {
            agents = AGENTS.default.to_vec();
        }
        let api_connection = api_connection.unwrap_or(match transport {
            Transport::Upgrade => ApiConnection::Uplink,
            Transport::Http2 => ApiConnection::Shared,
            Transport::Http1 => ApiConnection::None,
        });
        ensure!(
            api_connection != ApiConnection::Shared || transport == Transport::Http2,
            "{API_CONNECTION} shared needs {TRANSPORT} http2: only HTTP/2 carries requests beside a stream"
        );
        ensure!(
            api_connection != ApiConnection::Uplink || transport == Transport::Upgrade,
            "{API_CONNECTION} uplink needs {TRANSPORT} upgrade: only an upgraded watch takes requests"
        );
        Ok(Some(Options {
            agents,
            rounds,
            receivers,
            control_plane,
            transport,
            api_connection,
        }))
    }
}

/// `cargo xtask bench push`.
pub fn run(args: &[String]) -> Result<()> {
    let Some(options) = Options::parse(args)? else {
        return Ok(());
    };
    if super::ran_in_release("push", args)? {
        return Ok(());
    }
    let root = util::root();
    let control_plane = match options.control_plane {
        Some(path) => std::path::absolute(&path)
            .with_context(|| format!("{CONTROL_PLANE} {}", path.display()))?,
        None => root.join("target/release/hyphae-control-plane"),
    };
    let largest = options.agents.iter().copied().max().unwrap_or(0);
    let per_agent = options.api_connection.connections_per_agent();
    let fd_limit = raise_fd_limit(largest * per_agent)?;
    let dir = root.join(BENCH_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let bench = Bench {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the coordinator's runtime")?,
        receivers: options.receivers,
        seed: seed_policies(&root.join("policies/examples"))?,
        ticks_per_second: clock_ticks()?,
        cluster_dir: dir.join("push-cluster"),
        control_plane,
        rounds: options.rounds,
        transport: options.transport,
        api_connection: options.api_connection,
    };
    let mut results = Vec::new();
    for &agents in &options.agents {
        results.push(bench.measure(agents)?);
    }

    print!("{}", report(&bench, &results));
    write_json(&dir, "push.json", &bench.json(&results, fd_limit))
}

/// Makes sure `agents` connections fit under the open-file limit, raising the soft limit to
/// the hard one when needed (no privilege needed; the nodes inherit it). Returns the limit.
pub(super) fn raise_fd_limit(agents: usize) -> Result<u64> {
    let need = agents as u64 + SPARE_FDS;
    let limit = getrlimit(Resource::Nofile);
    // `None` is "unlimited".
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= need {
        return Ok(soft);
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    ensure!(
        hard >= need,
        "{agents} agents need about {need} open files, but the hard limit is {hard}: raise it \
         (as root: `ulimit -Hn {need}; ulimit -n {need}` in the shell that runs the bench) or \
         pass fewer --agents"
    );
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .with_context(|| {
        format!("raise the open-file limit from {soft} to {hard}; run `ulimit -n {need}` first")
    })?;
    eprintln!("xtask: raised the open-file limit from {soft} to {hard}");
    Ok(hard)
}

/// The nodes' spec lines for `agents` agents. Every simulated agent connects from this host's
/// address, where a real fleet has one address per agent, so each node's per-source cap
/// (`maxConnectionsPerSource`, default 1024) is raised to its share of the agents plus the
/// peers and the bench's writes; without it the agents beyond the cap would be refused and
/// reconnect throughout the run.
pub(super) fn limits_spec(agents: usize) -> String {
    let per_source = agents.div_ceil(NODES) + SPARE_SOURCE_CONNECTIONS;
    format!("  limits:\n    maxConnectionsPerSource: {per_source}\n")
}

/// The example policies as one YAML stream.
fn seed_policies(examples: &Path) -> Result<String> {
    let mut yaml = String::new();
    for file in SEED_FILES {
        let path = examples.join(file);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        yaml.push_str("---\n");
        yaml.push_str(&text);
        yaml.push('\n');
    }
    Ok(yaml)
}

/// The policy a round writes: a small `ServicePolicy` whose request timeout changes each round.
fn change(round: u32) -> String {
    format!(
        "kind: ServicePolicy\nmetadata: {{name: {CHANGED_POLICY}}}\nspec:\n  timeouts: {{request: {}s}}\n",
        round + 1
    )
}

/// Settings and tools shared by every population size.
struct Bench {
    /// Runs the writes and watches progress, on the main thread.
    runtime: tokio::runtime::Runtime,
    /// Threads receiving the agents' streams.
    receivers: usize,
    /// The policies stored before the agents connect.
    seed: String,
    /// Unit of the CPU times in `/proc/PID/stat`.
    ticks_per_second: f64,
    /// Where each size's cluster keeps configs, data and logs (emptied per size).
    cluster_dir: PathBuf,
    /// The node binary.
    control_plane: PathBuf,
    /// Policy writes per size.
    rounds: u32,
    /// How each agent carries its watch.
    transport: Transport,
    /// Where each agent sends its heartbeats.
    api_connection: ApiConnection,
}

/// What one population size measured.
struct Measured {
    /// Simulated agents.
    agents: usize,
    /// Agents that held their snapshot before the rounds began.
    connected: usize,
    /// From the first connect until every agent held its snapshot (or the connect timeout).
    connect: Duration,
    /// Each round, in order.
    rounds: Vec<Round>,
    /// Latencies over every agent and round.
    overall: Option<Summary>,
    /// The same, counted from sending each write instead of from its answer: the write's own
    /// Raft round trip included.
    from_send: Option<Summary>,
    /// Streams that failed or ended (each is followed by a reconnect), over the whole run.
    stream_errors: u64,
    /// Heartbeats up the watch connections answered 200, over the whole run.
    heartbeats_renewed: u64,
    /// The same, answered anything else.
    heartbeats_refused: u64,
    /// The first of those, for the report.
    first_refusal: Option<String>,
    /// The first such failure, for the report.
    first_error: Option<String>,
    /// Each node, node 1 first.
    nodes: Vec<NodeCost>,
    /// User plus system CPU seconds of this process during the rounds.
    bench_cpu_seconds: f64,
    /// CPU seconds the rest of the machine (neither the nodes nor this process) used during the
    /// rounds: high values mean the figures are disturbed by other work.
    others_cpu_seconds: f64,
    /// Wall time of the rounds, gaps included.
    rounds_wall: Duration,
}

/// One policy write and how it reached the agents.
struct Round {
    /// The revision the write produced.
    revision: u64,
    /// From sending the write until its answer was read (connect, Raft commit, apply).
    write: Duration,
    /// Latencies of the agents that received it in time.
    summary: Option<Summary>,
    /// Agents that did not hold the revision within the round timeout.
    missed: usize,
    /// Agents that held the revision before this process had read the write's answer
    /// (counted as 0 ms).
    before_ack: usize,
}

/// What one node did during the run.
struct NodeCost {
    /// Node id (1-based).
    id: u64,
    /// Whether it took the writes.
    leader: bool,
    /// Agents watching it.
    watchers: usize,
    /// Latencies of its watchers over every round.
    latency: Option<Summary>,
    /// User plus system CPU seconds during the rounds.
    cpu_seconds: f64,
    /// Resident memory with the seed policies stored, before any agent connected.
    rss_idle_kib: u64,
    /// Resident memory with every agent connected, before the rounds.
    rss_connected_kib: u64,
    /// Resident memory after the rounds.
    rss_after_kib: u64,
    /// Peak resident memory (`VmHWM`) after the rounds.
    rss_peak_kib: u64,
}

impl Bench {
    /// Starts a fresh cluster, measures `agents` agents against it and stops it.
    fn measure(&self, agents: usize) -> Result<Measured> {
        eprintln!(
            "xtask: bench push with {agents} agents, {} rounds",
            self.rounds
        );
        util::empty_dir(&self.cluster_dir)?;
        let (cluster, leader, nodes) = start_cluster(
            &self.control_plane,
            &self.cluster_dir,
            &limits_spec(agents * self.api_connection.connections_per_agent()),
            &self.runtime,
        )?;
        let measured = self
            .runtime
            .block_on(self.drive(agents, &nodes, leader))
            .with_context(|| format!("node logs are in {}", relative(&self.cluster_dir)));
        // Stop the nodes before the next size starts.
        drop(cluster);
        measured
    }

    /// Seeds the policies, connects the agents, runs the rounds and gathers the figures.
    async fn drive(&self, agents: usize, nodes: &[Node], leader: u64) -> Result<Measured> {
        let leader_address = nodes
            .iter()
            .find(|n| n.id == leader)
            .with_context(|| format!("the leader, node {leader}, is not in the cluster"))?
            .address;
        let rss = |field: &str| -> Result<Vec<u64>> {
            nodes.iter().map(|n| memory_kib(&[n.pid], field)).collect()
        };
        let cpu = |pids: &[u32]| -> Result<Vec<f64>> {
            pids.iter()
                .map(|&pid| cpu_seconds(&[pid], self.ticks_per_second))
                .collect()
        };
        let (seeded, _) = apply(leader_address, self.seed.clone())
            .await
            .context("store the example policies")?;
        let rss_idle = rss("VmRSS")?;

        // Every simulated agent presents one node certificate: a watch needs one, and which
        // node it names does not matter to the stream.
        let agent = trust::of(&leader_address.to_string())
            .context("the cluster's root")?
            .node_credentials(&leader_address.to_string(), AGENT_NAME, &[])
            .await
            .context("a node certificate for the simulated agents")?;
        if self.api_connection.heartbeats() {
            register(leader_address, &agent)
                .await
                .context("register the simulated agents' node")?;
        }
        let shared = Arc::new(Shared::new(
            agents,
            self.rounds,
            Some(agent),
            self.transport,
            self.api_connection,
        ));
        let addresses: Vec<SocketAddr> = nodes.iter().map(|n| n.address).collect();
        let connecting = Instant::now();
        let receivers = Receivers::start(self.receivers, &addresses, &shared)?;
        let behind = shared.wait_for(seeded, CONNECT_TIMEOUT).await;
        let connect = connecting.elapsed();
        if behind > 0 {
            eprintln!(
                "xtask: {behind} of {agents} agents had no snapshot after {CONNECT_TIMEOUT:?}; \
                 they count as missed"
            );
        }
        let rss_connected = rss("VmRSS")?;

        let mut pids: Vec<u32> = nodes.iter().map(|n| n.pid).collect();
        pids.push(std::process::id());
        let cpu_before = cpu(&pids)?;
        let machine_before = machine_busy_seconds(self.ticks_per_second)?;
        let started = Instant::now();
        let mut rounds = Vec::new();
        let mut all_latencies = Vec::new();
        let mut from_send = Vec::new();
        let mut by_node = vec![Vec::new(); nodes.len()];
        for round in 0..self.rounds {
            tokio::time::sleep(ROUND_GAP).await;
            let sent = Instant::now();
            let (revision, acked) = apply(leader_address, change(round))
                .await
                .with_context(|| format!("round {}'s write", round + 1))?;
            shared.wait_for(revision, ROUND_TIMEOUT).await;
            let arrivals = shared.arrivals_of(revision);
            for (index, node_latencies) in by_node.iter_mut().enumerate() {
                let watching: Vec<Option<Instant>> = arrivals
                    .iter()
                    .skip(index)
                    .step_by(nodes.len())
                    .copied()
                    .collect();
                node_latencies.extend(latencies_since(&watching, acked).0);
            }
            from_send.extend(latencies_since(&arrivals, sent).0);
            let (mut latencies, missed, before_ack) = latencies_since(&arrivals, acked);
            all_latencies.extend_from_slice(&latencies);
            rounds.push(Round {
                revision,
                write: acked - sent,
                summary: Summary::of(&mut latencies),
                missed,
                before_ack,
            });
        }
        let rounds_wall = started.elapsed();
        let cpu_after = cpu(&pids)?;
        let machine = machine_busy_seconds(self.ticks_per_second)? - machine_before;
        let ours: f64 = cpu_after.iter().zip(&cpu_before).map(|(a, b)| a - b).sum();
        let (rss_after, rss_peak) = (rss("VmRSS")?, rss("VmHWM")?);
        receivers.stop().await?;

        let watchers_of = |index: usize| agents / NODES + usize::from(index < agents % NODES);
        let node_costs = nodes
            .iter()
            .zip(&mut by_node)
            .enumerate()
            .map(|(i, (node, latencies))| NodeCost {
                id: node.id,
                leader: node.id == leader,
                watchers: watchers_of(i),
                latency: Summary::of(latencies),
                cpu_seconds: cpu_after[i] - cpu_before[i],
                rss_idle_kib: rss_idle[i],
                rss_connected_kib: rss_connected[i],
                rss_after_kib: rss_after[i],
                rss_peak_kib: rss_peak[i],
            })
            .collect();
        Ok(Measured {
            agents,
            connected: agents - behind,
            connect,
            rounds,
            overall: Summary::of(&mut all_latencies),
            from_send: Summary::of(&mut from_send),
            stream_errors: shared.errors.load(Ordering::Relaxed),
            heartbeats_renewed: shared.heartbeats_renewed.load(Ordering::Relaxed),
            heartbeats_refused: shared.heartbeats_refused.load(Ordering::Relaxed),
            first_refusal: shared
                .first_refusal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            first_error: shared
                .first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            nodes: node_costs,
            bench_cpu_seconds: cpu_after[nodes.len()] - cpu_before[nodes.len()],
            others_cpu_seconds: (machine - ours).max(0.0),
            rounds_wall,
        })
    }

    /// The machine-readable report, in the shape of `proxy.json`.
    fn json(&self, results: &[Measured], fd_limit: u64) -> Value {
        let ms = |d: Duration| rounded(d.as_secs_f64() * 1000.0, MILLIS_DECIMALS);
        let seconds = |s: f64| rounded(s, SECONDS_DECIMALS);
        let mut machine = report::machine();
        machine["loadAverageAtEnd"] = json!(load_average());
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
        let rows: Vec<Value> = results
            .iter()
            .map(|m| {
                json!({
                    "agents": m.agents,
                    "connected": m.connected,
                    "connectSeconds": seconds(m.connect.as_secs_f64()),
                    "rounds": m.rounds.len(),
                    "latency": summary(&m.overall),
                    "latencyFromSend": summary(&m.from_send),
                    "missed": m.rounds.iter().map(|r| r.missed).sum::<usize>(),
                    "beforeAck": m.rounds.iter().map(|r| r.before_ack).sum::<usize>(),
                    "streamErrors": m.stream_errors,
                    "heartbeatsRenewed": m.heartbeats_renewed,
                    "heartbeatsRefused": m.heartbeats_refused,
                    "firstHeartbeatRefusal": m.first_refusal,
                    "firstStreamError": m.first_error,
                    "benchCpuSeconds": seconds(m.bench_cpu_seconds),
                    "othersCpuSeconds": seconds(m.others_cpu_seconds),
                    "roundsSeconds": seconds(m.rounds_wall.as_secs_f64()),
                    "nodes": m.nodes.iter().map(|n| json!({
                        "id": n.id,
                        "role": if n.leader { "leader" } else { "follower" },
                        "watchers": n.watchers,
                        "latency": summary(&n.latency),
                        "cpuSeconds": seconds(n.cpu_seconds),
                        "rssIdleKib": n.rss_idle_kib,
                        "rssConnectedKib": n.rss_connected_kib,
                        "rssAfterKib": n.rss_after_kib,
                        "rssPeakKib": n.rss_peak_kib,
                    })).collect::<Vec<_>>(),
                    "perRound": m.rounds.iter().map(|r| json!({
                        "revision": r.revision,
                        "writeMs": ms(r.write),
                        "latency": summary(&r.summary),
                        "missed": r.missed,
                        "beforeAck": r.before_ack,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "benchmark": "push",
            "commit": commit(),
            "settings": {
                "nodes": NODES,
                "rounds": self.rounds,
                "receiverThreads": self.receivers,
                "transport": self.transport.name(),
                "apiConnection": self.api_connection.name(),
                "heartbeatIntervalSeconds": HEARTBEAT_INTERVAL.as_secs(),
                "controlPlane": self.control_plane.display().to_string(),
                "connectConcurrency": CONNECT_CONCURRENCY,
                "roundGapMs": ROUND_GAP.as_millis(),
                "roundTimeoutSeconds": ROUND_TIMEOUT.as_secs(),
                "seedPolicies": SEED_FILES,
                "openFileLimit": fd_limit,
            },
            "machine": machine,
            "versions": {
                "hyphae-control-plane":
                    first_line(Command::new(&self.control_plane).arg("--version")),
            },
            "rows": rows,
        })
    }
}

/// A node as the bench reaches and measures it.
pub(super) struct Node {
    /// Node id (1-based).
    pub id: u64,
    /// Its HTTP port.
    pub address: SocketAddr,
    /// Its process.
    pub pid: u32,
}

/// Starts the bench's cluster of [`NODES`] nodes of the binary `control_plane` in `dir` with
/// `spec` (quiet logs): the cluster, its leader's id once every node agrees, and each node's
/// id, port and process.
pub(super) fn start_cluster(
    control_plane: &Path,
    dir: &Path,
    spec: &str,
    runtime: &tokio::runtime::Runtime,
) -> Result<(Cluster, u64, Vec<Node>)> {
    let mut cluster = Cluster::configure(control_plane, dir, NODES, spec)?;
    cluster.set_log_level(NODE_LOG_LEVEL);
    cluster.start_all()?;
    let leader = runtime.block_on(cluster.leader())?;
    let mut nodes = Vec::new();
    for node in cluster.nodes() {
        let pid = node
            .pid()
            .with_context(|| format!("node {} is not running", node.id))?;
        nodes.push(Node {
            id: node.id,
            address: node.address,
            pid,
        });
    }
    Ok((cluster, leader, nodes))
}

/// Each agent's first arrival of a revision (from [`Shared::arrivals_of`]) measured from
/// `since` (the write's answer, or its sending): (latencies, agents without an arrival,
/// arrivals before `since`, which count as 0).
fn latencies_since(arrivals: &[Option<Instant>], since: Instant) -> (Vec<Duration>, usize, usize) {
    let mut latencies = Vec::with_capacity(arrivals.len());
    let (mut missed, mut before) = (0, 0);
    for arrival in arrivals {
        match arrival {
            None => missed += 1,
            Some(at) => {
                before += usize::from(*at < since);
                latencies.push(at.saturating_duration_since(since));
            }
        }
    }
    (latencies, missed, before)
}

/// What the agents share with the coordinator. Each agent writes only its own slots.
struct Shared {
    /// Per agent, the newest revision it holds (0 before its first snapshot).
    holds: Vec<AtomicU64>,
    /// Per agent, each snapshot or delta received: (revision, when its frame arrived).
    arrivals: Vec<Mutex<Vec<(u64, Instant)>>>,
    /// Agents between connect and first event.
    connecting: Semaphore,
    /// Streams that failed or ended.
    errors: AtomicU64,
    /// The first of those failures.
    first_error: Mutex<Option<String>>,
    /// The node certificate every simulated agent presents.
    agent: Option<Credentials>,
    /// How each agent carries its watch.
    transport: Transport,
    /// Where each agent sends its heartbeats.
    api_connection: ApiConnection,
    /// Heartbeats answered up the watch connections: renewed, and anything else.
    heartbeats_renewed: AtomicU64,
    heartbeats_refused: AtomicU64,
    /// The first refused heartbeat's answer.
    first_refusal: Mutex<Option<String>>,
}

impl Shared {
    /// Slots for `agents` agents presenting `agent`, none of which holds anything yet, with
    /// room for a snapshot and `rounds` deltas each (so no round grows them).
    fn new(
        agents: usize,
        rounds: u32,
        agent: Option<Credentials>,
        transport: Transport,
        api_connection: ApiConnection,
    ) -> Shared {
        let room = rounds as usize + 1;
        Shared {
            agent,
            transport,
            api_connection,
            heartbeats_renewed: AtomicU64::new(0),
            heartbeats_refused: AtomicU64::new(0),
            first_refusal: Mutex::new(None),
            holds: (0..agents).map(|_| AtomicU64::new(0)).collect(),
            arrivals: (0..agents)
                .map(|_| Mutex::new(Vec::with_capacity(room)))
                .collect(),
            connecting: Semaphore::new(CONNECT_CONCURRENCY),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    /// Records that `agent` received `revision` at `at`.
    fn received(&self, agent: usize, revision: u64, at: Instant) {
        self.arrivals[agent]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((revision, at));
        self.holds[agent].fetch_max(revision, Ordering::Relaxed);
    }

    /// Counts a heartbeat's answer, keeping the first refusal for the report.
    fn heartbeat_answered(&self, status: u16, answer: &str) {
        if status == 200 {
            self.heartbeats_renewed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.heartbeats_refused.fetch_add(1, Ordering::Relaxed);
        self.first_refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| format!("{status}: {answer}"));
    }

    /// Counts a failed stream.
    fn failed(&self, agent: usize, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| format!("agent {agent}: {error}"));
    }

    /// Agents that do not hold `revision` yet.
    fn behind(&self, revision: u64) -> usize {
        self.holds
            .iter()
            .filter(|h| h.load(Ordering::Relaxed) < revision)
            .count()
    }

    /// Waits until every agent holds `revision`, or `timeout`; returns how many do not.
    async fn wait_for(&self, revision: u64, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let behind = self.behind(revision);
            if behind == 0 || Instant::now() >= deadline {
                return behind;
            }
            tokio::time::sleep(PROGRESS_POLL).await;
        }
    }

    /// Per agent, when it first received `revision` or a later one.
    fn arrivals_of(&self, revision: u64) -> Vec<Option<Instant>> {
        self.arrivals
            .iter()
            .map(|log| {
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .find(|(r, _)| *r >= revision)
                    .map(|(_, at)| *at)
            })
            .collect()
    }
}

/// The threads that run the simulated agents, each a single-threaded runtime of its own (its own
/// I/O driver and timers), so receiving spreads over the cores as real agents' hosts would.
struct Receivers {
    /// Set to end every agent.
    stop: tokio::sync::watch::Sender<bool>,
    /// The threads, each ending once its agents have.
    threads: Vec<std::thread::JoinHandle<Result<()>>>,
}

impl Receivers {
    /// Starts `threads` threads running agents `0..shared.holds.len()`, agent `i` on thread
    /// `i mod threads`, watching node `i mod nodes`.
    fn start(threads: usize, nodes: &[SocketAddr], shared: &Arc<Shared>) -> Result<Receivers> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let agents = shared.holds.len();
        let mut handles = Vec::with_capacity(threads);
        for thread in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("start a receiving thread's runtime")?;
            let shared = Arc::clone(shared);
            let nodes = nodes.to_vec();
            let mut stopped = stopped.clone();
            let handle = std::thread::Builder::new()
                .name(format!("receiver-{thread}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let mut watchers = JoinSet::new();
                        for agent in (thread..agents).step_by(threads) {
                            let server = nodes[agent % nodes.len()];
                            watchers.spawn(watch(agent, server, Arc::clone(&shared)));
                        }
                        // An error here means the sender is gone: stop as well.
                        let _ = stopped.wait_for(|stop| *stop).await;
                        watchers.shutdown().await;
                    });
                    Ok(())
                })
                .context("start a receiving thread")?;
            handles.push(handle);
        }
        Ok(Receivers {
            stop,
            threads: handles,
        })
    }

    /// Ends every agent and waits for the threads.
    async fn stop(self) -> Result<()> {
        self.stop.send_replace(true);
        let threads = self.threads;
        tokio::task::spawn_blocking(move || {
            for thread in threads {
                match thread.join() {
                    Ok(result) => result?,
                    Err(_) => bail!("a receiving thread panicked"),
                }
            }
            Ok(())
        })
        .await
        .context("wait for the receiving threads")?
    }
}

/// One simulated agent: watches `server` until aborted, reconnecting after each failure.
async fn watch(agent: usize, server: SocketAddr, shared: Arc<Shared>) {
    loop {
        let permit = shared.connecting.acquire().await.ok();
        let error = match stream(agent, server, &shared, permit).await {
            Ok(()) => "the stream ended".to_string(),
            Err(error) => format!("{error:#}"),
        };
        shared.failed(agent, error);
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// One watch stream, from connect until it ends; `permit` is released at the first event.
async fn stream(
    agent: usize,
    server: SocketAddr,
    shared: &Shared,
    mut permit: Option<SemaphorePermit<'_>>,
) -> Result<()> {
    let mut request = Request::get(format!("https://{server}{WATCH_PATH}"));
    if shared.transport == Transport::Upgrade {
        request = request
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, WATCH_UPGRADE);
    }
    let request = request
        .body(Full::default())
        .context("build the watch request")?;
    // The agent's connection for registration and heartbeats, when the watch has its own.
    let api = match shared.api_connection {
        ApiConnection::Http2 => Some(api_connection(server, shared.agent.as_ref()).await?),
        ApiConnection::None | ApiConnection::Uplink | ApiConnection::Shared => None,
    };
    let api = async {
        match api {
            Some((_sender, connection)) => connection.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(api);
    // Each sender lives as long as its stream: a client whose handle is gone may close.
    let (mut h2_sender, mut h1_sender) = (None, None);
    // The watch's HTTP/2 connection, when heartbeats go beside the stream on it.
    let mut h2_heartbeats = None;
    let (response, connection): (Answer<'_>, Connection<'_>) = match shared.transport {
        Transport::Http2 => {
            let (sender, connection) = connect(server, shared.agent.as_ref()).await?;
            if shared.api_connection == ApiConnection::Shared {
                h2_heartbeats = Some(sender.clone());
            }
            let sender = h2_sender.insert(sender);
            (Box::pin(sender.send_request(request)), Box::pin(connection))
        }
        Transport::Http1 | Transport::Upgrade => {
            let stream = tls_stream(&server.to_string(), shared.agent.as_ref(), &[b"http/1.1"])
                .await
                .with_context(|| format!("connect to {server}"))?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .with_context(|| format!("HTTP/1.1 handshake with {server}"))?;
            let sender = h1_sender.insert(sender);
            (
                Box::pin(sender.send_request(request)),
                Box::pin(connection.with_upgrades()),
            )
        }
    };
    let receive = async {
        let mut response = response.await.context("send the watch request")?;
        let upgrade = shared.transport == Transport::Upgrade;
        let expected = if upgrade {
            StatusCode::SWITCHING_PROTOCOLS
        } else {
            StatusCode::OK
        };
        ensure!(
            response.status() == expected,
            "the watch answered {}",
            response.status()
        );
        // The upgraded connection's sending half, when heartbeats go up it.
        let mut uplink = None;
        let mut source = if upgrade {
            let upgraded = hyper::upgrade::on(&mut response)
                .await
                .context("take the watch's connection over")?;
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            if shared.api_connection == ApiConnection::Uplink {
                uplink = Some(write);
            }
            Source::Connection(read)
        } else {
            Source::Body(response.into_body())
        };
        let heartbeats = async {
            if uplink.is_none() && h2_heartbeats.is_none() {
                return std::future::pending().await;
            }
            // Spread over the interval, as agents that started at different times are.
            let first = HEARTBEAT_INTERVAL.mul_f64(rand::random_range(0.0..1.0));
            let mut beats =
                tokio::time::interval_at(tokio::time::Instant::now() + first, HEARTBEAT_INTERVAL);
            let body = format!("{{\"node\":\"{AGENT_NAME}\"}}");
            let line = format!("{{\"path\":\"{HEARTBEAT_PATH}\",\"body\":{body}}}\n");
            loop {
                beats.tick().await;
                if let Some(uplink) = uplink.as_mut() {
                    uplink
                        .write_all(line.as_bytes())
                        .await
                        .context("send a heartbeat up the watch connection")?;
                } else if let Some(sender) = h2_heartbeats.as_mut() {
                    let (status, answer) = heartbeat_over_http2(sender, server, &body).await?;
                    shared.heartbeat_answered(status, &answer);
                }
            }
        };
        let events = async {
            let mut lines = Lines::default();
            while let Some(data) = source.next().await? {
                let at = Instant::now();
                for line in lines.push(data) {
                    let event: Seen =
                        serde_json::from_slice(&line).context("decode a watch event")?;
                    match (event.kind, event.revision) {
                        (Kind::Answer, _) => shared.heartbeat_answered(
                            event.status.unwrap_or_default(),
                            &String::from_utf8_lossy(&line),
                        ),
                        (Kind::Heartbeat, _) => {}
                        (_, Some(revision)) => {
                            shared.received(agent, revision, at);
                            permit = None;
                        }
                        (_, None) => bail!("a watch event without a revision"),
                    }
                }
            }
            Ok(())
        };
        tokio::select! {
            result = events => result,
            result = heartbeats => result,
        }
    };
    // After an upgrade the connection's driver ends (it handed the connection over): from
    // then on only the stream is read.
    let mut connection = connection;
    tokio::pin!(receive);
    tokio::select! {
        result = &mut receive => return result,
        result = &mut api => {
            result.context("the API connection failed")?;
            bail!("the API connection closed");
        }
        result = &mut connection => {
            result.context("the connection failed")?;
            if shared.transport != Transport::Upgrade {
                bail!("the connection closed");
            }
        }
    }
    tokio::select! {
        result = receive => result,
        result = api => {
            result.context("the API connection failed")?;
            bail!("the API connection closed")
        }
    }
}

/// An agent's API connection (HTTP/2, its node certificate) after one small exchange on it, as
/// a heartbeat would be: its request handle and its driver.
async fn api_connection(
    server: SocketAddr,
    credentials: Option<&Credentials>,
) -> Result<(http2::SendRequest<Full<Bytes>>, Connection<'static>)> {
    let (mut sender, connection) = connect(server, credentials).await?;
    let mut connection: Connection<'static> = Box::pin(connection);
    let request = Request::get(format!("https://{server}{API_PROBE_PATH}"))
        .body(Full::default())
        .context("build the API request")?;
    let exchange = async {
        let response = sender.send_request(request).await?;
        response.into_body().collect().await.map(|_| ())
    };
    tokio::select! {
        result = exchange => result.context("the API request")?,
        result = &mut connection => {
            result.context("the API connection failed")?;
            bail!("the API connection closed before its answer");
        }
    }
    Ok((sender, connection))
}

/// One heartbeat as a `POST` on a simulated agent's HTTP/2 connection: its status and body.
async fn heartbeat_over_http2(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    server: SocketAddr,
    body: &str,
) -> Result<(u16, String)> {
    let request = Request::post(format!("https://{server}{HEARTBEAT_PATH}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .context("build a heartbeat")?;
    let response = sender
        .send_request(request)
        .await
        .context("send a heartbeat")?;
    let status = response.status().as_u16();
    let answer = response
        .into_body()
        .collect()
        .await
        .context("read a heartbeat's answer")?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&answer).into_owned()))
}

/// What a simulated agent asks on its API connection: an agent route that does not exist, so
/// the answer is a small 404 and nothing is written.
const API_PROBE_PATH: &str = "/v1/agent/bench";

/// Where a simulated agent reads its stream from.
enum Source {
    /// The answer's body (HTTP/2, or HTTP/1.1 chunked).
    Body(Incoming),
    /// The connection itself (its receiving half), after the upgrade.
    Connection(tokio::io::ReadHalf<TokioIo<hyper::upgrade::Upgraded>>),
}

impl Source {
    /// The next bytes of the stream; `None` at its end.
    async fn next(&mut self) -> Result<Option<Bytes>> {
        match self {
            Source::Body(body) => loop {
                let Some(frame) = body.frame().await else {
                    return Ok(None);
                };
                if let Ok(data) = frame.context("read the watch stream")?.into_data() {
                    return Ok(Some(data));
                }
            },
            Source::Connection(io) => {
                let mut buffer = BytesMut::with_capacity(READ_BYTES);
                let read = io
                    .read_buf(&mut buffer)
                    .await
                    .context("read the watch stream")?;
                Ok((read > 0).then(|| buffer.freeze()))
            }
        }
    }
}

/// Room for one read of an upgraded stream (a delta is a few hundred bytes; a snapshot takes
/// several reads).
const READ_BYTES: usize = 16 * 1024;

/// A client connection's driver, whichever the transport: the caller must poll it.
type Connection<'a> = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send + 'a>>;
/// The watch request's answer, whichever the transport.
type Answer<'a> =
    Pin<Box<dyn Future<Output = hyper::Result<http::Response<Incoming>>> + Send + 'a>>;

/// A client HTTP/2 connection over TLS to `server`, presenting `credentials` (a watch needs a
/// node certificate): the request handle and the connection, which the caller must poll.
async fn connect(
    server: SocketAddr,
    credentials: Option<&Credentials>,
) -> Result<(
    http2::SendRequest<Full<Bytes>>,
    http2::Connection<TokioIo<TlsStream<TcpStream>>, Full<Bytes>, TokioExecutor>,
)> {
    let stream = tls_stream(&server.to_string(), credentials, &[b"h2"])
        .await
        .with_context(|| format!("connect to {server}"))?;
    http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP/2 handshake with {server}"))
}

/// Registers [`AGENT_NAME`] with `server` (the leader) as `agent`, the certificate every
/// simulated agent presents, over HTTP/2: their heartbeats then renew its lease, and a follower
/// answers them itself as it does a real agent's.
async fn register(server: SocketAddr, agent: &Credentials) -> Result<()> {
    let (mut sender, connection) = connect(server, Some(agent)).await?;
    let driving = tokio::spawn(connection);
    let record = json!({
        "name": AGENT_NAME,
        "site": "bench",
        "address": "127.0.0.1:4143",
        "instances": [],
    });
    let request = Request::post(format!("https://{server}{REGISTER_PATH}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(record.to_string())))
        .context("build the registration")?;
    let answer = tokio::time::timeout(WRITE_TIMEOUT, async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    })
    .await
    .context("the registration's answer in time")?
    .context("the registration")?;
    driving.abort();
    ensure!(
        answer.0 == StatusCode::OK,
        "the registration answered {}: {}",
        answer.0,
        String::from_utf8_lossy(&answer.1)
    );
    Ok(())
}

/// `POST /v1/policies` of `yaml` to `server`: the revision written and when the answer was read.
async fn apply(server: SocketAddr, yaml: String) -> Result<(u64, Instant)> {
    let request = Request::post(format!("https://{server}/v1/policies"))
        .header(header::CONTENT_TYPE, "application/yaml")
        .header(
            header::AUTHORIZATION,
            hyphae_integration::credentials::bearer(),
        )
        .body(Full::new(Bytes::from(yaml)))
        .context("build the write")?;
    let exchange = async {
        let (mut sender, connection) = connect(server, None).await?;
        let answer = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        tokio::select! {
            answer = answer => answer.context("POST /v1/policies"),
            result = connection => {
                result.context("the HTTP/2 connection failed")?;
                bail!("the HTTP/2 connection closed before the answer")
            }
        }
    };
    let (status, body) = tokio::time::timeout(WRITE_TIMEOUT, exchange)
        .await
        .with_context(|| format!("POST /v1/policies got no answer within {WRITE_TIMEOUT:?}"))??;
    let acked = Instant::now();
    let text = String::from_utf8_lossy(&body);
    ensure!(
        status == StatusCode::OK,
        "POST /v1/policies answered {status}: {text}"
    );
    let answer: Value = serde_json::from_slice(&body).context("decode the write's answer")?;
    let revision = answer["revision"]
        .as_u64()
        .with_context(|| format!("the write's answer has no revision: {text}"))?;
    Ok((revision, acked))
}

/// What a simulated agent reads of each watch event (`hyphae_policies::watch::WatchEvent`):
/// its type and revision. The rest is checked to be JSON and skipped: decoding policies is
/// the agent's work on its own host, and here it would be this process's CPU taken from the
/// nodes it measures (decision 53).
#[derive(Deserialize)]
struct Seen {
    /// The event's `type`.
    #[serde(rename = "type")]
    kind: Kind,
    /// The revision it brings the reader to (none for an answer).
    #[serde(default)]
    revision: Option<u64>,
    /// An answer's status.
    #[serde(default)]
    status: Option<u16>,
}

/// The types of watch event, as `WatchEvent` names them.
#[derive(Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Snapshot,
    Delta,
    Heartbeat,
    Answer,
}

/// Splits a byte stream into lines, wherever the frames happen to break it.
#[derive(Default)]
struct Lines {
    /// Bytes after the last newline seen.
    partial: BytesMut,
}

impl Lines {
    /// Adds `data` and returns the lines it completed, without their newlines; empty lines
    /// are skipped. Lines wholly inside `data` (the usual case: a node sends each event in
    /// one frame) are slices of it, not copies.
    fn push(&mut self, mut data: Bytes) -> Vec<Bytes> {
        let mut lines = Vec::new();
        if !self.partial.is_empty() {
            let Some(end) = data.iter().position(|&b| b == b'\n') else {
                self.partial.extend_from_slice(&data);
                return lines;
            };
            self.partial.extend_from_slice(&data.split_to(end + 1));
            let line = std::mem::take(&mut self.partial).freeze();
            if line.len() > 1 {
                lines.push(line.slice(..line.len() - 1));
            }
        }
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            let line = data.split_to(end + 1);
            if line.len() > 1 {
                lines.push(line.slice(..line.len() - 1));
            }
        }
        self.partial.extend_from_slice(&data);
        lines
    }
}

/// The human-readable report.
fn report(bench: &Bench, results: &[Measured]) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let dash = || "-".to_string();
    let mut out = format!(
        "\npush benchmark: {NODES} control-plane nodes, {} policy writes per row, agents on \
         {} receiving thread(s) over {}{}, {cpus} CPUs\nlatency: from the write's answer until an \
         agent holds its revision, over every agent and round (0 when the agent had it first); \
         send p99: the same from sending the write\n\n",
        bench.rounds,
        bench.receivers,
        bench.transport.name(),
        match bench.api_connection {
            ApiConnection::Uplink => " with heartbeats up each watch connection every 5 s",
            ApiConnection::Shared => " with heartbeats as POSTs on each connection every 5 s",
            ApiConnection::Http2 => " with an HTTP/2 API connection each",
            ApiConnection::None => "",
        }
    );
    out.push_str(&format!(
        "{:>7} {:>9} {:>8} {:>8} {:>8} {:>10} {:>7} {:>7} {:>10} {:>10} {:>11}\n",
        "agents",
        "connect",
        "p50 ms",
        "p99 ms",
        "max ms",
        "send p99",
        "missed",
        "errors",
        "bench CPU",
        "nodes CPU",
        "others CPU"
    ));
    for m in results {
        let summary = m.overall;
        out.push_str(&format!(
            "{:>7} {:>9} {:>8} {:>8} {:>8} {:>10} {:>7} {:>7} {:>10} {:>10} {:>11}\n",
            m.agents,
            format!("{:.1} s", m.connect.as_secs_f64()),
            summary.map_or_else(dash, |s| ms(s.p50)),
            summary.map_or_else(dash, |s| ms(s.p99)),
            summary.map_or_else(dash, |s| ms(s.max)),
            m.from_send.map_or_else(dash, |s| ms(s.p99)),
            m.rounds.iter().map(|r| r.missed).sum::<usize>(),
            m.stream_errors,
            format!("{:.2} s", m.bench_cpu_seconds),
            format!(
                "{:.2} s",
                m.nodes.iter().map(|n| n.cpu_seconds).sum::<f64>()
            ),
            format!("{:.2} s", m.others_cpu_seconds),
        ));
    }
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    out.push_str(&format!(
        "\nper node during the rounds (CPU: user+system seconds; RSS in MiB)\n\
         {:>7} {:>5} {:<9} {:>8} {:>8} {:>8} {:>7} {:>9} {:>12} {:>10} {:>9}\n",
        "agents",
        "node",
        "role",
        "watchers",
        "p50 ms",
        "p99 ms",
        "CPU s",
        "RSS idle",
        "RSS watching",
        "RSS after",
        "RSS peak"
    ));
    for m in results {
        for n in &m.nodes {
            out.push_str(&format!(
                "{:>7} {:>5} {:<9} {:>8} {:>8} {:>8} {:>7.2} {:>9} {:>12} {:>10} {:>9}\n",
                m.agents,
                n.id,
                if n.leader { "leader" } else { "follower" },
                n.watchers,
                n.latency.map_or_else(dash, |s| ms(s.p50)),
                n.latency.map_or_else(dash, |s| ms(s.p99)),
                n.cpu_seconds,
                mib(n.rss_idle_kib),
                mib(n.rss_connected_kib),
                mib(n.rss_after_kib),
                mib(n.rss_peak_kib),
            ));
        }
    }
    out.push_str(
        "(bench CPU: this process; nodes CPU: the three nodes; others CPU: the rest of the \
         machine during the rounds, which disturbs the figures when high)\n",
    );
    out.push_str("\neach round: write ms (sent until answered) / p99 ms\n");
    for m in results {
        let rounds: Vec<String> = m
            .rounds
            .iter()
            .map(|r| {
                let p99 = r.summary.map_or_else(dash, |s| ms(s.p99));
                format!("{}/{p99}", ms(r.write))
            })
            .collect();
        out.push_str(&format!("{:>7}  {}\n", m.agents, rounds.join(" ")));
    }
    if bench.api_connection.heartbeats() {
        for m in results {
            out.push_str(&format!(
                "\n{} agents: {} heartbeats renewed, {} refused{}\n",
                m.agents,
                m.heartbeats_renewed,
                m.heartbeats_refused,
                m.first_refusal
                    .as_deref()
                    .map(|first| format!(", first: {first}"))
                    .unwrap_or_default()
            ));
        }
    }
    for m in results.iter().filter(|m| m.stream_errors > 0) {
        out.push_str(&format!(
            "\n{} agents: {} stream error(s), first: {}\n",
            m.agents,
            m.stream_errors,
            m.first_error.as_deref().unwrap_or("?")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use hyphae_policies::Policy;

    use super::*;

    #[test]
    fn lines_are_split_wherever_the_frames_break() {
        let mut lines = Lines::default();
        let push = |lines: &mut Lines, data: &'static [u8]| lines.push(Bytes::from_static(data));
        assert!(push(&mut lines, b"{\"a\"").is_empty());
        assert_eq!(
            push(&mut lines, b":1}\n\n{\"b\":2}\n{\"c"),
            vec![
                Bytes::from_static(b"{\"a\":1}"),
                Bytes::from_static(b"{\"b\":2}")
            ]
        );
        assert_eq!(
            push(&mut lines, b"\":3}\n{\"d\":4}\n"),
            vec![
                Bytes::from_static(b"{\"c\":3}"),
                Bytes::from_static(b"{\"d\":4}")
            ]
        );
        assert!(push(&mut lines, b"").is_empty());
        assert!(push(&mut lines, b"{\"e\"").is_empty());
        assert!(push(&mut lines, b":5").is_empty());
        assert_eq!(
            push(&mut lines, b"}\n"),
            vec![Bytes::from_static(b"{\"e\":5}")]
        );
    }

    #[test]
    fn agents_read_the_type_and_revision_of_every_kind_of_event() {
        use hyphae_policies::watch::WatchEvent;
        let events = [
            WatchEvent::Snapshot {
                revision: 3,
                policies: Vec::new(),
                nodes: Vec::new(),
                cluster: Some("c".into()),
                virtual_ips: Default::default(),
            },
            WatchEvent::Delta {
                revision: 4,
                upserts: Vec::new(),
                deletes: vec![("Route".into(), "a".into())],
                node_upserts: Vec::new(),
                node_deletes: vec!["n".into()],
                virtual_ips: None,
            },
            WatchEvent::Heartbeat { revision: 4 },
            WatchEvent::Answer {
                status: 200,
                body: serde_json::json!({"ttlMs": 15000, "revision": 2}),
            },
        ];
        let seen: Vec<(bool, Option<u64>, Option<u16>)> = events
            .iter()
            .map(|event| {
                let seen: Seen =
                    serde_json::from_slice(&serde_json::to_vec(event).unwrap()).unwrap();
                (seen.kind == Kind::Heartbeat, seen.revision, seen.status)
            })
            .collect();
        assert_eq!(
            seen,
            [
                (false, Some(3), None),
                (false, Some(4), None),
                (true, Some(4), None),
                (false, None, Some(200))
            ]
        );
    }

    #[test]
    fn latencies_count_misses_and_early_arrivals() {
        let acked = Instant::now();
        let arrivals = [
            Some(acked + Duration::from_millis(30)),
            None,
            acked.checked_sub(Duration::from_millis(1)),
            Some(acked + Duration::from_millis(10)),
        ];
        let (mut latencies, missed, before_ack) = latencies_since(&arrivals, acked);
        assert_eq!((missed, before_ack), (1, 1));
        let summary = Summary::of(&mut latencies).unwrap();
        assert_eq!(summary.samples, 3);
        assert_eq!(summary.p50, Duration::from_millis(10));
        assert_eq!(summary.max, Duration::from_millis(30));
        assert_eq!(Summary::of(&mut []), None);
    }

    #[test]
    fn arrivals_are_the_first_at_or_after_the_revision() {
        let shared = Shared::new(2, 3, None, Transport::Upgrade, ApiConnection::None);
        let start = Instant::now();
        shared.received(0, 5, start);
        shared.received(0, 7, start + Duration::from_millis(2));
        shared.received(0, 9, start + Duration::from_millis(3));
        assert_eq!(shared.behind(7), 1);
        let arrivals = shared.arrivals_of(6);
        assert_eq!(arrivals, vec![Some(start + Duration::from_millis(2)), None]);
    }

    #[test]
    fn options_have_defaults_and_bounds() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Options::parse(&[]).unwrap().unwrap(),
            Options {
                agents: AGENTS.default.to_vec(),
                rounds: ROUNDS.default,
                receivers: RECEIVERS.default,
                control_plane: None,
                transport: Transport::Upgrade,
                api_connection: ApiConnection::Uplink,
            }
        );
        let options = Options::parse(&args(&[
            "--agents",
            "10,20",
            "--agents",
            "30",
            "--rounds",
            "3",
            "--receivers",
            "1",
            "--transport",
            "upgrade",
            "--api-connection",
            "http2",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(options.agents, vec![10, 20, 30]);
        assert_eq!(options.rounds, 3);
        assert_eq!(options.receivers, 1);
        assert_eq!(options.transport, Transport::Upgrade);
        assert_eq!(options.api_connection, ApiConnection::Http2);
        let options = Options::parse(&args(&["--transport", "http2"]))
            .unwrap()
            .unwrap();
        assert_eq!(options.api_connection, ApiConnection::Shared);
        for bad in [
            &["--agents", "0"][..],
            &["--agents", "many"],
            &["--agents", "100000"],
            &["--rounds", "0"],
            &["--receivers", "0"],
            &["--transport", "h3"],
            &["--api-connection", "yes"],
            &["--transport", "http2", "--api-connection", "uplink"],
            &["--api-connection", "shared"],
            &["--rounds"],
            &["--fast"],
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_node_takes_its_share_of_the_agents_from_one_address() {
        let per_source = |agents: usize| {
            let config = format!(
                "kind: ControlPlaneConfig\nmetadata: {{name: cp-1}}\nspec:\n  id: 1\n{}",
                limits_spec(agents)
            );
            let report = hyphae_policies::load_str("cp-1.yaml", &config, Default::default());
            match report.into_policies().unwrap().as_slice() {
                [Policy::ControlPlaneConfig(config)] => {
                    config.spec.limits.max_connections_per_source as usize
                }
                other => panic!("not one node config: {other:?}"),
            }
        };
        assert_eq!(per_source(10_000), 3334 + SPARE_SOURCE_CONNECTIONS);
        assert_eq!(per_source(1), 1 + SPARE_SOURCE_CONNECTIONS);
    }

    #[test]
    fn every_round_writes_a_different_policy() {
        assert_ne!(change(0), change(1));
        assert!(change(0).contains(CHANGED_POLICY));
    }
}
