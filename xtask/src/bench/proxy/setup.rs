//! Each way from the client to the backend (direct, one agent, the mesh, haproxy, nginx): its
//! generated configs and the processes that serve it. Measures nothing; the row does that.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use hyphae_integration::Process;
use hyphae_integration::agent::Agent;
use hyphae_integration::ports::free_address;

use super::load::Protocol;
use super::nginx::NginxSite;
use super::processes::{logged, named, spawn, wait_until_ok};
use super::{
    Bench, CONNECTIONS, KEEPALIVE_REQUESTS, PROXY_IDLE_TIMEOUT, PROXY_MAX_CONNECTIONS,
    PROXY_THREADS,
};
use crate::bench::report::write;

/// Idle kept-alive connections nginx keeps to the backend.
const NGINX_UPSTREAM_IDLE: u32 = CONNECTIONS.max();
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
/// An inbound listener on a port the agent picks and reports in its ready line.
const ANY_PORT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

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
    /// The agents the setup started, in start order.
    agents: Vec<Agent>,
    /// The haproxy or nginx the setup started.
    proxy: Option<Process>,
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

    /// Every process the setup started, in start order.
    pub fn processes(&mut self) -> impl DoubleEndedIterator<Item = &mut Process> {
        self.agents
            .iter_mut()
            .map(Agent::process)
            .chain(self.proxy.as_mut())
    }
}

impl Bench {
    /// Starts the processes of `setup` and waits until a request through them succeeds.
    pub fn start(&self, setup: Setup) -> Result<Target> {
        let backend_port = self.backend.http1.port();
        let mut target = match setup {
            Setup::Direct => Target {
                agents: vec![],
                proxy: None,
                proxies: vec![],
                http1: self.backend.http1,
                http2: self.backend.http2,
            },
            Setup::OneAgent => {
                // The agent's own upstream calls its inbound: the address must be known ahead.
                let inbound = free_address()?;
                let mut agent = self.start_agent(
                    "one",
                    &agent_config(
                        &self.dir,
                        "bench-one",
                        inbound,
                        Some(backend_port),
                        Some((free_address()?, inbound)),
                    ),
                )?;
                let upstream = first_upstream(&agent)?;
                Target {
                    proxies: vec![agent.process().id()],
                    agents: vec![agent],
                    proxy: None,
                    http1: upstream,
                    http2: upstream,
                }
            }
            Setup::Mesh => {
                let mut host = self.start_agent(
                    "host",
                    &agent_config(&self.dir, "bench-host", ANY_PORT, Some(backend_port), None),
                )?;
                let mut caller = self.start_agent(
                    "caller",
                    &agent_config(
                        &self.dir,
                        "bench-caller",
                        ANY_PORT,
                        None,
                        Some((free_address()?, host.inbound)),
                    ),
                )?;
                let upstream = first_upstream(&caller)?;
                Target {
                    proxies: vec![caller.process().id(), host.process().id()],
                    agents: vec![host, caller],
                    proxy: None,
                    http1: upstream,
                    http2: upstream,
                }
            }
            Setup::Haproxy => {
                let (http1, http2) = (free_address()?, free_address()?);
                let config = self.dir.join("haproxy.cfg");
                write(&config, &haproxy_config(http1, http2, self.backend.http1))?;
                let mut command = Command::new(&self.tools.haproxy);
                command.arg("-db").arg("-f").arg(&config);
                let haproxy = spawn("haproxy", &mut command, &self.dir.join("haproxy.log"))?;
                Target {
                    agents: vec![],
                    proxies: vec![haproxy.id()],
                    proxy: Some(haproxy),
                    http1,
                    http2,
                }
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
                let nginx = site.start(&self.tools, &self.dir, &self.runtime)?;
                Target {
                    agents: vec![],
                    proxies: vec![nginx.id()],
                    proxy: Some(nginx),
                    http1: addresses.0,
                    http2: addresses.1,
                }
            }
        };
        let http1 = target.http1;
        let mut processes: Vec<&mut Process> = target.processes().collect();
        wait_until_ok(&self.runtime, http1, &mut processes, setup.name())?;
        Ok(target)
    }

    /// Starts agent `name` on the config `yaml` (one worker thread, its log in
    /// `target/bench/agent-<name>.log`) and reads its ready line.
    fn start_agent(&self, name: &str, yaml: &str) -> Result<Agent> {
        let config = self.dir.join(format!("agent-{name}.yaml"));
        write(&config, yaml)?;
        let log = self.dir.join(format!("agent-{name}.log"));
        let mut command = Agent::command(&self.agent, &config);
        command
            .args(["--worker-threads", &PROXY_THREADS.to_string()])
            .env("HYPHAE_LOG", AGENT_LOG_LEVEL);
        Ok(Agent::spawn(
            &named(name, &log),
            logged(&mut command, &log)?,
            &config,
        )?)
    }
}

/// Where an agent's load goes: its first upstream port.
fn first_upstream(agent: &Agent) -> Result<SocketAddr> {
    agent
        .upstreams
        .first()
        .map(|(_, address)| *address)
        .context("the agent bound no upstream port")
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
