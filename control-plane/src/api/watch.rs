//! `GET /v1/agent/watch[?since=REV&cluster=ID]`: opens an agent's NDJSON stream from this node's
//! applied state ([`crate::watch`] builds it). Never sends a reader back in time: a node that
//! cannot serve it answers 503 and the reader tries another.

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use super::answer::{ApiBody, ApiError, query_param};
use crate::node::Node;

/// Answers a watch request with its stream; `shutdown` ends the stream.
pub(crate) async fn open<B>(
    node: &Node,
    request: &Request<B>,
    shutdown: &CancellationToken,
) -> Response<ApiBody> {
    let query = request.uri().query().unwrap_or_default();
    let held = crate::watch::Held {
        revision: query_param(query, "since").and_then(|s| s.parse().ok()),
        cluster: query_param(query, "cluster").map(str::to_owned),
    };
    // The node's own token, not a child of it: a child costs every stream an allocation and a
    // place in the parent's list, and nothing cancels one stream alone.
    match crate::watch::open(std::sync::Arc::clone(&node.watch), held, shutdown.clone()).await {
        Ok(body) => {
            let mut response = Response::new(body.boxed());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-ndjson"),
            );
            response
        }
        Err(refusal) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            refusal.code,
            refusal.message,
        )
        .into_response()
        .map(BodyExt::boxed),
    }
}
