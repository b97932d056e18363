//! The payload of one embedded write: a batch of puts and deletes, applied atomically.
//!
//! `count`, then per write: 0 (delete) or 1 (put), key length, key, [value length, value]
//! (lengths and count as varints).

use crate::lsm::{table::Reader, varint, Write};

pub fn encode(batch: &[Write], out: &mut Vec<u8>) {
    out.clear();
    varint::encode(batch.len() as u64, out);
    for w in batch {
        out.push(w.value.is_some() as u8);
        varint::encode(w.key.len() as u64, out);
        out.extend_from_slice(w.key);
        if let Some(v) = w.value {
            varint::encode(v.len() as u64, out);
            out.extend_from_slice(v);
        }
    }
}

/// The writes of a payload, borrowing from it; None if it does not decode. Never panics.
pub fn decode(bytes: &[u8]) -> Option<Vec<Write<'_>>> {
    let mut reader = Reader::new(bytes);
    let count = reader.varint()? as usize;
    if count > bytes.len() {
        return None;
    }
    let mut writes = Vec::with_capacity(count);
    for _ in 0..count {
        let put = match reader.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let key = reader.bytes()?;
        let value = if put { Some(reader.bytes()?) } else { None };
        writes.push(Write { key, value });
    }
    reader.is_done().then_some(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let batch = [
            Write {
                key: b"a",
                value: Some(b"1"),
            },
            Write {
                key: b"bb",
                value: None,
            },
            Write {
                key: b"",
                value: Some(b""),
            },
        ];
        let mut out = Vec::new();
        encode(&batch, &mut out);
        let pairs = |w: &[Write]| -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
            w.iter()
                .map(|w| (w.key.to_vec(), w.value.map(|v| v.to_vec())))
                .collect()
        };
        assert_eq!(pairs(&decode(&out).unwrap()), pairs(&batch));
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_none(), "a cut payload never decodes");
        }
        assert!(decode(&[0xff; 9]).is_none());
    }
}
