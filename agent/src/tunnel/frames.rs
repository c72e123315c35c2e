//! Reads the HTTP/2 frames a server sends, as they pass on their way to hyper, for the two
//! things hyper does not tell its caller in time: the server's `SETTINGS_MAX_CONCURRENT_STREAMS`
//! and its GOAWAY. Never changes, holds back or buffers a byte of the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::capacity::ConnectionLoad;

/// Length of an HTTP/2 frame header (RFC 9113 §4.1).
const FRAME_HEADER: usize = 9;
/// Length of one setting in a SETTINGS frame's payload (RFC 9113 §6.5.1).
const SETTING: usize = 6;
/// Frame types this reader looks into (RFC 9113 §6.5, §6.8).
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
/// The SETTINGS flag of an acknowledgement, which carries no settings.
const ACK: u8 = 0x1;
/// `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113 §6.5.2).
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// What a server said that the pool acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The most streams this client may have open at once on the connection.
    MaxConcurrentStreams(u32),
    /// A SETTINGS frame (not an acknowledgement) ended: every value it carried was seen.
    SettingsEnd,
    /// A GOAWAY: the server takes no new streams on the connection.
    GoAway,
}

/// Where the reader is in the stream of frames.
#[derive(Clone, Copy, Debug)]
enum Position {
    /// Inside a frame header; `have` of its bytes are in `header`.
    Header { have: usize },
    /// Inside a frame's payload, `remaining` bytes to go.
    Payload { remaining: u32, settings: bool },
}

/// A reader of frame headers over the bytes a server sends, from its connection preface on
/// (its first frame is SETTINGS). It skips every payload except those of SETTINGS frames, so
/// its work per read is a few comparisons, however large the read.
#[derive(Debug)]
pub struct FrameReader {
    position: Position,
    header: [u8; FRAME_HEADER],
    setting: [u8; SETTING],
    setting_have: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            position: Position::Header { have: 0 },
            header: [0; FRAME_HEADER],
            setting: [0; SETTING],
            setting_have: 0,
        }
    }
}

impl FrameReader {
    /// Reads the next `bytes` the server sent, calling `seen` for each thing of note, in order.
    pub fn read(&mut self, mut bytes: &[u8], seen: &mut impl FnMut(Seen)) {
        while !bytes.is_empty() {
            match self.position {
                Position::Header { have } => {
                    let take = (FRAME_HEADER - have).min(bytes.len());
                    self.header[have..have + take].copy_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if have + take < FRAME_HEADER {
                        self.position = Position::Header { have: have + take };
                        continue;
                    }
                    self.start_frame(seen);
                }
                Position::Payload {
                    remaining,
                    settings,
                } => {
                    let take = bytes.len().min(remaining as usize);
                    if settings {
                        for &byte in &bytes[..take] {
                            self.setting_byte(byte, seen);
                        }
                    }
                    bytes = &bytes[take..];
                    // `take` is at most `remaining`, a u32.
                    let remaining = remaining - take as u32;
                    self.position = Position::Payload {
                        remaining,
                        settings,
                    };
                    if remaining == 0 {
                        self.end_frame(settings, seen);
                    }
                }
            }
        }
    }

    /// A whole frame header is in `header`: what follows is its payload.
    fn start_frame(&mut self, seen: &mut impl FnMut(Seen)) {
        let [l0, l1, l2, kind, flags, ..] = self.header;
        let length = u32::from_be_bytes([0, l0, l1, l2]);
        let settings = kind == SETTINGS && flags & ACK == 0;
        if kind == GOAWAY {
            seen(Seen::GoAway);
        }
        self.setting_have = 0;
        self.position = Position::Payload {
            remaining: length,
            settings,
        };
        if length == 0 {
            self.end_frame(settings, seen);
        }
    }

    fn end_frame(&mut self, settings: bool, seen: &mut impl FnMut(Seen)) {
        if settings {
            seen(Seen::SettingsEnd);
        }
        self.position = Position::Header { have: 0 };
    }

    fn setting_byte(&mut self, byte: u8, seen: &mut impl FnMut(Seen)) {
        self.setting[self.setting_have] = byte;
        self.setting_have += 1;
        if self.setting_have < SETTING {
            return;
        }
        self.setting_have = 0;
        let [i0, i1, v0, v1, v2, v3] = self.setting;
        if u16::from_be_bytes([i0, i1]) == MAX_CONCURRENT_STREAMS {
            seen(Seen::MaxConcurrentStreams(u32::from_be_bytes([
                v0, v1, v2, v3,
            ])));
        }
    }
}

/// A connection to a server whose incoming frames are read by a [`FrameReader`] on their way
/// to hyper, and what they say recorded in the connection's [`ConnectionLoad`]. Writes pass
/// straight through, vectored ones included.
pub struct Watched<S> {
    inner: S,
    reader: FrameReader,
    load: Arc<ConnectionLoad>,
}

impl<S> Watched<S> {
    /// Watches the frames `inner` brings for the connection whose load is `load`.
    pub fn new(inner: S, load: Arc<ConnectionLoad>) -> Self {
        Watched {
            inner,
            reader: FrameReader::default(),
            load,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let load = &this.load;
            this.reader
                .read(&buf.filled()[before..], &mut |seen| match seen {
                    Seen::MaxConcurrentStreams(max) => load.server_allows(max),
                    Seen::SettingsEnd => load.settings_arrived(),
                    Seen::GoAway => load.went_away(),
                });
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut bytes = vec![length[1], length[2], length[3], kind, flags];
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    fn settings(values: &[(u16, u32)]) -> Vec<u8> {
        let payload: Vec<u8> = values
            .iter()
            .flat_map(|(id, value)| {
                let mut setting = id.to_be_bytes().to_vec();
                setting.extend_from_slice(&value.to_be_bytes());
                setting
            })
            .collect();
        frame(SETTINGS, 0, 0, &payload)
    }

    /// What `reader` sees in `bytes` when they arrive in reads of `chunk` bytes.
    fn seen_in_chunks(bytes: &[u8], chunk: usize) -> Vec<Seen> {
        let mut reader = FrameReader::default();
        let mut seen = Vec::new();
        for piece in bytes.chunks(chunk) {
            reader.read(piece, &mut |s| seen.push(s));
        }
        seen
    }

    #[test]
    fn the_servers_stream_limit_and_goaway_are_seen_however_the_bytes_are_split() {
        let mut bytes = settings(&[(0x1, 4096), (MAX_CONCURRENT_STREAMS, 2), (0x4, 65_535)]);
        // An acknowledgement of the client's settings carries none of the server's.
        bytes.extend(frame(SETTINGS, ACK, 0, &[]));
        bytes.extend(frame(0x0, 0x1, 1, &[b'x'; 300]));
        bytes.extend(frame(0x1, 0x4, 3, &[0x88; 7]));
        bytes.extend(settings(&[(MAX_CONCURRENT_STREAMS, 0)]));
        bytes.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]));
        bytes.extend(frame(0x6, 0, 0, &[0; 8]));
        let expected = vec![
            Seen::MaxConcurrentStreams(2),
            Seen::SettingsEnd,
            Seen::MaxConcurrentStreams(0),
            Seen::SettingsEnd,
            Seen::GoAway,
        ];
        for chunk in [1, 2, 5, 6, 9, 10, 64, bytes.len()] {
            assert_eq!(seen_in_chunks(&bytes, chunk), expected, "reads of {chunk}");
        }
    }

    #[test]
    fn an_empty_settings_frame_ends_at_its_header() {
        assert_eq!(seen_in_chunks(&settings(&[]), 4), vec![Seen::SettingsEnd]);
    }
}
