//! A request body between the connection that receives it and the call that reads it, for the
//! agent's own HTTP/1.1 and HTTP/2 servers. The connection puts what arrives in an [`Inbox`];
//! the call reads it as a [`RequestBody`]. A read wakes the connection whenever the connection
//! waits on reads, because only it can make room for more: the HTTP/2 server always does, to
//! give the client back the window the read bytes took; the HTTP/1.1 server only while the
//! inbox is full, when it has stopped reading the socket.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use crate::body::BoxError;

/// What the connection has received of a body and its reader has not taken.
#[derive(Default)]
pub struct Inbox {
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    queued: usize,
    /// Bytes taken off (read, or thrown away after the reader left) since the connection last
    /// asked (the HTTP/2 server asks; the HTTP/1.1 server never does, so it only saturates).
    consumed: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    failed: Option<String>,
    /// The body's reader, waiting for bytes.
    reader: Option<Waker>,
    /// The connection, woken as bytes are taken off.
    connection: Option<Waker>,
    /// The reader let the body go: what still comes is counted as taken and thrown away.
    dropped: bool,
}

/// The connection's handle on an inbox.
pub type SharedInbox = Arc<Mutex<Inbox>>;

/// Locks an inbox; a reader or connection that panicked holding it leaves nothing half-done
/// that the other side could trip on, so the poison is ignored.
pub fn lock(inbox: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new body: the connection's side and the reader the call gets. `connection` is woken as
/// the reader takes bytes (it may also be set later, [`Inbox::wake_on_reads`]); `remaining` is
/// the declared length, reported as the reader's size hint.
pub fn pair(connection: Option<Waker>, remaining: Option<u64>) -> (SharedInbox, RequestBody) {
    let inbox = Arc::new(Mutex::new(Inbox {
        connection,
        ..Inbox::default()
    }));
    let body = RequestBody {
        inbox: Arc::clone(&inbox),
        remaining,
    };
    (inbox, body)
}

impl Inbox {
    /// Queues `data` for the reader, or counts it as taken when the reader has left.
    pub fn put(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.dropped {
            self.consumed = self.consumed.saturating_add(data.len());
        } else {
            self.queued += data.len();
            self.chunks.push_back(data);
        }
    }

    /// The body ended, with `trailers` if it had any.
    pub fn end(&mut self, trailers: Option<HeaderMap>) {
        if !self.dropped {
            self.trailers = trailers;
        }
        self.ended = true;
    }

    /// The body will get no more bytes and did not end: its reader gets an error saying why.
    pub fn fail(&mut self, reason: String) {
        if !self.ended && self.failed.is_none() {
            self.failed = Some(reason);
        }
    }

    /// Bytes waiting for the reader.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Bytes taken off since the last call: what the connection may give back to the client.
    pub fn take_consumed(&mut self) -> usize {
        std::mem::take(&mut self.consumed)
    }

    /// Whether the body's end (or failure) has been received.
    pub fn is_finished(&self) -> bool {
        self.ended || self.failed.is_some()
    }

    /// Whether the body ended (not failed).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Whether the reader let the body go.
    pub fn is_dropped(&self) -> bool {
        self.dropped
    }

    /// Has `connection` woken as the reader takes bytes; `None` stops that.
    pub fn wake_on_reads(&mut self, connection: Option<&Waker>) {
        match connection {
            Some(waker) if self.connection.as_ref().is_some_and(|w| w.will_wake(waker)) => {}
            Some(waker) => self.connection = Some(waker.clone()),
            None => self.connection = None,
        }
    }

    /// Wakes the reader, when there is something for it to read, after letting the lock go.
    pub fn wake_reader(mut inbox: MutexGuard<'_, Inbox>) {
        if inbox.chunks.is_empty() && !inbox.is_finished() {
            return;
        }
        let reader = inbox.reader.take();
        drop(inbox);
        if let Some(waker) = reader {
            waker.wake();
        }
    }

    /// Wakes the connection (bytes were taken off), after letting the lock go.
    fn wake_connection(inbox: MutexGuard<'_, Inbox>) {
        let connection = inbox.connection.clone();
        drop(inbox);
        if let Some(waker) = connection {
            waker.wake();
        }
    }
}

/// The request body handed to the call.
pub struct RequestBody {
    inbox: SharedInbox,
    /// Bytes still to come, when the request said how many.
    remaining: Option<u64>,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut inbox = lock(&self.inbox);
        if let Some(chunk) = inbox.chunks.pop_front() {
            inbox.queued -= chunk.len();
            inbox.consumed = inbox.consumed.saturating_add(chunk.len());
            Inbox::wake_connection(inbox);
            if let Some(remaining) = self.remaining.as_mut() {
                *remaining = remaining.saturating_sub(chunk.len() as u64);
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(reason) = &inbox.failed {
            return Poll::Ready(Some(Err(reason.clone().into())));
        }
        if let Some(trailers) = inbox.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if inbox.ended {
            return Poll::Ready(None);
        }
        if !inbox
            .reader
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            inbox.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let inbox = lock(&self.inbox);
        inbox.ended && inbox.chunks.is_empty() && inbox.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for RequestBody {
    /// What was queued counts as taken, and so does all that still comes: the connection
    /// reads on (HTTP/1.1, to reach the next request) or gives the window back (HTTP/2).
    fn drop(&mut self) {
        let mut inbox = lock(&self.inbox);
        inbox.dropped = true;
        inbox.consumed = inbox.consumed.saturating_add(inbox.queued);
        inbox.queued = 0;
        inbox.chunks.clear();
        inbox.trailers = None;
        Inbox::wake_connection(inbox);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn what_the_reader_takes_is_counted_for_the_connection() {
        let (inbox, body) = pair(None, Some(5));
        {
            let mut inbox = lock(&inbox);
            inbox.put(Bytes::from_static(b"hel"));
            inbox.put(Bytes::from_static(b"lo"));
            let mut trailers = HeaderMap::new();
            trailers.insert("x-sum", http::HeaderValue::from_static("5"));
            inbox.end(Some(trailers));
            assert_eq!(inbox.queued(), 5);
        }
        let collected = body.collect().await.expect("the body ends well");
        assert_eq!(collected.trailers().expect("trailers")["x-sum"], "5");
        assert_eq!(collected.to_bytes(), "hello");
        assert_eq!(lock(&inbox).take_consumed(), 5);
        assert_eq!(lock(&inbox).take_consumed(), 0);
    }

    #[tokio::test]
    async fn a_dropped_reader_has_everything_counted_as_taken() {
        let (inbox, body) = pair(None, None);
        lock(&inbox).put(Bytes::from_static(b"abc"));
        drop(body);
        let mut inbox = lock(&inbox);
        inbox.put(Bytes::from_static(b"de"));
        assert!(inbox.is_dropped());
        assert_eq!(inbox.queued(), 0);
        assert_eq!(inbox.take_consumed(), 5);
    }

    #[tokio::test]
    async fn a_failure_after_the_bytes_reaches_the_reader_as_an_error() {
        let (inbox, body) = pair(None, None);
        {
            let mut inbox = lock(&inbox);
            inbox.put(Bytes::from_static(b"abc"));
            inbox.fail("cut short".to_string());
        }
        let error = body.collect().await.expect_err("failed").to_string();
        assert_eq!(error, "cut short");
    }
}
