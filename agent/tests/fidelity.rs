//! Fidelity with real, strict servers that are not hyper: hypercorn (HTTP/1.1 and h2c, installed
//! by `cargo xtask test`) and a GOAWAY-after-N HTTP/2 server on Python's `h2`, behind one agent
//! (caller and instance on one host) and behind the two-agent mesh path; each answer is compared
//! with what the same client gets from the server directly. Malformed requests go over raw TCP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyphae_integration::http::{Answer, Client, get, http1_client, http2_client, send};
use hyphae_integration::mesh::{self, MeshPath};
use hyphae_integration::{DEADLINE, Process};

const AGENT: &str = env!("CARGO_BIN_EXE_hyphae-agent");

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/strict")
        .join(name)
}

/// Starts `script` (on port 0) with `args` and returns it with the port it printed.
fn python_server(name: &str, args: &[&str]) -> (Process, u16) {
    hyphae_integration::python::python_server(&script(name), args)
}

/// hypercorn serving `app.py`, closing each connection after `max_requests` when given.
fn hypercorn(max_requests: Option<u32>) -> (Process, u16) {
    match max_requests {
        Some(max) => python_server("app.py", &["--max-requests", &max.to_string()]),
        None => python_server("app.py", &[]),
    }
}

/// The two ways to the instance on `port` (see [`mesh::both_paths`]).
fn both_paths(port: u16, protocol: &str, policies: &str) -> [MeshPath; 2] {
    mesh::both_paths(AGENT, port, protocol, policies)
}

/// What an answer from `app.py` says, without what depends on the address the client used.
fn gist(answer: &Answer) -> (u16, String, Option<String>) {
    (
        answer.status.as_u16(),
        answer.text(),
        answer.header("x-http-version").map(str::to_string),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_http1_services_on_hypercorn_answer_as_they_do_directly() {
    let (_server, port) = hypercorn(None);
    for protocol in ["http2", "http"] {
        let direct_client = match protocol {
            "http2" => http2_client(),
            _ => http1_client(),
        };
        let direct = send(
            &direct_client,
            "POST",
            &format!("http://127.0.0.1:{port}/echo"),
            "hello",
        )
        .await;
        assert_eq!(direct.text(), "POST /echo 5");
        for path in both_paths(port, protocol, "") {
            for client in [http1_client(), http2_client()] {
                let url = format!("http://{}/echo", path.entry);
                let answer = send(&client, "POST", &url, "hello").await;
                assert_eq!(
                    gist(&answer),
                    gist(&direct),
                    "{protocol} service, {}: {answer:?}",
                    path.name
                );
                // One authority, the caller's: the instance sees the host the client used.
                assert_eq!(
                    answer.header("x-seen-host"),
                    Some(path.entry.to_string().as_str()),
                    "{protocol} service, {}",
                    path.name
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_the_callers_host_gets_the_headers_a_peers_agent_would_give_it() {
    // A call to this node's own instance is handed to its inbound side in-process (decision
    // 58), one through the mesh crosses a peer agent: the instance gets the same header
    // names in the same order either way, without the caller's own `hyphae-destination`,
    // hop-by-hop headers or those `Connection` names, with `Host` last.
    let (_server, port) = hypercorn(None);
    let mut seen = Vec::new();
    for path in both_paths(port, "http", "") {
        let request = http::Request::builder()
            .method("GET")
            .uri(format!("http://{}/names", path.entry))
            .header("x-first", "1")
            .header("hyphae-destination", "elsewhere")
            .header("connection", "x-named")
            .header("x-named", "dropped")
            .header("te", "trailers")
            .header("x-last", "2")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("a request the test wrote");
        let answer = hyphae_integration::http::exchange(&http1_client(), request)
            .await
            .unwrap_or_else(|| panic!("{}: no answer", path.name));
        assert_eq!(answer.status, 200, "{}: {answer:?}", path.name);
        seen.push((path.name, answer.text()));
    }
    let names: Vec<&str> = seen[0].1.lines().collect();
    assert!(!names.contains(&"hyphae-destination"), "{names:?}");
    assert!(!names.contains(&"x-named"), "{names:?}");
    assert_eq!(names.last(), Some(&"host"), "{names:?}");
    assert_eq!(seen[0].1, seen[1].1, "{} and {}", seen[0].0, seen[1].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_kb_response_header_from_hypercorn_passes_as_it_does_directly() {
    const SIZE: usize = 16 * 1024;
    let (_server, port) = hypercorn(None);
    for protocol in ["http2", "http"] {
        let paths = both_paths(port, protocol, "");
        let entries = std::iter::once(("directly", SocketAddr::from(([127, 0, 0, 1], port))))
            .chain(paths.iter().map(|p| (p.name, p.entry)));
        for (name, entry) in entries {
            let url = format!("http://{entry}/big-header?{SIZE}");
            // HTTP/1.1 from the client: hyper's HTTP/2 client has a 16 KB header-list limit of
            // its own; the hop under test is the agent's to the instance.
            let answer = send(&http1_client(), "GET", &url, "").await;
            assert_eq!(answer.status, 200, "{protocol} service, {name}: {answer:?}");
            assert_eq!(
                answer.header("x-big").map(str::len),
                Some(SIZE),
                "{protocol} service, {name}"
            );
        }
    }
}

/// POSTs to `url` `requests` times from `concurrency` tasks; the answers that were not 200.
async fn post_loop(
    client: &Client,
    url: &str,
    requests: usize,
    concurrency: usize,
) -> Vec<(u16, Option<String>)> {
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for _ in 0..requests / concurrency {
                    let answer = send(&client, "POST", &url, "hello").await;
                    if answer.status != 200 || answer.text() != "POST /echo 5" {
                        failed.push((
                            answer.status.as_u16(),
                            answer.header("hyphae-error").map(str::to_string),
                        ));
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = Vec::new();
    for task in tasks {
        failed.extend(task.await.expect("a POST loop"));
    }
    failed
}

/// No retries by policy: only the resend of requests the instance never processed saves them.
const NO_RETRIES: &str =
    "---\nkind: ServicePolicy\nmetadata: {name: app}\nspec:\n  retries: {attempts: 0}\n";

/// Sends 3,000 POSTs from 8 loops on `client` through each of `paths`; fails the test when
/// one is not answered 200 by the instance.
async fn no_post_is_lost(paths: [MeshPath; 2], client: Client) {
    const REQUESTS: usize = 3000;
    for path in paths {
        let url = format!("http://{}/echo", path.entry);
        let failed = post_loop(&client, &url, REQUESTS, 8).await;
        assert!(
            failed.is_empty(),
            "{}: {} of {REQUESTS} POSTs failed: {:?}",
            path.name,
            failed.len(),
            &failed[..failed.len().min(5)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_an_http2_instance_refused_with_goaway_are_sent_again_and_none_is_lost() {
    let (_server, port) = python_server("goaway.py", &["100"]);
    no_post_is_lost(both_paths(port, "http2", NO_RETRIES), http2_client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_to_an_http1_instance_that_closes_keep_alive_connections_are_not_lost() {
    let (_server, port) = hypercorn(Some(100));
    no_post_is_lost(both_paths(port, "http", NO_RETRIES), http1_client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_error_answers_to_head_arrive_as_answers_without_a_body() {
    // An instance that is not listening: the agent itself answers.
    let dead = hyphae_integration::ports::free_ports(1).expect("a port")[0];
    for path in both_paths(dead, "http2", NO_RETRIES) {
        let url = format!("http://{}/echo", path.entry);
        let get = send(&http1_client(), "GET", &url, "").await;
        assert_eq!(get.status, 502, "{}: {get:?}", path.name);
        let reason = get.header("hyphae-error").expect("an agent's answer");
        for (version, client) in [("HTTP/1.1", http1_client()), ("HTTP/2", http2_client())] {
            let head = send(&client, "HEAD", &url, "").await;
            assert_eq!(
                head.status, get.status,
                "{}, {version}: {head:?}",
                path.name
            );
            assert_eq!(
                head.header("hyphae-error"),
                Some(reason),
                "{}, {version}",
                path.name
            );
            assert!(head.body.is_empty(), "{}, {version}", path.name);
        }
    }
}

/// Writes `raw` to `address` and reads the answer's status line.
async fn raw_status_line(address: SocketAddr, raw: &[u8]) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the agent");
    stream.write_all(raw).await.expect("write the request");
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, BufReader::new(stream).read_line(&mut line))
        .await
        .unwrap_or_else(|_| panic!("no answer to {:?}", String::from_utf8_lossy(raw)))
        .expect("read the status line");
    line.trim_end().to_string()
}

/// Sends `raw` through one agent and through two to the HTTP/1.1 instance on `port`; fails the
/// test unless each path answers 400.
async fn refused_400_on_both_paths(port: u16, raw: &[u8]) {
    for path in both_paths(port, "http", "") {
        let status = raw_status_line(path.entry, raw).await;
        assert!(
            status.starts_with("HTTP/1.1 400"),
            "{}: {status}",
            path.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_size_overflow_in_a_request_body_is_the_callers_fault_400() {
    let (_server, port) = hypercorn(None);
    let overflow = b"POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n\
                     FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n";
    refused_400_on_both_paths(port, overflow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_two_host_headers_is_refused_400_as_hypercorn_does() {
    let (_server, port) = hypercorn(None);
    let two_hosts = b"GET /echo HTTP/1.1\r\nHost: app\r\nHost: other\r\n\r\n";
    let direct = raw_status_line(SocketAddr::from(([127, 0, 0, 1], port)), two_hosts).await;
    assert!(direct.starts_with("HTTP/1.1 400"), "hypercorn: {direct}");
    refused_400_on_both_paths(port, two_hosts).await;
}

/// Listens on a port of its own and serves each accepted connection with `serve`, in a task
/// of its own: an instance written byte by byte.
async fn listen_raw<F, Fut>(serve: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the instance");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    port
}

/// What a raw instance does for one request head: the bytes it answers with, and whether it
/// closes the connection after them (`None`: it closes without answering).
type RawAnswer = Option<(Vec<u8>, bool)>;

/// An HTTP/1.1 instance on a port of its own, written byte by byte: for each request head
/// (bodies are not read) it writes what `answer` gives, and keeps the connection open unless
/// told to close.
async fn raw_instance(answer: fn(&str) -> RawAnswer) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    listen_raw(move |mut stream| async move {
        let mut read = Vec::new();
        let mut buffer = [0_u8; 4096];
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                return;
            }
            read.extend_from_slice(&buffer[..n]);
            while let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = read.drain(..end + 4).collect();
                let Some((bytes, close)) = answer(&String::from_utf8_lossy(&head)) else {
                    return;
                };
                if stream.write_all(&bytes).await.is_err() || close {
                    return;
                }
            }
        }
    })
    .await
}

/// An instance that answers every request with a chunked body and a `Content-Length` that
/// disagrees with it (RFC 9112 §6.3: `Transfer-Encoding` wins, and an intermediary must drop
/// the length before forwarding). Keeps each connection open.
async fn chunked_and_length_instance() -> u16 {
    raw_instance(|_| {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\
                       Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        Some((answer.to_vec(), false))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_both_a_chunked_body_and_a_length_arrives_whole_without_the_length() {
    let port = chunked_and_length_instance().await;
    let direct = get(&http1_client(), &format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(direct.text(), "hello", "hyper's client reads the chunks");
    for path in both_paths(port, "http", "") {
        for (client, protocol) in [(http1_client(), "HTTP/1.1"), (http2_client(), "HTTP/2")] {
            // Twice on one connection: a body cut at the stale length would leave the rest of
            // it in front of the second answer.
            for attempt in 1..=2 {
                let answer = get(&client, &format!("http://{}/", path.entry)).await;
                let what = format!("{} over {protocol}, request {attempt}", path.name);
                assert_eq!(answer.status.as_u16(), 200, "{what}: {answer:?}");
                assert_eq!(answer.text(), "hello", "{what}");
                assert_ne!(answer.header("content-length"), Some("3"), "{what}");
            }
        }
    }
}

/// Writes `raw` to `address` and reads everything until the agent closes the connection.
async fn raw_exchange(address: SocketAddr, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the agent");
    stream.write_all(raw).await.expect("write the request");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("the agent kept the connection of {raw:?} open"))
        .expect("read the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_both_a_chunked_body_and_a_length_reaches_the_instance_by_its_chunks() {
    let (_server, port) = hypercorn(None);
    // The length says 3 bytes; the chunks carry 5. Forwarded by the length, the last two
    // would be read by the instance as the start of the next request on the pooled connection.
    let both = b"POST /both HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n\
                 Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    for path in both_paths(port, "http", "") {
        let answer = raw_exchange(path.entry, both).await;
        let refused = answer.starts_with("HTTP/1.1 400");
        let by_chunks = answer.starts_with("HTTP/1.1 200") && answer.ends_with("POST /both 5");
        assert!(refused || by_chunks, "{}: {answer}", path.name);
        let after = get(&http1_client(), &format!("http://{}/after", path.entry)).await;
        assert_eq!(after.text(), "GET /after 0", "{}", path.name);
    }
}

/// An HTTP/1.1 instance that answers every request `413` with `Connection: close` as soon as
/// its head arrives, then reads and drops the upload until the caller stops sending.
async fn early_413_instance() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    listen_raw(|mut stream| async move {
        let mut read = Vec::new();
        let mut buffer = vec![0_u8; 64 * 1024];
        while !read.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buffer[..n]),
            }
        }
        let answer = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\n\
                       Connection: close\r\n\r\ntoo large";
        if stream.write_all(answer).await.is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                return;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_uploading_after_an_early_answer_reads_it_instead_of_a_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const UPLOAD: usize = 8 * 1024 * 1024;
    let port = early_413_instance().await;
    for path in both_paths(port, "http", "") {
        // As curl does: the whole upload is written first, and a failed write ends the
        // attempt before the answer is read.
        let mut stream = tokio::net::TcpStream::connect(path.entry)
            .await
            .expect("connect to the agent");
        let head =
            format!("POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: {UPLOAD}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("head");
        let piece = vec![b'x'; 64 * 1024];
        let upload = async {
            for _ in 0..UPLOAD / piece.len() {
                stream.write_all(&piece).await?;
            }
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(DEADLINE, upload)
            .await
            .unwrap_or_else(|_| panic!("{}: the upload stalled", path.name))
            .unwrap_or_else(|e| panic!("{}: the upload was reset: {e}", path.name));
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{}: {answer}",
            path.name
        );
        assert!(answer.ends_with("too large"), "{}: {answer}", path.name);
    }
}

/// What a caller must get for one of [`UNUSUAL_ANSWERS`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// This status and body, whole.
    Whole(u16, &'static str),
    /// 502 from the agent, saying the instance broke the exchange.
    Refused,
    /// An error while reading the answer (or a 502, when the error came first): never a
    /// body that looks whole but is short.
    Broken,
}

/// An answer an instance gives to `GET /<name>`, and what a caller must get for it.
struct Unusual {
    name: &'static str,
    answer: &'static [u8],
    /// Whether the instance closes the connection after it.
    close: bool,
    expect: Expect,
    /// Whether hyper's client talking to the instance directly is a meaningful comparison
    /// (it hands an unasked 101 to its user, and waits for ever on a bare LF in trailers).
    direct: bool,
}

/// The answers of [`unusual_instance`].
const UNUSUAL_ANSWERS: &[Unusual] = &[
    Unusual {
        name: "ok",
        answer: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        close: false,
        expect: Expect::Whole(200, "ok"),
        direct: true,
    },
    // One length said twice goes on as one number (an HTTP/2 peer resets on a list).
    Unusual {
        name: "same-lengths",
        answer: b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
        close: false,
        expect: Expect::Whole(200, "abc"),
        direct: true,
    },
    Unusual {
        name: "length-lines",
        answer: b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        close: false,
        expect: Expect::Whole(200, "abc"),
        direct: true,
    },
    Unusual {
        name: "differing-lengths",
        answer: b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        close: false,
        expect: Expect::Refused,
        direct: true,
    },
    Unusual {
        name: "plus-length",
        answer: b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
        close: false,
        expect: Expect::Refused,
        direct: true,
    },
    // Bytes past the length, here a whole second answer: never read as the next request's.
    Unusual {
        name: "longer-than-length",
        answer: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
                  HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!",
        close: false,
        expect: Expect::Whole(200, "hello"),
        direct: false,
    },
    Unusual {
        name: "shorter-than-length",
        answer: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        close: true,
        expect: Expect::Broken,
        direct: true,
    },
    Unusual {
        name: "cut-mid-chunk",
        answer: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        close: true,
        expect: Expect::Broken,
        direct: true,
    },
    Unusual {
        name: "cut-before-last-chunk",
        answer: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        close: true,
        expect: Expect::Broken,
        direct: true,
    },
    Unusual {
        name: "chunk-extensions",
        answer: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;a=b\r\nhello\r\n000\r\n\r\n",
        close: false,
        expect: Expect::Whole(200, "hello"),
        direct: true,
    },
    // Trailers no trailer may carry would break an HTTP/2 stream (and the mesh's tunnel).
    Unusual {
        name: "forbidden-trailers",
        answer: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\
                  Content-Length: 3\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nX-Ok: 1\r\n\r\n",
        close: false,
        expect: Expect::Whole(200, "abc"),
        direct: true,
    },
    Unusual {
        name: "bare-lf-chunks",
        answer: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
        close: false,
        expect: Expect::Broken,
        direct: true,
    },
    // hyper's client waits for ever on a trailer line ending in a bare LF.
    Unusual {
        name: "bare-lf-trailers",
        answer: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-A: 1\n\n",
        close: false,
        expect: Expect::Broken,
        direct: false,
    },
    Unusual {
        name: "until-close",
        answer: b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        close: true,
        expect: Expect::Whole(200, "until close"),
        direct: true,
    },
    Unusual {
        name: "connection-close",
        answer: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        close: true,
        expect: Expect::Whole(200, "ok"),
        direct: true,
    },
    // A coding the agent does not decode: forwarded without its (hop-by-hop) header, the
    // caller could not read it. Refused, as nginx and Envoy refuse it; hyper's client frames
    // it by close and hands over the coded bytes.
    Unusual {
        name: "gzip-until-close",
        answer: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw",
        close: true,
        expect: Expect::Refused,
        direct: false,
    },
    Unusual {
        name: "gzip-then-chunked",
        answer: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nraw\r\n0\r\n\r\n",
        close: false,
        expect: Expect::Refused,
        direct: false,
    },
    Unusual {
        name: "no-content-chunked",
        answer: b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
        close: false,
        expect: Expect::Whole(204, ""),
        direct: true,
    },
    Unusual {
        name: "http10-chunked",
        answer: b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        close: false,
        expect: Expect::Refused,
        direct: true,
    },
    Unusual {
        name: "status-1000",
        answer: b"HTTP/1.1 1000 Big\r\nContent-Length: 2\r\n\r\nok",
        close: false,
        expect: Expect::Refused,
        direct: true,
    },
    Unusual {
        name: "http10-keep-alive",
        answer: b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nold",
        close: false,
        expect: Expect::Whole(200, "old"),
        direct: true,
    },
    Unusual {
        name: "bare-lf-head",
        answer: b"HTTP/1.1 200 OK\nContent-Length: 2\n\nlf",
        close: false,
        expect: Expect::Whole(200, "lf"),
        direct: true,
    },
    Unusual {
        name: "no-reason",
        answer: b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nno",
        close: false,
        expect: Expect::Whole(200, "no"),
        direct: true,
    },
    Unusual {
        name: "obs-fold",
        answer: b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\nok",
        close: false,
        expect: Expect::Refused,
        direct: true,
    },
    Unusual {
        name: "space-before-colon",
        answer: b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 2\r\n\r\nok",
        close: false,
        expect: Expect::Refused,
        direct: true,
    },
    Unusual {
        name: "http2-status-line",
        answer: b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        close: false,
        expect: Expect::Refused,
        direct: true,
    },
    Unusual {
        name: "unasked-101",
        answer: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        close: false,
        expect: Expect::Refused,
        direct: false,
    },
    Unusual {
        name: "early-hints",
        answer: b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        close: false,
        expect: Expect::Whole(200, "ok"),
        direct: true,
    },
];

/// Interim answers the `/interim-flood` instance sends, and then nothing.
const INTERIM_FLOOD: usize = 10_000;

/// An HTTP/1.1 instance that answers `GET /<name>` as [`UNUSUAL_ANSWERS`] says, and
/// `/interim-flood` with [`INTERIM_FLOOD`] interim answers and no final one.
async fn unusual_instance() -> u16 {
    raw_instance(|head| {
        let name = head
            .split(' ')
            .nth(1)
            .unwrap_or("/")
            .trim_start_matches('/');
        if name == "interim-flood" {
            let flood = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(INTERIM_FLOOD);
            return Some((flood, false));
        }
        UNUSUAL_ANSWERS
            .iter()
            .find(|case| case.name == name)
            .map(|case| (case.answer.to_vec(), case.close))
    })
    .await
}

/// What a caller got for one request.
#[derive(Debug, PartialEq)]
enum Got {
    Whole(u16, String),
    Refused,
    Broken,
    /// Nothing within half [`ANSWER_PATIENCE`]: the exchange hung.
    Hung,
    /// A 502 without the agent's reason, say.
    Other(String),
}

impl Got {
    fn is(&self, expected: Expect) -> bool {
        match (self, expected) {
            (Got::Whole(status, body), Expect::Whole(want, text)) => {
                *status == want && body == text
            }
            // On the mesh path a body's reset may overtake its head in the tunnel (h2 drops
            // a reset stream's queued frames): then the caller agent answers 502. Either way
            // the caller sees no whole answer.
            (Got::Refused, Expect::Refused | Expect::Broken) | (Got::Broken, Expect::Broken) => {
                true
            }
            _ => false,
        }
    }
}

/// What `client` got for `GET url`.
async fn outcome(client: &hyphae_integration::http::Client, url: &str) -> Got {
    use hyphae_integration::http::{ANSWER_PATIENCE, exchange_within};
    let request = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("a request the test wrote");
    let exchange = exchange_within(client, request, ANSWER_PATIENCE);
    match tokio::time::timeout(ANSWER_PATIENCE / 2, exchange).await {
        Err(_) => Got::Hung,
        Ok(Err(_)) => Got::Broken,
        Ok(Ok(answer)) if answer.status == 502 => match answer.header("hyphae-error") {
            Some("upstream-reset") => Got::Refused,
            _ => Got::Other(format!("{answer:?}")),
        },
        Ok(Ok(answer)) => Got::Whole(answer.status.as_u16(), answer.text()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_and_broken_answers_reach_the_caller_as_rfc_9112_frames_them() {
    let port = unusual_instance().await;
    let http1 = http1_client();
    for &Unusual {
        name,
        expect: expected,
        direct,
        ..
    } in UNUSUAL_ANSWERS
    {
        if direct {
            // hyper's client fails the call where the agent answers 502.
            let direct = outcome(&http1, &format!("http://127.0.0.1:{port}/{name}")).await;
            let expected = match expected {
                Expect::Refused => Expect::Broken,
                other => other,
            };
            assert!(
                direct.is(expected),
                "{name}, hyper's client directly: {direct:?}"
            );
        }
    }
    for path in both_paths(port, "http", "") {
        let ok = format!("http://{}/ok", path.entry);
        hyphae_integration::eventually::eventually(&format!("{} to answer", path.name), || async {
            outcome(&http1, &ok).await.is(Expect::Whole(200, "ok"))
        })
        .await;
        for (client, protocol) in [(http1_client(), "HTTP/1.1"), (http2_client(), "HTTP/2")] {
            for &Unusual {
                name,
                expect: expected,
                ..
            } in UNUSUAL_ANSWERS
            {
                let what = format!("{name}, {} over {protocol}", path.name);
                // Twice, so an answer that left its connection unusable shows in the second.
                for attempt in 1..=2 {
                    let got = outcome(&client, &format!("http://{}/{name}", path.entry)).await;
                    assert!(got.is(expected), "{what}, request {attempt}: {got:?}");
                }
                let after = outcome(&client, &ok).await;
                assert!(
                    after.is(Expect::Whole(200, "ok")),
                    "after {what}: {after:?}"
                );
            }
            // A flood of interim answers ends in a 502 well before the caller's patience.
            let flood = outcome(&client, &format!("http://{}/interim-flood", path.entry)).await;
            let what = format!("interim flood, {} over {protocol}", path.name);
            assert_eq!(flood, Got::Refused, "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_instances_answer_reaches_the_caller_in_the_agents_own_version() {
    // RFC 9110 §6.2: an intermediary sends its own HTTP version. Through the mesh the tunnel's
    // HTTP/2 hop did that; on the caller's own node the instance's `HTTP/1.0` went through.
    let port = unusual_instance().await;
    for path in both_paths(port, "http", "") {
        let http1 = http1_client();
        let ok = format!("http://{}/ok", path.entry);
        hyphae_integration::eventually::eventually(&format!("{} to answer", path.name), || async {
            outcome(&http1, &ok).await.is(Expect::Whole(200, "ok"))
        })
        .await;
        let answer = raw_exchange(
            path.entry,
            b"GET /http10-keep-alive HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nold"),
            "{}: {answer}",
            path.name
        );
    }
}

/// What `exchange` (a raw exchange with the agent) gives for `raw` on `path` once `ready`
/// accepts it: a path answers for the instance only once its agent has learnt of it. Fails
/// the test after [`DEADLINE`].
async fn once_ready<Fut>(
    path: &MeshPath,
    exchange: impl Fn(SocketAddr, &'static [u8]) -> Fut,
    raw: &'static [u8],
    ready: impl Fn(&str) -> bool,
) -> String
where
    Fut: std::future::Future<Output = String>,
{
    hyphae_integration::eventually::wait_for(
        &format!("{} to answer", path.name),
        DEADLINE,
        Duration::from_millis(50),
        || async {
            let answer = exchange(path.entry, raw).await;
            ready(&answer).then_some(answer)
        },
    )
    .await
    .unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

/// An HTTP/1.1 instance that answers every request with its head as the body, and closes.
async fn head_echo_instance() -> u16 {
    raw_instance(|head| {
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
            head.len()
        );
        Some((answer.into_bytes(), true))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instances_own_reason_phrase_reaches_an_http1_caller_on_both_paths() {
    // HTTP/2 has no reason phrase: across the tunnel `404 Gone Fishing` became `404 Not
    // Found`, and a status with no phrase of its own hyper's `599 <none>`. Clients show it
    // (requests' `reason`, fetch's `statusText`).
    for line in ["404 Gone Fishing", "599 Custom Thing"] {
        let port = match line {
            "404 Gone Fishing" => {
                raw_instance(|_| {
                    Some((
                        b"HTTP/1.1 404 Gone Fishing\r\nContent-Length: 0\r\n\r\n".to_vec(),
                        true,
                    ))
                })
                .await
            }
            _ => {
                raw_instance(|_| {
                    Some((
                        b"HTTP/1.1 599 Custom Thing\r\nContent-Length: 0\r\n\r\n".to_vec(),
                        true,
                    ))
                })
                .await
            }
        };
        let raw: &[u8] = b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";
        let status_line = |answer: &str| answer.lines().next().unwrap_or_default().to_string();
        let direct = raw_exchange(SocketAddr::from(([127, 0, 0, 1], port)), raw).await;
        assert_eq!(status_line(&direct), format!("HTTP/1.1 {line}"));
        for path in both_paths(port, "http", "") {
            let answer = once_ready(&path, raw_exchange, raw, |answer| {
                answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 599")
            })
            .await;
            assert_eq!(status_line(&answer), status_line(&direct), "{}", path.name);
            assert!(
                !answer.to_ascii_lowercase().contains("hyphae-reason"),
                "{}: {answer}",
                path.name
            );
            // The same answer to an upgrade it declines, which the mesh carries on a stream.
            let upgrade: &[u8] = b"GET / HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n";
            let declined = raw_exchange(path.entry, upgrade).await;
            assert_eq!(
                status_line(&declined),
                status_line(&direct),
                "{}",
                path.name
            );
            assert!(
                !declined.to_ascii_lowercase().contains("hyphae-"),
                "{}: {declined}",
                path.name
            );
        }
    }
}

/// Requests the cutting instance of the next test was sent, all paths together.
static CUT_REQUESTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_instance_cuts_short_reaches_the_caller_as_far_as_it_came() {
    // The instance sends its head and half its body, then closes. A caller talking to it
    // directly gets those and then the close. Through the agent the head and bytes were still
    // in hyper's write buffer when the body failed, and were dropped: the caller saw its
    // keep-alive connection close with no answer, which clients (curl for a POST) take for a
    // stale connection and answer by sending the request again.
    use std::sync::atomic::Ordering;
    for (framing, answer) in [
        (
            "a length",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        ),
        (
            "chunks",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ),
    ] {
        let port = match framing {
            "chunks" => {
                raw_instance(|_| {
                    CUT_REQUESTS.fetch_add(1, Ordering::SeqCst);
                    Some((
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                            .to_vec(),
                        true,
                    ))
                })
                .await
            }
            _ => {
                raw_instance(|_| {
                    CUT_REQUESTS.fetch_add(1, Ordering::SeqCst);
                    Some((
                        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello".to_vec(),
                        true,
                    ))
                })
                .await
            }
        };
        let raw: &[u8] = b"POST /order HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n";
        let direct = raw_exchange(SocketAddr::from(([127, 0, 0, 1], port)), raw).await;
        assert_eq!(direct, answer, "{framing}, directly");
        for path in both_paths(port, "http", "") {
            // Readiness is checked with a GET, so that the POST below is sent once.
            once_ready(
                &path,
                raw_exchange,
                b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
                |answer| answer.starts_with("HTTP/1.1 200"),
            )
            .await;
            let before = CUT_REQUESTS.load(Ordering::SeqCst);
            let answer = raw_exchange(path.entry, raw).await;
            // On the mesh path the answering agent's reset may overtake the head it sent (h2
            // drops a reset stream's queued frames): the caller then gets a 502, still an
            // answer, never a bare close.
            let cut_as_direct = answer.starts_with("HTTP/1.1 200")
                && answer.contains("hello")
                && !answer.ends_with("0\r\n\r\n");
            let refused = path.name == "mesh path"
                && answer.starts_with("HTTP/1.1 502")
                && answer.contains("hyphae-error: upstream-reset");
            assert!(
                cut_as_direct || refused,
                "{framing}, {}: {answer:?}",
                path.name
            );
            assert_eq!(
                CUT_REQUESTS.load(Ordering::SeqCst) - before,
                1,
                "{framing}, {}: the POST was sent again",
                path.name
            );
        }
    }
}

/// An HTTP/1.1 instance that answers each chunked request with the request's own bytes, head,
/// chunks and trailer section, once the trailer section has ended.
async fn chunked_echo_instance() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    listen_raw(|mut stream| async move {
        let mut read = Vec::new();
        let mut buffer = [0_u8; 4096];
        let ended = |read: &[u8]| {
            read.windows(5)
                .position(|w| w == b"\r\n0\r\n")
                .is_some_and(|last| read[last + 2..].ends_with(b"\r\n\r\n"))
        };
        while !ended(&read) {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buffer[..n]),
            }
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            read.len()
        );
        let _ = stream.write_all(&[head.as_bytes(), &read].concat()).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_no_trailer_header_announced_reach_an_http1_instance_as_they_do_directly()
{
    // RFC 9110 §6.6.2 makes announcing trailers a SHOULD; a client that does not still has
    // its trailers read by the instance when it talks to it directly. The agent wrote only
    // announced ones, as hyper's client does, and dropped these without a word.
    let port = chunked_echo_instance().await;
    let raw: &[u8] = b"POST /up HTTP/1.1\r\nHost: app\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
                       3\r\nabc\r\n0\r\nX-Sum: 3\r\nX-Digest: sha-256=x\r\n\r\n";
    let trailer_section = |answer: &str| {
        let answer = answer.to_ascii_lowercase();
        answer
            .rsplit_once("\r\n0\r\n")
            .map(|(_, trailers)| trailers.to_string())
            .unwrap_or_else(|| panic!("no last chunk in {answer}"))
    };
    let direct = raw_exchange(SocketAddr::from(([127, 0, 0, 1], port)), raw).await;
    let expected = trailer_section(&direct);
    assert_eq!(expected, "x-sum: 3\r\nx-digest: sha-256=x\r\n\r\n");
    for path in both_paths(port, "http", "") {
        let answer = once_ready(&path, raw_exchange, raw, |answer| {
            answer.starts_with("HTTP/1.1 200")
        })
        .await;
        assert_eq!(trailer_section(&answer), expected, "{}", path.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_post_without_a_length_reaches_the_instance_with_content_length_0() {
    // A POST with no body and no length (`curl -X POST`) says nothing of its body on the wire;
    // the instance must still learn where it ends. The agent sends `content-length: 0`, as
    // hyper's clients do for a body known to be empty.
    let port = head_echo_instance().await;
    for path in both_paths(port, "http", "") {
        let raw = b"POST /empty HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";
        let answer = once_ready(&path, raw_exchange, raw, |answer| {
            answer.starts_with("HTTP/1.1 200")
        })
        .await;
        let head = answer.to_ascii_lowercase();
        assert!(
            head.contains("\r\n\r\npost /empty http/1.1\r\n")
                && head.contains("\r\ncontent-length: 0\r\n")
                && !head.contains("transfer-encoding"),
            "{}: the instance saw {answer}",
            path.name
        );
    }
}

/// What the head-echoing instance saw of a request sent over HTTP/2 on `path` with `fields`.
async fn http2_request_as_seen(
    path: &MeshPath,
    fields: &[(&str, &str)],
    body: &'static str,
) -> String {
    let client = http2_client();
    let answer = hyphae_integration::eventually::wait_for(
        &format!("{} to answer", path.name),
        DEADLINE,
        Duration::from_millis(50),
        || async {
            let mut request = http::Request::post(format!("http://{}/seen", path.entry));
            for (name, value) in fields {
                request = request.header(*name, *value);
            }
            let request = request
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    body.as_bytes(),
                )))
                .expect("a request");
            hyphae_integration::http::exchange(&client, request)
                .await
                .filter(|answer| answer.status == 200)
        },
    )
    .await
    .unwrap_or_else(|timed_out| panic!("{timed_out}"));
    answer.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_unusual_methods_or_a_leading_empty_line_are_served_as_http() {
    // Protocol detection once took only 3 to 7 capital letters for a method, and a request
    // line first: WebDAV's PROPFIND and a leading CRLF (RFC 9112 §2.2) went to the instance as
    // opaque bytes, hop-by-hop fields and all.
    let port = head_echo_instance().await;
    let requests: [&'static [u8]; 3] = [
        b"PROPFIND /dav HTTP/1.1\r\nHost: app\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\n\r\n",
        b"M-SEARCH /ssdp HTTP/1.1\r\nHost: app\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\n\r\n",
        b"\r\nGET /after-crlf HTTP/1.1\r\nHost: app\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\n\r\n",
    ];
    for path in both_paths(port, "http", "") {
        for raw in requests {
            let answer = once_ready(&path, raw_exchange, raw, |answer| {
                answer.starts_with("HTTP/1.1 200")
            })
            .await;
            let seen = answer.to_ascii_lowercase();
            let line = String::from_utf8_lossy(raw)
                .trim_start()
                .to_ascii_lowercase();
            let line = line.lines().next().unwrap_or_default();
            assert!(
                seen.contains(&format!("\r\n\r\n{line}\r\n"))
                    && !seen.contains("x-hop")
                    && seen.contains("\r\ndate: "),
                "{}: {line}: {answer}",
                path.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_callers_cookies_reach_an_http1_instance_as_one_line() {
    // HTTP/2 clients (browsers) send each cookie as a field of its own; RFC 9113 §8.2.3 has them
    // joined with `; ` before an HTTP/1.1 hop, where servers read one `Cookie` line.
    let port = head_echo_instance().await;
    for path in both_paths(port, "http", "") {
        let seen = http2_request_as_seen(&path, &[("cookie", "a=1"), ("cookie", "b=2")], "")
            .await
            .to_ascii_lowercase();
        assert!(
            seen.contains("\r\ncookie: a=1; b=2\r\n") && seen.matches("cookie:").count() == 1,
            "{}: the instance saw {seen}",
            path.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_callers_repeated_length_reaches_an_http1_instance_as_one_line() {
    // RFC 9110 §8.6: `content-length: 5` twice may be taken as one length, but must then be
    // sent on as one; two lines make strict servers (Node) answer 400.
    let port = head_echo_instance().await;
    for path in both_paths(port, "http", "") {
        let fields = [("content-length", "5"), ("content-length", "5")];
        let seen = http2_request_as_seen(&path, &fields, "hello")
            .await
            .to_ascii_lowercase();
        assert!(
            seen.contains("\r\ncontent-length: 5\r\n")
                && seen.matches("content-length:").count() == 1,
            "{}: the instance saw {seen}",
            path.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_chunked_body_reaches_the_instance_with_its_body_as_it_does_directly() {
    // A GET's body has no defined meaning, but it is the caller's: hyper's client dropped one
    // of unknown length, and the instance saw a GET without it. Envoy sends it chunked.
    let (_server, port) = hypercorn(None);
    let raw = b"GET /get-body HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\
                Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let direct = raw_exchange(SocketAddr::from(([127, 0, 0, 1], port)), raw).await;
    assert!(direct.ends_with("GET /get-body 5"), "directly: {direct}");
    for path in both_paths(port, "http", "") {
        let answer = once_ready(&path, raw_exchange, raw, |answer| {
            answer.starts_with("HTTP/1.1 200")
        })
        .await;
        assert!(
            answer.ends_with("GET /get-body 5"),
            "{}: {answer}",
            path.name
        );
    }
}

/// An HTTP/1.1 instance that takes every upgrade, naming in `x-seen-host` the `Host` it got.
async fn upgrade_host_instance() -> u16 {
    raw_instance(|head| {
        let method = head.split(' ').next().unwrap_or("-");
        let host = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("host").then(|| value.trim())
            })
            .unwrap_or("-");
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Seen-Host: {host}\r\nX-Seen-Method: {method}\r\n\r\n"
        );
        Some((answer.into_bytes(), false))
    })
    .await
}

/// Writes `raw` to `address` and reads the answer's head, leaving the connection open.
async fn raw_head(address: SocketAddr, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the agent");
    stream.write_all(raw).await.expect("write the request");
    let mut head = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => head.extend_from_slice(&buffer[..n]),
            Err(_) => panic!("no answer head to {:?}", String::from_utf8_lossy(raw)),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_reaches_the_instance_with_the_callers_host_as_it_was_sent() {
    // The CONNECT stream that carries an upgrade needs a port in its authority (`app:80`); the
    // instance must still get the caller's `Host: app`, as ordinary calls do (decision 29).
    let port = upgrade_host_instance().await;
    for path in both_paths(port, "http", "") {
        let raw = b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let head = once_ready(&path, raw_head, raw, |head| {
            head.starts_with("HTTP/1.1 101")
        })
        .await;
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nx-seen-host: app\r\n"),
            "{}: {head}",
            path.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_reaches_the_instance_with_the_callers_method_as_it_does_directly() {
    // WebSocket upgrades are GET, but not every upgrade is: Docker's attach is a POST with
    // `Upgrade: tcp`. The instance must see the method the caller sent, not GET.
    let port = upgrade_host_instance().await;
    let raw = b"POST /containers/c1/attach?stream=1 HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n";
    let direct = raw_head(SocketAddr::from(([127, 0, 0, 1], port)), raw).await;
    assert!(
        direct
            .to_ascii_lowercase()
            .contains("\r\nx-seen-method: post\r\n"),
        "directly: {direct}"
    );
    for path in both_paths(port, "http", "") {
        let head = once_ready(&path, raw_head, raw, |head| {
            head.starts_with("HTTP/1.1 101")
        })
        .await;
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nx-seen-method: post\r\n"),
            "{}: {head}",
            path.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_a_body_is_served_as_an_ordinary_request() {
    // The stream that carries an upgrade carries no body before it; RFC 9110 §7.8 lets the
    // upgrade be ignored, so the request goes as an ordinary one, body and all.
    let port = head_echo_instance().await;
    for path in both_paths(port, "http", "") {
        let raw = b"POST /up HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, close\r\nUpgrade: tcp\r\nContent-Length: 5\r\n\r\nhello";
        let answer = once_ready(&path, raw_exchange, raw, |answer| {
            !answer.contains("hyphae-error: no-endpoints")
                && !answer.contains("hyphae-error: unknown-service")
        })
        .await;
        let seen = answer.to_ascii_lowercase();
        assert!(
            seen.starts_with("http/1.1 200")
                && seen.contains("\r\n\r\npost /up http/1.1\r\n")
                && seen.contains("\r\ncontent-length: 5\r\n")
                && !seen.contains("upgrade"),
            "{}: {answer}",
            path.name
        );
    }
}

/// An HTTP/1.1 instance that declines every upgrade and answers as usual: 200, `no`.
async fn upgrade_declining_instance() -> u16 {
    raw_instance(|_| {
        Some((
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno".to_vec(),
            false,
        ))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_the_instance_declines_with_200_reaches_the_caller_as_that_200() {
    // RFC 9110 §7.8: a server may ignore an upgrade. Its 200 must not become the tunnel's
    // acceptance (a 101 nobody sent) or, with a body, a reset CONNECT (502).
    let port = upgrade_declining_instance().await;
    for path in both_paths(port, "http", "") {
        let raw = b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let answer = once_ready(&path, raw_exchange, raw, |answer| {
            !answer.contains("hyphae-error: no-endpoints")
                && !answer.contains("hyphae-error: unknown-service")
        })
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nno"),
            "{}: {answer}",
            path.name
        );
    }
}

/// Connections the stalling instance has seen closed by the agent.
static STALLED_CLOSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// An HTTP/1.1 instance that answers `GET /stall` with the head and the first 10 of the 100
/// bytes it promises, then sends nothing more while the connection stays open, and counts the
/// connections the agent closes in [`STALLED_CLOSED`]; anything else gets `fresh` and a close.
async fn stalling_instance() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    listen_raw(|mut stream| async move {
        let mut read = Vec::new();
        let mut buffer = [0_u8; 4096];
        while !read.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buffer[..n]),
            }
        }
        if !read.starts_with(b"GET /stall ") {
            let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfresh";
            let _ = stream.write_all(whole).await;
            return;
        }
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789";
        if stream.write_all(answer).await.is_err() {
            return;
        }
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
        STALLED_CLOSED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    })
    .await
}

/// A route whose rule for `/stall` bounds a quiet stream at 1 s; the agent's own
/// `streamIdleTimeout` (5 min) governs every other call.
const STALL_ROUTE: &str = "---\nkind: Route\nmetadata: {name: app}\nspec:\n  service: app\n  \
    rules:\n    - matches:\n        - path: {prefix: /stall}\n      backends:\n        \
    - service: app\n      timeouts: {idle: 1s}\n    - backends:\n        - service: app\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_stops_coming_ends_after_the_idle_timeout_and_frees_the_instance() {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = stalling_instance().await;
    for path in both_paths(port, "http", STALL_ROUTE) {
        // HTTP/1.1: the agent closes the connection, so the caller sees a short body.
        let mut stream = tokio::net::TcpStream::connect(path.entry)
            .await
            .expect("connect to the agent");
        let started = tokio::time::Instant::now();
        stream
            .write_all(b"GET /stall HTTP/1.1\r\nHost: app\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{}: a stalled answer held its caller", path.name))
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{}: {answer}",
            path.name
        );
        assert!(
            answer.ends_with("\r\n\r\n0123456789"),
            "{}: {answer}",
            path.name
        );
        assert!(started.elapsed() >= Duration::from_secs(1), "{}", path.name);
        // HTTP/2: the stream fails; the connection stays for other calls.
        let client = http2_client();
        let url = format!("http://{}/stall", path.entry);
        let request = http::Request::get(&url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("a request");
        let response = client.request(request).await.expect("an answer's head");
        assert_eq!(response.status(), 200, "{}", path.name);
        let body = tokio::time::timeout(DEADLINE, response.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("{}: a stalled answer held its HTTP/2 caller", path.name));
        assert!(body.is_err(), "{}: the short body looked whole", path.name);
        let after = get(&client, &format!("http://{}/", path.entry)).await;
        assert_eq!(
            after.status, 200,
            "{}: the connection went with it",
            path.name
        );
        assert_eq!(after.text(), "fresh", "{}", path.name);
    }
    // Each stalled answer's connection to the instance was closed, not kept for ever.
    let closed =
        || async { (STALLED_CLOSED.load(std::sync::atomic::Ordering::SeqCst) >= 4).then_some(()) };
    hyphae_integration::eventually::wait_for(
        "the stalled connections closed",
        DEADLINE,
        Duration::from_millis(50),
        closed,
    )
    .await
    .expect("the agent closed each stalled connection to the instance");
}
