//! The keys as commands see them at one moment of the log: expired keys are absent, and writes
//! go straight to the LSM state (a later command of the same group sees them).

use crate::record::Record;
use ziggy_core::lsm::Write;
use ziggy_core::state_machine::{LsmState, StateError};

pub struct Keyspace<'a> {
    lsm: &'a mut LsmState,
    /// The deciding time, Unix milliseconds: the entry's timestamp.
    pub now: u64,
    /// The longest value a key may hold (what one LSM entry can).
    pub value_max: usize,
}

impl<'a> Keyspace<'a> {
    pub fn new(lsm: &'a mut LsmState, now: u64, value_max: usize) -> Keyspace<'a> {
        Keyspace {
            lsm,
            now,
            value_max,
        }
    }

    /// The live record of `key` (None: absent or expired).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Record>, StateError> {
        match self.lsm.get(key)? {
            None => Ok(None),
            Some(bytes) => {
                let record = Record::decode(bytes)?;
                Ok((!record.expired(self.now)).then_some(record))
            }
        }
    }

    pub fn put(&mut self, key: &[u8], record: &Record) -> Result<(), StateError> {
        let bytes = record.encode();
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
        let Some(bytes) = self.lsm.get(key)? else {
            return Ok(false);
        };
        let live = !Record::decode(bytes)?.expired(self.now);
        self.lsm.write(&[Write { key, value: None }])?;
        Ok(live)
    }
}
