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
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buffer = [0u8; SNIFF_BYTES];
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buffer)).await;
        let n = match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Detected::Tcp,
            Ok(Ok(n)) => n,
        };
        if let Some(detected) = classify(&buffer[..n]) {
            return detected;
        }
        // Fewer bytes than needed so far: wait a moment for more.
        if tokio::time::Instant::now() >= deadline {
            return Detected::Tcp;
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
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buffer = [0u8; HTTP2_PREFACE.len()];
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buffer)).await;
        match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) if n == HTTP2_PREFACE.len() => return true,
            Ok(Ok(_)) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(PEEK_RETRY).await;
    }
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
