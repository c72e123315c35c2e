//! The smallest meshes data-path tests build, as agent configs: a host agent in front of one
//! backend, a caller agent with one upstream port whose endpoints are those hosts, one agent
//! that is both, and the two ways to one instance ([`both_paths`]) that fidelity tests compare
//! with a direct call. Only YAML and launches; what the mesh does with calls is for the tests
//! to check.

use std::net::SocketAddr;
use std::path::Path;

use crate::agent::Agent;
use crate::backend::TestBackend;
use crate::ports::free_ports;

/// A host agent called `name` in front of `backend`, hosting it as `service`.
pub fn host_agent(
    binary: impl AsRef<Path>,
    name: &str,
    service: &str,
    backend: &TestBackend,
) -> Agent {
    host_agent_for(binary, name, service, backend.port(), "http")
}

/// A host agent called `name` in front of the instance on local `port`, which speaks
/// `protocol` (`http`, `http2`, `grpc`...), hosting it as `service`.
pub fn host_agent_for(
    binary: impl AsRef<Path>,
    name: &str,
    service: &str,
    port: u16,
    protocol: &str,
) -> Agent {
    let yaml = format!(
        "kind: AgentConfig
metadata: {{name: {name}}}
spec:
  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}
  services:
    - {{name: {service}, port: {port}, protocol: {protocol}}}
"
    );
    Agent::start_yaml(binary.as_ref(), name, &yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// One agent that is caller and host at once (caller and instance on one host): the instance
/// on local `port`, speaking `protocol`, is its `service`, and its upstream port for `service`
/// leads to it through the endpoint that is its own node (HTTP calls in-process, streams
/// through its own inbound listener); `policies` are appended as more YAML documents.
pub fn one_agent(
    binary: impl AsRef<Path>,
    service: &str,
    port: u16,
    protocol: &str,
    policies: &str,
) -> Agent {
    // The config names its own inbound address as the endpoint, so that port is chosen ahead
    // too, below the ephemeral range as the upstream port is (a released ephemeral port can
    // become another test's outgoing connection before the agent binds it, which failed a CI
    // run), and different from it.
    let inbound = upstream_port();
    let upstream = loop {
        let port = upstream_port();
        if port != inbound {
            break port;
        }
    };
    let yaml = caller_config(
        service,
        &[format!(
            "{{address: \"127.0.0.1:{inbound}\", node: caller, site: one}}"
        )],
        upstream,
        policies,
    )
    .replace("inbound: 127.0.0.1:0", &format!("inbound: 127.0.0.1:{inbound}"))
    .replace(
        "  upstreams:",
        &format!("  services:\n    - {{name: {service}, port: {port}, protocol: {protocol}}}\n  upstreams:"),
    );
    Agent::start_yaml(binary.as_ref(), "solo", &yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// An endpoint entry (for [`caller_config`]) naming `agent`'s inbound port in `site`.
pub fn endpoint(agent: &Agent, site: &str) -> String {
    format!("{{address: \"{}\", site: {site}}}", agent.inbound)
}

/// A caller agent in site `one` with one upstream port for `service`, whose endpoints are
/// `endpoints` (from [`endpoint`]), with `policies` appended as more YAML documents.
pub fn caller_agent(
    binary: impl AsRef<Path>,
    service: &str,
    endpoints: &[String],
    policies: &str,
) -> Agent {
    let yaml = caller_config(service, endpoints, upstream_port(), policies);
    Agent::start_yaml(binary.as_ref(), "caller", &yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// A port for an upstream listener: the config must fix it (the agent refuses port 0 there),
/// so it is chosen ahead, below Linux's ephemeral range (32768 and up by default). A port from
/// that range, released until the agent binds it, could meanwhile become the local end of any
/// other test's outgoing connection (which failed a CI run); one from below it can only be
/// taken by a test that chose the same port, and one that is in use is skipped.
pub fn upstream_port() -> u16 {
    use rand::Rng;
    /// Tries before falling back to a port the kernel picks.
    const TRIES: usize = 200;
    let mut random = rand::rng();
    for _ in 0..TRIES {
        let port = random.random_range(UPSTREAM_PORTS);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_ports(1).unwrap_or_else(|e| panic!("{e}"))[0]
}

/// Where [`upstream_port`] draws from: below the ephemeral range, above well-known services.
const UPSTREAM_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// The configuration text of a caller agent (see [`caller_agent`]), listening for `service` on
/// `upstream_port`; rewrite it for reload tests.
pub fn caller_config(
    service: &str,
    endpoints: &[String],
    upstream_port: u16,
    policies: &str,
) -> String {
    format!(
        "kind: AgentConfig
metadata: {{name: caller}}
spec:
  site: one
  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: 127.0.0.1:0, dns: null}}
  upstreams:
    - {{listen: 127.0.0.1:{upstream_port}, service: {service}}}
  staticServices:
    - name: {service}
      endpoints: [{}]
{policies}",
        endpoints.join(", ")
    )
}

/// A way to an instance through the mesh: its name, the agents it takes and where a client
/// enters it. The agents stop when it is dropped.
pub struct MeshPath {
    /// `one agent` or `mesh path`, for failure messages.
    pub name: &'static str,
    /// The upstream port a client calls.
    pub entry: SocketAddr,
    /// The agents on the way.
    pub agents: Vec<Agent>,
}

/// The two ways to the instance on local `port`, which speaks `protocol`, as service `app`: one
/// agent (caller and instance on one host) and two agents over mutual TLS (the mesh path), with
/// `policies` in the caller's config.
pub fn both_paths(
    binary: impl AsRef<Path>,
    port: u16,
    protocol: &str,
    policies: &str,
) -> [MeshPath; 2] {
    let binary = binary.as_ref();
    let solo = one_agent(binary, "app", port, protocol, policies);
    let host = host_agent_for(binary, "host", "app", port, protocol);
    let caller = caller_agent(binary, "app", &[endpoint(&host, "one")], policies);
    [
        MeshPath {
            name: "one agent",
            entry: solo.upstream("app"),
            agents: vec![solo],
        },
        MeshPath {
            name: "mesh path",
            entry: caller.upstream("app"),
            agents: vec![host, caller],
        },
    ]
}
