//! Header rules at hop boundaries: what must not cross a hop, the header that carries the
//! destination service between agents, and where a request's authority and path are read from.

use http::header::{
    CONNECTION, Entry, HOST, HeaderName, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRANSFER_ENCODING, UPGRADE,
};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method};
use smallvec::SmallVec;

use crate::error::{Cause, ProxyError};

/// Carries the destination service (`name` or `name:port`) from the calling agent to the peer.
pub const DESTINATION: HeaderName = HeaderName::from_static("hyphae-destination");

/// Between agents: the protocol a CONNECT stream upgrades to at the instance (`websocket`);
/// absent for TCP.
pub const UPGRADE_PROTOCOL: HeaderName = HeaderName::from_static("hyphae-upgrade");
/// Between agents: the path and query of the upgrade request a CONNECT stream carries.
pub const UPGRADE_PATH: HeaderName = HeaderName::from_static("hyphae-upgrade-path");
/// Between agents: the method of the upgrade request a CONNECT stream carries. WebSocket's is
/// always GET (RFC 6455), but others are not: Docker's attach is `POST` with `Upgrade: tcp`.
/// A peer that does not send it means GET.
pub const UPGRADE_METHOD: HeaderName = HeaderName::from_static("hyphae-upgrade-method");
/// Between agents: the caller's `Host` of the upgrade a CONNECT stream carries, as it sent it.
/// The CONNECT's authority must have a port (`name:80`) that the caller's `Host` may not.
pub const UPGRADE_HOST: HeaderName = HeaderName::from_static("hyphae-upgrade-host");
/// Between agents: the status of an instance's 2xx answer that declined an upgrade. A CONNECT
/// stream answered 2xx is a tunnel, so such an answer travels as 502 with its status here,
/// and the calling agent gives it back.
pub const UPGRADE_DECLINED: HeaderName = HeaderName::from_static("hyphae-upgrade-declined");

/// The method of the upgrade request a CONNECT stream carries (`hyphae-upgrade-method`); GET
/// when the calling agent did not say, as agents before it only sent GET.
pub fn upgrade_method(headers: &HeaderMap) -> Result<Method, ProxyError> {
    match headers.get(UPGRADE_METHOD) {
        Some(method) => Method::from_bytes(method.as_bytes())
            .map_err(|_| ProxyError::BadRequest("the upgrade's method is no method".into())),
        None => Ok(Method::GET),
    }
}

/// The path and query of the upgrade request a CONNECT stream carries (`hyphae-upgrade-path`,
/// `/` when absent). One that does not parse is a 400: the access policy checks what this
/// gives, and the instance is sent the same.
pub fn upgrade_path(headers: &HeaderMap) -> Result<PathAndQuery, ProxyError> {
    match headers.get(UPGRADE_PATH) {
        Some(path) => PathAndQuery::try_from(path.as_bytes())
            .ok()
            .filter(|path| path.as_str().starts_with('/'))
            .ok_or_else(|| ProxyError::BadRequest("the upgrade's path is no path".into())),
        None => Ok(PathAndQuery::from_static("/")),
    }
}

/// The HTTP/1.1 upgrade request a CONNECT stream carries, as the instance (or an external
/// service) is sent it: the method, path and `Host` the caller sent (`hyphae-upgrade-*`, the
/// `Host` else `authority`), its other headers, and `Connection: upgrade` with `Upgrade:
/// protocol`. The stream's own fields do not go on.
pub fn upgrade_request(
    mut headers: HeaderMap,
    protocol: HeaderValue,
    authority: Option<&Authority>,
) -> Result<http::Request<crate::body::Body>, ProxyError> {
    let path = upgrade_path(&headers)?;
    let method = upgrade_method(&headers)?;
    let host = headers
        .remove(UPGRADE_HOST)
        .or_else(|| HeaderValue::from_str(authority.map_or("", Authority::as_str)).ok());
    for private in [UPGRADE_PATH, UPGRADE_METHOD, UPGRADE_PROTOCOL, DESTINATION] {
        headers.remove(private);
    }
    let mut upgrade = http::Request::new(crate::body::empty());
    *upgrade.method_mut() = method;
    *upgrade.uri_mut() = http::Uri::from(path);
    if let Some(host) = host {
        headers.insert(HOST, host);
    }
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
    *upgrade.headers_mut() = headers;
    Ok(upgrade)
}

/// Between agents: an HTTP/1.1 instance's own reason phrase (`404 Gone Fishing`), which
/// HTTP/2 has no place for; the calling agent gives it back to an HTTP/1.1 caller.
pub const REASON: HeaderName = HeaderName::from_static("hyphae-reason");

/// Puts an answer's own reason phrase, if it has one, in [`REASON`] for the tunnel; a
/// [`REASON`] the instance sent itself does not go on.
pub fn reason_to_header<B>(response: &mut http::Response<B>) {
    let phrase = response
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .and_then(|phrase| HeaderValue::from_bytes(phrase.as_bytes()).ok());
    match phrase {
        Some(phrase) => response.headers_mut().insert(REASON, phrase),
        None => response.headers_mut().remove(REASON),
    };
}

/// Gives an HTTP/1.1 caller the reason phrase its answer came with ([`REASON`] across the
/// tunnel), and an empty one for a status that has none of its own (`599`), where hyper
/// would write `<none>`.
pub fn reason_from_header<B>(response: &mut http::Response<B>) {
    let carried = response
        .headers_mut()
        .remove(REASON)
        .and_then(|value| hyper::ext::ReasonPhrase::try_from(value.as_bytes()).ok());
    if let Some(phrase) = carried {
        response.extensions_mut().insert(phrase);
    } else if response.status().canonical_reason().is_none()
        && response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .is_none()
    {
        response
            .extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b""));
    }
}

/// Joins several `Cookie` fields into one, `; ` between them, as RFC 9113 §8.2.3 asks before
/// an HTTP/1.1 hop: HTTP/2 clients send one field per cookie, and servers read one line. (The
/// pool toward this host's instances joins them as it writes the head, `h1_wire`.)
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(http::header::COOKIE).iter();
    let (Some(_), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let joined = headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    // Values joined by `; ` are still a valid value.
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(http::header::COOKIE, joined);
    }
}

/// How many names [`HOP_BY_HOP`] holds.
const HOP_BY_HOP_COUNT: usize = 8;

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the non-standard ones proxies also drop. Parsed
/// names, so removing them does not parse them again on every request.
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TRANSFER_ENCODING,
    UPGRADE,
    TE,
];

/// Where `Connection` and `TE` are in [`HOP_BY_HOP`].
const CONNECTION_INDEX: usize = 0;
const TE_INDEX: usize = HOP_BY_HOP_COUNT - 1;

/// True for a hop-by-hop field (RFC 9110 §7.6.1), which no hop passes on, in a head or in
/// trailers.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_index(name).is_some()
}

/// Where `name` is in [`HOP_BY_HOP`]. Most names are of no hop-by-hop name's length, so one
/// length check settles them instead of eight comparisons: this runs on every name of every
/// request and answer, four times per call.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    // te, upgrade, connection and keep-alive, proxy-connection, transfer-encoding,
    // proxy-authenticate, proxy-authorization.
    if !matches!(name.as_str().len(), 2 | 7 | 10 | 16..=19) {
        return None;
    }
    HOP_BY_HOP.iter().position(|hop| hop == name)
}

/// The authority the caller addressed: the URI's (HTTP/2 `:authority` or an absolute-form
/// target), else the `Host` header's; `None` when neither holds a valid one.
pub fn request_authority(parts: &Parts) -> Option<Authority> {
    request_authority_and_host(parts).map(|(authority, _)| authority)
}

/// The authority a request addresses, with the `Host` value it was read from when it came from
/// there: that value holds the authority's very text, so a hop that sends the authority as
/// `Host` can send it again instead of building a copy.
pub type Addressed = (Authority, Option<HeaderValue>);

/// [`request_authority`], with the `Host` value it was read from when it came from there.
pub fn request_authority_and_host(parts: &Parts) -> Option<Addressed> {
    if let Some(authority) = parts.uri.authority() {
        return Some((authority.clone(), None));
    }
    let host = parts.headers.get(HOST)?;
    let authority = Authority::try_from(host.as_bytes()).ok()?;
    Some((authority, Some(host.clone())))
}

/// An absolute URI for `path` at `authority` with `scheme`, as HTTP/2 carries a request's target
/// (`:scheme`, `:authority`, `:path`); a part that cannot form one is the caller's bad request.
pub fn absolute_uri(
    scheme: Scheme,
    authority: Authority,
    path: PathAndQuery,
) -> Result<http::Uri, ProxyError> {
    http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| ProxyError::BadRequest(Cause::new(e)))
}

/// The request's path and query as origin form needs them: `/` when the target has no path
/// (an authority-form request, `http://host`), and `/?q` for `http://host?q`, which the URI
/// holds as `?q` (RFC 9112 §3.2.1: an empty path is sent as `/`).
pub fn path_or_root(parts: &Parts) -> PathAndQuery {
    match parts.uri.path_and_query() {
        Some(path) if path.as_str().starts_with('/') || path.as_str() == "*" => path.clone(),
        Some(path) if !path.as_str().is_empty() => {
            PathAndQuery::try_from(format!("/{}", path.as_str()))
                .unwrap_or_else(|_| PathAndQuery::from_static("/"))
        }
        _ => PathAndQuery::from_static("/"),
    }
}

/// The transfer codings `Transfer-Encoding` lists, over all its lines, without empty items;
/// a value that is not text reads as `?`, a coding nobody knows. Requests and answers alike
/// are refused for any coding but chunked (decisions 66 and 70).
pub fn transfer_codings(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|coding| !coding.is_empty())
}

/// Whether a comma-separated header value (`Connection`, `TE`) lists `token`, in any case.
pub fn has_token(value: &HeaderValue, token: &str) -> bool {
    // Most values are the one token itself.
    value.as_bytes().eq_ignore_ascii_case(token.as_bytes())
        || value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Removes hop-by-hop headers, including those named in `Connection`. `te: trailers` is kept:
/// gRPC needs it end to end and HTTP/2 allows it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which hop-by-hop headers are there (usually none or
    // `connection`), so only those are looked up and removed.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let keeps_trailers =
        present[TE_INDEX] && headers.get(TE).is_some_and(|v| has_token(v, "trailers"));
    if present[CONNECTION_INDEX] {
        // `Connection` usually holds one value, `keep-alive` or `close`: kept on the stack.
        let listed: SmallVec<[HeaderValue; 2]> = match headers.entry(CONNECTION) {
            Entry::Occupied(connection) => connection.remove_entry_mult().1.collect(),
            Entry::Vacant(_) => SmallVec::new(),
        };
        present[CONNECTION_INDEX] = false;
        for token in listed
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            // A hop-by-hop name is removed below if it is there; looking it up by text would
            // parse it again.
            let known = HOP_BY_HOP
                .iter()
                .any(|hop| hop.as_str().eq_ignore_ascii_case(token));
            if !token.is_empty() && !known {
                headers.remove(token);
            }
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    if keeps_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_phrase_crosses_the_tunnel_in_its_header_and_a_status_without_one_gets_none() {
        let phrase = |response: &http::Response<()>| {
            response
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|p| p.as_bytes().to_vec())
        };
        let mut answer = http::Response::new(());
        answer
            .extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b"Gone Fishing"));
        answer
            .headers_mut()
            .insert(REASON, HeaderValue::from_static("forged"));
        reason_to_header(&mut answer);
        assert_eq!(answer.headers()[REASON], "Gone Fishing");
        let mut crossed = http::Response::new(());
        *crossed.headers_mut() = answer.headers().clone();
        reason_from_header(&mut crossed);
        assert_eq!(phrase(&crossed).as_deref(), Some(&b"Gone Fishing"[..]));
        assert!(!crossed.headers().contains_key(REASON));
        // An instance's own `hyphae-reason` does not cross: the phrase is the status line's.
        let mut plain = http::Response::new(());
        plain
            .headers_mut()
            .insert(REASON, HeaderValue::from_static("forged"));
        reason_to_header(&mut plain);
        assert!(!plain.headers().contains_key(REASON));
        // `599` has no phrase of its own: an empty one, not hyper's `<none>`.
        let mut unknown = http::Response::new(());
        *unknown.status_mut() = http::StatusCode::from_u16(599).expect("a status");
        reason_from_header(&mut unknown);
        assert_eq!(phrase(&unknown).as_deref(), Some(&b""[..]));
        let mut known = http::Response::new(());
        reason_from_header(&mut known);
        assert_eq!(phrase(&known), None);
    }

    #[test]
    fn an_upgrade_path_that_does_not_parse_is_refused_not_replaced() {
        let with = |path: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(UPGRADE_PATH, HeaderValue::from_static(path));
            upgrade_path(&headers)
        };
        assert_eq!(
            upgrade_path(&HeaderMap::new()).expect("absent").as_str(),
            "/"
        );
        assert_eq!(with("/ws?x=1").expect("a path").path(), "/ws");
        for bad in ["/www/ x", "/www/\tx", "ws", "http://elsewhere/ws"] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_hop_by_hop_name_passes_the_length_check() {
        assert_eq!(HOP_BY_HOP[CONNECTION_INDEX], CONNECTION);
        assert_eq!(HOP_BY_HOP[TE_INDEX], TE);
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for other in [HOST, http::header::USER_AGENT, http::header::CONTENT_LENGTH] {
            assert_eq!(hop_by_hop_index(&other), None, "{other}");
        }
    }

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

    #[test]
    fn every_value_of_connection_names_headers_to_drop_in_any_case() {
        let mut headers = HeaderMap::new();
        headers.append("connection", "X-One".parse().unwrap());
        headers.append("connection", " x-two , , keep-alive".parse().unwrap());
        for name in ["x-one", "x-two", "keep-alive", "upgrade", "x-kept"] {
            headers.insert(name, "v".parse().unwrap());
        }
        headers.insert("te", "gzip".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        let names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
        let mut untouched = HeaderMap::new();
        untouched.insert("host", "a".parse().unwrap());
        untouched.insert("x-kept", "yes".parse().unwrap());
        let before = untouched.clone();
        strip_hop_by_hop(&mut untouched);
        assert_eq!(untouched, before);
    }
}
