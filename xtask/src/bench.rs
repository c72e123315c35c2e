//! `cargo xtask bench`: picks the benchmark (`proxy`, `push`) and walks its options. Benchmarks,
//! not tests: `cargo test` never runs them, and they fail only when something is broken.
//!
//! - [`proxy`]: the agent's data path against haproxy and nginx (`target/bench/proxy.json`),
//!   with [`tools`] (installing haproxy, nginx, wrk, h2load) and [`parse`] (their output);
//! - [`push`]: how long a policy change takes to reach every agent (`target/bench/push.json`);
//! - shared by both: [`procfs`] (CPU seconds and RSS from `/proc`), [`percentile`], and
//!   [`report`] (rounding, the commit and versions, writing the JSON file).

use anyhow::{Context, Result, bail};

mod parse;
pub(crate) mod percentile;
mod procfs;
mod proxy;
mod push;
pub(crate) mod report;
mod tools;

/// Where generated configs, logs, raw load-generator output and the JSON reports go, under the
/// workspace root.
const BENCH_DIR: &str = "target/bench";

/// Runs `cargo xtask bench <what>`.
pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("proxy") => proxy::run(&args[1..]),
        Some("push") => push::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{}\n\n{}", proxy::USAGE, push::USAGE);
            Ok(())
        }
        Some(other) => bail!("unknown benchmark `{other}`: `proxy` or `push`"),
        None => bail!("which benchmark? `proxy` or `push`"),
    }
}

/// Walks a benchmark's options, each `--name VALUE` with `name` among `names`, handing them to
/// `set` in order. Returns `false` after printing `usage` for `--help`: the caller does not run.
pub(crate) fn parse_options(
    args: &[String],
    usage: &str,
    names: &[&str],
    mut set: impl FnMut(&str, &str) -> Result<()>,
) -> Result<bool> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{usage}");
                return Ok(false);
            }
            name if names.contains(&name) => {
                let value = args
                    .next()
                    .with_context(|| format!("{name} needs a value\n\n{usage}"))?;
                set(name, value)?;
            }
            other => bail!("unknown option `{other}`\n\n{usage}"),
        }
    }
    Ok(true)
}
