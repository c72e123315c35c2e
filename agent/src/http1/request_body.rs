//! A request's body on the own HTTP/1.1 server: the connection reads it off the socket as the
//! call asks for it ([`Feeder`]), and the call reads it as an [`http_body::Body`]
//! ([`RequestBody`]). Both sides share one small inbox; the connection stops reading while the
//! inbox holds [`INBOX_HIGH_WATER`] bytes, so a caller that uploads faster than the instance
//! takes fills the socket's buffers, not the agent's memory.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use tokio::io::AsyncRead;

use crate::body::BoxError;
use crate::proxy::h1_wire::{Chunk, ChunkedDecoder, WireError};

/// Bytes the inbox holds before the connection stops reading the socket for the body.
pub const INBOX_HIGH_WATER: usize = 64 * 1024;
/// Bytes one read asks the socket for while a body streams.
const BODY_READ_SIZE: usize = 32 * 1024;

/// How a request's body is delimited (RFC 9112 §6.3).
#[derive(Debug)]
pub enum BodyFraming {
    /// This many bytes are still to come.
    Length(u64),
    /// Chunked.
    Chunked(ChunkedDecoder),
}

/// What the connection has read of a body and its reader has not.
#[derive(Default)]
struct Inbox {
    chunks: VecDeque<Bytes>,
    queued: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    failed: Option<String>,
    /// The body's reader, waiting for bytes.
    reader: Option<Waker>,
    /// The connection, waiting for room in the inbox.
    connection: Option<Waker>,
    /// The reader let the body go: what still comes is read and thrown away.
    dropped: bool,
}

fn lock(inbox: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request body handed to the call.
pub struct RequestBody {
    inbox: Arc<Mutex<Inbox>>,
    /// Bytes still to come, when `Content-Length` said how many.
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
            let connection = inbox.connection.take();
            drop(inbox);
            if let Some(waker) = connection {
                waker.wake();
            }
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
    fn drop(&mut self) {
        let mut inbox = lock(&self.inbox);
        inbox.dropped = true;
        inbox.chunks.clear();
        inbox.queued = 0;
        let connection = inbox.connection.take();
        drop(inbox);
        if let Some(waker) = connection {
            waker.wake();
        }
    }
}

/// The connection's side of a body: reads it off the socket into the inbox.
pub struct Feeder {
    inbox: Arc<Mutex<Inbox>>,
    framing: BodyFraming,
    /// The body has been read to its end (or failed): the socket is the next request's.
    done: bool,
    /// The body failed: the connection cannot carry another request.
    broken: bool,
}

impl Feeder {
    /// A body framed by `framing`, and the reader the call gets; a declared length becomes
    /// the reader's size hint.
    pub fn new(framing: BodyFraming) -> (Feeder, RequestBody) {
        let remaining = match &framing {
            BodyFraming::Length(length) => Some(*length),
            BodyFraming::Chunked(_) => None,
        };
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let body = RequestBody {
            inbox: Arc::clone(&inbox),
            remaining,
        };
        let feeder = Feeder {
            inbox,
            framing,
            done: false,
            broken: false,
        };
        (feeder, body)
    }

    /// Whether the whole body has been read off the connection, so it may carry another
    /// request.
    pub fn is_done(&self) -> bool {
        self.done && !self.broken
    }

    /// Moves what `input` holds of the body into the inbox, then reads the socket while the
    /// inbox has room. Returns once it has to wait (the inbox is full, or the socket has
    /// nothing) or the body has been read.
    pub fn poll_feed<I: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut I,
        input: &mut BytesMut,
    ) {
        while !self.done {
            {
                let mut inbox = lock(&self.inbox);
                match decode_into(&mut self.framing, input, &mut inbox) {
                    Ok(ended) => self.done = ended,
                    Err(reason) => {
                        self.done = true;
                        self.broken = true;
                        inbox.failed = Some(reason);
                    }
                }
                if !self.done && inbox.queued >= INBOX_HIGH_WATER {
                    inbox.connection = Some(cx.waker().clone());
                    wake_reader(inbox);
                    return;
                }
                wake_reader(inbox);
            }
            if self.done {
                return;
            }
            if input.capacity() - input.len() < BODY_READ_SIZE / 2 {
                input.reserve(BODY_READ_SIZE);
            }
            let failure = match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, input) {
                Poll::Pending => return,
                Poll::Ready(Ok(0)) => {
                    "the client closed the connection before the request body ended".to_string()
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(error)) => format!("reading the request body failed: {error}"),
            };
            self.done = true;
            self.broken = true;
            let mut inbox = lock(&self.inbox);
            inbox.failed = Some(failure);
            wake_reader(inbox);
        }
    }
}

impl Drop for Feeder {
    /// A body the connection stops reading (it closes) fails its reader rather than leaving
    /// it waiting.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut inbox = lock(&self.inbox);
        inbox.failed = Some("the connection closed before the request body ended".to_string());
        wake_reader(inbox);
    }
}

/// Decodes what `input` holds of the body into `inbox`; `Ok(true)` once the body has ended.
fn decode_into(
    framing: &mut BodyFraming,
    input: &mut BytesMut,
    inbox: &mut Inbox,
) -> Result<bool, String> {
    match framing {
        BodyFraming::Length(left) => {
            let take = usize::try_from(*left)
                .unwrap_or(usize::MAX)
                .min(input.len());
            if take > 0 {
                let data = input.split_to(take).freeze();
                *left -= take as u64;
                inbox.put(data);
            }
            inbox.ended = *left == 0;
            Ok(inbox.ended)
        }
        BodyFraming::Chunked(decoder) => loop {
            match decoder.decode(input) {
                Ok(None) => return Ok(false),
                Ok(Some(Chunk::Data(data))) => inbox.put(data),
                Ok(Some(Chunk::Trailers(trailers))) => {
                    if !inbox.dropped {
                        inbox.trailers = Some(trailers);
                    }
                    inbox.ended = true;
                    return Ok(true);
                }
                Ok(Some(Chunk::End)) => {
                    inbox.ended = true;
                    return Ok(true);
                }
                Err(WireError::Invalid(what)) => {
                    return Err(format!("the request's chunked body has an invalid {what}"));
                }
                Err(_) => return Err("the request's chunked body is malformed".to_string()),
            }
        },
    }
}

/// Wakes the body's reader when it has something to read.
fn wake_reader(mut inbox: MutexGuard<'_, Inbox>) {
    if inbox.chunks.is_empty() && !inbox.ended && inbox.failed.is_none() {
        return;
    }
    let reader = inbox.reader.take();
    drop(inbox);
    if let Some(waker) = reader {
        waker.wake();
    }
}

impl Inbox {
    fn put(&mut self, data: Bytes) {
        if !self.dropped && !data.is_empty() {
            self.queued += data.len();
            self.chunks.push_back(data);
        }
    }
}

/// Drives `feeder` (when there is one) beside `future` until `future` is ready: the call reads
/// its request's body while it works out the answer.
pub async fn alongside<F, I>(
    future: F,
    feeder: Option<&mut Feeder>,
    io: &mut I,
    input: &mut BytesMut,
) -> F::Output
where
    F: Future,
    I: AsyncRead + Unpin,
{
    let mut future = std::pin::pin!(future);
    match feeder {
        None => future.await,
        Some(feeder) => {
            std::future::poll_fn(|cx| {
                if let Poll::Ready(output) = future.as_mut().poll(cx) {
                    return Poll::Ready(output);
                }
                feeder.poll_feed(cx, io, input);
                // Feeding may have woken the call's reader; it runs again on that wake-up.
                Poll::Pending
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_chunked_body_arrives_with_its_trailers_and_leaves_the_next_request() {
        let (client, mut server) = tokio::io::duplex(1024);
        let (mut feeder, body) = Feeder::new(BodyFraming::Chunked(ChunkedDecoder::new(1024)));
        let mut input = BytesMut::from(&b"5\r\nhello\r\n0\r\nx-sum: 5\r\n\r\nGET /next"[..]);
        let collected = alongside(body.collect(), Some(&mut feeder), &mut server, &mut input)
            .await
            .expect("the body ends well");
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(collected.to_bytes(), "hello");
        assert_eq!(trailers["x-sum"], "5");
        assert!(feeder.is_done());
        assert_eq!(&input[..], b"GET /next");
        drop(client);
    }

    #[tokio::test]
    async fn a_length_body_is_read_from_the_socket_as_it_comes() {
        use tokio::io::AsyncWriteExt as _;
        let (mut client, mut server) = tokio::io::duplex(64);
        let (mut feeder, body) = Feeder::new(BodyFraming::Length(100_000));
        let mut input = BytesMut::new();
        let writer = tokio::spawn(async move {
            client.write_all(&[7u8; 100_000]).await.expect("written");
            client
        });
        let collected = alongside(body.collect(), Some(&mut feeder), &mut server, &mut input)
            .await
            .expect("the body ends well");
        assert_eq!(collected.to_bytes().len(), 100_000);
        assert!(feeder.is_done());
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn a_body_cut_short_fails_its_reader() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let (mut feeder, body) = Feeder::new(BodyFraming::Length(10));
        let mut input = BytesMut::from(&b"abc"[..]);
        let collected = alongside(body.collect(), Some(&mut feeder), &mut server, &mut input).await;
        assert!(collected.is_err());
        assert!(!feeder.is_done());
    }

    #[tokio::test]
    async fn a_malformed_chunk_size_fails_the_body() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (mut feeder, body) = Feeder::new(BodyFraming::Chunked(ChunkedDecoder::new(1024)));
        let mut input = BytesMut::from(&b"fffffffffffffffffff\r\n"[..]);
        let collected = alongside(body.collect(), Some(&mut feeder), &mut server, &mut input).await;
        let error = collected.expect_err("refused").to_string();
        assert!(
            error.contains("chunked body has an invalid chunk size"),
            "{error}"
        );
    }
}
