//! `cargo xtask`: project automation in Rust, so the only tool a fresh machine needs is cargo.
//! One module per subcommand; this file only dispatches.

mod bench;
mod check_systemd;
mod cluster;
mod demo;
mod fleet;
mod nemesis;
mod options;
mod test;
mod util;

use std::process::ExitCode;

/// mimalloc, not glibc's malloc: in `bench push` the simulated agents' allocations were a fifth
/// of this process's CPU, taken from the nodes it measures on the same cores; mimalloc cut its
/// CPU by about 13% (decision 53). The nodes keep glibc's: mimalloc took a node watching
/// 3,333 agents from 116 to 185 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  demo            build everything and walk through what hyphae does today, on this machine
  test            install what the tests need, then run every test of the workspace
  check-systemd   verify the unit files under systemd/ with systemd-analyze
  nemesis [--duration SECS] [--nodes 3|5] [--clients N] [--keys K] [--seed S]
                  clients write and read policies while nodes are killed, paused and restarted
                  and leadership moves; checks the history is linearizable and every node ends
                  with the same state (target/nemesis/history.json)
  bench proxy [--duration SECS] [--connections N] [--rate N] [--agent release|pgo]
                  measure the agent's data path against haproxy and nginx (a benchmark, not a
                  test; installs them, wrk and h2load from apt when missing; target/bench/)
  bench cycles [--requests N] [--connections N] [--agent release|pgo]
                  one agent and haproxy under callgrind's cache and branch simulation: per
                  request instructions, cache misses, mispredicts and estimated cycles, with
                  ratios (needs valgrind; target/bench/cycles.json)
  hot-functions   profile the bench's agents under callgrind and list the functions they ran
                  (agent/link/hot-functions.txt), which the agent's release link keeps together
  pgo             build hyphae-agent with profile-guided optimisation, trained on the bench's
                  traffic (target/pgo/hyphae-agent: the agent to install on hosts)
  bench push [--agents N ...] [--rounds K]
                  time a policy change from a three-node control plane to N simulated agents'
                  watch streams (default 1000, then 5000 agents; target/bench/push.json)
  bench registry [--agents N] [--duration SECS]
                  N simulated agents (default 20000) register with a three-node control plane
                  and heartbeat; each node's CPU and RSS, heartbeat rate, errors and latency
                  over a steady window (target/bench/registry.json)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("test") => test::run(&args[1..]),
        Some("check-systemd") => check_systemd::run(&args[1..]),
        Some("nemesis") => nemesis::run(&args[1..]),
        Some("hot-functions") => bench::hot_functions(&args[1..]),
        Some("pgo") => bench::pgo(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("xtask: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
