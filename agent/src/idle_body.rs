//! A caller's request body that fails when the caller stops sending it. Without this, a
//! client that opens a request with a body and then goes quiet (a stalled upload, or a
//! slow-body attack) held its connection, and the instance's, for as long as it liked: HTTP/2
//! clients answer PINGs by themselves, and HTTP/1.1 has no timer once the head is read.
//! `limits.streamIdleTimeout` bounds the silence, as Envoy's `stream_idle_timeout` does; time
//! the agent spends not asking for the body (the instance is not reading) does not count.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;

/// The caller sent nothing of its body for the whole idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the caller sent nothing of its request's body for {0:?} (limits.streamIdleTimeout)")]
pub struct BodyIdle(pub Duration);

/// `B`, failing with [`BodyIdle`] when a read of it waits longer than its idle timeout.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Armed when a read first waits, and re-armed after each frame; allocated only for a body
    /// that has to be waited for.
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer's deadline is from before the last frame: move it before waiting again.
    stale: bool,
}

impl<B> IdleTimeout<B> {
    /// `inner`, allowed to keep a read waiting for `idle` at most (`Duration::ZERO`: for ever).
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: None,
            stale: false,
        }
    }
}

impl<B> http_body::Body for IdleTimeout<B>
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
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.stale = true;
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        if this.idle.is_zero() {
            return Poll::Pending;
        }
        // The clock is read only to arm the timer or to move it after a frame.
        let timer = match &mut this.timer {
            None => this.timer.insert(Box::pin(tokio::time::sleep_until(
                Instant::now() + this.idle,
            ))),
            Some(timer) => {
                if this.stale {
                    timer.as_mut().reset(Instant::now() + this.idle);
                }
                timer
            }
        };
        this.stale = false;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdle(this.idle))))),
            Poll::Pending => Poll::Pending,
        }
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
    use http_body_util::BodyExt;

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

    #[tokio::test(start_paused = true)]
    async fn a_body_quiet_for_the_idle_timeout_fails_and_each_frame_restarts_the_wait() {
        let (sender, inner) = channel();
        let mut body = IdleTimeout::new(inner, Duration::from_secs(10));
        for piece in ["a", "b"] {
            let send = sender.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(9)).await;
                let _ = send.send(Bytes::from(piece)).await;
            });
            let frame = body.frame().await.expect("a frame").expect("not idle yet");
            assert_eq!(frame.into_data().expect("data"), piece);
        }
        let started = Instant::now();
        let error = body.frame().await.expect("an error").expect_err("idle");
        assert!(error.downcast_ref::<BodyIdle>().is_some(), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_timeout_waits_for_ever_and_an_ended_body_stays_ended() {
        let (_sender, inner) = channel();
        let mut body = IdleTimeout::new(inner, Duration::ZERO);
        let waited = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
        assert!(waited.is_err(), "no idle timeout with 0s");
        let ended = IdleTimeout::new(http_body_util::Empty::<Bytes>::new(), Duration::ZERO);
        assert!(http_body::Body::is_end_stream(&ended));
    }
}
