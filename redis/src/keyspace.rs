//! The keys as commands see them at one moment of the log: expired keys are absent, and writes
//! go straight to the LSM state (a later command of the same group sees them).
//!
//! The LSM holds namespaces, told apart by the first byte of its keys (see
//! `docs/design/data-model.md`):
//!
//! - `[RECORDS][key]` → the key's record ([`Record`]): its type, expiry, last write and value;
//! - `[EXPIRIES][expires_at u64 BE][key]` → nothing: the expiry index. Every record written with
//!   an expiry adds its entry, so the reaper finds what is due in the order it falls due without
//!   looking at keys that never expire. An entry whose record has since changed is
//!   stale: the reap that meets it deletes the entry and leaves the record.
//! - `[MEMBERS][id u64 BE][member]` → the member's value: a collection's members (hash fields,
//!   set members), named by the collection's id, not its key, so `RENAME` moves only the record;
//! - `[DEAD][id u64 BE]` → nothing: a collection removed with members left, which the reaper's
//!   sweep deletes in bounded steps (`DEL` of a million-member set is one write).

use crate::record::{Collection, Record};
use ziggy_core::lsm::Write;
use ziggy_core::state_machine::{LsmState, StateError};

/// Where a walk of a sorted set by score starts.
#[derive(Clone, Copy, Debug)]
pub enum ScoreStart<'m> {
    /// The lowest score (the highest, in reverse).
    End,
    /// The first member with this score (the last, in reverse).
    Score(f64),
    /// Just past this member (a walk's next batch).
    After(f64, &'m [u8]),
}

/// Members of a collection with their values, in member order.
pub type Members = Vec<(Vec<u8>, Vec<u8>)>;

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
    /// Collection ids this entry made so far ([`Keyspace::new_id`]), over every request of a
    /// batch entry: the machine keeps the count between the requests of one entry.
    created: &'a mut u64,
}

impl<'a> Keyspace<'a> {
    pub fn new(
        lsm: &'a mut LsmState,
        now: u64,
        index: u64,
        value_max: usize,
        removed_at: &'a mut u64,
        created: &'a mut u64,
    ) -> Keyspace<'a> {
        Keyspace {
            lsm,
            now,
            index,
            value_max,
            removed_at,
            created,
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

    /// Stores `record`, stamped with the entry's index (and indexes its expiry). A collection
    /// it replaces (by another type, or another collection) is left to the sweep.
    pub fn put(&mut self, key: &[u8], record: &Record) -> Result<(), StateError> {
        let replaced = self.stored(key)?.and_then(|r| r.as_collection());
        let id = record.as_collection().map(|c| c.id);
        let dead = replaced.filter(|old| Some(old.id) != id && old.len > 0);
        self.write_record(key, record, dead)
    }

    /// [`Keyspace::put`] for a collection's own record, as it changes length or expiry: the
    /// caller read it, so nothing is replaced.
    pub fn update(&mut self, key: &[u8], record: &Record) -> Result<(), StateError> {
        assert!(record.as_collection().is_some());
        self.write_record(key, record, None)
    }

    /// Writes a record, its expiry entry and the mark of a collection it made dead, in one
    /// batch.
    fn write_record(
        &mut self,
        key: &[u8],
        record: &Record,
        dead: Option<Collection>,
    ) -> Result<(), StateError> {
        assert!(self.index > 0, "only an applied entry writes");
        let bytes = record.encode(self.index);
        let stored = record_key(key);
        let due = (record.expires_at != 0).then(|| expiry_key(record.expires_at, key));
        let dead = dead.map(|c| dead_key(c.id));
        let mut writes = vec![Write {
            key: &stored,
            value: Some(&bytes),
        }];
        for key in due.iter().chain(&dead) {
            writes.push(Write {
                key,
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
        let dead = record.as_collection().filter(|c| c.len > 0);
        let (stored, dead) = (record_key(key), dead.map(|c| dead_key(c.id)));
        let mut writes = vec![Write {
            key: &stored,
            value: None,
        }];
        if let Some(dead) = &dead {
            writes.push(Write {
                key: dead,
                value: Some(&[]),
            });
        }
        self.lsm.write(&writes)?;
        *self.removed_at = self.index;
        Ok(!record.expired(self.now))
    }

    /// Removes `key`'s record alone, leaving its members (if any) as they are: for a record
    /// that moves to another key (`RENAME`), or a collection whose members are all gone.
    pub fn unlink_record(&mut self, key: &[u8]) -> Result<(), StateError> {
        assert!(self.index > 0, "only an applied entry removes");
        self.lsm.write(&[Write {
            key: &record_key(key),
            value: None,
        }])?;
        *self.removed_at = self.index;
        Ok(())
    }

    /// A fresh collection id: the entry's index in the high bits and a count of the ids this
    /// entry made in the low 20, so no two collections ever share one (a key deleted and made
    /// again within one MULTI gets a new id, and its old members stay unreachable).
    pub fn new_id(&mut self) -> u64 {
        assert!(
            self.index > 0 && self.index < 1 << 44,
            "only an applied entry creates"
        );
        assert!(
            *self.created < 1 << 20,
            "an entry makes at most 2^20 collections"
        );
        let id = self.index << 20 | *self.created;
        *self.created += 1;
        id
    }

    /// The value of collection `id`'s `member`.
    pub fn member(&mut self, id: u64, member: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.lsm.get(&member_key(id, member))
    }

    pub fn put_member(&mut self, id: u64, member: &[u8], value: &[u8]) -> Result<(), StateError> {
        assert!(self.index > 0, "only an applied entry writes");
        self.lsm.write(&[Write {
            key: &member_key(id, member),
            value: Some(value),
        }])
    }

    pub fn remove_member(&mut self, id: u64, member: &[u8]) -> Result<(), StateError> {
        assert!(self.index > 0, "only an applied entry removes");
        self.lsm.write(&[Write {
            key: &member_key(id, member),
            value: None,
        }])
    }

    /// Up to `limit` members of collection `id` from `from` on (inclusive), in order, with their
    /// values.
    pub fn members(&mut self, id: u64, from: &[u8], limit: usize) -> Result<Members, StateError> {
        let end = id.checked_add(1).map(|next| member_key(next, b""));
        let pairs = self
            .lsm
            .range(&member_key(id, from), end.as_deref(), limit, false)?;
        Ok(pairs
            .into_iter()
            .map(|(mut key, value)| {
                key.drain(..9);
                (key, value)
            })
            .collect())
    }

    /// Indexes `member` of sorted set `id` under `score` (beside its `[MEMBERS]` key).
    pub fn put_score(&mut self, id: u64, score: f64, member: &[u8]) -> Result<(), StateError> {
        assert!(self.index > 0, "only an applied entry writes");
        self.lsm.write(&[Write {
            key: &score_key(id, score, member),
            value: Some(&[]),
        }])
    }

    pub fn remove_score(&mut self, id: u64, score: f64, member: &[u8]) -> Result<(), StateError> {
        assert!(self.index > 0, "only an applied entry removes");
        self.lsm.write(&[Write {
            key: &score_key(id, score, member),
            value: None,
        }])
    }

    /// Up to `limit` members of sorted set `id` in score order (descending with `reverse`)
    /// from `start`, with their scores.
    pub fn by_score(
        &mut self,
        id: u64,
        start: ScoreStart,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(f64, Vec<u8>)>, StateError> {
        let (first, end) = (score_prefix(id), score_prefix(id + 1));
        let (low, high) = match (start, reverse) {
            (ScoreStart::End, _) => (first, end),
            (ScoreStart::Score(s), false) => (score_key(id, s, b""), end),
            (ScoreStart::Score(s), true) => {
                let next = u64::from_be_bytes(score_bytes(s)) + 1; // +inf's bytes are below MAX
                let mut high = score_prefix(id);
                high.extend_from_slice(&next.to_be_bytes());
                (first, high)
            }
            (ScoreStart::After(s, m), false) => {
                let mut low = score_key(id, s, m);
                low.push(0);
                (low, end)
            }
            (ScoreStart::After(s, m), true) => (first, score_key(id, s, m)),
        };
        let pairs = self.lsm.range(&low, Some(&high), limit, reverse)?;
        Ok(pairs
            .into_iter()
            .map(|(key, _)| {
                let score = score_of(key[9..17].try_into().unwrap());
                (score, key[17..].to_vec())
            })
            .collect())
    }

    /// Up to `limit` removed collections whose members remain, by id.
    pub fn dead(&mut self, limit: usize) -> Result<Vec<u64>, StateError> {
        let pairs = self.lsm.range(&[DEAD], Some(&[DEAD + 1]), limit, false)?;
        Ok(pairs
            .iter()
            .filter_map(|(key, _)| Some(u64::from_be_bytes(*key[1..].first_chunk::<8>()?)))
            .collect())
    }

    /// Deletes up to `max` members (and score-index entries) of the removed collection `id`,
    /// after `after` (the last LSM key a sweep of it deleted; empty: from the start), and its
    /// mark once none are left. How many it deleted, and where the next sweep resumes (empty:
    /// done). Resuming past what was deleted keeps each sweep from walking over the tombstones
    /// of the ones before it. A collection not marked removed is left alone.
    pub fn sweep(
        &mut self,
        id: u64,
        after: &[u8],
        max: usize,
    ) -> Result<(u64, Vec<u8>), StateError> {
        assert!(self.index > 0, "only an applied entry sweeps");
        if self.lsm.get(&dead_key(id))?.is_none() {
            return Ok((0, Vec::new()));
        }
        // The members' range, then (a sorted set's) the score index's.
        let ranges = [
            (member_key(id, b""), member_key(id + 1, b"")),
            (score_prefix(id), score_prefix(id + 1)),
        ];
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for (first, end) in ranges {
            if keys.len() == max || after >= end.as_slice() {
                continue;
            }
            let start = if after >= first.as_slice() {
                [after, &[0]].concat() // just past the last key deleted
            } else {
                first
            };
            let found = self
                .lsm
                .range(&start, Some(&end), max - keys.len(), false)?;
            keys.extend(found.into_iter().map(|(key, _)| key));
        }
        let mark = dead_key(id);
        let mut writes: Vec<Write> = keys.iter().map(|key| Write { key, value: None }).collect();
        let next = if keys.len() < max {
            writes.push(Write {
                key: &mark,
                value: None,
            });
            Vec::new()
        } else {
            keys.last().cloned().expect("max > 0")
        };
        self.lsm.write(&writes)?;
        Ok((keys.len() as u64, next))
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
/// The first byte of a collection member's LSM key.
pub(crate) const MEMBERS: u8 = 0x03;
/// The first byte of a removed collection's mark (0x04 is kept for sorted sets' score index).
pub(crate) const DEAD: u8 = 0x05;

fn member_key(id: u64, member: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + member.len());
    out.push(MEMBERS);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(member);
    out
}

/// The first byte of a sorted set's score index: `[SCORES][id u64 BE][score][member]`.
pub(crate) const SCORES: u8 = 0x04;

fn score_prefix(id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(SCORES);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

fn score_key(id: u64, score: f64, member: &[u8]) -> Vec<u8> {
    let mut out = score_prefix(id);
    out.extend_from_slice(&score_bytes(score));
    out.extend_from_slice(member);
    out
}

/// A score as 8 bytes that sort as the numbers do (negative ones flipped whole, positive ones
/// with the sign bit set). -0.0 is stored as 0.0, as Redis treats them alike.
pub(crate) fn score_bytes(score: f64) -> [u8; 8] {
    let bits = if score == 0.0 { 0 } else { score.to_bits() };
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    };
    ordered.to_be_bytes()
}

fn score_of(bytes: [u8; 8]) -> f64 {
    let ordered = u64::from_be_bytes(bytes);
    let bits = if ordered >> 63 == 1 {
        ordered & !(1 << 63)
    } else {
        !ordered
    };
    f64::from_bits(bits)
}

fn dead_key(id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(DEAD);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

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
