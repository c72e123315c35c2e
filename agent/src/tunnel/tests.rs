//! The pool against a real HTTP/2 server on loopback (hyper's, with a stream limit, holding
//! its answers until released): more connections when every one is full, a cap on them, and no
//! new request on a connection that received GOAWAY.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyphae_integration::backend::Http2Backend;
use hyphae_integration::eventually;

use super::*;
use crate::body;

/// Plaintext pool settings, as toward local instances, with these limits.
fn settings(max_streams: u32, max_connections: u32) -> TunnelSettings {
    TunnelSettings {
        keep_alive_interval: DEFAULT_KEEP_ALIVE_INTERVAL,
        keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
        max_header_list_size: 65_536,
        max_streams_per_connection: max_streams,
        max_connections_per_destination: max_connections,
        extra_connection_idle_timeout: Duration::from_secs(60),
    }
}

const CONNECT: Duration = Duration::from_secs(5);

/// A GET of `/` to the instance at `address`, with its authority.
fn get(address: SocketAddr) -> Request<Body> {
    Request::get(format!("http://{address}/"))
        .body(body::empty())
        .expect("a valid request")
}

/// Sends a GET through `tunnels` to `address`; the answer's status and body.
async fn call(tunnels: &Tunnels, address: SocketAddr) -> Result<(StatusCode, String), ProxyError> {
    let response = tunnels
        .send(address, None, CONNECT, get(address), None)
        .await?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ProxyError::Reset(Cause::new(e)))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Starts `calls` GETs at once through `tunnels` to `server`.
fn start_calls(
    tunnels: &Arc<Tunnels>,
    server: &Http2Backend,
    calls: usize,
) -> Vec<tokio::task::JoinHandle<Result<(StatusCode, String), ProxyError>>> {
    (0..calls)
        .map(|_| {
            let (tunnels, address) = (Arc::clone(tunnels), server.address);
            tokio::spawn(async move { call(&tunnels, address).await })
        })
        .collect()
}

/// Waits for every call, each of which must have been answered 200; their bodies.
async fn all_answered(
    calls: Vec<tokio::task::JoinHandle<Result<(StatusCode, String), ProxyError>>>,
) -> Vec<String> {
    let mut bodies = Vec::new();
    for handle in calls {
        let (status, body) = handle.await.expect("a call task").expect("an answer");
        assert_eq!(status, StatusCode::OK);
        bodies.push(body);
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_servers_stream_limit_go_on_more_connections() {
    let server = Http2Backend::start(2).await;
    let tunnels = Arc::new(Tunnels::new(settings(100, 8)));
    let calls = start_calls(&tunnels, &server, 5);
    // On one connection the server would see 2 at a time and the h2 crate would queue 3.
    server.wait_holding(5).await;
    assert_eq!(server.connections(), 3, "2 + 2 + 1 streams");
    server.set_holding(false);
    let bodies = all_answered(calls).await;
    for connection in 1..=3 {
        let answered = bodies
            .iter()
            .filter(|b| **b == format!("connection {connection}"))
            .count();
        assert!(
            answered <= 2,
            "connection {connection} carried {answered}: {bodies:?}"
        );
    }
    tunnels.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bursts_extra_connections_close_once_idle_and_the_first_stays() {
    let server = Http2Backend::start(2).await;
    let mut idle_quickly = settings(100, 8);
    idle_quickly.extra_connection_idle_timeout = Duration::from_millis(200);
    let tunnels = Arc::new(Tunnels::new(idle_quickly));
    let calls = start_calls(&tunnels, &server, 5);
    server.wait_holding(5).await;
    assert_eq!(server.open_connections(), 3, "2 + 2 + 1 streams");
    server.set_holding(false);
    all_answered(calls).await;
    // No request comes after the burst: the pool's sweeper closes the extra ones by itself.
    eventually("the extra connections to close", || async {
        server.open_connections() == 1
    })
    .await;
    let after = all_answered(start_calls(&tunnels, &server, 1)).await;
    assert_eq!(after, ["connection 1"], "the first connection stayed open");
    assert_eq!(server.connections(), 3, "and no new one was needed");
    tunnels.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_stream_limit_opens_connections_below_the_servers() {
    let server = Http2Backend::start(100).await;
    let tunnels = Arc::new(Tunnels::new(settings(2, 8)));
    let calls = start_calls(&tunnels, &server, 4);
    server.wait_holding(4).await;
    assert_eq!(server.connections(), 2);
    server.set_holding(false);
    all_answered(calls).await;
    tunnels.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_requests_wait_for_a_stream_on_an_open_connection() {
    let server = Http2Backend::start(1).await;
    let tunnels = Arc::new(Tunnels::new(settings(100, 2)));
    let calls = start_calls(&tunnels, &server, 3);
    server.wait_holding(2).await;
    assert_eq!(server.connections(), 2, "no third connection above the cap");
    server.set_holding(false);
    all_answered(calls).await;
    assert_eq!(server.connections(), 2);
    tunnels.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_received_goaway_takes_no_new_request_and_finishes_its_own() {
    let server = Http2Backend::start(100).await;
    let tunnels = Arc::new(Tunnels::new(settings(100, 8)));
    let held = start_calls(&tunnels, &server, 1);
    server.wait_holding(1).await;
    server.go_away();
    eventually("the pool to see the GOAWAY", || async {
        let slot = tunnels.slot(server.address, None);
        let connections = slot.connections.lock().unwrap();
        connections.iter().all(|c| c.load.is_draining())
    })
    .await;
    server.set_holding(false);
    // Without the pool knowing, this request would go on the old connection and come back
    // unprocessed (for a resend) instead of answered.
    let (status, body) = call(&tunnels, server.address)
        .await
        .expect("answered on a new connection");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "connection 2"));
    assert_eq!(all_answered(held).await, ["connection 1"]);
    assert_eq!(server.connections(), 2);
    tunnels.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_holds_its_stream_until_its_body_ends() {
    let server = Http2Backend::start(100).await;
    server.set_holding(false);
    let tunnels = Tunnels::new(settings(100, 8));
    let response = tunnels
        .send(server.address, None, CONNECT, get(server.address), None)
        .await
        .expect("an answer");
    let in_flight = || {
        let slot = tunnels.slot(server.address, None);
        let connections = slot.connections.lock().unwrap();
        connections.iter().map(|c| c.load.in_flight()).sum::<u32>()
    };
    assert_eq!(in_flight(), 1, "the body has not been read");
    response.into_body().collect().await.expect("the body");
    assert_eq!(in_flight(), 0);
    tunnels.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_at_the_connection_cap_count_against_max_pending() {
    let server = Http2Backend::start(1).await;
    let tunnels = Arc::new(Tunnels::new(settings(100, 1)));
    let pending = Arc::new(Limit::default());
    let send = |tunnels: &Arc<Tunnels>, pending: &Arc<Limit>| {
        let (tunnels, pending, address) =
            (Arc::clone(tunnels), Arc::clone(pending), server.address);
        tokio::spawn(async move {
            let limit = Pending {
                limit: &pending,
                max: 1,
                service: "backend",
            };
            let response = tunnels
                .send(address, None, CONNECT, get(address), Some(limit))
                .await?;
            let status = response.status();
            let body = response.into_body().collect().await;
            let body = body
                .map_err(|e| ProxyError::Reset(Cause::new(e)))?
                .to_bytes();
            Ok::<_, ProxyError>((status, String::from_utf8_lossy(&body).into_owned()))
        })
    };
    // The one connection carries the one stream the server allows.
    let first = send(&tunnels, &pending);
    server.wait_holding(1).await;
    assert_eq!(pending.current(), 0, "a request on a stream is not pending");
    // The second waits for that stream, as pending.
    let second = send(&tunnels, &pending);
    eventually("the second request to wait as pending", || async {
        pending.current() == 1
    })
    .await;
    // A third finds `maxPending` (1) reached and is refused at once.
    let third = send(&tunnels, &pending).await.expect("a call task");
    assert!(
        matches!(
            third,
            Err(ProxyError::Overloaded {
                limit: "max-pending",
                ..
            })
        ),
        "{third:?}"
    );
    server.set_holding(false);
    for call in [first, second] {
        let (status, body) = call.await.expect("a call task").expect("an answer");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "connection 1"));
    }
    assert_eq!(pending.current(), 0);
    assert_eq!(server.connections(), 1);
    tunnels.close().await;
}
