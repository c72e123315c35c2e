//! `cargo xtask nemesis`: clients write and linearizably read policies on a 3- or 5-node
//! cluster while a nemesis kills, pauses and restarts nodes and moves leadership; then the
//! history is checked for linearizability and every node's final state compared. A test of
//! the cluster, not a benchmark: it fails when a history is not linearizable or nodes differ.
//!
//! - [`client`]: the clients and how an answer becomes an outcome (ok, failed, unknown);
//! - [`history`]: the operations they recorded; [`checker`]: the linearizability search;
//! - [`faults`]: the nemesis; [`convergence`]: the final states compared;
//! - [`report`]: the figures (operations, time from each fault to the next acknowledged write,
//!   the longest write gap). The run is written to `target/nemesis/history.json`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hyphae_integration::cluster::Cluster;
use hyphae_integration::eventually::wait_for;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::bench::report::{commit, relative, write_json};
use crate::options::{Bounded, parse_options};
use crate::util;

mod checker;
mod client;
mod convergence;
mod faults;
mod history;
mod report;

use checker::Verdict;
use client::Workload;
use history::{History, Outcome};

/// Where the cluster's files and `history.json` go, under the workspace root.
const NEMESIS_DIR: &str = "target/nemesis";
/// `--duration`: seconds of faults and load.
const DURATION_SECS: Bounded<u64> = Bounded::new("--duration", 60, 1..=3600);
/// Cluster sizes accepted by `--nodes`, the first unless it is given.
const SIZES: [usize; 2] = [3, 5];
/// `--clients`: concurrent clients.
const CLIENTS: Bounded<usize> = Bounded::new("--clients", 10, 1..=100);
/// `--keys`: policies written and read.
const KEYS: Bounded<usize> = Bounded::new("--keys", 8, 1..=1000);
/// Search steps the checker may take per key before it answers "undecided".
const CHECK_STEPS: u64 = 20_000_000;
/// Runtime worker threads: the clients and the nemesis (a node restart blocks one).
const WORKER_THREADS: usize = 2;
/// Longest the final reads (one acknowledged read per key) may take once faults have stopped.
const FINAL_READ_PATIENCE: Duration = Duration::from_secs(30);
/// How often a final read that did not succeed is tried again.
const FINAL_READ_RETRY: Duration = Duration::from_millis(100);
/// How long the clients go on after the last fault is healed, so the recovery from it is
/// measured too.
const RECOVERY_TAIL: Duration = Duration::from_secs(5);
/// Latest the clients stop after the planned duration, whatever the nemesis is doing (its last
/// fault may be a leadership transfer that takes up to 15 s).
const CLIENT_GRACE: Duration = Duration::from_secs(60);

/// `cargo xtask nemesis --help`.
pub const USAGE: &str =
    "usage: cargo xtask nemesis [--duration SECS] [--nodes 3|5] [--clients N] [--keys K] [--seed S]

Starts a cluster of control-plane nodes (debug build; files under target/nemesis/), then for
SECS seconds N clients (each bound to one node) write and linearizably read K policies while a
nemesis injects one fault at a time: SIGKILL of the leader or a follower (restarted after up to
4 s), SIGSTOP of the leader or a follower (SIGCONT after up to 4 s), or a leadership transfer;
the clients go on for 5 s after the last fault is healed. Afterwards every node must hold the same policies at the same revisions, and the history
(target/nemesis/history.json) must be linearizable. Prints operations by outcome, the time
from each kind of fault to the next acknowledged write (for leader kills, the failover time)
and the longest write gap. Exits non-zero when the history is not linearizable (or the checker
cannot decide) or the nodes differ.

options:
  --duration SECS  how long clients and nemesis run (default 60)
  --nodes 3|5      cluster size (default 3)
  --clients N      concurrent clients (default 10)
  --keys K         policies written and read (default 8)
  --seed S         random seed of clients and nemesis (default: random, printed)";

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Options {
    duration: Duration,
    nodes: usize,
    clients: usize,
    keys: usize,
    seed: u64,
}

impl Options {
    /// Parses the options; `None` for `--help`.
    fn parse(args: &[String]) -> Result<Option<Options>> {
        let mut options = Options {
            duration: Duration::from_secs(DURATION_SECS.default),
            nodes: SIZES[0],
            clients: CLIENTS.default,
            keys: KEYS.default,
            seed: rand::random(),
        };
        let names = [
            DURATION_SECS.name,
            "--nodes",
            CLIENTS.name,
            KEYS.name,
            "--seed",
        ];
        let run = parse_options(args, USAGE, &names, |name, text| {
            let not_a_number = || format!("{name} `{text}` is not a number");
            match name {
                "--nodes" => {
                    let nodes: usize = text.parse().with_context(not_a_number)?;
                    ensure!(SIZES.contains(&nodes), "--nodes must be 3 or 5");
                    options.nodes = nodes;
                }
                "--seed" => options.seed = text.parse().with_context(not_a_number)?,
                _ if name == DURATION_SECS.name => {
                    options.duration = Duration::from_secs(DURATION_SECS.parse(text)?)
                }
                _ if name == CLIENTS.name => options.clients = CLIENTS.parse(text)?,
                _ => options.keys = KEYS.parse(text)?,
            }
            Ok(())
        })?;
        Ok(run.then_some(options))
    }
}

/// `cargo xtask nemesis`.
pub fn run(args: &[String]) -> Result<()> {
    let Some(options) = Options::parse(args)? else {
        return Ok(());
    };
    util::run(util::cargo().args(["build", "--quiet", "-p", "hyphae-control-plane", "--bins"]))?;
    let root = util::root();
    let dir = root.join(NEMESIS_DIR);
    util::empty_dir(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .context("start the runtime")?;
    let mut cluster = Cluster::configure_with_default_timing(
        &root.join("target/debug/hyphae-control-plane"),
        &dir.join("cluster"),
        options.nodes,
        "",
    )?;
    cluster.start_all()?;
    println!(
        "nemesis: {} nodes, {} clients, {} keys, {} s, seed {} (rerun with --seed {})",
        options.nodes,
        options.clients,
        options.keys,
        options.duration.as_secs(),
        options.seed,
        options.seed
    );
    runtime.block_on(scenario(&mut cluster, &options, &dir))
}

/// Load and faults, then the final reads, the comparison of the nodes and the check.
async fn scenario(cluster: &mut Cluster, options: &Options, dir: &Path) -> Result<()> {
    cluster.leader().await?;
    let history = Arc::new(History::new());
    let workload = Arc::new(Workload {
        addresses: cluster.addresses(),
        keys: options.keys,
        history: Arc::clone(&history),
        next_value: AtomicU64::new(1),
        stopped: AtomicBool::new(false),
    });
    let mut rng = StdRng::seed_from_u64(options.seed);
    let until = Instant::now() + options.duration;
    let mut clients = JoinSet::new();
    for client in 0..options.clients {
        let seed = rng.random();
        let deadline = until + CLIENT_GRACE;
        clients.spawn(client::run(Arc::clone(&workload), client, seed, deadline));
    }
    let faults = faults::run(cluster, &history, &mut rng, until).await;
    tokio::time::sleep(RECOVERY_TAIL).await;
    workload.stopped.store(true, Ordering::Relaxed);
    // Each client ends its last operation within the operation timeout.
    while clients.join_next().await.is_some() {}
    let faults = faults?;
    ensure!(
        cluster.nodes().iter().all(|n| n.is_running()),
        "a fault was left unhealed"
    );

    let leader = cluster.leader().await?;
    final_reads(&workload, options, leader).await?;
    let agreed = convergence::compare(&workload.addresses).await;

    let records = history.records();
    let mut verdicts = Vec::new();
    for (key, operations) in history::per_key(&records) {
        verdicts.push((key, checker::check(&operations, CHECK_STEPS)));
    }
    print!("\n{}", report::table(&records, &faults));
    let document = json!({
        "options": {
            "durationSeconds": options.duration.as_secs(),
            "nodes": options.nodes,
            "clients": options.clients,
            "keys": options.keys,
            "seed": options.seed,
        },
        "commit": commit(),
        "summary": report::json(&records, &faults),
        "verdicts": verdicts.iter().map(|(key, v)| json!({"key": key, "verdict": format!("{v:?}")})).collect::<Vec<_>>(),
        "faults": faults.iter().map(faults::Fault::json).collect::<Vec<_>>(),
        "operations": records.iter().map(history::Record::json).collect::<Vec<_>>(),
        "logs": relative(&dir.join("cluster")),
    });

    let problems = problems(options, &records, &verdicts, &agreed);
    write_json(dir, "history.json", &document)?;
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    println!("verdict: PASS");
    Ok(())
}

/// Prints how the final states and the check came out; returns every problem found.
fn problems(
    options: &Options,
    records: &[history::Record],
    verdicts: &[(usize, Verdict)],
    agreed: &Result<convergence::State, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    match agreed {
        Ok(state) => println!(
            "final state: all {} nodes hold the same {} policies at the same revisions",
            options.nodes,
            state.len()
        ),
        Err(differences) => {
            println!("final state: the nodes differ:\n{differences}");
            problems.push("the nodes' final states differ".to_string());
        }
    }
    for (key, verdict) in verdicts {
        match verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable {
                stuck,
                placed,
                operations,
            } => {
                let op = records.get(*stuck).map(|r| r.json()).unwrap_or_default();
                problems.push(format!(
                    "key-{key} is not linearizable: at most {placed} of its {operations} operations can be ordered; operation {stuck} cannot be placed: {op}"
                ));
            }
            Verdict::Undecided { steps } => problems.push(format!(
                "key-{key}: the checker could not decide within {steps} steps"
            )),
        }
    }
    if verdicts.iter().all(|(_, v)| *v == Verdict::Linearizable) {
        let checked = records
            .iter()
            .filter(|r| r.as_operation().is_some())
            .count();
        println!(
            "linearizability: all {} keys linearizable ({checked} operations checked)",
            verdicts.len()
        );
    }
    problems
}

/// One acknowledged linearizable read of every key through the leader, recorded like any
/// client's, so the last state of each key is checked too.
async fn final_reads(workload: &Workload, options: &Options, leader: u64) -> Result<()> {
    let node = usize::try_from(leader.saturating_sub(1)).context("a node id")?;
    let client = options.clients;
    for key in 0..options.keys {
        let what = format!("a final read of key-{key}");
        wait_for(&what, FINAL_READ_PATIENCE, FINAL_READ_RETRY, || async {
            (client::read(workload, client, node, key).await == Outcome::Ok).then_some(())
        })
        .await?;
    }
    Ok(())
}
