//! A request's body on the own HTTP/1.1 server: the connection reads it off the socket as the
//! call asks for it ([`Feeder`]), and the call reads it as an [`http_body::Body`]
//! ([`RequestBody`]). Both sides share one small inbox; the connection stops reading while the
//! inbox holds [`INBOX_HIGH_WATER`] bytes, so a caller that uploads faster than the instance
//! takes fills the socket's buffers, not the agent's memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncRead;

use crate::body_inbox::{self, Inbox, SharedInbox};
use crate::proxy::h1_wire::{Chunk, ChunkedDecoder, WireError};

pub use crate::body_inbox::RequestBody;

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

/// The connection's side of a body: reads it off the socket into the inbox.
pub struct Feeder {
    inbox: SharedInbox,
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
        let (inbox, body) = body_inbox::pair(None, remaining);
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
                let mut inbox = body_inbox::lock(&self.inbox);
                match decode_into(&mut self.framing, input, &mut inbox) {
                    Ok(ended) => self.done = ended,
                    Err(reason) => {
                        self.done = true;
                        self.broken = true;
                        inbox.fail(reason);
                    }
                }
                let full = !self.done && inbox.queued() >= INBOX_HIGH_WATER;
                // Woken by the reader's reads only while they are what it waits for.
                inbox.wake_on_reads(full.then_some(cx.waker()));
                Inbox::wake_reader(inbox);
                if full {
                    return;
                }
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
            let mut inbox = body_inbox::lock(&self.inbox);
            inbox.fail(failure);
            Inbox::wake_reader(inbox);
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
        let mut inbox = body_inbox::lock(&self.inbox);
        inbox.fail("the connection closed before the request body ended".to_string());
        Inbox::wake_reader(inbox);
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
            if *left == 0 {
                inbox.end(None);
            }
            Ok(*left == 0)
        }
        BodyFraming::Chunked(decoder) => loop {
            match decoder.decode(input) {
                Ok(None) => return Ok(false),
                Ok(Some(Chunk::Data(data))) => inbox.put(data),
                Ok(Some(Chunk::Trailers(trailers))) => {
                    inbox.end(Some(trailers));
                    return Ok(true);
                }
                Ok(Some(Chunk::End)) => {
                    inbox.end(None);
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

/// Drives `feeder` (when there is one) beside `future` until `future` is ready: the call reads
/// its request's body while it works out the answer. The call is pinned where the connection
/// keeps it and only borrowed here: a future moved into this one would be copied whole (several
/// KB) once more per request.
pub fn alongside<'a, F, I>(
    mut future: Pin<&'a mut F>,
    mut feeder: Option<&'a mut Feeder>,
    io: &'a mut I,
    input: &'a mut BytesMut,
) -> impl Future<Output = F::Output> + 'a
where
    F: Future,
    I: AsyncRead + Unpin,
{
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        if let Some(feeder) = feeder.as_deref_mut() {
            // Feeding may wake the call's reader; it runs again on that wake-up.
            feeder.poll_feed(cx, io, input);
        }
        Poll::Pending
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    /// Reads `body` whole while `feeder` feeds it from `io`, as the connection does for a call.
    async fn collect_fed(
        body: RequestBody,
        feeder: &mut Feeder,
        io: &mut tokio::io::DuplexStream,
        input: &mut BytesMut,
    ) -> Result<http_body_util::Collected<bytes::Bytes>, crate::body::BoxError> {
        alongside(std::pin::pin!(body.collect()), Some(feeder), io, input).await
    }

    #[tokio::test]
    async fn a_chunked_body_arrives_with_its_trailers_and_leaves_the_next_request() {
        let (client, mut server) = tokio::io::duplex(1024);
        let (mut feeder, body) = Feeder::new(BodyFraming::Chunked(ChunkedDecoder::new(1024)));
        let mut input = BytesMut::from(&b"5\r\nhello\r\n0\r\nx-sum: 5\r\n\r\nGET /next"[..]);
        let collected = collect_fed(body, &mut feeder, &mut server, &mut input)
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
        let collected = collect_fed(body, &mut feeder, &mut server, &mut input)
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
        let collected = collect_fed(body, &mut feeder, &mut server, &mut input).await;
        assert!(collected.is_err());
        assert!(!feeder.is_done());
    }

    #[tokio::test]
    async fn a_malformed_chunk_size_fails_the_body() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (mut feeder, body) = Feeder::new(BodyFraming::Chunked(ChunkedDecoder::new(1024)));
        let mut input = BytesMut::from(&b"fffffffffffffffffff\r\n"[..]);
        let collected = collect_fed(body, &mut feeder, &mut server, &mut input).await;
        let error = collected.expect_err("refused").to_string();
        assert!(
            error.contains("chunked body has an invalid chunk size"),
            "{error}"
        );
    }
}
