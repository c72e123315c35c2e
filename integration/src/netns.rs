//! Several hosts on one machine: each host a network namespace of its own with `lo` and one
//! veth into a bridge that lives in a namespace of its own, addresses in 10.200.0.0/16 that
//! exist only inside them. Never touches the root namespace's links, addresses or routes;
//! everything is removed when the [`Namespaces`] guard is dropped, also on panic.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The bridge inside the bridge namespace.
const BRIDGE: &str = "br0";
/// Each host's interface into the bridge, inside its own namespace.
const HOST_LINK: &str = "eth0";
/// Where `ip netns exec` finds the files it mounts over `/etc` in a namespace.
const NETNS_ETC: &str = "/etc/netns";

/// One host: a namespace and its address on the shared bridge.
#[derive(Clone, Debug)]
pub struct Host {
    /// What the test calls it (`a`, `cp`...).
    pub label: String,
    /// The namespace's name (unique to this run).
    pub namespace: String,
    /// Its address on the bridge (a /24 of 10.200.0.0/16).
    pub address: Ipv4Addr,
}

/// Hosts in namespaces joined by a bridge in a namespace of its own; dropping it kills what
/// still runs inside them and deletes them (their veths go with them) and their `/etc/netns`
/// files.
pub struct Namespaces {
    bridge: String,
    hosts: Vec<Host>,
}

/// Whether this process may make namespaces (root, with `ip netns`); why not otherwise.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("network namespaces need root".to_string());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("cannot run `ip`: {error}")),
    }
}

/// A command that runs `program` inside the namespace `namespace`, or as is when `None`.
pub fn command_in(namespace: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match namespace {
        Some(namespace) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", namespace]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// `command` (program, arguments, environment and directory) moved into `namespace`.
pub fn moved_into(namespace: &str, command: &Command) -> Command {
    let mut moved = command_in(Some(namespace), command.get_program());
    moved.args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => moved.env(key, value),
            None => moved.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        moved.current_dir(dir);
    }
    moved
}

/// Runs `ip args...`; an error naming the step when it fails.
fn ip(args: &[&str]) -> Result<(), Error> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::Namespace {
            step: format!("ip {}", args.join(" ")),
            reason: e.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Namespace {
            step: format!("ip {}", args.join(" ")),
            reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

impl Namespaces {
    /// Makes the bridge namespace and one host namespace per label, host `i` (from 1) at
    /// `10.200.<subnet>.<i>/24`, with a random subnet and name suffix so parallel runs and
    /// leftovers never meet.
    pub fn create(labels: &[&str]) -> Result<Namespaces, Error> {
        let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let subnet = rand::random::<u8>().max(1);
        let mut namespaces = Namespaces {
            bridge: format!("hy{run}-br"),
            hosts: Vec::new(),
        };
        // Held from the first step, so a failure half-way removes what was made.
        ip(&["netns", "add", &namespaces.bridge])?;
        let bridge = namespaces.bridge.clone();
        ip(&["-n", &bridge, "link", "set", "lo", "up"])?;
        ip(&["-n", &bridge, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", BRIDGE, "up"])?;
        for (i, label) in (1u8..).zip(labels) {
            let host = Host {
                label: (*label).to_string(),
                namespace: format!("hy{run}-{label}"),
                address: Ipv4Addr::new(10, 200, subnet, i),
            };
            ip(&["netns", "add", &host.namespace])?;
            namespaces.hosts.push(host.clone());
            let ns = host.namespace.as_str();
            let port = format!("p{i}");
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", ns, "link", "add", HOST_LINK, "type", "veth", "peer", "name", &port, "netns",
                &bridge,
            ])?;
            ip(&["-n", &bridge, "link", "set", &port, "master", BRIDGE, "up"])?;
            let address = format!("{}/24", host.address);
            ip(&["-n", ns, "addr", "add", &address, "dev", HOST_LINK])?;
            ip(&["-n", ns, "link", "set", HOST_LINK, "up"])?;
        }
        Ok(namespaces)
    }

    /// The host called `label`; panics when there is none.
    pub fn host(&self, label: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.label == label)
            .unwrap_or_else(|| panic!("no host {label} among the namespaces"))
    }

    /// Every host, in the order they were made.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// A command that runs `program` on host `label`.
    pub fn command(&self, label: &str, program: impl AsRef<OsStr>) -> Command {
        command_in(Some(&self.host(label).namespace), program)
    }

    /// Runs `ip args...` inside host `label`'s namespace (`ip route add blackhole ...`).
    pub fn ip(&self, label: &str, args: &[&str]) -> Result<(), Error> {
        let mut all = vec!["-n", self.host(label).namespace.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Makes the programs `ip netns exec` starts on host `label` resolve names through
    /// `nameserver` only (`/etc/netns/<ns>/resolv.conf`, mounted over `/etc/resolv.conf`), one
    /// try of one second each, so a client never waits long for an answer.
    pub fn resolve_through(&self, label: &str, nameserver: Ipv4Addr) -> Result<(), Error> {
        let dir = etc_of(&self.host(label).namespace);
        let file = dir.join("resolv.conf");
        let write = |source| Error::Write {
            path: file.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(write)?;
        std::fs::write(
            &file,
            format!("nameserver {nameserver}\noptions timeout:1 attempts:1\n"),
        )
        .map_err(write)
    }
}

/// The folder `ip netns exec` mounts files from for `namespace`.
fn etc_of(namespace: &str) -> PathBuf {
    Path::new(NETNS_ETC).join(namespace)
}

/// Kills what still runs in `namespace` (only processes this test started: the namespace is
/// its own) and deletes it with its `/etc/netns` folder; reports, never panics.
fn remove(namespace: &str) {
    if let Ok(output) = Command::new("ip")
        .args(["netns", "pids", namespace])
        .output()
    {
        for pid in String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse::<i32>().ok())
            .filter_map(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    if let Err(error) = ip(&["netns", "del", namespace]) {
        eprintln!("cannot remove namespace {namespace}: {error}");
    }
    let etc = etc_of(namespace);
    if etc.exists()
        && let Err(error) = std::fs::remove_dir_all(&etc)
    {
        eprintln!("cannot remove {}: {error}", etc.display());
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for host in &self.hosts {
            remove(&host.namespace);
        }
        remove(&self.bridge);
    }
}
