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

/// Bytes needed to decide: the longest method token plus a space.
const SNIFF_BYTES: usize = 8;

/// Classifies the first bytes a client sent.
pub fn classify(prefix: &[u8]) -> Option<Detected> {
    if prefix.starts_with(b"PRI * HTTP/2.0")
        || b"PRI * HTTP/2.0".starts_with(prefix) && prefix.len() >= 4
    {
        return Some(Detected::Http2);
    }
    let token_len = prefix.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match prefix.get(token_len) {
        Some(b' ') if (3..=7).contains(&token_len) => Some(Detected::Http1),
        Some(_) => Some(Detected::Tcp),
        None if prefix.len() >= SNIFF_BYTES => Some(Detected::Tcp),
        None => None,
    }
}

/// Peeks at `stream` (without consuming) until the protocol is known, the client stops
/// sending, or `timeout` passes (server-first protocols send nothing: that is TCP).
pub async fn detect(stream: &TcpStream, timeout: Duration) -> Detected {
    let mut buffer = [0u8; SNIFF_BYTES];
    peek_until(stream, &mut buffer, timeout, classify)
        .await
        .unwrap_or(Detected::Tcp)
}

/// Peeks at `stream` into `buffer` until `decide` says something of the bytes so far; `None`
/// when the client closes, fails, or stops short of it for `timeout`.
async fn peek_until<T>(
    stream: &TcpStream,
    buffer: &mut [u8],
    timeout: Duration,
    decide: impl Fn(&[u8]) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(buffer)).await;
        let n = match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => n,
        };
        if let Some(decided) = decide(&buffer[..n]) {
            return Some(decided);
        }
        // Fewer bytes than needed so far: wait a moment for more.
        if tokio::time::Instant::now() >= deadline {
            return None;
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
        .is_some()
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
        assert_eq!(classify(b"hello wo"), Some(Detected::Tcp));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"ABCDEFGHIJ"), Some(Detected::Tcp));
    }
}
