//! The memtable: the newest writes, sorted, in memory, bounded in bytes.
//!
//! Every version is kept (key, sequence): a snapshot may still need an overwritten one; flushing
//! drops those no snapshot can see. A full memtable is *frozen* into a sorted vector that the
//! flush walks in small steps while a fresh memtable takes writes.

use super::entries::{Entries, EntryRef};
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

/// A version's place in the memtable: key ascending, then newest first. The key's first eight
/// bytes, big-endian, are compared first as one integer: most comparisons end there without
/// touching the key's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionKey {
    prefix: u64,
    key: Vec<u8>,
    sequence: Reverse<u64>,
}

impl VersionKey {
    pub fn new(key: &[u8], sequence: u64) -> VersionKey {
        VersionKey {
            prefix: prefix(key),
            key: key.to_vec(),
            sequence: Reverse(sequence),
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn sequence(&self) -> u64 {
        self.sequence.0
    }
}

/// The first eight bytes of `key`, zero-padded, big-endian: ordered as the keys are, except
/// where they tie (then the keys decide).
fn prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

impl Ord for VersionKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.key.cmp(&other.key))
            .then_with(|| self.sequence.cmp(&other.sequence))
    }
}

impl PartialOrd for VersionKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

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
            .insert(VersionKey::new(key, sequence), value.map(|v| v.to_vec()));
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
        out: &mut Entries,
    ) {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let low = VersionKey::new(start, u64::MAX);
        let mut push = |(version, value): (&VersionKey, &Option<Vec<u8>>)| {
            out.push(EntryRef {
                key: &version.key,
                sequence: version.sequence(),
                value: value.as_deref(),
            })
        };
        let in_end = |k: &[u8]| end.is_none_or(|e| k < e);
        if reverse {
            let high = match (from, end) {
                (Some(f), _) => Excluded(f.clone()),
                (None, Some(e)) => Excluded(VersionKey::new(e, u64::MAX)),
                (None, None) => Unbounded,
            };
            self.versions
                .range((Included(low), high))
                .rev()
                .take(limit)
                .for_each(&mut push);
        } else {
            let lower = match from {
                Some(f) => Excluded(f.clone()),
                None => Included(low),
            };
            self.versions
                .range((lower, Unbounded))
                .take_while(|(version, _)| in_end(&version.key))
                .take(limit)
                .for_each(&mut push);
        }
    }

    /// The newest version of `key` with sequence ≤ `snapshot`.
    pub fn get(&self, key: &[u8], snapshot: u64) -> Found {
        let from = VersionKey::new(key, snapshot);
        match self.versions.range(from..).next() {
            Some((version, value)) if version.key == key => Found::Version {
                sequence: version.sequence(),
                value: value.clone(),
            },
            _ => Found::Absent,
        }
    }

    /// Freezes the memtable into its sorted entries, leaving it empty.
    pub fn freeze(&mut self) -> Frozen {
        let bytes = std::mem::take(&mut self.bytes);
        let entries = std::mem::take(&mut self.versions)
            .into_iter()
            .map(|(version, value)| Entry {
                key: version.key,
                sequence: version.sequence.0,
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
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn version_keys_order_as_key_then_newest_first(
            a in proptest::collection::vec(0u8..3, 0..12), b in proptest::collection::vec(0u8..3, 0..12),
            x in 0u64..4, y in 0u64..4,
        ) {
            let ours = VersionKey::new(&a, x).cmp(&VersionKey::new(&b, y));
            let reference = (&a, Reverse(x)).cmp(&(&b, Reverse(y)));
            prop_assert_eq!(ours, reference);
        }
    }

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
