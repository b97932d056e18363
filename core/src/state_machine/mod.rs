//! The state machine behind the log, and the minimal key-value machine of the foundation.
//!
//! The replica is generic over [`StateMachine`]: it orders requests in the WAL and calls
//! [`StateMachine::apply`] for each committed entry, in index order, exactly once per request.
//! Later data models (Redis types, graph, vectors) are further state machines on the same core:
//! [`LsmState`] is the storage they share (the LSM engine, checkpoints, state sync), and
//! [`lsm_storage_methods!`](crate::lsm_storage_methods) fills in the trait's storage half.

mod kv;
mod lsm_state;
mod reader;

pub use kv::KvStateMachine;
pub use lsm_state::LsmState;
pub use reader::Reader;

use crate::config::Config;
use crate::lsm::sync::{WalkStats, Want};
use crate::lsm::{self, BlockStore};
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
    /// Evaluates a read-only operation against the current state, at `timestamp` (nanoseconds
    /// on the leader's clock, never below an applied entry's): what decides expiry for a read.
    fn query(
        &mut self,
        operation: Operation,
        body: &[u8],
        timestamp: u64,
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
