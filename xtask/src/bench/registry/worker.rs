//! One worker process of `cargo xtask bench registry`: simulates a share of the agents, each
//! with its own node certificate and its own HTTP/2 connection to one node (as a real agent
//! holds one), registering once and then heart-beating as `agent/src/register.rs` does. Takes
//! its share as a JSON line on stdin, then the commands `measure` and `report`; answers with
//! JSON lines on stdout. Measures only what the agents see (latencies, answers, errors); the
//! coordinator measures the nodes.

use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyphae_policies::Protocol;
use hyphae_policies::registry::{
    HEARTBEAT_PATH, Heartbeat, InstanceRecord, Lease, NodeRecord, REGISTER_PATH, UNKNOWN_NODE,
};
use hyphae_policies::tls::{ALPN_H2, ServerIdentity, TlsConnector, client_config};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::certificates::NodeIssuer;
use crate::bench::push::raise_fd_limit;

/// Runtime worker threads per worker process: one, so the nodes keep most of the machine.
const THREADS: usize = 1;
/// Registrations in flight at once per worker (connect, TLS handshake and Raft write): enough
/// to keep Raft's batches full, few enough that no accept backlog overflows.
const REGISTER_CONCURRENCY: usize = 64;
/// Pause before an agent whose registration failed tries again.
const REGISTER_RETRY: Duration = Duration::from_secs(1);
/// Longest an agent the control plane forgot (a heartbeat answered `unknown-node`) keeps
/// trying to register again before it stops.
const REREGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one registry request may take, as the agent's `register::REQUEST_TIMEOUT`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a TCP connect and TLS handshake may take, as the agent's `CONNECT_TIMEOUT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Heartbeats per lease, as the agent sends them (`register.rs`: every third of the lease).
const HEARTBEATS_PER_LEASE: u32 = 3;
/// Shortest pause between heartbeats, as the agent's `MIN_HEARTBEAT_INTERVAL`.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// How often the worker checks whether every agent is done registering.
const PROGRESS_POLL: Duration = Duration::from_millis(50);
/// Services the agents host, one each (agent `i` hosts `bench-<i mod SERVICES>`): a fleet has
/// many nodes per service, and the registry groups them.
const SERVICES: usize = 100;
/// The port every simulated agent registers its instance on.
const SERVICE_PORT: u16 = 8080;
/// The inbound port every simulated agent registers (addresses differ, so records differ).
const INBOUND_PORT: u16 = 4143;
/// The first of the addresses the agents register, one each, counting up: the registry only
/// stores them (nothing connects to them).
const FIRST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Site of every simulated agent.
const SITE: &str = "default";
/// Version the simulated agents register.
const AGENT_VERSION: &str = "bench";

/// What the coordinator gives a worker.
pub struct Share {
    /// The nodes; agent `i` talks to node `i mod len` (spread as real agents spread).
    pub nodes: Vec<SocketAddr>,
    /// The first agent's index.
    pub first: usize,
    /// How many agents this worker simulates.
    pub count: usize,
    /// The cluster's root, with its key.
    pub root_dir: PathBuf,
    /// The cluster's trust domain.
    pub trust_domain: String,
    /// Longest the agents may take to register, all together.
    pub register_timeout: Duration,
}

impl Share {
    /// The share as the JSON line the coordinator writes.
    pub fn to_json(&self) -> Value {
        json!({
            "nodes": self.nodes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "first": self.first,
            "count": self.count,
            "rootDir": self.root_dir,
            "trustDomain": self.trust_domain,
            "registerTimeoutMs": self.register_timeout.as_millis() as u64,
        })
    }

    /// Reads the JSON line back.
    fn from_json(value: &Value) -> Result<Share> {
        let text = |key: &str| {
            value[key]
                .as_str()
                .with_context(|| format!("the share has no {key}"))
        };
        let number = |key: &str| {
            value[key]
                .as_u64()
                .with_context(|| format!("the share has no {key}"))
        };
        let nodes = value["nodes"]
            .as_array()
            .context("the share has no nodes")?
            .iter()
            .map(|n| {
                n.as_str()
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("node {n} is not an address"))
            })
            .collect::<Result<Vec<SocketAddr>>>()?;
        ensure!(!nodes.is_empty(), "the share names no nodes");
        Ok(Share {
            nodes,
            first: usize::try_from(number("first")?)?,
            count: usize::try_from(number("count")?)?,
            root_dir: PathBuf::from(text("rootDir")?),
            trust_domain: text("trustDomain")?.to_string(),
            register_timeout: Duration::from_millis(number("registerTimeoutMs")?),
        })
    }
}

/// Runs a worker: reads its share from stdin, registers the agents, says so, then serves
/// `measure` (start counting heartbeats) and `report` (print what was counted) until stdin
/// closes.
pub fn run() -> Result<()> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let first = lines.next().context("no share on stdin")??;
    let share = Share::from_json(&serde_json::from_str(&first).context("decode the share")?)?;
    raise_fd_limit(share.count)?;
    let issuer = NodeIssuer::load(&share.root_dir, &share.trust_domain)?;
    let trust = issuer.trust()?;
    let mut agents = Vec::with_capacity(share.count);
    for index in share.first..share.first + share.count {
        let name = agent_name(index);
        let service = format!("bench-{}", index % SERVICES);
        let credentials = issuer.node(&name, &service)?;
        let config = client_config(&trust, Some(&credentials), &ALPN_H2)
            .context("the agents' TLS configuration")?;
        agents.push(Agent {
            index,
            server: share.nodes[index % share.nodes.len()],
            node_slot: index % share.nodes.len(),
            name,
            service,
            tls: TlsConnector::new(config, ServerIdentity::ControlPlane, CONNECT_TIMEOUT),
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()
        .context("start the agents' runtime")?;
    let shared = Arc::new(Shared::new(share.nodes.len()));
    let deadline = Instant::now() + share.register_timeout;
    let started = std::time::Instant::now();
    for agent in agents {
        runtime.spawn(agent.run(Arc::clone(&shared), deadline));
    }
    runtime.block_on(async {
        while shared.settled.load(Ordering::Relaxed) < share.count {
            tokio::time::sleep(PROGRESS_POLL).await;
        }
    });
    answer(&json!({
        "registered": shared.registered.load(Ordering::Relaxed),
        "registerSeconds": started.elapsed().as_secs_f64(),
        "registerErrors": shared.register_errors.load(Ordering::Relaxed),
        "firstRegisterError": *shared.first_register_error.lock().unwrap_or_else(PoisonError::into_inner),
        "ttlMs": shared.ttl_ms.load(Ordering::Relaxed),
    }))?;
    for line in lines {
        match line.context("read a command")?.trim() {
            "measure" => shared.start_window(),
            "report" => answer(&shared.end_window())?,
            other => bail!("unknown command `{other}`"),
        }
    }
    // Stdin closed: the coordinator is done. Dropping the runtime stops every agent.
    Ok(())
}

/// Writes one JSON line to the coordinator.
fn answer(value: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}").context("answer the coordinator")?;
    out.flush().context("answer the coordinator")
}

/// How often an agent granted leases of `ttl` heartbeats, as `agent/src/register.rs` works it
/// out.
pub fn heartbeat_interval(ttl: Duration) -> Duration {
    (ttl / HEARTBEATS_PER_LEASE).max(MIN_HEARTBEAT_INTERVAL)
}

/// The node name of agent `index`.
fn agent_name(index: usize) -> String {
    format!("bench-agent-{index}")
}

/// What the agents share with the worker's main thread.
struct Shared {
    /// Agents registered.
    registered: AtomicUsize,
    /// Agents registered or given up.
    settled: AtomicUsize,
    /// Registrations in flight.
    registering: Semaphore,
    /// Failed registration attempts.
    register_errors: AtomicU64,
    /// The first of them.
    first_register_error: Mutex<Option<String>>,
    /// The lease the control plane grants, from the last registration answered.
    ttl_ms: AtomicU64,
    /// Whether heartbeats are counted now.
    recording: AtomicBool,
    /// What was counted since `measure`.
    window: Mutex<Window>,
}

/// Heartbeats counted in the measuring window.
#[derive(Default)]
struct Window {
    /// Heartbeats answered, by the node the agent talks to (its index).
    answered: Vec<u64>,
    /// Their latencies in microseconds, by node.
    latencies_us: Vec<Vec<u64>>,
    /// Heartbeats that failed (refused, unanswered in time, connection lost).
    errors: u64,
    /// The first failure.
    first_error: Option<String>,
}

impl Shared {
    /// Nothing counted yet, for agents spread over `nodes` nodes.
    fn new(nodes: usize) -> Shared {
        Shared {
            registered: AtomicUsize::new(0),
            settled: AtomicUsize::new(0),
            registering: Semaphore::new(REGISTER_CONCURRENCY),
            register_errors: AtomicU64::new(0),
            first_register_error: Mutex::new(None),
            ttl_ms: AtomicU64::new(0),
            recording: AtomicBool::new(false),
            window: Mutex::new(Window {
                answered: vec![0; nodes],
                latencies_us: vec![Vec::new(); nodes],
                ..Window::default()
            }),
        }
    }

    /// Starts counting heartbeats afresh.
    fn start_window(&self) {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let nodes = window.answered.len();
        *window = Window {
            answered: vec![0; nodes],
            latencies_us: vec![Vec::new(); nodes],
            ..Window::default()
        };
        self.recording.store(true, Ordering::Release);
    }

    /// Stops counting and returns what was counted.
    fn end_window(&self) -> Value {
        self.recording.store(false, Ordering::Release);
        let window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        json!({
            "answered": window.answered,
            "latenciesUs": window.latencies_us,
            "errors": window.errors,
            "firstError": window.first_error,
        })
    }

    /// Counts a heartbeat answered after `latency` by node `slot`, while recording.
    fn answered(&self, slot: usize, latency: Duration) {
        if !self.recording.load(Ordering::Acquire) {
            return;
        }
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        window.answered[slot] += 1;
        window.latencies_us[slot].push(latency.as_micros() as u64);
    }

    /// Counts a failed heartbeat, while recording.
    fn failed(&self, agent: &str, error: &anyhow::Error) {
        if !self.recording.load(Ordering::Acquire) {
            return;
        }
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        window.errors += 1;
        window
            .first_error
            .get_or_insert_with(|| format!("{agent}: {error:#}"));
    }

    /// Counts a failed registration attempt.
    fn register_failed(&self, agent: &str, error: &anyhow::Error) {
        self.register_errors.fetch_add(1, Ordering::Relaxed);
        self.first_register_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| format!("{agent}: {error:#}"));
    }
}

/// One simulated agent.
struct Agent {
    /// Its index in the whole population.
    index: usize,
    /// The node it talks to.
    server: SocketAddr,
    /// That node's index among the nodes.
    node_slot: usize,
    /// Its node name, which its certificate names.
    name: String,
    /// The service it hosts, which its certificate names.
    service: String,
    /// Opens its TLS connections, presenting its certificate.
    tls: TlsConnector,
}

/// Why a registry request failed.
enum Failure {
    /// The control plane does not hold the node: register again.
    UnknownNode(anyhow::Error),
    /// Anything else.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Other(error)
    }
}

impl Agent {
    /// Registers (until `deadline`), then heartbeats every third of the lease, as the agent
    /// does, until the runtime stops. A heartbeat answered `unknown-node` registers again.
    async fn run(self, shared: Arc<Shared>, deadline: Instant) {
        let mut connection = None;
        let Some(lease) = self.register(&shared, &mut connection, deadline).await else {
            shared.settled.fetch_add(1, Ordering::Relaxed);
            return;
        };
        shared.registered.fetch_add(1, Ordering::Relaxed);
        shared.settled.fetch_add(1, Ordering::Relaxed);
        let every = heartbeat_interval(Duration::from_millis(lease.ttl_ms));
        // A fleet's agents started at different times, so their beats are spread over the
        // interval; registering in a burst would otherwise bunch them.
        let mut next = Instant::now() + every.mul_f64(rand::random::<f64>());
        loop {
            tokio::time::sleep_until(next).await;
            let sent = Instant::now();
            let beat = Heartbeat {
                node: self.name.clone(),
            };
            match self
                .post::<Lease>(&mut connection, HEARTBEAT_PATH, &beat)
                .await
            {
                Ok(_) => shared.answered(self.node_slot, sent.elapsed()),
                Err(Failure::UnknownNode(error)) => {
                    shared.failed(&self.name, &error);
                    let deadline = Instant::now() + REREGISTER_TIMEOUT;
                    if self
                        .register(&shared, &mut connection, deadline)
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
                Err(Failure::Other(error)) => {
                    shared.failed(&self.name, &error);
                    connection = None;
                }
            }
            // As the agent: the next beat one interval after this one's answer.
            next = Instant::now() + every;
        }
    }

    /// Registers, trying again after each failure until `deadline`; the lease, or `None` when
    /// the deadline passed.
    async fn register(
        &self,
        shared: &Shared,
        connection: &mut Option<http2::SendRequest<Full<Bytes>>>,
        deadline: Instant,
    ) -> Option<Lease> {
        let record = self.record();
        loop {
            let permit = shared.registering.acquire().await.ok();
            let result = self.post::<Lease>(connection, REGISTER_PATH, &record).await;
            drop(permit);
            match result {
                Ok(lease) => {
                    shared.ttl_ms.store(lease.ttl_ms, Ordering::Relaxed);
                    return Some(lease);
                }
                Err(Failure::UnknownNode(error) | Failure::Other(error)) => {
                    shared.register_failed(&self.name, &error);
                    *connection = None;
                }
            }
            if Instant::now() + REGISTER_RETRY >= deadline {
                return None;
            }
            tokio::time::sleep(REGISTER_RETRY).await;
        }
    }

    /// The registration: its node, address and one instance.
    fn record(&self) -> NodeRecord {
        let offset = u32::try_from(self.index).unwrap_or(u32::MAX);
        let address = Ipv4Addr::from(u32::from(FIRST_ADDRESS).saturating_add(offset));
        NodeRecord {
            name: self.name.clone(),
            site: SITE.to_string(),
            address: SocketAddr::from((address, INBOUND_PORT)),
            agent_version: AGENT_VERSION.to_string(),
            instances: vec![InstanceRecord {
                service: self.service.clone(),
                port: SERVICE_PORT,
                protocol: Protocol::Http,
                tags: Default::default(),
                health: Default::default(),
            }],
            revision: 0,
        }
    }

    /// `POST path` of `body` as JSON on the agent's connection (opened first when there is
    /// none), within [`REQUEST_TIMEOUT`]; the answer decoded.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        connection: &mut Option<http2::SendRequest<Full<Bytes>>>,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, Failure> {
        let body = serde_json::to_vec(body).context("encode the request")?;
        let request = Request::post(format!("https://{}{path}", self.server))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .context("build the request")?;
        let exchange = async {
            let sender = match connection {
                Some(sender) if !sender.is_closed() => sender,
                _ => connection.insert(self.connect().await?),
            };
            sender
                .ready()
                .await
                .context("the connection is not ready")?;
            let response = sender
                .send_request(request)
                .await
                .with_context(|| format!("POST {path}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .with_context(|| format!("read the answer to POST {path}"))?
                .to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                anyhow::anyhow!("POST {path} got no answer within {REQUEST_TIMEOUT:?}")
            })??;
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            let error = anyhow::anyhow!("POST {path} answered {status}: {text}");
            let code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string));
            return Err(if code.as_deref() == Some(UNKNOWN_NODE) {
                Failure::UnknownNode(error)
            } else {
                Failure::Other(error)
            });
        }
        Ok(
            serde_json::from_slice(&body)
                .with_context(|| format!("decode the answer to {path}"))?,
        )
    }

    /// A new HTTP/2 connection to the agent's node, its driver spawned.
    async fn connect(&self) -> Result<http2::SendRequest<Full<Bytes>>> {
        let host = self.server.ip().to_string();
        let stream = self
            .tls
            .open(&host, self.server.port())
            .await
            .with_context(|| format!("connect to {}", self.server))?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/2 handshake with {}", self.server))?;
        tokio::spawn(async move {
            // Its end shows as a closed sender, which the next request replaces.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_reads_back_as_written() {
        let share = Share {
            nodes: vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
            first: 10_000,
            count: 5,
            root_dir: PathBuf::from("/tmp/root"),
            trust_domain: "hyphae.local".into(),
            register_timeout: Duration::from_secs(3),
        };
        let back = Share::from_json(&share.to_json()).unwrap();
        assert_eq!(back.nodes, share.nodes);
        assert_eq!((back.first, back.count), (10_000, 5));
        assert_eq!(back.root_dir, share.root_dir);
        assert_eq!(back.trust_domain, share.trust_domain);
        assert_eq!(back.register_timeout, share.register_timeout);
        assert!(Share::from_json(&json!({"nodes": []})).is_err());
    }

    #[test]
    fn agents_heartbeat_three_times_per_lease() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(15)),
            Duration::from_secs(5)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_millis(30)),
            MIN_HEARTBEAT_INTERVAL
        );
    }
}
