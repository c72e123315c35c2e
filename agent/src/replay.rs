//! A request body that can be sent again: the first try streams it through unchanged while a
//! copy of up to a bounded number of bytes is kept, so a retry can replay it. A body larger
//! than the bound is never buffered whole and never retried.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{self, Body, BoxError, Ended};
use crate::error::Cause;

struct Shared {
    /// The original body, read by whichever try gets there first.
    inner: Body,
    /// Data read so far, while it fits the bound.
    chunks: Vec<Bytes>,
    /// Bytes read so far.
    read: usize,
    /// More than the bound was read: the copy is gone and no retry is possible.
    overflowed: bool,
    /// The original body failed (malformed or cut off by its sender): no try can send it.
    failed: Option<Cause>,
    /// The original body has ended (its trailers, if any, are kept).
    ended: bool,
    /// The last read of the original body found nothing yet: the try is waiting for the
    /// caller to send more, not for the instance to take it.
    awaiting_caller: bool,
    trailers: Option<HeaderMap>,
    /// Only the newest try may read; older tries' bodies go quiet.
    generation: u64,
}

/// Hands out one body per try.
pub struct ReplayBody {
    source: Source,
    limit: usize,
    hint: SizeHint,
    empty: bool,
}

/// Where the tries' bodies come from.
enum Source {
    /// The body had ended before the first try (a GET's): every try gets a fresh body that
    /// ended the same way, and nothing is shared or kept. The original is held until the call
    /// is over, as a streamed one is.
    Ended { ended: Ended, _original: Body },
    /// The body is read once, by whichever try gets there first, and copied while it fits.
    Streamed(Arc<Mutex<Shared>>),
}

/// The body of one try; once it is dropped (its try over), no try waits for the caller.
pub struct TryBody {
    /// `None` when the original body had ended before the first try.
    shared: Option<Arc<Mutex<Shared>>>,
    limit: usize,
    generation: u64,
    next_chunk: usize,
    trailers_sent: bool,
    hint: SizeHint,
    empty: bool,
}

impl ReplayBody {
    /// Wraps `body`, keeping a copy of at most `limit` bytes.
    pub fn new(body: Body, limit: usize) -> Self {
        let hint = body.size_hint();
        let empty = body.is_end_stream();
        let source = match Ended::of(&body) {
            Some(ended) => Source::Ended {
                ended,
                _original: body,
            },
            None => Source::Streamed(Arc::new(Mutex::new(Shared {
                inner: body,
                chunks: Vec::new(),
                read: 0,
                overflowed: false,
                failed: None,
                ended: empty,
                awaiting_caller: false,
                trailers: None,
                generation: 0,
            }))),
        };
        ReplayBody {
            source,
            limit,
            hint,
            empty,
        }
    }

    /// True while a new try could send the whole body again.
    pub fn can_replay(&self) -> bool {
        match &self.source {
            Source::Ended { .. } => true,
            Source::Streamed(shared) => {
                let shared = shared.lock().unwrap_or_else(|p| p.into_inner());
                !shared.overflowed && shared.failed.is_none()
            }
        }
    }

    /// Why the original body failed, if it did: its sender's fault (a malformed chunk, a
    /// connection cut mid-body), not the upstream's.
    pub fn failed(&self) -> Option<Cause> {
        match &self.source {
            Source::Ended { .. } => None,
            Source::Streamed(shared) => {
                let shared = shared.lock().unwrap_or_else(|p| p.into_inner());
                shared.failed.clone()
            }
        }
    }

    /// True while the caller has not finished sending the body and a try is waiting for it:
    /// a call still waiting at its request timeout is then the caller's doing (408), not the
    /// instance's (504).
    pub fn awaiting_caller(&self) -> bool {
        match &self.source {
            Source::Ended { .. } => false,
            Source::Streamed(shared) => {
                let shared = shared.lock().unwrap_or_else(|p| p.into_inner());
                !shared.ended && shared.failed.is_none() && shared.awaiting_caller
            }
        }
    }

    /// The body for the next try; bodies of earlier tries stop yielding data.
    pub fn next_try(&self) -> TryBody {
        let (shared, generation) = match &self.source {
            Source::Ended { .. } => (None, 0),
            Source::Streamed(shared) => {
                let mut locked = shared.lock().unwrap_or_else(|p| p.into_inner());
                locked.generation += 1;
                locked.awaiting_caller = false;
                (Some(Arc::clone(shared)), locked.generation)
            }
        };
        TryBody {
            shared,
            limit: self.limit,
            generation,
            next_chunk: 0,
            trailers_sent: false,
            hint: self.hint,
            empty: self.empty,
        }
    }

    /// [`ReplayBody::next_try`], boxed. For a body that had ended this allocates nothing.
    pub fn next_try_body(&self) -> Body {
        match &self.source {
            Source::Ended { ended, .. } => ended.body(),
            Source::Streamed(_) => body::boxed(self.next_try()),
        }
    }
}

/// Raised when an old try's body is polled after a newer try started.
#[derive(Debug, thiserror::Error)]
#[error("request body was handed to a newer try")]
pub struct Superseded;

impl Drop for TryBody {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
            if shared.generation == self.generation {
                shared.awaiting_caller = false;
            }
        }
    }
}

impl HttpBody for TryBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(shared) = &this.shared else {
            return Poll::Ready(None);
        };
        let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
        if shared.generation != this.generation {
            return Poll::Ready(Some(Err(Box::new(Superseded))));
        }
        if let Some(chunk) = shared.chunks.get(this.next_chunk) {
            this.next_chunk += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if let Some(cause) = &shared.failed {
            return Poll::Ready(Some(Err(Box::new(cause.clone()))));
        }
        if shared.ended {
            if !this.trailers_sent
                && let Some(trailers) = shared.trailers.clone()
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut shared.inner).poll_frame(cx);
        shared.awaiting_caller = polled.is_pending();
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                shared.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                let cause = Cause::from(error);
                shared.failed = Some(cause.clone());
                Poll::Ready(Some(Err(Box::new(cause))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    shared.read += data.len();
                    if shared.read > this.limit {
                        shared.overflowed = true;
                        shared.chunks.clear();
                    } else if !shared.overflowed {
                        shared.chunks.push(data.clone());
                        this.next_chunk = shared.chunks.len();
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    shared.trailers = Some(trailers.clone());
                    shared.ended = true;
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.empty
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_that_failed_says_why_and_is_not_replayed() {
        // A body whose sender broke it: its first frame is an error.
        let failure: Result<Frame<Bytes>, BoxError> = Err("invalid chunk size".into());
        let broken = http_body_util::StreamBody::new(futures_util::stream::iter([failure]));
        let replay = ReplayBody::new(crate::body::boxed(broken), 64);
        assert!(replay.failed().is_none());
        assert!(replay.next_try().collect().await.is_err());
        assert_eq!(
            replay.failed().map(|c| c.to_string()).as_deref(),
            Some("invalid chunk size")
        );
        assert!(!replay.can_replay());
        assert!(replay.next_try().collect().await.is_err());
    }

    #[tokio::test]
    async fn a_small_body_replays_in_full() {
        let replay = ReplayBody::new(crate::body::full("hello world"), 64);
        let first = replay.next_try().collect().await.unwrap().to_bytes();
        assert!(replay.can_replay());
        let second = replay.next_try().collect().await.unwrap().to_bytes();
        assert_eq!(first, second);
        assert_eq!(&second[..], b"hello world");
    }

    #[tokio::test]
    async fn a_body_past_the_limit_streams_once_and_cannot_replay() {
        let replay = ReplayBody::new(crate::body::full(vec![7u8; 1000]), 64);
        let first = replay.next_try().collect().await.unwrap().to_bytes();
        assert_eq!(first.len(), 1000);
        assert!(!replay.can_replay());
    }

    #[tokio::test]
    async fn a_retry_continues_a_body_the_first_try_left_half_read() {
        let chunks = futures_chunks(&["ab", "cd", "ef"]);
        let replay = ReplayBody::new(chunks, 64);
        let mut first = replay.next_try();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        let second = replay.next_try().collect().await.unwrap().to_bytes();
        assert_eq!(&second[..], b"abcdef");
        assert!(
            first.frame().await.unwrap().is_err(),
            "the old try is superseded"
        );
    }

    #[tokio::test]
    async fn an_ended_body_is_sent_again_as_it_was_without_a_copy() {
        for original in [crate::body::empty(), Ended::UnknownLength.body()] {
            let (ended, hint) = (Ended::of(&original), original.size_hint());
            let replay = ReplayBody::new(original, 64);
            assert!(
                matches!(replay.source, Source::Ended { .. }),
                "nothing is kept for an ended body"
            );
            for _ in 0..2 {
                assert!(replay.can_replay());
                let body = replay.next_try_body();
                assert_eq!(Ended::of(&body), ended);
                assert_eq!(body.size_hint().exact(), hint.exact());
                assert!(body.collect().await.unwrap().to_bytes().is_empty());
                assert!(replay.next_try().frame().await.is_none());
            }
        }
    }

    fn futures_chunks(parts: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        crate::body::boxed(http_body_util::StreamBody::new(tokio_stream_iter(frames)))
    }

    fn tokio_stream_iter(
        frames: Vec<Result<Frame<Bytes>, BoxError>>,
    ) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + Sync {
        StreamIter(frames.into_iter())
    }

    struct StreamIter<I>(I);

    impl<I: Iterator + Unpin> futures_core::Stream for StreamIter<I> {
        type Item = I::Item;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
            Poll::Ready(self.0.next())
        }
    }
}
