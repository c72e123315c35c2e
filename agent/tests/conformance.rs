//! Conformance: real clients (curl over HTTP/1.1 and over HTTP/2 with prior knowledge, nghttp,
//! h2load, grpcio, websockets, plain TCP) against real, strict servers that are not hyper
//! (hypercorn, h11, grpcio, websockets), through one agent and through the mesh path. Every
//! check runs the same client against the server directly first and expects what it saw there.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hyphae_integration::mesh::{MeshPath, both_paths};
use hyphae_integration::python::python_server;
use hyphae_integration::{DEADLINE, Process};

const AGENT: &str = env!("CARGO_BIN_EXE_hyphae-agent");

/// Both ways curl speaks to a server: HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
const CURL_MODES: [&str; 2] = ["--http1.1", "--http2-prior-knowledge"];

/// Both protocols a service on hypercorn is declared with: the agent speaks HTTP/1.1 or h2c
/// to the instance.
const PROTOCOLS: [&str; 2] = ["http", "http2"];

/// Headers that name the connection or the moment, not the answer: left out of comparisons.
/// `x-http-version` says which protocol reached the instance, which is the service's, not the
/// client's, behind an agent.
const VARYING: [&str; 5] = [
    "date",
    "server",
    "x-client-port",
    "x-seen-host",
    "x-http-version",
];

fn strict(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/strict")
        .join(name)
}

/// hypercorn serving `app.py` with `args`.
fn hypercorn(args: &[&str]) -> (Process, u16) {
    python_server(&strict("app.py"), args)
}

fn direct(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What a client saw of one exchange, in a form two exchanges can be compared by.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// The client's exit code (0: it saw the whole exchange).
    exit: i32,
    /// Statuses of the interim (1xx) answers, in order.
    interim: Vec<u16>,
    /// The final status.
    status: u16,
    /// The final answer's headers but the [`VARYING`] ones, names in lower case.
    headers: BTreeMap<String, String>,
    /// Trailers after the body.
    trailers: BTreeMap<String, String>,
    /// The body's length, a hash of it and its first bytes (for failure messages).
    body: (usize, u64, String),
}

/// What identifies `bytes` in a [`Seen`]: length, hash, the first 60 bytes as text.
fn body_gist(bytes: &[u8]) -> (usize, u64, String) {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    let head = &bytes[..bytes.len().min(60)];
    (
        bytes.len(),
        hasher.finish(),
        String::from_utf8_lossy(head).into_owned(),
    )
}

/// Reads curl's header dump (`-D`): interim answers, then the final one, then trailers.
fn parse_dump(
    dump: &str,
) -> (
    Vec<u16>,
    u16,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
) {
    let (mut interim, mut status) = (Vec::new(), 0);
    let (mut headers, mut trailers) = (BTreeMap::new(), BTreeMap::new());
    // Whether the final answer's head has ended: header lines after it are trailers.
    let mut head_done = false;
    for line in dump.split("\r\n").flat_map(|l| l.split('\n')) {
        if let Some(rest) = line.strip_prefix("HTTP/") {
            let code = rest
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if (100..200).contains(&code) {
                interim.push(code);
            } else {
                status = code;
                headers.clear();
            }
            head_done = false;
        } else if line.is_empty() {
            head_done = status != 0;
        } else if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            if head_done {
                trailers.insert(name, value);
            } else if status != 0 && !VARYING.contains(&name.as_str()) {
                headers.insert(name, value);
            }
        }
    }
    (interim, status, headers, trailers)
}

/// Runs `curl mode args... url` and returns what it saw; `stdin` is fed to it when given (a
/// file).
fn curl(mode: &str, args: &[&str], url: &str, stdin: Option<&Path>) -> Seen {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let (dump, body) = (scratch.path().join("head"), scratch.path().join("body"));
    let mut command = Command::new("curl");
    command
        .args(["-sS", mode, "--max-time", "30", "-D"])
        .arg(&dump)
        .arg("-o")
        .arg(&body)
        .args(args)
        .arg(url);
    if let Some(file) = stdin {
        command.stdin(std::fs::File::open(file).expect("the file to send"));
    } else {
        command.stdin(Stdio::null());
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl ({e}): run `cargo xtask test`"));
    let dump = std::fs::read_to_string(&dump).unwrap_or_default();
    let (interim, status, mut headers, trailers) = parse_dump(&dump);
    if args.contains(&"-I") {
        // Framing of a body that is not sent: a server may say how a GET's would be framed
        // (RFC 9112 §6.1), and a proxy frames anew; whether a length is known stays compared.
        headers.remove("transfer-encoding");
    }
    let exit = output.status.code().unwrap_or(-1);
    if exit != 0 {
        eprintln!(
            "curl {mode} {args:?} {url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // With `-I` (HEAD) curl writes the head where the body would go; a HEAD answer has none.
    let body = match args.contains(&"-I") {
        true => Vec::new(),
        false => std::fs::read(&body).unwrap_or_default(),
    };
    Seen {
        exit,
        interim,
        status,
        headers,
        trailers,
        body: body_gist(&body),
    }
}

/// Runs curl in `mode` with `args` on `target` (path and query) of the server directly and
/// through each of `paths` at once, and fails the test where an agent's answer differs from
/// the direct one; returns what the direct call saw.
async fn curl_agrees(
    port: u16,
    paths: &[MeshPath],
    what: &str,
    mode: &str,
    args: &[&str],
    target: &str,
    stdin: Option<&Path>,
) -> Seen {
    let run = |entry: SocketAddr| {
        let (mode, args, stdin) = (
            mode.to_string(),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            stdin.map(Path::to_path_buf),
        );
        let url = format!("http://{entry}{target}");
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&mode, &args, &url, stdin.as_deref())
        })
    };
    let expected = run(direct(port));
    let through: Vec<_> = paths.iter().map(|path| run(path.entry)).collect();
    let expected = expected.await.expect("curl directly");
    assert_eq!(
        expected.exit, 0,
        "{what}, curl {mode} directly: {expected:?}"
    );
    for (path, seen) in paths.iter().zip(through) {
        let seen = seen.await.expect("curl through the mesh");
        assert_eq!(seen, expected, "{what}, curl {mode}, {}", path.name);
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_methods_statuses_head_and_16_kb_headers_as_it_does_directly() {
    let (_server, port) = hypercorn(&[]);
    let big = format!("x-big: {}", "b".repeat(16 * 1024));
    let cases: Vec<(&str, Vec<&str>, String)> = vec![
        ("GET", vec![], "/echo".into()),
        ("POST", vec!["--data-binary", "payload"], "/echo".into()),
        (
            "PUT",
            vec!["-X", "PUT", "--data-binary", "payload"],
            "/echo".into(),
        ),
        (
            "PATCH",
            vec!["-X", "PATCH", "--data-binary", "p"],
            "/echo".into(),
        ),
        ("DELETE", vec!["-X", "DELETE"], "/echo".into()),
        ("OPTIONS", vec!["-X", "OPTIONS"], "/echo".into()),
        ("an extension method", vec!["-X", "PURGE"], "/echo".into()),
        ("HEAD with a length", vec!["-I"], "/echo".into()),
        (
            "HEAD without a length",
            vec!["-I"],
            "/bytes?n=1000&chunked=1".into(),
        ),
        ("HEAD of a 404", vec!["-I"], "/status/404".into()),
        (
            "a chunked answer",
            vec![],
            "/bytes?n=200000&chunked=1".into(),
        ),
        ("a 16 KB request header", vec!["-H", &big], "/echo".into()),
        ("a 16 KB answer header", vec![], "/big-header?16384".into()),
    ];
    let statuses = [
        200, 201, 202, 204, 301, 304, 400, 404, 418, 429, 500, 502, 503,
    ];
    for protocol in PROTOCOLS {
        let paths = both_paths(AGENT, port, protocol, "");
        for mode in CURL_MODES {
            for (what, args, target) in &cases {
                let what = format!("{what} to an {protocol} service");
                curl_agrees(port, &paths, &what, mode, args, target, None).await;
            }
            for status in statuses {
                let what = format!("status {status} from an {protocol} service");
                let seen = curl_agrees(
                    port,
                    &paths,
                    &what,
                    mode,
                    &[],
                    &format!("/status/{status}"),
                    None,
                )
                .await;
                assert_eq!(seen.status, status, "{what} directly");
            }
        }
    }
}

/// A file of `size` bytes that are not all alike, in `dir`.
fn payload_file(dir: &Path, size: usize) -> PathBuf {
    let path = dir.join(format!("payload-{size}"));
    let bytes: Vec<u8> = (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
        .collect();
    std::fs::write(&path, bytes).expect("write the payload");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabytes_go_up_and_down_with_and_without_a_length_as_they_do_directly() {
    const SIZE: usize = 10 * 1024 * 1024;
    let (_server, port) = hypercorn(&[]);
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let file = payload_file(scratch.path(), SIZE);
    let file_arg = format!("@{}", file.display());
    let download = format!("/bytes?n={SIZE}");
    let chunked = format!("/bytes?n={SIZE}&chunked=1");
    // `Expect:` stops curl from asking for a 100 (Expect: 100-continue has a test of its own).
    let cases: [(&str, Vec<&str>, &str, Option<&Path>); 4] = [
        (
            "an upload with a length",
            vec!["-H", "Expect:", "--data-binary", &file_arg],
            "/echo",
            None,
        ),
        (
            "an upload without a length",
            vec!["-H", "Expect:", "-X", "POST", "-T", "-"],
            "/echo",
            Some(&file),
        ),
        ("a download with a length", vec![], &download, None),
        ("a download without a length", vec![], &chunked, None),
    ];
    for protocol in PROTOCOLS {
        let paths = both_paths(AGENT, port, protocol, "");
        for mode in CURL_MODES {
            for (what, args, target, stdin) in &cases {
                let what = format!("{what} to an {protocol} service");
                let seen = curl_agrees(port, &paths, &what, mode, args, target, *stdin).await;
                let moved = match target.starts_with("/echo") {
                    true => seen
                        .headers
                        .get("x-body-length")
                        .and_then(|l| l.parse().ok()),
                    false => Some(seen.body.0),
                };
                assert_eq!(moved, Some(SIZE), "{what} directly: {seen:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_and_the_body_reaches_the_server() {
    let (_server, port) = hypercorn(&[]);
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let file = format!("@{}", payload_file(scratch.path(), 1024 * 1024).display());
    let args = ["-H", "Expect: 100-continue", "--data-binary", &file];
    for protocol in PROTOCOLS {
        let paths = both_paths(AGENT, port, protocol, "");
        for mode in CURL_MODES {
            let what = format!("Expect: 100-continue to an {protocol} service");
            let seen = curl_agrees(port, &paths, &what, mode, &args, "/echo", None).await;
            assert_eq!(
                seen.headers.get("x-expect").map(String::as_str),
                Some("100-continue"),
                "{what}, curl {mode} directly: {seen:?}"
            );
            assert_eq!(
                seen.headers.get("x-body-length").map(String::as_str),
                Some("1048576"),
                "{what}, curl {mode} directly"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_arrive_whole_as_they_do_directly() {
    let (_server, port) = hypercorn(&[]);
    for protocol in PROTOCOLS {
        let paths = both_paths(AGENT, port, protocol, "");
        for mode in CURL_MODES {
            let what = format!("a slow answer from an {protocol} service");
            let seen =
                curl_agrees(port, &paths, &what, mode, &[], "/slow?ms=250&steps=3", None).await;
            assert_eq!(
                seen.body.2, "piece 0\npiece 1\npiece 2\n",
                "{what} directly"
            );
        }
    }
}
