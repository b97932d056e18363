//! The Redis state machine: groups of commands applied in log order over an [`LsmState`].
//!
//! Beside the keys it keeps one number, `removed_at`: the index of the last entry that removed a
//! stored record (what `WATCH` on an absent key compares). It travels in the checkpoint's bytes:
//! `[LAYOUT u64 LE][removed_at u64 LE][the LSM's checkpoint bytes]`, or nothing for the empty
//! state. `LAYOUT` names how keys map onto the LSM (`keyspace.rs`): a build refuses a checkpoint
//! of another layout rather than misread it.

use crate::body::decode_group;
use crate::commands::{self, execute, watch};
use crate::keyspace::Keyspace;
use crate::record;
use ziggy_core::config::Config;
use ziggy_core::lsm::sync::{WalkStats, Want};
use ziggy_core::marks::Marks;
use ziggy_core::state_machine::{Grid, InvalidRequest, LsmState, Reader, StateError, StateMachine};
use ziggy_core::wal::header::{EntryHeader, Operation};
use ziggy_resp::{Protocol, Reply};

pub struct RedisStateMachine {
    lsm: LsmState,
    /// The index of the last entry that removed a stored record; 0: none yet.
    removed_at: u64,
    /// The entry the last request applied belonged to, and the collection ids its requests
    /// made so far: a batch entry applies as several requests at one index, and each new
    /// collection needs an id of its own (ids are `index << 20 | count`).
    created_at: u64,
    created: u64,
    key_size_max: usize,
    /// The longest value a key may hold.
    value_max: usize,
    /// The most bytes a write group's replies may take: its session keeps them for retries.
    reply_max: usize,
}

/// What a write group answers in place of a reply that does not fit beside the ones before it
/// (the command took effect; only its reply is lost). Servers keep write groups small enough.
const REPLY_TOO_LARGE: &str = "ERR reply too large for a write's reply slot";

impl RedisStateMachine {
    /// A group that may write: it occupies the client's session (exactly once).
    pub const WRITE: Operation = Operation(32);
    /// A group of reads alone.
    pub const READ: Operation = Operation(33);

    /// The LSM tree holding the keyspace, for operators' figures (compaction debt, levels).
    pub fn lsm(&mut self) -> &mut LsmState {
        &mut self.lsm
    }

    /// Whether every command of `group` only reads (unknown commands read nothing).
    pub fn reads_only<A: AsRef<[u8]>>(group: &[Vec<A>]) -> bool {
        group
            .iter()
            .all(|args| commands::spec(args[0].as_ref()).is_none_or(|c| !c.write))
    }

    /// Runs a group against the state at time `now_ms` (and entry `index`, 0 for a read),
    /// appending each reply in RESP3. A write group's replies are bounded by `reply_max` (see
    /// [`REPLY_TOO_LARGE`]). A failed WATCH check skips the rest of its group: each skipped
    /// command answers a nil, which the connection never shows (EXEC answers a null array).
    fn run(
        &mut self,
        body: &[u8],
        now_ms: u64,
        index: u64,
        bounded: bool,
        reply: &mut Vec<u8>,
    ) -> Result<(), StateError> {
        reply.clear();
        let group = decode_group(body).expect("validated before it was logged");
        let longest = self.key_size_max.max(self.value_max);
        if index != 0 && index != self.created_at {
            self.created_at = index;
            self.created = 0;
        }
        let mut keyspace = Keyspace::new(
            &mut self.lsm,
            now_ms,
            index,
            self.value_max,
            &mut self.removed_at,
            &mut self.created,
        );
        let mut encoded = Vec::new();
        let mut aborted = false;
        for args in &group {
            if aborted {
                Reply::Nil.encode(Protocol::Resp3, reply);
                continue;
            }
            let answer = match args.iter().find(|a| a.len() > longest) {
                Some(_) => Reply::error("ERR argument exceeds the largest value a key may hold"),
                None => execute(&mut keyspace, args)?,
            };
            aborted = answer == Reply::NilArray && args[0] == watch::CHECK.as_bytes();
            encoded.clear();
            answer.encode(Protocol::Resp3, &mut encoded);
            if bounded && reply.len() + encoded.len() > self.reply_max {
                encoded.clear();
                Reply::error(REPLY_TOO_LARGE).encode(Protocol::Resp3, &mut encoded);
                if reply.len() + encoded.len() > self.reply_max {
                    continue; // the server sees fewer replies than commands, and says so
                }
            }
            reply.extend_from_slice(&encoded);
        }
        Ok(())
    }
}

/// The entry's timestamp (nanoseconds) in Unix milliseconds.
fn millis(header: &EntryHeader) -> u64 {
    header.timestamp / 1_000_000
}

/// Splits a checkpoint's bytes into `removed_at` and the LSM's bytes (empty: the empty state).
/// The keyspace's layout in the LSM, as checkpoints name it: "ZGYKEYS" and a version. Version
/// 2 put records and the expiry index in namespaces; version 1 (raw keys) carried no tag.
const LAYOUT: u64 = u64::from_be_bytes(*b"ZGYKEYS\x02");

fn split_checkpoint(bytes: &[u8]) -> Result<(u64, &[u8]), StateError> {
    if bytes.is_empty() {
        return Ok((0, bytes));
    }
    let mut reader = Reader(bytes);
    let short = StateError::Decode("a checkpoint shorter than its header");
    if reader.u64().ok_or(short.clone())? != LAYOUT {
        return Err(StateError::Decode(
            "the data file's keyspace has another layout than this build's (written by an \
             older build?): open it with the build that wrote it",
        ));
    }
    let removed_at = reader.u64().ok_or(short)?;
    Ok((removed_at, reader.0))
}

#[cfg(test)]
mod tests;

impl StateMachine for RedisStateMachine {
    fn new(config: &Config, grid: Grid) -> Self {
        let layout = ziggy_core::Layout::new(config);
        RedisStateMachine {
            lsm: LsmState::new(config, grid),
            removed_at: 0,
            created_at: 0,
            created: 0,
            key_size_max: config.key_size_max as usize,
            value_max: (config.value_size_max as usize).saturating_sub(record::HEADER),
            reply_max: layout.reply_slot_size as usize - ziggy_core::sessions::REPLY_HEADER_SIZE,
        }
    }

    fn validate(&self, operation: Operation, body: &[u8]) -> Result<(), InvalidRequest> {
        if operation != Self::WRITE && operation != Self::READ {
            return Err(InvalidRequest::UnknownOperation(operation.0));
        }
        let group = decode_group(body).map_err(|_| InvalidRequest::Malformed("not a group"))?;
        if operation == Self::READ && !Self::reads_only(&group) {
            return Err(InvalidRequest::Malformed("a write in a read group"));
        }
        Ok(())
    }

    fn is_read_only(operation: Operation) -> bool {
        operation == Self::READ
    }

    fn query(
        &mut self,
        _operation: Operation,
        body: &[u8],
        timestamp: u64,
        reply: &mut Vec<u8>,
    ) -> Result<(), StateError> {
        self.run(body, timestamp / 1_000_000, 0, false, reply)
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
        let bounded = !Self::is_read_only(header.operation);
        self.run(body, millis(header), header.index, bounded, reply)
    }

    fn checkpoint(&mut self, out: &mut Vec<u8>) -> Result<(), StateError> {
        out.extend_from_slice(&LAYOUT.to_le_bytes());
        out.extend_from_slice(&self.removed_at.to_le_bytes());
        self.lsm.checkpoint(out)
    }

    fn checkpoint_durable(&mut self) {
        self.lsm.checkpoint_durable()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let (removed_at, lsm) = split_checkpoint(bytes)?;
        self.lsm.restore(lsm)?;
        self.removed_at = removed_at;
        self.created_at = 0; // entries after the checkpoint apply afresh
        Ok(())
    }

    fn sync_begin(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.lsm.sync_begin(split_checkpoint(bytes)?.1)
    }

    fn sync_poll(&mut self, wants: &mut Vec<Want>, max: usize) -> Result<bool, StateError> {
        self.lsm.sync_poll(wants, max)
    }

    fn sync_block(&mut self, want: Want, bytes: &[u8]) -> Result<bool, StateError> {
        self.lsm.sync_block(want, bytes)
    }

    fn sync_stats(&self) -> WalkStats {
        self.lsm.sync_stats()
    }

    fn sync_finish(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let (removed_at, lsm) = split_checkpoint(bytes)?;
        self.lsm.sync_finish(lsm)?;
        self.removed_at = removed_at;
        self.created_at = 0;
        Ok(())
    }

    fn serve_block(&mut self, want: Want, out: &mut Vec<u8>) -> bool {
        self.lsm.serve_block(want, out)
    }

    /// The keys' digest, mixed with `removed_at` (replicas must agree on it too).
    fn digest(&mut self) -> Result<u64, StateError> {
        let keys = self.lsm.digest()?;
        Ok(keys
            ^ self
                .removed_at
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(17))
    }

    fn marks(&self, marks: &mut Marks) {
        self.lsm.marks(marks)
    }
}
