//! Each way from the client to the backend (direct, one agent, the mesh, haproxy, nginx): its
//! generated configs and the processes that serve it. Measures nothing; the row does that.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

use super::load::Protocol;
use super::nginx::NginxSite;
use super::processes::{Processes, START_TIMEOUT, Stdout, free_address, wait_until_ok};
use super::{
    Bench, KEEPALIVE_REQUESTS, MAX_CONNECTIONS, PROXY_IDLE_TIMEOUT, PROXY_MAX_CONNECTIONS,
    PROXY_THREADS,
};
use crate::bench::report::{relative, write};
use crate::util;

/// Idle kept-alive connections nginx keeps to the backend.
const NGINX_UPSTREAM_IDLE: u32 = MAX_CONNECTIONS;
/// haproxy's connect timeout to the backend.
const HAPROXY_CONNECT_TIMEOUT: &str = "5s";
/// The agents' drain deadline, so stopping them does not wait for the default 30 s.
const AGENT_DRAIN_TIMEOUT: &str = "1s";
/// Log level of the agents (stderr, into `target/bench/`).
const AGENT_LOG_LEVEL: &str = "warn";
/// The site every bench agent is in.
const AGENT_SITE: &str = "bench";
/// The service name the agents give the backend.
const SERVICE: &str = "backend";

/// One way from the client to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// No proxy: the baseline.
    Direct,
    /// One agent process: its upstream port leads to a static service whose endpoint is the
    /// same agent's inbound listener, which hosts the backend. Both halves of the mesh path
    /// (outbound, the HTTP/2 tunnel, inbound) run in one process on one thread.
    OneAgent,
    /// The real mesh path: a caller agent, an HTTP/2 tunnel, the host agent in front of the
    /// backend.
    Mesh,
    /// haproxy as a reverse proxy.
    Haproxy,
    /// nginx as a reverse proxy.
    Nginx,
}

impl Setup {
    /// Every setup, in table order.
    pub const ALL: [Setup; 5] = [
        Setup::Direct,
        Setup::OneAgent,
        Setup::Mesh,
        Setup::Haproxy,
        Setup::Nginx,
    ];

    /// Name for the table and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::OneAgent => "hyphae 1 agent",
            Setup::Mesh => "hyphae mesh",
            Setup::Haproxy => "haproxy",
            Setup::Nginx => "nginx",
        }
    }

    /// A file-name-friendly form of the name.
    pub fn slug(self) -> String {
        self.name().replace(' ', "-")
    }

    /// The way a request takes, for the legend and JSON.
    pub fn path(self) -> &'static str {
        match self {
            Setup::Direct => "client -> backend",
            Setup::OneAgent => {
                "client -> agent upstream port -> h2 tunnel to the same agent's inbound -> backend"
            }
            Setup::Mesh => "client -> caller agent -> h2 tunnel -> host agent -> backend",
            Setup::Haproxy => "client -> haproxy -> backend (http-reuse always)",
            Setup::Nginx => "client -> nginx proxy_pass (upstream keepalive) -> backend",
        }
    }
}

/// What a row drives load at: the processes in the way and their addresses.
pub struct Target {
    /// Everything the setup started; dropping it stops them.
    pub processes: Processes,
    /// The proxy processes (children such as nginx workers are found when measuring).
    pub proxies: Vec<u32>,
    /// Where HTTP/1.1 load goes.
    http1: SocketAddr,
    /// Where HTTP/2 load goes.
    http2: SocketAddr,
}

impl Target {
    /// Where load over `protocol` goes.
    pub fn address(&self, protocol: Protocol) -> SocketAddr {
        match protocol {
            Protocol::Http1 => self.http1,
            Protocol::Http2 => self.http2,
        }
    }
}

impl Bench {
    /// Starts the processes of `setup` and waits until a request through them succeeds.
    pub fn start(&self, setup: Setup) -> Result<Target> {
        let mut processes = Processes::default();
        let backend_port = self.backend.http1.port();
        let (proxies, http1, http2) = match setup {
            Setup::Direct => (vec![], self.backend.http1, self.backend.http2),
            Setup::OneAgent => {
                let inbound = free_address()?;
                let agent = self.start_agent(
                    &mut processes,
                    "one",
                    &agent_config(
                        &self.dir,
                        "bench-one",
                        inbound,
                        Some(backend_port),
                        Some((free_address()?, inbound)),
                    ),
                )?;
                let upstream = agent.upstream.context("the agent bound no upstream port")?;
                (vec![agent.pid], upstream, upstream)
            }
            Setup::Mesh => {
                let host = self.start_agent(
                    &mut processes,
                    "host",
                    &agent_config(
                        &self.dir,
                        "bench-host",
                        free_address()?,
                        Some(backend_port),
                        None,
                    ),
                )?;
                let caller = self.start_agent(
                    &mut processes,
                    "caller",
                    &agent_config(
                        &self.dir,
                        "bench-caller",
                        free_address()?,
                        None,
                        Some((free_address()?, host.inbound)),
                    ),
                )?;
                let upstream = caller
                    .upstream
                    .context("the caller agent bound no upstream port")?;
                (vec![caller.pid, host.pid], upstream, upstream)
            }
            Setup::Haproxy => {
                let (http1, http2) = (free_address()?, free_address()?);
                let config = self.dir.join("haproxy.cfg");
                write(&config, &haproxy_config(http1, http2, self.backend.http1))?;
                let mut command = Command::new(&self.tools.haproxy);
                command.arg("-db").arg("-f").arg(&config);
                let pid = processes
                    .spawn(
                        "haproxy",
                        &mut command,
                        &self.dir.join("haproxy.log"),
                        Stdout::Log,
                    )?
                    .id();
                (vec![pid], http1, http2)
            }
            Setup::Nginx => {
                let addresses = (free_address()?, free_address()?);
                let upstream = format!(
                    "upstream backend {{
        server {};
        keepalive {NGINX_UPSTREAM_IDLE};
        keepalive_requests {KEEPALIVE_REQUESTS};
        keepalive_timeout {PROXY_IDLE_TIMEOUT};
    }}",
                    self.backend.http1
                );
                let location = "proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";";
                let site = NginxSite {
                    name: "proxy",
                    purpose: "nginx as a reverse proxy",
                    workers: PROXY_THREADS,
                    listen: addresses,
                    http_extra: &upstream,
                    location,
                };
                let pid = site.start(&self.tools, &self.dir, &mut processes)?;
                (vec![pid], addresses.0, addresses.1)
            }
        };
        wait_until_ok(http1, &mut processes, setup.name())?;
        Ok(Target {
            processes,
            proxies,
            http1,
            http2,
        })
    }

    /// Starts an agent with `yaml` and reads its ready line.
    fn start_agent(&self, processes: &mut Processes, name: &str, yaml: &str) -> Result<Agent> {
        let config = self.dir.join(format!("agent-{name}.yaml"));
        write(&config, yaml)?;
        let log = self.dir.join(format!("agent-{name}.log"));
        let mut command = Command::new(&self.agent);
        command
            .arg("--config")
            .arg(&config)
            .args(["--log-format", "human"])
            .args(["--worker-threads", &PROXY_THREADS.to_string()])
            .env("HYPHAE_LOG", AGENT_LOG_LEVEL);
        let child = processes.spawn(&format!("agent {name}"), &mut command, &log, Stdout::Pipe)?;
        let pid = child.id();
        let stdout = child
            .stdout
            .take()
            .context("the agent's stdout is not piped")?;
        let line = util::ready_line(stdout, START_TIMEOUT)
            .with_context(|| format!("agent {name} did not start; see {}", relative(&log)))?;
        let ready: Value = serde_json::from_str(&line).with_context(|| {
            format!(
                "agent {name} did not start (stdout {line:?}); see {}",
                relative(&log)
            )
        })?;
        let ready = &ready["ready"];
        let address = |value: &Value| value.as_str().and_then(|s| s.parse().ok());
        Ok(Agent {
            pid,
            inbound: address(&ready["inbound"])
                .with_context(|| format!("agent {name}'s ready line has no inbound: {line}"))?,
            upstream: ready["upstreams"]
                .as_array()
                .and_then(|list| list.first())
                .and_then(|pair| address(&pair[1])),
        })
    }
}

/// A started agent.
struct Agent {
    /// Its process.
    pid: u32,
    /// Its inbound listener, for callers' static endpoints.
    inbound: SocketAddr,
    /// Its first upstream port, when it has one.
    upstream: Option<SocketAddr>,
}

/// A bench agent's configuration. `service_port` hosts the backend behind the inbound
/// listener; `upstream` is (upstream port, endpoint) for calling it.
fn agent_config(
    dir: &Path,
    name: &str,
    inbound: SocketAddr,
    service_port: Option<u16>,
    upstream: Option<(SocketAddr, SocketAddr)>,
) -> String {
    let mut yaml = format!(
        "# Generated by `cargo xtask bench proxy`.
kind: AgentConfig
metadata: {{name: {name}}}
spec:
  site: {AGENT_SITE}
  dataDir: {data_dir}
  listeners: {{admin: 127.0.0.1:0, inbound: {inbound}, httpProxy: null, dns: null}}
  limits: {{drainTimeout: {AGENT_DRAIN_TIMEOUT}}}
",
        data_dir = dir.join(format!("agent-{name}-data")).display()
    );
    if let Some(port) = service_port {
        yaml.push_str(&format!(
            "  services:\n    - {{name: {SERVICE}, port: {port}}}\n"
        ));
    }
    if let Some((listen, endpoint)) = upstream {
        yaml.push_str(&format!(
            "  upstreams:
    - {{listen: {listen}, service: {SERVICE}}}
  staticServices:
    - name: {SERVICE}
      endpoints: [{{address: \"{endpoint}\", site: {AGENT_SITE}}}]
"
        ));
    }
    yaml
}

/// haproxy with one thread, keep-alive to clients and connection reuse to the backend.
fn haproxy_config(http1: SocketAddr, http2: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "# Generated by `cargo xtask bench proxy`: haproxy as a reverse proxy, one thread.
global
    nbthread {PROXY_THREADS}
    maxconn {PROXY_MAX_CONNECTIONS}

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect {HAPROXY_CONNECT_TIMEOUT}
    timeout client {PROXY_IDLE_TIMEOUT}
    timeout server {PROXY_IDLE_TIMEOUT}

frontend bench
    bind {http1}
    bind {http2} proto h2
    default_backend backend

backend backend
    server backend {backend}
"
    )
}
