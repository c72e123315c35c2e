//! HTTP/1.1 as it goes on the wire toward this host's instances: a request's head written from
//! its parsed parts, an answer's head read into `http` types, and the framing of both bodies
//! (RFC 9112 §6 and §7). The pool's connections speak it directly (decision 55), so a call no
//! longer crosses a channel and a connection task, and an answer's body is read by whoever
//! polls it. The rules follow hyper's client, which did this before: the same framing for a
//! request body, the same answers taken as errors.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, COOKIE, TRANSFER_ENCODING};
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri, Version};

use super::headers::{has_token, is_hop_by_hop, strip_hop_by_hop, transfer_codings};
use crate::header_room;

/// Header lines an instance's answer head (or its trailers) may hold, as hyper's client
/// allowed; the head's bytes are bounded by `limits.maxHeaderBytes`.
pub const MAX_ANSWER_HEADERS: usize = 100;
/// Interim (1xx) answers taken before the final one. RFC 9110 §15.2 sets no limit, but a
/// request rarely meets more than two (100 Continue, 103 Early Hints); an instance sending
/// them without end must not keep a call waiting for ever.
pub const MAX_INTERIM_ANSWERS: usize = 32;
/// Longest chunk-size line of a chunked answer (the size and any extensions): no instance
/// needs more, and a line without end must not grow a buffer.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Where a piece of a head is in its buffer: from, to.
type Span = (usize, usize);

/// Why an instance's bytes could not be read as an HTTP/1.1 answer.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not HTTP/1.x, or a head httparse refused.
    #[error("the instance's answer is not valid HTTP/1.1: {0}")]
    Parse(#[from] httparse::Error),
    /// The answer's head ran past the head limit.
    #[error("the instance's answer head is larger than {0} bytes")]
    HeadTooLarge(usize),
    /// A header name, value, status or length the `http` types refuse.
    #[error("the instance's answer has an invalid {0}")]
    Invalid(&'static str),
    /// A 101 to a request that asked for no upgrade.
    #[error("the instance switched protocols unasked")]
    UnaskedUpgrade,
    /// More interim answers than [`MAX_INTERIM_ANSWERS`] before a final one.
    #[error("the instance sent more than {0} interim (1xx) answers")]
    TooManyInterim(usize),
}

/// How a request's body goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFraming {
    /// Exactly this many bytes (`Content-Length`, or none for an empty body).
    Length(u64),
    /// Chunked, ending with the trailer fields the body brings.
    Chunked,
}

/// Decides a request body's framing and sets the headers that say it: a body that has ended
/// sends nothing more (and says `content-length: 0` unless it is a `GET`, `HEAD`, `DELETE` or
/// `CONNECT`, as hyper's HTTP/2 client sends it to a peer); a `Content-Length` the caller gave
/// is kept; a known size becomes one; any other body goes chunked, whatever the method. (hyper's
/// client sent no body for a `GET`, `HEAD` or `CONNECT` of unknown size; the pool reads such a
/// body's first frame first, so one that goes chunked has something in it.)
pub fn request_framing(
    method: &Method,
    headers: &mut HeaderMap,
    ended: bool,
    exact_size: Option<u64>,
) -> RequestFraming {
    // Transfer-Encoding is hop-by-hop; whatever arrived was removed, this side decides it.
    headers.remove(TRANSFER_ENCODING);
    if ended {
        if !matches!(
            *method,
            Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
        ) && !headers.contains_key(CONTENT_LENGTH)
        {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        return RequestFraming::Length(0);
    }
    if let Some(length) = content_length(headers) {
        return RequestFraming::Length(length);
    }
    if let Some(length) = exact_size {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        return RequestFraming::Length(length);
    }
    headers.remove(CONTENT_LENGTH);
    headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    RequestFraming::Chunked
}

/// Fields that must not travel as trailers (RFC 9110 §6.5.1), as hyper's encoder refuses them.
fn is_valid_trailer_field(name: &HeaderName) -> bool {
    use http::header::*;
    !matches!(
        *name,
        AUTHORIZATION
            | CACHE_CONTROL
            | CONTENT_ENCODING
            | CONTENT_LENGTH
            | CONTENT_RANGE
            | CONTENT_TYPE
            | HOST
            | MAX_FORWARDS
            | SET_COOKIE
            | TRAILER
            | TRANSFER_ENCODING
            | TE
    )
}

/// Appends `method target HTTP/1.1`, every header line and the blank line to `dst`. The target
/// is written as the request holds it: the inbound side gives origin form.
pub fn encode_request_head(method: &Method, uri: &Uri, headers: &HeaderMap, dst: &mut Vec<u8>) {
    dst.reserve(32 + headers.len() * 32);
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    match uri.path_and_query() {
        Some(target) if uri.scheme().is_none() => dst.extend_from_slice(target.as_str().as_bytes()),
        _ => dst.extend_from_slice(uri.to_string().as_bytes()),
    }
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    encode_fields(headers, dst);
    dst.extend_from_slice(b"\r\n");
}

/// Appends `name: value` lines. `http` types hold no CR or LF, so nothing can break a line.
/// Several `Cookie` fields (an HTTP/2 client sends one per cookie) become one line joined by
/// `; `, as RFC 9113 §8.2.3 requires before an HTTP/1.1 hop: servers read only one.
pub fn encode_fields(headers: &HeaderMap, dst: &mut Vec<u8>) {
    // A map yields the values of one name one after another.
    let mut after_cookie = false;
    for (name, value) in headers {
        let cookie = name == COOKIE;
        if cookie && after_cookie {
            dst.truncate(dst.len() - 2);
            dst.extend_from_slice(b"; ");
            dst.extend_from_slice(value.as_bytes());
            dst.extend_from_slice(b"\r\n");
        } else {
            encode_field(name, value, dst);
        }
        after_cookie = cookie;
    }
}

/// Appends one `name: value` line.
fn encode_field(name: &HeaderName, value: &HeaderValue, dst: &mut Vec<u8>) {
    dst.extend_from_slice(name.as_str().as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value.as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// The trailer section ending a chunked request body: the last chunk, the fields of
/// `trailers` that may travel as trailers, and the blank line. Every field goes, announced in
/// a `Trailer` header or not (RFC 9110 §6.6.2 makes announcing them a SHOULD, and gRPC-style
/// senders never do): a client talking to the instance directly would send them all, and an
/// instance that does not want them discards them (RFC 9112 §7.1.2).
pub fn encode_last_chunk(trailers: Option<&HeaderMap>) -> Bytes {
    let Some(trailers) = trailers.filter(|trailers| !trailers.is_empty()) else {
        return Bytes::from_static(b"0\r\n\r\n");
    };
    let mut dst = b"0\r\n".to_vec();
    for (name, value) in trailers {
        if is_valid_trailer_field(name) && !is_hop_by_hop(name) {
            encode_field(name, value, &mut dst);
        }
    }
    dst.extend_from_slice(b"\r\n");
    Bytes::from(dst)
}

/// How an answer's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFraming {
    /// This many bytes; zero for `HEAD`, 204 and 304.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the instance closes the connection.
    UntilClose,
}

/// An answer's head and what it says about its body and its connection.
#[derive(Debug)]
pub struct AnswerHead {
    /// Status, version, headers as the instance sent them (framing ones included), except a
    /// `Connection` that only said `keep-alive` or `close`: it is hop-by-hop and names no
    /// other header, so it is read here and not kept.
    pub parts: Parts,
    /// How its body ends.
    pub framing: AnswerFraming,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
}

/// What [`scan_answer_head`] finds: the head's length, the status code, the reason phrase's
/// span if any, and the HTTP/1 minor version.
type ScannedAnswer = (usize, u16, Option<Span>, u8);

/// Parses the answer head at the front of `buf` with room for its lines in `fields`, adding
/// where each line's name and value lie to `spans`.
fn scan_answer_head<'b>(
    buf: &'b [u8],
    fields: &mut [header_room::Field<'b>],
    spans: &mut smallvec::SmallVec<[(Span, Span); 16]>,
) -> Result<httparse::Status<ScannedAnswer>, httparse::Error> {
    let mut answer = httparse::Response::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut answer,
        buf,
        fields,
    )? {
        httparse::Status::Partial => return Ok(httparse::Status::Partial),
        httparse::Status::Complete(length) => length,
    };
    header_room::add_field_spans(buf, answer.headers, spans);
    Ok(httparse::Status::Complete((
        length,
        answer.code.unwrap_or_default(),
        answer.reason.map(|r| header_room::span(buf, r.as_bytes())),
        answer.version.unwrap_or_default(),
    )))
}

/// Reads an answer's head off the front of `buf`, skipping interim (1xx) answers as hyper's
/// client did, counting them in `interim` (the caller keeps it across calls for one request)
/// up to [`MAX_INTERIM_ANSWERS`]. `Ok(None)`: more bytes are needed. A head longer than
/// `max_head` is an error, so an instance cannot make the buffer grow without bound.
pub fn parse_answer_head(
    buf: &mut BytesMut,
    method: &Method,
    max_head: usize,
    interim: &mut usize,
) -> Result<Option<AnswerHead>, WireError> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // Filled where it lives and read in place: a move copies all of its inline room.
        let mut spans: smallvec::SmallVec<[(Span, Span); 16]> = smallvec::SmallVec::new();
        let scanned = header_room::parse_with_room(MAX_ANSWER_HEADERS, |fields| {
            scan_answer_head(buf, fields, &mut spans)
        })?;
        let (length, code, reason, minor) = match scanned {
            httparse::Status::Partial if buf.len() >= max_head => {
                return Err(WireError::HeadTooLarge(max_head));
            }
            httparse::Status::Partial => return Ok(None),
            httparse::Status::Complete(found) => found,
        };
        if length > max_head {
            return Err(WireError::HeadTooLarge(max_head));
        }
        let head = buf.split_to(length).freeze();
        let status = StatusCode::from_u16(code).map_err(|_| WireError::Invalid("status"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(WireError::UnaskedUpgrade);
            }
            *interim += 1;
            if *interim > MAX_INTERIM_ANSWERS {
                return Err(WireError::TooManyInterim(MAX_INTERIM_ANSWERS));
            }
            continue;
        }
        let version = if minor == 1 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let mut headers = HeaderMap::with_capacity(spans.len());
        let mut keep_alive = version == Version::HTTP_11;
        let mut close = false;
        // Noted on the way, so framing needs no lookups in the map.
        let mut has_transfer_encoding = false;
        let mut length = LengthLines::None;
        for &(name, value) in &spans {
            let name = HeaderName::from_bytes(&head[name.0..name.1])
                .map_err(|_| WireError::Invalid("header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value.0..value.1))
                .map_err(|_| WireError::Invalid("header value"))?;
            has_transfer_encoding |= name == TRANSFER_ENCODING;
            if name == CONTENT_LENGTH {
                length = length.and(&value);
            }
            if name == CONNECTION {
                if close || has_token(&value, "close") {
                    close = true;
                    keep_alive = false;
                } else if !keep_alive {
                    keep_alive = has_token(&value, "keep-alive");
                }
                // Hop-by-hop, and naming no other header: nothing for the caller, and one
                // header fewer to strip.
                let bare = value.as_bytes();
                if bare.eq_ignore_ascii_case(b"keep-alive") || bare.eq_ignore_ascii_case(b"close") {
                    continue;
                }
            }
            headers.append(name, value);
        }
        let mut answer = Response::new(());
        *answer.status_mut() = status;
        *answer.version_mut() = version;
        if let Some((from, to)) = reason
            && Some(&head[from..to]) != status.canonical_reason().map(str::as_bytes)
            && let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(head.slice(from..to))
        {
            answer.extensions_mut().insert(phrase);
        }
        *answer.headers_mut() = headers;
        let (mut parts, ()) = answer.into_parts();
        let has_length = length != LengthLines::None;
        let framing = answer_framing(&parts, method, has_transfer_encoding, length)?;
        // `Transfer-Encoding` decides the framing; a length beside it is stale and must not
        // be forwarded (RFC 9112 §6.3), or the caller would cut the body at it.
        if has_transfer_encoding && has_length {
            parts.headers.remove(CONTENT_LENGTH);
        } else if length == LengthLines::Other {
            one_plain_length(&mut parts.headers);
        }
        // Read until close, or framed two ways (RFC 9112 §6.3: the connection must close).
        if framing == AnswerFraming::UntilClose || (framing == AnswerFraming::Chunked && has_length)
        {
            keep_alive = false;
        }
        return Ok(Some(AnswerHead {
            parts,
            framing,
            keep_alive,
        }));
    }
}

/// Whether `buf` holds a whole head: a line break, an optional CR and another line break,
/// looked for from `from` on. The caller keeps where it looked, so a head that trickles in a
/// byte at a time is scanned once, not once per byte, before httparse reads it.
pub fn has_head_end(buf: &[u8], from: usize) -> bool {
    let from = from.saturating_sub(2).min(buf.len());
    let mut at = from;
    while let Some(offset) = buf[at..].iter().position(|&b| b == b'\n') {
        let newline = at + offset;
        match buf.get(newline + 1) {
            Some(b'\n') => return true,
            Some(b'\r') if buf.get(newline + 2) == Some(&b'\n') => return true,
            _ => at = newline + 1,
        }
    }
    false
}

/// How the body of an answer with `parts` to a `method` request ends (RFC 9112 §6.3), given
/// whether it has `Transfer-Encoding` and `Content-Length` lines.
fn answer_framing(
    parts: &Parts,
    method: &Method,
    has_transfer_encoding: bool,
    length: LengthLines,
) -> Result<AnswerFraming, WireError> {
    if matches!(parts.status.as_u16(), 204 | 304) || *method == Method::HEAD {
        return Ok(AnswerFraming::Length(0));
    }
    if has_transfer_encoding {
        if parts.version == Version::HTTP_10 {
            return Err(WireError::Invalid("transfer-encoding in HTTP/1.0"));
        }
        // Chunked is the only coding the agent reads. The bytes of any other (`gzip`,
        // `identity`) would reach the caller without the hop-by-hop header that names it, a
        // body it cannot read; nginx and Envoy refuse such answers too.
        let mut codings = transfer_codings(&parts.headers).peekable();
        let chunked = codings.peek().is_some()
            && codings.all(|coding| coding.eq_ignore_ascii_case("chunked"));
        return if chunked {
            Ok(AnswerFraming::Chunked)
        } else {
            Err(WireError::Invalid("a transfer coding other than chunked"))
        };
    }
    match length {
        LengthLines::None => Ok(AnswerFraming::UntilClose),
        LengthLines::Plain(length) => Ok(AnswerFraming::Length(length)),
        LengthLines::Other => content_length(&parts.headers)
            .map(AnswerFraming::Length)
            .ok_or(WireError::Invalid("content-length")),
    }
}

/// What an answer head's `Content-Length` lines say, noted as the head is read so that the
/// usual one, a single plain number, needs no lookup in the map afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LengthLines {
    /// No `Content-Length` line.
    None,
    /// One line, digits only.
    Plain(u64),
    /// Anything else (several lines, a list, or no number): read from the map.
    Other,
}

impl LengthLines {
    /// These lines and one more, `value`.
    fn and(self, value: &HeaderValue) -> LengthLines {
        match (self, digits(value.as_bytes())) {
            (LengthLines::None, Some(length)) => LengthLines::Plain(length),
            _ => LengthLines::Other,
        }
    }
}

/// The one length every `Content-Length` line (and every comma-separated value) gives;
/// `None` when there is none, or they differ, or one is not a number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        // The usual value, digits only, is read without splitting it.
        if let Some(parsed) = digits(value.as_bytes()) {
            if length.is_some_and(|seen| seen != parsed) {
                return None;
            }
            length = Some(parsed);
            continue;
        }
        for part in value.to_str().ok()?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let parsed: u64 = part.parse().ok()?;
            if length.is_some_and(|seen| seen != parsed) {
                return None;
            }
            length = Some(parsed);
        }
    }
    length
}

/// Leaves `Content-Length` as one plain number. A length given twice or as a list (`3, 3`,
/// which RFC 9110 §8.6 lets a recipient replace by the one number) is rewritten: an HTTP/2
/// peer (an HTTP/2 caller, or the mesh's tunnel) resets a stream whose length is not a plain
/// number. One that is no number at all frames nothing here (a `HEAD`, 204 or 304 answer;
/// elsewhere it was refused already) and is dropped for the same reason.
fn one_plain_length(headers: &mut HeaderMap) {
    let mut lines = headers.get_all(CONTENT_LENGTH).iter();
    if let (Some(line), None) = (lines.next(), lines.next())
        && digits(line.as_bytes()).is_some()
    {
        return;
    }
    match content_length(headers) {
        Some(length) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        }
        None => {
            headers.remove(CONTENT_LENGTH);
        }
    }
}

/// The number `text` spells in decimal, when it is only digits and fits.
pub fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// What a chunked body gave next.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields after the last chunk; the body has ended.
    Trailers(HeaderMap),
    /// The last chunk without trailers; the body has ended.
    End,
}

/// Reads a chunked body (RFC 9112 §7.1) from a buffer the caller fills.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    max_trailers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk, at the trailer section.
    Trailers,
    /// Done.
    Ended,
}

impl ChunkedDecoder {
    /// A decoder at the first chunk, taking trailer sections of up to `max_trailers` bytes.
    pub fn new(max_trailers: usize) -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            max_trailers,
        }
    }

    /// Whether the last chunk and trailers have been read.
    pub fn has_ended(&self) -> bool {
        self.state == ChunkState::Ended
    }

    /// The next piece from the front of `buf`; `Ok(None)` when `buf` needs more bytes.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, WireError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(end) = find_line_end(buf, MAX_CHUNK_LINE)? else {
                        return Ok(None);
                    };
                    let size = chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Some(Chunk::Data(data)));
                }
                ChunkState::DataEnd => {
                    // Refused at the first wrong byte, not after waiting for a second one
                    // that an instance keeping its connection open may never send.
                    if !b"\r\n".starts_with(&buf[..buf.len().min(2)]) {
                        return Err(WireError::Invalid("chunk end"));
                    }
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        self.state = ChunkState::Ended;
                        return Ok(Some(Chunk::End));
                    }
                    let Some(end) = find_blank_line(buf, self.max_trailers)? else {
                        return Ok(None);
                    };
                    let section = buf.split_to(end + 4).freeze();
                    self.state = ChunkState::Ended;
                    return parse_trailers(&section).map(|t| Some(Chunk::Trailers(t)));
                }
                ChunkState::Ended => return Ok(None),
            }
        }
    }
}

/// Where the line at the front of `buf` ends (the CR of its CRLF); an error when it is longer
/// than `max` bytes or a line feed comes without its CR. A bare LF is refused at once, as
/// hyper's decoder refuses it: waiting for a CRLF that never comes would hold the body open
/// until the instance closes, and a peer reading bare LF as a line end would see other chunks.
fn find_line_end(buf: &[u8], max: usize) -> Result<Option<usize>, WireError> {
    let window = &buf[..buf.len().min(max + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(at) if at > 0 && buf[at - 1] == b'\r' => Ok(Some(at - 1)),
        Some(_) => Err(WireError::Invalid("chunk-size line end")),
        None if buf.len() <= max + 1 => Ok(None),
        None => Err(WireError::Invalid("chunk-size line")),
    }
}

/// Where the blank line ending a trailer section is (the CRLF before it); an error when none
/// is within `max`, or a line ends in a bare LF: that one would never be found, and the body
/// would hang until the instance closed its connection.
fn find_blank_line(buf: &[u8], max: usize) -> Result<Option<usize>, WireError> {
    let window = &buf[..buf.len().min(max + 4)];
    let mut at = 0;
    while let Some(offset) = window[at..].iter().position(|&b| b == b'\n') {
        let newline = at + offset;
        if newline == 0 || window[newline - 1] != b'\r' {
            return Err(WireError::Invalid("trailer line end"));
        }
        if window[newline + 1..].starts_with(b"\r\n") {
            return Ok(Some(newline - 1));
        }
        at = newline + 1;
    }
    if buf.len() <= max + 3 {
        Ok(None)
    } else {
        Err(WireError::HeadTooLarge(max))
    }
}

/// A chunk-size line's size: hex digits, then optional whitespace and extensions (ignored,
/// but holding no control bytes: a CR or NUL there is a broken or smuggling instance). Leading
/// zeros do not count toward the 16 digits a `u64` holds, as in hyper's decoder.
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let significant = line[..digits].iter().skip_while(|&&b| b == b'0').count();
    let rest = &line[digits..];
    let (space, extensions) = rest
        .iter()
        .position(|&b| b == b';')
        .map_or((rest, &[][..]), |at| rest.split_at(at));
    let rest_ok = space.iter().all(|&b| b == b' ' || b == b'\t')
        && extensions
            .iter()
            .all(|&b| b == b'\t' || !b.is_ascii_control());
    if digits == 0 || significant > 16 || !rest_ok {
        return Err(WireError::Invalid("chunk size"));
    }
    let text =
        std::str::from_utf8(&line[..digits]).map_err(|_| WireError::Invalid("chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| WireError::Invalid("chunk size"))
}

/// The fields of a trailer section (ending with its blank line), without those no trailer may
/// carry (RFC 9110 §6.5.1: framing, routing, `Connection` and the like). hyper's client passed
/// them on, but forwarded they break the caller's side: HTTP/2 refuses connection-specific
/// fields anywhere (RFC 9113 §8.2.2), so the stream, and on the mesh path the tunnel's
/// stream, would be reset after a whole body.
fn parse_trailers(section: &Bytes) -> Result<HeaderMap, WireError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
    let httparse::Status::Complete((_, parsed)) = httparse::parse_headers(section, &mut fields)?
    else {
        return Err(WireError::Invalid("trailer section"));
    };
    let mut trailers = HeaderMap::with_capacity(parsed.len());
    for field in parsed {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| WireError::Invalid("trailer name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| WireError::Invalid("trailer value"))?;
        if is_valid_trailer_field(&name) {
            trailers.append(name, value);
        }
    }
    strip_hop_by_hop(&mut trailers);
    Ok(trailers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &str, method: Method) -> Result<Option<AnswerHead>, WireError> {
        parse_answer_head(&mut BytesMut::from(bytes), &method, 1024, &mut 0)
    }

    #[test]
    fn a_length_beside_transfer_encoding_is_dropped_and_the_connection_closes_after() {
        let answer = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(answer.framing, AnswerFraming::Chunked);
        assert!(!answer.parts.headers.contains_key(CONTENT_LENGTH));
        assert_eq!(answer.parts.headers["x-a"], "1");
        assert!(!answer.keep_alive);
        let alone = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", Method::GET);
        assert_eq!(alone.unwrap().unwrap().parts.headers[CONTENT_LENGTH], "3");
    }

    #[test]
    fn an_answer_head_gives_status_headers_framing_and_keep_alive() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Fine\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
        );
        let answer = parse_answer_head(&mut buf, &Method::POST, 1024, &mut 0)
            .unwrap()
            .unwrap();
        assert_eq!(answer.parts.status, StatusCode::OK);
        assert_eq!(answer.framing, AnswerFraming::Length(5));
        assert!(answer.keep_alive);
        assert_eq!(answer.parts.headers.get_all("x-a").iter().count(), 2);
        let reason = answer
            .parts
            .extensions
            .get::<hyper::ext::ReasonPhrase>()
            .unwrap();
        assert_eq!(reason.as_bytes(), b"Fine");
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let framing = |text: &str, method| head(text, method).unwrap().unwrap().framing;
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::HEAD),
            AnswerFraming::Length(0)
        );
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\n\r\n", Method::GET),
            AnswerFraming::Length(0)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                Method::GET
            ),
            AnswerFraming::Chunked
        );
        let until_close = head("HTTP/1.1 200 OK\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(until_close.framing, AnswerFraming::UntilClose);
        assert!(!until_close.keep_alive);
        let old = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Method::GET);
        assert!(!old.unwrap().unwrap().keep_alive);
        let close = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        );
        assert!(!close.unwrap().unwrap().keep_alive);
    }

    #[test]
    fn bad_answers_are_errors_and_partial_ones_wait() {
        assert!(
            head("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
                .unwrap()
                .is_none()
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(head(bad, Method::GET).is_err(), "{bad}");
        }
        let long = format!("HTTP/1.1 200 OK\r\nX-Long: {}\r\n", "a".repeat(2000));
        assert!(matches!(
            head(&long, Method::GET),
            Err(WireError::HeadTooLarge(1024))
        ));
    }

    #[test]
    fn a_head_end_is_found_wherever_the_bytes_were_split() {
        let wire = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
        for split in 0..wire.len() {
            assert!(!has_head_end(&wire[..split], 0), "{split}");
            assert!(has_head_end(wire, split), "{split}");
        }
        assert!(has_head_end(b"HTTP/1.1 200 OK\nA: b\n\n", 0));
        let answer = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            Method::GET,
        );
        assert!(!answer.unwrap().unwrap().keep_alive);
    }

    #[test]
    fn a_chunked_body_decodes_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nGrpc-Status: 0\r\n\r\n";
        for split in 0..wire.len() {
            let mut decoder = ChunkedDecoder::new(1024);
            let mut buf = BytesMut::from(&wire[..split]);
            let mut body = Vec::new();
            let mut trailers = None;
            let mut fed = false;
            loop {
                match decoder.decode(&mut buf).unwrap() {
                    Some(Chunk::Data(data)) => body.extend_from_slice(&data),
                    Some(Chunk::Trailers(t)) => trailers = Some(t),
                    Some(Chunk::End) => {}
                    None if decoder.has_ended() => break,
                    None => {
                        assert!(!fed, "stuck at split {split}");
                        buf.extend_from_slice(&wire[split..]);
                        fed = true;
                    }
                }
            }
            assert_eq!(body, b"hello world");
            assert_eq!(trailers.unwrap()["grpc-status"], "0");
        }
    }

    #[test]
    fn bad_chunks_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n",
            b"2\r\nabXY",
        ] {
            let mut decoder = ChunkedDecoder::new(1024);
            let mut buf = BytesMut::from(bad);
            let result = (0..4).try_for_each(|_| decoder.decode(&mut buf).map(drop));
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut endless = BytesMut::from(&[b'1'; MAX_CHUNK_LINE + 2][..]);
        assert!(ChunkedDecoder::new(1024).decode(&mut endless).is_err());
    }

    /// What an answer head with `fields` (each line ending CRLF) gives: its framing and the
    /// `Content-Length` it forwards, or `None` when it is refused.
    fn framed(fields: &str, method: Method) -> Option<(AnswerFraming, Option<String>, bool)> {
        let text = format!("HTTP/1.1 200 OK\r\n{fields}\r\n");
        let answer = head(&text, method).ok()??;
        let length = answer.parts.headers.get_all(CONTENT_LENGTH).iter();
        let length: Vec<_> = length.map(|v| v.to_str().unwrap().to_string()).collect();
        Some((
            answer.framing,
            (!length.is_empty()).then(|| length.join("|")),
            answer.keep_alive,
        ))
    }

    #[test]
    fn content_length_variants_follow_rfc_9110_section_8_6() {
        use AnswerFraming::Length;
        let one = |n: &str| Some(n.to_string());
        // (fields, method, framing and the one length forwarded; `None`: refused)
        let cases = [
            (
                "Content-Length: 3\r\n",
                Method::GET,
                Some((Length(3), one("3"))),
            ),
            (
                "Content-Length: 3\r\nContent-Length: 4\r\n",
                Method::GET,
                None,
            ),
            ("Content-Length: 3, 4\r\n", Method::GET, None),
            // The same value repeated is one length, and goes on as one plain number: an
            // HTTP/2 peer resets a stream whose length is a list.
            (
                "Content-Length: 3, 3\r\n",
                Method::GET,
                Some((Length(3), one("3"))),
            ),
            (
                "Content-Length: 3\r\nContent-Length: 3\r\n",
                Method::GET,
                Some((Length(3), one("3"))),
            ),
            (
                "Content-Length:   3  \r\n",
                Method::GET,
                Some((Length(3), one("3"))),
            ),
            (
                "Content-Length: 003\r\n",
                Method::GET,
                Some((Length(3), one("003"))),
            ),
            ("Content-Length: +3\r\n", Method::GET, None),
            ("Content-Length: -3\r\n", Method::GET, None),
            ("Content-Length: 0x3\r\n", Method::GET, None),
            ("Content-Length: \r\n", Method::GET, None),
            (
                "Content-Length: 18446744073709551616\r\n",
                Method::GET,
                None,
            ),
            (
                "Content-Length: 99999999999999999999999\r\n",
                Method::GET,
                None,
            ),
            (
                "Content-Length: 18446744073709551615\r\n",
                Method::GET,
                Some((Length(u64::MAX), one("18446744073709551615"))),
            ),
            // A HEAD answer's length frames nothing, but still reaches the caller as one number.
            (
                "Content-Length: 3, 3\r\n",
                Method::HEAD,
                Some((Length(0), one("3"))),
            ),
            (
                "Content-Length: x\r\n",
                Method::HEAD,
                Some((Length(0), None)),
            ),
        ];
        for (fields, method, expected) in cases {
            let got = framed(fields, method.clone()).map(|(framing, length, _)| (framing, length));
            assert_eq!(got, expected, "{method} {fields:?}");
        }
    }

    #[test]
    fn transfer_encoding_variants_follow_rfc_9112_section_6_3() {
        use AnswerFraming::{Chunked, Length, UntilClose};
        // (fields, method, framing, keep-alive after; `None`: refused)
        let cases = [
            (
                "Transfer-Encoding: chunked\r\n",
                Method::GET,
                Some((Chunked, true)),
            ),
            (
                "Transfer-Encoding: CHUNKED\r\n",
                Method::GET,
                Some((Chunked, true)),
            ),
            // As hyper's client: the last coding decides.
            (
                "Transfer-Encoding: chunked, chunked\r\n",
                Method::GET,
                Some((Chunked, true)),
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                Method::GET,
                Some((Chunked, true)),
            ),
            // A coding the agent would not decode, in any place: refused, as nginx and Envoy
            // refuse it (hyper's client frames `gzip` last by close and hands over the bytes).
            ("Transfer-Encoding: gzip\r\n", Method::GET, None),
            (
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                Method::GET,
                None,
            ),
            ("Transfer-Encoding: gzip, chunked\r\n", Method::GET, None),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
                Method::GET,
                None,
            ),
            (
                "Transfer-Encoding: identity\r\nContent-Length: 5\r\n",
                Method::GET,
                None,
            ),
            ("Transfer-Encoding: \r\n", Method::GET, None),
            ("Transfer-Encoding: ,\r\n", Method::GET, None),
            // No body whatever the coding says.
            (
                "Transfer-Encoding: chunked\r\n",
                Method::HEAD,
                Some((Length(0), true)),
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                Method::HEAD,
                Some((Length(0), true)),
            ),
            (
                "Connection: close\r\nTransfer-Encoding: chunked\r\n",
                Method::GET,
                Some((Chunked, false)),
            ),
        ];
        for (fields, method, expected) in cases {
            let got = framed(fields, method.clone()).map(|(framing, length, keep)| {
                assert_eq!(
                    length, None,
                    "{method} {fields:?}: a length beside a coding is dropped"
                );
                (framing, keep)
            });
            assert_eq!(got, expected, "{method} {fields:?}");
        }
        for (status, method) in [
            ("204 No Content", Method::GET),
            ("304 Not Modified", Method::GET),
        ] {
            let text = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n");
            let answer = head(&text, method).unwrap().unwrap();
            assert_eq!(
                (answer.framing, answer.keep_alive),
                (Length(0), true),
                "{status}"
            );
        }
        let old = "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        assert!(
            head(old, Method::GET).is_err(),
            "chunked in HTTP/1.0 is faulty framing"
        );
        let old = head(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        );
        assert!(old.unwrap().unwrap().keep_alive, "HTTP/1.0 with keep-alive");
        let old = head(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
            Method::GET,
        );
        let old = old.unwrap().unwrap();
        assert_eq!(
            (old.framing, old.keep_alive),
            (UntilClose, false),
            "HTTP/1.0 until close"
        );
    }

    #[test]
    fn answer_head_syntax_is_taken_or_refused_as_hyper_does() {
        let many = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
        // (head, the status it gives; `None`: refused)
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n".to_string(),
                None,
            ),
            (
                "HTTP/1.1 200 OK\nContent-Length: 0\n\n".to_string(),
                Some(200),
            ),
            (
                "HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n".to_string(),
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n".to_string(),
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n".to_string(),
                None,
            ),
            (
                format!("HTTP/1.1 200 OK\r\n{}\r\n", many(MAX_ANSWER_HEADERS)),
                Some(200),
            ),
            (
                format!("HTTP/1.1 200 OK\r\n{}\r\n", many(MAX_ANSWER_HEADERS + 1)),
                None,
            ),
            ("HTTP/1.1 099 Low\r\n\r\n".to_string(), None),
            (
                "HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n".to_string(),
                Some(600),
            ),
            ("HTTP/1.1 1000 Long\r\n\r\n".to_string(), None),
            ("HTTP/1.1 20 Short\r\n\r\n".to_string(), None),
            // httparse gives an empty reason or value as a slice that is not of the buffer.
            (
                "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n".to_string(),
                Some(200),
            ),
            (
                "HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n".to_string(),
                Some(200),
            ),
            ("HTTP/2.0 200 OK\r\n\r\n".to_string(), None),
            ("HTTP/0.9 200 OK\r\n\r\n".to_string(), None),
            ("HTTP/1.2 200 OK\r\n\r\n".to_string(), None),
            ("200 OK\r\n\r\n".to_string(), None),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n".to_string(),
                None,
            ),
            (
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
                    .to_string(),
                Some(204),
            ),
        ];
        for (text, expected) in cases {
            let mut buf = BytesMut::from(text.as_str());
            let got = parse_answer_head(&mut buf, &Method::GET, 16 * 1024, &mut 0);
            let got = got.map(|answer| answer.map(|a| a.parts.status.as_u16()));
            match expected {
                Some(status) => assert_eq!(got.unwrap(), Some(status), "{text:?}"),
                None => assert!(got.is_err(), "{text:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn interim_answers_are_skipped_up_to_a_bound_however_they_arrive() {
        let interim = "HTTP/1.1 100 Continue\r\n\r\n";
        let last = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let allowed = format!("{}{last}", interim.repeat(MAX_INTERIM_ANSWERS));
        let mut buf = BytesMut::from(allowed.as_str());
        let answer = parse_answer_head(&mut buf, &Method::GET, 1024, &mut 0).unwrap();
        assert_eq!(answer.unwrap().parts.status, StatusCode::OK);
        // A flood, a few at a time as reads would bring them: the count is kept across calls.
        let mut count = 0;
        let mut buf = BytesMut::new();
        let refused = (0..=MAX_INTERIM_ANSWERS).find_map(|_| {
            buf.extend_from_slice(interim.as_bytes());
            parse_answer_head(&mut buf, &Method::GET, 1024, &mut count).err()
        });
        assert!(
            matches!(refused, Some(WireError::TooManyInterim(_))),
            "{refused:?}"
        );
    }

    /// A chunked body's bytes and trailers.
    type Decoded = (Vec<u8>, Option<HeaderMap>);

    /// Decodes `wire` as a whole chunked body with nothing more to come: its bytes and
    /// trailers, an error, or `None` when the decoder still waits for more.
    fn decode_all(wire: &[u8]) -> Option<Result<Decoded, WireError>> {
        let mut decoder = ChunkedDecoder::new(1024);
        let mut buf = BytesMut::from(wire);
        let (mut body, mut trailers) = (Vec::new(), None);
        loop {
            match decoder.decode(&mut buf) {
                Err(error) => return Some(Err(error)),
                Ok(Some(Chunk::Data(data))) => body.extend_from_slice(&data),
                Ok(Some(Chunk::Trailers(t))) => trailers = Some(t),
                Ok(Some(Chunk::End)) => {}
                Ok(None) if decoder.has_ended() => return Some(Ok((body, trailers))),
                Ok(None) => return None,
            }
        }
    }

    #[test]
    fn chunk_lines_are_read_as_hyper_reads_them_and_bad_ones_refused_at_once() {
        let good: [&[u8]; 7] = [
            b"5;name=value\r\nhello\r\n0\r\n\r\n",
            b"5 ; a=\"b c\";d\r\nhello\r\n0\r\n\r\n",
            b"5\t\r\nhello\r\n0;last\r\n\r\n",
            b"A\r\nhellohello\r\n0\r\n\r\n",
            b"a\r\nhellohello\r\n0\r\n\r\n",
            // Leading zeros are no overflow.
            b"000000000000000000000005\r\nhello\r\n0000\r\n\r\n",
            b"0\r\n\r\n",
        ];
        for wire in good {
            let decoded = decode_all(wire).map(|r| r.map(|(body, _)| body));
            let text = String::from_utf8_lossy(wire);
            assert!(
                matches!(decoded, Some(Ok(ref b)) if !b.is_empty() || wire == b"0\r\n\r\n"),
                "{text:?}: {decoded:?}"
            );
        }
        let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(MAX_CHUNK_LINE));
        // Each refused with no more bytes to come: none may leave the body waiting.
        let bad: [&[u8]; 16] = [
            b"5\nhello\n0\n\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"FFFFFFFFFFFFFFFFF\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX",
            b"5\r\nhello\rX",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"-5\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            long_extension.as_bytes(),
            b"0\r\nX-A: 1\n\n",
            b"0\r\n\n",
        ];
        for wire in bad {
            let decoded = decode_all(wire);
            let text = String::from_utf8_lossy(wire);
            assert!(matches!(decoded, Some(Err(_))), "{text:?}: {decoded:?}");
        }
        // Cut anywhere before its end, a body is never whole.
        let wire = b"5\r\nhello\r\n0\r\n\r\n";
        for cut in 0..wire.len() {
            assert!(
                !matches!(decode_all(&wire[..cut]), Some(Ok(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn trailers_lose_the_fields_no_trailer_may_carry() {
        let wire = b"3\r\nabc\r\n0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\
                     Connection: close\r\nKeep-Alive: timeout=5\r\nHost: x\r\nX-Ok: 1\r\n\
                     Grpc-Status: 0\r\n\r\n";
        let (body, trailers) = decode_all(wire).unwrap().unwrap();
        assert_eq!(body, b"abc");
        let trailers = trailers.unwrap();
        let mut names: Vec<_> = trailers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["grpc-status", "x-ok"]);
    }

    #[test]
    fn a_last_chunk_carries_every_trailer_but_those_no_trailer_may_be() {
        let mut trailers = HeaderMap::new();
        for (name, value) in [
            ("x-sum", "3"),
            ("content-length", "3"),
            ("connection", "close"),
            ("host", "x"),
            ("grpc-status", "0"),
        ] {
            trailers.insert(name, HeaderValue::from_static(value));
        }
        assert_eq!(
            &encode_last_chunk(Some(&trailers))[..],
            b"0\r\nx-sum: 3\r\ngrpc-status: 0\r\n\r\n"
        );
        assert_eq!(&encode_last_chunk(None)[..], b"0\r\n\r\n");
        assert_eq!(
            &encode_last_chunk(Some(&HeaderMap::new()))[..],
            b"0\r\n\r\n"
        );
    }

    #[test]
    fn request_framing_says_how_each_body_goes() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            request_framing(&Method::GET, &mut headers, true, Some(0)),
            RequestFraming::Length(0)
        );
        assert_eq!(
            request_framing(&Method::POST, &mut headers, false, Some(7)),
            RequestFraming::Length(7)
        );
        assert_eq!(headers[CONTENT_LENGTH], "7");
        let mut headers = HeaderMap::new();
        let framing = request_framing(&Method::POST, &mut headers, false, None);
        assert_eq!(framing, RequestFraming::Chunked);
        assert_eq!(headers[TRANSFER_ENCODING], "chunked");
        let mut headers = HeaderMap::new();
        assert_eq!(
            request_framing(&Method::GET, &mut headers, false, None),
            RequestFraming::Chunked
        );
        assert_eq!(headers[TRANSFER_ENCODING], "chunked");
        headers.remove(TRANSFER_ENCODING);
        let mut head = Vec::new();
        let uri = Uri::from_static("/a?b=1");
        encode_request_head(&Method::PUT, &uri, &headers, &mut head);
        assert_eq!(head, b"PUT /a?b=1 HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn cookie_fields_go_as_one_line_joined_by_semicolons() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        headers.append(COOKIE, HeaderValue::from_static("c=3"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut head = Vec::new();
        encode_fields(&headers, &mut head);
        assert_eq!(
            String::from_utf8_lossy(&head),
            "cookie: a=1; b=2; c=3\r\nx-a: 1\r\nx-a: 2\r\n"
        );
    }
}
