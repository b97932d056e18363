//! A request body: a group of commands. `u32` count, then per command a `u32` argument count
//! and per argument a `u32` length and its bytes (all little-endian).

use ziggy_core::state_machine::Reader;

/// Why a body is not a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupError {
    /// A length runs past the end, or bytes are left over.
    Truncated,
    /// A group with no command, or a command with no name.
    Empty,
}

pub fn encode_group(commands: &[Vec<Vec<u8>>], out: &mut Vec<u8>) {
    out.extend_from_slice(&(commands.len() as u32).to_le_bytes());
    for args in commands {
        out.extend_from_slice(&(args.len() as u32).to_le_bytes());
        for arg in args {
            out.extend_from_slice(&(arg.len() as u32).to_le_bytes());
            out.extend_from_slice(arg);
        }
    }
}

/// The commands of a body, each a list of argument slices.
pub fn decode_group(body: &[u8]) -> Result<Vec<Vec<&[u8]>>, GroupError> {
    let mut reader = Reader(body);
    let count = reader.u32().ok_or(GroupError::Truncated)? as usize;
    if count == 0 {
        return Err(GroupError::Empty);
    }
    // Counts are bounded by the bytes that could hold them (4 bytes each at least).
    let mut commands = Vec::with_capacity(count.min(body.len() / 4));
    for _ in 0..count {
        let argc = reader.u32().ok_or(GroupError::Truncated)? as usize;
        if argc == 0 {
            return Err(GroupError::Empty);
        }
        let mut args = Vec::with_capacity(argc.min(reader.0.len() / 4));
        for _ in 0..argc {
            let len = reader.u32().ok_or(GroupError::Truncated)? as usize;
            args.push(reader.take(len).ok_or(GroupError::Truncated)?);
        }
        commands.push(args);
    }
    if !reader.0.is_empty() {
        return Err(GroupError::Truncated);
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_round_trip_and_garbage_is_refused() {
        let group = vec![
            vec![b"SET".to_vec(), b"k".to_vec(), b"".to_vec()],
            vec![b"GET".to_vec(), b"k".to_vec()],
        ];
        let mut body = Vec::new();
        encode_group(&group, &mut body);
        let decoded = decode_group(&body).unwrap();
        assert_eq!(
            decoded,
            vec![vec![&b"SET"[..], b"k", b""], vec![b"GET", b"k"]]
        );
        for end in 0..body.len() {
            assert!(decode_group(&body[..end]).is_err(), "{end}");
        }
        body.push(0);
        assert_eq!(decode_group(&body), Err(GroupError::Truncated));
        assert_eq!(decode_group(&0u32.to_le_bytes()), Err(GroupError::Empty));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode_group(&body);
        }
    }
}
