//! The state machine behind the log, and the minimal key-value machine of the foundation.
//!
//! The replica is generic over [`StateMachine`]: it orders requests in the WAL and calls
//! [`StateMachine::apply`] for each committed entry, in index order, exactly once per request.
//! Later data models (Redis types, graph, vectors) are further state machines on the same core.

use crate::config::Config;
use crate::digest::Digest;
use crate::wal::header::{EntryHeader, Operation};
use std::collections::BTreeMap;

/// A snapshot that does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

/// A request the state machine refuses before it reaches the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidRequest {
    UnknownOperation(u8),
    KeyTooLarge { size: usize, max: usize },
    ValueTooLarge { size: usize, max: usize },
    EmptyKey,
    Malformed(&'static str),
}

impl std::fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidRequest::UnknownOperation(op) => write!(f, "unknown operation {op}"),
            InvalidRequest::KeyTooLarge { size, max } => {
                write!(f, "key of {size} bytes exceeds the limit of {max} bytes")
            }
            InvalidRequest::ValueTooLarge { size, max } => {
                write!(f, "value of {size} bytes exceeds the limit of {max} bytes")
            }
            InvalidRequest::EmptyKey => write!(f, "empty key"),
            InvalidRequest::Malformed(why) => write!(f, "malformed request: {why}"),
        }
    }
}

pub trait StateMachine: Sized {
    /// An empty state.
    fn new(config: &Config) -> Self;
    /// Checks a request before it is appended to the log.
    fn validate(&self, operation: Operation, body: &[u8]) -> Result<(), InvalidRequest>;
    /// Whether an operation only reads. Reads still go through the log (that is what makes them
    /// linearizable), but they do not occupy the client's session.
    fn is_read_only(operation: Operation) -> bool;
    /// Evaluates a read-only operation against the current state.
    fn query(&self, operation: Operation, body: &[u8], reply: &mut Vec<u8>);
    /// Applies a committed entry, writing the reply into `reply` (at most `reply_max` bytes).
    /// Must be deterministic: a function of the state, the header and the body only.
    fn apply(&mut self, header: &EntryHeader, body: &[u8], reply: &mut Vec<u8>);
    /// Appends the whole state to `out`.
    fn encode_snapshot(&self, out: &mut Vec<u8>);
    /// Rebuilds a state from [`StateMachine::encode_snapshot`]'s bytes. Never panics.
    fn decode_snapshot(config: &Config, bytes: &[u8]) -> Result<Self, DecodeError>;
    /// A digest of the whole state, equal on replicas with equal states.
    fn digest(&self) -> u64;
}

/// The key-value machine: put, get and delete on byte keys and values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStateMachine {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    key_size_max: usize,
    value_size_max: usize,
}

impl KvStateMachine {
    pub const PUT: Operation = Operation(16);
    pub const DELETE: Operation = Operation(17);
    /// Body: key length, key. Reply: found (0/1), then the value.
    pub const GET: Operation = Operation(18);
    /// Body: key length, key, has-expected (0/1), expected length (u32), expected, new value.
    /// Reply: swapped (0/1).
    pub const CAS: Operation = Operation(19);

    /// Reply to a put.
    pub const REPLY_OK: u8 = 1;

    /// The body of a put: key length (u16 LE), key, value.
    pub fn put_body(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(2 + key.len() + value.len());
        body.extend_from_slice(&(key.len() as u16).to_le_bytes());
        body.extend_from_slice(key);
        body.extend_from_slice(value);
        body
    }

    /// The body of a delete: key length (u16 LE), key.
    pub fn delete_body(key: &[u8]) -> Vec<u8> {
        Self::put_body(key, &[])
    }

    /// The body of a get.
    pub fn get_body(key: &[u8]) -> Vec<u8> {
        Self::put_body(key, &[])
    }

    /// The body of a compare-and-set: set `key` to `new` if its value is `expected` (None:
    /// absent).
    pub fn cas_body(key: &[u8], expected: Option<&[u8]>, new: &[u8]) -> Vec<u8> {
        let mut body = Self::put_body(key, &[]);
        body.push(expected.is_some() as u8);
        let expected = expected.unwrap_or(&[]);
        body.extend_from_slice(&(expected.len() as u32).to_le_bytes());
        body.extend_from_slice(expected);
        body.extend_from_slice(new);
        body
    }

    /// Splits the rest of a compare-and-set body into expected and new value.
    pub fn split_cas(rest: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
        let mut r = Reader(rest);
        let has = r.take(1)?[0];
        let len = r.u32()? as usize;
        let expected = r.take(len)?;
        match has {
            0 if expected.is_empty() => Some((None, r.0)),
            1 => Some((Some(expected), r.0)),
            _ => None,
        }
    }

    /// Splits a body into key and the rest.
    pub fn split_body(body: &[u8]) -> Option<(&[u8], &[u8])> {
        let len = u16::from_le_bytes(body.get(..2)?.try_into().ok()?) as usize;
        let key = body.get(2..2 + len)?;
        Some((key, &body[2 + len..]))
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(|v| v.as_slice())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl StateMachine for KvStateMachine {
    fn new(config: &Config) -> Self {
        KvStateMachine {
            map: BTreeMap::new(),
            key_size_max: config.key_size_max as usize,
            value_size_max: config.value_size_max as usize,
        }
    }

    fn validate(&self, operation: Operation, body: &[u8]) -> Result<(), InvalidRequest> {
        let (key, rest) =
            Self::split_body(body).ok_or(InvalidRequest::Malformed("key length past the end"))?;
        if key.is_empty() {
            return Err(InvalidRequest::EmptyKey);
        }
        if key.len() > self.key_size_max {
            return Err(InvalidRequest::KeyTooLarge {
                size: key.len(),
                max: self.key_size_max,
            });
        }
        match operation {
            Self::PUT if rest.len() > self.value_size_max => Err(InvalidRequest::ValueTooLarge {
                size: rest.len(),
                max: self.value_size_max,
            }),
            Self::PUT => Ok(()),
            Self::DELETE | Self::GET if rest.is_empty() => Ok(()),
            Self::DELETE | Self::GET => Err(InvalidRequest::Malformed("carries a value")),
            Self::CAS => {
                let (expected, new) = Self::split_cas(rest)
                    .ok_or(InvalidRequest::Malformed("bad compare-and-set"))?;
                let longest = expected.map_or(0, |e| e.len()).max(new.len());
                if longest > self.value_size_max {
                    return Err(InvalidRequest::ValueTooLarge {
                        size: longest,
                        max: self.value_size_max,
                    });
                }
                Ok(())
            }
            other => Err(InvalidRequest::UnknownOperation(other.0)),
        }
    }

    fn apply(&mut self, header: &EntryHeader, body: &[u8], reply: &mut Vec<u8>) {
        reply.clear();
        if header.operation == Operation::NOOP {
            return;
        }
        let (key, value) = Self::split_body(body).expect("validated before it was logged");
        match header.operation {
            Self::PUT => {
                self.map.insert(key.to_vec(), value.to_vec());
                reply.push(Self::REPLY_OK);
            }
            Self::DELETE => {
                let existed = self.map.remove(key).is_some();
                reply.push(existed as u8);
            }
            Self::GET => self.query(header.operation, body, reply),
            Self::CAS => {
                let (expected, new) =
                    Self::split_cas(value).expect("validated before it was logged");
                let swapped = self.map.get(key).map(|v| v.as_slice()) == expected;
                if swapped {
                    self.map.insert(key.to_vec(), new.to_vec());
                }
                reply.push(swapped as u8);
            }
            other => panic!("unvalidated operation {other:?} in the log"),
        }
    }

    fn is_read_only(operation: Operation) -> bool {
        operation == Self::GET
    }

    fn query(&self, operation: Operation, body: &[u8], reply: &mut Vec<u8>) {
        assert_eq!(operation, Self::GET, "only gets are read-only");
        reply.clear();
        let (key, _) = Self::split_body(body).expect("validated");
        match self.map.get(key) {
            Some(value) => {
                reply.push(1);
                reply.extend_from_slice(value);
            }
            None => reply.push(0),
        }
    }

    fn encode_snapshot(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.map.len() as u64).to_le_bytes());
        for (key, value) in &self.map {
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
    }

    fn decode_snapshot(config: &Config, bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader(bytes);
        let count = reader.u64().ok_or(DecodeError("truncated count"))?;
        let mut machine = KvStateMachine::new(config);
        for _ in 0..count {
            let key_len = reader.u16().ok_or(DecodeError("truncated key length"))? as usize;
            let key = reader.take(key_len).ok_or(DecodeError("truncated key"))?;
            let value_len = reader.u32().ok_or(DecodeError("truncated value length"))? as usize;
            let value = reader
                .take(value_len)
                .ok_or(DecodeError("truncated value"))?;
            if machine.map.insert(key.to_vec(), value.to_vec()).is_some() {
                return Err(DecodeError("duplicate key"));
            }
        }
        if !reader.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(machine)
    }

    fn digest(&self) -> u64 {
        let mut digest = Digest::new();
        for (key, value) in &self.map {
            digest.field(key).field(value);
        }
        digest.finish()
    }
}

/// A bounds-checked little-endian reader for decoding untrusted bytes.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(op: Operation, index: u64) -> EntryHeader {
        EntryHeader::new(op, 1, index, 1, 0, 1, index, 0, b"")
    }

    #[test]
    fn put_get_delete_and_snapshot_round_trip() {
        let config = Config::test();
        let mut kv = KvStateMachine::new(&config);
        let mut reply = Vec::new();
        kv.apply(
            &header(KvStateMachine::PUT, 1),
            &KvStateMachine::put_body(b"a", b"1"),
            &mut reply,
        );
        assert_eq!(reply, [KvStateMachine::REPLY_OK]);
        kv.apply(
            &header(KvStateMachine::PUT, 2),
            &KvStateMachine::put_body(b"b", b"2"),
            &mut reply,
        );
        assert_eq!(kv.get(b"a"), Some(&b"1"[..]));
        kv.apply(
            &header(KvStateMachine::DELETE, 3),
            &KvStateMachine::delete_body(b"a"),
            &mut reply,
        );
        assert_eq!(reply, [1]);
        kv.apply(
            &header(KvStateMachine::DELETE, 4),
            &KvStateMachine::delete_body(b"a"),
            &mut reply,
        );
        assert_eq!(reply, [0]);
        assert_eq!(kv.get(b"a"), None);
        let mut snapshot = Vec::new();
        kv.encode_snapshot(&mut snapshot);
        let back = KvStateMachine::decode_snapshot(&config, &snapshot).unwrap();
        assert_eq!(back.digest(), kv.digest());
        assert_eq!(back.get(b"b"), Some(&b"2"[..]));
        for cut in 0..snapshot.len() {
            assert!(KvStateMachine::decode_snapshot(&config, &snapshot[..cut]).is_err());
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let config = Config::test();
        let kv = KvStateMachine::new(&config);
        let long_key = vec![b'k'; config.key_size_max as usize + 1];
        let long_value = vec![b'v'; config.value_size_max as usize + 1];
        assert!(matches!(
            kv.validate(
                KvStateMachine::PUT,
                &KvStateMachine::put_body(&long_key, b"v")
            ),
            Err(InvalidRequest::KeyTooLarge { .. })
        ));
        assert!(matches!(
            kv.validate(
                KvStateMachine::PUT,
                &KvStateMachine::put_body(b"k", &long_value)
            ),
            Err(InvalidRequest::ValueTooLarge { .. })
        ));
        assert_eq!(
            kv.validate(KvStateMachine::PUT, &[9]),
            Err(InvalidRequest::Malformed("key length past the end"))
        );
        assert_eq!(
            kv.validate(Operation(99), &KvStateMachine::delete_body(b"k")),
            Err(InvalidRequest::UnknownOperation(99))
        );
        assert_eq!(
            kv.validate(KvStateMachine::PUT, &KvStateMachine::put_body(b"", b"v")),
            Err(InvalidRequest::EmptyKey)
        );
    }
}
