//! `cargo xtask bench`: picks the benchmark (`proxy`, `cycles`, `push`, `registry`), which walks
//! its own options.
//! Benchmarks, not tests: `cargo test` never runs them, and they fail only when something is broken.
//!
//! - [`proxy`]: the agent's data path against haproxy and nginx (`target/bench/proxy.json`),
//!   with [`tools`] (installing haproxy, nginx, wrk, h2load) and [`parse`] (their output), and
//!   `cycles`, the same path counted under callgrind's cache simulation
//!   (`target/bench/cycles.json`);
//! - [`push`]: how long a policy change takes to reach every agent (`target/bench/push.json`);
//! - [`registry`]: what a fleet's registrations and heartbeats cost the control plane
//!   (`target/bench/registry.json`);
//! - shared by all: [`procfs`] (CPU seconds and RSS from `/proc`), [`percentile`], and
//!   [`report`] (rounding, the commit and versions, writing the JSON file).

use std::process::Command;

use anyhow::{Result, bail};

use crate::util;

mod parse;
pub(crate) mod percentile;
mod procfs;
mod proxy;
mod push;
mod registry;
pub(crate) mod report;
mod tools;

/// Where generated configs, logs, raw load-generator output and the JSON reports go, under the
/// workspace root.
const BENCH_DIR: &str = "target/bench";

/// Builds the control plane and xtask in release mode. The simulated agents of `push` and
/// `registry` drive thousands of TLS connections, and in a debug build they would be slower
/// than the nodes they measure, their own delays counted as the nodes'; so a debug build runs
/// `bench <name> <args>` in the release build instead and answers `true`: it has run there.
fn ran_in_release(name: &str, args: &[String]) -> Result<bool> {
    util::run(util::cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "hyphae-control-plane",
        "-p",
        "xtask",
    ]))?;
    if !cfg!(debug_assertions) {
        return Ok(false);
    }
    let xtask = util::root().join("target/release/xtask");
    util::run(Command::new(xtask).args(["bench", name]).args(args))?;
    Ok(true)
}

/// Runs `cargo xtask hot-functions`, which profiles the bench's agents.
pub fn hot_functions(args: &[String]) -> Result<()> {
    proxy::hot_functions::run(args)
}

/// Runs `cargo xtask pgo`, which builds the agent with profile-guided optimisation.
pub fn pgo(args: &[String]) -> Result<()> {
    proxy::pgo::run(args)
}

/// Runs `cargo xtask bench <what>`.
pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("proxy") => proxy::run(&args[1..]),
        Some("cycles") => proxy::cycles::run(&args[1..]),
        Some("push") => push::run(&args[1..]),
        Some("registry") => registry::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!(
                "{}\n\n{}\n\n{}\n\n{}",
                proxy::USAGE,
                proxy::cycles::USAGE,
                push::USAGE,
                registry::USAGE
            );
            Ok(())
        }
        Some(other) => {
            bail!("unknown benchmark `{other}`: `proxy`, `cycles`, `push` or `registry`")
        }
        None => bail!("which benchmark? `proxy`, `cycles`, `push` or `registry`"),
    }
}
