//! Room for the header lines of a head being parsed, and where each line lies in the buffer.
//! httparse writes each line it finds into a slice its caller provides. Room for the most lines
//! a head may hold (100, as hyper allowed) is 3.2 KB, which put each parser's stack frame over a
//! 4 KiB page, and a frame over a page is probed page by page every time it is entered: writes
//! on every request that all land in the same few cache sets (decision 98). So a head is parsed
//! with room for [`INLINE`] lines on the stack first, and only a head with more is parsed again,
//! with room for all on the heap.

use std::mem::MaybeUninit;

/// Header lines a head is first parsed with room for, on the stack: more than a request or an
/// answer usually holds (curl sends 3, browsers about 15, nginx answers with 5).
pub const INLINE: usize = 32;

/// Room for one header line.
pub type Field<'b> = MaybeUninit<httparse::Header<'b>>;

/// Runs `parse` with room for [`INLINE`] header lines and, if the head holds more and `most`
/// allows more, once again with room for `most`.
pub fn parse_with_room<'b, R>(
    most: usize,
    mut parse: impl FnMut(&mut [Field<'b>]) -> Result<R, httparse::Error>,
) -> Result<R, httparse::Error> {
    let mut inline = [const { Field::uninit() }; INLINE];
    match parse(&mut inline[..INLINE.min(most)]) {
        Err(httparse::Error::TooManyHeaders) if most > INLINE => {
            let mut room = Vec::with_capacity(most);
            room.resize_with(most, Field::uninit);
            parse(&mut room)
        }
        other => other,
    }
}

/// Where a piece of a parsed head lies in `buf`: from, to. httparse gives an empty reason
/// phrase or value as a slice of its own, not of `buf`: its place there is no place, and the
/// empty span `(0, 0)` says the same.
pub fn span(buf: &[u8], part: &[u8]) -> (usize, usize) {
    match (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize) {
        Some(from) if !part.is_empty() && from + part.len() <= buf.len() => {
            (from, from + part.len())
        }
        _ => (0, 0),
    }
}

/// Adds where each parsed header line's name and value lie in `buf` to `spans`, so the head
/// can be split off and its values shared with it rather than copied.
pub fn add_field_spans(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
    spans: &mut impl Extend<((usize, usize), (usize, usize))>,
) {
    spans.extend(
        fields
            .iter()
            .map(|field| (span(buf, field.name.as_bytes()), span(buf, field.value))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request head with `lines` header lines.
    fn head(lines: usize) -> Vec<u8> {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for line in 0..lines {
            head.extend_from_slice(format!("x-line-{line}: {line}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    /// Parses `bytes` with room for `most` lines: the lines found and how many parses it took.
    fn parse(bytes: &[u8], most: usize) -> (Result<usize, httparse::Error>, usize) {
        let mut parses = 0;
        let found = parse_with_room(most, |fields| {
            parses += 1;
            let mut request = httparse::Request::new(&mut []);
            httparse::ParserConfig::default().parse_request_with_uninit_headers(
                &mut request,
                bytes,
                fields,
            )?;
            Ok(request.headers.len())
        });
        (found, parses)
    }

    #[test]
    fn a_piece_of_the_buffer_has_its_place_and_an_empty_or_foreign_one_none() {
        let buf = b"HTTP/1.1 200 OK\r\n";
        assert_eq!(span(buf, &buf[9..12]), (9, 12));
        assert_eq!(span(buf, &buf[3..3]), (0, 0));
        assert_eq!(span(buf, b"OK"), (0, 0));
    }

    #[test]
    fn a_head_within_the_inline_room_is_parsed_once() {
        assert_eq!(parse(&head(INLINE), 100), (Ok(INLINE), 1));
    }

    #[test]
    fn a_head_with_more_lines_is_parsed_again_with_room_for_the_most() {
        assert_eq!(parse(&head(INLINE + 1), 100), (Ok(INLINE + 1), 2));
        assert_eq!(parse(&head(100), 100), (Ok(100), 2));
    }

    #[test]
    fn a_head_over_the_most_is_refused() {
        assert_eq!(
            parse(&head(101), 100),
            (Err(httparse::Error::TooManyHeaders), 2)
        );
        assert_eq!(
            parse(&head(11), 10),
            (Err(httparse::Error::TooManyHeaders), 1)
        );
    }
}
