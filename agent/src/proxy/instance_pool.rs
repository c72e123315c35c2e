//! Kept-alive HTTP/1.1 connections to this host's instances. Replaces hyper_util's general
//! client, which cost about an eighth of the instructions of a call through one agent (its pool
//! is keyed by scheme and authority, hashes them twice per request, and spawns a task per
//! answer to learn when the connection is free again; decision 44). Here a connection goes back
//! to its instance's idle list when the answer's body ends, and a call takes the newest idle
//! one that is ready, or opens a new one. Every connection's task is owned by the pool, so
//! [`InstancePool::close`] ends them all.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use hyphae_policies::ErrorChain;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::{self, Body};
use crate::error::{Cause, ProxyError};
use crate::retry::is_unprocessed;
use crate::state::FastMap;

/// Idle connections kept per instance; more are closed as they come free. Enough for the
/// concurrency one agent sees toward one instance, few enough that a burst does not leave
/// hundreds of sockets open on the instance.
pub const MAX_IDLE_PER_INSTANCE: usize = 128;
/// How long a connection may stay idle before it is closed (as in hyper_util's client, 90 s):
/// an instance may have closed it meanwhile, and a long-idle one is the likeliest to be
/// half-closed. Checked when a call looks for a connection and in a sweep every half of it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A connection waiting for its next request.
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// The idle lists, shared with the answers' bodies that give connections back.
#[derive(Default)]
struct Shared {
    idle: Mutex<IdleLists>,
}

/// Every instance's idle connections, newest last, and when they were last swept.
#[derive(Default)]
struct IdleLists {
    by_instance: FastMap<SocketAddr, Vec<Idle>>,
    swept: Option<Instant>,
}

impl Idle {
    /// Whether the connection can no longer be taken: closed, or idle too long.
    fn is_stale(&self, now: Instant) -> bool {
        self.sender.is_closed() || now.saturating_duration_since(self.since) >= IDLE_TIMEOUT
    }
}

impl Shared {
    /// The newest idle connection to `address` that can take a request now. Stale ones met on
    /// the way are dropped (which closes them); one still finishing its last exchange (hyper
    /// marks it ready a moment after its answer ends) stays for a later call. Only the newest
    /// are looked at, not the whole list: with many kept-alive connections a scan per call
    /// was a measurable share of a call's work, and [`Shared::give_back`]'s sweep closes the
    /// stale ones further down.
    fn take(&self, address: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.by_instance.get_mut(&address)?;
        let now = Instant::now();
        while let Some(ready) = list.iter().rposition(|c| c.sender.is_ready()) {
            let connection = list.remove(ready);
            if !connection.is_stale(now) {
                return Some(connection.sender);
            }
        }
        None
    }

    /// Keeps `sender` for the next request to `address`, unless the list is full. Every
    /// half [`IDLE_TIMEOUT`] it also closes the stale connections of every instance, so a
    /// burst's extra connections, and those to instances no longer called, do not stay open.
    fn give_back(&self, address: SocketAddr, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle
            .swept
            .is_none_or(|swept| now.saturating_duration_since(swept) >= IDLE_TIMEOUT / 2)
        {
            idle.swept = Some(now);
            idle.by_instance.retain(|_, list| {
                list.retain(|connection| !connection.is_stale(now));
                !list.is_empty()
            });
        }
        let list = idle.by_instance.entry(address).or_default();
        if list.len() >= MAX_IDLE_PER_INSTANCE {
            // Connections the instance closed may fill the list (after it restarted, say).
            list.retain(|connection| !connection.is_stale(now));
        }
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push(Idle { sender, since: now });
        }
    }
}

/// HTTP/1.1 connections to local instances.
pub struct InstancePool {
    shared: Arc<Shared>,
    connect_timeout: Duration,
    /// Owns each connection's task.
    connections: TaskTracker,
    /// Ends every connection once the calls that used them have drained.
    closing: CancellationToken,
}

impl InstancePool {
    /// An empty pool whose connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        InstancePool {
            shared: Arc::default(),
            connect_timeout,
            connections: TaskTracker::new(),
            closing: CancellationToken::new(),
        }
    }

    /// Sends `request` to the instance at `address` on an idle connection, or on a new one.
    /// A request hyper never started to write (its connection had closed, decision 30) comes
    /// back untouched and goes once more on a new connection: no copy of it is kept for that,
    /// and its body was never read. Failing there too, it fails with
    /// [`ProxyError::Unprocessed`].
    pub async fn send(
        &self,
        address: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let mut sender = match self.shared.take(address) {
            Some(sender) => sender,
            None => self.connect(address, false).await?,
        };
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut failed) => match failed.take_message() {
                Some(request) => {
                    tracing::debug!(%address, error = %ErrorChain(failed.error()), "the instance's connection closed before the request was written; sending it on a new one");
                    sender = self.connect(address, false).await?;
                    sender.send_request(request).await.map_err(send_error)?
                }
                None => return Err(send_error(failed.into_error())),
            },
        };
        if response.body().is_end_stream() {
            self.shared.give_back(address, sender);
            return Ok(response.map(body::boxed));
        }
        let giving_back = GiveBack {
            shared: Arc::clone(&self.shared),
            address,
            sender,
        };
        Ok(response.map(|incoming| {
            body::boxed(Pooled {
                inner: incoming,
                giving_back: Some(giving_back),
            })
        }))
    }

    /// Sends an upgrade request to the instance at `address` on a connection of its own, which
    /// becomes the upgraded stream after a 101 and is never pooled.
    pub async fn upgrade(
        &self,
        address: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut sender = self.connect(address, true).await?;
        sender.send_request(request).await.map_err(send_error)
    }

    /// Closes every connection and waits until their tasks have ended; the daemon calls this
    /// once the calls that used them have drained.
    pub async fn close(&self) {
        self.closing.cancel();
        self.connections.close();
        self.connections.wait().await;
        self.shared
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_instance
            .clear();
    }

    /// A new connection to `address` (able to upgrade when `upgrades`), its task spawned.
    async fn connect(
        &self,
        address: SocketAddr,
        upgrades: bool,
    ) -> Result<SendRequest<Body>, ProxyError> {
        let failed = |reason: Cause| ProxyError::ConnectFailed {
            address: address.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| ProxyError::ConnectTimeout(address.to_string()))?
            .map_err(|e| failed(Cause::new(e)))?;
        stream
            .set_nodelay(true)
            .map_err(|e| failed(Cause::new(e)))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(Cause::new(e)))?;
        let closing = self.closing.clone();
        self.connections.spawn(async move {
            let result = if upgrades {
                tokio::select! {
                    result = connection.with_upgrades() => result,
                    () = closing.cancelled() => Ok(()),
                }
            } else {
                tokio::select! {
                    result = connection => result,
                    () = closing.cancelled() => Ok(()),
                }
            };
            if let Err(error) = result {
                tracing::debug!(%address, error = %ErrorChain(&error), "instance connection closed");
            }
        });
        Ok(sender)
    }
}

/// A failed exchange on a connection that was open: not written at all (the connection had
/// closed) is [`ProxyError::Unprocessed`], anything else a reset.
fn send_error(error: hyper::Error) -> ProxyError {
    if is_unprocessed(&error) {
        ProxyError::Unprocessed(Cause::new(error))
    } else {
        ProxyError::Reset(Cause::new(error))
    }
}

/// A connection to give back to its idle list once the answer on it has been read whole.
struct GiveBack {
    shared: Arc<Shared>,
    address: SocketAddr,
    sender: SendRequest<Body>,
}

/// An instance's answer body; its connection goes back to the pool when it ends. A body
/// dropped before its end (the caller went away, it failed) takes its connection with it, and
/// hyper closes that connection.
struct Pooled {
    inner: Incoming,
    giving_back: Option<GiveBack>,
}

impl Pooled {
    fn give_back(&mut self) {
        if let Some(GiveBack {
            shared,
            address,
            sender,
        }) = self.giving_back.take()
        {
            shared.give_back(address, sender);
        }
    }
}

impl HttpBody for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.giving_back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// An HTTP/1.1 server on loopback counting the connections it accepts; it answers
    /// `Connection: close` to paths starting with `/close`.
    async fn counting_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let mut answer = Response::new(body::full("ok"));
                        if request.uri().path().starts_with("/close") {
                            answer.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(answer)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (address, accepted)
    }

    async fn get(pool: &InstancePool, address: SocketAddr, path: &'static str) {
        let mut request = Request::new(body::empty());
        *request.uri_mut() = http::Uri::from_static(path);
        let response = pool.send(address, request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }

    #[tokio::test]
    async fn calls_one_after_another_share_one_kept_alive_connection() {
        let (address, accepted) = counting_server().await;
        let pool = InstancePool::new(Duration::from_secs(1));
        for _ in 0..5 {
            get(&pool, address, "/").await;
            // The connection task marks the connection ready after the answer has ended.
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        pool.close().await;
    }

    #[tokio::test]
    async fn a_connection_the_instance_closes_is_not_taken_again() {
        let (address, accepted) = counting_server().await;
        let pool = InstancePool::new(Duration::from_secs(1));
        for _ in 0..3 {
            get(&pool, address, "/close").await;
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        pool.close().await;
    }
}
