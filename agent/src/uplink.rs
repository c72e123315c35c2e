//! The agent's registry requests on its watch connection (decision 57). While the node the
//! agent watches takes them, registration, heartbeats, health reports and leaving travel up
//! that one connection, one at a time, each answered by one line among the stream's events:
//! the agent keeps no second connection open on every control-plane node it talks to. The
//! watch ([`crate::watch`]) carries them; [`crate::control_plane_client`] sends through here
//! first and over HTTP/2 when no watch connection takes requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
#[cfg(doc)]
use hyphae_policies::watch::UplinkRequest;
use tokio::sync::{mpsc, oneshot, watch};

/// The watch connection that takes requests now, if any; shared by every clone of the
/// agent's control-plane client.
pub struct Uplink {
    end: watch::Sender<Option<Arc<UplinkEnd>>>,
}

impl Default for Uplink {
    fn default() -> Self {
        Uplink {
            end: watch::Sender::new(None),
        }
    }
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

/// What became of one request sent up a watch connection.
#[derive(Debug)]
pub struct Reply {
    /// The node it went to, `host:port`.
    pub server: String,
    /// Its answer, or why there is none.
    pub outcome: Result<Answered, UplinkFailure>,
}

/// Why a request up a watch connection has no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum UplinkFailure {
    /// The connection ended first.
    Closed,
    /// The answer did not come in time.
    TimedOut,
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
        self.uplink.end.send_if_modified(|current| {
            let ours = current
                .as_ref()
                .is_some_and(|end| Arc::ptr_eq(end, &self.end));
            if ours {
                *current = None;
            }
            ours
        });
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
        self.end.send_replace(Some(Arc::clone(&end)));
        let attached = Attached {
            uplink: Arc::clone(self),
            end,
        };
        (attached, waiting)
    }

    /// Whether a watch connection takes requests now.
    pub fn is_open(&self) -> bool {
        self.end.borrow().is_some()
    }

    /// Waits up to `patience` for a watch connection that takes requests; whether one does.
    /// An agent starting up registers up its watch connection rather than open a second one
    /// for that alone, when the watch comes up in time.
    pub async fn opened(&self, patience: Duration) -> bool {
        let mut end = self.end.subscribe();
        tokio::time::timeout(patience, end.wait_for(Option::is_some))
            .await
            .is_ok_and(|opened| opened.is_ok())
    }

    /// Sends one request `line` (a [`UplinkRequest`] and its newline) up the watch
    /// connection and waits for the node's answer, all within `timeout`; `None` when no watch
    /// connection takes requests.
    pub async fn send(&self, line: Bytes, timeout: Duration) -> Option<Reply> {
        let end = self.end.borrow().clone()?;
        let exchange = async {
            let (answer, answered_here) = oneshot::channel();
            end.requests
                .send(UplinkCall { line, answer })
                .await
                .map_err(|_| UplinkFailure::Closed)?;
            answered_here.await.map_err(|_| UplinkFailure::Closed)
        };
        let outcome = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(UplinkFailure::TimedOut));
        Some(Reply {
            server: end.server.clone(),
            outcome,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &[u8] = b"{\"path\":\"/v1/agent/heartbeat\",\"body\":{\"node\":\"n1\"}}\n";

    #[tokio::test]
    async fn a_request_goes_up_the_attached_connection_and_comes_back_answered() {
        let uplink = Arc::new(Uplink::default());
        let line = Bytes::from_static(LINE);
        assert!(
            uplink
                .send(line.clone(), Duration::from_secs(1))
                .await
                .is_none(),
            "nothing attached: HTTP/2 it is"
        );
        let (attached, mut waiting) = uplink.attach("cp:7400");
        assert!(uplink.is_open());
        let node = tokio::spawn(async move {
            let call = waiting.recv().await.unwrap();
            assert_eq!(call.line, LINE);
            call.answer
                .send(Answered {
                    status: StatusCode::OK,
                    body: serde_json::json!({"ttlMs": 15000, "revision": 3}),
                })
                .unwrap();
        });
        let reply = uplink
            .send(line.clone(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(reply.server, "cp:7400");
        let answered = reply.outcome.unwrap();
        assert_eq!(answered.status, StatusCode::OK);
        assert_eq!(answered.body["revision"], 3);
        node.await.unwrap();

        // The connection ends: requests go over HTTP/2 again.
        drop(attached);
        assert!(!uplink.is_open());
        assert!(uplink.send(line, Duration::from_secs(1)).await.is_none());
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
        let reply = uplink
            .send(Bytes::from_static(LINE), Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(reply.outcome.unwrap_err(), UplinkFailure::Closed);
        ending.await.unwrap();
    }

    #[tokio::test]
    async fn a_newer_connection_stays_attached_when_an_older_one_ends() {
        let uplink = Arc::new(Uplink::default());
        assert!(!uplink.opened(Duration::from_millis(10)).await);
        let waiting = tokio::spawn({
            let uplink = Arc::clone(&uplink);
            async move { uplink.opened(Duration::from_secs(3600)).await }
        });
        let (older, _) = uplink.attach("cp-1:7400");
        assert!(waiting.await.unwrap(), "a wait ends as a connection opens");
        let (_newer, _waiting) = uplink.attach("cp-2:7400");
        drop(older);
        assert!(uplink.is_open());
    }
}
