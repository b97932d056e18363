//! LEB128 variable-length unsigned integers: 7 bits per byte, low bits first, the high bit set on
//! every byte but the last. Small numbers (lengths, key-prefix sizes, sequence deltas) take one
//! byte. Decoding never panics and rejects overlong or overflowing encodings, so a corrupt block
//! cannot smuggle in a value that re-encodes differently.

/// The most bytes a `u64` takes.
pub const MAX_LEN: usize = 10;

/// Appends `value` to `out`.
pub fn encode(value: u64, out: &mut Vec<u8>) {
    let mut v = value;
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The encoded length of `value`.
pub fn len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Why bytes are not a varint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended inside the number.
    Truncated,
    /// More than 64 bits, or a non-canonical encoding (a trailing zero byte).
    Invalid,
}

/// Decodes a varint from the front of `bytes`: the value and the bytes it took.
#[inline]
pub fn decode(bytes: &[u8]) -> Result<(u64, usize), VarintError> {
    match bytes.first() {
        Some(&byte) if byte < 0x80 => Ok((byte as u64, 1)), // most lengths and prefix sizes
        _ => decode_long(bytes),
    }
}

fn decode_long(bytes: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(MAX_LEN) {
        let payload = (byte & 0x7F) as u64;
        if i == MAX_LEN - 1 && payload > 1 {
            return Err(VarintError::Invalid); // beyond 64 bits
        }
        value |= payload << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(VarintError::Invalid); // overlong: a trailing zero group
            }
            return Ok((value, i + 1));
        }
    }
    if bytes.len() >= MAX_LEN {
        Err(VarintError::Invalid)
    } else {
        Err(VarintError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (300, &[0xAC, 0x02]),
            (
                u64::MAX,
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            encode(value, &mut out);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(decode(bytes), Ok((value, bytes.len())));
            assert_eq!(len(value), bytes.len());
        }
    }

    #[test]
    fn bad_encodings_are_rejected() {
        assert_eq!(decode(&[]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(
            decode(&[0x80, 0x00]),
            Err(VarintError::Invalid),
            "overlong zero"
        );
        assert_eq!(
            decode(&[0xFF; 10]),
            Err(VarintError::Invalid),
            "past 64 bits"
        );
        assert_eq!(
            decode(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02]),
            Err(VarintError::Invalid)
        );
    }

    proptest! {
        #[test]
        fn round_trips_with_trailing_bytes(value in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut out = Vec::new();
            encode(value, &mut out);
            prop_assert_eq!(out.len(), len(value));
            let taken = out.len();
            out.extend_from_slice(&tail);
            prop_assert_eq!(decode(&out), Ok((value, taken)));
        }

        #[test]
        fn decoding_any_bytes_never_panics_and_re_encodes_identically(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok((value, taken)) = decode(&bytes) {
                let mut again = Vec::new();
                encode(value, &mut again);
                prop_assert_eq!(&again[..], &bytes[..taken], "canonical");
            }
        }
    }
}
