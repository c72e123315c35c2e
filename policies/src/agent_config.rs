//! `AgentConfig`: the agent's own local file — who this node is, where it listens, what it
//! hosts, and what it may call without a control plane. `metadata.name` is the node name.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Duration, Protocol};

/// Spec of an `AgentConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentConfigSpec {
    /// Site (data centre, region, edge location) this node is in; drives locality. Default
    /// `default`.
    pub site: String,
    /// Control-plane addresses (`host:port`); empty runs from `staticServices` only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub control_plane: Vec<String>,
    /// How this host gets its node certificate the first time (it keeps and renews it in
    /// `dataDir` from then on).
    #[serde(skip_serializing_if = "AgentJoin::is_empty")]
    #[cfg_attr(test, proptest(value = "AgentJoin::default()"))]
    pub join: AgentJoin,
    /// Where the node's certificate, key and roots are (`ca.pem`, `node.pem`,
    /// `node-key.pem`); default `<dataDir>/tls`. A join writes them there; an agent without a
    /// control plane needs them from its operator (`hyphae ca issue`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, proptest(value = "None"))]
    pub tls_dir: Option<PathBuf>,
    /// Where peer agents reach this node's inbound listener, as registered with the control
    /// plane; unset means `listeners.inbound`, or when that is a wildcard address, this host's
    /// address on the route to the control plane.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        test,
        proptest(strategy = "crate::roundtrip_tests::optional_socket_addr()")
    )]
    pub advertise: Option<SocketAddr>,
    /// Where the agent keeps its state (last applied snapshot, certificates). Default
    /// `/var/lib/hyphae`.
    pub data_dir: PathBuf,
    /// Listening addresses.
    pub listeners: Listeners,
    /// Services this host runs, which peers reach through this agent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<LocalService>,
    /// Local ports that lead to a mesh service, for apps that cannot use the mesh DNS.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<Upstream>,
    /// Resource limits.
    pub limits: AgentLimits,
    /// The DNS server on `listeners.dns`: the mesh zone it answers and the bounds it keeps.
    pub dns: DnsSettings,
    /// Services and endpoints known without a control plane (a lone edge box, tests).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub static_services: Vec<StaticService>,
}

impl Default for AgentConfigSpec {
    fn default() -> Self {
        AgentConfigSpec {
            site: "default".to_string(),
            control_plane: Vec::new(),
            join: AgentJoin::default(),
            tls_dir: None,
            advertise: None,
            data_dir: PathBuf::from("/var/lib/hyphae"),
            listeners: Listeners::default(),
            services: Vec::new(),
            upstreams: Vec::new(),
            limits: AgentLimits::default(),
            dns: DnsSettings::default(),
            static_services: Vec::new(),
        }
    }
}

/// What a host without a certificate presents to the control plane to get one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentJoin {
    /// SHA-256 fingerprint (hex) of the cluster's root certificate, which the agent pins before
    /// it trusts anything the control plane says (`hyphae ca`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
    /// An owner-only file holding a join token's secret (`hyphae token create`); used once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl AgentJoin {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.ca_fingerprint.is_none() && self.token_file.is_none()
    }
}

/// Where the agent listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Listeners {
    /// Admin endpoint (`/metrics`, `/ready`, `/config`...). Default `127.0.0.1:4191`.
    #[cfg_attr(test, proptest(strategy = "crate::roundtrip_tests::socket_addr()"))]
    pub admin: SocketAddr,
    /// Where peer agents deliver calls for this host's services. Default `0.0.0.0:4143`.
    #[cfg_attr(test, proptest(strategy = "crate::roundtrip_tests::socket_addr()"))]
    pub inbound: SocketAddr,
    /// HTTP proxy port for `HTTP_PROXY` clients; `null` turns it off. Default `127.0.0.1:4140`.
    #[cfg_attr(
        test,
        proptest(strategy = "crate::roundtrip_tests::optional_socket_addr()")
    )]
    pub http_proxy: Option<SocketAddr>,
    /// DNS server for the mesh zone; `null` turns it off. Default `127.0.0.1:5353`.
    #[cfg_attr(
        test,
        proptest(strategy = "crate::roundtrip_tests::optional_socket_addr()")
    )]
    pub dns: Option<SocketAddr>,
    /// Listen on every mesh service's virtual IP, at each of its ports, so apps reach
    /// `<service>.mesh:<port>` with no configuration; `false` turns it off (one agent per
    /// host should own them). Default `true`.
    pub virtual_ips: bool,
}

impl Default for Listeners {
    fn default() -> Self {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Listeners {
            admin: SocketAddr::new(localhost, 4191),
            inbound: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 4143),
            http_proxy: Some(SocketAddr::new(localhost, 4140)),
            dns: Some(SocketAddr::new(localhost, 5353)),
            virtual_ips: true,
        }
    }
}

/// A service instance running on this host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalService {
    /// Service name (lower-case DNS label).
    pub name: String,
    /// Port the instance listens on.
    pub port: u16,
    /// Address the instance listens on. Default `127.0.0.1`.
    #[serde(default = "localhost")]
    pub address: IpAddr,
    /// Protocol it speaks. Default `http`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Tags routes can select subsets by (`version: v2`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Local health check; none means always healthy while the agent is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<HealthCheck>,
}

fn localhost() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// A health check: exactly one of `http` (a path, 2xx is healthy) or `tcp: true` (a connect).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    /// Path to GET, e.g. `/healthz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Check by opening a TCP connection.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tcp: bool,
    /// Time between checks. Default `5s`.
    pub interval: Duration,
    /// Longest a check may take. Default `1s`.
    pub timeout: Duration,
    /// Passes in a row that make an unhealthy instance healthy. Default 2.
    pub rise: u32,
    /// Failures in a row that make a healthy instance unhealthy. Default 3.
    pub fall: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            http: None,
            tcp: false,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// A local port that leads to a mesh service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Upstream {
    /// Address the agent listens on for this upstream, e.g. `127.0.0.1:9001`.
    #[cfg_attr(test, proptest(strategy = "crate::roundtrip_tests::socket_addr()"))]
    pub listen: SocketAddr,
    /// Service reached through it.
    pub service: String,
    /// The service's port, when it has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Named resource limits of the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentLimits {
    /// Largest request or response head (start line + headers). Default 65536.
    pub max_header_bytes: u32,
    /// Largest body kept for replay on retry; bigger bodies are never retried. Default 65536.
    pub retry_buffer_bytes: u32,
    /// Most connections accepted at once on the listeners local apps use: upstream ports, the
    /// HTTP proxy port and virtual IPs. Default 10000.
    pub max_connections: u32,
    /// Most connections accepted at once on the inbound port, which faces the network: a
    /// budget of its own, so connections from elsewhere cannot shut the local ports.
    /// Default 10000.
    pub max_inbound_connections: u32,
    /// Most connections one source address may hold on the inbound port. A peer agent opens
    /// at most `maxConnectionsPerUpstream` to this host, so the default leaves room for 128
    /// peers behind one address (a NAT between sites). Default 1024.
    pub max_inbound_connections_per_source: u32,
    /// HTTP/2 streams per connection. Default 256.
    pub max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before being accepted (rapid-reset protection).
    /// Default 20.
    pub max_pending_accept_reset_streams: u32,
    /// Most requests in flight on one HTTP/2 connection the agent opens (to a peer agent or a
    /// local `http2`/`grpc` instance); the server's own `SETTINGS_MAX_CONCURRENT_STREAMS`
    /// lowers it. When every connection to a destination is full, another is opened. Default
    /// 100. Read at start.
    pub max_streams_per_upstream_connection: u32,
    /// Most HTTP/2 connections the agent opens to one peer agent or local instance; beyond
    /// it requests wait for a stream on the least loaded one. Default 8. Read at start.
    pub max_connections_per_upstream: u32,
    /// An HTTP/2 connection the agent opened beyond a destination's first one, that carried no
    /// call for this long, is closed: the extra connections a burst opened do not stay open
    /// for good. Default `60s`. Read at start.
    pub upstream_connection_idle_timeout: Duration,
    /// Longest a client may take to send a request head, an HTTP/2 client its connection
    /// preface or its answer to the agent's PING after this long without a frame: a silent
    /// client must not hold one of `maxConnections` for good. Default `10s`.
    pub header_read_timeout: Duration,
    /// Longest SIGTERM waits for in-flight calls. Default `30s`.
    pub drain_timeout: Duration,
    /// After the agent closes an HTTP/1.1 client's connection while the client may still be
    /// sending (an answer given before the request's body was read whole), how long it goes
    /// on reading and dropping what arrives, so the client reads the answer instead of a
    /// reset that destroys it (RFC 9112 §9.6; nginx's `lingering_close`). The connection
    /// still counts toward `maxConnections` meanwhile. `0s` closes at once. Default `5s`.
    pub lingering_close_timeout: Duration,
    /// Longest a call may go with neither its request's nor its answer's body moving while
    /// the agent waits for one (Envoy's `stream_idle_timeout`; a route rule's `timeouts.idle`
    /// stands for it). A caller gone quiet in its request's body gets 408 (`caller-idle`);
    /// an answer gone quiet ends cut short (a reset stream, or a closed HTTP/1.1 connection).
    /// A stalled upload, a slow-body client or a stuck instance would otherwise hold both
    /// connections for as long as it liked. Time the agent spends not reading, because the
    /// other side is not, does not count. Also the longest a write to a client may wait for
    /// it to read (nginx's `send_timeout`): a client that takes nothing is closed. `0s` waits
    /// for ever. Default `5m`.
    pub stream_idle_timeout: Duration,
    /// Least time between two writes of the control plane's state to the data directory (each
    /// one fsyncs): a burst of changes is written as its latest state once this has passed
    /// since the previous write, and the latest state is always written before the agent
    /// exits. Default `1s`.
    pub snapshot_save_interval: Duration,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            max_header_bytes: 65_536,
            retry_buffer_bytes: 65_536,
            max_connections: 10_000,
            max_inbound_connections: 10_000,
            max_inbound_connections_per_source: 1024,
            max_concurrent_streams: 256,
            max_pending_accept_reset_streams: 20,
            max_streams_per_upstream_connection: 100,
            max_connections_per_upstream: 8,
            upstream_connection_idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            lingering_close_timeout: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_secs(300),
            snapshot_save_interval: Duration::from_secs(1),
        }
    }
}

/// The agent's DNS server (`listeners.dns`): it answers the mesh zone itself and forwards every
/// other name to the host's resolvers, within these bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DnsSettings {
    /// The zone the agent answers for: `<service>.<zone>` is a service's virtual IP. Default
    /// `mesh`.
    pub zone: String,
    /// TTL of the mesh zone's answers, short because services come and go (their virtual IPs
    /// stay). Default `5s`.
    pub ttl: Duration,
    /// Resolvers other names are forwarded to (`ip:port`); empty means the `nameserver`s of
    /// `/etc/resolv.conf`, read at start. The agent's own address is skipped either way.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        test,
        proptest(
            strategy = "proptest::collection::vec(crate::roundtrip_tests::socket_addr(), 0..3)"
        )
    )]
    pub upstreams: Vec<SocketAddr>,
    /// Forwarded answers kept (each until its TTL runs out). Default 4096.
    pub cache_size: u32,
    /// Queries answered per second, all clients together; beyond it they are refused
    /// (`REFUSED`). Default 2000.
    pub max_queries_per_second: u32,
    /// Queries answered per second from one client address. Default 500.
    pub max_queries_per_second_per_source: u32,
    /// TCP connections open at once; more are closed at once. Default 64.
    pub max_tcp_connections: u32,
    /// Longest a TCP connection may wait for its next query (or finish sending one). Default
    /// `10s`.
    pub tcp_idle_timeout: Duration,
    /// Largest answer sent over UDP (also capped by what the client advertises, at least 512);
    /// a larger one goes out truncated with the TC bit, so the client asks again over TCP.
    /// Default 1232, the size that avoids IP fragmentation.
    pub max_udp_response_bytes: u16,
    /// Forwarded queries waiting for an upstream at once; beyond it they are refused. Default
    /// 256.
    pub max_in_flight_forwards: u32,
    /// Longest a forwarded query waits for the upstreams before the client gets `SERVFAIL`.
    /// Default `3s`.
    pub forward_timeout: Duration,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            zone: "mesh".to_string(),
            ttl: Duration::from_secs(5),
            upstreams: Vec::new(),
            cache_size: 4096,
            max_queries_per_second: 2000,
            max_queries_per_second_per_source: 500,
            max_tcp_connections: 64,
            tcp_idle_timeout: Duration::from_secs(10),
            max_udp_response_bytes: 1232,
            max_in_flight_forwards: 256,
            forward_timeout: Duration::from_secs(3),
        }
    }
}

/// A service known without a control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticService {
    /// Service name.
    pub name: String,
    /// Protocol. Default `http`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Where it runs.
    pub endpoints: Vec<StaticEndpoint>,
}

/// One endpoint of a static service: a peer agent's inbound port, reached over mutual TLS. A
/// service outside the mesh, which cannot prove a mesh identity, is an `ExternalService`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticEndpoint {
    /// Address to connect to.
    #[cfg_attr(test, proptest(strategy = "crate::roundtrip_tests::socket_addr()"))]
    pub address: SocketAddr,
    /// Node whose agent listens at `address`: its certificate must name this node, and an
    /// endpoint on the agent's own node is delivered without the tunnel. Unset: any node the
    /// mesh's CA vouches for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Site the endpoint is in; unset means the agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Tags for subsets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Which of the peer's instances of the service, by the port it listens on, when the
    /// peer hosts several; unset lets the peer deliver to its first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}
