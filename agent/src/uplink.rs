//! The agent's registry requests on its watch connection (decision 57). While the node the
//! agent watches takes them, registration, heartbeats, health reports and leaving travel up
//! that one connection, one at a time, each answered by one line among the stream's events:
//! the agent keeps no second connection open on every control-plane node it talks to. The
//! watch ([`crate::watch`]) carries them; [`crate::control_plane_client`] sends through here
//! first and over HTTP/2 when no watch connection takes requests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use hyphae_policies::watch::UplinkRequest;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::control_plane_client::{ControlPlaneError, answered};

/// The watch connection that takes requests now, if any; shared by every clone of the
/// agent's control-plane client.
#[derive(Default)]
pub struct Uplink {
    end: Mutex<Option<Arc<UplinkEnd>>>,
}

/// The sending end of one watch connection's requests.
struct UplinkEnd {
    /// The node it goes to, `host:port`.
    server: String,
    requests: mpsc::Sender<UplinkCall>,
}

/// One request waiting for the watch connection: its line (newline included) and where its
/// answer goes.
pub struct UplinkCall {
    /// The [`UplinkRequest`] as one line.
    pub line: Bytes,
    /// Takes the node's answer; closed when the caller gave up waiting.
    pub answer: oneshot::Sender<Answered>,
}

/// The node's answer to one request: what HTTP would have answered.
#[derive(Debug)]
pub struct Answered {
    /// The status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: serde_json::Value,
}

/// Keeps a watch connection offered for requests; dropped when the connection ends, after
/// which requests go over HTTP/2 again (and those queued fail at once).
pub struct Attached {
    uplink: Arc<Uplink>,
    end: Arc<UplinkEnd>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut current = self.uplink.lock();
        if current
            .as_ref()
            .is_some_and(|end| Arc::ptr_eq(end, &self.end))
        {
            *current = None;
        }
    }
}

impl Uplink {
    /// Offers the watch connection to `server` for requests until the guard drops; the watch
    /// takes them, one at a time, from the receiver.
    pub fn attach(self: &Arc<Self>, server: &str) -> (Attached, mpsc::Receiver<UplinkCall>) {
        // One request waits while another is on the connection: the registrar sends one at a
        // time anyway.
        let (requests, waiting) = mpsc::channel(1);
        let end = Arc::new(UplinkEnd {
            server: server.to_string(),
            requests,
        });
        *self.lock() = Some(Arc::clone(&end));
        let attached = Attached {
            uplink: Arc::clone(self),
            end,
        };
        (attached, waiting)
    }

    /// Whether a watch connection takes requests now.
    pub fn is_open(&self) -> bool {
        self.lock().is_some()
    }

    /// POSTs `body` to `path` up the watch connection and reads the JSON answer, all within
    /// `timeout`; `None` when no watch connection takes requests.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Option<Result<T, ControlPlaneError>> {
        let end = self.lock().clone()?;
        let server = end.server.as_str();
        let encode = |source| ControlPlaneError::Encode {
            path: path.to_string(),
            source,
        };
        let line = serde_json::to_value(body)
            .and_then(|body| {
                serde_json::to_vec(&UplinkRequest {
                    path: path.to_string(),
                    body,
                })
            })
            .map_err(encode);
        let mut line = match line {
            Ok(line) => line,
            Err(error) => return Some(Err(error)),
        };
        line.push(b'\n');
        let closed = || ControlPlaneError::WatchConnectionClosed {
            server: server.to_string(),
        };
        let exchange = async {
            let (answer, answered_here) = oneshot::channel();
            end.requests
                .send(UplinkCall {
                    line: Bytes::from(line),
                    answer,
                })
                .await
                .map_err(|_| closed())?;
            let Answered { status, body } = answered_here.await.map_err(|_| closed())?;
            answered(server, status, body)
        };
        Some(
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or_else(|_| {
                    Err(ControlPlaneError::Timeout {
                        server: server.to_string(),
                        after: timeout,
                    })
                }),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<UplinkEnd>>> {
        self.end.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_goes_up_the_attached_connection_and_comes_back_answered() {
        let uplink = Arc::new(Uplink::default());
        let none: Option<Result<serde_json::Value, _>> = uplink
            .post("/v1/agent/heartbeat", &1, Duration::from_secs(1))
            .await;
        assert!(none.is_none(), "nothing attached: HTTP/2 it is");
        let (attached, mut waiting) = uplink.attach("cp:7400");
        assert!(uplink.is_open());
        let node = tokio::spawn(async move {
            let call = waiting.recv().await.unwrap();
            let request: UplinkRequest = serde_json::from_slice(&call.line).unwrap();
            assert!(call.line.ends_with(b"\n"));
            let status = if request.body["node"] == "n1" {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            let body = match status {
                StatusCode::OK => serde_json::json!({"ttlMs": 15000, "revision": 3}),
                _ => serde_json::json!({"code": "unknown-node", "message": "who?"}),
            };
            call.answer.send(Answered { status, body }).unwrap();
            waiting
        });
        let lease: hyphae_policies::registry::Lease = uplink
            .post(
                "/v1/agent/heartbeat",
                &serde_json::json!({"node": "n1"}),
                Duration::from_secs(5),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lease.revision, 3);
        let mut waiting = node.await.unwrap();

        let refused = tokio::spawn(async move {
            let call = waiting.recv().await.unwrap();
            call.answer
                .send(Answered {
                    status: StatusCode::NOT_FOUND,
                    body: serde_json::json!({"code": "unknown-node", "message": "who?"}),
                })
                .unwrap();
        });
        let error = uplink
            .post::<_, serde_json::Value>(
                "/v1/agent/heartbeat",
                &serde_json::json!({"node": "n2"}),
                Duration::from_secs(5),
            )
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(error.code(), Some("unknown-node"));
        refused.await.unwrap();

        // The connection ends: requests fail at once, then go over HTTP/2.
        drop(attached);
        assert!(!uplink.is_open());
        assert!(
            uplink
                .post::<_, serde_json::Value>("/v1/agent/heartbeat", &1, Duration::from_secs(1))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_request_on_a_connection_that_ends_fails_without_waiting_out_its_timeout() {
        let uplink = Arc::new(Uplink::default());
        let (attached, mut waiting) = uplink.attach("cp:7400");
        let ending = tokio::spawn(async move {
            let call = waiting.recv().await.unwrap();
            drop(attached);
            drop(call);
        });
        let error = uplink
            .post::<_, serde_json::Value>("/v1/agent/heartbeat", &1, Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(error, ControlPlaneError::WatchConnectionClosed { .. }),
            "{error:?}"
        );
        ending.await.unwrap();
    }
}
