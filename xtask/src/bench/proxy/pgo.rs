//! `cargo xtask pgo`: the agent built with profile-guided optimisation and laid out by BOLT,
//! the build a host should run. An agent request is a long straight line of code through
//! hyper, h2, rustls and the call's futures, each instruction run once per request, so it
//! misses the instruction cache where haproxy's loops do not (decision 71). A profile of the
//! bench's own traffic tells LLVM which branches are taken and which functions are hot: it
//! lays hot blocks together, moves cold ones out of line and inlines by use (decision 87).
//! BOLT then does the same across the linked binary, which LLVM cannot: it splits every hot
//! function from its cold blocks and puts the hot parts of all of them side by side, in the
//! order they call each other (decision 88).
//!
//! Five steps, each in its own directory under `target/pgo/` so the ordinary release build is
//! never rebuilt by them: an instrumented agent; the bench's one-agent and mesh rows driven
//! over HTTP/1.1 and HTTP/2 with it, each agent writing its counts when it exits; the counts
//! merged by `llvm-profdata` and the agent built again with them, keeping its relocations;
//! that agent instrumented by `llvm-bolt` and driven the same way; its counts merged by
//! `merge-fdata` and the binary rewritten by `llvm-bolt` with them.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::load::Protocol;
use super::processes::stop;
use super::setup::Setup;
use super::{Bench, Options, RATE};
use crate::bench::report::{commit, relative};
use crate::bench::tools::{apt_install, find_program};
use crate::options::parse_options;
use crate::util;

/// Everything the three steps write, under the workspace root.
const PGO_DIR: &str = "target/pgo";
/// The setups driven while the instrumented agent counts: between them the local path, the
/// tunnel's client and server over mutual TLS and an instance behind the inbound port.
const SETUPS: [Setup; 2] = [Setup::OneAgent, Setup::Mesh];
/// Load per setup and protocol. The counts say how often each branch goes which way, which a
/// few seconds of the same requests settle; more only makes the counters larger.
const TRAINING: Duration = Duration::from_secs(3);
/// Client connections while training: as many as the bench's rows use, so pools, the
/// connection limits and the scheduler see the shape they will be measured with.
const TRAINING_CONNECTIONS: u32 = 50;
/// Oldest LLVM whose `llvm-profdata` reads the raw profiles of the toolchain's LLVM (raw
/// format 10, LLVM 19 and later); its BOLT is the oldest tried too.
const OLDEST_LLVM: u32 = 19;
/// Newest LLVM looked for by version-suffixed name.
const NEWEST_LLVM: u32 = 30;
/// `llvm-profdata`, and the Debian package installed when none that new is found.
const PROFDATA: LlvmTool = LlvmTool {
    name: "llvm-profdata",
    package: "llvm-19",
};
/// BOLT's rewriter and the merger of its counts, both in Debian's `bolt-19`.
const BOLT: LlvmTool = LlvmTool {
    name: "llvm-bolt",
    package: "bolt-19",
};
const MERGE_FDATA: LlvmTool = LlvmTool {
    name: "merge-fdata",
    package: "bolt-19",
};
/// What `llvm-bolt` is asked to do with the counts: blocks of a function in the order they
/// run (ext-TSP), functions in the order they call each other (cache-directed sort), every
/// profiled function split into a hot part and a cold part placed far away (landing pads of
/// unwinding with the cold part), and identical functions folded. Tried and not kept:
/// promoting indirect calls, inlining small functions and peepholes (decision 88).
const BOLT_LAYOUT: [&str; 7] = [
    "-reorder-blocks=ext-tsp",
    "-reorder-functions=cdsort",
    "-split-functions",
    "-split-all-cold",
    "-split-eh",
    "-icf=1",
    // The new code's segment keeps the stack non-executable.
    "-use-gnu-stack",
];

/// `cargo xtask pgo --help`.
pub const USAGE: &str = "usage: cargo xtask pgo

Builds hyphae-agent with profile-guided optimisation, then lays it out with BOLT: an
instrumented release build, the one-agent and mesh rows of `cargo xtask bench proxy` driven
with it over HTTP/1.1 and HTTP/2, its counts merged (llvm-profdata from LLVM 19 or later;
installs the llvm-19 package from apt when none is found) and a release build that uses them;
that build instrumented by llvm-bolt (the bolt-19 package, installed the same way), driven the
same way, and rewritten with its counts. Prints the binary's path, target/pgo/hyphae-agent: the
agent to install on hosts. `cargo xtask bench proxy --agent pgo` and `bench cycles --agent pgo`
measure it (building it first unless it was built from this commit). Takes two release builds
and under two minutes of load.";

/// `cargo xtask pgo`.
pub fn run(args: &[String]) -> Result<()> {
    // No options: `--help` prints the usage, anything else is refused with it.
    if !parse_options(args, USAGE, &[], |_, _| Ok(()))? {
        return Ok(());
    }
    let mut bench = Bench::new(Options {
        duration: TRAINING,
        connections: TRAINING_CONNECTIONS,
        rate: RATE.default,
        rounds: 1,
        latency_rounds: 1,
    })?;
    let agent = build(&mut bench)?;
    bench.agent_build = AgentBuild::Pgo;
    bench.runtime.block_on(stop([&mut bench.backend.process]));
    println!("{}", agent.display());
    Ok(())
}

/// Builds the optimised agent with `bench`'s backend and certificates, and points `bench` at
/// it. Returns its path.
pub(super) fn build(bench: &mut Bench) -> Result<PathBuf> {
    let profdata = PROFDATA.find()?;
    let bolt = BOLT.find()?;
    let merge_fdata = MERGE_FDATA.find()?;
    let root = util::root();
    let dir = root.join(PGO_DIR);
    let raw = dir.join("raw");
    util::empty_dir(&raw)?;
    // The flag is part of the build's fingerprint: the same path every time, however reached.
    let raw = fs::canonicalize(&raw).with_context(|| format!("resolve {}", raw.display()))?;
    eprintln!("xtask: pgo: building an instrumented agent");
    let mut flags = OsString::from("-Cprofile-generate=");
    flags.push(&raw);
    let instrumented = release_agent(&dir.join("instrumented"), &flags)?;
    // The flags reach build scripts too, which ran during the build and left counts of their
    // own: only the agents' are wanted.
    util::empty_dir(&raw)?;

    eprintln!("xtask: pgo: counting the bench's requests");
    train_with(bench, instrumented)?;
    let profiles = profiles(&raw, "profraw")?;
    let merged = dir.join("hyphae-agent.profdata");
    util::run(
        Command::new(&profdata)
            .arg("merge")
            .arg("-o")
            .arg(&merged)
            .args(&profiles),
    )
    .context("merge the agent's profiles")?;

    eprintln!("xtask: pgo: building the agent with its profile");
    let mut flags = OsString::from("-Cprofile-use=");
    flags.push(&merged);
    // Functions the profile does not know (code that changed since, or never ran) are
    // optimised as without a profile; saying so for each would bury the build's output.
    flags.push(" -Cllvm-args=-no-pgo-warn-mismatch");
    // BOLT moves functions and splits them only in a binary that keeps its relocations.
    flags.push(" -Clink-arg=-Wl,--emit-relocs");
    let optimised = release_agent(&dir.join("optimised"), &flags)?;

    let installed = dir.join("hyphae-agent");
    lay_out(
        bench,
        &Bolt { bolt, merge_fdata },
        &optimised,
        &dir,
        &installed,
    )?;
    cli_beside(&installed)?;
    crate::bench::report::write(&dir.join(BUILT_FROM), &commit())?;
    bench.agent = installed.clone();
    Ok(installed)
}

/// BOLT's two programs.
struct Bolt {
    bolt: PathBuf,
    merge_fdata: PathBuf,
}

/// Writes `agent` laid out by BOLT to `installed`: instrumented, driven by the bench's rows,
/// and rewritten with the counts. Each `llvm-bolt` run's report goes to a log under `dir`.
fn lay_out(
    bench: &mut Bench,
    tools: &Bolt,
    agent: &Path,
    dir: &Path,
    installed: &Path,
) -> Result<()> {
    let work = dir.join("bolt");
    let counts = work.join("counts");
    util::empty_dir(&counts)?;
    let instrumented = work.join("instrumented/hyphae-agent");
    let instrumented_dir = instrumented.parent().context("a path with a directory")?;
    fs::create_dir_all(instrumented_dir)
        .with_context(|| format!("create {}", instrumented_dir.display()))?;
    eprintln!("xtask: pgo: instrumenting the optimised agent with BOLT");
    let mut prefix = OsString::from("--instrumentation-file=");
    prefix.push(counts.join("agent"));
    bolt_run(
        Command::new(&tools.bolt)
            .arg(agent)
            .arg("-instrument")
            .arg(prefix)
            // Several agents run at once in the mesh row: a file each.
            .arg("--instrumentation-file-append-pid")
            .arg("-o")
            .arg(&instrumented),
        &work.join("instrument.log"),
    )?;
    cli_beside(&instrumented)?;

    eprintln!("xtask: pgo: counting the bench's requests again, for BOLT");
    train_with(bench, instrumented)?;
    let counted = profiles(&counts, "fdata")?;
    let merged = work.join("hyphae-agent.fdata");
    util::run(
        Command::new(&tools.merge_fdata)
            .arg("-q")
            .arg("-o")
            .arg(&merged)
            .args(&counted),
    )
    .context("merge the agent's BOLT counts")?;

    eprintln!("xtask: pgo: laying the agent out with BOLT");
    let mut data = OsString::from("-data=");
    data.push(&merged);
    bolt_run(
        Command::new(&tools.bolt)
            .arg(agent)
            .arg("-o")
            .arg(installed)
            .arg(data)
            .args(BOLT_LAYOUT)
            .arg("-dyno-stats"),
        &work.join("optimise.log"),
    )
}

/// Runs `llvm-bolt` with its report (hundreds of lines) in `log`.
fn bolt_run(command: &mut Command, log: &Path) -> Result<()> {
    let file = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let copy = file
        .try_clone()
        .with_context(|| format!("open {} twice", log.display()))?;
    util::run(command.stdout(file).stderr(copy))
        .with_context(|| format!("llvm-bolt failed: its report is {}", relative(log)))
}

/// Drives the bench's rows with `agent` in place of the measured one.
fn train_with(bench: &mut Bench, agent: PathBuf) -> Result<()> {
    let measured = std::mem::replace(&mut bench.agent, agent);
    let trained = train(bench);
    bench.agent = measured;
    trained
}

/// The files in `dir` ending in `.extension`: the counts the agents wrote as they exited.
fn profiles(dir: &Path, extension: &str) -> Result<Vec<PathBuf>> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("list {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    ensure!(
        !found.is_empty(),
        "no counts in {}: did the instrumented agents exit by themselves?",
        relative(dir)
    );
    Ok(found)
}

/// The file beside the optimised agent that names the commit it was built from.
const BUILT_FROM: &str = "built-from";

/// The optimised agent, if it was built from the workspace as it is now (the same commit and
/// no uncommitted change).
fn current_build() -> Option<PathBuf> {
    let dir = util::root().join(PGO_DIR);
    let installed = dir.join("hyphae-agent");
    let built_from = fs::read_to_string(dir.join(BUILT_FROM)).ok()?;
    let now = commit();
    let known = now != "unknown" && !now.ends_with("-dirty");
    (installed.is_file() && built_from == now && known).then_some(installed)
}

/// Drives the bench's one-agent and mesh rows with `bench.agent`, over each protocol.
fn train(bench: &Bench) -> Result<()> {
    for setup in SETUPS {
        let mut target = bench.start(setup)?;
        let mut driven = Ok(());
        for protocol in Protocol::ALL {
            let label = format!("pgo-{}-{}", setup.slug(), protocol.name());
            driven = bench
                .load(protocol, target.address(protocol), TRAINING, &label)
                .map(drop);
            if driven.is_err() {
                break;
            }
        }
        // Stopped with SIGTERM: an agent writes its counts as it exits.
        bench.runtime.block_on(stop(target.processes().rev()));
        driven?;
    }
    Ok(())
}

/// Builds the release `hyphae-agent` into `target_dir` with `rustflags`; returns its path.
/// The release `hyphae` CLI goes beside it: the bench issues each agent's certificate with
/// the CLI next to the agent it starts. Its relocations stay unpacked: BOLT (19 and 22 alike)
/// writes a binary that crashes at start from one with packed relative relocations.
fn release_agent(target_dir: &Path, rustflags: &OsString) -> Result<PathBuf> {
    util::run(
        util::cargo()
            // Flags from the environment would change the build being measured.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env("RUSTFLAGS", rustflags)
            .env("HYPHAE_LINK_PACK_RELOCS", "0")
            .args(["build", "--release", "--quiet", "--target-dir"])
            .arg(target_dir)
            .args(["-p", "hyphae-agent", "--bin", "hyphae-agent"]),
    )?;
    let agent = target_dir.join("release/hyphae-agent");
    cli_beside(&agent)?;
    Ok(agent)
}

/// Copies the release `hyphae` CLI (which `Bench::new` builds) into `agent`'s directory.
fn cli_beside(agent: &Path) -> Result<()> {
    let cli = util::root().join("target/release/hyphae");
    let dir = agent.parent().context("an agent path has a directory")?;
    fs::copy(&cli, dir.join("hyphae"))
        .with_context(|| format!("copy {} beside {}", cli.display(), agent.display()))?;
    Ok(())
}

/// A program of LLVM's, from LLVM 19 or later, and the Debian package that brings it.
struct LlvmTool {
    name: &'static str,
    package: &'static str,
}

impl LlvmTool {
    /// The newest found in `/usr/lib/llvm-N/bin`, else on `PATH` by a versioned name, else
    /// after installing the package from apt. The unversioned name is often an older LLVM
    /// (Debian 12's `llvm-profdata` is 14, which cannot read the toolchain's raw profiles).
    /// LLVM's own directory comes first: `llvm-bolt` finds its instrumentation runtime beside
    /// the path it was started by, which the versioned link in `/usr/bin` is not.
    fn find(&self) -> Result<PathBuf> {
        let found = || {
            (OLDEST_LLVM..=NEWEST_LLVM).rev().find_map(|version| {
                let path = PathBuf::from(format!("/usr/lib/llvm-{version}/bin/{}", self.name));
                path.is_file()
                    .then_some(path)
                    .or_else(|| find_program(&format!("{}-{version}", self.name)))
            })
        };
        if let Some(path) = found() {
            return Ok(path);
        }
        eprintln!("xtask: installing {} for {}", self.package, self.name);
        apt_install(&[self.package])?;
        found().with_context(|| {
            format!(
                "no {} of LLVM {OLDEST_LLVM} or later after installing {}",
                self.name, self.package
            )
        })
    }
}

/// Which build of the agent a bench measures: `--agent release|pgo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentBuild {
    /// `cargo build --release`, what the tests and the demo run.
    Release,
    /// What `cargo xtask pgo` builds, the agent to install on hosts.
    Pgo,
}

impl AgentBuild {
    /// The option that chooses it.
    pub const OPTION: &'static str = "--agent";

    /// Takes `--agent NAME` out of a bench's arguments; the rest are the bench's own.
    pub fn take(args: &[String]) -> Result<(AgentBuild, Vec<String>)> {
        let mut build = AgentBuild::Release;
        let mut rest = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == Self::OPTION {
                let value = args
                    .next()
                    .with_context(|| format!("{} needs a value", Self::OPTION))?;
                build = AgentBuild::parse(value)?;
            } else {
                rest.push(arg.clone());
            }
        }
        Ok((build, rest))
    }

    /// Reads the option's value.
    pub fn parse(text: &str) -> Result<AgentBuild> {
        match text {
            "release" => Ok(AgentBuild::Release),
            "pgo" => Ok(AgentBuild::Pgo),
            other => anyhow::bail!("{} takes `release` or `pgo`, not `{other}`", Self::OPTION),
        }
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            AgentBuild::Release => "release",
            AgentBuild::Pgo => "pgo",
        }
    }

    /// Points `bench` at this build; for `pgo`, the optimised agent, built first unless it was
    /// built from this commit with no change since.
    pub(super) fn prepare(self, bench: &mut Bench) -> Result<()> {
        if self == AgentBuild::Pgo {
            match current_build() {
                Some(agent) => {
                    eprintln!("xtask: pgo: {} is current", relative(&agent));
                    bench.agent = agent;
                }
                None => {
                    build(bench)?;
                }
            }
        }
        bench.agent_build = self;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_option_is_taken_out_and_the_rest_left_in_order() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (build, rest) =
            AgentBuild::take(&args(&["--duration", "3", "--agent", "pgo"])).unwrap();
        assert_eq!((build, rest), (AgentBuild::Pgo, args(&["--duration", "3"])));
        let (build, rest) = AgentBuild::take(&args(&["--rate", "500"])).unwrap();
        assert_eq!(
            (build, rest),
            (AgentBuild::Release, args(&["--rate", "500"]))
        );
        for bad in [&["--agent"][..], &["--agent", "debug"]] {
            assert!(AgentBuild::take(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
