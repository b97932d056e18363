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
}

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

    /// Runs a group against the state at time `now_ms`, appending each reply in RESP3.
    fn run(&mut self, body: &[u8], now_ms: u64, reply: &mut Vec<u8>) -> Result<(), StateError> {
        reply.clear();
        let group = decode_group(body).expect("validated before it was logged");
        let mut keyspace = Keyspace::new(&mut self.lsm, now_ms, self.value_max);
        for args in &group {
            let answer = match args
                .iter()
                .find(|a| a.len() > self.key_size_max.max(self.value_max))
            {
                Some(_) => Reply::error("ERR argument exceeds the largest value a key may hold"),
                None => execute(&mut keyspace, args)?,
            };
            answer.encode(Protocol::Resp3, reply);
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
        RedisStateMachine {
            lsm: LsmState::new(config, grid),
            key_size_max: config.key_size_max as usize,
            value_max: (config.value_size_max as usize).saturating_sub(RECORD_OVERHEAD),
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
        self.run(body, timestamp / 1_000_000, reply)
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
        self.run(body, millis(header), reply)
    }

    lsm_storage_methods!(lsm);
}
