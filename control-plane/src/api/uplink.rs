//! The registry requests an agent sends up its upgraded watch connection (decision 57): each
//! line is a `POST` to one of the agent paths, checked and answered exactly as that request
//! over HTTP would be (here, or on the leader it goes on to), and its answer goes back as one
//! [`WatchEvent::Answer`] line among the stream's events. So an agent keeps one connection to
//! the control plane, not a watch beside an HTTP/2 connection for its heartbeats.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyphae_policies::watch::{UPLINK_ENVELOPE_BYTES, UPLINK_PATHS, UplinkRequest, WatchEvent};

use super::answer::{ApiError, ApiRequest};
use super::caller::Peer;
use crate::node::Node;
use crate::watch::connection::Uplink;

/// Requests answered per path, for `/v1/metrics`; the order of [`UPLINK_PATHS`].
static ANSWERED: [AtomicU64; UPLINK_PATHS.len()] =
    [const { AtomicU64::new(0) }; UPLINK_PATHS.len()];

/// What the watch connection of `peer` does with its request lines: answers them as `node`,
/// within the node's agent body limit and body read timeout.
pub(crate) fn uplink(node: Arc<Node>, peer: Peer) -> Uplink {
    let limits = &node.config.spec.limits;
    let max_line = (limits.max_agent_body_bytes as usize).saturating_add(UPLINK_ENVELOPE_BYTES);
    let line_patience = limits.body_read_timeout.get();
    Uplink {
        answer: Box::new(move |line| {
            let node = Arc::clone(&node);
            let peer = peer.clone();
            Box::pin(async move { answer_line(&node, peer, &line).await })
        }),
        max_line,
        line_patience,
    }
}

/// The answer line (newline included) to one request line.
async fn answer_line(node: &Node, peer: Peer, line: &[u8]) -> Bytes {
    let response = match serde_json::from_slice::<UplinkRequest>(line) {
        Err(error) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request-line",
            format!("expected a request line, {{\"path\": ..., \"body\": ...}}: {error}"),
        )
        .into_response(),
        Ok(request) => match UPLINK_PATHS.iter().position(|path| *path == request.path) {
            None => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown-path",
                format!(
                    "{} is not taken on a watch connection; these are: {}",
                    request.path,
                    UPLINK_PATHS.join(", ")
                ),
            )
            .into_response(),
            Some(index) => {
                ANSWERED[index].fetch_add(1, Ordering::Relaxed);
                answer_request(node, peer, request).await
            }
        },
    };
    encode(response).await
}

/// Checks and answers `request` from `peer` as a `POST` over HTTP with no headers.
async fn answer_request(node: &Node, peer: Peer, request: UplinkRequest) -> Response<Full<Bytes>> {
    let caller =
        match super::access::check(node, &Method::POST, &request.path, &HeaderMap::new(), &peer)
            .await
        {
            Ok(caller) => caller,
            Err(refused) => return refused.into_response(),
        };
    let body = match serde_json::to_vec(&request.body) {
        Ok(body) => Bytes::from(body),
        Err(error) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-request-line",
                error.to_string(),
            )
            .into_response();
        }
    };
    let request = ApiRequest {
        method: Method::POST,
        path: request.path,
        query: String::new(),
        authorization: None,
        peer,
        caller,
        body,
    };
    super::answer(node, &request, false).await
}

/// `response` as a [`WatchEvent::Answer`] line: its status, and its body as JSON (as a string
/// when it is not JSON). A JSON body is copied in as it is, not parsed into a tree and written
/// again: heartbeats answer thousands of times a second on a large fleet.
async fn encode(response: Response<Full<Bytes>>) -> Bytes {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let status = parts.status.as_u16();
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
        let head = format!("{{\"type\":\"answer\",\"status\":{status},\"body\":");
        let mut line = Vec::with_capacity(head.len() + body.len() + 2);
        line.extend_from_slice(head.as_bytes());
        // The body may end in a newline (pretty JSON): the line must not.
        line.extend(body.iter().filter(|&&b| b != b'\n'));
        line.extend_from_slice(b"}\n");
        return Bytes::from(line);
    }
    let answer = WatchEvent::Answer {
        status,
        body: serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    let mut line = serde_json::to_vec(&answer).unwrap_or_else(|_| {
        // A status and a string always encode; this only keeps the reader in step.
        br#"{"type":"answer","status":500,"body":"cannot encode the answer"}"#.to_vec()
    });
    line.push(b'\n');
    Bytes::from(line)
}

/// The counters in Prometheus' text format.
pub(crate) fn render() -> String {
    let mut text = String::from(
        "# HELP hyphae_control_plane_uplink_requests_total Agent requests answered on watch connections, by path.\n# TYPE hyphae_control_plane_uplink_requests_total counter\n",
    );
    for (path, count) in UPLINK_PATHS.iter().zip(&ANSWERED) {
        text.push_str(&format!(
            "hyphae_control_plane_uplink_requests_total{{path=\"{path}\"}} {}\n",
            count.load(Ordering::Relaxed)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer_of(response: Response<Full<Bytes>>) -> WatchEvent {
        let line = encode(response).await;
        assert!(line.ends_with(b"\n"), "one line");
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&line).expect("a watch event")
    }

    #[tokio::test]
    async fn answers_read_back_as_the_status_and_body_http_would_give() {
        let refused = ApiError::new(StatusCode::NOT_FOUND, "unknown-node", "who?").into_response();
        assert_eq!(
            answer_of(refused).await,
            WatchEvent::Answer {
                status: 404,
                body: serde_json::json!({"code": "unknown-node", "message": "who?"}),
            }
        );
        let pretty = Response::new(Full::new(Bytes::from_static(b"{\n  \"ttlMs\": 1\n}\n")));
        assert_eq!(
            answer_of(pretty).await,
            WatchEvent::Answer {
                status: 200,
                body: serde_json::json!({"ttlMs": 1}),
            }
        );
        let text = Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Full::new(Bytes::from_static(b"upstream \"down\"\n")))
            .unwrap();
        assert_eq!(
            answer_of(text).await,
            WatchEvent::Answer {
                status: 502,
                body: serde_json::Value::String("upstream \"down\"\n".into()),
            }
        );
    }
}
