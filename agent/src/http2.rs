//! The agent's own HTTP/2 codec, built to replace hyper's HTTP/2 server on the ports callers
//! use: the h2 crate costs a proxied HTTP/2 request about 13,000 instructions and a third of
//! its instruction-cache misses, against haproxy's 3,400 for the whole difference between
//! its HTTP/2 and HTTP/1.1 (decision 89). Built from the bottom up, each layer tested on its
//! own before anything serves traffic with it:
//! - [`huffman`]: HPACK's Huffman code, decoding;
//! - [`hpack`]: header compression, a decoder for all a client may send and an encoder that
//!   keeps no state;
//! - [`frame`]: frames read with every check a frame alone allows, and written;
//! - [`request_head`]: a request's header block made into a request head, malformed ones
//!   refused as RFC 9113 §8 says (the stream, not the connection);
//! - [`connection`]: the server side of a connection as a state machine without I/O: streams,
//!   flow control, limits, and which errors end a stream and which the connection;
//! - [`server`]: one task per connection driving it over a socket, polling each request's
//!   call itself instead of spawning a task per stream;
//! - [`tunnel`]: a CONNECT stream's bodies as one byte stream, for splicing;
//! - [`stream_map`]: the maps of streams by id both keep.

pub mod connection;
pub mod frame;
pub mod hpack;
pub mod huffman;
pub mod request_head;
pub mod server;
pub mod stream_map;
pub mod tunnel;
