//! One request and its answer on a kept-alive HTTP/1.1 connection to an instance, driven by the
//! call that sends it and then by whoever reads the answer's body: no connection task and no
//! channel between them (decision 55). While an answer's body is read, the rest of the
//! request's body is still written, so an instance may answer before it has read the whole
//! request, as with hyper's client.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use smallvec::SmallVec;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::h1_wire::{
    AnswerFraming, Chunk, ChunkedDecoder, RequestFraming, encode_last_chunk, has_head_end,
    parse_answer_head,
};
use crate::body::{self, Body, BoxError};
use crate::error::{Cause, ProxyError};
use crate::socket_send::SocketSend;

/// Bytes a connection reads at a time while an answer's head or a short body is expected.
const READ_SIZE: usize = 8 * 1024;
/// Bytes read at a time while a long body streams: fewer system calls per megabyte.
const LONG_READ_SIZE: usize = 64 * 1024;
/// Request bytes gathered for one write: the head with the first body frames, or several
/// small frames, go in one system call.
const WRITE_GATHER: usize = 64 * 1024;
/// Pieces one write hands the kernel.
const WRITE_PIECES: usize = 8;

/// An open connection to an instance, between exchanges or in one.
pub struct Connection {
    stream: SocketSend,
    /// Bytes read and not yet used.
    read: BytesMut,
}

impl Connection {
    /// A connection over `stream`, nothing read yet.
    pub fn new(stream: TcpStream) -> Self {
        Connection {
            stream: SocketSend::new(stream),
            read: BytesMut::new(),
        }
    }

    /// Whether the instance closed the connection (or sent bytes nobody asked for) while it
    /// was idle. Costs no system call while the socket has not become readable.
    pub fn is_closed(&self) -> bool {
        let mut byte = [0u8; 1];
        !matches!(self.stream.get_ref().try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads more bytes into the buffer: `Ok(0)` at the instance's end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, size: usize) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < size / 2 {
            self.read.reserve(size);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)
    }
}

/// A request ready for the wire: its head encoded, its body and how the body is framed.
pub struct Outgoing {
    /// Method, for the answer's framing (`HEAD`).
    pub method: Method,
    /// The head's bytes.
    pub head: Bytes,
    /// The body, not yet read.
    pub body: Body,
    /// How the body goes.
    pub framing: RequestFraming,
}

/// Why an exchange failed.
pub enum Failed {
    /// Nothing of the request's body was read and its head did not go whole: the instance
    /// cannot have processed it, so it may go again on another connection.
    Unwritten(Outgoing, io::Error),
    /// Anything else.
    Other(ProxyError),
}

/// Writes a message's head and body: a request toward an instance, or an answer of the own
/// HTTP/1.1 server (`http1::server`), gathering the head with the first frames of the body and
/// small frames with each other into one write.
pub struct MessageWriter {
    /// Encoded bytes not yet written, in order.
    pending: SmallVec<[Bytes; WRITE_PIECES]>,
    /// The body, until it ends.
    body: Option<Body>,
    /// Length left to send, or chunked.
    framing: RequestFraming,
    /// Whether a frame of the body has been read: then the request cannot go again.
    body_started: bool,
    /// Whether the body may be read before the head has gone: not on a reused connection,
    /// where a head that cannot be written must leave the request whole to send again.
    gather_with_head: bool,
    /// Whether the head has been written whole.
    head_written: bool,
    /// Whether the caller's body failed: the instance would wait for the rest forever, so
    /// the exchange ends there, as hyper's client ended it.
    caller_failed: bool,
}

impl MessageWriter {
    /// A writer of `request`; `reused` when the connection carried an earlier one, so that
    /// the head goes alone and a head that cannot be written leaves the request whole.
    pub fn new(request: Outgoing, reused: bool) -> (Method, Self) {
        let ended = http_body::Body::is_end_stream(&request.body)
            || request.framing == RequestFraming::Length(0);
        let mut pending = SmallVec::new();
        pending.push(request.head);
        let writer = MessageWriter {
            pending,
            body: (!ended).then_some(request.body),
            framing: request.framing,
            body_started: false,
            gather_with_head: !reused,
            head_written: false,
            caller_failed: false,
        };
        (request.method, writer)
    }

    /// The request as it was, when no frame of its body has been read.
    fn into_outgoing(mut self, method: Method, head: Bytes) -> Option<Outgoing> {
        if self.body_started {
            return None;
        }
        Some(Outgoing {
            method,
            head,
            body: self.body.take().unwrap_or_else(body::empty),
            framing: self.framing,
        })
    }

    fn is_done(&self) -> bool {
        self.pending.is_empty() && self.body.is_none()
    }

    /// Writes what is ready; `Ready(Ok)` once the whole message has gone.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut W,
    ) -> Poll<io::Result<()>> {
        loop {
            self.gather(cx)?;
            if self.pending.is_empty() {
                return if self.body.is_none() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
            let written = {
                let slices: SmallVec<[IoSlice<'_>; WRITE_PIECES]> = self
                    .pending
                    .iter()
                    .map(|piece| IoSlice::new(piece))
                    .collect();
                ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
    }

    /// Reads body frames that are ready into `pending`, up to [`WRITE_GATHER`] bytes.
    fn gather(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.pending.len() < WRITE_PIECES - 2
            && (self.head_written || self.gather_with_head)
            && self.pending.iter().map(Bytes::len).sum::<usize>() < WRITE_GATHER
        {
            let Some(body) = self.body.as_mut() else {
                return Ok(());
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Some(Err(error))) => {
                    self.body_started = true;
                    self.caller_failed = true;
                    return Err(io::Error::other(error));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    self.body_started = true;
                    self.encode(frame)?;
                }
                Poll::Ready(None) => {
                    self.body = None;
                    self.end(None)?;
                }
            }
        }
        Ok(())
    }

    /// Frames one body frame into `pending`.
    fn encode(&mut self, frame: Frame<Bytes>) -> io::Result<()> {
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    self.body = None;
                    self.end(Some(&trailers))?;
                }
                return Ok(());
            }
        };
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            RequestFraming::Length(left) => {
                *left = left.checked_sub(data.len() as u64).ok_or_else(|| {
                    io::Error::other("the request body is longer than its content-length")
                })?;
                self.pending.push(data);
            }
            RequestFraming::Chunked => {
                self.pending
                    .push(Bytes::from(format!("{:X}\r\n", data.len()).into_bytes()));
                self.pending.push(data);
                self.pending.push(Bytes::from_static(b"\r\n"));
            }
        }
        Ok(())
    }

    /// The body has ended (with `trailers`, perhaps): the last chunk, or a length check.
    fn end(&mut self, trailers: Option<&http::HeaderMap>) -> io::Result<()> {
        match &self.framing {
            RequestFraming::Length(0) => Ok(()),
            RequestFraming::Length(_) => Err(io::Error::other(
                "the request body is shorter than its content-length",
            )),
            RequestFraming::Chunked => {
                let last = encode_last_chunk(trailers);
                self.pending.push(last);
                Ok(())
            }
        }
    }

    /// Drops `written` bytes from the front of `pending`.
    fn advance(&mut self, mut written: usize) {
        let mut done = 0;
        for piece in &mut self.pending {
            if written >= piece.len() {
                written -= piece.len();
                done += 1;
            } else {
                piece.advance(written);
                break;
            }
        }
        self.pending.drain(..done);
        if self.pending.is_empty() || done > 0 {
            self.head_written = true;
        }
    }
}

/// Sends `request` on `connection` and reads the answer's head. The answer's body reads the
/// rest from the connection; `finished` gets the connection back when the exchange has ended
/// cleanly and it may carry another request.
pub async fn exchange<F>(
    mut connection: Connection,
    request: Outgoing,
    reused: bool,
    max_head: usize,
    finished: F,
) -> Result<Response<Body>, Failed>
where
    F: FnOnce(Connection) + Send + Sync + 'static,
{
    let head = request.head.clone();
    let (method, mut writer) = MessageWriter::new(request, reused);
    let mut write_failed = None;
    // How much of the buffer has been looked through for the head's end.
    let mut searched = 0;
    // Interim answers skipped so far.
    let mut interim = 0;
    let answer = std::future::poll_fn(|cx| {
        if write_failed.is_none()
            && !writer.is_done()
            && let Poll::Ready(Err(error)) = writer.poll_write(cx, &mut connection.stream)
        {
            if writer.caller_failed {
                return Poll::Ready(Err(Stop::Failed(Cause::new(error))));
            }
            if !writer.head_written {
                return Poll::Ready(Err(Stop::Unwritten(error)));
            }
            // The instance may have answered and closed before reading the whole body.
            write_failed = Some(error);
        }
        loop {
            if has_head_end(&connection.read, searched) || connection.read.len() >= max_head {
                let before = connection.read.len();
                match parse_answer_head(&mut connection.read, &method, max_head, &mut interim) {
                    Ok(Some(answer)) => return Poll::Ready(Ok(answer)),
                    Ok(None) => {}
                    Err(error) => return Poll::Ready(Err(Stop::Failed(Cause::new(error)))),
                }
                // Interim answers were read off the front; the rest may hold the final one.
                if connection.read.len() < before && has_head_end(&connection.read, 0) {
                    searched = 0;
                    continue;
                }
            }
            searched = connection.read.len();
            match ready!(connection.poll_fill(cx, READ_SIZE)) {
                Ok(0) => {
                    let error = write_failed.take().unwrap_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the instance closed the connection before answering",
                        )
                    });
                    return Poll::Ready(Err(Stop::Failed(Cause::new(error))));
                }
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(Stop::Failed(Cause::new(error)))),
            }
        }
    })
    .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(Stop::Unwritten(error)) => {
            return Err(match writer.into_outgoing(method, head) {
                Some(outgoing) => Failed::Unwritten(outgoing, error),
                None => Failed::Other(ProxyError::Reset(Cause::new(error))),
            });
        }
        Err(Stop::Failed(cause)) => return Err(Failed::Other(ProxyError::Reset(cause))),
    };
    // A connection whose request did not go whole, or is still going, is not taken again.
    let keep_alive = answer.keep_alive && write_failed.is_none() && writer.is_done();
    let writer = (!writer.is_done() && write_failed.is_none()).then_some(writer);
    let response = Response::from_parts(answer.parts, ());
    // The usual answer: short, whole in the buffer already, the request already sent.
    if let AnswerFraming::Length(length) = answer.framing
        && writer.is_none()
        && connection.read.len() as u64 >= length
    {
        let data = connection.read.split_to(length as usize).freeze();
        if keep_alive && connection.read.is_empty() {
            finished(connection);
        }
        let body = if length == 0 {
            body::empty()
        } else {
            body::full(data)
        };
        return Ok(response.map(|()| body));
    }
    let framing = match answer.framing {
        AnswerFraming::Length(length) => BodyFraming::Length(length),
        AnswerFraming::Chunked => BodyFraming::Chunked(ChunkedDecoder::new(max_head)),
        AnswerFraming::UntilClose => BodyFraming::UntilClose,
    };
    let body = AnswerBody {
        connection: Some(connection),
        writer,
        framing,
        keep_alive,
        finished: Some(Box::new(finished)),
        failure: body::LateError::default(),
    };
    Ok(response.map(|()| body::boxed(body)))
}

/// Why reading an answer's head stopped.
enum Stop {
    /// Writing the head failed: the instance has not seen the whole request.
    Unwritten(io::Error),
    /// Anything after the head went.
    Failed(Cause),
}

/// How the rest of an answer's body is delimited.
enum BodyFraming {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// Gives a connection back for another request.
type Finished = Box<dyn FnOnce(Connection) + Send + Sync>;

/// An answer's body read straight off its connection.
struct AnswerBody {
    /// `None` once the body has ended or failed.
    connection: Option<Connection>,
    /// The rest of the request, while it is still being written.
    writer: Option<MessageWriter>,
    framing: BodyFraming,
    /// Whether the connection may carry another request once this body ends: never while
    /// the request was still being written when the answer began.
    keep_alive: bool,
    finished: Option<Finished>,
    /// A failure, given to the reader a poll after it came ([`body::LateError`]).
    failure: body::LateError,
}

impl AnswerBody {
    /// The body has ended: the connection goes back when it is clean, else it closes.
    fn end(&mut self) {
        if let Some(connection) = self.connection.take()
            && self.keep_alive
            && connection.read.is_empty()
            && let Some(finished) = self.finished.take()
        {
            finished(connection);
        }
    }

    fn fail(
        &mut self,
        cx: &mut Context<'_>,
        error: impl Into<BoxError>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.connection = None;
        self.failure.defer(cx, error.into())
    }
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(error) = this.failure.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let Some(connection) = this.connection.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(writer) = this.writer.as_mut() {
            match writer.poll_write(cx, &mut connection.stream) {
                Poll::Ready(Ok(())) => this.writer = None,
                Poll::Ready(Err(error)) if writer.caller_failed => return this.fail(cx, error),
                Poll::Ready(Err(error)) => {
                    tracing::debug!(%error, "writing the rest of a request to an instance failed after its answer began");
                    this.writer = None;
                    this.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            let read = &mut connection.read;
            match &mut this.framing {
                BodyFraming::Length(left) => {
                    if *left == 0 {
                        this.end();
                        return Poll::Ready(None);
                    }
                    if !read.is_empty() {
                        let take = (*left).min(read.len() as u64);
                        let data = read.split_to(take as usize).freeze();
                        *left -= take;
                        if *left == 0 {
                            this.end();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                BodyFraming::Chunked(decoder) => match decoder.decode(read) {
                    Ok(Some(Chunk::Data(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Some(Chunk::Trailers(trailers))) => {
                        this.end();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Some(Chunk::End)) => {
                        this.end();
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                    Err(error) => return this.fail(cx, error),
                },
                BodyFraming::UntilClose => {
                    if !read.is_empty() {
                        let data = read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            let size = match this.framing {
                BodyFraming::Length(left) if left <= READ_SIZE as u64 => READ_SIZE,
                _ => LONG_READ_SIZE,
            };
            match ready!(connection.poll_fill(cx, size)) {
                Ok(0) if matches!(this.framing, BodyFraming::UntilClose) => {
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail(
                        cx,
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the instance closed the connection before the end of its answer",
                        ),
                    );
                }
                Ok(_) => {}
                Err(error) => return this.fail(cx, error),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.failure.waits()
            && (self.connection.is_none() || matches!(self.framing, BodyFraming::Length(0)))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            BodyFraming::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}
