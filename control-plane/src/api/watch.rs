//! `GET /v1/agent/watch[?since=REV&cluster=ID]`: opens an agent's NDJSON stream from this node's
//! applied state ([`crate::watch`] builds it): as the answer's body, or, for an HTTP/1.1
//! request with `Upgrade: hyphae-watch`, on the connection itself after `101 Switching
//! Protocols` ([`crate::watch::connection`]). Never sends a reader back in time: a node that
//! cannot serve it answers 503 and the reader tries another.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use hyphae_policies::watch::{UPLINK_AGENT_REQUESTS, UPLINK_HEADER, WATCH_UPGRADE};

use super::ConnectionScope;
use super::answer::{ApiBody, ApiError, query_param};
use super::caller::Peer;
use crate::node::Node;
use crate::watch::ChannelBody;

/// Whether `request` asks for its stream on the connection itself: HTTP/1.1 (HTTP/2 has no
/// upgrades) with [`WATCH_UPGRADE`] among the protocols of its `Upgrade` header.
pub(crate) fn wants_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == http::Version::HTTP_11
        && request
            .headers()
            .get_all(http::header::UPGRADE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|protocol| protocol.trim().eq_ignore_ascii_case(WATCH_UPGRADE))
}

/// Answers a watch request with its stream as the body; the connection's shutdown ends it.
pub(crate) async fn open<B>(
    node: &Node,
    request: &Request<B>,
    scope: &ConnectionScope,
) -> Response<ApiBody> {
    match start(node, request, scope).await {
        Ok(body) => {
            let mut response = Response::new(body.boxed());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-ndjson"),
            );
            response
        }
        Err(refused) => refused,
    }
}

/// Answers a watch request that [`wants_upgrade`] with `101 Switching Protocols`, and hands
/// the stream to a task of the connection's that writes it onto the connection once hyper
/// lets go of it. That task holds the connection's place under `maxConnections` from then on.
/// An agent (`peer` has a node certificate) is told it may send its registry requests up the
/// same connection ([`super::uplink`], decision 57).
pub(crate) async fn open_upgraded<B>(
    node: &Arc<Node>,
    mut request: Request<B>,
    peer: Peer,
    scope: &ConnectionScope,
) -> Response<ApiBody> {
    let upgrade = hyper::upgrade::on(&mut request);
    let lines = match start(node, &request, scope).await {
        Ok(lines) => lines,
        Err(refused) => return refused,
    };
    let takes_requests = peer.node().is_some();
    let uplink = takes_requests.then(|| super::uplink::uplink(Arc::clone(node), peer));
    let shutdown = scope.shutdown.clone();
    let place = Arc::clone(&scope.place);
    scope.tasks.spawn(async move {
        let _place = place;
        match upgrade.await {
            Ok(connection) => {
                let ended = crate::watch::connection::serve(
                    TokioIo::new(connection),
                    lines,
                    uplink,
                    crate::watch::SEND_PATIENCE,
                    &shutdown,
                )
                .await;
                tracing::debug!(?ended, "watch connection ended");
            }
            Err(error) => tracing::debug!(%error, "the watch's connection was not handed over"),
        }
    });
    let mut response = Response::new(Empty::<bytes::Bytes>::new().boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static(WATCH_UPGRADE),
    );
    if takes_requests {
        headers.insert(
            UPLINK_HEADER,
            http::HeaderValue::from_static(UPLINK_AGENT_REQUESTS),
        );
    }
    response
}

/// Opens the stream for `request`'s reader, or the 503 that refuses it.
async fn start<B>(
    node: &Node,
    request: &Request<B>,
    scope: &ConnectionScope,
) -> Result<ChannelBody, Response<ApiBody>> {
    let query = request.uri().query().unwrap_or_default();
    let held = crate::watch::Held {
        revision: query_param(query, "since").and_then(|s| s.parse().ok()),
        cluster: query_param(query, "cluster").map(str::to_owned),
    };
    // The node's own token, not a child of it: a child costs every stream an allocation and a
    // place in the parent's list, and nothing cancels one stream alone.
    crate::watch::open(
        std::sync::Arc::clone(&node.watch),
        held,
        scope.shutdown.clone(),
    )
    .await
    .map_err(|refusal| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            refusal.code,
            refusal.message,
        )
        .into_response()
        .map(BodyExt::boxed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_http1_request_naming_the_watch_protocol_is_upgraded() {
        let request = |version, upgrade: Option<&str>| {
            let mut builder = Request::get("/v1/agent/watch").version(version);
            if let Some(upgrade) = upgrade {
                builder = builder.header(http::header::UPGRADE, upgrade);
            }
            builder.body(()).unwrap()
        };
        use http::Version;
        assert!(wants_upgrade(&request(
            Version::HTTP_11,
            Some("hyphae-watch")
        )));
        assert!(wants_upgrade(&request(
            Version::HTTP_11,
            Some("websocket, Hyphae-Watch")
        )));
        assert!(!wants_upgrade(&request(Version::HTTP_11, None)));
        assert!(!wants_upgrade(&request(
            Version::HTTP_11,
            Some("websocket")
        )));
        assert!(!wants_upgrade(&request(
            Version::HTTP_2,
            Some("hyphae-watch")
        )));
        assert!(!wants_upgrade(&request(
            Version::HTTP_10,
            Some("hyphae-watch")
        )));
    }
}
