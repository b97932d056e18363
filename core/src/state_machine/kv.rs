//! The key-value machine of the foundation: put, get, delete and compare-and-set on byte keys
//! and values. The simulator's workload runs on it.

use super::{Grid, InvalidRequest, LsmState, Reader, StateError, StateMachine};
use crate::config::Config;
use crate::lsm::Write;
use crate::wal::header::{EntryHeader, Operation};

/// The key-value machine: put, get and delete on byte keys and values, in an [`LsmState`].
pub struct KvStateMachine {
    lsm: LsmState,
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

    /// The current value of `key`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.lsm.get(key)
    }

    /// Applies one write at the engine's next sequence.
    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StateError> {
        self.lsm.write(&[Write { key, value }])
    }
}

impl StateMachine for KvStateMachine {
    fn new(config: &Config, grid: Grid) -> Self {
        KvStateMachine {
            lsm: LsmState::new(config, grid),
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

    fn apply(
        &mut self,
        header: &EntryHeader,
        body: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), StateError> {
        reply.clear();
        if header.operation == Operation::NOOP {
            return Ok(());
        }
        let (key, value) = Self::split_body(body).expect("validated before it was logged");
        match header.operation {
            Self::PUT => {
                self.write(key, Some(value))?;
                reply.push(Self::REPLY_OK);
            }
            Self::DELETE => {
                let existed = self.lsm.get(key)?.is_some();
                if existed {
                    self.write(key, None)?;
                }
                reply.push(existed as u8);
            }
            Self::GET => self.query(header.operation, body, header.timestamp, reply)?,
            Self::CAS => {
                let (expected, new) =
                    Self::split_cas(value).expect("validated before it was logged");
                let swapped = self.lsm.get(key)?.as_deref() == expected;
                if swapped {
                    self.write(key, Some(new))?;
                }
                reply.push(swapped as u8);
            }
            other => panic!("unvalidated operation {other:?} in the log"),
        }
        Ok(())
    }

    fn is_read_only(operation: Operation) -> bool {
        operation == Self::GET
    }

    fn query(
        &mut self,
        operation: Operation,
        body: &[u8],
        _timestamp: u64,
        reply: &mut Vec<u8>,
    ) -> Result<(), StateError> {
        assert_eq!(operation, Self::GET, "only gets are read-only");
        reply.clear();
        let (key, _) = Self::split_body(body).expect("validated");
        match self.lsm.get(key)? {
            Some(value) => {
                reply.push(1);
                reply.extend_from_slice(&value);
            }
            None => reply.push(0),
        }
        Ok(())
    }

    crate::lsm_storage_methods!(lsm);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm;

    fn header(op: Operation, index: u64) -> EntryHeader {
        EntryHeader::new(op, 1, index, 1, 0, 1, index, 0, b"")
    }

    fn machine(config: &Config) -> KvStateMachine {
        KvStateMachine::new(config, Box::new(lsm::MemoryStore::new(4096, 16, 1 << 16)))
    }

    fn apply(kv: &mut KvStateMachine, op: Operation, index: u64, body: &[u8]) -> Vec<u8> {
        let mut reply = Vec::new();
        kv.apply(&header(op, index), body, &mut reply).unwrap();
        reply
    }

    #[test]
    fn put_get_delete_cas_checkpoint_restore_sync() {
        let config = Config::test();
        let mut kv = machine(&config);
        let put = |k: &[u8], v: &[u8]| KvStateMachine::put_body(k, v);
        assert_eq!(
            apply(&mut kv, KvStateMachine::PUT, 1, &put(b"a", b"1")),
            [1]
        );
        apply(&mut kv, KvStateMachine::PUT, 2, &put(b"b", b"2"));
        assert_eq!(kv.get(b"a").unwrap(), Some(b"1".to_vec()));
        let del = KvStateMachine::delete_body(b"a");
        assert_eq!(apply(&mut kv, KvStateMachine::DELETE, 3, &del), [1]);
        assert_eq!(apply(&mut kv, KvStateMachine::DELETE, 4, &del), [0]);
        assert_eq!(kv.get(b"a").unwrap(), None);
        let cas = KvStateMachine::cas_body(b"b", Some(b"2"), b"3");
        assert_eq!(apply(&mut kv, KvStateMachine::CAS, 5, &cas), [1]);
        assert_eq!(apply(&mut kv, KvStateMachine::CAS, 6, &cas), [0]);

        let mut named = Vec::new();
        kv.checkpoint(&mut named).unwrap();
        kv.checkpoint_durable();
        let digest = kv.digest().unwrap();
        // Writes after the checkpoint: a restore forgets them, a sync of the checkpoint never
        // sees them.
        apply(&mut kv, KvStateMachine::PUT, 7, &put(b"c", b"4"));
        let mut other = machine(&config);
        apply(
            &mut other,
            KvStateMachine::PUT,
            1,
            &put(b"z", b"gone after sync"),
        );
        other.sync_begin(&named).unwrap();
        let mut wants = Vec::new();
        let mut block = Vec::new();
        while !other.sync_poll(&mut wants, 4).unwrap() {
            for want in wants.drain(..) {
                assert!(kv.serve_block(want, &mut block));
                assert!(other.sync_block(want, &block).unwrap());
            }
        }
        assert!(other.sync_stats().arrived > 0);
        other.sync_finish(&named).unwrap();
        assert_eq!(other.digest().unwrap(), digest);
        assert_eq!(other.get(b"z").unwrap(), None);
        kv.restore(&named).unwrap();
        assert_eq!(kv.digest().unwrap(), digest);
        assert_eq!(kv.get(b"c").unwrap(), None);
        assert!(other.sync_begin(&named[..named.len() - 1]).is_err());
        assert!(kv.restore(&named[..named.len() - 1]).is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let config = Config::test();
        let kv = machine(&config);
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
