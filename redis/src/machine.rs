//! The Redis state machine: groups of commands applied in log order over an [`LsmState`].

use crate::body::decode_group;
use crate::commands::{self, execute};
use crate::keyspace::Keyspace;
use ziggy_core::config::Config;
use ziggy_core::lsm_storage_methods;
use ziggy_core::state_machine::{Grid, InvalidRequest, LsmState, StateError, StateMachine};
use ziggy_core::wal::header::{EntryHeader, Operation};
use ziggy_resp::{Protocol, Reply};

/// Record header bytes stored beside each value (kind and expiry).
const RECORD_OVERHEAD: usize = 9;

pub struct RedisStateMachine {
    lsm: LsmState,
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

    /// Whether every command of `group` only reads (unknown commands read nothing).
    pub fn reads_only(group: &[Vec<Vec<u8>>]) -> bool {
        group
            .iter()
            .all(|args| commands::lookup(&args[0]).is_none_or(|c| !c.write))
    }

    /// Runs a group against the state at time `now_ms`, appending each reply in RESP3. A write
    /// group's replies are bounded by `reply_max` (see [`REPLY_TOO_LARGE`]).
    fn run(
        &mut self,
        body: &[u8],
        now_ms: u64,
        bounded: bool,
        reply: &mut Vec<u8>,
    ) -> Result<(), StateError> {
        reply.clear();
        let group = decode_group(body).expect("validated before it was logged");
        let longest = self.key_size_max.max(self.value_max);
        let mut keyspace = Keyspace::new(&mut self.lsm, now_ms, self.value_max);
        let mut encoded = Vec::new();
        for args in &group {
            let answer = match args.iter().find(|a| a.len() > longest) {
                Some(_) => Reply::error("ERR argument exceeds the largest value a key may hold"),
                None => execute(&mut keyspace, args)?,
            };
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

#[cfg(test)]
mod tests;

impl StateMachine for RedisStateMachine {
    fn new(config: &Config, grid: Grid) -> Self {
        let layout = ziggy_core::Layout::new(config);
        RedisStateMachine {
            lsm: LsmState::new(config, grid),
            key_size_max: config.key_size_max as usize,
            value_max: (config.value_size_max as usize).saturating_sub(RECORD_OVERHEAD),
            reply_max: layout.reply_slot_size as usize - ziggy_core::sessions::REPLY_HEADER_SIZE,
        }
    }

    fn validate(&self, operation: Operation, body: &[u8]) -> Result<(), InvalidRequest> {
        if operation != Self::WRITE && operation != Self::READ {
            return Err(InvalidRequest::UnknownOperation(operation.0));
        }
        let group = decode_group(body).map_err(|_| InvalidRequest::Malformed("not a group"))?;
        if operation == Self::READ {
            let owned: Vec<Vec<Vec<u8>>> = group
                .iter()
                .map(|args| args.iter().map(|a| a.to_vec()).collect())
                .collect();
            if !Self::reads_only(&owned) {
                return Err(InvalidRequest::Malformed("a write in a read group"));
            }
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
        self.run(body, timestamp / 1_000_000, false, reply)
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
        self.run(body, millis(header), bounded, reply)
    }

    lsm_storage_methods!(lsm);
}
