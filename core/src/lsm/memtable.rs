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
    key: KeyBytes,
    sequence: Reverse<u64>,
}

/// Keys up to `INLINE_KEY` bytes live inside the tree's node (no allocation per write), zero
/// padded, and compare as three big-endian words.
const INLINE_KEY: usize = 24;

#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyBytes {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl KeyBytes {
    fn new(key: &[u8]) -> KeyBytes {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0u8; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            KeyBytes::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            KeyBytes::Heap(key.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, bytes } => &bytes[..*len as usize],
            KeyBytes::Heap(bytes) => bytes,
        }
    }
}

impl VersionKey {
    pub fn new(key: &[u8], sequence: u64) -> VersionKey {
        VersionKey {
            prefix: prefix(key),
            key: KeyBytes::new(key),
            sequence: Reverse(sequence),
        }
    }

    pub fn key(&self) -> &[u8] {
        self.key.as_slice()
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
            .then_with(|| self.key.cmp_after_prefix(&other.key))
            .then_with(|| self.sequence.cmp(&other.sequence))
    }
}

impl KeyBytes {
    /// The keys' order, for keys whose first eight bytes are equal. Inline keys compare as
    /// words: zero padding orders as the bytes do, and where the padded keys tie the shorter
    /// key is the smaller (a key sorts before itself extended by zero bytes). Keys that share
    /// a long prefix (`user:0000…`, a namespace byte) are the common case this is for.
    fn cmp_after_prefix(&self, other: &KeyBytes) -> std::cmp::Ordering {
        let (
            KeyBytes::Inline { len, bytes },
            KeyBytes::Inline {
                len: o_len,
                bytes: o,
            },
        ) = (self, other)
        else {
            return self.as_slice().cmp(other.as_slice());
        };
        let word = |b: &[u8; INLINE_KEY], i: usize| {
            u64::from_be_bytes(b[8 * i..8 * i + 8].try_into().unwrap())
        };
        (1..INLINE_KEY / 8)
            .map(|i| word(bytes, i).cmp(&word(o, i)))
            .find(|order| order.is_ne())
            .unwrap_or_else(|| len.cmp(o_len))
    }
}

impl PartialOrd for VersionKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Where a version's value sits in the memtable's arena; `len == TOMBSTONE` marks a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueRef {
    start: u32,
    len: u32,
}

const TOMBSTONE: u32 = u32::MAX;

impl ValueRef {
    fn get(self, arena: &[u8]) -> Option<&[u8]> {
        (self.len != TOMBSTONE)
            .then(|| &arena[self.start as usize..self.start as usize + self.len as usize])
    }

    fn size(self) -> usize {
        if self.len == TOMBSTONE {
            0
        } else {
            self.len as usize
        }
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

/// The active memtable: an ordered map of versions whose values sit in one arena (a write
/// copies its value there instead of allocating it).
#[derive(Default)]
pub struct Memtable {
    versions: BTreeMap<VersionKey, ValueRef>,
    arena: Vec<u8>,
    bytes: usize,
}

impl Memtable {
    /// A memtable whose arena is allocated up front for about `budget` bytes of writes.
    pub fn with_capacity(budget: usize) -> Memtable {
        Memtable {
            versions: BTreeMap::new(),
            arena: Vec::with_capacity(budget),
            bytes: 0,
        }
    }

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
        let size = value.map_or(0, |v| v.len());
        assert!(
            self.arena.len() + size < TOMBSTONE as usize,
            "a memtable's arena stays below 4 GiB"
        );
        let value = match value {
            Some(v) => {
                let start = self.arena.len() as u32;
                self.arena.extend_from_slice(v);
                ValueRef {
                    start,
                    len: v.len() as u32,
                }
            }
            None => ValueRef {
                start: 0,
                len: TOMBSTONE,
            },
        };
        self.bytes += ENTRY_OVERHEAD + key.len() + size;
        let previous = self.versions.insert(VersionKey::new(key, sequence), value);
        // A batch writing one key twice: the later write replaces the earlier at its sequence
        // (the earlier value's bytes stay in the arena until the memtable is flushed).
        if let Some(previous) = previous {
            self.bytes -= ENTRY_OVERHEAD + key.len() + previous.size();
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
        let arena = &self.arena;
        let mut push = |(version, value): (&VersionKey, &ValueRef)| {
            out.push(EntryRef {
                key: version.key(),
                sequence: version.sequence(),
                value: value.get(arena),
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
                .take_while(|(version, _)| in_end(version.key()))
                .take(limit)
                .for_each(&mut push);
        }
    }

    /// The newest version of `key` with sequence ≤ `snapshot`.
    pub fn get(&self, key: &[u8], snapshot: u64) -> Found {
        let from = VersionKey::new(key, snapshot);
        match self.versions.range(from..).next() {
            Some((version, value)) if version.key() == key => Found::Version {
                sequence: version.sequence(),
                value: value.get(&self.arena).map(|v| v.to_vec()),
            },
            _ => Found::Absent,
        }
    }

    /// Freezes the memtable into its sorted entries, leaving it empty; its next arena is
    /// `arena` (a flushed memtable's, to reuse its allocation).
    pub fn freeze(&mut self, mut arena: Vec<u8>) -> Frozen {
        arena.clear();
        let bytes = std::mem::take(&mut self.bytes);
        let entries = std::mem::take(&mut self.versions).into_iter().collect();
        Frozen {
            entries,
            arena: std::mem::replace(&mut self.arena, arena),
            bytes,
        }
    }
}

/// A frozen memtable, waiting to be flushed into a level-0 table.
pub struct Frozen {
    entries: Vec<(VersionKey, ValueRef)>,
    arena: Vec<u8>,
    pub bytes: usize,
}

impl Frozen {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entry(&self, i: usize) -> EntryRef<'_> {
        let (version, value) = &self.entries[i];
        EntryRef {
            key: version.key(),
            sequence: version.sequence(),
            value: value.get(&self.arena),
        }
    }

    pub fn max_sequence(&self) -> Option<u64> {
        self.entries.iter().map(|(v, _)| v.sequence()).max()
    }

    /// Gives back the arena for the next memtable.
    pub fn into_arena(self) -> Vec<u8> {
        self.arena
    }

    /// The index of the first entry at or after (`key`, newest visible at `snapshot`).
    pub fn seek(&self, key: &[u8], snapshot: u64) -> usize {
        let probe = VersionKey::new(key, snapshot);
        self.entries.partition_point(|(v, _)| *v < probe)
    }

    pub fn get(&self, key: &[u8], snapshot: u64) -> Found {
        let i = self.seek(key, snapshot);
        match (i < self.len()).then(|| self.entry(i)) {
            Some(e) if e.key == key => Found::Version {
                sequence: e.sequence,
                value: e.value.map(|v| v.to_vec()),
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
            a in proptest::collection::vec(0u8..3, 0..30), b in proptest::collection::vec(0u8..3, 0..30),
            x in 0u64..4, y in 0u64..4,
        ) {
            let ours = VersionKey::new(&a, x).cmp(&VersionKey::new(&b, y));
            let reference = (&a, Reverse(x)).cmp(&(&b, Reverse(y)));
            prop_assert_eq!(ours, reference);
        }

        #[test]
        fn keys_sharing_a_long_prefix_order_as_bytes(
            shared in proptest::collection::vec(0u8..3, 8..26),
            a in proptest::collection::vec(0u8..3, 0..8), b in proptest::collection::vec(0u8..3, 0..8),
            x in 0u64..4, y in 0u64..4,
        ) {
            let (a, b) = ([&shared[..], &a[..]].concat(), [&shared[..], &b[..]].concat());
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
        let frozen = m.freeze(Vec::new());
        assert!(m.is_empty() && m.bytes() == 0);
        assert_eq!(frozen.get(b"a", 2), version(1, Some(b"one")));
        assert_eq!(frozen.get(b"a", 4), version(3, None));
        assert_eq!(frozen.get(b"b", 9), version(2, Some(b"two")));
        assert_eq!(frozen.get(b"c", 9), Found::Absent);
        let keys: Vec<_> = (0..frozen.len())
            .map(|i| (frozen.entry(i).key.to_vec(), frozen.entry(i).sequence))
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
