//! A test backend: an HTTP/1.1 + HTTP/2 service in the test process that agents proxy to. It
//! counts requests and misbehaves on demand (status, delay, failing health check); it stops
//! when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How the backend answers, changeable while it runs.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Answer with this status instead of 200.
    pub status: Option<u16>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Whether `/healthz` answers 200 (true) or 503 (false).
    pub healthy: bool,
}

impl Behaviour {
    /// Answers every request with `status`.
    pub fn status(status: u16) -> Behaviour {
        Behaviour {
            status: Some(status),
            ..Behaviour::default()
        }
    }

    /// Answers every request after `delay`.
    pub fn delay(delay: Duration) -> Behaviour {
        Behaviour {
            delay,
            ..Behaviour::default()
        }
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            status: None,
            delay: Duration::ZERO,
            healthy: true,
        }
    }
}

/// A running backend.
pub struct TestBackend {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its name, returned in `x-backend` and as the body.
    pub name: String,
    requests: Arc<AtomicUsize>,
    behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

/// What every connection of one backend shares.
#[derive(Clone)]
struct Shared {
    requests: Arc<AtomicUsize>,
    behaviour: Arc<Mutex<Behaviour>>,
    name: Arc<str>,
}

impl TestBackend {
    /// Starts a backend called `name` on 127.0.0.1, on a port of its own.
    pub async fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback has free ports");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Shared {
            requests: Arc::new(AtomicUsize::new(0)),
            behaviour: Arc::new(Mutex::new(Behaviour::default())),
            name: name.into(),
        };
        let (requests, behaviour) = (Arc::clone(&shared.requests), Arc::clone(&shared.behaviour));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(answer(request, &shared).await) }
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

    /// Starts a backend called `name` (see [`TestBackend::start`]) that answers as `behaviour`
    /// says from its first request on.
    pub async fn start_as(name: &str, behaviour: Behaviour) -> TestBackend {
        let backend = TestBackend::start(name).await;
        backend.set(behaviour);
        backend
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Changes how it answers.
    pub fn set(&self, behaviour: Behaviour) {
        *self
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behaviour;
    }

    /// Makes `/healthz` answer 200 (`true`) or 503 (`false`), keeping the rest.
    pub fn set_healthy(&self, healthy: bool) {
        self.behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .healthy = healthy;
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The backend's answer. `/healthz` answers 200 or 503 as the behaviour says; `/echo` returns
/// the request body; `/bytes/N` returns N bytes; anything else returns the backend's name.
/// Query `?status=N` and `?delay_ms=N` override the behaviour for one request.
async fn answer(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let mut behaviour = shared
        .behaviour
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
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
    if path == "/healthz" && !behaviour.healthy {
        behaviour.status = Some(503);
    }
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
        Bytes::from(shared.name.to_string())
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = behaviour
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let Ok(name) = shared.name.parse() {
        response.headers_mut().insert("x-backend", name);
    }
    if let Ok(host) = host.parse() {
        response.headers_mut().insert("x-seen-host", host);
    }
    response
}

/// A line echo server: answers each line with the same line.
pub async fn line_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let address = listener.local_addr().expect("echo address");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (address, task)
}

/// Sends one line to `address` and reads one back; `None` when the connection fails.
pub async fn echo_once(address: SocketAddr, line: &str) -> Option<String> {
    let stream = TcpStream::connect(address).await.ok()?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{line}\n").as_bytes()).await.ok()?;
    BufReader::new(read).lines().next_line().await.ok()?
}
