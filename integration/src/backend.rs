//! Test backends: an HTTP/1.1 + HTTP/2 service in the test process that agents proxy to, which
//! counts requests and misbehaves on demand (status, delay, failing health check), and an
//! HTTP/2-only one with a stream limit that holds its answers and sends GOAWAY on demand, for
//! tests of the agent's HTTP/2 connections. They stop when dropped.

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

/// Counts a connection of an [`Http2Backend`] as open until dropped, however its task ends.
struct OpenConnection(Arc<Http2Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An HTTP/2 (prior knowledge) backend that advertises `SETTINGS_MAX_CONCURRENT_STREAMS` and,
/// while holding, answers no request until released. Each answer's body names the connection
/// it came on (`connection N`, numbered from 1 in the order they were accepted).
pub struct Http2Backend {
    /// Where it listens.
    pub address: SocketAddr,
    shared: Arc<Http2Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// What every connection of one [`Http2Backend`] shares.
struct Http2Shared {
    /// Connections accepted so far.
    connections: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// Requests received and not yet answered.
    holding: AtomicUsize,
    /// `true` while requests are held.
    hold: tokio::sync::watch::Sender<bool>,
    /// Bumped to make every connection open now send GOAWAY and close gracefully.
    go_away: tokio::sync::watch::Sender<u64>,
}

impl Http2Backend {
    /// Starts one on 127.0.0.1 that allows `max_streams` concurrent streams per connection and
    /// holds every request from the first on.
    pub async fn start(max_streams: u32) -> Http2Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback has free ports");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(Http2Shared {
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            holding: AtomicUsize::new(0),
            hold: tokio::sync::watch::Sender::new(true),
            go_away: tokio::sync::watch::Sender::new(0),
        });
        let serving = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let number = serving.connections.fetch_add(1, Ordering::SeqCst) + 1;
                connections.spawn(serve_http2(
                    stream,
                    Arc::clone(&serving),
                    number,
                    max_streams,
                ));
            }
        });
        Http2Backend {
            address,
            shared,
            task,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections open now (accepted and not yet closed by either side).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Requests received and not yet answered.
    pub fn holding(&self) -> usize {
        self.shared.holding.load(Ordering::SeqCst)
    }

    /// Waits (polling, within the test deadline) until it holds `requests` requests at once.
    pub async fn wait_holding(&self, requests: usize) {
        crate::eventually(
            &format!("the server to hold {requests} requests"),
            || async { self.holding() == requests },
        )
        .await;
    }

    /// Holds requests (`true`) or answers them, the held ones at once (`false`).
    pub fn set_holding(&self, hold: bool) {
        self.shared.hold.send_replace(hold);
    }

    /// Sends GOAWAY on every connection open now (hyper's graceful shutdown: the streams it
    /// has go on, then it closes); later connections are served as before.
    pub fn go_away(&self) {
        self.shared
            .go_away
            .send_modify(|generation| *generation += 1);
    }
}

impl Drop for Http2Backend {
    fn drop(&mut self) {
        // Dropping the accept loop's task drops its set, which aborts every connection.
        self.task.abort();
    }
}

/// Serves connection `number` of an [`Http2Backend`] until it ends.
async fn serve_http2(stream: TcpStream, shared: Arc<Http2Shared>, number: usize, max_streams: u32) {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let _closed = OpenConnection(Arc::clone(&shared));
    let mut go_away = shared.go_away.subscribe();
    let answering = Arc::clone(&shared);
    let service = service_fn(move |_request: Request<Incoming>| {
        let shared = Arc::clone(&answering);
        async move {
            shared.holding.fetch_add(1, Ordering::SeqCst);
            let mut hold = shared.hold.subscribe();
            // The sender lives as long as `shared`, so this wait ends only by a release.
            let _ = hold.wait_for(|held| !held).await;
            shared.holding.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                "connection {number}"
            )))))
        }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(max_streams)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        changed = go_away.changed() => if changed.is_ok() {
            connection.as_mut().graceful_shutdown();
        },
    }
    let _ = connection.await;
}
