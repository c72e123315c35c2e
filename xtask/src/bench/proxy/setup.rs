//! Each way from the client to the backend (direct, one agent, the mesh, haproxy alone or two
//! chained, nginx): its generated configs and the processes that serve it, and a check that
//! the hop between two proxies refuses anything but mutual TLS where it should. Measures
//! nothing; the row does that.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use hyphae_integration::Process;
use hyphae_integration::agent::Agent;
use hyphae_integration::ports::free_address;

use super::certificates::HAPROXY_INNER;
use super::haproxy::{self, Between, Hop};
use super::load::Protocol;
use super::nginx::NginxSite;
use super::processes::{logged, named, spawn, wait_until_ok};
use super::{Bench, CONNECTIONS, KEEPALIVE_REQUESTS, PROXY_IDLE_TIMEOUT, PROXY_THREADS};
use crate::bench::report::write;

/// Idle kept-alive connections nginx keeps to the backend.
const NGINX_UPSTREAM_IDLE: u32 = CONNECTIONS.max();
/// The agents' drain deadline, so stopping them does not wait for the default 30 s.
const AGENT_DRAIN_TIMEOUT: &str = "1s";
/// Log level of the agents (stderr, into `target/bench/`).
const AGENT_LOG_LEVEL: &str = "warn";
/// The site every bench agent is in.
const AGENT_SITE: &str = "bench";
/// Node name of the agent of the one-agent row.
const ONE_AGENT_NODE: &str = "bench-one";
/// Node name of the mesh's agent in front of the backend.
const HOST_NODE: &str = "bench-host";
/// Node name of the mesh's agent the load goes to.
const CALLER_NODE: &str = "bench-caller";
/// Every bench agent's node name; each start of one issues it a certificate folder named after
/// it in `target/bench/` (`<node>-tls-<random>`).
pub(super) const AGENT_NODES: [&str; 3] = [ONE_AGENT_NODE, HOST_NODE, CALLER_NODE];
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
    /// agent's own node, which hosts the backend, so the call goes from its outbound side to
    /// its inbound side in-process (the local path, decision 44), on one thread.
    OneAgent,
    /// The real mesh path: a caller agent, an HTTP/2 tunnel over mutual TLS, the host agent
    /// in front of the backend.
    Mesh,
    /// haproxy as a reverse proxy.
    Haproxy,
    /// Two haproxy processes chained like the mesh's two agents, HTTP/2 in plaintext between
    /// them: what the TLS chain costs without TLS.
    HaproxyChain,
    /// The mesh's peer: two haproxy processes with HTTP/2 over mutual TLS 1.3 between them.
    HaproxyChainTls,
    /// The same chain with HTTP/1.1 over mutual TLS 1.3 between them, the setup issue 12
    /// named as haproxy's best: the bench measures both, so the mesh is compared with each.
    HaproxyChainTlsHttp1,
    /// nginx as a reverse proxy.
    Nginx,
}

impl Setup {
    /// Every setup, in table order.
    pub const ALL: [Setup; 8] = [
        Setup::Direct,
        Setup::OneAgent,
        Setup::Mesh,
        Setup::Haproxy,
        Setup::HaproxyChain,
        Setup::HaproxyChainTls,
        Setup::HaproxyChainTlsHttp1,
        Setup::Nginx,
    ];

    /// Name for the table and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::OneAgent => "hyphae 1 agent",
            Setup::Mesh => "hyphae mesh",
            Setup::Haproxy => "haproxy",
            Setup::HaproxyChain => "haproxy x2",
            Setup::HaproxyChainTls => "haproxy x2 mTLS",
            Setup::HaproxyChainTlsHttp1 => "haproxy x2 mTLS h1",
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
                "client -> agent upstream port -> the same agent's inbound side, in-process -> \
                 backend"
            }
            Setup::Mesh => "client -> caller agent -> h2 tunnel over mTLS -> host agent -> backend",
            Setup::Haproxy => "client -> haproxy -> backend (http-reuse always)",
            Setup::HaproxyChain => "client -> haproxy -> h2 -> haproxy -> backend",
            Setup::HaproxyChainTls => {
                "client -> haproxy -> h2 over mTLS (verify required both ways) -> haproxy -> backend"
            }
            Setup::HaproxyChainTlsHttp1 => {
                "client -> haproxy -> HTTP/1.1 over mTLS (verify required both ways, connections \
                 reused) -> haproxy -> backend"
            }
            Setup::Nginx => "client -> nginx proxy_pass (upstream keepalive) -> backend",
        }
    }
}

/// The TLS port between the two proxies of a row.
#[derive(Clone, Debug)]
pub struct TlsHop {
    /// Where it listens.
    pub address: SocketAddr,
    /// The node its certificate names.
    pub node: String,
    /// The process that serves it.
    pub pid: u32,
}

/// What a row drives load at: the processes in the way and their addresses.
pub struct Target {
    /// The agents the setup started, in start order.
    agents: Vec<Agent>,
    /// The haproxy or nginx processes the setup started, in start order.
    programs: Vec<Process>,
    /// The proxy processes (children such as nginx workers are found when measuring).
    pub proxies: Vec<u32>,
    /// The mutual-TLS port between two proxies, for the setups that have one.
    pub tls_hop: Option<TlsHop>,
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
            .chain(self.programs.iter_mut())
    }
}

impl Bench {
    /// Starts the processes of `setup`, waits until a request through them succeeds and checks
    /// that its TLS hop, if it has one, takes nothing but mutual TLS.
    pub fn start(&self, setup: Setup) -> Result<Target> {
        let backend_port = self.backend.http1.port();
        let mut target = match setup {
            Setup::Direct => Target {
                agents: vec![],
                programs: vec![],
                proxies: vec![],
                tls_hop: None,
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
                        ONE_AGENT_NODE,
                        inbound,
                        Some(backend_port),
                        Some((free_address()?, inbound, ONE_AGENT_NODE)),
                    ),
                )?;
                let upstream = first_upstream(&agent)?;
                let pid = agent.process().id();
                Target {
                    proxies: vec![pid],
                    tls_hop: Some(TlsHop {
                        address: inbound,
                        node: ONE_AGENT_NODE.into(),
                        pid,
                    }),
                    agents: vec![agent],
                    programs: vec![],
                    http1: upstream,
                    http2: upstream,
                }
            }
            Setup::Mesh => {
                let mut host = self.start_agent(
                    "host",
                    &agent_config(&self.dir, HOST_NODE, ANY_PORT, Some(backend_port), None),
                )?;
                let mut caller = self.start_agent(
                    "caller",
                    &agent_config(
                        &self.dir,
                        CALLER_NODE,
                        ANY_PORT,
                        None,
                        Some((free_address()?, host.inbound, HOST_NODE)),
                    ),
                )?;
                let upstream = first_upstream(&caller)?;
                let host_pid = host.process().id();
                Target {
                    proxies: vec![caller.process().id(), host_pid],
                    tls_hop: Some(TlsHop {
                        address: host.inbound,
                        node: HOST_NODE.into(),
                        pid: host_pid,
                    }),
                    agents: vec![host, caller],
                    programs: vec![],
                    http1: upstream,
                    http2: upstream,
                }
            }
            Setup::Haproxy => {
                let (http1, http2) = (free_address()?, free_address()?);
                let config = haproxy::single(http1, http2, self.backend.http1);
                let haproxy = self.start_haproxy("haproxy", &config)?;
                Target {
                    agents: vec![],
                    proxies: vec![haproxy.id()],
                    programs: vec![haproxy],
                    tls_hop: None,
                    http1,
                    http2,
                }
            }
            Setup::HaproxyChain | Setup::HaproxyChainTls | Setup::HaproxyChainTlsHttp1 => {
                let files = &self.certificates.haproxy;
                let (hop, name) = match setup {
                    Setup::HaproxyChainTls => {
                        (Hop::MutualTls(files, Between::Http2), "haproxy-tls")
                    }
                    Setup::HaproxyChainTlsHttp1 => {
                        (Hop::MutualTls(files, Between::Http1), "haproxy-tls-h1")
                    }
                    _ => (Hop::Plain, "haproxy-plain"),
                };
                let (http1, http2, between) = (free_address()?, free_address()?, free_address()?);
                let inner = self.start_haproxy(
                    &format!("{name}-2"),
                    &haproxy::inner(between, self.backend.http1, hop),
                )?;
                let edge = self.start_haproxy(
                    &format!("{name}-1"),
                    &haproxy::edge(http1, http2, between, hop),
                )?;
                let inner_pid = inner.id();
                Target {
                    agents: vec![],
                    proxies: vec![edge.id(), inner_pid],
                    tls_hop: matches!(hop, Hop::MutualTls(..)).then(|| TlsHop {
                        address: between,
                        node: HAPROXY_INNER.into(),
                        pid: inner_pid,
                    }),
                    programs: vec![inner, edge],
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
                    programs: vec![nginx],
                    tls_hop: None,
                    http1: addresses.0,
                    http2: addresses.1,
                }
            }
        };
        let http1 = target.http1;
        let mut processes: Vec<&mut Process> = target.processes().collect();
        wait_until_ok(&self.runtime, http1, &mut processes, setup.name())?;
        if let Some(hop) = &target.tls_hop {
            self.check_mutual_tls(hop, setup.name())?;
        }
        Ok(target)
    }

    /// Starts haproxy `name` on the config text `config`, both in `target/bench/<name>.*`.
    fn start_haproxy(&self, name: &str, config: &str) -> Result<Process> {
        let file = self.dir.join(format!("{name}.cfg"));
        write(&file, config)?;
        let mut plain = Command::new(&self.tools.haproxy);
        plain.arg("-db").arg("-f").arg(&file);
        let mut command = wrapped(plain, &self.proxy_wrapper);
        spawn(name, &mut command, &self.dir.join(format!("{name}.log")))
    }

    /// Starts agent `name` on the config `yaml` (one worker thread, its log in
    /// `target/bench/agent-<name>.log`) and reads its ready line.
    fn start_agent(&self, name: &str, yaml: &str) -> Result<Agent> {
        let config = self.dir.join(format!("agent-{name}.yaml"));
        write(&config, yaml)?;
        let log = self.dir.join(format!("agent-{name}.log"));
        let mut command = wrapped(Agent::command(&self.agent, &config), &self.proxy_wrapper);
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

/// `command` run under `wrapper` (a program and its arguments), with the same arguments and
/// environment; `command` itself when `wrapper` is empty.
fn wrapped(command: Command, wrapper: &[OsString]) -> Command {
    let Some((program, arguments)) = wrapper.split_first() else {
        return command;
    };
    let mut outer = Command::new(program);
    outer
        .args(arguments)
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => outer.env(name, value),
            None => outer.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        outer.current_dir(dir);
    }
    outer
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
    upstream: Option<(SocketAddr, SocketAddr, &str)>,
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
    if let Some((listen, endpoint, node)) = upstream {
        yaml.push_str(&format!(
            "  upstreams:
    - {{listen: {listen}, service: {SERVICE}}}
  staticServices:
    - name: {SERVICE}
      endpoints: [{{address: \"{endpoint}\", node: {node}, site: {AGENT_SITE}}}]
"
        ));
    }
    yaml
}
