//! Kept-alive HTTP/1.1 connections to this host's instances. Replaces hyper_util's general
//! client, which cost about an eighth of the instructions of a call through one agent (its pool
//! is keyed by scheme and authority, hashes them twice per request, and spawns a task per
//! answer to learn when the connection is free again; decision 44). Here a connection goes back
//! to its instance's idle list when the answer's body ends, and a call takes the newest idle
//! one that is ready, or opens a new one. Every connection's task is owned by the pool, so
//! [`InstancePool::close`] ends them all.

use std::collections::HashMap;
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

/// Idle connections kept per instance; more are closed as they come free. Enough for the
/// concurrency one agent sees toward one instance, few enough that a burst does not leave
/// hundreds of sockets open on the instance.
pub const MAX_IDLE_PER_INSTANCE: usize = 128;
/// How long a connection may stay idle before a call no longer takes it (as hyper_util's
/// client, 90 s): an instance may have closed it meanwhile, and a long-idle one is the likeliest
/// to be half-closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A connection waiting for its next request.
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// The idle lists, shared with the answers' bodies that give connections back.
#[derive(Default)]
struct Shared {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

impl Shared {
    /// The newest idle connection to `address` that can take a request now. Connections that
    /// closed, sat idle too long, or are still finishing an exchange are dropped.
    fn take(&self, address: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&address)?;
        let now = Instant::now();
        while let Some(connection) = list.pop() {
            if connection.sender.is_ready()
                && now.saturating_duration_since(connection.since) < IDLE_TIMEOUT
            {
                return Some(connection.sender);
            }
        }
        None
    }

    /// Keeps `sender` for the next request to `address`, unless the list is full.
    fn give_back(&self, address: SocketAddr, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(address).or_default();
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
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
    /// A request the instance never read (its connection closed first) fails with
    /// [`ProxyError::Unprocessed`], so the caller may send it again.
    pub async fn send(
        &self,
        address: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let mut sender = match self.shared.take(address) {
            Some(sender) => sender,
            None => self.connect(address, false).await?,
        };
        let response = sender.send_request(request).await.map_err(send_error)?;
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
