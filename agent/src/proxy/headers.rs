//! Header rules at hop boundaries: what must not cross a hop, and the header that carries the
//! destination service between agents.

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName};

/// Carries the destination service (`name` or `name:port`) from the calling agent to the peer.
pub const DESTINATION: &str = "hyphae-destination";

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the non-standard ones proxies also drop.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Removes hop-by-hop headers, including those named in `Connection`. `te: trailers` is kept:
/// gRPC needs it end to end and HTTP/2 allows it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let keeps_trailers = headers
        .get("te")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if keeps_trailers {
        headers.insert("te", http::HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_connection_tokens_go_te_trailers_stays() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-private".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-private", "secret".parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        headers.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        let names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["x-kept"], "yes");
    }
}
