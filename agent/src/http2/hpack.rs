//! HPACK (RFC 7541): the header compression of HTTP/2. The [`Decoder`] reads every
//! representation a client may send (indexed fields, literals with and without indexing,
//! Huffman strings, dynamic table size updates); the [`Encoder`] writes what is cheapest to
//! produce and keeps no state the client must track: fully indexed fields where the static
//! table holds the pair (`:status: 200`), otherwise literals without indexing with the name
//! indexed where the static table has it, strings raw. That is haproxy's choice too: the h2
//! crate's Huffman coding and dynamic table cost about 1,900 instructions per answer of the
//! bench (decision 89), for a few bytes on loopback and between hosts.
//!
//! Both sides are bounded: a decoder's dynamic table by the `SETTINGS_HEADER_TABLE_SIZE` it
//! advertised, the fields it hands on by the header list size, and every integer and string
//! by the block it is read from. Any malformed block is a [`DecodeError`], which RFC 9113
//! §4.3 makes a connection error of type `COMPRESSION_ERROR`.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::huffman::{self, HuffmanError};

/// The static table (RFC 7541 Appendix A); index 1 is the first entry.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// What an entry costs in a dynamic table beyond its name and value (RFC 7541 §4.1), and what
/// a field costs in a header list beyond them (RFC 9113 §6.5.2).
pub const ENTRY_OVERHEAD: usize = 32;

/// `SETTINGS_HEADER_TABLE_SIZE`'s initial value (RFC 9113 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Continuation octets an integer may take: enough for any value below 2^28, far above every
/// bound a field or table has here.
const MAX_INTEGER_OCTETS: usize = 4;

/// One header field as a block carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name as sent: HPACK does not check it; the stream layer does (RFC 9113 §8.2).
    pub name: Bytes,
    /// The value as sent.
    pub value: Bytes,
    /// Sent as never indexed (RFC 7541 §6.2.3): an intermediary must send it on the same way.
    pub never_indexed: bool,
}

/// Why a header block could not be decoded: the peer's compression error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The block ends inside a representation.
    #[error("the header block ends inside a field")]
    Truncated,
    /// An integer runs past [`MAX_INTEGER_OCTETS`] continuation octets.
    #[error("an integer in the header block is too large")]
    IntegerOverflow,
    /// Index 0, or past the end of the static and dynamic tables.
    #[error("the header block refers to table entry {0}, which does not exist")]
    BadIndex(usize),
    /// A dynamic table size update after the first field, or more than two of them.
    #[error("a dynamic table size update is not at the start of the header block")]
    MisplacedSizeUpdate,
    /// A dynamic table size update above what this side advertised.
    #[error("a dynamic table size update to {0} octets exceeds the advertised maximum")]
    TableSizeTooLarge(usize),
    /// A Huffman string that cannot be read.
    #[error(transparent)]
    Huffman(#[from] HuffmanError),
}

/// The dynamic table: the newest entry first (index 62 on the wire).
#[derive(Debug, Default)]
struct DynamicTable {
    entries: VecDeque<(Bytes, Bytes)>,
    /// The sum of the entries' sizes.
    size: usize,
    /// The most `size` may reach: the last size update's.
    max_size: usize,
}

impl DynamicTable {
    fn get(&self, index: usize) -> Option<&(Bytes, Bytes)> {
        self.entries.get(index)
    }

    /// Adds an entry, evicting the oldest ones to make room; one larger than the table
    /// empties it and is not kept (RFC 7541 §4.4).
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        self.evict_to(self.max_size.saturating_sub(size));
        if size <= self.max_size {
            // Copied: an entry must not keep the whole block it came in alive.
            self.entries
                .push_front((Bytes::copy_from_slice(name), Bytes::copy_from_slice(value)));
            self.size += size;
        }
    }

    fn resize(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some((name, value)) => self.size -= name.len() + value.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }
}

/// What decoding a block found besides its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// The fields' sizes (name, value and 32 each) passed the header list size: the fields
    /// from the one that passed it on were not handed on, but the block was read to its end,
    /// so the table stays in step and the stream alone can be refused (RFC 9113 §10.5.1).
    pub over_size: bool,
}

/// Decodes the header blocks of one connection, in the order they arrived.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The `SETTINGS_HEADER_TABLE_SIZE` this side advertised: no size update may exceed it.
    max_table_size: usize,
    /// Reused for Huffman strings.
    scratch: Vec<u8>,
}

impl Decoder {
    /// A decoder for a connection whose `SETTINGS_HEADER_TABLE_SIZE` is `max_table_size`.
    pub fn new(max_table_size: usize) -> Self {
        Decoder {
            table: DynamicTable {
                max_size: max_table_size,
                ..DynamicTable::default()
            },
            max_table_size,
            scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block (a HEADERS frame's fragment and its CONTINUATIONs),
    /// handing each field to `field` while the list stays within `max_list_size`.
    pub fn decode(
        &mut self,
        block: &Bytes,
        max_list_size: usize,
        mut field: impl FnMut(Field),
    ) -> Result<Decoded, DecodeError> {
        let mut at = 0;
        let mut list_size = 0usize;
        let mut over_size = false;
        let mut fields_seen = false;
        let mut size_updates = 0;
        while at < block.len() {
            let first = block[at];
            let decoded = if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = integer(block, &mut at, 7)?;
                let (name, value) = self.entry(index)?;
                Field {
                    name,
                    value,
                    never_indexed: false,
                }
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let (name, value) = self.literal(block, &mut at, 6)?;
                self.table.insert(&name, &value);
                Field {
                    name,
                    value,
                    never_indexed: false,
                }
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3): only before the first field, and at most
                // two (a lowered then a raised size, §4.2).
                size_updates += 1;
                if fields_seen || size_updates > 2 {
                    return Err(DecodeError::MisplacedSizeUpdate);
                }
                let size = integer(block, &mut at, 5)?;
                if size > self.max_table_size {
                    return Err(DecodeError::TableSizeTooLarge(size));
                }
                self.table.resize(size);
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001) (§6.2.2, §6.2.3).
                let never_indexed = first & 0x10 != 0;
                let (name, value) = self.literal(block, &mut at, 4)?;
                Field {
                    name,
                    value,
                    never_indexed,
                }
            };
            fields_seen = true;
            if over_size {
                continue;
            }
            list_size += decoded.name.len() + decoded.value.len() + ENTRY_OVERHEAD;
            if list_size > max_list_size {
                over_size = true;
                continue;
            }
            field(decoded);
        }
        Ok(Decoded { over_size })
    }

    /// The static or dynamic entry at `index`.
    fn entry(&self, index: usize) -> Result<(Bytes, Bytes), DecodeError> {
        match index {
            0 => Err(DecodeError::BadIndex(0)),
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok((
                    Bytes::from_static(name.as_bytes()),
                    Bytes::from_static(value.as_bytes()),
                ))
            }
            _ => self
                .table
                .get(index - 62)
                .cloned()
                .ok_or(DecodeError::BadIndex(index)),
        }
    }

    /// A literal's name (indexed, or a string when the index is 0) and value.
    fn literal(
        &mut self,
        block: &Bytes,
        at: &mut usize,
        prefix: u8,
    ) -> Result<(Bytes, Bytes), DecodeError> {
        let index = integer(block, at, prefix)?;
        let name = if index == 0 {
            self.string(block, at)?
        } else {
            self.entry(index)?.0
        };
        let value = self.string(block, at)?;
        Ok((name, value))
    }

    /// A string literal (§5.2): raw strings are slices of the block, Huffman ones decoded.
    fn string(&mut self, block: &Bytes, at: &mut usize) -> Result<Bytes, DecodeError> {
        let huffman = block.get(*at).ok_or(DecodeError::Truncated)? & 0x80 != 0;
        let length = integer(block, at, 7)?;
        let end = at
            .checked_add(length)
            .filter(|&end| end <= block.len())
            .ok_or(DecodeError::Truncated)?;
        let raw = block.slice(*at..end);
        *at = end;
        if !huffman {
            return Ok(raw);
        }
        self.scratch.clear();
        huffman::decode(&raw, &mut self.scratch)?;
        Ok(Bytes::copy_from_slice(&self.scratch))
    }
}

/// Reads an integer with an `prefix`-bit prefix (§5.1) at `at`, moving past it.
fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, DecodeError> {
    let mask = (1usize << prefix) - 1;
    let first = *block.get(*at).ok_or(DecodeError::Truncated)? as usize & mask;
    *at += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    for shift in (0..MAX_INTEGER_OCTETS).map(|i| 7 * i) {
        let octet = *block.get(*at).ok_or(DecodeError::Truncated)? as usize;
        *at += 1;
        value += (octet & 0x7f) << shift;
        if octet & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::IntegerOverflow)
}

/// Writes an integer with an `prefix`-bit prefix, the prefix's octet starting with `flags`.
fn put_integer(dst: &mut BytesMut, flags: u8, prefix: u8, value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        dst.put_u8((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

/// Writes a raw string literal.
fn put_string(dst: &mut BytesMut, string: &[u8]) {
    put_integer(dst, 0, 7, string.len());
    dst.put_slice(string);
}

/// The static table's index for `name`, if it has the name (the first of its entries).
fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

/// Encodes header blocks toward one peer. It never adds to the peer's dynamic table, so the
/// only state it keeps is whether the peer's table size changed: a decoder that lowered
/// `SETTINGS_HEADER_TABLE_SIZE` expects the next block to start with a size update within
/// the new limit (RFC 7541 §4.2); this encoder says 0, which suits any limit.
#[derive(Debug, Default)]
pub struct Encoder {
    size_update_due: bool,
}

impl Encoder {
    /// Notes the peer's `SETTINGS_HEADER_TABLE_SIZE`, whatever it is.
    pub fn peer_table_size_changed(&mut self) {
        self.size_update_due = true;
    }

    /// Starts a block: the size update, if one is due.
    pub fn begin_block(&mut self, dst: &mut BytesMut) {
        if std::mem::take(&mut self.size_update_due) {
            put_integer(dst, 0x20, 5, 0);
        }
    }

    /// Writes `:status`: indexed for the seven codes the static table holds.
    pub fn status(&mut self, status: http::StatusCode, dst: &mut BytesMut) {
        let index = match status.as_u16() {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => {
                // `:status` is index 8's name.
                put_integer(dst, 0, 4, 8);
                put_string(dst, status.as_str().as_bytes());
                return;
            }
        };
        put_integer(dst, 0x80, 7, index);
    }

    /// Writes a field as a literal without indexing, or never indexed when `sensitive`, its
    /// name indexed when the static table has it.
    pub fn field(&mut self, name: &[u8], value: &[u8], sensitive: bool, dst: &mut BytesMut) {
        let flags = if sensitive { 0x10 } else { 0x00 };
        match static_name_index(name) {
            Some(index) => put_integer(dst, flags, 4, index),
            None => {
                dst.put_u8(flags);
                put_string(dst, name);
            }
        }
        put_string(dst, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Bytes {
        let digits: String = text.split_whitespace().collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
            .into()
    }

    fn decode_all(
        decoder: &mut Decoder,
        block: &Bytes,
    ) -> Result<Vec<(String, String)>, DecodeError> {
        let mut fields = Vec::new();
        decoder.decode(block, usize::MAX, |f| {
            fields.push((
                String::from_utf8_lossy(&f.name).into_owned(),
                String::from_utf8_lossy(&f.value).into_owned(),
            ))
        })?;
        Ok(fields)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn table(decoder: &Decoder) -> (Vec<(String, String)>, usize) {
        let entries = decoder
            .table
            .entries
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        (entries, decoder.table.size)
    }

    #[test]
    fn rfc_7541_c1_integers() {
        let read = |bytes: &[u8], prefix| integer(bytes, &mut 0, prefix);
        assert_eq!(read(&[0x0a], 5), Ok(10));
        assert_eq!(read(&[0x1f, 0x9a, 0x0a], 5), Ok(1337));
        assert_eq!(read(&[0x2a], 8), Ok(42));
        for (value, prefix) in [(10, 5), (1337, 5), (42, 8), (31, 5), (0, 4), (1 << 20, 7)] {
            let mut dst = BytesMut::new();
            put_integer(&mut dst, 0, prefix, value);
            assert_eq!(read(&dst, prefix), Ok(value), "{value}");
        }
        let mut dst = BytesMut::new();
        put_integer(&mut dst, 0, 5, 1337);
        assert_eq!(&dst[..], &[0x1f, 0x9a, 0x0a]);
    }

    #[test]
    fn rfc_7541_c2_literals() {
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        let c21 = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        assert_eq!(
            decode_all(&mut decoder, &c21),
            Ok(pairs(&[("custom-key", "custom-header")]))
        );
        assert_eq!(table(&decoder).1, 55);

        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        let c22 = hex("040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(
            decode_all(&mut decoder, &c22),
            Ok(pairs(&[(":path", "/sample/path")]))
        );
        assert_eq!(table(&decoder).1, 0);

        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        let c23 = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        let mut never = Vec::new();
        decoder
            .decode(&c23, usize::MAX, |f| never.push(f))
            .expect("C.2.3");
        assert_eq!(never.len(), 1);
        assert_eq!(&never[0].name[..], b"password");
        assert!(never[0].never_indexed);
        assert_eq!(table(&decoder).1, 0);

        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        assert_eq!(
            decode_all(&mut decoder, &hex("82")),
            Ok(pairs(&[(":method", "GET")]))
        );
    }

    /// RFC 7541 C.3 (raw strings) and C.4 (Huffman): three requests on one connection.
    #[test]
    fn rfc_7541_c3_and_c4_requests() {
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
            let base = [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ];
            assert_eq!(decode_all(&mut decoder, &hex(blocks[0])), Ok(pairs(&base)));
            assert_eq!(
                table(&decoder),
                (pairs(&[(":authority", "www.example.com")]), 57)
            );
            let mut second = base.to_vec();
            second.push(("cache-control", "no-cache"));
            assert_eq!(
                decode_all(&mut decoder, &hex(blocks[1])),
                Ok(pairs(&second))
            );
            assert_eq!(table(&decoder).1, 110);
            assert_eq!(
                decode_all(&mut decoder, &hex(blocks[2])),
                Ok(pairs(&[
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/index.html"),
                    (":authority", "www.example.com"),
                    ("custom-key", "custom-value"),
                ]))
            );
            assert_eq!(
                table(&decoder),
                (
                    pairs(&[
                        ("custom-key", "custom-value"),
                        ("cache-control", "no-cache"),
                        (":authority", "www.example.com"),
                    ]),
                    164
                )
            );
        }
    }

    /// RFC 7541 C.5 (raw) and C.6 (Huffman): three responses through a 256-octet table,
    /// with evictions.
    #[test]
    fn rfc_7541_c5_and_c6_responses_with_eviction() {
        for blocks in [
            [
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
                 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
                 6c65 2e63 6f6d",
                "4803 3330 37c1 c0bf",
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
                 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
                 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
                 3d31",
            ],
            [
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                "4883 640e ffc1 c0bf",
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ],
        ] {
            let mut decoder = Decoder::new(256);
            let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
            let location = "https://www.example.com";
            assert_eq!(
                decode_all(&mut decoder, &hex(blocks[0])),
                Ok(pairs(&[
                    (":status", "302"),
                    ("cache-control", "private"),
                    ("date", date1),
                    ("location", location),
                ]))
            );
            assert_eq!(table(&decoder).1, 222);
            assert_eq!(
                decode_all(&mut decoder, &hex(blocks[1])),
                Ok(pairs(&[
                    (":status", "307"),
                    ("cache-control", "private"),
                    ("date", date1),
                    ("location", location),
                ]))
            );
            assert_eq!(table(&decoder).1, 222);
            let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
            assert_eq!(
                decode_all(&mut decoder, &hex(blocks[2])),
                Ok(pairs(&[
                    (":status", "200"),
                    ("cache-control", "private"),
                    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                    ("location", location),
                    ("content-encoding", "gzip"),
                    ("set-cookie", cookie),
                ]))
            );
            assert_eq!(
                table(&decoder),
                (
                    pairs(&[
                        ("set-cookie", cookie),
                        ("content-encoding", "gzip"),
                        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                    ]),
                    215
                )
            );
        }
    }

    #[test]
    fn malformed_blocks_are_compression_errors() {
        let decode = |block: &str| decode_all(&mut Decoder::new(DEFAULT_TABLE_SIZE), &hex(block));
        assert_eq!(decode("80"), Err(DecodeError::BadIndex(0)));
        assert_eq!(decode("be"), Err(DecodeError::BadIndex(62)));
        assert_eq!(
            decode("ff 80 80 80 80 01"),
            Err(DecodeError::IntegerOverflow)
        );
        assert_eq!(decode("ff"), Err(DecodeError::Truncated));
        // A literal whose value's length runs past the block.
        assert_eq!(decode("04 0c 2f73"), Err(DecodeError::Truncated));
        assert_eq!(decode("04"), Err(DecodeError::Truncated));
        // A size update after a field, and one above the advertised size.
        assert_eq!(decode("82 20"), Err(DecodeError::MisplacedSizeUpdate));
        assert_eq!(decode("20 20 20"), Err(DecodeError::MisplacedSizeUpdate));
        assert_eq!(
            decode("3f e2 1f"),
            Err(DecodeError::TableSizeTooLarge(4097))
        );
        // A Huffman value that is EOS.
        assert_eq!(
            decode("04 84 ffff ffff"),
            Err(DecodeError::Huffman(HuffmanError::Eos))
        );
    }

    #[test]
    fn a_size_update_evicts_and_a_lower_table_keeps_fewer_entries() {
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        let first = hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        decode_all(&mut decoder, &first).expect("first");
        assert_eq!(table(&decoder).1, 57);
        // Size 0 then 4096: the table is emptied, and index 62 is gone.
        assert_eq!(
            decode_all(&mut decoder, &hex("20 3fe1 1f 82")),
            Ok(pairs(&[(":method", "GET")]))
        );
        assert_eq!(table(&decoder), (vec![], 0));
        assert_eq!(
            decode_all(&mut decoder, &hex("be")),
            Err(DecodeError::BadIndex(62))
        );
    }

    #[test]
    fn an_oversized_list_is_flagged_and_the_table_stays_in_step() {
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        let c3 = hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        let mut seen = Vec::new();
        // Room for the first two fields only (42 + 43 octets).
        let decoded = decoder
            .decode(&c3, 85, |f| seen.push(f.name))
            .expect("decodes");
        assert!(decoded.over_size);
        assert_eq!(
            seen,
            vec![
                Bytes::from_static(b":method"),
                Bytes::from_static(b":scheme")
            ]
        );
        // The literal with indexing past the limit still went into the table.
        assert_eq!(
            decode_all(&mut decoder, &hex("be")),
            Ok(pairs(&[(":authority", "www.example.com")]))
        );
    }

    #[test]
    fn the_encoder_writes_what_the_decoder_reads() {
        let mut encoder = Encoder::default();
        let mut dst = BytesMut::new();
        encoder.peer_table_size_changed();
        encoder.begin_block(&mut dst);
        encoder.status(http::StatusCode::OK, &mut dst);
        encoder.field(b"content-type", b"text/plain", false, &mut dst);
        encoder.field(b"x-request-id", b"abc", false, &mut dst);
        encoder.field(b"authorization", b"secret", true, &mut dst);
        encoder.field(b"x-long", &[b'v'; 300], false, &mut dst);
        let block = dst.freeze();
        // Size update to 0, then :status 200 fully indexed.
        assert_eq!(&block[..2], &[0x20, 0x88]);
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        let mut fields = Vec::new();
        decoder
            .decode(&block, usize::MAX, |f| fields.push(f))
            .expect("decodes");
        let names: Vec<&[u8]> = fields.iter().map(|f| &f.name[..]).collect();
        assert_eq!(
            names,
            vec![
                &b":status"[..],
                b"content-type",
                b"x-request-id",
                b"authorization",
                b"x-long"
            ]
        );
        assert_eq!(&fields[0].value[..], b"200");
        assert_eq!(&fields[4].value[..], &[b'v'; 300][..]);
        assert!(fields[3].never_indexed && !fields[2].never_indexed);
        // Nothing was added to the decoder's table, and no size update is due any more.
        assert_eq!(table(&decoder).1, 0);
        let mut again = BytesMut::new();
        encoder.begin_block(&mut again);
        encoder.status(http::StatusCode::SERVICE_UNAVAILABLE, &mut again);
        let mut statuses = Vec::new();
        decoder
            .decode(&again.freeze(), usize::MAX, |f| statuses.push(f.value))
            .expect("decodes");
        assert_eq!(statuses, vec![Bytes::from_static(b"503")]);
    }

    #[test]
    fn random_blocks_never_panic_and_the_table_stays_bounded() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut decoder = Decoder::new(256);
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let length = (state % 24) as usize;
            let block: Bytes = (0..length)
                .map(|i| (state.rotate_left(i as u32 * 7)) as u8)
                .collect::<Vec<u8>>()
                .into();
            let mut count = 0;
            let _ = decoder.decode(&block, 4096, |_| count += 1);
            assert!(decoder.table.size <= 256);
            assert!(count <= block.len());
        }
    }
}
