//! Protocol detection on a fresh outbound connection: HTTP/1.1 and HTTP/2 (prior knowledge)
//! are recognised from the first bytes; anything else, or silence, is opaque TCP.

use std::time::Duration;

use tokio::net::TcpStream;

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// HTTP/1.x: served by the HTTP proxy.
    Http1,
    /// HTTP/2 with prior knowledge (the connection preface): served by the HTTP proxy.
    Http2,
    /// Anything else: carried as bytes.
    Tcp,
}

/// Bytes peeked to decide: room for a leading empty line, any method and a target's start.
/// A request line still well formed this far is taken for HTTP/1.1.
const SNIFF_BYTES: usize = 128;
/// Longest method taken for HTTP (registered ones reach 17 letters: `UPDATEREDIRECTREF`).
const MAX_METHOD: usize = 32;

/// Classifies the first bytes a client sent; `None` while they could still be either.
///
/// A usual method (3 to 7 capital letters) and a space decide at once. Any other token
/// (`PROPFIND`, `M-SEARCH`, `MKCALENDAR`, or a lowercase one) is HTTP only when a target and
/// ` HTTP/` follow, so a text protocol's `get key\r\n` stays TCP. One or two empty lines
/// before the request line are skipped, as RFC 9112 §2.2 asks of a server.
pub fn classify(prefix: &[u8]) -> Option<Detected> {
    if prefix.starts_with(b"PRI * HTTP/2.0")
        || b"PRI * HTTP/2.0".starts_with(prefix) && prefix.len() >= 4
    {
        return Some(Detected::Http2);
    }
    let line = skip_empty_lines(prefix)?;
    let method = line.iter().take_while(|&&b| is_tchar(b)).count();
    if method == 0 && !line.is_empty() || method > MAX_METHOD {
        return Some(Detected::Tcp);
    }
    match line.get(method) {
        None => None,
        Some(b' ')
            if (3..=7).contains(&method) && line[..method].iter().all(u8::is_ascii_uppercase) =>
        {
            Some(Detected::Http1)
        }
        Some(b' ') => request_line_rest(&line[method + 1..], prefix.len() >= SNIFF_BYTES),
        Some(_) => Some(Detected::Tcp),
    }
}

/// `prefix` after up to two empty lines (CRLF or LF); `None` when it may still be one.
fn skip_empty_lines(mut prefix: &[u8]) -> Option<&[u8]> {
    for _ in 0..2 {
        if let Some(rest) = prefix
            .strip_prefix(b"\r\n")
            .or_else(|| prefix.strip_prefix(b"\n"))
        {
            prefix = rest;
        } else if prefix == b"\r" {
            return None;
        }
    }
    Some(prefix)
}

/// What a request line's target and version (`/x HTTP/1.1`) say after an unusual method:
/// HTTP once ` HTTP/` follows a target, TCP at the first byte that cannot be one; a target
/// still going when the peek buffer is `full` is taken for HTTP.
fn request_line_rest(rest: &[u8], full: bool) -> Option<Detected> {
    let target = rest.iter().take_while(|b| b.is_ascii_graphic()).count();
    match rest.get(target) {
        None if full => Some(Detected::Http1),
        None => None,
        Some(b' ') if target > 0 => {
            let version = &rest[target + 1..];
            let compared = version.len().min(5);
            if version[..compared] != b"HTTP/"[..compared] {
                Some(Detected::Tcp)
            } else if compared == 5 || full {
                Some(Detected::Http1)
            } else {
                None
            }
        }
        Some(_) => Some(Detected::Tcp),
    }
}

/// A token character (RFC 9110 §5.6.2), of which methods are made.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Peeks at `stream` (without consuming) until the protocol is known, the client stops
/// sending, or `timeout` passes. Silence is TCP (server-first protocols send nothing). A
/// client that stops short is judged by [`stalled`].
pub async fn detect(stream: &TcpStream, timeout: Duration) -> Detected {
    let mut buffer = [0u8; SNIFF_BYTES];
    match peek_until(stream, &mut buffer, timeout, classify).await {
        Ok(detected) => detected,
        Err(seen) => stalled(&buffer[..seen]),
    }
}

/// What a client that stopped short of a decision sent: HTTP/1.1 when it is the start of a
/// usual method (capital letters) or a method and a space, so hyper holds it to
/// `headerReadTimeout` rather than it holding a connection to an instance as TCP; anything
/// else, silence included, TCP (ZooKeeper's `ruok` and `mntr` are sent without a newline).
fn stalled(prefix: &[u8]) -> Detected {
    let line = skip_empty_lines(prefix).unwrap_or_default();
    let method = line.iter().take_while(|&&b| is_tchar(b)).count();
    let capitals = !line.is_empty() && line.iter().all(|b| b.is_ascii_uppercase() || *b == b'-');
    if capitals || (method > 0 && line.get(method) == Some(&b' ')) {
        Detected::Http1
    } else {
        Detected::Tcp
    }
}

/// Peeks at `stream` into `buffer` until `decide` says something of the bytes so far; else the
/// number of bytes seen when the client closed, failed, or stopped short of it for `timeout`.
async fn peek_until<T>(
    stream: &TcpStream,
    buffer: &mut [u8],
    timeout: Duration,
    decide: impl Fn(&[u8]) -> Option<T>,
) -> Result<T, usize> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = 0;
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(buffer)).await;
        let n = match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(seen),
            Ok(Ok(n)) => n,
        };
        seen = n;
        if let Some(decided) = decide(&buffer[..n]) {
            return Ok(decided);
        }
        // Fewer bytes than needed so far: wait a moment for more.
        if tokio::time::Instant::now() >= deadline {
            return Err(seen);
        }
        tokio::time::sleep(PEEK_RETRY).await;
    }
}

/// Pause between peeks while a client trickles its first bytes.
const PEEK_RETRY: Duration = Duration::from_millis(5);

/// The HTTP/2 connection preface (RFC 9113 §3.4), which hyper's server waits for without a
/// deadline of its own.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks at `stream` until the whole HTTP/2 preface has arrived: false when the client stops
/// short of it or takes longer than `timeout`, so a client that sends its first bytes and
/// nothing more cannot hold a connection (one of `limits.maxConnections`) for ever.
pub async fn http2_preface(stream: &TcpStream, timeout: Duration) -> bool {
    let mut buffer = [0u8; HTTP2_PREFACE.len()];
    let whole = |peeked: &[u8]| (peeked.len() == HTTP2_PREFACE.len()).then_some(());
    peek_until(stream, &mut buffer, timeout, whole)
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_the_h2_preface_are_http_everything_else_tcp() {
        assert_eq!(classify(b"GET / HT"), Some(Detected::Http1));
        assert_eq!(classify(b"OPTIONS "), Some(Detected::Http1));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Some(Detected::Http2));
        assert_eq!(classify(b"PRI "), Some(Detected::Http2));
        assert_eq!(classify(b"\x16\x03\x01\x02"), Some(Detected::Tcp));
        assert_eq!(classify(b"hello world\n"), Some(Detected::Tcp));
        assert_eq!(classify(b"hello wo"), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"ABCDEFGHIJ"), None);
        assert_eq!(classify(&[b'A'; 40]), Some(Detected::Tcp));
    }

    #[test]
    fn any_method_token_followed_by_a_target_and_http_is_http() {
        for line in [
            &b"PROPFIND /dav HTTP/1.1\r\n"[..],
            b"M-SEARCH * HTTP/1.1\r\n",
            b"MKCALENDAR /c HTTP/1.1",
            b"UPDATEREDIRECTREF /x HTTP/1.1",
            b"get / HTTP/1.1\r\n",
            b"\r\nGET /x HTTP/1.1\r\n",
            b"\n\r\nPUT /x HTTP/1.1\r\n",
        ] {
            assert_eq!(classify(line), Some(Detected::Http1), "{line:?}");
        }
        // Still undecided: the version has not come yet.
        assert_eq!(classify(b"PROPFIND /dav"), None);
        assert_eq!(classify(b"PROPFIND /dav HT"), None);
        assert_eq!(classify(b"\r"), None);
        // A target that runs past the peek buffer is taken for one.
        let long = [&b"PROPFIND /"[..], &[b'a'; SNIFF_BYTES]].concat();
        assert_eq!(classify(&long[..SNIFF_BYTES]), Some(Detected::Http1));
    }

    #[test]
    fn a_client_that_stops_short_is_http_only_when_it_began_like_it() {
        for start in [
            &b"G"[..],
            b"PROPF",
            b"M-SEA",
            b"get ",
            b"PROPFIND /dav",
            b"\r\nPO",
        ] {
            assert_eq!(stalled(start), Detected::Http1, "{start:?}");
        }
        for start in [&b""[..], b"ruok", b"mntr", b"hello", b"\r", b"Get"] {
            assert_eq!(stalled(start), Detected::Tcp, "{start:?}");
        }
        // A version that straddles the end of the peek buffer is not waited for.
        let line = [&b"PROPFIND /"[..], &[b'a'; SNIFF_BYTES - 15], b" HTTP/1.1"].concat();
        assert_eq!(classify(&line[..SNIFF_BYTES]), Some(Detected::Http1));
    }

    #[test]
    fn text_protocols_with_other_shapes_stay_tcp() {
        for start in [
            &b"get key\r\n"[..],
            b"set k 0 0 5\r\n",
            b"PING\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"PROPFIND /dav FTP/1.0",
            b"\r\n\r\n\r\nGET / HTTP/1.1",
            b"G\tT / HTTP/1.1",
        ] {
            assert_eq!(classify(start), Some(Detected::Tcp), "{start:?}");
        }
    }
}
