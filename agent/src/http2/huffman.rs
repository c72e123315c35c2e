//! HPACK's Huffman code (RFC 7541 §5.2, Appendix B), decoding only: clients compress most
//! header strings with it, while the agent sends its own strings raw (see [`super::hpack`]).
//!
//! The code is canonical: the codes of one length are consecutive numbers, in symbol order,
//! and each length's first code follows on from the last code of the length before. So the
//! appendix's table reduces to the length of each symbol's code, and a code is read by
//! comparing its leading bits with the first code of each length.

/// The length in bits of each symbol's code, for the 256 octets and EOS (256), as RFC 7541
/// Appendix B gives them.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// The symbol EOS: never part of a string; its leading bits pad the last octet.
const EOS: u16 = 256;
/// The shortest code and the longest.
const MIN_LENGTH: usize = 5;
const MAX_LENGTH: usize = 30;
/// Leading bits looked up at once: every code of up to this many bits is read in one step.
const FAST_BITS: usize = 8;

/// The canonical code's tables, built at compile time from [`CODE_LENGTHS`].
struct Code {
    /// Per length: the first code of that length.
    first: [u32; MAX_LENGTH + 1],
    /// Per length: how many codes have it.
    count: [u32; MAX_LENGTH + 1],
    /// Per length: where its symbols start in `symbols`.
    offset: [u16; MAX_LENGTH + 1],
    /// Symbols by (length, symbol): the order of their codes.
    symbols: [u16; 257],
    /// Per possible leading octet: `(symbol, length)` when a code of at most [`FAST_BITS`]
    /// bits starts it, else `(0, 0)`.
    fast: [(u16, u8); 1 << FAST_BITS],
    /// Per symbol: its code (for tests that build Huffman strings).
    #[cfg_attr(not(test), allow(dead_code))]
    codes: [u32; 257],
}

const CODE: Code = build();

const fn build() -> Code {
    let mut count = [0u32; MAX_LENGTH + 1];
    let mut s = 0;
    while s < 257 {
        count[CODE_LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut first = [0u32; MAX_LENGTH + 1];
    let mut offset = [0u16; MAX_LENGTH + 1];
    let mut code = 0u32;
    let mut at = 0u16;
    let mut length = 1;
    while length <= MAX_LENGTH {
        first[length] = code;
        offset[length] = at;
        code = (code + count[length]) << 1;
        at += count[length] as u16;
        length += 1;
    }
    let mut symbols = [0u16; 257];
    let mut filled = [0u16; MAX_LENGTH + 1];
    let mut codes = [0u32; 257];
    s = 0;
    while s < 257 {
        let length = CODE_LENGTHS[s] as usize;
        symbols[(offset[length] + filled[length]) as usize] = s as u16;
        codes[s] = first[length] + filled[length] as u32;
        filled[length] += 1;
        s += 1;
    }
    let mut fast = [(0u16, 0u8); 1 << FAST_BITS];
    s = 0;
    while s < 257 {
        let length = CODE_LENGTHS[s] as usize;
        if length <= FAST_BITS {
            let spare = FAST_BITS - length;
            let start = (codes[s] as usize) << spare;
            let mut i = 0;
            while i < 1 << spare {
                fast[start + i] = (s as u16, length as u8);
                i += 1;
            }
        }
        s += 1;
    }
    Code {
        first,
        count,
        offset,
        symbols,
        fast,
        codes,
    }
}

/// Why a Huffman string could not be read; each is the peer's compression error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    /// The string holds EOS, which RFC 7541 §5.2 makes an error.
    #[error("a Huffman string contains EOS")]
    Eos,
    /// The string ends in more than seven bits of padding, or in padding that is not the
    /// leading bits of EOS (all ones).
    #[error("a Huffman string ends in bad padding")]
    Padding,
}

/// Decodes the Huffman string `input`, appending its octets to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    out.reserve(input.len() + input.len() / 2);
    // Bits not yet read, in the low `held` bits of `bits`, the oldest highest.
    let mut bits: u64 = 0;
    let mut held = 0usize;
    let mut input = input.iter();
    loop {
        while held <= 56 {
            match input.next() {
                Some(&octet) => {
                    bits = (bits << 8) | u64::from(octet);
                    held += 8;
                }
                None => break,
            }
        }
        if held < MIN_LENGTH {
            break;
        }
        let (symbol, length) = next_symbol(bits, held).ok_or(HuffmanError::Padding)?;
        if length > held {
            // Only the leading bits of a code are left: padding, checked below.
            break;
        }
        if symbol == EOS {
            return Err(HuffmanError::Eos);
        }
        out.push(symbol as u8);
        held -= length;
        bits &= (1u64 << held) - 1;
    }
    // What is left must be padding: fewer than eight bits, all ones (RFC 7541 §5.2).
    if held > 7 || bits != (1u64 << held) - 1 {
        return Err(HuffmanError::Padding);
    }
    Ok(())
}

/// The symbol whose code starts the `held` bits in `bits` and its length. When fewer bits are
/// held than a code needs, the missing ones are read as ones (the padding); the caller sees
/// the length exceed `held`. `None` only when no code matches, which the canonical code's
/// completeness rules out for any 30 bits.
fn next_symbol(bits: u64, held: usize) -> Option<(u16, usize)> {
    // The next 30 bits, missing ones filled with ones.
    let window = if held >= MAX_LENGTH {
        (bits >> (held - MAX_LENGTH)) as u32
    } else {
        let missing = MAX_LENGTH - held;
        ((bits << missing) as u32) | ((1u32 << missing) - 1)
    };
    let (symbol, length) = CODE.fast[(window >> (MAX_LENGTH - FAST_BITS)) as usize];
    if length != 0 {
        return Some((symbol, length as usize));
    }
    let mut length = FAST_BITS + 1;
    while length <= MAX_LENGTH {
        let code = window >> (MAX_LENGTH - length);
        let index = code.wrapping_sub(CODE.first[length]);
        if code >= CODE.first[length] && index < CODE.count[length] {
            let symbol = CODE.symbols[CODE.offset[length] as usize + index as usize];
            return Some((symbol, length));
        }
        length += 1;
    }
    None
}

/// Encodes `input` with the code, padded with ones: for tests, which need Huffman strings
/// as clients send them.
#[cfg(test)]
pub fn encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bits: u64 = 0;
    let mut held = 0usize;
    for &octet in input {
        let length = CODE_LENGTHS[octet as usize] as usize;
        bits = (bits << length) | u64::from(CODE.codes[octet as usize]);
        held += length;
        while held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
        }
        bits &= (1u64 << held) - 1;
    }
    if held > 0 {
        out.push(((bits << (8 - held)) as u8) | ((1u8 << (8 - held)) - 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: String = text.split_whitespace().collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn decoded(input: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(input, &mut out).map(|()| out)
    }

    #[test]
    fn the_appendix_b_codes_are_the_canonical_ones() {
        // Spot checks against RFC 7541 Appendix B's hexadecimal codes.
        for (symbol, code) in [
            (b'0' as usize, 0x0),
            (b'a' as usize, 0x3),
            (b' ' as usize, 0x14),
            (b'A' as usize, 0x21),
            (0, 0x1ff8),
            (255, 0x3ffffee),
            (256, 0x3fffffff),
        ] {
            assert_eq!(CODE.codes[symbol], code, "symbol {symbol}");
        }
    }

    #[test]
    fn rfc_7541_appendix_c_strings_decode() {
        for (encoded, text) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
            ("9bd9 ab", "gzip"),
        ] {
            assert_eq!(
                decoded(&hex(encoded)),
                Ok(text.as_bytes().to_vec()),
                "{text}"
            );
            assert_eq!(encode(text.as_bytes()), hex(encoded), "{text}");
        }
    }

    #[test]
    fn every_octet_survives_a_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decoded(&encode(&all)), Ok(all.clone()));
        for octet in all {
            assert_eq!(decoded(&encode(&[octet, octet])), Ok(vec![octet, octet]));
        }
        assert_eq!(decoded(&[]), Ok(vec![]));
    }

    #[test]
    fn eos_and_bad_padding_are_errors() {
        // EOS written out in full (30 ones) then padded.
        assert_eq!(decoded(&[0xff, 0xff, 0xff, 0xff]), Err(HuffmanError::Eos));
        // A whole octet of padding: eight ones after a complete code.
        let mut padded = encode(b"a");
        padded.push(0xff);
        assert_eq!(decoded(&padded), Err(HuffmanError::Padding));
        // Padding of zeros: `a` is 00011, then 000 instead of 111.
        assert_eq!(decoded(&[0b0001_1000]), Err(HuffmanError::Padding));
    }

    #[test]
    fn random_input_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut out = Vec::new();
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let length = (state % 12) as usize;
            let input: Vec<u8> = (0..length).map(|i| (state >> (i * 5)) as u8).collect();
            out.clear();
            let _ = decode(&input, &mut out);
            assert!(out.len() <= input.len() * 8 / 5);
        }
    }
}
