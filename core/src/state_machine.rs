//! The state machine behind the log, and the minimal key-value machine of the foundation.
//!
//! The replica is generic over [`StateMachine`]: it orders requests in the WAL and calls
//! [`StateMachine::apply`] for each committed entry, in index order, exactly once per request.
//! Later data models (Redis types, graph, vectors) are further state machines on the same core.

use crate::config::Config;
use crate::lsm::sync::{Walk, WalkStats, Want};
use crate::lsm::tree::KeyValue;
use crate::lsm::{self, BlockStore, Engine, Write};
use crate::wal::header::{EntryHeader, Operation};

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

/// Why the state machine could not go on: its storage failed or held damaged data. The replica
/// halts with it (it never applies an entry halfway or differently from its peers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateError {
    /// Checkpoint or transfer bytes that do not decode.
    Decode(&'static str),
    /// The grid failed: a damaged block, a read error, a full grid.
    Storage(String),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Decode(why) => write!(f, "state does not decode: {why}"),
            StateError::Storage(why) => write!(f, "state storage failed: {why}"),
        }
    }
}

impl From<DecodeError> for StateError {
    fn from(e: DecodeError) -> StateError {
        StateError::Decode(e.0)
    }
}

impl From<lsm::Error> for StateError {
    fn from(e: lsm::Error) -> StateError {
        StateError::Storage(e.to_string())
    }
}

/// The block storage a state machine keeps its data in (the LSM grid).
pub type Grid = Box<dyn BlockStore>;

pub trait StateMachine: Sized {
    /// An empty state over `grid`.
    fn new(config: &Config, grid: Grid) -> Self;
    /// Checks a request before it is appended to the log.
    fn validate(&self, operation: Operation, body: &[u8]) -> Result<(), InvalidRequest>;
    /// Whether an operation only reads. Reads still go through the log (that is what makes them
    /// linearizable), but they do not occupy the client's session.
    fn is_read_only(operation: Operation) -> bool;
    /// Evaluates a read-only operation against the current state.
    fn query(
        &mut self,
        operation: Operation,
        body: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), StateError>;
    /// Applies a committed entry, writing the reply into `reply` (at most `reply_max` bytes).
    /// Must be deterministic: a function of the state, the header and the body only.
    fn apply(
        &mut self,
        header: &EntryHeader,
        body: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), StateError>;
    /// Makes the state durable in the grid and appends the bytes that name it to `out`.
    fn checkpoint(&mut self, out: &mut Vec<u8>) -> Result<(), StateError>;
    /// The last checkpoint is recorded (the superblock names it): space only older checkpoints
    /// used may be reused.
    fn checkpoint_durable(&mut self);
    /// Returns to the state named by [`StateMachine::checkpoint`]'s bytes (empty: the empty
    /// state), as after a restart. Never panics on bad bytes.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError>;
    /// Starts taking in a peer's checkpoint, named by the bytes its [`StateMachine::checkpoint`]
    /// made: from here the state is unusable until [`StateMachine::sync_finish`] (the sync
    /// overwrites the grid under it). Never panics on bad bytes.
    fn sync_begin(&mut self, bytes: &[u8]) -> Result<(), StateError>;
    /// Appends up to `max` more blocks the sync lacks to `wants`; returns whether it lacks none.
    fn sync_poll(&mut self, wants: &mut Vec<Want>, max: usize) -> Result<bool, StateError>;
    /// A wanted block arrived; false (and nothing written) if it is not the block wanted.
    fn sync_block(&mut self, want: Want, bytes: &[u8]) -> Result<bool, StateError>;
    /// The sync's counters so far.
    fn sync_stats(&self) -> WalkStats;
    /// Makes what the sync wrote durable and opens the checkpoint `bytes` name (the ones given
    /// to [`StateMachine::sync_begin`]).
    fn sync_finish(&mut self, bytes: &[u8]) -> Result<(), StateError>;
    /// Copies the block `want` names into `out` (without its padding) if this grid holds it.
    fn serve_block(&mut self, want: Want, out: &mut Vec<u8>) -> bool;
    /// A digest of the whole state, equal on replicas with equal states.
    fn digest(&mut self) -> Result<u64, StateError>;
    /// Adds the state machine's coverage marks (its storage engine's flushes and compactions).
    fn marks(&self, _marks: &mut crate::marks::Marks) {}
}

/// The key-value machine: put, get and delete on byte keys and values.
///
/// The data lives in an LSM tree in the grid: a checkpoint is the tree's manifest, so its cost
/// follows what changed, not the data's size.
pub struct KvStateMachine {
    engine: Engine<Grid>,
    /// A peer's checkpoint being taken in (state sync).
    sync: Option<Walk>,
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
        Ok(self.engine.get(key)?)
    }

    /// Applies one write at the engine's next sequence.
    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StateError> {
        let sequence = self.engine.sequence() + 1;
        self.engine.apply(sequence, &[Write { key, value }])?;
        Ok(())
    }

    /// The pending checkpoint's snapshot becomes the exported one.
    /// Every live pair at `sequence`.
    fn all_pairs(&mut self, sequence: u64) -> Result<Vec<KeyValue>, StateError> {
        Ok(self.engine.scan(&[], None, sequence, usize::MAX, false)?)
    }
}

/// The bytes naming a checkpoint: a marker, then the LSM checkpoint (or nothing when empty).
const CHECKPOINT_EMPTY: u8 = 0;
const CHECKPOINT_LSM: u8 = 1;

/// The LSM checkpoint a state machine's checkpoint bytes name (None: the empty state).
fn decode_checkpoint(bytes: &[u8]) -> Result<Option<lsm::Checkpoint>, StateError> {
    match bytes.split_first() {
        None | Some((&CHECKPOINT_EMPTY, [])) => Ok(None),
        Some((&CHECKPOINT_LSM, rest)) if rest.len() == lsm::Checkpoint::ENCODED_SIZE => {
            let checkpoint =
                lsm::Checkpoint::decode(rest).ok_or(StateError::Decode("checkpoint"))?;
            Ok(Some(checkpoint))
        }
        _ => Err(StateError::Decode("unknown checkpoint form")),
    }
}

impl StateMachine for KvStateMachine {
    fn marks(&self, marks: &mut crate::marks::Marks) {
        use crate::marks::Mark;
        let stats = self.engine.stats();
        marks.hit_n(Mark::MemtableFlush, stats.flushes);
        for (level, n) in stats.compactions_into.iter().enumerate() {
            marks.hit_n(Mark::compaction_into(level + 1), *n);
        }
    }

    fn new(config: &Config, grid: Grid) -> Self {
        let mut engine =
            Engine::open(grid, config.lsm.clone(), None).expect("an empty engine opens");
        // Replicas at one checkpoint index hold the same blocks: a state sync fetches only
        // what differs.
        engine
            .make_deterministic()
            .expect("an empty engine has no manifest to read");
        if config.planted_bug == Some(crate::config::PlantedBug::FreeOnDurable) {
            engine.plant_free_on_durable();
        }
        KvStateMachine {
            engine,
            sync: None,
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
                let existed = self.engine.get(key)?.is_some();
                if existed {
                    self.write(key, None)?;
                }
                reply.push(existed as u8);
            }
            Self::GET => self.query(header.operation, body, reply)?,
            Self::CAS => {
                let (expected, new) =
                    Self::split_cas(value).expect("validated before it was logged");
                let swapped = self.engine.get(key)?.as_deref() == expected;
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
        reply: &mut Vec<u8>,
    ) -> Result<(), StateError> {
        assert_eq!(operation, Self::GET, "only gets are read-only");
        reply.clear();
        let (key, _) = Self::split_body(body).expect("validated");
        match self.engine.get(key)? {
            Some(value) => {
                reply.push(1);
                reply.extend_from_slice(&value);
            }
            None => reply.push(0),
        }
        Ok(())
    }

    fn checkpoint(&mut self, out: &mut Vec<u8>) -> Result<(), StateError> {
        assert!(self.sync.is_none(), "no checkpoint of a state being synced");
        let checkpoint = self.engine.checkpoint()?;
        out.push(CHECKPOINT_LSM);
        out.extend_from_slice(&checkpoint.encode());
        Ok(())
    }

    fn checkpoint_durable(&mut self) {
        self.engine.checkpoint_durable();
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.sync = None;
        let checkpoint = decode_checkpoint(bytes)?;
        self.engine.reopen(checkpoint)?;
        Ok(())
    }

    fn sync_begin(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let checkpoint = decode_checkpoint(bytes)?;
        let levels = self.engine.options().levels;
        self.sync = Some(Walk::new(checkpoint.map(|c| c.manifest), levels));
        Ok(())
    }

    fn sync_poll(&mut self, wants: &mut Vec<Want>, max: usize) -> Result<bool, StateError> {
        let walk = self.sync.as_mut().expect("a sync in progress");
        Ok(walk.poll(self.engine.store_mut(), wants, max)?)
    }

    fn sync_block(&mut self, want: Want, bytes: &[u8]) -> Result<bool, StateError> {
        let walk = self.sync.as_mut().expect("a sync in progress");
        Ok(walk.arrived(self.engine.store_mut(), want, bytes)?)
    }

    fn sync_stats(&self) -> WalkStats {
        self.sync.as_ref().map(Walk::stats).unwrap_or_default()
    }

    fn sync_finish(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let walk = self.sync.take().expect("a sync in progress");
        assert!(walk.is_done(), "a sync finishes with every block in place");
        let store = self.engine.store_mut();
        if store.block_count() < walk.free_count() {
            store.grow(walk.free_count()).map_err(lsm::Error::from)?;
        }
        store
            .sync()
            .map_err(|e| lsm::Error::from(lsm::GridError::Write(e)))?;
        self.restore(bytes)
    }

    fn serve_block(&mut self, want: Want, out: &mut Vec<u8>) -> bool {
        let store = self.engine.store_mut();
        let address = want.reference.address;
        if address >= store.block_count() {
            return false;
        }
        out.resize(store.block_size(), 0);
        if store.read_block(address, out).is_err() {
            return false;
        }
        match lsm::grid::open(out, want.kind, want.reference) {
            Ok(payload) => {
                let len = lsm::grid::HEADER_SIZE + payload.len();
                out.truncate(len);
                true
            }
            Err(_) => false,
        }
    }

    fn digest(&mut self) -> Result<u64, StateError> {
        let pairs = self.all_pairs(self.engine.sequence())?;
        let pairs = pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        Ok(crate::digest::pairs_digest(pairs))
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
