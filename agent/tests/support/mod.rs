//! Shared helpers for the agent's process-level tests: a test backend with fault knobs, an
//! agent launcher that runs the real `hyphae-agent` binary, and a small HTTP client.
#![allow(dead_code)] // each test file uses a different part of the support module

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Every wait in these tests gives up after this long, so a broken feature fails instead of
/// hanging.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How the test backend answers, changeable while it runs.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Answer with this status instead of 200.
    pub status: Option<u16>,
    /// Wait this long before answering.
    pub delay: Duration,
}

/// An HTTP/1.1 + HTTP/2 server in the test process that counts requests and can misbehave.
pub struct TestBackend {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its name, returned in `x-backend` and the body.
    pub name: String,
    requests: Arc<AtomicUsize>,
    behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    /// Starts a backend on 127.0.0.1 with a free port.
    pub async fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let address = listener.local_addr().expect("backend address");
        let requests = Arc::new(AtomicUsize::new(0));
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let (counter, knobs, label) = (
            Arc::clone(&requests),
            Arc::clone(&behaviour),
            name.to_string(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (counter, knobs, label) =
                    (Arc::clone(&counter), Arc::clone(&knobs), label.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let (counter, knobs, label) =
                            (Arc::clone(&counter), Arc::clone(&knobs), label.clone());
                        async move {
                            Ok::<_, Infallible>(answer(request, &counter, &knobs, &label).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestBackend {
            address,
            name: name.to_string(),
            requests,
            behaviour,
            task,
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Changes how it answers.
    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("behaviour lock") = behaviour;
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The backend's answer. Paths: `/echo` returns the request body; `/bytes/N` returns N bytes;
/// anything else returns the backend's name. Query `?status=N` and `?delay_ms=N` override the
/// behaviour for one request.
async fn answer(
    request: Request<Incoming>,
    counter: &AtomicUsize,
    knobs: &Mutex<Behaviour>,
    name: &str,
) -> Response<Full<Bytes>> {
    counter.fetch_add(1, Ordering::SeqCst);
    let mut behaviour = knobs.lock().expect("behaviour lock").clone();
    let query = request.uri().query().unwrap_or_default().to_string();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("status", v)) => behaviour.status = v.parse().ok(),
            Some(("delay_ms", v)) => {
                behaviour.delay = Duration::from_millis(v.parse().unwrap_or(0))
            }
            _ => {}
        }
    }
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    let path = request.uri().path().to_string();
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = if path == "/echo" {
        request
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default()
    } else if let Some(size) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        Bytes::from(vec![b'x'; size])
    } else {
        Bytes::from(name.to_string())
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = behaviour
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    response
        .headers_mut()
        .insert("x-backend", name.parse().expect("header value"));
    if let Ok(host) = host.parse() {
        response.headers_mut().insert("x-seen-host", host);
    }
    response
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory named for the test.
    pub fn new(name: &str) -> Scratch {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hyphae-agent-test-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The first line a child prints on stdout, waiting at most [`DEADLINE`].
pub fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("child stdout is piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    receiver
        .recv_timeout(DEADLINE)
        .expect("the child printed its first line in time")
}

/// A running `hyphae-agent` process, killed when dropped.
pub struct Agent {
    /// The process.
    pub child: Child,
    /// Its configuration file (rewrite it and send SIGHUP to reload).
    pub config: PathBuf,
    /// Admin address.
    pub admin: SocketAddr,
    /// Inbound address.
    pub inbound: SocketAddr,
    /// HTTP proxy address, when enabled.
    pub http_proxy: Option<SocketAddr>,
    /// Upstream ports by service.
    pub upstreams: Vec<(String, SocketAddr)>,
    _scratch: Scratch,
}

impl Agent {
    /// Starts the agent with `yaml` as its configuration and waits for its ready line.
    pub fn start(name: &str, yaml: &str) -> Agent {
        let scratch = Scratch::new(name);
        let config = scratch.0.join("agent.yaml");
        std::fs::write(&config, yaml).expect("write agent config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hyphae-agent"))
            .arg("--config")
            .arg(&config)
            .arg("--log-format")
            .arg("human")
            .env("HYPHAE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hyphae-agent");
        let line = first_line(&mut child);
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("agent {name} did not start ({e}): {line:?}"));
        let ready = &ready["ready"];
        let address = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse().ok());
        Agent {
            child,
            config,
            admin: address(&ready["admin"]).expect("admin address"),
            inbound: address(&ready["inbound"]).expect("inbound address"),
            http_proxy: address(&ready["httpProxy"]),
            upstreams: ready["upstreams"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|pair| {
                            Some((pair[0].as_str()?.to_string(), address(&pair[1])?))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _scratch: scratch,
        }
    }

    /// The upstream port of `service`.
    pub fn upstream(&self, service: &str) -> SocketAddr {
        self.upstreams
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, a)| *a)
            .expect("upstream for service")
    }

    /// Sends a signal to the agent.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the agent to exit, returning its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let started = std::time::Instant::now();
        while started.elapsed() < DEADLINE {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("agent did not exit within {DEADLINE:?}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host agent in front of one backend, hosting it as `service`.
pub fn host_agent(name: &str, service: &str, backend: &TestBackend) -> Agent {
    Agent::start(
        name,
        &format!(
            "kind: AgentConfig
metadata: {{name: {name}}}
spec:
  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}
  services:
    - {{name: {service}, port: {port}}}
",
            port = backend.address.port()
        ),
    )
}

/// An endpoint line for a caller's static service.
pub fn endpoint(agent: &Agent, site: &str) -> String {
    format!("{{address: \"{}\", site: {site}}}", agent.inbound)
}

/// A caller agent with one upstream port for `service`, whose endpoints are `endpoints`
/// (from [`endpoint`]), in site `one`, with `policies` appended as more YAML documents.
pub fn caller_agent(service: &str, endpoints: &[String], policies: &str) -> Agent {
    let yaml = caller_config(service, endpoints, free_port(), policies);
    Agent::start("caller", &yaml)
}

/// The configuration text of a caller agent (to rewrite it for reload tests).
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

/// An HTTP/1.1 client.
pub fn http1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 (prior knowledge) client.
pub fn http2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// A response with its body read.
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `method` to `url` with `body` and reads the whole answer, within [`DEADLINE`].
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    body: impl Into<Bytes>,
) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body.into()))
        .expect("request");
    let exchange = async {
        let response = client.request(request).await.expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("answer within the deadline")
}

/// GETs `url`.
pub async fn get(client: &Client<HttpConnector, Full<Bytes>>, url: &str) -> Answer {
    send(client, "GET", url, Bytes::new()).await
}

/// Reads a counter or gauge from the agent's `/metrics`, summing every series whose labels
/// contain `labels` (e.g. `service="svc"`); 0 when absent.
pub async fn metric(agent: &Agent, name: &str, labels: &str) -> f64 {
    let text = get(&http1_client(), &format!("http://{}/metrics", agent.admin))
        .await
        .body;
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
