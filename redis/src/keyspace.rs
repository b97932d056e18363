//! The keys as commands see them at one moment of the log: expired keys are absent, and writes
//! go straight to the LSM state (a later command of the same group sees them).

use crate::record::Record;
use ziggy_core::lsm::Write;
use ziggy_core::state_machine::{LsmState, StateError};

pub struct Keyspace<'a> {
    lsm: &'a mut LsmState,
    /// The deciding time, Unix milliseconds: the entry's timestamp.
    pub now: u64,
    /// The index of the entry being applied: every record written is stamped with it. 0 for a
    /// read, which writes nothing.
    pub index: u64,
    /// The longest value a key may hold (what one LSM entry can).
    pub value_max: usize,
    /// The index of the last entry that removed a stored record (see `commands/watch.rs`).
    pub removed_at: &'a mut u64,
}

impl<'a> Keyspace<'a> {
    pub fn new(
        lsm: &'a mut LsmState,
        now: u64,
        index: u64,
        value_max: usize,
        removed_at: &'a mut u64,
    ) -> Keyspace<'a> {
        Keyspace {
            lsm,
            now,
            index,
            value_max,
            removed_at,
        }
    }

    /// The stored record of `key`, expired or not.
    pub fn stored(&mut self, key: &[u8]) -> Result<Option<Record>, StateError> {
        self.lsm.get(key)?.map(Record::decode).transpose()
    }

    /// The live record of `key` (None: absent or expired).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Record>, StateError> {
        Ok(self.stored(key)?.filter(|r| !r.expired(self.now)))
    }

    /// Stores `record`, stamped with the entry's index.
    pub fn put(&mut self, key: &[u8], record: &Record) -> Result<(), StateError> {
        assert!(self.index > 0, "only an applied entry writes");
        let bytes = record.encode(self.index);
        self.lsm.write(&[Write {
            key,
            value: Some(&bytes),
        }])
    }

    /// Up to `limit` stored keys from `start` on, in order, with their records, expired ones
    /// included (callers skip them with [`Record::expired`] against [`Keyspace::now`]).
    pub fn scan(
        &mut self,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StateError> {
        let pairs = self.lsm.scan(start, limit)?;
        pairs
            .into_iter()
            .map(|(key, bytes)| Ok((key, Record::decode(bytes)?)))
            .collect()
    }

    /// Removes `key`; whether it was live. An expired record is removed too (it is garbage).
    pub fn remove(&mut self, key: &[u8]) -> Result<bool, StateError> {
        let Some(record) = self.stored(key)? else {
            return Ok(false);
        };
        assert!(self.index > 0, "only an applied entry removes");
        self.lsm.write(&[Write { key, value: None }])?;
        *self.removed_at = self.index;
        Ok(!record.expired(self.now))
    }
}
