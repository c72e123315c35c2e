//! One HTTP/1.1 connection from a local app, served by the agent itself: a request's head is
//! read and parsed here, its call polled inline in the connection's future, its body fed from
//! the socket as the call reads it, and the answer written with its body gathered into few
//! writes. hyper's server spent a third of a proxied request's instruction-cache misses in its
//! dispatcher and second copy of each head (decision 71); this path has none of that.
//!
//! What this server does not do itself it hands on whole: a request that asks for an upgrade,
//! CONNECT, `Expect`, an HTTP/1.0 request, and any head it does not take as it stands (framed
//! two ways, a length that is no number, a head httparse refuses, one too large) go to hyper's
//! server with the connection and every byte read so far ([`Served::Handoff`]), so those are
//! answered exactly as before, from their first byte.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::answer_head::{self, BodyState, Framing};
use super::request_body::{self, BodyFraming, Feeder};
use super::rewound::Rewound;
use crate::body::{self, Body};
use crate::header_room;
use crate::proxy::h1_wire::{ChunkedDecoder, RequestFraming, digits, has_head_end};
use crate::proxy::headers::has_token;
use crate::proxy::instance_exchange::{MessageWriter, Outgoing};

/// Header lines a request head may hold, as hyper's server allowed; more goes to hyper, which
/// refuses it.
pub const MAX_REQUEST_HEADERS: usize = 100;
/// Longest request target taken, as hyper's server took (longer gets its 414).
const MAX_TARGET: usize = u16::MAX as usize - 1;
/// Bytes one read asks the socket for while a head is expected.
const HEAD_READ_SIZE: usize = 8 * 1024;

/// The agent's limits as this server applies them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client has to send a whole head once the connection waits for one
    /// (`limits.headerReadTimeout`); an idle kept-alive connection is closed after it.
    pub header_read_timeout: Duration,
    /// Longest head taken (`limits.maxHeaderBytes`); a longer one goes to hyper, which answers
    /// 431.
    pub max_header_bytes: usize,
}

/// How serving a connection ended.
pub enum Served<I> {
    /// The connection is done: the client closed it, went silent, or an answer was its last.
    Closed,
    /// A request needs hyper's server: the connection, with what was read of it put back.
    Handoff(Rewound<I>),
}

/// A request head read off the connection.
struct Head {
    parts: http::request::Parts,
    body: BodyPlan,
    /// The client did not ask to close after this request.
    keep_alive: bool,
    /// The client takes trailers (`TE: trailers`).
    trailers_allowed: bool,
}

/// Where a header line's name and value lie in the head: from, to.
type FieldSpans = ((usize, usize), (usize, usize));

/// How the request's body is framed.
#[derive(Debug, PartialEq, Eq)]
enum BodyPlan {
    None,
    Length(u64),
    Chunked,
}

/// What reading a head gave.
enum Parsed {
    /// More bytes are needed.
    Partial,
    /// The head, taken off the front of the buffer.
    Head(Box<Head>),
    /// A head this server leaves to hyper's.
    Handoff,
}

/// Serves `io` until the client is done with it, the shutdown token is cancelled between
/// requests, or a request needs hyper's server. `service` answers each request; its future is
/// polled here, inline.
pub async fn serve<I, S, F>(
    mut io: I,
    limits: Limits,
    shutdown: &CancellationToken,
    mut service: S,
) -> io::Result<Served<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<Body>) -> F,
    F: Future<Output = Response<Body>>,
{
    let mut input = BytesMut::new();
    loop {
        let head = match read_head(&mut io, &mut input, &limits, shutdown).await? {
            Some(Parsed::Head(head)) => head,
            Some(Parsed::Handoff) => return Ok(Served::Handoff(Rewound::new(input.freeze(), io))),
            Some(Parsed::Partial) | None => return Ok(Served::Closed),
        };
        let Head {
            parts,
            body: plan,
            keep_alive,
            trailers_allowed,
        } = *head;
        let method = parts.method.clone();
        let (mut feeder, body) = match plan {
            BodyPlan::None | BodyPlan::Length(0) => (None, body::empty()),
            BodyPlan::Length(length) => {
                let (feeder, body) = Feeder::new(BodyFraming::Length(length));
                (Some(feeder), crate::body::boxed(body))
            }
            BodyPlan::Chunked => {
                let decoder = ChunkedDecoder::new(limits.max_header_bytes);
                let (feeder, body) = Feeder::new(BodyFraming::Chunked(decoder));
                (Some(feeder), crate::body::boxed(body))
            }
        };
        // The call is dropped as soon as it answers: what it still held of the request's body
        // is let go, so the rest of the body is read and thrown away, not left unread.
        let answer = {
            let call = std::pin::pin!(service(Request::from_parts(parts, body)));
            request_body::alongside(call, feeder.as_mut(), &mut io, &mut input).await
        };
        let keep_alive = keep_alive && !shutdown.is_cancelled();
        let reusable = write_answer(
            &mut io,
            &mut input,
            feeder.as_mut(),
            answer,
            &method,
            keep_alive,
            trailers_allowed,
        )
        .await?;
        // A body the call did not read to its end leaves the connection mid-request.
        if !reusable || feeder.is_some_and(|f| !f.is_done()) {
            return Ok(Served::Closed);
        }
    }
}

/// Waits for a whole head, within `limits.header_read_timeout` of starting. `None`: the client
/// closed an idle connection, went silent or the shutdown came first.
async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    input: &mut BytesMut,
    limits: &Limits,
    shutdown: &CancellationToken,
) -> io::Result<Option<Parsed>> {
    let deadline = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(deadline);
    let mut scanned = 0;
    loop {
        if has_head_end(input, scanned) {
            match parse_head(input) {
                Parsed::Partial => {}
                done => return Ok(Some(done)),
            }
        }
        scanned = input.len();
        if input.len() > limits.max_header_bytes {
            return Ok(Some(Parsed::Handoff));
        }
        if input.capacity() - input.len() < HEAD_READ_SIZE / 2 {
            input.reserve(HEAD_READ_SIZE);
        }
        let read = tokio::select! {
            biased;
            read = tokio_util::io::read_buf(io, input) => read?,
            () = &mut deadline => {
                tracing::debug!("HTTP/1.1 client sent no whole head within the header read timeout; closing");
                return Ok(None);
            }
            () = shutdown.cancelled(), if input.is_empty() => return Ok(None),
        };
        if read == 0 {
            // A client that stops mid-head gets hyper's answer to what it sent.
            return Ok((!input.is_empty()).then_some(Parsed::Handoff));
        }
    }
}

/// Reads a request head off the front of `input`, when this server takes it as it stands.
fn parse_head(input: &mut BytesMut) -> Parsed {
    // Filled where it lives and read in place: a move copies all of its inline room.
    let mut spans: smallvec::SmallVec<[FieldSpans; 16]> = smallvec::SmallVec::new();
    let scanned = header_room::parse_with_room(MAX_REQUEST_HEADERS, |fields| {
        scan_head(input, fields, &mut spans)
    });
    let scanned = match scanned {
        Ok(httparse::Status::Complete(Some(scanned))) => scanned,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Ok(httparse::Status::Complete(None)) | Err(_) => return Parsed::Handoff,
    };
    let head = input.split_to(scanned.length).freeze();
    match build_head(scanned.method, &head, scanned.target, &spans) {
        Some(built) => Parsed::Head(Box::new(built)),
        None => {
            // Put back: hyper reads it from its first byte. Rare, so the copy does not matter.
            let mut whole = BytesMut::with_capacity(head.len() + input.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(input);
            *input = whole;
            Parsed::Handoff
        }
    }
}

/// What [`scan_head`] finds of a request head. Where its pieces lie in the buffer, so the head
/// can be split off and its values shared with it rather than copied.
struct Scanned {
    /// The head's length, its blank line included.
    length: usize,
    method: Method,
    target: (usize, usize),
}

/// Parses the head at the front of `input` with room for its lines in `fields`, adding where
/// each line's name and value lie to `spans`. `Complete(None)`: a head this server leaves to
/// hyper's.
fn scan_head<'b>(
    input: &'b [u8],
    fields: &mut [header_room::Field<'b>],
    spans: &mut smallvec::SmallVec<[FieldSpans; 16]>,
) -> Result<httparse::Status<Option<Scanned>>, httparse::Error> {
    let mut request = httparse::Request::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        input,
        fields,
    )? {
        httparse::Status::Complete(length) => length,
        httparse::Status::Partial => return Ok(httparse::Status::Partial),
    };
    let handoff = Ok(httparse::Status::Complete(None));
    if request.version != Some(1) {
        return handoff;
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return handoff;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return handoff;
    };
    if method == Method::CONNECT || target.len() > MAX_TARGET {
        return handoff;
    }
    header_room::add_field_spans(input, request.headers, spans);
    Ok(httparse::Status::Complete(Some(Scanned {
        length,
        method,
        target: header_room::span(input, target.as_bytes()),
    })))
}

/// The request a parsed head describes, or `None` when hyper's server should take it.
fn build_head(
    method: Method,
    head: &Bytes,
    target: (usize, usize),
    spans: &[FieldSpans],
) -> Option<Head> {
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1)).ok()?;
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut keep_alive = true;
    let mut trailers_allowed = false;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for &(name, value) in spans {
        let name = HeaderName::from_bytes(&head[name.0..name.1]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(value.0..value.1)).ok()?;
        match name {
            UPGRADE | EXPECT => return None,
            CONTENT_LENGTH => {
                if length.is_some() {
                    return None;
                }
                length = Some(digits(value.as_bytes())?);
            }
            TRANSFER_ENCODING => {
                if chunked || !value.as_bytes().eq_ignore_ascii_case(b"chunked") {
                    return None;
                }
                chunked = true;
            }
            CONNECTION => keep_alive &= !has_token(&value, "close"),
            TE => trailers_allowed |= has_token(&value, "trailers"),
            _ => {}
        }
        headers.append(name, value);
    }
    let body = match (length, chunked) {
        (Some(_), true) => return None,
        (Some(length), false) => BodyPlan::Length(length),
        (None, true) => BodyPlan::Chunked,
        (None, false) => BodyPlan::None,
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    let (parts, ()) = request.into_parts();
    Some(Head {
        parts,
        body,
        keep_alive,
        trailers_allowed,
    })
}

/// Writes `answer` to a `method` request, still feeding the request's body to whoever reads
/// it. `Ok(true)`: the connection may carry another request.
async fn write_answer<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    input: &mut BytesMut,
    mut feeder: Option<&mut Feeder>,
    answer: Response<Body>,
    method: &Method,
    keep_alive: bool,
    trailers_allowed: bool,
) -> io::Result<bool> {
    let (parts, body) = answer.into_parts();
    let state = if body.is_end_stream() {
        BodyState::Ended
    } else {
        match body.size_hint().exact() {
            Some(length) => BodyState::Known(length),
            None => BodyState::Unknown,
        }
    };
    let mut head = Vec::new();
    let written = answer_head::encode(&parts, method, state, keep_alive, &mut head)
        .map_err(io::Error::other)?;
    // Only a chunked body can carry trailers; a body of known length is left unwrapped.
    let body = match (written.framing, written.trailer_names) {
        (Framing::Length(_), _) => body,
        (Framing::Chunked, Some(names)) if trailers_allowed => {
            body::boxed(AllowedTrailers::new(body, names))
        }
        (Framing::Chunked, _) => body::boxed(AllowedTrailers::none(body)),
    };
    let framing = match written.framing {
        Framing::Length(length) => RequestFraming::Length(length),
        Framing::Chunked => RequestFraming::Chunked,
    };
    let (_, mut writer) = MessageWriter::new(
        Outgoing {
            method: method.clone(),
            head: Bytes::from(head),
            body,
            framing,
        },
        false,
    );
    std::future::poll_fn(|cx| {
        if let Some(feeder) = feeder.as_deref_mut() {
            feeder.poll_feed(cx, io, input);
        }
        writer.poll_write(cx, io)
    })
    .await?;
    Ok(!written.last)
}

/// An answer's body with only the trailer fields the client may get: those its `Trailer`
/// header announced, when the client said `TE: trailers`; none otherwise, as hyper's server.
struct AllowedTrailers {
    body: Body,
    names: Option<Vec<HeaderName>>,
}

impl AllowedTrailers {
    fn new(body: Body, names: Vec<HeaderName>) -> Self {
        AllowedTrailers {
            body,
            names: Some(names),
        }
    }

    fn none(body: Body) -> Self {
        AllowedTrailers { body, names: None }
    }
}

impl http_body::Body for AllowedTrailers {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        loop {
            let frame = match std::task::ready!(std::pin::Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                other => return std::task::Poll::Ready(other),
            };
            let trailers = match frame.into_trailers() {
                Ok(trailers) => trailers,
                Err(frame) => return std::task::Poll::Ready(Some(Ok(frame))),
            };
            let Some(names) = &self.names else {
                continue;
            };
            let mut allowed = HeaderMap::new();
            for (name, value) in &trailers {
                if names.contains(name) {
                    allowed.append(name.clone(), value.clone());
                }
            }
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::trailers(allowed))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request head with `lines` header lines besides `Host`, and a body after it.
    fn head_with(lines: usize) -> BytesMut {
        let mut text = String::from("GET /path HTTP/1.1\r\nHost: svc\r\n");
        for line in 0..lines {
            text.push_str(&format!("x-line-{line}: value {line}\r\n"));
        }
        text.push_str("\r\nafter");
        BytesMut::from(text.as_bytes())
    }

    #[test]
    fn a_head_with_more_lines_than_the_inline_room_is_taken_whole() {
        for lines in [3, header_room::INLINE, MAX_REQUEST_HEADERS - 1] {
            let mut input = head_with(lines);
            let Parsed::Head(head) = parse_head(&mut input) else {
                panic!("a head of {lines} lines besides Host was not taken");
            };
            assert_eq!(head.parts.headers.len(), lines + 1);
            assert_eq!(head.parts.headers["host"], "svc");
            assert_eq!(
                head.parts.headers[format!("x-line-{}", lines - 1)],
                format!("value {}", lines - 1)
            );
            assert_eq!(head.parts.uri, "/path");
            assert_eq!(
                &input[..],
                b"after",
                "the head, and only the head, is taken off"
            );
        }
    }

    #[test]
    fn a_head_over_the_most_lines_goes_to_hyper_whole() {
        let mut input = head_with(MAX_REQUEST_HEADERS);
        let before = input.clone();
        assert!(matches!(parse_head(&mut input), Parsed::Handoff));
        assert_eq!(input, before);
    }
}
