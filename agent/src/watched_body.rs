//! A call's two bodies as the call watches them: counted for the service's byte metrics, and
//! ended when the stream goes quiet. Without the bound, a caller that opens a request with a
//! body and then sends nothing (a stalled upload, a slow-body attack), or an instance that
//! stops halfway through its answer, held the call, both connections and the caller's
//! `maxRequests` place for as long as it liked: HTTP/2 peers answer PINGs by themselves, and
//! HTTP/1.1 has no timer once a head is read.
//!
//! The bound is Envoy's `stream_idle_timeout`: `limits.streamIdleTimeout`, or the route rule's
//! `timeouts.idle`. A stream is quiet while neither body moves: the two share when one last
//! did, so a gRPC stream that only the server talks on (or only the client) is not idle. Only
//! time spent asking counts: an instance that is not reading cannot make its caller look
//! idle, nor a caller that is not reading its instance.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::time::Instant;

use crate::body::{Body, BoxError, LateError};
use crate::idle_timer::IdleTimer;

/// Which side of a call went quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quiet {
    /// The caller, in its request's body.
    Caller,
    /// The instance (or the peer agent in front of it), in its answer's body.
    Instance,
}

/// A body sent nothing for the whole idle timeout, and neither did the other.
#[derive(Debug, thiserror::Error)]
#[error("the stream was idle for {idle:?} (limits.streamIdleTimeout or the route's timeouts.idle): {}", match .side {
    Quiet::Caller => "the caller sent nothing more of its request's body",
    Quiet::Instance => "the instance sent nothing more of its answer's body",
})]
pub struct BodyIdle {
    /// Who went quiet.
    pub side: Quiet,
    /// The timeout that passed.
    pub idle: Duration,
}

/// When either of a call's bodies last moved, shared by the two. Only a call whose request
/// has a body needs one: without it, the answer's own frames are all the stream's movement.
#[derive(Debug)]
pub struct StreamActivity {
    started: Instant,
    /// Milliseconds after `started` of the last frame either way.
    moved: AtomicU64,
}

impl StreamActivity {
    /// A stream that starts moving now.
    pub fn new() -> Arc<Self> {
        Arc::new(StreamActivity {
            started: Instant::now(),
            moved: AtomicU64::new(0),
        })
    }

    fn stamp(&self) {
        let since = self.started.elapsed().as_millis();
        self.moved
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn last_moved(&self) -> Instant {
        self.started + Duration::from_millis(self.moved.load(Ordering::Relaxed))
    }
}

/// A call's body: its data frames add to `counter`, and a read that waits past the idle
/// timeout (with the other body quiet too) fails with [`BodyIdle`].
struct Watched<B> {
    inner: B,
    counter: metrics::Counter,
    side: Quiet,
    timer: IdleTimer,
    /// When the call's other body last moved, if it has one.
    shared: Option<Arc<StreamActivity>>,
    /// The inner body's failure, given to the reader a poll after it came
    /// ([`crate::body::LateError`]).
    failure: LateError,
}

/// `body` watched for the call: counted into `counter`, and failing when `side` keeps a read
/// waiting for `idle` (`Duration::ZERO`: for ever) while `shared`, the other body's movement,
/// shows none either.
pub fn watched<B>(
    body: B,
    counter: metrics::Counter,
    side: Quiet,
    idle: Duration,
    shared: Option<Arc<StreamActivity>>,
) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Watched {
        inner: body,
        counter,
        side,
        timer: IdleTimer::new(idle),
        shared,
        failure: LateError::default(),
    }
    .boxed()
}

impl<B> http_body::Body for Watched<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(error) = this.failure.take() {
            return Poll::Ready(Some(Err(error)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.counter.increment(data.len() as u64);
                }
                this.timer.moved();
                if let Some(shared) = &this.shared {
                    shared.stamp();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => this.failure.defer(cx, error.into()),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let shared = &this.shared;
                ready!(
                    this.timer
                        .poll_expired(cx, || shared.as_ref().map(|s| s.last_moved()))
                );
                let idle = BodyIdle {
                    side: this.side,
                    idle: this.timer.idle(),
                };
                tracing::info!(error = %idle, "ending the call");
                Poll::Ready(Some(Err(Box::new(idle))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.failure.waits() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use http_body_util::{BodyExt, Full};

    use super::*;

    /// A body whose frames the test sends, one at a time.
    struct Sent(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for Sent {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0
                .poll_recv(cx)
                .map(|piece| piece.map(|data| Ok(Frame::data(data))))
        }
    }

    fn channel() -> (tokio::sync::mpsc::Sender<Bytes>, Sent) {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        (sender, Sent(receiver))
    }

    fn counter() -> (Arc<AtomicU64>, metrics::Counter) {
        let bytes = Arc::new(AtomicU64::new(0));
        (bytes.clone(), metrics::Counter::from_arc(bytes))
    }

    /// Sends `piece` on `sender` after `after`.
    fn send_later(sender: &tokio::sync::mpsc::Sender<Bytes>, after: u64, piece: &'static str) {
        let sender = sender.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(after)).await;
            let _ = sender.send(Bytes::from(piece)).await;
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_quiet_for_the_idle_timeout_fails_and_each_frame_restarts_the_wait() {
        let (sender, inner) = channel();
        let (_, counter) = counter();
        let mut body = watched(inner, counter, Quiet::Caller, Duration::from_secs(10), None);
        for piece in ["a", "b"] {
            send_later(&sender, 9, piece);
            let frame = body.frame().await.expect("a frame").expect("not idle yet");
            assert_eq!(frame.into_data().expect("data"), piece);
        }
        let started = Instant::now();
        let error = body.frame().await.expect("an error").expect_err("idle");
        let idle = error.downcast_ref::<BodyIdle>().expect("a BodyIdle");
        assert_eq!(idle.side, Quiet::Caller);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_quiet_while_the_other_moves_is_not_idle_until_both_are() {
        let activity = StreamActivity::new();
        let (request_sender, request) = channel();
        let (answer_sender, answer) = channel();
        let idle = Duration::from_secs(10);
        let (_, sent) = counter();
        let (_, received) = counter();
        let mut request = watched(request, sent, Quiet::Caller, idle, Some(activity.clone()));
        let mut answer = watched(answer, received, Quiet::Instance, idle, Some(activity));
        // The caller stays quiet while the instance answers every 6 s: 24 s in all.
        let started = Instant::now();
        let reading = tokio::spawn(async move { request.frame().await.map(|r| r.is_err()) });
        for piece in ["1", "2", "3", "4"] {
            send_later(&answer_sender, 6, piece);
            let frame = answer.frame().await.expect("a frame").expect("answering");
            assert_eq!(frame.into_data().expect("data"), piece);
        }
        // The request's read fails 10 s after the instance's last frame, not 10 s after it began.
        let failed = reading.await.expect("the read ran");
        assert_eq!(failed, Some(true), "the request side went idle");
        assert_eq!(started.elapsed(), Duration::from_secs(34));
        drop(request_sender);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_timeout_waits_for_ever_and_an_ended_body_stays_ended() {
        let (_sender, inner) = channel();
        let (_, counter1) = counter();
        let mut body = watched(inner, counter1, Quiet::Instance, Duration::ZERO, None);
        let waited = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
        assert!(waited.is_err(), "no idle timeout with 0s");
        let (_, counter2) = counter();
        let ended = watched(
            http_body_util::Empty::<Bytes>::new(),
            counter2,
            Quiet::Caller,
            Duration::ZERO,
            None,
        );
        assert!(http_body::Body::is_end_stream(&ended));
    }

    #[tokio::test]
    async fn a_watched_body_counts_its_data_and_keeps_its_length() {
        let (bytes, counter) = counter();
        let body = watched(
            Full::new(Bytes::from_static(b"hello")),
            counter,
            Quiet::Instance,
            Duration::from_secs(1),
            None,
        );
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
        let collected = body.collect().await.expect("whole").to_bytes();
        assert_eq!(collected, Bytes::from_static(b"hello"));
        assert_eq!(bytes.load(Ordering::Relaxed), 5);
    }
}
