//! The agent's ports against an adversarial client: malformed and abusive HTTP/2 (raw frames,
//! hand-encoded HPACK) and HTTP/1.1 (raw bytes) on an upstream port and the HTTP proxy port,
//! and abuse of the admin port. Each attack must get a 4xx, `RST_STREAM` or `GOAWAY`, reach no
//! instance when it is malformed, stay bounded in time and memory, and leave the agent serving
//! a well-behaved client on another connection.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hyphae_integration::DEADLINE;
use hyphae_integration::agent::Agent;
use hyphae_integration::backend::TestBackend;
use hyphae_integration::http::{get, http1_client, http2_client};
use hyphae_integration::mesh::{caller_config, endpoint, host_agent, upstream_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

const AGENT: &str = env!("CARGO_BIN_EXE_hyphae-agent");

/// A backend behind a host agent, and a caller agent whose upstream port `svc` leads to it,
/// with `limits` (a flow mapping's fields) in the caller's spec.
fn mesh(backend: &TestBackend, limits: &str) -> (Agent, Agent) {
    let host = host_agent(AGENT, "host", "svc", backend);
    let config = caller_config("svc", &[endpoint(&host, "one")], upstream_port(), "").replace(
        "  staticServices:",
        &format!("  limits: {{{limits}}}\n  staticServices:"),
    );
    let caller = Agent::start_yaml(Path::new(AGENT), "caller", &config).expect("start caller");
    (host, caller)
}

/// Fails unless `caller` still answers a well-behaved HTTP/1.1 and HTTP/2 client on fresh
/// connections.
async fn still_serves(caller: &Agent) {
    let url = format!("http://{}/", caller.upstream("svc"));
    assert_eq!(get(&http1_client(), &url).await.status, 200, "HTTP/1.1");
    assert_eq!(get(&http2_client(), &url).await.status, 200, "HTTP/2");
}

/// The agent's resident memory in KiB, from `/proc`.
fn resident_kib(agent: &mut Agent) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.process().id()))
        .expect("the agent's /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Most the agent's memory may grow by under one flood.
const FLOOD_MEMORY_KIB: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// A hand-driven HTTP/2 client: raw frames, so it can send what a correct client never would.

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const REFUSED_STREAM: u32 = 0x7;
const COMPRESSION_ERROR: u32 = 0x9;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame as read off the wire.
#[derive(Debug, Clone)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// An HTTP/2 connection driven frame by frame; a task reads frames into a channel.
struct RawH2 {
    write: OwnedWriteHalf,
    frames: mpsc::UnboundedReceiver<Frame>,
    seen: Vec<Frame>,
    closed: bool,
}

impl RawH2 {
    /// Connects, sends the preface and empty SETTINGS, and acknowledges the agent's.
    async fn connect(address: SocketAddr) -> RawH2 {
        let stream = TcpStream::connect(address).await.expect("connect");
        let (mut read, write) = stream.into_split();
        let (sender, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut head = [0u8; 9];
            while read.read_exact(&mut head).await.is_ok() {
                let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; length];
                if read.read_exact(&mut payload).await.is_err() {
                    break;
                }
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                let frame = Frame {
                    kind: head[3],
                    flags: head[4],
                    stream,
                    payload,
                };
                if sender.send(frame).is_err() {
                    break;
                }
            }
        });
        let mut h2 = RawH2 {
            write,
            frames,
            seen: Vec::new(),
            closed: false,
        };
        h2.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        h2.frame(SETTINGS, 0, 0, &[]).await;
        assert!(
            h2.until(|f| f.kind == SETTINGS && f.flags & ACK == 0).await,
            "the agent sent no SETTINGS"
        );
        h2.frame(SETTINGS, ACK, 0, &[]).await;
        h2
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        self.write.write_all(bytes).await.is_ok()
    }

    /// Sends one frame; false when the agent has closed the connection.
    async fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> bool {
        self.write(&frame_bytes(kind, flags, stream, payload)).await
    }

    /// Reads frames until one matches `wanted` (true), or the connection closes or the
    /// deadline passes (false).
    async fn until(&mut self, wanted: impl Fn(&Frame) -> bool) -> bool {
        if self.seen.iter().any(&wanted) {
            return true;
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(frame)) => {
                    let matched = wanted(&frame);
                    self.seen.push(frame);
                    if matched {
                        return true;
                    }
                }
                Ok(None) => {
                    self.closed = true;
                    return false;
                }
                Err(_) => return false,
            }
        }
    }

    /// Waits for the agent's GOAWAY and returns its error code, or None if the connection
    /// closed without one or stayed open.
    async fn goaway(&mut self) -> Option<u32> {
        self.until(|f| f.kind == GOAWAY).await;
        self.seen
            .iter()
            .find(|f| f.kind == GOAWAY)
            .map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
    }

    /// How stream `id` ended: its status (from its response HEADERS) or its reset code.
    async fn outcome(&mut self, id: u32) -> Outcome {
        self.until(|f| {
            f.stream == id && matches!(f.kind, HEADERS | RST_STREAM) || f.kind == GOAWAY
        })
        .await;
        for f in &self.seen {
            if f.stream == id && f.kind == HEADERS {
                return Outcome::Status(response_status(&f.payload));
            }
            if f.stream == id && f.kind == RST_STREAM {
                return Outcome::Reset(u32::from_be_bytes([
                    f.payload[0],
                    f.payload[1],
                    f.payload[2],
                    f.payload[3],
                ]));
            }
            if f.kind == GOAWAY {
                return Outcome::GoAway;
            }
        }
        if self.closed {
            Outcome::Closed
        } else {
            Outcome::Nothing
        }
    }

    /// True once the agent has closed the connection (EOF), within the deadline.
    async fn closes(&mut self) -> bool {
        while !self.closed {
            if !self.until(|_| false).await && !self.closed {
                return false;
            }
        }
        true
    }
}

/// What became of a stream.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// An answer with this status.
    Status(u16),
    /// `RST_STREAM` with this code.
    Reset(u32),
    /// The whole connection went away.
    GoAway,
    /// Closed without a word.
    Closed,
    /// Nothing within the deadline.
    Nothing,
}

impl Outcome {
    /// True for a refusal: a 4xx, a reset or the connection's end, never a forward or silence.
    fn refused(&self) -> bool {
        match self {
            Outcome::Status(status) => (400..500).contains(status),
            Outcome::Reset(_) | Outcome::GoAway | Outcome::Closed => true,
            Outcome::Nothing => false,
        }
    }
}

fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend(stream.to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// An HPACK integer with an `prefix`-bit prefix whose high bits are `first`.
fn hpack_int(first: u8, prefix: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields without indexing, names and values as given (no
/// lowercasing, no checks).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(0, 7, name.len(), &mut out);
        out.extend(name.as_bytes());
        hpack_int(0, 7, value.len(), &mut out);
        out.extend(value.as_bytes());
    }
    out
}

/// The pseudo-headers of a well-formed request for `path`.
fn request(method: &'static str, path: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        (":method", method),
        (":scheme", "http"),
        (":path", path),
        (":authority", "svc"),
    ]
}

/// The status in a response header block, which hyper's encoder starts with: an indexed field
/// for the statuses of HPACK's static table, else a literal with the `:status` name and a
/// Huffman-coded value (digits only).
fn response_status(block: &[u8]) -> u16 {
    match block.first() {
        Some(0x88) => return 200,
        Some(0x89) => return 204,
        Some(0x8a) => return 206,
        Some(0x8b) => return 304,
        Some(0x8c) => return 400,
        Some(0x8d) => return 404,
        Some(0x8e) => return 500,
        _ => {}
    }
    let value = &block[2..];
    let huffman = block[1] & 0x80 != 0;
    let length = (block[1] & 0x7f) as usize;
    if !huffman {
        return std::str::from_utf8(&value[..length])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
    }
    // Huffman codes of digits: '0'-'2' are 5 bits (00000-00010), '3'-'9' 6 bits (011001-011111).
    let bits: Vec<u8> = value[..length]
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let (mut at, mut status) = (0, 0u16);
    for _ in 0..3 {
        let code = bits[at..at + 5]
            .iter()
            .fold(0, |n, b| n << 1 | u16::from(*b));
        at += 5;
        let digit = if code < 3 {
            code
        } else {
            let code = code << 1 | u16::from(bits[at]);
            at += 1;
            code - 0b011001 + 3
        };
        status = status * 10 + digit;
    }
    status
}

/// Sends `fields` as one request on a fresh connection (with END_STREAM) and returns how it
/// ended.
async fn one_request(address: SocketAddr, fields: &[(&str, &str)]) -> Outcome {
    let mut h2 = RawH2::connect(address).await;
    h2.frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(fields))
        .await;
    h2.outcome(1).await
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 on an upstream port (h2c, prior knowledge).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_client_reads_a_plain_answer() {
    // The hand-driven client itself: a well-formed request gets the backend's 200, and an
    // agent error (the proxy-only CONNECT) its 400, so the tests below can tell a refusal.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let entry = caller.upstream("svc");
    assert_eq!(
        one_request(entry, &request("GET", "/")).await,
        Outcome::Status(200)
    );
    assert_eq!(
        one_request(entry, &request("GET", "/?status=503")).await,
        Outcome::Status(503)
    );
    assert_eq!(
        one_request(entry, &request("GET", "/?status=429")).await,
        Outcome::Status(429)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_answered_with_goaway_and_bounded() {
    // CVE-2023-44487: streams opened and reset at once, many times. hyper's
    // `max_pending_accept_reset_streams` (limits.maxPendingAcceptResetStreams) ends it.
    let backend = TestBackend::start("b").await;
    let (_host, mut caller) = mesh(&backend, "maxPendingAcceptResetStreams: 20");
    let before = resident_kib(&mut caller);
    let mut h2 = RawH2::connect(caller.upstream("svc")).await;
    let headers = block(&request("GET", "/?delay_ms=2000"));
    const ATTEMPTS: u32 = 5000;
    let mut burst = Vec::new();
    for n in 0..ATTEMPTS {
        let id = 2 * n + 1;
        burst.extend(frame_bytes(HEADERS, END_HEADERS | END_STREAM, id, &headers));
        burst.extend(frame_bytes(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    // The agent may close while the burst is still being written: that is the point.
    let _ = h2.write(&burst).await;
    assert_eq!(
        h2.goaway().await,
        Some(ENHANCE_YOUR_CALM),
        "{:?}",
        h2.seen.last()
    );
    assert!(h2.closes().await, "the connection stayed open after GOAWAY");
    assert!(
        backend.requests() < ATTEMPTS as usize / 2,
        "{} of {ATTEMPTS} reset streams reached the instance",
        backend.requests()
    );
    assert!(resident_kib(&mut caller) < before + FLOOD_MEMORY_KIB);
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_at_the_header_limit() {
    // CVE-2024-27316: a header block that never ends, sent as CONTINUATION frames.
    let backend = TestBackend::start("b").await;
    let (_host, mut caller) = mesh(&backend, "maxHeaderBytes: 16384");
    let before = resident_kib(&mut caller);
    let mut h2 = RawH2::connect(caller.upstream("svc")).await;
    let mut first = block(&request("GET", "/"));
    first.extend(block(&[("x-a", "a")]));
    h2.frame(HEADERS, END_STREAM, 1, &first).await;
    let filler = block(&[("x-filler", &"f".repeat(4000))]);
    /// 16 MiB at most: a thousand times the header limit.
    const FRAMES: usize = 4096;
    let mut sent = 0;
    for _ in 0..FRAMES {
        if !h2.frame(CONTINUATION, 0, 1, &filler).await {
            break;
        }
        sent += 1;
    }
    assert!(
        sent < FRAMES,
        "the agent took {sent} CONTINUATION frames without closing"
    );
    assert!(h2.closes().await, "the connection stayed open");
    assert_eq!(backend.requests(), 0);
    assert!(resident_kib(&mut caller) < before + FLOOD_MEMORY_KIB);
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_beyond_max_header_bytes_is_refused() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "maxHeaderBytes: 8192");
    let mut h2 = RawH2::connect(caller.upstream("svc")).await;
    let mut fields = request("GET", "/");
    let big = "v".repeat(12_000);
    fields.push(("x-big", &big));
    let bytes = block(&fields);
    // Default SETTINGS_MAX_FRAME_SIZE is 16 KiB: split the block.
    let (head, tail) = bytes.split_at(8000);
    h2.frame(HEADERS, END_STREAM, 1, head).await;
    h2.frame(CONTINUATION, END_HEADERS, 1, tail).await;
    let outcome = h2.outcome(1).await;
    assert!(outcome.refused(), "{outcome:?}");
    assert_eq!(backend.requests(), 0);
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_concurrent_streams_are_refused() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "maxConcurrentStreams: 4");
    let mut h2 = RawH2::connect(caller.upstream("svc")).await;
    // Requests whose bodies never end hold their streams open.
    let headers = block(&request("POST", "/echo"));
    for n in 0..10 {
        h2.frame(HEADERS, END_HEADERS, 2 * n + 1, &headers).await;
    }
    for n in 4..10 {
        let id = 2 * n + 1;
        let outcome = h2.outcome(id).await;
        assert!(
            matches!(outcome, Outcome::Reset(REFUSED_STREAM | PROTOCOL_ERROR)),
            "stream {id}: {outcome:?}"
        );
    }
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_from_a_client_that_never_reads_stay_bounded() {
    let backend = TestBackend::start("b").await;
    let (_host, mut caller) = mesh(&backend, "");
    let before = resident_kib(&mut caller);
    for kind in [SETTINGS, PING] {
        // A bare socket, never read: each frame asks for an answer that cannot be delivered.
        let mut stream = TcpStream::connect(caller.upstream("svc"))
            .await
            .expect("connect");
        let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        start.extend(frame_bytes(SETTINGS, 0, 0, &[]));
        stream.write_all(&start).await.expect("write the preface");
        let payload: &[u8] = if kind == PING { &[0; 8] } else { &[] };
        let one = frame_bytes(kind, 0, 0, payload);
        /// Frames per write, and writes at most: up to 85 MB of PINGs, more than the memory
        /// bound, so an agent that queued every answer would break it.
        const FRAMES: usize = 10_000;
        const WRITES: usize = 500;
        let chunk: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * FRAMES)
            .collect();
        let mut written = 0;
        for _ in 0..WRITES {
            // The agent stops reading once its answers back up: a stalled write is the bound.
            match tokio::time::timeout(Duration::from_secs(2), stream.write_all(&chunk)).await {
                Ok(Ok(())) => written += 1,
                _ => break,
            }
        }
        assert!(
            resident_kib(&mut caller) < before + FLOOD_MEMORY_KIB,
            "kind {kind}, {written} writes of {FRAMES} frames"
        );
        drop(stream);
        still_serves(&caller).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authority_and_a_host_that_disagree_are_refused() {
    // RFC 9113 §8.3.1: the two name different hosts; routing by one while the instance reads
    // the other lets a caller reach one service while claiming another.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let proxy = caller.http_proxy.expect("a proxy port");
    for entry in [caller.upstream("svc"), proxy] {
        let mut fields = request("GET", "/");
        fields.push(("host", "elsewhere.example"));
        let outcome = one_request(entry, &fields).await;
        assert_eq!(outcome, Outcome::Status(400), "{entry}");
        // Both the same: served.
        let mut fields = request("GET", "/");
        fields.push(("host", "svc"));
        assert_eq!(
            one_request(entry, &fields).await,
            Outcome::Status(200),
            "{entry}"
        );
    }
    // On the proxy port a request that names no host at all names no service.
    let nameless = [(":method", "GET"), (":scheme", "http"), (":path", "/")];
    assert_eq!(one_request(proxy, &nameless).await, Outcome::Status(400));
    assert_eq!(backend.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_updates_that_overflow_a_window_are_flow_control_errors() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let max = 0x7fff_ffffu32.to_be_bytes();
    // On a stream: a stream error.
    let mut h2 = RawH2::connect(caller.upstream("svc")).await;
    h2.frame(HEADERS, END_HEADERS, 1, &block(&request("POST", "/echo")))
        .await;
    h2.frame(WINDOW_UPDATE, 0, 1, &max).await;
    h2.frame(WINDOW_UPDATE, 0, 1, &max).await;
    assert_eq!(h2.outcome(1).await, Outcome::Reset(FLOW_CONTROL_ERROR));
    // On the connection: a connection error.
    let mut h2 = RawH2::connect(caller.upstream("svc")).await;
    h2.frame(WINDOW_UPDATE, 0, 0, &max).await;
    h2.frame(WINDOW_UPDATE, 0, 0, &max).await;
    assert_eq!(h2.goaway().await, Some(FLOW_CONTROL_ERROR));
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_beyond_the_declared_content_length_resets_the_stream() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let mut h2 = RawH2::connect(caller.upstream("svc")).await;
    let mut fields = request("POST", "/echo");
    fields.push(("content-length", "5"));
    h2.frame(HEADERS, END_HEADERS, 1, &block(&fields)).await;
    h2.frame(DATA, END_STREAM, 1, b"hello world").await;
    let outcome = h2.outcome(1).await;
    assert_eq!(outcome, Outcome::Reset(PROTOCOL_ERROR), "{:?}", h2.seen);
    // Nothing of the oversized body came back as an answer.
    assert!(
        !h2.seen
            .iter()
            .any(|f| f.kind == DATA && f.payload.windows(5).any(|w| w == b"world")),
        "{:?}",
        h2.seen
    );
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_short_of_the_declared_content_length_resets_the_stream() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let mut h2 = RawH2::connect(caller.upstream("svc")).await;
    let mut fields = request("POST", "/echo");
    fields.push(("content-length", "50"));
    h2.frame(HEADERS, END_HEADERS, 1, &block(&fields)).await;
    h2.frame(DATA, END_STREAM, 1, b"hello").await;
    let outcome = h2.outcome(1).await;
    assert_eq!(outcome, Outcome::Reset(PROTOCOL_ERROR), "{:?}", h2.seen);
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_hpack_cannot_decode_ends_the_connection() {
    // An indexed field beyond both tables, and a dynamic table size update above the limit
    // the agent announced: connection errors (h2 says COMPRESSION_ERROR or PROTOCOL_ERROR),
    // not a panic.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    for garbage in [
        &[0xffu8, 0xff, 0xff, 0x7f][..],
        &[0x3f, 0xff, 0xff, 0xff, 0x0f],
    ] {
        let mut h2 = RawH2::connect(caller.upstream("svc")).await;
        h2.frame(HEADERS, END_HEADERS | END_STREAM, 1, garbage)
            .await;
        let code = h2.goaway().await;
        assert!(
            matches!(code, Some(PROTOCOL_ERROR | COMPRESSION_ERROR)),
            "{garbage:x?}: {code:?}"
        );
    }
    assert_eq!(backend.requests(), 0);
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_and_reach_no_instance() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let entry = caller.upstream("svc");
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut fields = request("GET", "/");
        fields.extend_from_slice(extra);
        fields
    };
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("an uppercase name", with(&[("X-Upper", "a")])),
        ("connection", with(&[("connection", "keep-alive")])),
        (
            "transfer-encoding",
            with(&[("transfer-encoding", "chunked")]),
        ),
        ("te: gzip", with(&[("te", "gzip")])),
        ("keep-alive", with(&[("keep-alive", "timeout=5")])),
        ("upgrade", with(&[("upgrade", "websocket")])),
        (
            "no :method",
            vec![(":scheme", "http"), (":path", "/"), (":authority", "svc")],
        ),
        (
            "no :path",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "svc"),
            ],
        ),
        ("two :path", with(&[(":path", "/other")])),
        ("two :method", with(&[(":method", "POST")])),
        ("a pseudo-header after a field", {
            let mut fields = vec![(":method", "GET"), (":scheme", "http"), ("x-a", "a")];
            fields.extend([(":path", "/"), (":authority", "svc")]);
            fields
        }),
        ("an unknown pseudo-header", with(&[(":evil", "1")])),
        ("an empty :path", request("GET", "")),
        ("a :path without a slash", request("GET", "abc")),
        ("a :path of * for GET", request("GET", "*")),
        ("CONNECT without :authority", vec![(":method", "CONNECT")]),
        ("a NUL in a value", with(&[("x-a", "a\0b")])),
        ("a CR LF in a value", with(&[("x-a", "a\r\nx-injected: 1")])),
        ("a space in a name", with(&[("x a", "a")])),
        ("an empty name", with(&[("", "a")])),
        ("a :status in a request", with(&[(":status", "200")])),
        ("a host that is no authority", with(&[("host", "a b")])),
        (
            "an :authority that is no authority",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "a b"),
            ],
        ),
        (
            "an :authority with userinfo",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "user:pw@svc"),
            ],
        ),
        (
            "two content-length that differ",
            with(&[("content-length", "0"), ("content-length", "5")]),
        ),
        ("a value with a leading space", with(&[("x-a", " padded")])),
        ("a value with a trailing tab", with(&[("x-a", "padded\t")])),
    ];
    let mut wrong = Vec::new();
    for (name, fields) in cases {
        let before = backend.requests();
        let outcome = one_request(entry, &fields).await;
        let forwarded = backend.requests() - before;
        if !outcome.refused() || forwarded > 0 {
            wrong.push(format!("{name}: {outcome:?}, {forwarded} forwarded"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_http2_connections_are_closed_within_the_header_read_timeout() {
    // A client that sends the preface's first bytes, or the whole preface, or a request whose
    // body never comes, and then nothing: each holds a connection (of `maxConnections` for every
    // listener together) only for a bounded time.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "headerReadTimeout: 500ms");
    let entry = caller.upstream("svc");
    let started = tokio::time::Instant::now();
    let mut partial = TcpStream::connect(entry).await.expect("connect");
    partial
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, partial.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a half-sent preface held its connection");

    let mut silent = RawH2::connect(entry).await;
    assert!(
        silent.closes().await,
        "a connection with no request was kept"
    );

    let mut unfinished = RawH2::connect(entry).await;
    unfinished
        .frame(HEADERS, END_HEADERS, 1, &block(&request("POST", "/echo")))
        .await;
    assert!(
        unfinished.closes().await,
        "a body that never came was waited for"
    );
    assert!(started.elapsed() < DEADLINE);
    still_serves(&caller).await;
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 frame by frame, as h2spec probes a server: each case on a fresh connection, and what
// RFC 9113 (and RFC 7541 for HPACK) requires of the answer.

const PRIORITY: u8 = 0x2;
const PADDED: u8 = 0x8;
const STREAM_CLOSED: u32 = 0x5;
const FRAME_SIZE_ERROR: u32 = 0x6;

/// What a probe must draw from the agent.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A connection error: GOAWAY with this code, then the connection closes.
    GoAway(u32),
    /// A stream error on this stream with this code: RST_STREAM, or GOAWAY with the code (an
    /// endpoint may treat any stream error as a connection error, RFC 9113 §5.4.1).
    StreamError(u32, u32),
    /// The oddity is ignored: the request on this stream gets its 200.
    Answered(u32),
}

/// A GET for `/` on stream `id`, whole in one HEADERS frame.
fn get_frame(id: u32) -> Vec<u8> {
    frame_bytes(
        HEADERS,
        END_HEADERS | END_STREAM,
        id,
        &block(&request("GET", "/")),
    )
}

/// A POST whose body has not started, holding stream `id` open.
fn open_post_frame(id: u32) -> Vec<u8> {
    frame_bytes(HEADERS, END_HEADERS, id, &block(&request("POST", "/echo")))
}

/// One SETTINGS parameter as its six octets.
fn setting(id: u16, value: u32) -> Vec<u8> {
    let mut bytes = id.to_be_bytes().to_vec();
    bytes.extend(value.to_be_bytes());
    bytes
}

/// The frames seen, one line each, for a failure's message.
fn seen_summary(h2: &RawH2) -> String {
    h2.seen
        .iter()
        .map(|f| {
            format!(
                "type {:#x} flags {:#x} stream {} length {} {:x?}",
                f.kind,
                f.flags,
                f.stream,
                f.payload.len(),
                &f.payload[..f.payload.len().min(8)]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The code of the agent's GOAWAY among the frames seen, if it sent one.
fn goaway_code(h2: &RawH2) -> Option<u32> {
    h2.seen
        .iter()
        .find(|f| f.kind == GOAWAY)
        .map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
}

/// Sends `frames` on a fresh connection to `address` and checks the agent's answer against
/// `expect`; the error says what came instead.
async fn probe(address: SocketAddr, frames: &[Vec<u8>], expect: Expect) -> Result<(), String> {
    let mut h2 = RawH2::connect(address).await;
    // The agent may close while the frames are still being written.
    let _ = h2.write(&frames.concat()).await;
    let met = match expect {
        Expect::GoAway(code) => h2.goaway().await == Some(code) && h2.closes().await,
        Expect::StreamError(id, code) => match h2.outcome(id).await {
            Outcome::Reset(reset) => reset == code,
            Outcome::GoAway => goaway_code(&h2) == Some(code),
            _ => false,
        },
        Expect::Answered(id) => h2.outcome(id).await == Outcome::Status(200),
    };
    if met {
        Ok(())
    } else {
        Err(format!("wanted {expect:?}, saw: {}", seen_summary(&h2)))
    }
}

/// Runs every case against `address`; fails with the list of those that went wrong.
async fn probe_all(address: SocketAddr, cases: Vec<(&str, Vec<Vec<u8>>, Expect)>) {
    let mut wrong = Vec::new();
    for (name, frames, expect) in cases {
        if let Err(error) = probe(address, &frames, expect).await {
            wrong.push(format!("{name}: {error}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_a_server_must_ignore_are_ignored() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let padded_headers = {
        let fields = block(&request("GET", "/"));
        let mut payload = vec![5u8];
        payload.extend(fields);
        payload.extend([0u8; 5]);
        frame_bytes(HEADERS, END_HEADERS | END_STREAM | PADDED, 1, &payload)
    };
    let priority = {
        let mut payload = 0u32.to_be_bytes().to_vec();
        payload.push(15);
        payload
    };
    // A dependency on stream 0 with weight 16, in the HEADERS frame itself.
    let headers_with_priority = {
        let mut payload = priority.clone();
        payload.extend(block(&request("GET", "/")));
        frame_bytes(HEADERS, END_HEADERS | END_STREAM | 0x20, 1, &payload)
    };
    let cases = vec![
        (
            "an unknown frame type on the connection (§4.1)",
            vec![frame_bytes(0xfa, 0, 0, b"unknown"), get_frame(1)],
            Expect::Answered(1),
        ),
        (
            "an unknown frame type on an idle stream (§4.1, §5.1)",
            vec![frame_bytes(0xfa, 0xff, 1, b"unknown"), get_frame(1)],
            Expect::Answered(1),
        ),
        (
            "unknown flags on PING (§4.1)",
            vec![frame_bytes(PING, 0xfe, 0, b"h2spec\0\0"), get_frame(1)],
            Expect::Answered(1),
        ),
        (
            "the reserved bit of a stream identifier set (§4.1)",
            vec![get_frame(0x8000_0001)],
            Expect::Answered(1),
        ),
        (
            "a SETTINGS parameter of an unknown identifier (§6.5.2)",
            vec![frame_bytes(SETTINGS, 0, 0, &setting(0xff, 1)), get_frame(1)],
            Expect::Answered(1),
        ),
        (
            "PRIORITY on an idle stream before its HEADERS (§6.3)",
            vec![frame_bytes(PRIORITY, 0, 1, &priority), get_frame(1)],
            Expect::Answered(1),
        ),
        (
            "HEADERS with a priority (§6.2)",
            vec![headers_with_priority],
            Expect::Answered(1),
        ),
        (
            "HEADERS with padding (§6.2)",
            vec![padded_headers],
            Expect::Answered(1),
        ),
        (
            "a WINDOW_UPDATE on the connection before any stream (§6.9)",
            vec![
                frame_bytes(WINDOW_UPDATE, 0, 0, &1000u32.to_be_bytes()),
                get_frame(1),
            ],
            Expect::Answered(1),
        ),
    ];
    probe_all(caller.upstream("svc"), cases).await;
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_acknowledged_and_pings_answered_with_their_payload() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let mut h2 = RawH2::connect(caller.upstream("svc")).await;
    // §6.5.3: the client's SETTINGS (sent by `connect`) is acknowledged.
    assert!(
        h2.until(|f| f.kind == SETTINGS && f.flags & ACK != 0 && f.payload.is_empty())
            .await,
        "{}",
        seen_summary(&h2)
    );
    // §6.7: a PING is answered with ACK and the same eight octets; a PING with ACK is not.
    h2.frame(PING, ACK, 0, b"not-mine").await;
    h2.frame(PING, 0, 0, b"h2spec!!").await;
    assert!(
        h2.until(|f| f.kind == PING && f.flags & ACK != 0).await,
        "{}",
        seen_summary(&h2)
    );
    let pongs: Vec<&Frame> = h2.seen.iter().filter(|f| f.kind == PING).collect();
    assert_eq!(pongs.len(), 1, "{}", seen_summary(&h2));
    assert_eq!(pongs[0].payload, b"h2spec!!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_one_octet_is_sent_one_octet_at_a_time() {
    // §6.9.2: SETTINGS_INITIAL_WINDOW_SIZE applies to the answer's stream; the answer waits
    // for WINDOW_UPDATE beyond it.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let mut h2 = RawH2::connect(caller.upstream("svc")).await;
    h2.frame(SETTINGS, 0, 0, &setting(0x4, 1)).await;
    h2.write(&get_frame(1)).await;
    assert!(
        h2.until(|f| f.kind == DATA && f.stream == 1).await,
        "{}",
        seen_summary(&h2)
    );
    let first = h2
        .seen
        .iter()
        .find(|f| f.kind == DATA && f.stream == 1)
        .map(|f| (f.payload.len(), f.flags & END_STREAM))
        .expect("a DATA frame");
    assert_eq!(first.0, 1, "{}", seen_summary(&h2));
    h2.frame(WINDOW_UPDATE, 0, 1, &100_000u32.to_be_bytes())
        .await;
    assert!(
        h2.until(|f| f.stream == 1 && f.flags & END_STREAM != 0)
            .await,
        "{}",
        seen_summary(&h2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_break_the_connection_draw_goaway_with_their_error() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let priority = |stream: u32, depends_on: u32, length: usize| {
        let mut payload = depends_on.to_be_bytes().to_vec();
        payload.push(15);
        payload.truncate(length);
        frame_bytes(PRIORITY, 0, stream, &payload)
    };
    let get_block = block(&request("GET", "/"));
    let cases = vec![
        (
            "DATA on stream 0 (§6.1)",
            vec![frame_bytes(DATA, 0, 0, b"data")],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "DATA on an idle stream (§5.1)",
            vec![frame_bytes(DATA, 0, 1, b"data")],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "DATA whose padding is as long as it (§6.1)",
            vec![
                open_post_frame(1),
                frame_bytes(DATA, PADDED, 1, &[5, 1, 2, 3, 4]),
            ],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "HEADERS on stream 0 (§6.2)",
            vec![frame_bytes(
                HEADERS,
                END_HEADERS | END_STREAM,
                0,
                &get_block,
            )],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "HEADERS on an even stream (§5.1.1)",
            vec![get_frame(2)],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "HEADERS on a stream lower than one opened (§5.1.1)",
            vec![get_frame(5), get_frame(3)],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "HEADERS whose padding is longer than it (§6.2)",
            vec![frame_bytes(
                HEADERS,
                END_HEADERS | END_STREAM | PADDED,
                1,
                &{
                    let mut payload = vec![200u8];
                    payload.extend(&get_block);
                    payload
                },
            )],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "PRIORITY on stream 0 (§6.3)",
            vec![priority(0, 1, 5)],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "RST_STREAM on stream 0 (§6.4)",
            vec![frame_bytes(RST_STREAM, 0, 0, &CANCEL.to_be_bytes())],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "RST_STREAM on an idle stream (§6.4)",
            vec![frame_bytes(RST_STREAM, 0, 1, &CANCEL.to_be_bytes())],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "RST_STREAM of three octets (§6.4)",
            vec![
                open_post_frame(1),
                frame_bytes(RST_STREAM, 0, 1, &[0, 0, 8]),
            ],
            Expect::GoAway(FRAME_SIZE_ERROR),
        ),
        (
            "SETTINGS on a stream (§6.5)",
            vec![frame_bytes(SETTINGS, 0, 1, &setting(0x3, 100))],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "SETTINGS of three octets (§6.5)",
            vec![frame_bytes(SETTINGS, 0, 0, &[0, 3, 0])],
            Expect::GoAway(FRAME_SIZE_ERROR),
        ),
        (
            "SETTINGS with ACK and a payload (§6.5)",
            vec![frame_bytes(SETTINGS, ACK, 0, &setting(0x3, 100))],
            Expect::GoAway(FRAME_SIZE_ERROR),
        ),
        (
            "SETTINGS_ENABLE_PUSH of 2 (§6.5.2)",
            vec![frame_bytes(SETTINGS, 0, 0, &setting(0x2, 2))],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 (§6.5.2)",
            vec![frame_bytes(SETTINGS, 0, 0, &setting(0x4, 1 << 31))],
            Expect::GoAway(FLOW_CONTROL_ERROR),
        ),
        (
            "SETTINGS_MAX_FRAME_SIZE below 16,384 (§6.5.2)",
            vec![frame_bytes(SETTINGS, 0, 0, &setting(0x5, 16_383))],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "SETTINGS_MAX_FRAME_SIZE above 2^24-1 (§6.5.2)",
            vec![frame_bytes(SETTINGS, 0, 0, &setting(0x5, 1 << 24))],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "PING on a stream (§6.7)",
            vec![frame_bytes(PING, 0, 1, b"h2spec\0\0")],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "PING of seven octets (§6.7)",
            vec![frame_bytes(PING, 0, 0, b"h2spec\0")],
            Expect::GoAway(FRAME_SIZE_ERROR),
        ),
        (
            "GOAWAY on a stream (§6.8)",
            vec![frame_bytes(GOAWAY, 0, 1, &[0; 8])],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "WINDOW_UPDATE of 0 on the connection (§6.9)",
            vec![frame_bytes(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes())],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "WINDOW_UPDATE of three octets (§6.9)",
            vec![frame_bytes(WINDOW_UPDATE, 0, 0, &[0, 0, 1])],
            Expect::GoAway(FRAME_SIZE_ERROR),
        ),
        (
            "CONTINUATION without HEADERS (§6.10)",
            vec![frame_bytes(CONTINUATION, END_HEADERS, 1, &get_block)],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "DATA inside a header block (§6.10)",
            vec![
                frame_bytes(HEADERS, 0, 1, &get_block),
                frame_bytes(DATA, 0, 1, b"data"),
            ],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "CONTINUATION on another stream (§6.10)",
            vec![
                frame_bytes(HEADERS, 0, 1, &get_block),
                frame_bytes(CONTINUATION, END_HEADERS, 3, &[]),
            ],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "an unknown frame inside a header block (§5.5)",
            vec![
                frame_bytes(HEADERS, 0, 1, &get_block),
                frame_bytes(0xfa, 0, 1, b"unknown"),
            ],
            Expect::GoAway(PROTOCOL_ERROR),
        ),
        (
            "HPACK index 0 (RFC 7541 §6.1)",
            vec![frame_bytes(HEADERS, END_HEADERS | END_STREAM, 1, &[0x80])],
            Expect::GoAway(COMPRESSION_ERROR),
        ),
        (
            "an HPACK table size update after a field (RFC 7541 §4.2)",
            vec![frame_bytes(HEADERS, END_HEADERS | END_STREAM, 1, &{
                let mut payload = get_block.clone();
                payload.push(0x20);
                payload
            })],
            Expect::GoAway(COMPRESSION_ERROR),
        ),
    ];
    probe_all(caller.upstream("svc"), cases).await;
    assert_eq!(
        backend.requests(),
        0,
        "a broken connection's request went on"
    );
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_break_one_stream_draw_its_error() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let slow_get = frame_bytes(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&request("GET", "/?delay_ms=2000")),
    );
    let trailers = frame_bytes(HEADERS, END_HEADERS, 1, &block(&[("x-sum", "1")]));
    let cases = vec![
        (
            "PRIORITY that depends on its own stream (§5.3.1)",
            vec![
                open_post_frame(1),
                frame_bytes(PRIORITY, 0, 1, &[0, 0, 0, 1, 15]),
            ],
            Expect::StreamError(1, PROTOCOL_ERROR),
        ),
        (
            "PRIORITY of four octets (§6.3)",
            vec![
                open_post_frame(1),
                frame_bytes(PRIORITY, 0, 1, &[0, 0, 0, 0]),
            ],
            Expect::StreamError(1, FRAME_SIZE_ERROR),
        ),
        (
            "WINDOW_UPDATE of 0 on a stream (§6.9)",
            vec![
                open_post_frame(1),
                frame_bytes(WINDOW_UPDATE, 0, 1, &0u32.to_be_bytes()),
            ],
            Expect::StreamError(1, PROTOCOL_ERROR),
        ),
        (
            "DATA after the request's END_STREAM (§5.1, half-closed)",
            vec![slow_get.clone(), frame_bytes(DATA, 0, 1, b"late")],
            Expect::StreamError(1, STREAM_CLOSED),
        ),
        (
            "HEADERS after the request's END_STREAM (§5.1, half-closed)",
            vec![slow_get, trailers.clone()],
            Expect::StreamError(1, STREAM_CLOSED),
        ),
        (
            "trailers without END_STREAM (§8.1)",
            vec![
                open_post_frame(1),
                frame_bytes(DATA, 0, 1, b"body"),
                trailers,
            ],
            Expect::StreamError(1, PROTOCOL_ERROR),
        ),
        (
            "DATA beyond SETTINGS_MAX_FRAME_SIZE (§4.2)",
            vec![open_post_frame(1), frame_bytes(DATA, 0, 1, &[b'x'; 16_385])],
            Expect::StreamError(1, FRAME_SIZE_ERROR),
        ),
    ];
    probe_all(caller.upstream("svc"), cases).await;
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_http2_connect_is_an_ordinary_answer_not_a_failed_tunnel() {
    // A CONNECT to a service nobody declared gets its error answer; the client, which sent no
    // END_STREAM (a tunnel's client would send bytes next), is then told it may stop with
    // NO_ERROR (§8.1), not CONNECT_ERROR: no tunnel was opened to fail.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let proxy = caller.http_proxy.expect("a proxy port");
    let mut h2 = RawH2::connect(proxy).await;
    let fields = [(":method", "CONNECT"), (":authority", "nosuch.mesh:443")];
    h2.frame(HEADERS, END_HEADERS, 1, &block(&fields)).await;
    let outcome = h2.outcome(1).await;
    assert!(
        matches!(outcome, Outcome::Status(status) if status >= 400),
        "{outcome:?}: {}",
        seen_summary(&h2)
    );
    assert!(
        h2.until(|f| f.kind == RST_STREAM && f.stream == 1).await,
        "{}",
        seen_summary(&h2)
    );
    let reset = h2
        .seen
        .iter()
        .find(|f| f.kind == RST_STREAM && f.stream == 1)
        .map(|f| u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]));
    assert_eq!(reset, Some(0), "{}", seen_summary(&h2));
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 on an upstream port and the HTTP proxy port.

/// Writes `raw` and reads until the agent closes the connection or the deadline passes.
async fn raw_http1(address: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(raw).await.expect("write the request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_smuggling_shapes_and_malformed_heads_get_a_400_and_reach_no_instance() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let entry = caller.upstream("svc");
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: svc\r\n\r\n", "a".repeat(100_000));
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: svc\r\n{}\r\n",
        (0..200)
            .map(|n| format!("x-{n}: v\r\n"))
            .collect::<String>()
    );
    // Past the default `maxHeaderBytes` (64 KiB), in one write: read whole, it must still be
    // refused, as one that arrives in pieces is.
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: svc\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "v".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "two different Content-Length",
            b"POST /echo HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        ),
        (
            "Content-Length: 3, 5",
            b"POST /echo HTTP/1.1\r\nHost: svc\r\nContent-Length: 3, 5\r\n\r\nhello".to_vec(),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            b"POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "Transfer-Encoding: identity",
            b"POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        ),
        (
            "Transfer-Encoding with obs-fold",
            b"POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "Transfer-Encoding with a space before the colon",
            b"POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "a NUL in a header value",
            b"GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\0b\r\n\r\n".to_vec(),
        ),
        (
            "a bare CR in a header value",
            b"GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\rb\r\n\r\n".to_vec(),
        ),
        ("an over-long request line", long_target.into_bytes()),
        ("too many headers", many_headers.into_bytes()),
        (
            "Content-Length with a sign",
            b"POST /echo HTTP/1.1\r\nHost: svc\r\nContent-Length: +5\r\n\r\nhello".to_vec(),
        ),
        (
            "a negative Content-Length",
            b"POST /echo HTTP/1.1\r\nHost: svc\r\nContent-Length: -1\r\n\r\nhello".to_vec(),
        ),
        (
            "Transfer-Encoding: xchunked",
            b"POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "a header name with a trailing tab",
            b"GET / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "a Host that is no authority",
            b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "HTTP/1.1 with a version it is not",
            b"GET / HTTP/1.2\r\nHost: svc\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "the target * for GET",
            b"GET * HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec()),
        ("a header past maxHeaderBytes in one write", big_header.into_bytes()),
        (
            "a Host with userinfo",
            b"GET / HTTP/1.1\r\nHost: user@svc\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "a Host whose port is no number",
            b"GET / HTTP/1.1\r\nHost: svc:abc\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "an absolute target with userinfo",
            b"GET http://user:pw@svc/ HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n"
                .to_vec(),
        ),
        (
            "the authority form for GET",
            b"GET svc:80 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n".to_vec(),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, raw) in cases {
        let before = backend.requests();
        let answer = raw_http1(entry, &raw).await;
        let forwarded = backend.requests() - before;
        let status = answer.get(9..12).unwrap_or_default();
        if !status.starts_with('4') || forwarded > 0 {
            let line = answer.lines().next().unwrap_or_default();
            wrong.push(format!("{name}: {line:?}, {forwarded} forwarded"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_dribbled_a_byte_at_a_time_is_cut_off_at_the_header_read_timeout() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "headerReadTimeout: 500ms");
    // A usual method, and one protocol detection once took for opaque TCP (then carried to the
    // instance, past the timeout).
    let starts: [&[u8]; 2] = [
        b"GET / HTTP/1.1\r\nHost: svc\r\nX-Slow: ",
        b"PROPFIND / HTTP/1.1\r\nHost: svc\r\nX-Slow: ",
    ];
    for start in starts {
        let mut stream = TcpStream::connect(caller.upstream("svc"))
            .await
            .expect("connect");
        let started = tokio::time::Instant::now();
        let head = start.iter().chain(std::iter::repeat(&b'a'));
        // At most one byte per 50 ms for the deadline: the timeout must end it long before.
        let mut cut = false;
        for byte in head.take((DEADLINE.as_millis() / 50) as usize) {
            if stream.write_all(&[*byte]).await.is_err() {
                cut = true;
                break;
            }
            let mut probe = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    cut = true;
                    break;
                }
                Ok(Ok(_)) => {
                    cut = true; // an answer (408) counts as being cut off too
                    break;
                }
                Err(_) => {}
            }
        }
        let start = String::from_utf8_lossy(start);
        assert!(
            cut,
            "{start:?}: a dribbled head was read for {:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{start:?}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(backend.requests(), 0);
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_http1_connection_is_closed() {
    // A client that connects and sends nothing (after detection it is taken for TCP on an
    // upstream port; on the proxy port for HTTP/1.1) must not hold its connection forever.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "headerReadTimeout: 500ms");
    let proxy = caller.http_proxy.expect("a proxy port");
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream
        .write_all(b"GET http://svc/ HTTP/1.1\r\nHost: svc\r\n\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle keep-alive connection was kept");
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_absolute_form_is_routed_and_delivered_by_its_target_never_by_host() {
    // RFC 9112 §3.2.2: with an absolute-form target the Host header is ignored and replaced by
    // the target's authority, so the instance sees the host the agent routed by.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let proxy = caller.http_proxy.expect("a proxy port");
    let answer = raw_http1(
        proxy,
        b"GET http://svc/ HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-seen-host: svc\r\n"), "{answer}");
    // Absolute form to a host outside the mesh: not a service, not an open proxy.
    let answer = raw_http1(
        proxy,
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(backend.requests(), 1);
    // HTTP/1.0 without Host on the proxy port names no service.
    let answer = raw_http1(proxy, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.") && answer[9..].starts_with('4'),
        "{answer}"
    );
    // Host names are case-insensitive (RFC 9110 §4.2.3): `SVC` names `svc`.
    let answer = raw_http1(
        proxy,
        b"GET / HTTP/1.1\r\nHost: SVC\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_the_inbound_port_do_not_shut_the_local_ports() {
    // The inbound port faces the network; the local ports once shared its budget, so silent
    // connections from elsewhere (held until `headerReadTimeout`) shut them.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(
        &backend,
        "maxConnections: 20, maxInboundConnections: 40, maxInboundConnectionsPerSource: 30",
    );
    let mut idle = Vec::new();
    for _ in 0..35 {
        idle.push(TcpStream::connect(caller.inbound).await.expect("connect"));
    }
    // Five beyond the per-source cap are closed at once.
    caller
        .metric_reaches(
            "hyphae_connections_refused_total",
            "listener=\"inbound\"",
            5.0,
        )
        .await;
    // The local ports and the admin port still answer, over 20 connections' worth of calls.
    for _ in 0..3 {
        still_serves(&caller).await;
    }
    let ready = hyphae_integration::http::request("GET", caller.admin, "/ready", "")
        .await
        .expect("the admin port answers");
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.text());
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_on_an_upstream_port_is_refused_and_what_follows_is_not_read_as_a_request() {
    // The bytes after a CONNECT are the tunnel's: a proxy that refuses it and reads on would
    // take them for a request of their own (here, one that reaches the instance).
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let answer = raw_http1(
        caller.upstream("svc"),
        b"CONNECT svc:80 HTTP/1.1\r\nHost: svc:80\r\n\r\nGET / HTTP/1.1\r\nHost: svc\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert_eq!(backend.requests(), 0);
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_a_transfer_coding_besides_chunked_gets_501_and_reaches_no_instance() {
    // RFC 9112 §6.1; hyper reads the chunks of `gzip, chunked`, and the instance would get the
    // gzip bytes without the (hop-by-hop) header that names them.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let entry = caller.upstream("svc");
    for (name, raw) in [
        (
            "gzip, chunked",
            &b"POST /echo HTTP/1.1\r\nHost: svc\r\nConnection: close\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nraw\r\n0\r\n\r\n"[..],
        ),
        (
            "gzip and chunked on two lines",
            b"POST /echo HTTP/1.1\r\nHost: svc\r\nConnection: close\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nraw\r\n0\r\n\r\n",
        ),
    ] {
        let answer = raw_http1(entry, raw).await;
        assert!(answer.starts_with("HTTP/1.1 501"), "{name}: {answer}");
    }
    assert_eq!(backend.requests(), 0);
    // Chunked alone, in any case, is carried.
    let answer = raw_http1(
        entry,
        b"POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n3\r\nraw\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("raw"),
        "{answer}"
    );
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_trailers_hold_hop_by_hop_fields_still_crosses_the_mesh() {
    // HTTP/2 forbids connection-specific fields (RFC 9113 §8.2.2); the tunnel would refuse the
    // trailer section and the body would never end.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let answer = raw_http1(
        caller.upstream("svc"),
        b"POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nraw\r\n0\r\nX-Sum: 1\r\nKeep-Alive: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("raw"),
        "{answer}"
    );
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_the_mesh_does_not_take_is_served_as_an_ordinary_request() {
    // What `curl --http2 http://...` sends. The agent does not speak h2c to instances; like
    // Envoy and nginx it forwards the request without the upgrade (RFC 9110 §7.8).
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let answer = raw_http1(
        caller.upstream("svc"),
        b"GET / HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\nb"),
        "the backend's own answer: {answer}"
    );
    assert_eq!(backend.requests(), 1);
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_with_a_query_and_no_path_reaches_the_instance_as_slash_query() {
    // RFC 9112 §3.2.1: `http://svc?status=201` is sent on in origin form as `/?status=201`;
    // the URI holds `?status=201`, which an instance cannot read as a target.
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let proxy = caller.http_proxy.expect("a proxy port");
    let answer = raw_http1(
        proxy,
        b"GET http://svc?status=201 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_to_a_refused_request_gets_the_refusal_without_100() {
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let proxy = caller.http_proxy.expect("a proxy port");
    // The service is unknown: the agent answers 404 and must not invite the body first.
    let answer = raw_http1(
        proxy,
        b"POST http://nowhere/ HTTP/1.1\r\nHost: nowhere\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

// ---------------------------------------------------------------------------------------------
// The admin port.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_refuses_changes_and_does_not_read_a_huge_body() {
    let backend = TestBackend::start("b").await;
    let (_host, mut caller) = mesh(&backend, "");
    let before = resident_kib(&mut caller);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let raw = format!(
            "{method} /config HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let answer = raw_http1(caller.admin, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{method}: {answer}");
    }
    // A body that claims a gigabyte, of which 8 MiB are sent as curl sends them (the whole
    // upload first, a failed write ending the attempt): answered and closed, not read, and
    // the answer read rather than lost to a reset (lingering close).
    let mut stream = TcpStream::connect(caller.admin).await.expect("connect");
    stream
        .write_all(b"POST /config HTTP/1.1\r\nHost: a\r\nContent-Length: 1073741824\r\n\r\n")
        .await
        .expect("write");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..128 {
        match tokio::time::timeout(Duration::from_secs(2), stream.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("the upload was reset: {error}"),
            Err(_) => break,
        }
    }
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the agent waited for the rest of the body");
    assert!(
        answer.starts_with(b"HTTP/1.1 405"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(resident_kib(&mut caller) < before + FLOOD_MEMORY_KIB);
    assert_eq!(
        get(&http1_client(), &format!("http://{}/live", caller.admin))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_coming_ends_in_408_within_the_stream_idle_timeout() {
    // A slow-body client: its head promises 100 bytes, 10 come, then nothing, while it
    // answers everything else (on HTTP/2 it would answer PINGs).
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "streamIdleTimeout: 1s");
    let mut stream = TcpStream::connect(caller.upstream("svc"))
        .await
        .expect("connect");
    let started = tokio::time::Instant::now();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: svc\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
    assert!(ended.is_ok(), "a stalled body held its connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("hyphae-error: caller-idle"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "before the timeout"
    );
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_0_caller_that_asks_for_keep_alive_keeps_its_connection_across_the_mesh() {
    // ApacheBench's `-k`: HTTP/1.0 with `Connection: keep-alive`. Without `Connection:
    // keep-alive` in the answer an HTTP/1.0 client must take the connection as closing and
    // waits for the close, which an answer that crossed the tunnel only got at the idle
    // timeout (10 s per request).
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "");
    let mut stream = TcpStream::connect(caller.upstream("svc"))
        .await
        .expect("connect");
    for round in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: svc\r\nConnection: keep-alive\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        let whole = tokio::time::timeout(DEADLINE, async {
            // The backend answers `b` with a length: the head, then that one byte.
            while !answer.ends_with(b"\r\n\r\nb") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buffer[..n]),
                }
            }
        })
        .await;
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(whole.is_ok(), "round {round}: no whole answer: {text}");
        assert!(text.starts_with("http/1.0 200"), "round {round}: {text}");
        assert!(
            text.contains("\r\nconnection: keep-alive\r\n"),
            "round {round}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_still_coming_at_the_request_timeout_is_the_callers_408_not_a_504() {
    // A trickling client: a byte every 100 ms, never idle for the stream idle timeout, still
    // sending when the request timeout runs out. Envoy answers such a request 408; a 504
    // blamed the instance, which was only waiting for the body.
    let backend = TestBackend::start("b").await;
    let host = host_agent(AGENT, "host", "svc", &backend);
    let policy =
        "---\nkind: ServicePolicy\nmetadata: {name: svc}\nspec:\n  timeouts: {request: 1s}\n";
    let config = caller_config("svc", &[endpoint(&host, "one")], upstream_port(), policy);
    let caller = Agent::start_yaml(Path::new(AGENT), "caller", &config).expect("start caller");
    let mut stream = TcpStream::connect(caller.upstream("svc"))
        .await
        .expect("connect");
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: svc\r\nContent-Length: 100\r\n\r\n")
        .await
        .expect("write");
    let (mut reader, mut writer) = stream.into_split();
    // At most 100 bytes at 10 a second: the request timeout (1 s) runs out long before.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buffer = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    trickle.abort();
    assert!(read.is_ok(), "no answer while the upload trickled");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("hyphae-error: caller-too-slow"), "{answer}");

    // The same timeout with the whole body sent and the instance slow to answer is the
    // instance's: 504.
    let slow = get(
        &http1_client(),
        &format!("http://{}/?delay_ms=3000", caller.upstream("svc")),
    )
    .await;
    assert_eq!(slow.status, 504);
    assert_eq!(slow.header("hyphae-error"), Some("request-timeout"));
    still_serves(&caller).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_answer_is_closed_after_the_stream_idle_timeout() {
    // A slow-read client: it asks for 32 MiB with a small receive buffer and reads nothing,
    // which held its connection, the call and the instance's connection for good.
    const ANSWER: usize = 32 * 1024 * 1024;
    let backend = TestBackend::start("b").await;
    let (_host, caller) = mesh(&backend, "streamIdleTimeout: 1s, lingeringCloseTimeout: 1s");
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    let mut stream = socket
        .connect(caller.upstream("svc"))
        .await
        .expect("connect");
    stream
        .write_all(format!("GET /bytes/{ANSWER} HTTP/1.1\r\nHost: svc\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let open = |count: f64| {
        let caller = &caller;
        move || async move {
            caller
                .metric("hyphae_connections_open", "listener=\"upstream\"")
                .await
                == count
        }
    };
    hyphae_integration::eventually("the client's connection to be open", open(1.0)).await;
    hyphae_integration::eventually("the agent to give the stalled client up", open(0.0)).await;
    // What the agent had sent before it gave up is there to read, and then the end.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut got)).await;
    assert!(got.starts_with(b"HTTP/1.1 200"), "{} bytes", got.len());
    assert!(
        got.len() < ANSWER,
        "the whole answer went: the client was waited for"
    );
    still_serves(&caller).await;
}
