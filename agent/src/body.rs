//! The body type every part of the data path speaks: a boxed stream of bytes, so requests and
//! responses move between HTTP/1.1, HTTP/2 and peers without being buffered.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Errors a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body with nothing in it.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Any hyper-compatible body, boxed. A body that has already ended (a GET's, say) is replaced
/// by a fresh one that ended the same way, which boxes without allocating.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    match Ended::of(&body) {
        Some(ended) => ended.body(),
        None => body.map_err(Into::into).boxed(),
    }
}

/// An error a body met, handed to its reader one poll later than it came, so that what the
/// reader holds of the body so far is written out first. hyper's HTTP/1.1 server drops its
/// unflushed writes when a body fails, and h2 the queued frames of a stream it resets: an
/// answer the instance cut short after its head reached the caller as a closed connection
/// with no answer at all, which clients take for a stale keep-alive connection and send the
/// request again (curl does, for a POST). With the error a poll late, they get the head and
/// the bytes that came, then the cut, as they would from the instance directly.
#[derive(Debug, Default)]
pub struct LateError(Option<BoxError>);

impl LateError {
    /// Keeps `error` for the next poll, and wakes the task so that it comes.
    pub fn defer<T>(&mut self, cx: &mut Context<'_>, error: BoxError) -> Poll<T> {
        self.0 = Some(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The error the last poll kept, if any.
    pub fn take(&mut self) -> Option<BoxError> {
        self.0.take()
    }

    /// Whether an error waits for the next poll: the body has not ended.
    pub fn waits(&self) -> bool {
        self.0.is_some()
    }
}

/// How a body that has already ended described its length. The two descriptions a body with
/// nothing in it normally gives are kept apart because they are forwarded differently: hyper
/// sends `content-length: 0` for an exact zero on methods with a payload, and nothing for an
/// unknown length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Ended, and said its length is exactly zero.
    ZeroLength,
    /// Ended, and gave no length.
    UnknownLength,
}

impl Ended {
    /// How `body` ended; `None` while it may still yield frames, or when it claims some other
    /// length.
    pub fn of<B: http_body::Body>(body: &B) -> Option<Ended> {
        if !body.is_end_stream() {
            return None;
        }
        let hint = body.size_hint();
        match (hint.lower(), hint.upper()) {
            (0, Some(0)) => Some(Ended::ZeroLength),
            (0, None) => Some(Ended::UnknownLength),
            _ => None,
        }
    }

    /// A fresh body that has ended the same way. It has no size, so boxing it allocates
    /// nothing.
    pub fn body(self) -> Body {
        match self {
            Ended::ZeroLength => empty(),
            Ended::UnknownLength => BoxBody::new(EndedWithoutLength),
        }
    }
}

/// A body that has ended without saying how long it was.
struct EndedWithoutLength;

impl http_body::Body for EndedWithoutLength {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// `rest` with `first`, a frame already read from it, put back in front: what was read ahead
/// to decide how a body goes on the wire is still sent (a GET's body of unknown length,
/// `instance_pool`).
pub fn read_ahead(first: Frame<Bytes>, rest: Body) -> Body {
    BoxBody::new(ReadAhead {
        first: Some(first),
        rest,
    })
}

/// See [`read_ahead`].
struct ReadAhead {
    /// The frame read ahead, until it is taken again.
    first: Option<Frame<Bytes>>,
    /// The body after it.
    rest: Body,
}

impl http_body::Body for ReadAhead {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.first.take() {
            Some(first) => Poll::Ready(Some(Ok(first))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, Bytes::len) as u64;
        // The upper bound first: `set_lower` refuses a lower bound above the upper one.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint.set_lower(rest.lower().saturating_add(first));
        hint
    }
}

/// Wraps `body`, whose message declared `length` bytes (`content-length`), so that once that
/// many have passed, an error where its end should be counts as its end: the message is whole
/// by its own framing (RFC 9110 §8.6). The h2 crate reports a stream whose END_STREAM arrived
/// as failed when the connection closes before the stream's other half has (a server that
/// answered before reading the whole request and then dropped the connection: hypercorn does);
/// without this, such a complete answer reached the caller as a reset. Trailers and errors
/// before the last byte pass as they are.
pub fn whole_at_length(body: Body, length: u64) -> Body {
    if http_body::Body::is_end_stream(&body) {
        return body;
    }
    WholeAtLength {
        inner: body,
        remaining: length,
    }
    .boxed()
}

/// See [`whole_at_length`].
struct WholeAtLength {
    inner: Body,
    /// Declared bytes not yet passed.
    remaining: u64,
}

impl http_body::Body for WholeAtLength {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.remaining = self.remaining.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) if self.remaining == 0 => {
                tracing::debug!(%error, "the body's declared length arrived before the error; it ends there");
                Poll::Ready(None)
            }
            other => other,
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
    use super::*;
    use http_body::Body as _;

    #[test]
    fn an_ended_body_is_replaced_by_one_that_says_the_same_about_its_length() {
        let zero = Empty::<Bytes>::new();
        assert_eq!(Ended::of(&zero), Some(Ended::ZeroLength));
        let unknown = EndedWithoutLength;
        assert_eq!(Ended::of(&unknown), Some(Ended::UnknownLength));
        assert_eq!(Ended::of(&Full::new(Bytes::from_static(b"x"))), None);
        for ended in [Ended::ZeroLength, Ended::UnknownLength] {
            let body = ended.body();
            assert!(body.is_end_stream());
            assert_eq!(Ended::of(&body), Some(ended));
        }
        let boxed = boxed(Full::new(Bytes::from_static(b"abc")));
        assert_eq!(boxed.size_hint().exact(), Some(3));
        assert!(!boxed.is_end_stream());
    }

    #[test]
    fn a_frame_read_ahead_counts_in_its_bodys_size_and_end() {
        /// A body that says at most 3 bytes are left, without saying exactly.
        struct AtMostThree;
        impl http_body::Body for AtMostThree {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                Poll::Ready(None)
            }
            fn size_hint(&self) -> SizeHint {
                let mut hint = SizeHint::new();
                hint.set_upper(3);
                hint
            }
        }
        let first = || Frame::data(Bytes::from_static(b"hello"));
        let bounded = read_ahead(first(), BoxBody::new(AtMostThree));
        assert!(!bounded.is_end_stream());
        let hint = bounded.size_hint();
        assert_eq!((hint.lower(), hint.upper()), (5, Some(8)));
        let exact = read_ahead(first(), full("abc"));
        assert_eq!(exact.size_hint().exact(), Some(8));
    }

    /// A body that yields its chunks, then fails.
    struct FailingAfter(std::collections::VecDeque<&'static [u8]>);

    impl http_body::Body for FailingAfter {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(Some(match self.0.pop_front() {
                Some(chunk) => Ok(Frame::data(Bytes::from_static(chunk))),
                None => Err("connection closed".into()),
            }))
        }
    }

    fn failing_after(chunks: &[&'static [u8]]) -> Body {
        FailingAfter(chunks.iter().copied().collect()).boxed()
    }

    #[tokio::test]
    async fn a_body_whose_declared_length_arrived_ends_where_an_error_follows() {
        let whole = whole_at_length(failing_after(&[b"status ", b"413"]), 10);
        let collected = whole.collect().await.expect("the whole length arrived");
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"status 413"));
        let short = whole_at_length(failing_after(&[b"status"]), 10);
        assert!(short.collect().await.is_err(), "4 bytes were missing");
        let unwrapped = failing_after(&[b"status ", b"413"]);
        assert!(
            unwrapped.collect().await.is_err(),
            "the error is there to absorb"
        );
    }
}
