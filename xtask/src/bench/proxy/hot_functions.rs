//! `cargo xtask hot-functions`: writes `agent/link/hot-functions.txt`, the functions the agent
//! runs at start and on its request paths, which its release link places side by side so an
//! idle agent maps few pages of its own code (decision 54). Runs the bench's one-agent and mesh
//! setups with every agent under callgrind, drives each over HTTP/1.1 and HTTP/2, and lists
//! every function of the agent's binary that ran, in the order callgrind first met it. Also
//! tells the bench how much of the list the binary it measures still has.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use super::load::Protocol;
use super::processes::stop;
use super::setup::Setup;
use super::{Bench, Options, RATE};
use crate::bench::report::{relative, write};
use crate::options::parse_options;
use crate::util;

/// The list, relative to the workspace root; `agent/build.rs` hands it to the linker.
const LIST: &str = "agent/link/hot-functions.txt";
/// Where the profiles go, under the bench folder.
const PROFILES: &str = "hot-functions";
/// The setups whose agents are profiled: between them, both sides of the local path, the
/// tunnel's client and server over mutual TLS, and an instance behind the inbound port.
const SETUPS: [Setup; 2] = [Setup::OneAgent, Setup::Mesh];
/// Load per setup and protocol. Under callgrind an agent is some fifty times slower; a few
/// seconds run every path many times over, which is all a list of functions needs.
const LOAD: Duration = Duration::from_secs(2);
/// Client connections of that load: more than one, so pools open more than one connection.
const LOAD_CONNECTIONS: u32 = 4;
/// More listed functions than this missing from the binary, and the bench says to regenerate
/// the list. Each one missing may sit alone in its own 64 KiB of resident code: 16 missing
/// after a small change to the daemon cost an idle agent 1.3 MiB. Symbols change with the
/// toolchain, dependency versions and features, and LTO numbers its local copies of a
/// function (`write_str.4722`) afresh whenever the code around them changes.
const MAX_MISSING: usize = 4;

/// `cargo xtask hot-functions --help`.
pub const USAGE: &str = "usage: cargo xtask hot-functions

Runs the agents of `cargo xtask bench proxy`'s one-agent and mesh rows under callgrind (needs
valgrind), drives each over HTTP/1.1 and HTTP/2 for a few seconds and writes the functions of
hyphae-agent that ran to agent/link/hot-functions.txt, which the agent's release link keeps
together (decision 54). Run it again when the bench says the list is stale.";

/// `cargo xtask hot-functions`.
pub fn run(args: &[String]) -> Result<()> {
    // No options: `--help` prints the usage, anything else is refused with it.
    if !parse_options(args, USAGE, &[], |_, _| Ok(()))? {
        return Ok(());
    }
    let options = Options {
        duration: LOAD,
        connections: LOAD_CONNECTIONS,
        rate: RATE.default,
        rounds: 1,
        latency_rounds: 1,
    };
    let mut bench = Bench::new(options)?;
    let profiles = bench.dir.join(PROFILES);
    util::empty_dir(&profiles)?;
    let out_file = profiles.join("callgrind.%p");
    let mut wrapper: Vec<OsString> = vec!["valgrind".into(), "--tool=callgrind".into()];
    wrapper.extend(["--demangle=no", "--dump-instr=no"].map(OsString::from));
    let mut out_arg = OsString::from("--callgrind-out-file=");
    out_arg.push(&out_file);
    wrapper.push(out_arg);
    bench.proxy_wrapper = wrapper;
    for setup in SETUPS {
        let mut target = bench.start(setup)?;
        for protocol in Protocol::ALL {
            let label = format!("hot-functions-{}-{}", setup.slug(), protocol.name());
            bench.load(protocol, target.address(protocol), LOAD, &label)?;
        }
        bench.runtime.block_on(stop(target.processes().rev()));
    }
    bench.runtime.block_on(stop([&mut bench.backend.process]));

    let mut files: Vec<PathBuf> = fs::read_dir(&profiles)
        .with_context(|| format!("list {}", profiles.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    // Process ids grow with start order: the one-agent row's functions first.
    files.sort_by_key(|path| {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(|pid| pid.parse::<u32>().ok())
    });
    let expected = SETUPS.len() + 1;
    ensure!(
        files.len() == expected,
        "expected {expected} callgrind profiles in {}, found {}: an agent did not exit by itself",
        relative(&profiles),
        files.len()
    );
    // Callgrind names the binary by its real path.
    let binary = fs::canonicalize(&bench.agent)
        .with_context(|| format!("resolve {}", bench.agent.display()))?
        .to_string_lossy()
        .into_owned();
    let mut seen = HashSet::new();
    let mut functions = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        for function in executed_in(&text, &binary) {
            if seen.insert(function.clone()) {
                functions.push(function);
            }
        }
    }
    ensure!(
        !functions.is_empty(),
        "no function of {binary} in the profiles"
    );
    let list = util::root().join(LIST);
    let mut text = format!(
        "# Generated by `cargo xtask hot-functions`: the functions of hyphae-agent that ran at\n\
         # start and on the bench's request paths, in the order they first ran. agent/build.rs\n\
         # gives this file to the linker (--symbol-ordering-file), which places them side by\n\
         # side (decision 54). {} functions.\n",
        functions.len()
    );
    for function in &functions {
        text.push_str(function);
        text.push('\n');
    }
    write(&list, &text)?;
    eprintln!(
        "xtask: wrote {} functions to {LIST}; rebuild the agent to link them together",
        functions.len()
    );
    Ok(())
}

/// The functions of `binary` that a callgrind profile (`--demangle=no`) saw run, in the order
/// the profile first names them. Callgrind compresses names: `fn=(12) name` defines number 12,
/// a later `fn=(12)` refers to it; `ob=` names the object file of the functions that follow,
/// and `cfn=`/`cob=` (callees) define numbers too. A recursion level (`'2`) is not part of the
/// symbol; functions callgrind could not name (`0x...`) are left out.
fn executed_in(profile: &str, binary: &str) -> Vec<String> {
    let mut objects: std::collections::HashMap<String, String> = Default::default();
    let mut names: std::collections::HashMap<String, String> = Default::default();
    let mut object = String::new();
    let mut executed = Vec::new();
    for line in profile.lines() {
        if let Some(value) = line.strip_prefix("ob=") {
            object = resolve(value, &mut objects);
        } else if let Some(value) = line.strip_prefix("cob=") {
            resolve(value, &mut objects);
        } else if let Some(value) = line.strip_prefix("cfn=") {
            resolve(value, &mut names);
        } else if let Some(value) = line.strip_prefix("fn=") {
            let name = resolve(value, &mut names);
            let symbol = match name.rsplit_once('\'') {
                Some((symbol, level)) if level.bytes().all(|b| b.is_ascii_digit()) => symbol,
                _ => name.as_str(),
            };
            if object == binary && !symbol.starts_with("0x") && !symbol.is_empty() {
                executed.push(symbol.to_string());
            }
        }
    }
    executed
}

/// A callgrind name field, `(N) name`, `(N)` or a plain name, through the table of numbers.
fn resolve(value: &str, table: &mut std::collections::HashMap<String, String>) -> String {
    let Some(rest) = value.strip_prefix('(') else {
        return value.to_string();
    };
    let Some((number, name)) = rest.split_once(')') else {
        return value.to_string();
    };
    match name.strip_prefix(' ') {
        Some(name) => {
            table.insert(number.to_string(), name.to_string());
            name.to_string()
        }
        None => table.get(number).cloned().unwrap_or_default(),
    }
}

/// How much of the list a binary still has.
pub struct Coverage {
    /// Functions in the list.
    pub listed: usize,
    /// Of those, how many the binary defines.
    pub found: usize,
}

impl Coverage {
    /// Prints the figure, and what to do when the list is stale.
    pub fn report(&self) {
        eprintln!(
            "xtask: {} of {} hot functions ({LIST}) found in the agent binary",
            self.found, self.listed
        );
        if self.is_stale() {
            eprintln!(
                "xtask: warning: the list is stale (over {MAX_MISSING} missing): idle RSS will \
                 read high; run `cargo xtask hot-functions` and rebuild"
            );
        }
    }

    /// Whether too little of the list is in the binary for it to work.
    fn is_stale(&self) -> bool {
        self.listed == 0 || self.listed - self.found > MAX_MISSING
    }

    /// For `proxy.json`.
    pub fn json(&self) -> Value {
        json!({ "listed": self.listed, "found": self.found, "stale": self.is_stale() })
    }
}

/// How many of the listed functions `binary` defines (its symbol table, read with `nm`).
pub fn coverage(binary: &Path) -> Result<Coverage> {
    let list = util::root().join(LIST);
    let text = fs::read_to_string(&list).with_context(|| format!("read {}", list.display()))?;
    let listed: Vec<&str> = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .collect();
    let output = util::capture(Command::new("nm").arg("--defined-only").arg(binary))?;
    ensure!(
        output.status.success(),
        "nm {} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let symbols = String::from_utf8_lossy(&output.stdout);
    let defined: HashSet<&str> = symbols
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .collect();
    Ok(Coverage {
        listed: listed.len(),
        found: listed
            .iter()
            .filter(|name| defined.contains(**name))
            .count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_compressed_names_of_one_binary() {
        let profile = "ob=(1) /bin/agent\nfn=(1) _ZN1a\ncob=(2) /lib/libc.so\ncfn=(2) memcpy\n\
                       fn=(3) _ZN1b'2\nob=(2)\nfn=(2)\nob=(1)\nfn=(1)\nfn=(4) 0x1234\n";
        assert_eq!(
            executed_in(profile, "/bin/agent"),
            ["_ZN1a", "_ZN1b", "_ZN1a"]
        );
    }
}
