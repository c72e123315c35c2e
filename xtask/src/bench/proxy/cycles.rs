//! `cargo xtask bench cycles`: what one request costs one agent and haproxy in the processor,
//! counted rather than timed. Each proxy runs under callgrind with its cache and branch
//! simulation; after a warm-up, the same h2load requests (HTTP/1.1, then HTTP/2) are counted:
//! instructions, first-level cache misses, mispredicted branches, and callgrind's estimate of
//! the cycles they cost. Wall-clock CPU on this shared machine moves by a tenth between runs;
//! these counts repeat, and they show what instruction counts alone hide: the agent runs 1.16×
//! haproxy's instructions per HTTP/1.1 request but misses the instruction cache 2.4× as often
//! (decision 71). Writes `target/bench/cycles.json`; fails only when something is broken.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use super::load::Protocol;
use super::pgo::AgentBuild;
use super::processes::stop;
use super::setup::Setup;
use super::{Bench, Options, RATE};
use crate::bench::parse::{number, parse_h2load};
use crate::bench::report::{commit, machine, relative, write, write_json};
use crate::options::{Bounded, parse_options};
use crate::util;

/// `--requests`: requests counted per proxy and protocol.
const REQUESTS: Bounded<u32> = Bounded::new("--requests", 5_000, 100..=1_000_000);
/// `--connections`: h2load's client connections, one request in flight on each.
const CONNECTIONS: Bounded<u32> = Bounded::new("--connections", 10, 1..=1_000);
/// Requests before the counters are zeroed, so pools are open and first-time work is done.
const WARMUP_REQUESTS: u32 = 200;
/// The proxies compared: the agent's local path and the proxy it is measured against.
const SETUPS: [Setup; 2] = [Setup::OneAgent, Setup::Haproxy];
/// Where the profiles go, under the bench folder.
const PROFILES: &str = "cycles";
/// Cycles the estimate charges per mispredicted branch. The estimate is KCachegrind's default
/// formula, `Ir + 10 Bm + 10 L1m + 100 LLm`: a model, not this processor's figures, that weighs
/// the counts so that one number can be compared.
const CYCLES_PER_MISPREDICT: f64 = 10.0;
/// Cycles the estimate charges per first-level cache miss.
const CYCLES_PER_L1_MISS: f64 = 10.0;
/// Cycles the estimate charges per last-level cache miss.
const CYCLES_PER_LL_MISS: f64 = 100.0;

/// `cargo xtask bench cycles --help`.
pub const USAGE: &str = "usage: cargo xtask bench cycles [--requests N] [--connections N]

Runs one agent (the local path of `bench proxy`'s one-agent row) and haproxy, one thread each,
under callgrind with cache and branch simulation (needs valgrind), sends each the same h2load
requests over HTTP/1.1 and over HTTP/2 after 200 of warm-up, and prints per request:
instructions, first-level instruction and data cache misses, mispredicted branches and the
estimated cycles (Ir + 10 mispredicts + 10 L1 misses + 100 LL misses), with the agent's ratio to
haproxy. Counts repeat from run to run, unlike CPU time. Writes target/bench/cycles.json.

options:
  --requests N       requests counted per proxy and protocol (default 5000)
  --connections N    h2load's connections (default 10)
  --agent BUILD      `release` (default) or `pgo`: the agent `cargo xtask pgo` builds, trained
                     and built first";

/// What the command line asked for.
struct CyclesOptions {
    /// Requests counted per proxy and protocol.
    requests: u32,
    /// h2load's connections.
    connections: u32,
}

/// Callgrind's event counts over the counted requests, by event name (`Ir`, `I1mr`, ...).
#[derive(Debug, Default)]
struct Counts(std::collections::BTreeMap<String, u64>);

impl Counts {
    /// Reads the `events:` and `summary:` lines of a callgrind dump.
    fn parse(profile: &str) -> Result<Counts> {
        let line = |prefix: &str| {
            profile
                .lines()
                .find_map(|line| line.strip_prefix(prefix))
                .with_context(|| format!("no `{prefix}` line in the profile"))
        };
        let names = line("events:")?.split_whitespace();
        let values = line("summary:")?.split_whitespace();
        let mut counts = Counts::default();
        for (name, value) in names.zip(values) {
            counts.0.insert(name.to_string(), number(value, name)?);
        }
        ensure!(
            counts.0.contains_key("Ir") && counts.0.contains_key("Bcm"),
            "the profile has no cache or branch counts: was callgrind run with --cache-sim=yes \
             --branch-sim=yes?"
        );
        Ok(counts)
    }

    /// The events `names` added up.
    fn sum(&self, names: &[&str]) -> f64 {
        names
            .iter()
            .map(|name| self.0.get(*name).copied().unwrap_or(0) as f64)
            .sum()
    }

    /// Per request, the figures the report shows, in its order.
    fn per_request(&self, requests: u64) -> Vec<(&'static str, f64)> {
        let per = |value: f64| value / requests as f64;
        let mispredicts = self.sum(&["Bcm", "Bim"]);
        let l1_misses = self.sum(&["I1mr", "D1mr", "D1mw"]);
        let ll_misses = self.sum(&["ILmr", "DLmr", "DLmw"]);
        let estimated = self.sum(&["Ir"])
            + CYCLES_PER_MISPREDICT * mispredicts
            + CYCLES_PER_L1_MISS * l1_misses
            + CYCLES_PER_LL_MISS * ll_misses;
        vec![
            ("instructions", per(self.sum(&["Ir"]))),
            ("instructionCacheMisses", per(self.sum(&["I1mr"]))),
            ("dataReadMisses", per(self.sum(&["D1mr"]))),
            ("dataWriteMisses", per(self.sum(&["D1mw"]))),
            ("lastLevelMisses", per(ll_misses)),
            ("conditionalMispredicts", per(self.sum(&["Bcm"]))),
            ("indirectMispredicts", per(self.sum(&["Bim"]))),
            ("estimatedCycles", per(estimated)),
        ]
    }
}

/// One proxy over one protocol.
struct Measured {
    /// The proxy.
    setup: Setup,
    /// What h2load spoke.
    protocol: Protocol,
    /// Per request, by name, in the report's order.
    figures: Vec<(&'static str, f64)>,
}

/// `cargo xtask bench cycles`.
pub fn run(args: &[String]) -> Result<()> {
    let (agent_build, args) = AgentBuild::take(args)?;
    let args = &args[..];
    let mut options = CyclesOptions {
        requests: REQUESTS.default,
        connections: CONNECTIONS.default,
    };
    let names = [REQUESTS.name, CONNECTIONS.name];
    let run = parse_options(args, USAGE, &names, |name, text| {
        if name == REQUESTS.name {
            options.requests = REQUESTS.parse(text)?;
        } else {
            options.connections = CONNECTIONS.parse(text)?;
        }
        Ok(())
    })?;
    if !run {
        return Ok(());
    }
    for program in ["valgrind", "callgrind_control"] {
        ensure!(
            util::capture(Command::new(program).arg("--version")).is_ok(),
            "`{program}` is not on PATH: install valgrind (apt-get install valgrind)"
        );
    }
    let mut bench = Bench::new(Options {
        duration: std::time::Duration::from_secs(1),
        connections: options.connections,
        rate: RATE.default,
        rounds: 1,
        latency_rounds: 1,
    })?;
    agent_build.prepare(&mut bench)?;
    let profiles = bench.dir.join(PROFILES);
    util::empty_dir(&profiles)?;
    let mut measured = Vec::new();
    for setup in SETUPS {
        for protocol in Protocol::ALL {
            measured.push(bench.count(setup, protocol, &options, &profiles)?);
        }
    }
    bench.runtime.block_on(stop([&mut bench.backend.process]));
    print!("{}", table(&measured, &options));
    let mut json = report(&measured, &options);
    json["agentBuild"] = agent_build.name().into();
    write_json(&bench.dir, "cycles.json", &json)
}

impl Bench {
    /// Starts `setup` under callgrind, warms it up, counts `options.requests` requests over
    /// `protocol` and stops it.
    fn count(
        &mut self,
        setup: Setup,
        protocol: Protocol,
        options: &CyclesOptions,
        profiles: &Path,
    ) -> Result<Measured> {
        eprintln!(
            "xtask: bench cycles: {} over {}",
            setup.name(),
            protocol.name()
        );
        let label = format!("{}-{}", setup.slug(), protocol.name());
        let out_file = profiles.join(format!("{label}.callgrind"));
        let mut out_arg = std::ffi::OsString::from("--callgrind-out-file=");
        out_arg.push(&out_file);
        self.proxy_wrapper = ["valgrind", "--tool=callgrind", "--cache-sim=yes"]
            .into_iter()
            .chain(["--branch-sim=yes", "--dump-instr=no"])
            .map(std::ffi::OsString::from)
            .chain([out_arg])
            .collect();
        let started = self.start(setup);
        self.proxy_wrapper.clear();
        let mut target = started?;
        let pid = *target
            .proxies
            .first()
            .context("the setup started no proxy")?;
        let address = target.address(protocol);
        let counted = (|| {
            self.send(
                protocol,
                address,
                WARMUP_REQUESTS,
                options,
                &format!("{label}-warmup"),
            )?;
            callgrind_control(pid, "--zero")?;
            let requests = self.send(protocol, address, options.requests, options, &label)?;
            callgrind_control(pid, "--dump")?;
            Ok::<_, anyhow::Error>(requests)
        })();
        self.runtime.block_on(stop(target.processes().rev()));
        let requests = counted?;
        // The dump after zeroing is the first one: `<file>.1`.
        let dump = profiles.join(format!("{label}.callgrind.1"));
        let text = fs::read_to_string(&dump)
            .with_context(|| format!("read the profile {}", relative(&dump)))?;
        let counts = Counts::parse(&text).with_context(|| relative(&dump))?;
        Ok(Measured {
            setup,
            protocol,
            figures: counts.per_request(requests),
        })
    }

    /// Sends `requests` GETs to `address` with h2load over `protocol`; its output goes to
    /// `target/bench/cycles/<label>.txt`. Returns how many completed, all of them.
    fn send(
        &self,
        protocol: Protocol,
        address: std::net::SocketAddr,
        requests: u32,
        options: &CyclesOptions,
        label: &str,
    ) -> Result<u64> {
        let dir = self.dir.join(PROFILES);
        let log = dir.join(format!("{label}-latency.tsv"));
        let mut command = Command::new(&self.tools.h2load);
        if protocol == Protocol::Http1 {
            command.arg("--h1");
        }
        command
            .args(["-c", &options.connections.to_string()])
            .args(["-n", &requests.to_string()])
            .arg("--log-file")
            .arg(&log)
            .arg(format!("http://{address}/"));
        let output = util::capture(&mut command)?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let saved = dir.join(format!("{label}.txt"));
        write(&saved, &format!("$ {}\n{text}", util::describe(&command)))?;
        ensure!(
            output.status.success(),
            "h2load failed with {}; see {}",
            output.status,
            relative(&saved)
        );
        let log_text =
            fs::read_to_string(&log).with_context(|| format!("read {}", relative(&log)))?;
        let load = parse_h2load(&text, &log_text)?;
        ensure!(
            load.errors == 0 && load.requests == u64::from(requests),
            "{} of {requests} requests failed or did not finish; see {}",
            u64::from(requests).saturating_sub(load.requests) + load.errors,
            relative(&saved)
        );
        Ok(load.requests)
    }
}

/// Asks the callgrind running as `pid` to zero its counters or dump them, and waits until it has.
fn callgrind_control(pid: u32, action: &str) -> Result<()> {
    let mut command = Command::new("callgrind_control");
    command.arg(action).arg(pid.to_string());
    let output = util::capture(&mut command)?;
    ensure!(
        output.status.success(),
        "`{}` failed: {}",
        util::describe(&command),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The figure of `setup` over `protocol` named `name`.
fn figure(measured: &[Measured], setup: Setup, protocol: Protocol, name: &str) -> Option<f64> {
    measured
        .iter()
        .find(|m| m.setup == setup && m.protocol == protocol)?
        .figures
        .iter()
        .find_map(|(n, value)| (*n == name).then_some(*value))
}

/// The agent's figures beside haproxy's, per protocol, with their ratio.
fn table(measured: &[Measured], options: &CyclesOptions) -> String {
    let [agent, peer] = SETUPS;
    let mut text = format!(
        "\nPer request, under callgrind ({} requests, {} connections, after {WARMUP_REQUESTS} of \
         warm-up):\n\n{:<24} {:>6} {:>16} {:>10} {:>7}\n",
        options.requests,
        options.connections,
        "",
        "",
        agent.name(),
        peer.name(),
        "ratio"
    );
    for protocol in Protocol::ALL {
        let Some(first) = measured.iter().find(|m| m.protocol == protocol) else {
            continue;
        };
        for (name, _) in &first.figures {
            let (Some(ours), Some(theirs)) = (
                figure(measured, agent, protocol, name),
                figure(measured, peer, protocol, name),
            ) else {
                continue;
            };
            // Below one event per request haproxy's count is noise, not a base for a ratio.
            let ratio = if theirs >= 1.0 {
                format!("{:.2}×", ours / theirs)
            } else {
                "-".to_string()
            };
            text.push_str(&format!(
                "{name:<24} {:>6} {ours:>16.1} {theirs:>10.1} {ratio:>7}\n",
                protocol.name()
            ));
        }
    }
    text
}

/// `target/bench/cycles.json`.
fn report(measured: &[Measured], options: &CyclesOptions) -> Value {
    let rows: Vec<Value> = measured
        .iter()
        .map(|m| {
            let per_request: serde_json::Map<String, Value> = m
                .figures
                .iter()
                .map(|(name, value)| (name.to_string(), json!((value * 10.0).round() / 10.0)))
                .collect();
            json!({
                "setup": m.setup.name(),
                "path": m.setup.path(),
                "protocol": m.protocol.name(),
                "perRequest": per_request,
            })
        })
        .collect();
    json!({
        "commit": commit(),
        "machine": machine(),
        "requests": options.requests,
        "warmupRequests": WARMUP_REQUESTS,
        "connections": options.connections,
        "estimatedCycles": "Ir + 10 (Bcm + Bim) + 10 (I1mr + D1mr + D1mw) + 100 (ILmr + DLmr + DLmw)",
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of a real dump (`callgrind_control --dump` of an agent, 2,000 requests).
    const DUMP: &str = "version: 1\ncreator: callgrind-3.19.0\npid: 1913\ncmd: hyphae-agent\n\
        part: 1\n\ndesc: I1 cache: 32768 B, 64 B, 8-way associative\n\
        events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim\n\
        summary: 65168200 18010000 13540000 4171200 801400 710400 200 1000 600 8474000 547800 558000 152400\n\
        totals: 65168200 18010000 13540000 4171200 801400 710400 200 1000 600 8474000 547800 558000 152400\n";

    #[test]
    fn a_dump_is_read_per_request_and_weighed_into_estimated_cycles() {
        let counts = Counts::parse(DUMP).unwrap();
        let figures = counts.per_request(2_000);
        let get = |name: &str| figures.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(get("instructions"), 32_584.1);
        assert_eq!(get("instructionCacheMisses"), 2_085.6);
        assert_eq!(get("dataReadMisses"), 400.7);
        assert_eq!(get("dataWriteMisses"), 355.2);
        assert_eq!(get("lastLevelMisses"), 0.9);
        assert_eq!(get("conditionalMispredicts"), 273.9);
        assert_eq!(get("indirectMispredicts"), 76.2);
        // 32,584.1 + 10 × (273.9 + 76.2) + 10 × (2,085.6 + 400.7 + 355.2) + 100 × 0.9
        let estimated = get("estimatedCycles");
        assert!((estimated - 64_590.1).abs() < 0.01, "{estimated}");
    }

    #[test]
    fn a_dump_without_the_cache_simulation_is_refused_with_the_reason() {
        let plain = "events: Ir\nsummary: 161728265\n";
        let error = Counts::parse(plain).unwrap_err().to_string();
        assert!(error.contains("--cache-sim=yes"), "{error}");
        assert!(Counts::parse("events: Ir\n").is_err());
    }
}
