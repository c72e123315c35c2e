//! The server side of one HTTP/2 connection as a state machine without I/O: bytes from the
//! client go in ([`Connection::receive`]), [`Event`]s and bytes for the client come out
//! ([`Connection::next_event`], [`Connection::output`]). It keeps what RFC 9113 asks of a
//! server: the preface and SETTINGS exchange, stream states (§5.1), the concurrency limit, flow
//! control both ways (§5.2, §6.9), header blocks across CONTINUATION frames, PING, GOAWAY, and
//! the line between a stream's error (RST_STREAM, the connection goes on) and the connection's
//! (GOAWAY, then close). The task that drives it owns the socket, so it also bounds what the
//! client can make this side write: it stops reading while output waits (PING and SETTINGS
//! floods then stall the flooder alone).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode};

use super::frame::{self, ErrorCode, Frame, FrameError, MAX_WINDOW, StreamId, setting};
use super::hpack::{self, Field};
use super::request_head;
use super::stream_map::{self, StreamMap};

/// Closed streams remembered (a few bytes each): more than a client can have in flight.
const RECENTLY_CLOSED: usize = 256;

/// This side's limits, sent in its SETTINGS and enforced.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Streams a client may have open at once; more are refused (`REFUSED_STREAM`, safe to
    /// send again).
    pub max_concurrent_streams: u32,
    /// Each stream's receive window: what a client may send ahead of the request body's
    /// reader.
    pub stream_window: u32,
    /// The connection's receive window, given back as data arrives (so at most
    /// `max_concurrent_streams × stream_window` waits unread).
    pub connection_window: u32,
    /// The largest frame payload taken.
    pub max_frame_size: u32,
    /// The largest header list taken; larger requests get 431.
    pub max_header_list_size: u32,
    /// Streams the client may reset before their answer, net of answers completed, before
    /// the connection is closed (`ENHANCE_YOUR_CALM`; the rapid reset attack).
    pub max_pending_resets: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_streams: 100,
            stream_window: 1 << 20,
            connection_window: 1 << 20,
            max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            max_header_list_size: 65_536,
            max_pending_resets: 20,
        }
    }
}

/// What the connection tells the task that drives it.
#[derive(Debug)]
pub enum Event {
    /// A new request; its body follows as [`Event::Data`] unless `end_stream`.
    Request {
        /// Its stream.
        stream: StreamId,
        /// Its head.
        request: Request<()>,
        /// It has no body.
        end_stream: bool,
    },
    /// Request body bytes; give them back with [`Connection::release`] once read.
    Data {
        /// Their stream.
        stream: StreamId,
        /// The bytes.
        data: Bytes,
        /// The body ends here.
        end_stream: bool,
    },
    /// The request's trailers, which end its body.
    Trailers {
        /// Their stream.
        stream: StreamId,
        /// The fields.
        trailers: HeaderMap,
    },
    /// The stream is gone: the client reset it or it broke a rule. Nothing more may be sent
    /// on it, and its request body (if still read) ends in an error.
    Reset {
        /// The stream.
        stream: StreamId,
        /// Why.
        code: ErrorCode,
        /// Why, for the request body's reader: the client reset the stream, or the rule its
        /// frames broke.
        reason: &'static str,
    },
    /// Send windows grew: answers waiting for capacity may go on.
    WindowOpened,
    /// The client is going away: no new streams will come.
    GoAway,
}

/// The connection is over: GOAWAY has been written (when it was this side's decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("HTTP/2 connection error {code:?}: {reason}")]
pub struct ConnectionError {
    /// The code sent.
    pub code: ErrorCode,
    /// Why.
    pub reason: &'static str,
}

/// Where a stream stands, seen from this side (§5.1).
#[derive(Debug)]
struct Stream {
    /// The client may still send (its END_STREAM has not come).
    remote_open: bool,
    /// This side may still send (its END_STREAM has not gone).
    local_open: bool,
    /// An answer's head went out.
    answered: bool,
    /// What this side may still send on it.
    send_window: i64,
    /// What the client may still send on it.
    recv_window: i64,
    /// Received and read, not yet given back in a WINDOW_UPDATE.
    released: u32,
    /// The request's `content-length`, checked against its DATA (§8.1.1).
    content_length: Option<u64>,
    /// Body bytes received.
    received: u64,
}

/// A header block still waiting for CONTINUATION frames.
#[derive(Debug)]
struct PartialBlock {
    stream: StreamId,
    fragments: BytesMut,
    end_stream: bool,
}

/// The server side of one connection.
#[derive(Debug)]
pub struct Connection {
    limits: Limits,
    /// The client's preface has been read.
    preface_read: bool,
    /// The client's first SETTINGS has been read.
    settings_read: bool,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE.
    peer_stream_window: u32,
    /// The client's SETTINGS_MAX_FRAME_SIZE.
    peer_max_frame_size: u32,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    streams: StreamMap<Stream>,
    /// The highest stream the client opened.
    last_stream: StreamId,
    /// Streams above this one are ignored: GOAWAY said so.
    accept_below: StreamId,
    partial: Option<PartialBlock>,
    send_window: i64,
    recv_window: i64,
    /// Received on the connection, not yet given back in a WINDOW_UPDATE.
    connection_released: u32,
    /// The last streams closed, and whether this side reset them: frames a client sent before
    /// it learnt of a reset are ignored, and a stream that ended is told from one never
    /// opened (§5.1, §5.1.1).
    recently_closed: VecDeque<(StreamId, bool)>,
    /// Streams reset by the client before their answer ended, less answers completed.
    pending_resets: u32,
    events: VecDeque<Event>,
    output: BytesMut,
}

impl Connection {
    /// A connection with `limits`; its SETTINGS are already in [`Connection::output`].
    pub fn new(limits: Limits) -> Self {
        let mut output = BytesMut::with_capacity(256);
        frame::put_settings(
            &mut output,
            &[
                (setting::ENABLE_PUSH, 0),
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    limits.max_concurrent_streams,
                ),
                (setting::INITIAL_WINDOW_SIZE, limits.stream_window),
                (setting::MAX_FRAME_SIZE, limits.max_frame_size),
                (setting::MAX_HEADER_LIST_SIZE, limits.max_header_list_size),
            ],
        );
        let default_window = 65_535u32;
        if limits.connection_window > default_window {
            frame::put_window_update(&mut output, 0, limits.connection_window - default_window);
        }
        Connection {
            preface_read: false,
            settings_read: false,
            peer_stream_window: 65_535,
            peer_max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            decoder: hpack::Decoder::new(hpack::DEFAULT_TABLE_SIZE),
            encoder: hpack::Encoder::default(),
            streams: stream_map::new(),
            last_stream: 0,
            accept_below: StreamId::MAX,
            partial: None,
            send_window: 65_535,
            recv_window: i64::from(limits.connection_window.max(default_window)),
            connection_released: 0,
            recently_closed: VecDeque::with_capacity(RECENTLY_CLOSED),
            pending_resets: 0,
            events: VecDeque::new(),
            output,
            limits,
        }
    }

    /// Bytes to write to the client; the driver writes and clears them.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.output
    }

    /// The next thing the driver must act on.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Streams open in either direction.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Reads every whole frame in `input`, leaving a partial one there. A connection error
    /// writes GOAWAY and ends the connection.
    pub fn receive(&mut self, input: &mut BytesMut) -> Result<(), ConnectionError> {
        let result = self.receive_frames(input);
        if let Err(error) = result {
            frame::put_goaway(&mut self.output, self.last_stream, error.code, error.reason);
        }
        result
    }

    fn receive_frames(&mut self, input: &mut BytesMut) -> Result<(), ConnectionError> {
        if !self.preface_read {
            let n = input.len().min(frame::PREFACE.len());
            if input[..n] != frame::PREFACE[..n] {
                return Err(error(
                    ErrorCode::PROTOCOL_ERROR,
                    "no HTTP/2 connection preface",
                ));
            }
            if n < frame::PREFACE.len() {
                return Ok(());
            }
            let _ = input.split_to(n);
            self.preface_read = true;
        }
        loop {
            match frame::read(input, self.limits.max_frame_size) {
                Ok(None) => return Ok(()),
                Ok(Some(frame)) => self.on_frame(frame)?,
                Err(FrameError::Connection { code, reason }) => return Err(error(code, reason)),
                Err(FrameError::Stream {
                    stream,
                    code,
                    reason,
                }) => {
                    if self.partial.is_some() {
                        return Err(error(
                            ErrorCode::PROTOCOL_ERROR,
                            "a frame inside a header block",
                        ));
                    }
                    self.stream_error(stream, code, reason);
                }
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        if !self.settings_read {
            match frame {
                Frame::Settings { ack: false, .. } => self.settings_read = true,
                _ => {
                    return Err(error(
                        ErrorCode::PROTOCOL_ERROR,
                        "the first frame is not SETTINGS",
                    ));
                }
            }
        }
        if let Some(partial) = &self.partial {
            match &frame {
                Frame::Continuation { stream, .. } if *stream == partial.stream => {}
                _ => {
                    return Err(error(
                        ErrorCode::PROTOCOL_ERROR,
                        "a frame inside a header block",
                    ));
                }
            }
        }
        match frame {
            Frame::Headers {
                stream,
                fragment,
                end_stream,
                end_headers,
            } => {
                if end_headers {
                    self.on_block(stream, fragment, end_stream)
                } else {
                    self.start_block(stream, fragment, end_stream)
                }
            }
            Frame::Continuation {
                fragment,
                end_headers,
                ..
            } => self.continue_block(fragment, end_headers),
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => self.on_data(stream, data, end_stream, flow_len),
            Frame::RstStream { stream, code } => self.on_reset(stream, code),
            Frame::Settings { ack, settings } => {
                if !ack {
                    self.on_settings(&settings)?;
                }
                Ok(())
            }
            Frame::Ping { ack, payload } => {
                if !ack {
                    frame::put_ping(&mut self.output, true, payload);
                }
                Ok(())
            }
            Frame::GoAway { .. } => {
                self.events.push_back(Event::GoAway);
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => self.on_window_update(stream, increment),
            Frame::Priority { .. } | Frame::Unknown => Ok(()),
        }
    }

    fn start_block(
        &mut self,
        stream: StreamId,
        fragment: Bytes,
        end_stream: bool,
    ) -> Result<(), ConnectionError> {
        let mut fragments = BytesMut::with_capacity(fragment.len() * 2);
        fragments.extend_from_slice(&fragment);
        self.partial = Some(PartialBlock {
            stream,
            fragments,
            end_stream,
        });
        Ok(())
    }

    fn continue_block(
        &mut self,
        fragment: Bytes,
        end_headers: bool,
    ) -> Result<(), ConnectionError> {
        let Some(partial) = self.partial.as_mut() else {
            return Err(error(
                ErrorCode::PROTOCOL_ERROR,
                "CONTINUATION without a header block",
            ));
        };
        // A block this long decodes to more than the list may hold; reading on would let a
        // client make this side buffer without end (the CONTINUATION flood).
        if partial.fragments.len() + fragment.len() > 2 * self.limits.max_header_list_size as usize
        {
            return Err(error(
                ErrorCode::ENHANCE_YOUR_CALM,
                "a header block far larger than SETTINGS_MAX_HEADER_LIST_SIZE",
            ));
        }
        partial.fragments.extend_from_slice(&fragment);
        if !end_headers {
            return Ok(());
        }
        let PartialBlock {
            stream,
            fragments,
            end_stream,
        } = self.partial.take().expect("checked above");
        self.on_block(stream, fragments.freeze(), end_stream)
    }

    /// A whole header block: a new request, or trailers.
    fn on_block(
        &mut self,
        stream: StreamId,
        block: Bytes,
        end_stream: bool,
    ) -> Result<(), ConnectionError> {
        // Decoded first, whatever becomes of the stream: the table is the connection's.
        let mut fields = Vec::with_capacity(12);
        let decoded = self
            .decoder
            .decode(&block, self.limits.max_header_list_size as usize, |field| {
                fields.push(field)
            })
            .map_err(|e| error(ErrorCode::COMPRESSION_ERROR, decode_reason(e)))?;
        if let Some(open) = self.streams.get(&stream) {
            if !open.remote_open {
                self.stream_error(stream, ErrorCode::STREAM_CLOSED, "HEADERS after END_STREAM");
                return Ok(());
            }
            return self.on_trailers(stream, fields, end_stream, decoded.over_size);
        }
        if stream.is_multiple_of(2) {
            return Err(error(
                ErrorCode::PROTOCOL_ERROR,
                "a client opened an even stream",
            ));
        }
        if stream <= self.last_stream {
            return match self.closed_here(stream) {
                // Sent before the client learnt of the reset: ignored.
                Some(true) => Ok(()),
                Some(false) => {
                    self.stream_error(
                        stream,
                        ErrorCode::STREAM_CLOSED,
                        "HEADERS on a closed stream",
                    );
                    Ok(())
                }
                None => Err(error(
                    ErrorCode::PROTOCOL_ERROR,
                    "a new stream numbered below one already opened",
                )),
            };
        }
        self.last_stream = stream;
        if stream > self.accept_below {
            // After GOAWAY: not processed, and its frames ignored.
            self.remember_closed(stream, true);
            return Ok(());
        }
        if self.streams.len() >= self.limits.max_concurrent_streams as usize {
            frame::put_rst_stream(&mut self.output, stream, ErrorCode::REFUSED_STREAM);
            self.remember_closed(stream, true);
            return Ok(());
        }
        self.streams.insert(
            stream,
            Stream {
                remote_open: !end_stream,
                local_open: true,
                answered: false,
                send_window: i64::from(self.peer_stream_window),
                recv_window: i64::from(self.limits.stream_window),
                released: 0,
                content_length: None,
                received: 0,
            },
        );
        if decoded.over_size {
            self.refuse(stream, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            return Ok(());
        }
        let request = match request_head::request(fields) {
            Ok(request) => request,
            Err(reason) => {
                self.stream_error(stream, ErrorCode::PROTOCOL_ERROR, reason);
                return Ok(());
            }
        };
        let content_length = match content_length(request.headers()) {
            Ok(length) => length,
            Err(reason) => {
                self.stream_error(stream, ErrorCode::PROTOCOL_ERROR, reason);
                return Ok(());
            }
        };
        if end_stream && content_length.is_some_and(|n| n != 0) {
            self.stream_error(
                stream,
                ErrorCode::PROTOCOL_ERROR,
                "a content-length with no body",
            );
            return Ok(());
        }
        if let Some(open) = self.streams.get_mut(&stream) {
            open.content_length = content_length;
        }
        self.events.push_back(Event::Request {
            stream,
            request,
            end_stream,
        });
        Ok(())
    }

    fn on_trailers(
        &mut self,
        stream: StreamId,
        fields: Vec<Field>,
        end_stream: bool,
        over_size: bool,
    ) -> Result<(), ConnectionError> {
        if !end_stream {
            self.stream_error(
                stream,
                ErrorCode::PROTOCOL_ERROR,
                "trailers without END_STREAM",
            );
            return Ok(());
        }
        if over_size {
            self.stream_error(
                stream,
                ErrorCode::PROTOCOL_ERROR,
                "trailers over the size limit",
            );
            return Ok(());
        }
        let trailers = match request_head::trailers(fields) {
            Ok(trailers) => trailers,
            Err(reason) => {
                self.stream_error(stream, ErrorCode::PROTOCOL_ERROR, reason);
                return Ok(());
            }
        };
        if !self.end_of_body(stream) {
            return Ok(());
        }
        self.events.push_back(Event::Trailers { stream, trailers });
        Ok(())
    }

    fn on_data(
        &mut self,
        stream: StreamId,
        data: Bytes,
        end_stream: bool,
        flow_len: u32,
    ) -> Result<(), ConnectionError> {
        let flow = i64::from(flow_len);
        if flow > self.recv_window {
            return Err(error(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the connection's window",
            ));
        }
        // The connection's window is given back at once: each stream's bounds what waits.
        self.recv_window -= flow;
        self.give_back_connection(flow_len);
        let Some(open) = self.streams.get_mut(&stream) else {
            if stream > self.last_stream {
                return Err(error(ErrorCode::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            if self.closed_here(stream) != Some(true) {
                self.stream_error(stream, ErrorCode::STREAM_CLOSED, "DATA on a closed stream");
            }
            return Ok(());
        };
        if !open.remote_open {
            self.stream_error(stream, ErrorCode::STREAM_CLOSED, "DATA after END_STREAM");
            return Ok(());
        }
        if flow > open.recv_window {
            self.stream_error(
                stream,
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the stream's window",
            );
            return Ok(());
        }
        open.recv_window -= flow;
        // Padding is nobody's to read: given back now.
        open.released += flow_len - data.len() as u32;
        open.received += data.len() as u64;
        if open.content_length.is_some_and(|n| open.received > n) {
            self.stream_error(
                stream,
                ErrorCode::PROTOCOL_ERROR,
                "more DATA than content-length",
            );
            return Ok(());
        }
        if end_stream && !self.end_of_body(stream) {
            return Ok(());
        }
        self.events.push_back(Event::Data {
            stream,
            data,
            end_stream,
        });
        Ok(())
    }

    /// The client ended its side of `stream`; false (and the stream reset) when the body's
    /// length broke its `content-length`.
    fn end_of_body(&mut self, stream: StreamId) -> bool {
        let Some(open) = self.streams.get_mut(&stream) else {
            return false;
        };
        if open.content_length.is_some_and(|n| n != open.received) {
            self.stream_error(
                stream,
                ErrorCode::PROTOCOL_ERROR,
                "less DATA than content-length",
            );
            return false;
        }
        open.remote_open = false;
        self.forget_if_done(stream);
        true
    }

    fn on_reset(&mut self, stream: StreamId, code: ErrorCode) -> Result<(), ConnectionError> {
        if stream > self.last_stream {
            return Err(error(
                ErrorCode::PROTOCOL_ERROR,
                "RST_STREAM on an idle stream",
            ));
        }
        let Some(open) = self.streams.remove(&stream) else {
            return Ok(());
        };
        self.remember_closed(stream, false);
        if open.local_open {
            self.pending_resets += 1;
            if self.pending_resets > self.limits.max_pending_resets {
                return Err(error(
                    ErrorCode::ENHANCE_YOUR_CALM,
                    "too many streams reset before their answer",
                ));
            }
        }
        self.events.push_back(Event::Reset {
            stream,
            code,
            reason: "the client reset the stream",
        });
        Ok(())
    }

    fn on_settings(&mut self, settings: &[frame::Setting]) -> Result<(), ConnectionError> {
        for &(id, value) in settings {
            match id {
                setting::INITIAL_WINDOW_SIZE => {
                    let delta = i64::from(value) - i64::from(self.peer_stream_window);
                    for open in self.streams.values_mut() {
                        open.send_window += delta;
                        if open.send_window > i64::from(MAX_WINDOW) {
                            return Err(error(
                                ErrorCode::FLOW_CONTROL_ERROR,
                                "SETTINGS_INITIAL_WINDOW_SIZE took a window past 2^31-1",
                            ));
                        }
                    }
                    self.peer_stream_window = value;
                    if delta > 0 {
                        self.events.push_back(Event::WindowOpened);
                    }
                }
                setting::MAX_FRAME_SIZE => self.peer_max_frame_size = value,
                setting::HEADER_TABLE_SIZE => self.encoder.peer_table_size_changed(),
                _ => {}
            }
        }
        frame::put_settings_ack(&mut self.output);
        Ok(())
    }

    fn on_window_update(
        &mut self,
        stream: StreamId,
        increment: u32,
    ) -> Result<(), ConnectionError> {
        if stream == 0 {
            self.send_window += i64::from(increment);
            if self.send_window > i64::from(MAX_WINDOW) {
                return Err(error(
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "the connection's window past 2^31-1",
                ));
            }
        } else if let Some(open) = self.streams.get_mut(&stream) {
            open.send_window += i64::from(increment);
            if open.send_window > i64::from(MAX_WINDOW) {
                self.stream_error(
                    stream,
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "a stream's window past 2^31-1",
                );
                return Ok(());
            }
        } else if stream > self.last_stream {
            return Err(error(
                ErrorCode::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        self.events.push_back(Event::WindowOpened);
        Ok(())
    }

    /// Resets `stream` for breaking a rule, telling the driver.
    fn stream_error(&mut self, stream: StreamId, code: ErrorCode, reason: &'static str) {
        tracing::debug!(stream, ?code, reason, "HTTP/2 stream error");
        frame::put_rst_stream(&mut self.output, stream, code);
        if self.streams.remove(&stream).is_some() {
            self.remember_closed(stream, true);
            self.events.push_back(Event::Reset {
                stream,
                code,
                reason,
            });
        }
    }

    /// Notes that `stream` closed, and whether this side reset it.
    fn remember_closed(&mut self, stream: StreamId, reset_here: bool) {
        if self.recently_closed.len() == RECENTLY_CLOSED {
            self.recently_closed.pop_front();
        }
        self.recently_closed.push_back((stream, reset_here));
    }

    /// Whether `stream` closed lately and this side reset it; `None` when it is not
    /// remembered (never opened, or closed long ago).
    fn closed_here(&self, stream: StreamId) -> Option<bool> {
        self.recently_closed
            .iter()
            .rev()
            .find(|(id, _)| *id == stream)
            .map(|(_, reset_here)| *reset_here)
    }

    /// Answers `stream` with `status` and no body, and asks the client to stop sending.
    fn refuse(&mut self, stream: StreamId, status: StatusCode) {
        self.send_response(stream, status, &HeaderMap::new(), true);
        if self.streams.contains_key(&stream) {
            self.reset(stream, ErrorCode::NO_ERROR);
        }
    }

    /// Gives the connection's window back, half a window at a time rather than a
    /// WINDOW_UPDATE per DATA frame.
    fn give_back_connection(&mut self, octets: u32) {
        self.connection_released += octets;
        if self.connection_released >= self.limits.connection_window.max(65_535) / 2 {
            let increment = std::mem::take(&mut self.connection_released);
            self.recv_window += i64::from(increment);
            frame::put_window_update(&mut self.output, 0, increment);
        }
    }

    fn forget_if_done(&mut self, stream: StreamId) {
        if self
            .streams
            .get(&stream)
            .is_some_and(|s| !s.remote_open && !s.local_open)
        {
            self.streams.remove(&stream);
            self.remember_closed(stream, false);
        }
    }

    /// Writes an answer's head; `end_stream` when it has no body.
    pub fn send_response(
        &mut self,
        stream: StreamId,
        status: StatusCode,
        headers: &HeaderMap,
        end_stream: bool,
    ) {
        let Some(open) = self
            .streams
            .get_mut(&stream)
            .filter(|s| s.local_open && !s.answered)
        else {
            return;
        };
        open.answered = true;
        let mut block = BytesMut::with_capacity(64 + headers.len() * 32);
        self.encoder.begin_block(&mut block);
        self.encoder.status(status, &mut block);
        self.put_fields(headers, &mut block);
        frame::put_headers(
            &mut self.output,
            stream,
            &block,
            end_stream,
            self.peer_max_frame_size,
        );
        if end_stream {
            self.local_end(stream);
        }
    }

    /// Writes trailers, which end the answer.
    pub fn send_trailers(&mut self, stream: StreamId, trailers: &HeaderMap) {
        if !self.sending(stream) {
            return;
        }
        let mut block = BytesMut::with_capacity(trailers.len() * 32);
        self.encoder.begin_block(&mut block);
        self.put_fields(trailers, &mut block);
        frame::put_headers(
            &mut self.output,
            stream,
            &block,
            true,
            self.peer_max_frame_size,
        );
        self.local_end(stream);
    }

    fn put_fields(&mut self, headers: &HeaderMap, block: &mut BytesMut) {
        for (name, value) in headers {
            // Connection-specific fields have no place in HTTP/2 (§8.2.2).
            if request_head::is_connection_specific(name) {
                continue;
            }
            self.encoder.field(
                name.as_str().as_bytes(),
                value.as_bytes(),
                value.is_sensitive(),
                block,
            );
        }
    }

    /// Whether an answer is under way on `stream`: its head sent, its end not.
    fn sending(&self, stream: StreamId) -> bool {
        self.streams
            .get(&stream)
            .is_some_and(|s| s.local_open && s.answered)
    }

    /// What may be sent on `stream` now: the least of its window and the connection's.
    pub fn send_capacity(&self, stream: StreamId) -> usize {
        self.streams
            .get(&stream)
            .filter(|s| s.local_open)
            .map_or(0, |s| s.send_window.min(self.send_window).max(0) as usize)
    }

    /// Writes as much of `data` as the windows allow, in frames the client takes, and returns
    /// how much went. END_STREAM goes with the last octet when `end_stream`, or alone when
    /// `data` is empty.
    pub fn send_data(&mut self, stream: StreamId, data: &mut Bytes, end_stream: bool) -> usize {
        if !self.sending(stream) || (data.is_empty() && !end_stream) {
            return 0;
        }
        let mut sent = 0;
        loop {
            let capacity = self
                .send_capacity(stream)
                .min(self.peer_max_frame_size as usize);
            if !self.streams.contains_key(&stream) || (capacity == 0 && !data.is_empty()) {
                return sent;
            }
            let n = capacity.min(data.len());
            let last = n == data.len();
            let chunk = data.split_to(n);
            frame::put_data_header(&mut self.output, stream, n, last && end_stream);
            self.output.extend_from_slice(&chunk);
            sent += n;
            self.send_window -= n as i64;
            if let Some(open) = self.streams.get_mut(&stream) {
                open.send_window -= n as i64;
            }
            if last {
                if end_stream {
                    self.local_end(stream);
                }
                return sent;
            }
        }
    }

    fn local_end(&mut self, stream: StreamId) {
        if let Some(open) = self.streams.get_mut(&stream) {
            open.local_open = false;
            self.pending_resets = self.pending_resets.saturating_sub(1);
        }
        self.forget_if_done(stream);
    }

    /// Gives back `octets` of `stream`'s window once its reader took them.
    pub fn release(&mut self, stream: StreamId, octets: usize) {
        let Some(open) = self.streams.get_mut(&stream) else {
            return;
        };
        open.released = open
            .released
            .saturating_add(u32::try_from(octets).unwrap_or(u32::MAX));
        // A WINDOW_UPDATE per half window read, not per frame.
        if open.remote_open && open.released >= self.limits.stream_window / 2 {
            let increment = std::mem::take(&mut open.released);
            open.recv_window += i64::from(increment);
            frame::put_window_update(&mut self.output, stream, increment);
        }
    }

    /// Resets `stream` from this side (the answer failed, or the request is no longer read).
    pub fn reset(&mut self, stream: StreamId, code: ErrorCode) {
        if self.streams.remove(&stream).is_some() {
            frame::put_rst_stream(&mut self.output, stream, code);
            self.remember_closed(stream, true);
        }
    }

    /// Sends a PING: whatever comes back shows the client alive.
    pub fn ping(&mut self) {
        frame::put_ping(&mut self.output, false, *b"hyphae\0\0");
    }

    /// Starts a graceful shutdown: GOAWAY naming the last stream taken; streams above it are
    /// ignored, those below it finish.
    pub fn go_away(&mut self) {
        self.accept_below = self.last_stream;
        frame::put_goaway(&mut self.output, self.last_stream, ErrorCode::NO_ERROR, "");
    }
}

fn error(code: ErrorCode, reason: &'static str) -> ConnectionError {
    ConnectionError { code, reason }
}

fn decode_reason(error: hpack::DecodeError) -> &'static str {
    match error {
        hpack::DecodeError::Truncated => "a header block ends inside a field",
        hpack::DecodeError::IntegerOverflow => "an integer too large in a header block",
        hpack::DecodeError::BadIndex(_) => "a header block refers to a missing table entry",
        hpack::DecodeError::MisplacedSizeUpdate => "a misplaced dynamic table size update",
        hpack::DecodeError::TableSizeTooLarge(_) => "a dynamic table size update too large",
        hpack::DecodeError::Huffman(_) => "a Huffman string that cannot be read",
    }
}

/// The request's `content-length`: one number, however many lines say it (RFC 9110 §8.6).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, request_head::Malformed> {
    let mut length = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        let parsed = std::str::from_utf8(value.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or("a content-length that is no number")?;
        if length.is_some_and(|n| n != parsed) {
            return Err("content-length lines that differ");
        }
        length = Some(parsed);
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    /// A client's side of the conversation, written with the codec's own frame writers.
    struct Client {
        encoder: hpack::Encoder,
        decoder: hpack::Decoder,
    }

    impl Client {
        fn new() -> Self {
            Client {
                encoder: hpack::Encoder::default(),
                decoder: hpack::Decoder::new(hpack::DEFAULT_TABLE_SIZE),
            }
        }

        fn preface(settings: &[frame::Setting]) -> BytesMut {
            let mut out = BytesMut::from(frame::PREFACE);
            frame::put_settings(&mut out, settings);
            out
        }

        fn block(&mut self, fields: &[(&str, &str)]) -> BytesMut {
            let mut block = BytesMut::new();
            for (name, value) in fields {
                self.encoder
                    .field(name.as_bytes(), value.as_bytes(), false, &mut block);
            }
            block
        }

        fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) -> BytesMut {
            let block = self.block(fields);
            let mut out = BytesMut::new();
            frame::put_headers(&mut out, stream, &block, end_stream, 1 << 20);
            out
        }

        fn get(&mut self, stream: u32, extra: &[(&str, &str)], end_stream: bool) -> BytesMut {
            let mut fields = vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "svc.mesh"),
                (":path", "/"),
            ];
            fields.extend_from_slice(extra);
            self.headers(stream, &fields, end_stream)
        }

        /// Every frame the server wrote, header blocks decoded into (name, value) pairs.
        fn read(&mut self, server: &mut Connection) -> Vec<Seen> {
            let mut out = std::mem::take(server.output());
            let mut seen = Vec::new();
            while let Some(frame) = frame::read(&mut out, frame::MAX_MAX_FRAME_SIZE).expect("valid")
            {
                seen.push(match frame {
                    Frame::Headers {
                        stream,
                        fragment,
                        end_stream,
                        ..
                    } => {
                        let mut fields = Vec::new();
                        self.decoder
                            .decode(&fragment, usize::MAX, |f| {
                                fields.push((
                                    String::from_utf8_lossy(&f.name).into_owned(),
                                    String::from_utf8_lossy(&f.value).into_owned(),
                                ))
                            })
                            .expect("decodes");
                        Seen::Headers(stream, fields, end_stream)
                    }
                    other => Seen::Frame(other),
                });
            }
            seen
        }
    }

    #[derive(Debug, PartialEq)]
    enum Seen {
        Headers(StreamId, Vec<(String, String)>, bool),
        Frame(Frame),
    }

    fn open(limits: Limits) -> (Connection, Client) {
        let mut server = Connection::new(limits);
        let mut client = Client::new();
        let mut input = Client::preface(&[]);
        server.receive(&mut input).expect("handshake");
        let seen = client.read(&mut server);
        assert!(matches!(
            &seen[0],
            Seen::Frame(Frame::Settings { ack: false, .. })
        ));
        assert!(seen.contains(&Seen::Frame(Frame::Settings {
            ack: true,
            settings: vec![]
        })));
        (server, client)
    }

    fn events(server: &mut Connection) -> Vec<Event> {
        std::iter::from_fn(|| server.next_event()).collect()
    }

    fn resets(seen: &[Seen]) -> Vec<(StreamId, ErrorCode)> {
        seen.iter()
            .filter_map(|s| match s {
                Seen::Frame(Frame::RstStream { stream, code }) => Some((*stream, *code)),
                _ => None,
            })
            .collect()
    }

    fn goaway(seen: &[Seen]) -> Option<ErrorCode> {
        seen.iter().find_map(|s| match s {
            Seen::Frame(Frame::GoAway { code, .. }) => Some(*code),
            _ => None,
        })
    }

    #[test]
    fn a_request_and_its_answer() {
        let (mut server, mut client) = open(Limits::default());
        let mut input = client.get(1, &[("accept", "*/*")], true);
        server.receive(&mut input).expect("request");
        let Some(Event::Request {
            stream: 1,
            request,
            end_stream: true,
        }) = server.next_event()
        else {
            panic!("expected a request");
        };
        assert_eq!(request.uri(), "http://svc.mesh/");
        assert_eq!(request.headers()["accept"], "*/*");
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "text/plain".parse().expect("value"));
        headers.insert("connection", "close".parse().expect("value"));
        server.send_response(1, StatusCode::OK, &headers, false);
        let mut body = Bytes::from_static(b"hello");
        assert_eq!(server.send_data(1, &mut body, true), 5);
        assert_eq!(server.open_streams(), 0, "both sides ended");
        let seen = client.read(&mut server);
        assert_eq!(
            seen,
            vec![
                Seen::Headers(
                    1,
                    vec![
                        (":status".into(), "200".into()),
                        ("content-type".into(), "text/plain".into())
                    ],
                    false
                ),
                Seen::Frame(Frame::Data {
                    stream: 1,
                    data: Bytes::from_static(b"hello"),
                    end_stream: true,
                    flow_len: 5
                }),
            ]
        );
        // Nothing more may go on an ended stream.
        assert_eq!(server.send_data(1, &mut Bytes::from_static(b"x"), true), 0);
        assert!(server.output().is_empty());
    }

    #[test]
    fn an_answer_can_end_in_trailers() {
        let (mut server, mut client) = open(Limits::default());
        let mut input = client.get(1, &[], true);
        server.receive(&mut input).expect("request");
        server.send_response(1, StatusCode::OK, &HeaderMap::new(), false);
        assert_eq!(server.send_data(1, &mut Bytes::from_static(b"x"), false), 1);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("value"));
        server.send_trailers(1, &trailers);
        let seen = client.read(&mut server);
        assert_eq!(
            seen.last(),
            Some(&Seen::Headers(
                1,
                vec![("grpc-status".into(), "0".into())],
                true
            ))
        );
        assert_eq!(server.open_streams(), 0);
    }

    #[test]
    fn a_bad_preface_or_first_frame_ends_the_connection() {
        let mut server = Connection::new(Limits::default());
        server.output().clear();
        let mut input = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        let error = server.receive(&mut input).expect_err("not HTTP/2");
        assert_eq!(error.code, ErrorCode::PROTOCOL_ERROR);
        assert_eq!(
            goaway(&Client::new().read(&mut server)),
            Some(ErrorCode::PROTOCOL_ERROR)
        );

        let mut server = Connection::new(Limits::default());
        let mut input = BytesMut::from(frame::PREFACE);
        frame::put_ping(&mut input, false, [0; 8]);
        assert_eq!(
            server.receive(&mut input).map_err(|e| e.reason),
            Err("the first frame is not SETTINGS")
        );

        // A preface that arrives in pieces is waited for.
        let mut server = Connection::new(Limits::default());
        let mut input = BytesMut::from(&frame::PREFACE[..10]);
        server.receive(&mut input).expect("so far so good");
        input.extend_from_slice(&frame::PREFACE[10..]);
        frame::put_settings(&mut input, &[]);
        server.receive(&mut input).expect("preface and SETTINGS");
        assert!(input.is_empty());
    }

    #[test]
    fn a_request_body_flows_within_its_window_and_is_given_back() {
        let limits = Limits {
            stream_window: 100,
            ..Limits::default()
        };
        let (mut server, mut client) = open(limits);
        let mut input = client.get(1, &[("content-length", "150")], false);
        frame::put_data_header(&mut input, 1, 100, false);
        input.put_slice(&[b'a'; 100]);
        server.receive(&mut input).expect("body");
        let got = events(&mut server);
        assert!(
            matches!(got[1], Event::Data { stream: 1, ref data, end_stream: false } if data.len() == 100)
        );
        let _ = client.read(&mut server);
        // Past the window before any was read: the stream, not the connection, is reset.
        let mut more = BytesMut::new();
        frame::put_data_header(&mut more, 1, 50, true);
        more.put_slice(&[b'b'; 50]);
        server
            .receive(&mut more.clone())
            .expect("a stream error only");
        assert_eq!(
            resets(&client.read(&mut server)),
            vec![(1, ErrorCode::FLOW_CONTROL_ERROR)]
        );

        // Read, then given back: the window opens and the rest may come.
        let (mut server, mut client) = open(limits_with_window(100));
        let mut input = client.get(1, &[("content-length", "150")], false);
        frame::put_data_header(&mut input, 1, 100, false);
        input.put_slice(&[b'a'; 100]);
        server.receive(&mut input).expect("body");
        server.release(1, 100);
        let seen = client.read(&mut server);
        assert!(seen.contains(&Seen::Frame(Frame::WindowUpdate {
            stream: 1,
            increment: 100
        })));
        server.receive(&mut more).expect("the rest");
        let last = events(&mut server).pop();
        assert!(matches!(
            last,
            Some(Event::Data {
                stream: 1,
                end_stream: true,
                ..
            })
        ));
    }

    fn limits_with_window(stream_window: u32) -> Limits {
        Limits {
            stream_window,
            ..Limits::default()
        }
    }

    #[test]
    fn the_connections_window_is_given_back_as_data_arrives() {
        let limits = Limits {
            connection_window: 65_535,
            ..Limits::default()
        };
        let (mut server, mut client) = open(limits);
        let mut input = BytesMut::new();
        for stream in [1, 3] {
            input.extend_from_slice(&client.get(stream, &[], false));
            for _ in 0..3 {
                frame::put_data_header(&mut input, stream, 16_000, false);
                input.put_slice(&[b'x'; 16_000]);
            }
        }
        // 96,000 octets in all, none read: more than the connection's 65,535.
        server
            .receive(&mut input)
            .expect("within the windows given back");
        let updates: Vec<u32> = client
            .read(&mut server)
            .into_iter()
            .filter_map(|s| match s {
                Seen::Frame(Frame::WindowUpdate {
                    stream: 0,
                    increment,
                }) => Some(increment),
                _ => None,
            })
            .collect();
        assert_eq!(updates, vec![48_000, 48_000]);
    }

    #[test]
    fn a_body_that_breaks_its_content_length_resets_the_stream() {
        let (mut server, mut client) = open(Limits::default());
        let mut input = client.get(1, &[("content-length", "3")], false);
        frame::put_data_header(&mut input, 1, 2, true);
        input.put_slice(b"ab");
        let mut second = client.get(3, &[("content-length", "1")], false);
        frame::put_data_header(&mut second, 3, 2, false);
        second.put_slice(b"ab");
        input.extend_from_slice(&second);
        input.extend_from_slice(&client.get(5, &[("content-length", "2")], true));
        server.receive(&mut input).expect("stream errors only");
        // The body's reader is told which rule the client broke.
        let reasons: Vec<_> = events(&mut server)
            .into_iter()
            .filter_map(|event| match event {
                Event::Reset { stream, reason, .. } => Some((stream, reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                (1, "less DATA than content-length"),
                (3, "more DATA than content-length"),
                (5, "a content-length with no body")
            ]
        );
        assert_eq!(
            resets(&client.read(&mut server)),
            vec![
                (1, ErrorCode::PROTOCOL_ERROR),
                (3, ErrorCode::PROTOCOL_ERROR),
                (5, ErrorCode::PROTOCOL_ERROR)
            ]
        );
        assert_eq!(server.open_streams(), 0);
    }

    #[test]
    fn answers_wait_for_the_clients_windows() {
        let mut server = Connection::new(Limits::default());
        let mut client = Client::new();
        let mut input = Client::preface(&[(setting::INITIAL_WINDOW_SIZE, 10)]);
        input.extend_from_slice(&client.get(1, &[], true));
        server.receive(&mut input).expect("request");
        let _ = client.read(&mut server);
        server.send_response(1, StatusCode::OK, &HeaderMap::new(), false);
        let mut body = Bytes::from(vec![b'x'; 25]);
        assert_eq!(server.send_data(1, &mut body, true), 10);
        assert_eq!(body.len(), 15);
        assert_eq!(server.send_capacity(1), 0);
        let mut update = BytesMut::new();
        frame::put_window_update(&mut update, 1, 100);
        server.receive(&mut update).expect("window");
        assert!(matches!(server.next_event(), Some(Event::Request { .. })));
        assert!(matches!(server.next_event(), Some(Event::WindowOpened)));
        assert_eq!(server.send_data(1, &mut body, true), 15);
        let seen = client.read(&mut server);
        let data: Vec<(usize, bool)> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Frame(Frame::Data {
                    data, end_stream, ..
                }) => Some((data.len(), *end_stream)),
                _ => None,
            })
            .collect();
        assert_eq!(data, vec![(10, false), (15, true)]);
    }

    #[test]
    fn streams_past_the_limit_are_refused_and_may_be_sent_again() {
        let limits = Limits {
            max_concurrent_streams: 1,
            ..Limits::default()
        };
        let (mut server, mut client) = open(limits);
        let mut input = client.get(1, &[], true);
        input.extend_from_slice(&client.get(3, &[], true));
        server.receive(&mut input).expect("two requests");
        assert_eq!(
            resets(&client.read(&mut server)),
            vec![(3, ErrorCode::REFUSED_STREAM)]
        );
        server.send_response(1, StatusCode::NO_CONTENT, &HeaderMap::new(), true);
        let mut again = client.get(5, &[], true);
        server.receive(&mut again).expect("room again");
        let requests = events(&mut server)
            .into_iter()
            .filter(|e| matches!(e, Event::Request { .. }))
            .count();
        assert_eq!(requests, 2);
    }

    #[test]
    fn a_malformed_request_resets_its_stream_and_the_connection_goes_on() {
        let (mut server, mut client) = open(Limits::default());
        let mut input = client.get(1, &[("X-Upper", "1")], true);
        input.extend_from_slice(&client.get(3, &[("bad name", "1")], true));
        input.extend_from_slice(&client.get(5, &[], true));
        server.receive(&mut input).expect("stream errors only");
        assert_eq!(
            resets(&client.read(&mut server)),
            vec![
                (1, ErrorCode::PROTOCOL_ERROR),
                (3, ErrorCode::PROTOCOL_ERROR)
            ]
        );
        let requests: Vec<StreamId> = events(&mut server)
            .into_iter()
            .filter_map(|e| match e {
                Event::Request { stream, .. } => Some(stream),
                _ => None,
            })
            .collect();
        assert_eq!(requests, vec![5]);
    }

    #[test]
    fn an_oversized_header_list_gets_431() {
        let limits = Limits {
            max_header_list_size: 200,
            ..Limits::default()
        };
        let (mut server, mut client) = open(limits);
        let big = "v".repeat(300);
        let mut input = client.get(1, &[("x-big", &big)], true);
        server.receive(&mut input).expect("refused, not closed");
        let seen = client.read(&mut server);
        assert_eq!(
            seen,
            vec![Seen::Headers(
                1,
                vec![(":status".into(), "431".into())],
                true
            )]
        );
        assert!(events(&mut server).is_empty());
    }

    #[test]
    fn header_blocks_span_continuations_and_nothing_may_interrupt_them() {
        let (mut server, mut client) = open(Limits::default());
        let block = client.block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/upload"),
        ]);
        let mut input = BytesMut::new();
        frame::put_headers(&mut input, 1, &block, false, 4);
        server.receive(&mut input).expect("split block");
        assert!(matches!(
            server.next_event(),
            Some(Event::Request { stream: 1, ref request, end_stream: false }) if request.method() == "POST"
        ));
        // Trailers end the body.
        let mut trailers = client.headers(1, &[("grpc-status", "0")], true);
        server.receive(&mut trailers).expect("trailers");
        assert!(matches!(
            server.next_event(),
            Some(Event::Trailers { stream: 1, ref trailers }) if trailers["grpc-status"] == "0"
        ));

        // A PING between HEADERS and its CONTINUATION ends the connection.
        let block = client.block(&[(":method", "GET"), (":scheme", "http"), (":path", "/")]);
        let mut input = BytesMut::new();
        frame::put_headers(&mut input, 3, &block, true, 4);
        let cut = frame::HEADER_LEN + 4;
        let mut interrupted = BytesMut::from(&input[..cut]);
        frame::put_ping(&mut interrupted, false, [0; 8]);
        interrupted.extend_from_slice(&input[cut..]);
        let error = server.receive(&mut interrupted).expect_err("interrupted");
        assert_eq!(error.code, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn a_continuation_flood_ends_the_connection() {
        let limits = Limits {
            max_header_list_size: 1000,
            ..Limits::default()
        };
        let (mut server, mut client) = open(limits);
        let block = client.block(&[(":method", "GET")]);
        // HEADERS without END_HEADERS, then CONTINUATIONs that never end the block.
        let mut flood = BytesMut::new();
        flood.put_slice(&[0, 0, 1, 0x1, 0, 0, 0, 0, 1, block[0]]);
        for _ in 0..300 {
            flood.put_slice(&[0, 0, 10, 0x9, 0, 0, 0, 0, 1]);
            flood.put_slice(&[0x40; 10]);
        }
        let error = server.receive(&mut flood).expect_err("flood");
        assert_eq!(error.code, ErrorCode::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn rapid_resets_end_the_connection() {
        let limits = Limits {
            max_pending_resets: 5,
            ..Limits::default()
        };
        let (mut server, mut client) = open(limits);
        let mut input = BytesMut::new();
        for stream in (1..=13).step_by(2) {
            input.extend_from_slice(&client.get(stream, &[], true));
            frame::put_rst_stream(&mut input, stream, ErrorCode::CANCEL);
        }
        let error = server.receive(&mut input).expect_err("too many resets");
        assert_eq!(error.code, ErrorCode::ENHANCE_YOUR_CALM);

        // Resets after answers do not count.
        let (mut server, mut client) = open(Limits {
            max_pending_resets: 5,
            ..Limits::default()
        });
        for stream in (1..=41).step_by(2) {
            let mut input = client.get(stream, &[], false);
            server.receive(&mut input).expect("request");
            server.send_response(stream, StatusCode::OK, &HeaderMap::new(), true);
            let mut reset = BytesMut::new();
            frame::put_rst_stream(&mut reset, stream, ErrorCode::NO_ERROR);
            server
                .receive(&mut reset)
                .expect("a reset after the answer");
        }
    }

    #[test]
    fn ping_is_answered_and_stream_rules_are_kept() {
        let (mut server, mut client) = open(Limits::default());
        let mut input = BytesMut::new();
        frame::put_ping(&mut input, false, *b"pingpong");
        server.receive(&mut input).expect("ping");
        assert_eq!(
            client.read(&mut server),
            vec![Seen::Frame(Frame::Ping {
                ack: true,
                payload: *b"pingpong"
            })]
        );
        // A stream that ended may not start again; one numbered below it that was never
        // opened ends the connection (§5.1.1); an even one is the server's.
        let mut input = client.get(5, &[], true);
        server.receive(&mut input).expect("request");
        server.send_response(5, StatusCode::OK, &HeaderMap::new(), true);
        let mut again = client.get(5, &[], true);
        server.receive(&mut again).expect("a stream error");
        assert_eq!(
            resets(&client.read(&mut server)),
            vec![(5, ErrorCode::STREAM_CLOSED)]
        );
        let mut lower = client.get(3, &[], true);
        assert_eq!(
            server.receive(&mut lower).map_err(|e| e.code),
            Err(ErrorCode::PROTOCOL_ERROR)
        );
        let (mut server, mut client) = open(Limits::default());
        let mut even = client.get(8, &[], true);
        assert_eq!(
            server.receive(&mut even).map_err(|e| e.code),
            Err(ErrorCode::PROTOCOL_ERROR)
        );
        // DATA on a stream never opened ends the connection.
        let (mut server, _) = open(Limits::default());
        let mut idle = BytesMut::new();
        frame::put_data_header(&mut idle, 7, 1, true);
        idle.put_u8(b'x');
        assert_eq!(
            server.receive(&mut idle).map_err(|e| e.reason),
            Err("DATA on an idle stream")
        );
    }

    #[test]
    fn frames_the_client_sent_before_it_learnt_of_a_reset_are_ignored() {
        let limits = Limits {
            max_concurrent_streams: 1,
            ..Limits::default()
        };
        let (mut server, mut client) = open(limits);
        // Stream 1 is reset by this side; stream 3 is refused (over the limit). The client
        // has already sent DATA and trailers for both.
        let mut input = client.get(1, &[], false);
        input.extend_from_slice(&client.get(3, &[], false));
        server.receive(&mut input).expect("two requests");
        server.reset(1, ErrorCode::CANCEL);
        let mut late = BytesMut::new();
        for stream in [1, 3] {
            frame::put_data_header(&mut late, stream, 4, false);
            late.put_slice(b"late");
            late.extend_from_slice(&client.headers(stream, &[("x-trailer", "1")], true));
        }
        server
            .receive(&mut late)
            .expect("ignored, not a connection error");
        assert_eq!(
            resets(&client.read(&mut server)),
            vec![(3, ErrorCode::REFUSED_STREAM), (1, ErrorCode::CANCEL)],
            "no RST_STREAM for the late frames"
        );
        // The late frames were read through: the next request is taken.
        let mut next = client.get(5, &[("x-after", "1")], true);
        server.receive(&mut next).expect("a request");
        assert!(events(&mut server).iter().any(
            |e| matches!(e, Event::Request { stream: 5, request, .. } if request.headers()["x-after"] == "1")
        ));
    }

    #[test]
    fn after_goaway_new_streams_are_ignored_and_open_ones_finish() {
        let (mut server, mut client) = open(Limits::default());
        let mut input = client.get(1, &[], true);
        server.receive(&mut input).expect("request");
        server.go_away();
        let mut late = client.get(3, &[], true);
        server.receive(&mut late).expect("ignored");
        let requests = events(&mut server)
            .into_iter()
            .filter(|e| matches!(e, Event::Request { .. }))
            .count();
        assert_eq!(requests, 1);
        server.send_response(1, StatusCode::OK, &HeaderMap::new(), true);
        let seen = client.read(&mut server);
        assert_eq!(goaway(&seen), Some(ErrorCode::NO_ERROR));
        assert!(seen.iter().any(|s| matches!(s, Seen::Headers(1, _, true))));
    }
}
