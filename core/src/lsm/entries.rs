//! A reusable buffer of entries in one flat byte array.
//!
//! Merges (flushes, compactions, scans) move every entry through cursor buffers and the
//! per-key version list. Owning each key and value in its own `Vec` cost two allocations per
//! entry per merge — a third of a fill's CPU went to `malloc`. Here the bytes of all entries sit
//! in one `Vec<u8>` and the entries are small fixed records pointing into it; clearing keeps
//! both capacities, so a warmed-up buffer never allocates.

use super::memtable::Entry;

/// One entry, borrowed from a buffer, a memtable or a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub key: &'a [u8],
    pub sequence: u64,
    /// None: a tombstone.
    pub value: Option<&'a [u8]>,
}

impl<'a> EntryRef<'a> {
    pub fn of(entry: &'a Entry) -> EntryRef<'a> {
        EntryRef {
            key: &entry.key,
            sequence: entry.sequence,
            value: entry.value.as_deref(),
        }
    }

    pub fn to_owned(self) -> Entry {
        Entry {
            key: self.key.to_vec(),
            sequence: self.sequence,
            value: self.value.map(|v| v.to_vec()),
        }
    }

    /// Bytes of key and value.
    pub fn size(&self) -> usize {
        self.key.len() + self.value.map_or(0, |v| v.len())
    }
}

/// Marks a tombstone in `Item::value_len`.
const TOMBSTONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Item {
    /// Where the key starts in `bytes`; the value follows it.
    start: u32,
    key_len: u32,
    value_len: u32,
    sequence: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Entries {
    bytes: Vec<u8>,
    items: Vec<Item>,
}

impl Entries {
    pub fn new() -> Entries {
        Entries::default()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Empties the buffer, keeping its capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
    }

    pub fn push(&mut self, entry: EntryRef) {
        let start = self.bytes.len();
        assert!(
            start + entry.size() < TOMBSTONE as usize,
            "an entry buffer stays below 4 GiB"
        );
        self.bytes.extend_from_slice(entry.key);
        let value_len = match entry.value {
            Some(value) => {
                self.bytes.extend_from_slice(value);
                value.len() as u32
            }
            None => TOMBSTONE,
        };
        self.items.push(Item {
            start: start as u32,
            key_len: entry.key.len() as u32,
            value_len,
            sequence: entry.sequence,
        });
    }

    pub fn get(&self, i: usize) -> EntryRef<'_> {
        Entries::view(&self.bytes, self.items[i])
    }

    pub fn first(&self) -> Option<EntryRef<'_>> {
        (!self.is_empty()).then(|| self.get(0))
    }

    pub fn last(&self) -> Option<EntryRef<'_>> {
        (!self.is_empty()).then(|| self.get(self.len() - 1))
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = EntryRef<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Drops the last entry (its bytes stay until `clear`).
    pub fn pop(&mut self) {
        self.items.pop();
    }

    /// Keeps the entries `keep` accepts, in order (their bytes stay where they are).
    pub fn retain(&mut self, mut keep: impl FnMut(EntryRef) -> bool) {
        let bytes = &self.bytes;
        self.items.retain(|&item| keep(Entries::view(bytes, item)));
    }

    pub fn reverse(&mut self) {
        self.items.reverse();
    }

    /// Orders the entries by sequence, newest first.
    pub fn sort_newest_first(&mut self) {
        self.items
            .sort_unstable_by_key(|item| std::cmp::Reverse(item.sequence));
    }

    fn view(bytes: &[u8], item: Item) -> EntryRef<'_> {
        let key_end = item.start as usize + item.key_len as usize;
        EntryRef {
            key: &bytes[item.start as usize..key_end],
            sequence: item.sequence,
            value: (item.value_len != TOMBSTONE)
                .then(|| &bytes[key_end..key_end + item.value_len as usize]),
        }
    }

    /// Every entry, owned (tests and diagnostics).
    pub fn to_vec(&self) -> Vec<Entry> {
        self.iter().map(EntryRef::to_owned).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = Entry> {
        (
            proptest::collection::vec(any::<u8>(), 0..20),
            any::<u64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30)),
        )
            .prop_map(|(key, sequence, value)| Entry {
                key,
                sequence,
                value,
            })
    }

    proptest! {
        #[test]
        fn entries_round_trip_and_retain_like_a_vec(
            all in proptest::collection::vec(entry(), 0..40),
            mask in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let mut buffer = Entries::new();
            for round in 0..2 {
                buffer.clear();
                all.iter().for_each(|e| buffer.push(EntryRef::of(e)));
                prop_assert_eq!(buffer.to_vec(), all.clone(), "round {}", round);
            }
            let mut i = 0;
            buffer.retain(|_| { i += 1; mask[i - 1] });
            let kept: Vec<Entry> = all.iter().zip(&mask).filter(|(_, &m)| m).map(|(e, _)| e.clone()).collect();
            prop_assert_eq!(buffer.to_vec(), kept.clone());
            buffer.reverse();
            let reversed: Vec<Entry> = kept.iter().rev().cloned().collect();
            prop_assert_eq!(buffer.to_vec(), reversed);
            buffer.sort_newest_first();
            let sequences: Vec<u64> = buffer.iter().map(|e| e.sequence).collect();
            prop_assert!(sequences.windows(2).all(|w| w[0] >= w[1]));
        }
    }
}
