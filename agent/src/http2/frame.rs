//! HTTP/2 frames (RFC 9113 §4, §6): reading one from the connection's buffer with every check
//! the frame alone allows, and writing the ones a server sends. What needs the connection's
//! state (a CONTINUATION after the right HEADERS, a stream's state, flow control) is the
//! connection's to check.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What a client sends before its first frame (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A frame's header: length (24 bits), type, flags, stream.
pub const HEADER_LEN: usize = 9;

/// `SETTINGS_MAX_FRAME_SIZE`'s initial value and smallest allowed one (RFC 9113 §6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// `SETTINGS_MAX_FRAME_SIZE`'s largest allowed value.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window (RFC 9113 §6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// A stream identifier, the reserved bit cleared.
pub type StreamId = u32;

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// Graceful shutdown, or no error.
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0);
    /// A protocol error that no more specific code describes.
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    /// An error of the agent's own.
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    /// The peer broke flow control.
    pub const FLOW_CONTROL_ERROR: ErrorCode = ErrorCode(0x3);
    /// A SETTINGS frame was not acknowledged in time.
    pub const SETTINGS_TIMEOUT: ErrorCode = ErrorCode(0x4);
    /// A frame for a stream that was already closed.
    pub const STREAM_CLOSED: ErrorCode = ErrorCode(0x5);
    /// A frame of the wrong size.
    pub const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    /// The stream was refused before any processing: safe to send again.
    pub const REFUSED_STREAM: ErrorCode = ErrorCode(0x7);
    /// The stream is no longer wanted.
    pub const CANCEL: ErrorCode = ErrorCode(0x8);
    /// The header compression state could not be kept.
    pub const COMPRESSION_ERROR: ErrorCode = ErrorCode(0x9);
    /// A CONNECT tunnel's connection failed (RFC 9113 §8.5).
    pub const CONNECT_ERROR: ErrorCode = ErrorCode(0xa);
    /// The peer behaves in a way that costs too much.
    pub const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);
}

/// Why a frame is refused: the whole connection's error, or one stream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The connection ends with GOAWAY and this code.
    #[error("connection error {code:?}: {reason}")]
    Connection {
        /// The code sent in GOAWAY.
        code: ErrorCode,
        /// What was wrong, for the log and GOAWAY's debug data.
        reason: &'static str,
    },
    /// The stream is reset with this code; the connection goes on.
    #[error("stream {stream} error {code:?}: {reason}")]
    Stream {
        /// The stream reset.
        stream: StreamId,
        /// The code sent in RST_STREAM.
        code: ErrorCode,
        /// What was wrong, for the log.
        reason: &'static str,
    },
}

const fn connection(code: ErrorCode, reason: &'static str) -> FrameError {
    FrameError::Connection { code, reason }
}

/// Frame types (RFC 9113 §6).
mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Setting identifiers (RFC 9113 §6.5.2, RFC 8441 §3).
pub mod setting {
    /// The decoder's largest dynamic table.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// Whether the server may push (0 from a server's point of view).
    pub const ENABLE_PUSH: u16 = 0x2;
    /// Streams the sender lets its peer open at once.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// Each new stream's receive window.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// The largest frame payload the sender takes.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// The largest header list the sender takes (advisory).
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    /// Extended CONNECT (RFC 8441).
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// One setting's identifier and value.
pub type Setting = (u16, u32);

/// A frame as read, its payload checked as far as the frame alone allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Body bytes.
    Data {
        /// The stream they belong to.
        stream: StreamId,
        /// The bytes, padding taken off.
        data: Bytes,
        /// The last frame of the stream's body.
        end_stream: bool,
        /// What flow control counts: the whole payload, padding included (§6.1).
        flow_len: u32,
    },
    /// The start of a header block, its padding and priority taken off.
    Headers {
        /// The stream it opens or ends.
        stream: StreamId,
        /// The first fragment of the block.
        fragment: Bytes,
        /// No body follows (trailers, or a request without one).
        end_stream: bool,
        /// The block is whole; otherwise CONTINUATIONs follow.
        end_headers: bool,
    },
    /// Priority signals are read and ignored (RFC 9113 §5.3.2 deprecates them).
    Priority {
        /// The stream it is about.
        stream: StreamId,
    },
    /// The peer reset a stream.
    RstStream {
        /// The stream reset.
        stream: StreamId,
        /// Why.
        code: ErrorCode,
    },
    /// The peer's settings, or its acknowledgement of ours.
    Settings {
        /// An acknowledgement, with no settings.
        ack: bool,
        /// The settings in the order sent; a later one of an identifier wins.
        settings: Vec<Setting>,
    },
    /// A PING to answer, or the answer to ours.
    Ping {
        /// The answer to a PING.
        ack: bool,
        /// Opaque data the answer echoes.
        payload: [u8; 8],
    },
    /// The peer is going away.
    GoAway {
        /// The last stream it processes.
        last_stream: StreamId,
        /// Why.
        code: ErrorCode,
    },
    /// More window for the connection (stream 0) or a stream.
    WindowUpdate {
        /// The stream, or 0 for the connection.
        stream: StreamId,
        /// Octets added to the window.
        increment: u32,
    },
    /// The next fragment of a header block.
    Continuation {
        /// The stream whose block it continues.
        stream: StreamId,
        /// The fragment.
        fragment: Bytes,
        /// The block is whole.
        end_headers: bool,
    },
    /// A frame of a type this side does not know: ignored (§4.1), once its size was checked.
    Unknown,
}

/// Reads the next frame from `buf` if all of it has arrived, taking it out of `buf`.
/// `max_frame_size` is the `SETTINGS_MAX_FRAME_SIZE` this side advertised.
pub fn read(buf: &mut BytesMut, max_frame_size: u32) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let length = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]);
    if length > max_frame_size {
        return Err(connection(
            ErrorCode::FRAME_SIZE_ERROR,
            "a frame is larger than SETTINGS_MAX_FRAME_SIZE",
        ));
    }
    if buf.len() < HEADER_LEN + length as usize {
        return Ok(None);
    }
    let kind = buf[3];
    let flags = buf[4];
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & MAX_WINDOW;
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(length as usize).freeze();
    parse(kind, flags, stream, payload).map(Some)
}

fn parse(kind: u8, flags: u8, stream: StreamId, mut payload: Bytes) -> Result<Frame, FrameError> {
    let on_stream = |what: &'static str| {
        if stream == 0 {
            Err(connection(ErrorCode::PROTOCOL_ERROR, what))
        } else {
            Ok(())
        }
    };
    let on_connection = |what: &'static str| {
        if stream != 0 {
            Err(connection(ErrorCode::PROTOCOL_ERROR, what))
        } else {
            Ok(())
        }
    };
    let exact = |length: usize, what: &'static str| {
        if payload.len() != length {
            Err(connection(ErrorCode::FRAME_SIZE_ERROR, what))
        } else {
            Ok(())
        }
    };
    Ok(match kind {
        kind::DATA => {
            on_stream("DATA on stream 0")?;
            let flow_len = payload.len() as u32;
            if flags & flag::PADDED != 0 {
                unpad(&mut payload)?;
            }
            Frame::Data {
                stream,
                data: payload,
                end_stream: flags & flag::END_STREAM != 0,
                flow_len,
            }
        }
        kind::HEADERS => {
            on_stream("HEADERS on stream 0")?;
            if flags & flag::PADDED != 0 {
                unpad(&mut payload)?;
            }
            if flags & flag::PRIORITY != 0 {
                if payload.len() < 5 {
                    return Err(connection(
                        ErrorCode::FRAME_SIZE_ERROR,
                        "HEADERS too short for its priority",
                    ));
                }
                let depends_on = payload.get_u32() & MAX_WINDOW;
                payload.advance(1);
                // A stream error (§5.3.1), made the connection's (§5.4.1 allows it): the
                // block would go undecoded, and the compression state with it.
                if depends_on == stream {
                    return Err(connection(
                        ErrorCode::PROTOCOL_ERROR,
                        "a stream depends on itself",
                    ));
                }
            }
            Frame::Headers {
                stream,
                fragment: payload,
                end_stream: flags & flag::END_STREAM != 0,
                end_headers: flags & flag::END_HEADERS != 0,
            }
        }
        kind::PRIORITY => {
            on_stream("PRIORITY on stream 0")?;
            if payload.len() != 5 {
                return Err(FrameError::Stream {
                    stream,
                    code: ErrorCode::FRAME_SIZE_ERROR,
                    reason: "PRIORITY is not 5 octets",
                });
            }
            if payload.get_u32() & MAX_WINDOW == stream {
                return Err(FrameError::Stream {
                    stream,
                    code: ErrorCode::PROTOCOL_ERROR,
                    reason: "a stream depends on itself",
                });
            }
            Frame::Priority { stream }
        }
        kind::RST_STREAM => {
            on_stream("RST_STREAM on stream 0")?;
            exact(4, "RST_STREAM is not 4 octets")?;
            Frame::RstStream {
                stream,
                code: ErrorCode(payload.get_u32()),
            }
        }
        kind::SETTINGS => {
            on_connection("SETTINGS on a stream")?;
            let ack = flags & flag::ACK != 0;
            if ack {
                exact(0, "a SETTINGS acknowledgement with a payload")?;
            } else if !payload.len().is_multiple_of(6) {
                return Err(connection(
                    ErrorCode::FRAME_SIZE_ERROR,
                    "SETTINGS is not a multiple of 6 octets",
                ));
            }
            let mut settings = Vec::with_capacity(payload.len() / 6);
            while payload.has_remaining() {
                let setting = (payload.get_u16(), payload.get_u32());
                check_setting(setting)?;
                settings.push(setting);
            }
            Frame::Settings { ack, settings }
        }
        kind::PUSH_PROMISE => {
            return Err(connection(
                ErrorCode::PROTOCOL_ERROR,
                "a client sent PUSH_PROMISE",
            ));
        }
        kind::PING => {
            on_connection("PING on a stream")?;
            exact(8, "PING is not 8 octets")?;
            let mut data = [0u8; 8];
            payload.copy_to_slice(&mut data);
            Frame::Ping {
                ack: flags & flag::ACK != 0,
                payload: data,
            }
        }
        kind::GOAWAY => {
            on_connection("GOAWAY on a stream")?;
            if payload.len() < 8 {
                return Err(connection(
                    ErrorCode::FRAME_SIZE_ERROR,
                    "GOAWAY is shorter than 8 octets",
                ));
            }
            Frame::GoAway {
                last_stream: payload.get_u32() & MAX_WINDOW,
                code: ErrorCode(payload.get_u32()),
            }
        }
        kind::WINDOW_UPDATE => {
            exact(4, "WINDOW_UPDATE is not 4 octets")?;
            let increment = payload.get_u32() & MAX_WINDOW;
            if increment == 0 {
                let reason = "a WINDOW_UPDATE of 0";
                return Err(if stream == 0 {
                    connection(ErrorCode::PROTOCOL_ERROR, reason)
                } else {
                    FrameError::Stream {
                        stream,
                        code: ErrorCode::PROTOCOL_ERROR,
                        reason,
                    }
                });
            }
            Frame::WindowUpdate { stream, increment }
        }
        kind::CONTINUATION => {
            on_stream("CONTINUATION on stream 0")?;
            Frame::Continuation {
                stream,
                fragment: payload,
                end_headers: flags & flag::END_HEADERS != 0,
            }
        }
        _ => Frame::Unknown,
    })
}

/// Takes a padded frame's padding off (§6.1): the pad length, then the padding at the end.
fn unpad(payload: &mut Bytes) -> Result<(), FrameError> {
    let too_much = || {
        connection(
            ErrorCode::PROTOCOL_ERROR,
            "a frame's padding is as long as its payload",
        )
    };
    if payload.is_empty() {
        return Err(too_much());
    }
    let padding = payload.get_u8() as usize;
    if padding > payload.len() {
        return Err(too_much());
    }
    payload.truncate(payload.len() - padding);
    Ok(())
}

/// Refuses a setting whose value RFC 9113 §6.5.2 (or RFC 8441 §3) rules out.
fn check_setting((id, value): Setting) -> Result<(), FrameError> {
    match id {
        setting::ENABLE_PUSH | setting::ENABLE_CONNECT_PROTOCOL if value > 1 => Err(connection(
            ErrorCode::PROTOCOL_ERROR,
            "a boolean setting is neither 0 nor 1",
        )),
        setting::INITIAL_WINDOW_SIZE if value > MAX_WINDOW => Err(connection(
            ErrorCode::FLOW_CONTROL_ERROR,
            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
        )),
        setting::MAX_FRAME_SIZE
            if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) =>
        {
            Err(connection(
                ErrorCode::PROTOCOL_ERROR,
                "SETTINGS_MAX_FRAME_SIZE outside 2^14..2^24-1",
            ))
        }
        _ => Ok(()),
    }
}

/// Writes a frame header.
fn put_header(dst: &mut BytesMut, length: usize, kind: u8, flags: u8, stream: StreamId) {
    debug_assert!(length <= MAX_MAX_FRAME_SIZE as usize);
    dst.put_slice(&(length as u32).to_be_bytes()[1..]);
    dst.put_u8(kind);
    dst.put_u8(flags);
    dst.put_u32(stream);
}

/// Writes SETTINGS with `settings`.
pub fn put_settings(dst: &mut BytesMut, settings: &[Setting]) {
    put_header(dst, settings.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in settings {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

/// Writes the acknowledgement of the peer's SETTINGS.
pub fn put_settings_ack(dst: &mut BytesMut) {
    put_header(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Writes a PING, or the answer to one when `ack`.
pub fn put_ping(dst: &mut BytesMut, ack: bool, payload: [u8; 8]) {
    put_header(dst, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    dst.put_slice(&payload);
}

/// Writes GOAWAY naming the last stream this side processes, with `reason` as debug data.
pub fn put_goaway(dst: &mut BytesMut, last_stream: StreamId, code: ErrorCode, reason: &str) {
    put_header(dst, 8 + reason.len(), kind::GOAWAY, 0, 0);
    dst.put_u32(last_stream);
    dst.put_u32(code.0);
    dst.put_slice(reason.as_bytes());
}

/// Writes RST_STREAM.
pub fn put_rst_stream(dst: &mut BytesMut, stream: StreamId, code: ErrorCode) {
    put_header(dst, 4, kind::RST_STREAM, 0, stream);
    dst.put_u32(code.0);
}

/// Writes WINDOW_UPDATE.
pub fn put_window_update(dst: &mut BytesMut, stream: StreamId, increment: u32) {
    put_header(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment);
}

/// Writes a DATA frame's header; its `length` octets of data follow.
pub fn put_data_header(dst: &mut BytesMut, stream: StreamId, length: usize, end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    put_header(dst, length, kind::DATA, flags, stream);
}

/// Writes a header block as HEADERS and as many CONTINUATIONs as the peer's
/// `max_frame_size` needs.
pub fn put_headers(
    dst: &mut BytesMut,
    stream: StreamId,
    block: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    let max = max_frame_size as usize;
    let mut chunks = block.chunks(max.max(1));
    let first = chunks.next().unwrap_or(&[]);
    let mut rest = chunks.peekable();
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if rest.peek().is_none() {
        flags |= flag::END_HEADERS;
    }
    put_header(dst, first.len(), kind::HEADERS, flags, stream);
    dst.put_slice(first);
    while let Some(chunk) = rest.next() {
        let flags = if rest.peek().is_none() {
            flag::END_HEADERS
        } else {
            0
        };
        put_header(dst, chunk.len(), kind::CONTINUATION, flags, stream);
        dst.put_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> BytesMut {
        let mut dst = BytesMut::new();
        put_header(&mut dst, payload.len(), kind, flags, stream);
        dst.put_slice(payload);
        dst
    }

    fn read_one(mut buf: BytesMut) -> Result<Frame, FrameError> {
        let frame = read(&mut buf, DEFAULT_MAX_FRAME_SIZE).map(|f| f.expect("a whole frame"));
        assert!(buf.is_empty() || frame.is_err());
        frame
    }

    fn connection_code(result: Result<Frame, FrameError>) -> ErrorCode {
        match result {
            Err(FrameError::Connection { code, .. }) => code,
            other => panic!("expected a connection error, got {other:?}"),
        }
    }

    #[test]
    fn a_frame_is_read_only_once_all_of_it_arrived() {
        let whole = frame(kind::PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(read(&mut part, DEFAULT_MAX_FRAME_SIZE), Ok(None));
            assert_eq!(part.len(), cut, "nothing taken");
        }
        let mut two = whole.clone();
        two.extend_from_slice(&frame(kind::SETTINGS, flag::ACK, 0, &[]));
        assert_eq!(
            read(&mut two, DEFAULT_MAX_FRAME_SIZE),
            Ok(Some(Frame::Ping {
                ack: false,
                payload: [1, 2, 3, 4, 5, 6, 7, 8]
            }))
        );
        assert_eq!(
            read(&mut two, DEFAULT_MAX_FRAME_SIZE),
            Ok(Some(Frame::Settings {
                ack: true,
                settings: vec![]
            }))
        );
        assert!(two.is_empty());
    }

    #[test]
    fn padding_and_priority_are_taken_off() {
        let data = read_one(frame(
            kind::DATA,
            flag::PADDED | flag::END_STREAM,
            1,
            b"\x03abcXYZ",
        ));
        assert_eq!(
            data,
            Ok(Frame::Data {
                stream: 1,
                data: Bytes::from_static(b"abc"),
                end_stream: true,
                flow_len: 7
            })
        );
        let headers = read_one(frame(
            kind::HEADERS,
            flag::PADDED | flag::PRIORITY | flag::END_HEADERS,
            3,
            b"\x02\x00\x00\x00\x01\x10\x82\x84PP",
        ));
        assert_eq!(
            headers,
            Ok(Frame::Headers {
                stream: 3,
                fragment: Bytes::from_static(b"\x82\x84"),
                end_stream: false,
                end_headers: true
            })
        );
        // Padding as long as the payload is refused; all of the rest as padding is not.
        assert_eq!(
            connection_code(read_one(frame(kind::DATA, flag::PADDED, 1, b"\x04abc"))),
            ErrorCode::PROTOCOL_ERROR
        );
        assert!(matches!(
            read_one(frame(kind::DATA, flag::PADDED, 1, b"\x03abc")),
            Ok(Frame::Data { data, flow_len: 4, .. }) if data.is_empty()
        ));
        assert_eq!(
            connection_code(read_one(frame(kind::DATA, flag::PADDED, 1, b""))),
            ErrorCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn frames_on_the_wrong_stream_or_of_the_wrong_size_are_refused() {
        for (buf, code) in [
            (frame(kind::DATA, 0, 0, b"x"), ErrorCode::PROTOCOL_ERROR),
            (frame(kind::HEADERS, 0, 0, b"x"), ErrorCode::PROTOCOL_ERROR),
            (frame(kind::SETTINGS, 0, 1, b""), ErrorCode::PROTOCOL_ERROR),
            (
                frame(kind::SETTINGS, 0, 0, b"12345"),
                ErrorCode::FRAME_SIZE_ERROR,
            ),
            (
                frame(kind::SETTINGS, flag::ACK, 0, b"\0\x01\0\0\0\0"),
                ErrorCode::FRAME_SIZE_ERROR,
            ),
            (frame(kind::PING, 0, 1, &[0; 8]), ErrorCode::PROTOCOL_ERROR),
            (
                frame(kind::PING, 0, 0, &[0; 7]),
                ErrorCode::FRAME_SIZE_ERROR,
            ),
            (
                frame(kind::RST_STREAM, 0, 0, &[0; 4]),
                ErrorCode::PROTOCOL_ERROR,
            ),
            (
                frame(kind::RST_STREAM, 0, 1, &[0; 5]),
                ErrorCode::FRAME_SIZE_ERROR,
            ),
            (
                frame(kind::GOAWAY, 0, 0, &[0; 7]),
                ErrorCode::FRAME_SIZE_ERROR,
            ),
            (
                frame(kind::WINDOW_UPDATE, 0, 0, &[0; 3]),
                ErrorCode::FRAME_SIZE_ERROR,
            ),
            (
                frame(kind::WINDOW_UPDATE, 0, 0, &[0; 4]),
                ErrorCode::PROTOCOL_ERROR,
            ),
            (
                frame(kind::PUSH_PROMISE, 0, 1, &[0; 4]),
                ErrorCode::PROTOCOL_ERROR,
            ),
            (
                frame(kind::CONTINUATION, 0, 0, b""),
                ErrorCode::PROTOCOL_ERROR,
            ),
        ] {
            assert_eq!(connection_code(read_one(buf.clone())), code, "{buf:?}");
        }
        assert_eq!(
            connection_code(read_one(frame(
                kind::HEADERS,
                flag::PRIORITY | flag::END_HEADERS,
                5,
                b"\0\0\0\x05\x10\x82"
            ))),
            ErrorCode::PROTOCOL_ERROR
        );
        // A zero increment on a stream, and a PRIORITY making a stream depend on itself,
        // reset that stream.
        assert!(matches!(
            read_one(frame(kind::WINDOW_UPDATE, 0, 5, &[0; 4])),
            Err(FrameError::Stream {
                stream: 5,
                code: ErrorCode::PROTOCOL_ERROR,
                ..
            })
        ));
        assert!(matches!(
            read_one(frame(kind::PRIORITY, 0, 5, b"\0\0\0\x05\x10")),
            Err(FrameError::Stream {
                stream: 5,
                code: ErrorCode::PROTOCOL_ERROR,
                ..
            })
        ));
        assert!(matches!(
            read_one(frame(kind::PRIORITY, 0, 5, b"\0\0\0\x03")),
            Err(FrameError::Stream {
                stream: 5,
                code: ErrorCode::FRAME_SIZE_ERROR,
                ..
            })
        ));
        // Larger than we advertised, refused from its header alone.
        let mut big = BytesMut::new();
        put_header(
            &mut big,
            DEFAULT_MAX_FRAME_SIZE as usize + 1,
            kind::DATA,
            0,
            1,
        );
        assert_eq!(
            connection_code(read(&mut big, DEFAULT_MAX_FRAME_SIZE).map(|f| f.expect("refused"))),
            ErrorCode::FRAME_SIZE_ERROR
        );
    }

    #[test]
    fn settings_values_out_of_range_are_refused_and_unknown_ones_kept() {
        let settings = |id: u16, value: u32| {
            let mut payload = BytesMut::new();
            payload.put_u16(id);
            payload.put_u32(value);
            read_one(frame(kind::SETTINGS, 0, 0, &payload))
        };
        assert_eq!(
            connection_code(settings(setting::ENABLE_PUSH, 2)),
            ErrorCode::PROTOCOL_ERROR
        );
        assert_eq!(
            connection_code(settings(setting::INITIAL_WINDOW_SIZE, MAX_WINDOW + 1)),
            ErrorCode::FLOW_CONTROL_ERROR
        );
        assert_eq!(
            connection_code(settings(setting::MAX_FRAME_SIZE, 16_383)),
            ErrorCode::PROTOCOL_ERROR
        );
        assert_eq!(
            connection_code(settings(setting::MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE + 1)),
            ErrorCode::PROTOCOL_ERROR
        );
        assert_eq!(
            settings(0x99, 7),
            Ok(Frame::Settings {
                ack: false,
                settings: vec![(0x99, 7)]
            })
        );
        // An unknown frame type is read and ignored; the reserved bit of a stream is dropped.
        assert_eq!(
            read_one(frame(0x42, 0xff, 9, b"anything")),
            Ok(Frame::Unknown)
        );
        assert_eq!(
            read_one(frame(kind::WINDOW_UPDATE, 0, 0x8000_0003, &[0x80, 0, 0, 1])),
            Ok(Frame::WindowUpdate {
                stream: 3,
                increment: 1
            })
        );
    }

    #[test]
    fn written_frames_read_back() {
        let mut dst = BytesMut::new();
        put_settings(&mut dst, &[(setting::MAX_CONCURRENT_STREAMS, 100)]);
        put_settings_ack(&mut dst);
        put_ping(&mut dst, true, *b"12345678");
        put_goaway(&mut dst, 7, ErrorCode::ENHANCE_YOUR_CALM, "too many resets");
        put_rst_stream(&mut dst, 3, ErrorCode::CANCEL);
        put_window_update(&mut dst, 0, 65_535);
        put_data_header(&mut dst, 5, 2, true);
        dst.put_slice(b"hi");
        let mut frames = Vec::new();
        while let Some(frame) = read(&mut dst, DEFAULT_MAX_FRAME_SIZE).expect("valid") {
            frames.push(frame);
        }
        assert_eq!(
            frames,
            vec![
                Frame::Settings {
                    ack: false,
                    settings: vec![(setting::MAX_CONCURRENT_STREAMS, 100)]
                },
                Frame::Settings {
                    ack: true,
                    settings: vec![]
                },
                Frame::Ping {
                    ack: true,
                    payload: *b"12345678"
                },
                Frame::GoAway {
                    last_stream: 7,
                    code: ErrorCode::ENHANCE_YOUR_CALM
                },
                Frame::RstStream {
                    stream: 3,
                    code: ErrorCode::CANCEL
                },
                Frame::WindowUpdate {
                    stream: 0,
                    increment: 65_535
                },
                Frame::Data {
                    stream: 5,
                    data: Bytes::from_static(b"hi"),
                    end_stream: true,
                    flow_len: 2
                },
            ]
        );
    }

    #[test]
    fn a_large_header_block_goes_as_headers_and_continuations() {
        let block: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut dst = BytesMut::new();
        put_headers(&mut dst, 1, &block, true, DEFAULT_MAX_FRAME_SIZE);
        let mut joined = Vec::new();
        let mut kinds = Vec::new();
        while let Some(frame) = read(&mut dst, DEFAULT_MAX_FRAME_SIZE).expect("valid") {
            match frame {
                Frame::Headers {
                    fragment,
                    end_stream,
                    end_headers,
                    ..
                } => {
                    kinds.push(("headers", end_stream, end_headers));
                    joined.extend_from_slice(&fragment);
                }
                Frame::Continuation {
                    fragment,
                    end_headers,
                    ..
                } => {
                    kinds.push(("continuation", false, end_headers));
                    joined.extend_from_slice(&fragment);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(joined, block);
        assert_eq!(
            kinds,
            vec![
                ("headers", true, false),
                ("continuation", false, false),
                ("continuation", false, true)
            ]
        );
        let mut small = BytesMut::new();
        put_headers(&mut small, 1, b"\x88", false, DEFAULT_MAX_FRAME_SIZE);
        assert_eq!(
            read(&mut small, DEFAULT_MAX_FRAME_SIZE),
            Ok(Some(Frame::Headers {
                stream: 1,
                fragment: Bytes::from_static(b"\x88"),
                end_stream: false,
                end_headers: true
            }))
        );
    }
}
