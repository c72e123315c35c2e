//! Byte streams across agents: opaque TCP (declared and detected), WebSocket upgrades and
//! HTTP CONNECT through the proxy port, each over real processes and sockets.

// Helpers outside `#[test]` functions set up fixtures; a failed setup should fail the test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use futures_util::{SinkExt, StreamExt};
use hyphae_integration::DEADLINE;
use hyphae_integration::agent::Agent;
use hyphae_integration::mesh::{host_agent_for, upstream_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A TCP echo server; returns its address.
async fn tcp_echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    address
}

/// A WebSocket echo server; returns its address.
async fn websocket_echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_close() || socket.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

const AGENT: &str = env!("CARGO_BIN_EXE_hyphae-agent");

fn caller_for(service: &str, protocol: &str, host: &Agent) -> Agent {
    Agent::start_yaml(
        Path::new(AGENT),
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: 127.0.0.1:0, dns: null}}\n  upstreams:\n    - {{listen: 127.0.0.1:{}, service: {service}}}\n  staticServices:\n    - name: {service}\n      protocol: {protocol}\n      endpoints: [{{address: \"{}\"}}]\n",
            upstream_port(),
            host.inbound
        ),
    )
    .unwrap()
}

/// A TCP echo server behind a host agent as the opaque TCP service `echo`, and a caller that
/// believes `echo` speaks `caller_protocol`: `[host, caller]`.
async fn echo_behind_agents(caller_protocol: &str) -> [Agent; 2] {
    let echo = tcp_echo().await;
    let host = host_agent_for(AGENT, "host", "echo", echo.port(), "tcp");
    let caller = caller_for("echo", caller_protocol, &host);
    [host, caller]
}

/// Writes `payload` to `stream` and asserts that the same bytes come back.
async fn assert_echoed(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).await.unwrap();
    let mut got = vec![0u8; payload.len()];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_echoes_across_two_agents() {
    let [_host, caller] = echo_behind_agents("tcp").await;
    let mut stream = TcpStream::connect(caller.upstream("echo")).await.unwrap();
    assert_echoed(&mut stream, b"hello over the mesh").await;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_echoed(&mut stream, &big).await;
    // Half-close reaches the server, whose echo then ends the stream.
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_speak_http_is_detected_as_tcp() {
    // The caller believes the service speaks HTTP; the client's first bytes say otherwise.
    let [_host, caller] = echo_behind_agents("http").await;
    let mut stream = TcpStream::connect(caller.upstream("echo")).await.unwrap();
    assert_echoed(&mut stream, b"\x00\x01binary protocol").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echoes_across_two_agents() {
    let server = websocket_echo().await;
    let host = host_agent_for(AGENT, "host", "chat", server.port(), "http");
    let caller = caller_for("chat", "http", &host);
    let stream = TcpStream::connect(caller.upstream("chat")).await.unwrap();
    let (mut socket, response) = tokio_tungstenite::client_async("ws://chat.mesh/room", stream)
        .await
        .expect("websocket handshake through the mesh");
    assert_eq!(response.status(), 101);
    for text in ["one", "two", "three"] {
        socket.send(Message::text(text)).await.unwrap();
        let reply = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), text);
    }
    socket
        .send(Message::binary(vec![7u8; 100_000]))
        .await
        .unwrap();
    let reply = tokio::time::timeout(DEADLINE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_data().len(), 100_000);
    socket.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connect_on_the_proxy_port_tunnels_to_the_named_service() {
    let [_host, caller] = echo_behind_agents("tcp").await;
    let mut stream = TcpStream::connect(caller.http_proxy.unwrap())
        .await
        .unwrap();
    stream
        .write_all(b"CONNECT echo.mesh:443 HTTP/1.1\r\nHost: echo.mesh:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_echoed(&mut stream, b"tunnelled").await;
    // Closing the tunnel ends the stream, whose bytes are then counted.
    drop(stream);
    caller
        .metric_reaches("hyphae_stream_bytes_total", "direction=\"sent\"", 9.0)
        .await;
}

/// A WebSocket echo server that records each handshake's request target and `Host`; returns
/// its address and what it saw.
async fn websocket_echo_recording() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                // tungstenite's callback type, whose error is an HTTP response.
                #[allow(clippy::result_large_err)]
                let record = |request: &Request, response: Response| {
                    let host = request
                        .headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let private: Vec<_> = request
                        .headers()
                        .keys()
                        .map(|name| name.as_str().to_string())
                        .filter(|name| name.starts_with("hyphae-"))
                        .collect();
                    let host = if private.is_empty() {
                        host
                    } else {
                        format!("{host} with {private:?}")
                    };
                    recorded
                        .lock()
                        .unwrap()
                        .push((request.uri().to_string(), host));
                    Ok(response)
                };
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, record).await
                else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_close() || socket.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (address, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_reaches_an_external_service_and_a_declined_upgrade_gets_its_answer() {
    // An app's WebSocket to an `ExternalService` (a price feed, a chat API) leaves from its
    // own agent; it was refused with 501 `unsupported`.
    let (feed, seen) = websocket_echo_recording().await;
    let plain = hyphae_integration::backend::TestBackend::start("plain").await;
    let (feed_port, plain_port) = (upstream_port(), upstream_port());
    let caller = Agent::start_yaml(
        Path::new(AGENT),
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: 127.0.0.1:0, dns: null}}\n  upstreams:\n    - {{listen: 127.0.0.1:{feed_port}, service: feed}}\n    - {{listen: 127.0.0.1:{plain_port}, service: plain}}\n---\nkind: ExternalService\nmetadata: {{name: feed}}\nspec:\n  addresses: [127.0.0.1]\n  ports: [{{port: {}, protocol: http}}]\n---\nkind: ExternalService\nmetadata: {{name: plain}}\nspec:\n  addresses: [127.0.0.1]\n  ports: [{{port: {}, protocol: http}}]\n",
            feed.port(),
            plain.port()
        ),
    )
    .unwrap();
    let stream = TcpStream::connect(caller.upstream("feed")).await.unwrap();
    let (mut socket, response) =
        tokio_tungstenite::client_async("ws://feed.mesh/prices?pair=eur", stream)
            .await
            .expect("websocket handshake to the external service");
    assert_eq!(response.status(), 101);
    socket.send(Message::text("quote")).await.unwrap();
    let reply = tokio::time::timeout(DEADLINE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "quote");
    let big = vec![9u8; 1_000_000];
    socket.send(Message::binary(big.clone())).await.unwrap();
    let reply = tokio::time::timeout(DEADLINE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_data().as_ref(), &big[..]);
    socket.close(None).await.unwrap();
    // The service got the caller's target, its own address as `Host` (it names no host),
    // and no field of the mesh's.
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![(
            "/prices?pair=eur".to_string(),
            format!("127.0.0.1:{}", feed.port())
        )]
    );

    // A service that answers the upgrade as an ordinary request (RFC 9110 §7.8): its answer.
    let mut stream = TcpStream::connect(caller.upstream("plain")).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: plain\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("plain"), "{answer}");
}

/// A server that takes connections and reads what comes, but never answers; returns its
/// address.
async fn silent_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_the_server_never_answers_ends_at_the_request_timeout() {
    // An upgrade waits for its 101 as long as any request waits for its answer; a server that
    // took the connection and went quiet held the caller (and its stream slot) for good.
    let silent = silent_server().await;
    let policy = |name: &str| {
        format!(
            "---\nkind: ServicePolicy\nmetadata: {{name: {name}}}\nspec:\n  timeouts: {{request: 1s}}\n"
        )
    };
    let host = host_agent_for(AGENT, "host", "quiet", silent.port(), "http");
    let external_port = upstream_port();
    let caller = Agent::start_yaml(
        Path::new(AGENT),
        "caller",
        &format!(
            "kind: AgentConfig\nmetadata: {{name: caller}}\nspec:\n  listeners: {{admin: 127.0.0.1:0, inbound: 127.0.0.1:0, httpProxy: null, dns: null}}\n  upstreams:\n    - {{listen: 127.0.0.1:{}, service: quiet}}\n    - {{listen: 127.0.0.1:{external_port}, service: feed}}\n  staticServices:\n    - name: quiet\n      protocol: http\n      endpoints: [{{address: \"{}\"}}]\n---\nkind: ExternalService\nmetadata: {{name: feed}}\nspec:\n  addresses: [127.0.0.1]\n  ports: [{{port: {}, protocol: http}}]\n{}{}",
            upstream_port(),
            host.inbound,
            silent.port(),
            policy("quiet"),
            policy("feed"),
        ),
    )
    .unwrap();
    for service in ["quiet", "feed"] {
        let mut stream = TcpStream::connect(caller.upstream(service)).await.unwrap();
        stream
            .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 1024];
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{service}: no answer within {DEADLINE:?}"))
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 504"), "{service}: {answer}");
        assert!(answer.contains("request-timeout"), "{service}: {answer}");
    }
}

/// Opens an HTTP/2 CONNECT tunnel to `authority` through `caller`'s proxy port; the tunnel's
/// bytes are the stream's DATA both ways.
async fn http2_connect(
    caller: &Agent,
    authority: &str,
) -> hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {
    let mut sender = hyphae_integration::http::http2_connection(caller.http_proxy.unwrap()).await;
    let request = http::Request::connect(authority)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("an answer through the proxy port");
    assert_eq!(response.status(), 200);
    let tunnel = tokio::time::timeout(DEADLINE, hyper::upgrade::on(response))
        .await
        .expect("the tunnel in time")
        .expect("the answer to CONNECT opens a tunnel");
    hyper_util::rt::TokioIo::new(tunnel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connect_on_the_proxy_port_tunnels_to_the_named_service() {
    let [_host, caller] = echo_behind_agents("tcp").await;
    let mut tunnel = http2_connect(&caller, "echo.mesh:443").await;
    // More than the stream's and the connection's windows, both ways.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = tokio::io::split(&mut tunnel);
    let sending = async {
        write.write_all(&big).await.unwrap();
        // END_STREAM: the echo server sees the end, and its close ends the answer.
        write.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let receiving = tokio::time::timeout(DEADLINE, read.read_to_end(&mut echoed));
    let ((), received) = tokio::join!(sending, receiving);
    received
        .expect("the echo in time")
        .expect("the tunnel ends cleanly");
    assert!(
        echoed == big,
        "{} bytes came back of {}",
        echoed.len(),
        big.len()
    );
    caller
        .metric_reaches(
            "hyphae_stream_bytes_total",
            "direction=\"sent\"",
            3_000_000.0,
        )
        .await;
}

/// A server that greets each connection and closes its sending side at once, then reports
/// how many bytes the client sent before its own end.
async fn greeter_that_counts() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (counts, counted) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(b"hello, and goodbye\n").await;
                let _ = stream.shutdown().await;
                let mut got = Vec::new();
                if stream.read_to_end(&mut got).await.is_ok() {
                    let _ = counts.send(got.len()).await;
                }
            });
        }
    });
    (address, counted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_tunnel_keeps_carrying_the_client_after_the_far_side_ends_its_half() {
    let (greeter, mut counted) = greeter_that_counts().await;
    let host = host_agent_for(AGENT, "host", "greeter", greeter.port(), "tcp");
    let caller = caller_for("greeter", "tcp", &host);
    let mut tunnel = http2_connect(&caller, "greeter.mesh:7").await;
    let mut greeting = Vec::new();
    tokio::time::timeout(DEADLINE, tunnel.read_to_end(&mut greeting))
        .await
        .expect("the greeting and its end in time")
        .expect("the far side's end is a clean END_STREAM");
    assert_eq!(greeting, b"hello, and goodbye\n");
    // TCP's half-close: the client may still send after the far side ended its half.
    tunnel.write_all(&[9u8; 100_000]).await.unwrap();
    tunnel.shutdown().await.unwrap();
    let count = tokio::time::timeout(DEADLINE, counted.recv())
        .await
        .expect("the far side's count in time");
    assert_eq!(count, Some(100_000));
}
