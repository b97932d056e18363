//! The keys as commands see them at one moment of the log: expired keys are absent, and writes
//! go straight to the LSM state (a later command of the same group sees them).
//!
//! The LSM holds namespaces, told apart by the first byte of its keys (see
//! `docs/design/data-model.md`):
//!
//! - `[RECORDS][key]` → the key's record ([`Record`]): its type, expiry, last write and value;
//! - `[EXPIRIES][expires_at u64 BE][key]` → nothing: the expiry index. Every record written with
//!   an expiry adds its entry, so the reaper finds what is due in the order it falls due without
//!   looking at keys that never expire. An entry whose record has since changed is stale: the
//!   reap that meets it deletes the entry and leaves the record.
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
        self.lsm
            .get(&record_key(key))?
            .map(Record::decode)
            .transpose()
    }

    /// The live record of `key` (None: absent or expired).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Record>, StateError> {
        Ok(self.stored(key)?.filter(|r| !r.expired(self.now)))
    }

    /// Stores `record`, stamped with the entry's index (and indexes its expiry).
    pub fn put(&mut self, key: &[u8], record: &Record) -> Result<(), StateError> {
        assert!(self.index > 0, "only an applied entry writes");
        let bytes = record.encode(self.index);
        let stored = record_key(key);
        let due = (record.expires_at != 0).then(|| expiry_key(record.expires_at, key));
        let mut writes = vec![Write {
            key: &stored,
            value: Some(&bytes),
        }];
        if let Some(due) = &due {
            writes.push(Write {
                key: due,
                value: Some(&[]),
            });
        }
        self.lsm.write(&writes)
    }

    /// Up to `limit` stored keys from `start` on, in order, with their records, expired ones
    /// included (callers skip them with [`Record::expired`] against [`Keyspace::now`]).
    pub fn scan(
        &mut self,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StateError> {
        let pairs = self
            .lsm
            .range(&record_key(start), Some(&[RECORDS + 1]), limit, false)?;
        pairs
            .into_iter()
            .map(|(key, bytes)| Ok((key[1..].to_vec(), Record::decode(bytes)?)))
            .collect()
    }

    /// Removes `key`; whether it was live. An expired record is removed too (it is garbage).
    /// Its expiry entry, if any, stays until the reaper meets it.
    pub fn remove(&mut self, key: &[u8]) -> Result<bool, StateError> {
        let Some(record) = self.stored(key)? else {
            return Ok(false);
        };
        assert!(self.index > 0, "only an applied entry removes");
        self.lsm.write(&[Write {
            key: &record_key(key),
            value: None,
        }])?;
        *self.removed_at = self.index;
        Ok(!record.expired(self.now))
    }

    /// Up to `limit` expiry entries due by now, from `after` on (exclusive; empty: the first),
    /// in the order they fall due: each `[expires_at u64 BE][key]`.
    pub fn due(&mut self, after: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, StateError> {
        let mut start = vec![EXPIRIES];
        start.extend_from_slice(after);
        if !after.is_empty() {
            start.push(0); // the first key after `after`
        }
        let end = expiry_key(self.now.saturating_add(1), b"");
        let pairs = self.lsm.range(&start, Some(&end), limit, false)?;
        Ok(pairs
            .into_iter()
            .map(|(key, _)| key[1..].to_vec())
            .collect())
    }

    /// Reaps one expiry entry (as [`Keyspace::due`] lists them) if it is due now: deletes it,
    /// and its key's record if the record still expires then. Whether a record was deleted.
    pub fn reap(&mut self, entry: &[u8]) -> Result<bool, StateError> {
        let Some((expires_at, key)) = split_expiry(entry) else {
            return Ok(false); // not an entry: nothing to do
        };
        if expires_at > self.now {
            return Ok(false); // not due (yet): the look's clock ran ahead of this entry's
        }
        assert!(self.index > 0, "only an applied entry reaps");
        self.lsm.write(&[Write {
            key: &expiry_key(expires_at, key),
            value: None,
        }])?;
        match self.stored(key)? {
            Some(record) if record.expires_at == expires_at => {
                self.remove(key)?;
                Ok(true)
            }
            _ => Ok(false), // rewritten since, or gone: the entry was stale
        }
    }
}

/// The first byte of a record's LSM key.
pub(crate) const RECORDS: u8 = 0x01;
/// The first byte of an expiry entry's LSM key.
pub(crate) const EXPIRIES: u8 = 0x02;

fn record_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(RECORDS);
    out.extend_from_slice(key);
    out
}

fn expiry_key(expires_at: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(EXPIRIES);
    out.extend_from_slice(&expires_at.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// An expiry entry without its namespace byte: `(expires_at, key)`.
fn split_expiry(entry: &[u8]) -> Option<(u64, &[u8])> {
    let (time, key) = entry.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*time), key))
}
