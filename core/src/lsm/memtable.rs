//! The memtable: the newest writes, sorted, in memory, bounded in bytes.
//!
//! Every version is kept (key, sequence): a snapshot may still need an overwritten one; flushing
//! drops those no snapshot can see. A full memtable is *frozen* into a sorted vector that the
//! flush walks in small steps while a fresh memtable takes writes.

use std::cmp::Reverse;
use std::collections::BTreeMap;

/// One version of a key; `value: None` is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub sequence: u64,
    pub value: Option<Vec<u8>>,
}

impl Entry {
    /// The order of entries everywhere in the tree: key ascending, then newest first.
    pub fn order_key(&self) -> (&[u8], Reverse<u64>) {
        (&self.key, Reverse(self.sequence))
    }
}

/// A version's place in the memtable: key ascending, then newest first.
pub type VersionKey = (Vec<u8>, Reverse<u64>);

/// Per-entry bookkeeping counted against the memtable's budget (tree node share, lengths).
const ENTRY_OVERHEAD: usize = 64;

/// What a lookup found in one layer of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// The newest version visible: a value, or a tombstone (`None`).
    Version {
        sequence: u64,
        value: Option<Vec<u8>>,
    },
    /// This layer holds no visible version; look deeper.
    Absent,
}

#[derive(Default)]
pub struct Memtable {
    versions: BTreeMap<VersionKey, Option<Vec<u8>>>,
    bytes: usize,
}

impl Memtable {
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// The bytes counted against the budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn insert(&mut self, key: &[u8], sequence: u64, value: Option<&[u8]>) {
        self.bytes += ENTRY_OVERHEAD + key.len() + value.map_or(0, |v| v.len());
        let previous = self
            .versions
            .insert((key.to_vec(), Reverse(sequence)), value.map(|v| v.to_vec()));
        // A batch writing one key twice: the later write replaces the earlier at its sequence.
        if let Some(previous) = previous {
            self.bytes -= ENTRY_OVERHEAD + key.len() + previous.map_or(0, |v| v.len());
        }
    }

    /// Up to `limit` versions after `from` in iteration order, bounded by `[start, end)`.
    pub fn chunk(
        &self,
        from: Option<&VersionKey>,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
        limit: usize,
        out: &mut Vec<Entry>,
    ) {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let low = (start.to_vec(), Reverse(u64::MAX));
        let entry = |((key, Reverse(sequence)), value): (&VersionKey, &Option<Vec<u8>>)| Entry {
            key: key.clone(),
            sequence: *sequence,
            value: value.clone(),
        };
        let in_end = |k: &[u8]| end.is_none_or(|e| k < e);
        if reverse {
            let high = match (from, end) {
                (Some(f), _) => Excluded(f.clone()),
                (None, Some(e)) => Excluded((e.to_vec(), Reverse(u64::MAX))),
                (None, None) => Unbounded,
            };
            out.extend(
                self.versions
                    .range((Included(low), high))
                    .rev()
                    .take(limit)
                    .map(entry),
            );
        } else {
            let lower = match from {
                Some(f) => Excluded(f.clone()),
                None => Included(low),
            };
            out.extend(
                self.versions
                    .range((lower, Unbounded))
                    .take_while(|((k, _), _)| in_end(k))
                    .take(limit)
                    .map(entry),
            );
        }
    }

    /// The newest version of `key` with sequence ≤ `snapshot`.
    pub fn get(&self, key: &[u8], snapshot: u64) -> Found {
        let from = (key.to_vec(), Reverse(snapshot));
        match self.versions.range(from..).next() {
            Some(((k, Reverse(sequence)), value)) if k == key => Found::Version {
                sequence: *sequence,
                value: value.clone(),
            },
            _ => Found::Absent,
        }
    }

    /// Every version with key in `[start, end)` (all versions of each key, newest first).
    pub fn range(&self, start: &[u8], end: Option<&[u8]>) -> Vec<Entry> {
        let from = (start.to_vec(), Reverse(u64::MAX));
        self.versions
            .range(from..)
            .take_while(|((k, _), _)| end.is_none_or(|e| k.as_slice() < e))
            .map(|((key, Reverse(sequence)), value)| Entry {
                key: key.clone(),
                sequence: *sequence,
                value: value.clone(),
            })
            .collect()
    }

    /// Freezes the memtable into its sorted entries, leaving it empty.
    pub fn freeze(&mut self) -> Frozen {
        let bytes = std::mem::take(&mut self.bytes);
        let entries = std::mem::take(&mut self.versions)
            .into_iter()
            .map(|((key, Reverse(sequence)), value)| Entry {
                key,
                sequence,
                value,
            })
            .collect();
        Frozen { entries, bytes }
    }
}

/// A frozen memtable, waiting to be flushed into a level-0 table.
pub struct Frozen {
    pub entries: Vec<Entry>,
    pub bytes: usize,
}

impl Frozen {
    /// The index of the first entry at or after (`key`, newest visible at `snapshot`).
    pub fn seek(&self, key: &[u8], snapshot: u64) -> usize {
        self.entries
            .partition_point(|e| e.order_key() < (key, Reverse(snapshot)))
    }

    pub fn get(&self, key: &[u8], snapshot: u64) -> Found {
        match self.entries.get(self.seek(key, snapshot)) {
            Some(e) if e.key == key => Found::Version {
                sequence: e.sequence,
                value: e.value.clone(),
            },
            _ => Found::Absent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_see_the_newest_version_at_the_snapshot() {
        let mut m = Memtable::default();
        m.insert(b"a", 1, Some(b"one"));
        m.insert(b"a", 3, None);
        m.insert(b"a", 5, Some(b"five"));
        m.insert(b"b", 2, Some(b"two"));
        assert_eq!(m.get(b"a", 0), Found::Absent);
        let version = |s, v: Option<&[u8]>| Found::Version {
            sequence: s,
            value: v.map(|v| v.to_vec()),
        };
        assert_eq!(m.get(b"a", 2), version(1, Some(b"one")));
        assert_eq!(m.get(b"a", 4), version(3, None));
        assert_eq!(m.get(b"a", 9), version(5, Some(b"five")));
        assert_eq!(m.get(b"ab", 9), Found::Absent);
        let frozen = m.freeze();
        assert!(m.is_empty() && m.bytes() == 0);
        assert_eq!(frozen.get(b"a", 2), version(1, Some(b"one")));
        assert_eq!(frozen.get(b"a", 4), version(3, None));
        assert_eq!(frozen.get(b"b", 9), version(2, Some(b"two")));
        assert_eq!(frozen.get(b"c", 9), Found::Absent);
        let keys: Vec<_> = frozen
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.sequence))
            .collect();
        assert_eq!(
            keys,
            vec![
                (b"a".to_vec(), 5),
                (b"a".to_vec(), 3),
                (b"a".to_vec(), 1),
                (b"b".to_vec(), 2)
            ]
        );
    }
}
