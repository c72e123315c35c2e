//! A request's header block made into a request head, with every rule of RFC 9113 §8.2 and
//! §8.3 that the fields alone decide. A block that breaks one is malformed: the stream is reset
//! with `PROTOCOL_ERROR` and the connection goes on (§8.1.1). The h2 crate ended the whole
//! connection (GOAWAY) over a name with capitals or a space, or a value with CR LF, and every
//! other call on it with it (decision 89).

use bytes::Bytes;
use http::header::TE;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use super::hpack::Field;

/// Why a header block is malformed, for the log; the stream is reset whatever it is.
pub type Malformed = &'static str;

/// Fields HTTP/2 forbids because they describe one connection (§8.2.2).
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` describes one connection, which HTTP/2 forbids (§8.2.2).
pub fn is_connection_specific(name: &HeaderName) -> bool {
    CONNECTION_SPECIFIC.contains(&name.as_str())
}

/// Makes the fields of a request's header block into a request (version HTTP/2, the target in
/// absolute form when `:authority` came, else origin form).
pub fn request(fields: impl IntoIterator<Item = Field>) -> Result<Request<()>, Malformed> {
    let mut method = None;
    let mut scheme = None;
    let mut authority = None;
    let mut path = None;
    let mut headers = HeaderMap::new();
    let mut regular_seen = false;
    for field in fields {
        if let Some(pseudo) = field.name.strip_prefix(b":") {
            if regular_seen {
                return Err("a pseudo-header field after a regular one");
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"authority" => &mut authority,
                b"path" => &mut path,
                // `:protocol` is for extended CONNECT, which this side does not offer.
                _ => return Err("an unknown or response pseudo-header field"),
            };
            if slot.replace(field.value).is_some() {
                return Err("a pseudo-header field twice");
            }
            continue;
        }
        regular_seen = true;
        let (name, value) = regular(field)?;
        headers.append(name, value);
    }
    let method = method.ok_or("no :method")?;
    let method = Method::from_bytes(&method).map_err(|_| "a :method that is no token")?;
    let authority = authority
        .map(|a| Authority::from_maybe_shared(a).map_err(|_| "an :authority that is no authority"))
        .transpose()?;
    let mut uri = Uri::builder();
    if method == Method::CONNECT {
        // §8.5: the authority alone.
        if scheme.is_some() || path.is_some() {
            return Err("CONNECT with :scheme or :path");
        }
        uri = uri.authority(authority.ok_or("CONNECT without :authority")?);
    } else {
        let scheme = scheme.ok_or("no :scheme")?;
        let path = path.ok_or("no :path")?;
        if path.is_empty() {
            return Err("an empty :path");
        }
        let path = PathAndQuery::from_maybe_shared(path).map_err(|_| "a :path that is no path")?;
        if let Some(authority) = authority {
            let scheme =
                Scheme::try_from(&scheme[..]).map_err(|_| "a :scheme that is no scheme")?;
            uri = uri.scheme(scheme).authority(authority);
        }
        uri = uri.path_and_query(path);
    }
    let uri = uri.build().map_err(|_| "a target that is no URI")?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Makes the fields of a trailer section into a header map: regular fields only (§8.1).
pub fn trailers(fields: impl IntoIterator<Item = Field>) -> Result<HeaderMap, Malformed> {
    let mut headers = HeaderMap::new();
    for field in fields {
        if field.name.starts_with(b":") {
            return Err("a pseudo-header field in trailers");
        }
        let (name, value) = regular(field)?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// A regular field, checked: a lowercase token for a name (§8.2), a value without NUL, CR, LF
/// or leading or trailing whitespace (§8.2.1), nothing connection-specific, `te` only
/// `trailers` (§8.2.2).
fn regular(field: Field) -> Result<(HeaderName, HeaderValue), Malformed> {
    if field.name.iter().any(u8::is_ascii_uppercase) {
        return Err("a field name with capitals");
    }
    let name = HeaderName::from_bytes(&field.name).map_err(|_| "a field name that is no token")?;
    if is_connection_specific(&name) {
        return Err("a connection-specific field");
    }
    let bytes = &field.value[..];
    if matches!(bytes.first(), Some(b' ' | b'\t')) || matches!(bytes.last(), Some(b' ' | b'\t')) {
        return Err("a field value that starts or ends with whitespace");
    }
    if name == TE && !bytes.eq_ignore_ascii_case(b"trailers") {
        return Err("te other than trailers");
    }
    let mut value = HeaderValue::from_maybe_shared(Bytes::clone(&field.value))
        .map_err(|_| "a field value with a control character")?;
    value.set_sensitive(field.never_indexed);
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: Bytes::copy_from_slice(name.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            never_indexed: false,
        }
    }

    fn get(extra: &[(&str, &str)]) -> Vec<Field> {
        let mut fields = vec![
            field(":method", "GET"),
            field(":scheme", "http"),
            field(":authority", "payments.mesh:8080"),
            field(":path", "/pay?x=1"),
        ];
        fields.extend(extra.iter().map(|(n, v)| field(n, v)));
        fields
    }

    #[test]
    fn a_request_gets_its_method_target_and_fields() {
        let mut fields = get(&[("accept", "*/*"), ("cookie", "a=1"), ("cookie", "b=2")]);
        fields[5].never_indexed = true;
        let request = request(fields).expect("well formed");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "http://payments.mesh:8080/pay?x=1");
        assert_eq!(request.version(), Version::HTTP_2);
        assert_eq!(request.headers().get_all("cookie").iter().count(), 2);
        assert!(request.headers()["cookie"].is_sensitive());
        assert!(!request.headers()["accept"].is_sensitive());
        // Without :authority the target stays in origin form.
        let origin = request_without(":authority").expect("well formed");
        assert_eq!(origin.uri(), "/pay?x=1");
        assert_eq!(origin.uri().authority(), None);
        let connect = super::request(vec![
            field(":method", "CONNECT"),
            field(":authority", "db.mesh:5432"),
        ])
        .expect("CONNECT");
        assert_eq!(
            connect.uri().authority().map(|a| a.as_str()),
            Some("db.mesh:5432")
        );
        let options = super::request(vec![
            field(":method", "OPTIONS"),
            field(":scheme", "http"),
            field(":path", "*"),
        ])
        .expect("OPTIONS *");
        assert_eq!(options.uri().path(), "*");
    }

    fn request_without(pseudo: &str) -> Result<Request<()>, Malformed> {
        request(
            get(&[])
                .into_iter()
                .filter(|f| &f.name[..] != pseudo.as_bytes()),
        )
    }

    #[test]
    fn missing_repeated_or_misplaced_pseudo_fields_are_malformed() {
        assert_eq!(request_without(":method").err(), Some("no :method"));
        assert_eq!(request_without(":scheme").err(), Some("no :scheme"));
        assert_eq!(request_without(":path").err(), Some("no :path"));
        let mut twice = get(&[]);
        twice.insert(1, field(":method", "POST"));
        assert_eq!(request(twice).err(), Some("a pseudo-header field twice"));
        let mut late = get(&[("accept", "*/*")]);
        late.push(field(":path", "/again"));
        assert_eq!(
            request(late).err(),
            Some("a pseudo-header field after a regular one")
        );
        for pseudo in [":status", ":protocol", ":other"] {
            let mut odd = get(&[]);
            odd.push(field(pseudo, "x"));
            assert_eq!(
                request(odd).err(),
                Some("an unknown or response pseudo-header field"),
                "{pseudo}"
            );
        }
        let mut empty = get(&[]);
        empty[3] = field(":path", "");
        assert_eq!(request(empty).err(), Some("an empty :path"));
        let connect_with_path = vec![
            field(":method", "CONNECT"),
            field(":authority", "db.mesh:5432"),
            field(":path", "/"),
        ];
        assert_eq!(
            request(connect_with_path).err(),
            Some("CONNECT with :scheme or :path")
        );
        assert_eq!(
            request(vec![field(":method", "CONNECT")]).err(),
            Some("CONNECT without :authority")
        );
        let mut bad_method = get(&[]);
        bad_method[0] = field(":method", "GE T");
        assert_eq!(
            request(bad_method).err(),
            Some("a :method that is no token")
        );
    }

    #[test]
    fn bad_names_and_values_are_malformed_not_fixed() {
        for (name, value, why) in [
            ("Accept", "*/*", "a field name with capitals"),
            ("acc ept", "*/*", "a field name that is no token"),
            ("", "x", "a field name that is no token"),
            ("connection", "close", "a connection-specific field"),
            ("keep-alive", "5", "a connection-specific field"),
            ("proxy-connection", "x", "a connection-specific field"),
            (
                "transfer-encoding",
                "chunked",
                "a connection-specific field",
            ),
            ("upgrade", "websocket", "a connection-specific field"),
            ("te", "gzip", "te other than trailers"),
            (
                "x-a",
                " padded",
                "a field value that starts or ends with whitespace",
            ),
            (
                "x-a",
                "padded\t",
                "a field value that starts or ends with whitespace",
            ),
            ("x-a", "a\r\nb", "a field value with a control character"),
            ("x-a", "a\0b", "a field value with a control character"),
        ] {
            assert_eq!(
                request(get(&[(name, value)])).err(),
                Some(why),
                "{name}: {value:?}"
            );
        }
        assert!(request(get(&[("te", "trailers"), ("x-empty", "")])).is_ok());
    }

    #[test]
    fn trailers_take_regular_fields_only() {
        let trailers = trailers(vec![field("grpc-status", "0"), field("grpc-message", "ok")])
            .expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(
            super::trailers(vec![field(":status", "200")]).err(),
            Some("a pseudo-header field in trailers")
        );
        assert_eq!(
            super::trailers(vec![field("Grpc-Status", "0")]).err(),
            Some("a field name with capitals")
        );
    }
}
