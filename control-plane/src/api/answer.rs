//! What every handler shares: the buffered request, the error answer with its stable code, and
//! JSON responses. Knows nothing of Raft or of any one resource.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use http_body_util::combinators::BoxBody;
use hyphae_policies::Diagnostic;
use serde::Serialize;

use crate::wire::ErrorBody;

/// Every response body: whole JSON answers and long-lived watch streams alike.
pub type ApiBody = BoxBody<Bytes, Infallible>;

/// An API failure: a status and a stable machine-readable code.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    diagnostics: Vec<Diagnostic>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }

    /// The same error carrying the policy loader's findings, so clients see file:line:col.
    pub(crate) fn with_diagnostics(mut self, diagnostics: Vec<Diagnostic>) -> Self {
        self.diagnostics = diagnostics;
        self
    }

    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let body = ErrorBody {
            code: self.code.to_string(),
            message: self.message,
            diagnostics: self.diagnostics,
        };
        json_response(self.status, &body)
    }
}

/// A buffered admin request, kept whole so it can be forwarded to the leader.
pub(crate) struct ApiRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: String,
    /// The caller's credential, passed on when the request is forwarded to the leader.
    pub(crate) authorization: Option<http::HeaderValue>,
    /// Who the caller's certificate proved it to be, passed on when forwarded.
    pub(crate) peer: super::caller::Peer,
    /// What the access check made of the caller.
    pub(crate) caller: super::caller::Caller,
    pub(crate) body: Bytes,
}

impl ApiRequest {
    /// A boolean query flag: `name` or `name=true` is true, `name=false` or no flag is false,
    /// and anything else is a 400 (a mistyped `dryRun=1` must not quietly write).
    pub(crate) fn flag(&self, name: &str) -> Result<bool, ApiError> {
        let mut value = false;
        for pair in self.query.split('&') {
            let (key, given) = pair.split_once('=').unwrap_or((pair, "true"));
            if key != name {
                continue;
            }
            value = match given {
                "true" => true,
                "false" => false,
                other => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad-flag",
                        format!("`{name}={other}`: use `{name}=true` or `{name}=false`"),
                    ));
                }
            };
        }
        Ok(value)
    }

    /// The value of query parameter `name`, if given.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        query_param(&self.query, name)
    }
}

/// The value of parameter `name` in a query string (`a=1&b=2`), if given.
pub(crate) fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The request's body as JSON of `T`, or a 400 that shows what was `expected`.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    request: &ApiRequest,
    expected: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(&request.body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-body",
            format!("expected {expected} as JSON: {e}"),
        )
    })
}

/// Like [`json_body`], with `T`'s default for an empty body.
pub(crate) fn json_body_or_default<T: serde::de::DeserializeOwned + Default>(
    request: &ApiRequest,
    expected: &str,
) -> Result<T, ApiError> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json_body(request, expected)
    }
}

/// Why a request was not answered here.
pub(crate) enum Routed {
    Error(ApiError),
    /// Only the leader can answer: forward to this address.
    Forward(String),
}

impl From<ApiError> for Routed {
    fn from(error: ApiError) -> Self {
        Routed::Error(error)
    }
}

/// What a handler of a buffered request answers.
pub(crate) type Answer = Result<Response<Full<Bytes>>, Routed>;

/// A pretty-printed JSON answer (an encoding failure becomes a JSON error body, never a panic).
pub(crate) fn json_response<T: Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value)
        .unwrap_or_else(|e| format!("{{\"code\":\"encode\",\"message\":\"{e}\"}}").into_bytes());
    body.push(b'\n');
    bytes_response(status, body, "application/json")
}

/// An answer of raw bytes with their content type.
pub(crate) fn bytes_response(
    status: StatusCode,
    body: Vec<u8>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}
