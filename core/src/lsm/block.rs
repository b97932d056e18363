//! Data blocks of a table: sorted entries with prefix-compressed keys.
//!
//! An entry is a user key, a sequence number (MVCC: the version), a kind (a value, or a tombstone)
//! and a value. Entries are sorted by key ascending, then sequence descending (the newest version
//! of a key first). Every `RESTART_INTERVAL` entries a *restart point* stores its key whole, so a
//! search binary-searches the restart points and then scans at most one interval.
//!
//! Layout:
//!
//! ```text
//! entry*:  shared (varint) | unshared (varint) | value length (varint) | key suffix
//!          | sequence (varint) | kind (u8) | value
//! trailer: restart offsets (u32 LE each) | restart count (u32 LE)
//! ```
//!
//! A block carries no checksum of its own: it always lives inside a grid block's envelope, whose
//! checksum covers it. (A trailing crc32c here would make that envelope checksum degenerate: a CRC
//! over bytes that end with their own CRC is the same for all contents of one length.)
//! Decoding checks every bound: a malformed block is an error, never
//! a panic and never a wrong entry.

use super::entries::{Entries, EntryRef};
use super::varint;

pub const RESTART_INTERVAL: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    Tombstone = 0,
    Value = 1,
}

/// One entry, borrowed from a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub key: Vec<u8>,
    pub sequence: u64,
    pub kind: Kind,
    pub value: &'a [u8],
}

/// Builds one block. Entries must come in order (see the module docs).
#[derive(Default)]
pub struct BlockBuilder {
    buffer: Vec<u8>,
    restarts: Vec<u32>,
    count: usize,
    last_key: Vec<u8>,
    last_sequence: u64,
}

impl BlockBuilder {
    pub fn new() -> BlockBuilder {
        BlockBuilder::default()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The size the block would have if finished now.
    pub fn size(&self) -> usize {
        self.buffer.len() + 4 * self.restarts.len() + 8
    }

    pub fn add(&mut self, key: &[u8], sequence: u64, kind: Kind, value: &[u8]) {
        if self.count > 0 {
            let ordered = match key.cmp(&self.last_key) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => sequence < self.last_sequence,
                std::cmp::Ordering::Less => false,
            };
            assert!(
                ordered,
                "block entries are sorted by key, then newest sequence first"
            );
        }
        let shared = if self.count.is_multiple_of(RESTART_INTERVAL) {
            self.restarts.push(self.buffer.len() as u32);
            0
        } else {
            key.iter()
                .zip(&self.last_key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        varint::encode(shared as u64, &mut self.buffer);
        varint::encode((key.len() - shared) as u64, &mut self.buffer);
        varint::encode(value.len() as u64, &mut self.buffer);
        self.buffer.extend_from_slice(&key[shared..]);
        varint::encode(sequence, &mut self.buffer);
        self.buffer.push(kind as u8);
        self.buffer.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.last_sequence = sequence;
        self.count += 1;
    }

    /// Finishes the block into `out` (cleared first), and resets the builder.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.buffer);
        for restart in &self.restarts {
            out.extend_from_slice(&restart.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        *self = BlockBuilder::default();
    }
}

/// Why bytes are not a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    Malformed,
}

/// A verified block.
pub struct Block<'a> {
    entries: &'a [u8],
    /// The restart offsets, u32 LE each (read in place: opening a block allocates nothing).
    offsets: &'a [u8],
}

/// What [`Block::find`] found for a key at a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Find<'a> {
    /// The newest version visible at the snapshot.
    Version {
        sequence: u64,
        kind: Kind,
        value: &'a [u8],
    },
    /// The block holds no visible version, and neither does anything after it.
    Absent,
    /// The block ended among the key's versions: the next block may hold a visible one.
    Continue,
}

impl<'a> Block<'a> {
    /// Verifies and opens a block: its restart points too, in O(restart points). Never panics.
    pub fn decode(bytes: &'a [u8]) -> Result<Block<'a>, BlockError> {
        let block = Block::open(bytes)?;
        let count = block.restart_count();
        let entries = block.entries;
        let restarts = (0..count).map(|i| block.restart(i));
        let mut previous = None;
        for r in restarts {
            let ordered = previous.is_none_or(|p| p < r);
            if !ordered || r as usize >= entries.len().max(1) {
                return Err(BlockError::Malformed);
            }
            previous = Some(r);
        }
        if (count == 0) != entries.is_empty() || (count > 0 && block.restart(0) != 0) {
            return Err(BlockError::Malformed);
        }
        Ok(block)
    }

    /// Opens a block [`Block::decode`] has verified before (the block cache admits no other),
    /// in O(1): the point-read path opens one per lookup. Never panics on any bytes; on a block
    /// `decode` would reject it may find wrongly.
    pub fn open(bytes: &'a [u8]) -> Result<Block<'a>, BlockError> {
        if bytes.len() < 4 {
            return Err(BlockError::Malformed);
        }
        let (rest, count) = bytes.split_at(bytes.len() - 4);
        let count = u32::from_le_bytes(count.try_into().unwrap()) as usize;
        let table = count
            .checked_mul(4)
            .filter(|&n| n <= rest.len())
            .ok_or(BlockError::Malformed)?;
        let (entries, offsets) = rest.split_at(rest.len() - table);
        Ok(Block { entries, offsets })
    }

    fn restart_count(&self) -> usize {
        self.offsets.len() / 4
    }

    fn restart(&self, i: usize) -> u32 {
        u32::from_le_bytes(self.offsets[4 * i..4 * i + 4].try_into().unwrap())
    }

    /// The key stored whole at restart point `i` (restart entries share no prefix).
    fn restart_key(&self, i: usize) -> Result<&'a [u8], BlockError> {
        let mut at = self.restart(i) as usize;
        let mut varint = || -> Result<u64, BlockError> {
            let rest = self.entries.get(at..).ok_or(BlockError::Malformed)?;
            let (value, taken) = varint::decode(rest).map_err(|_| BlockError::Malformed)?;
            at += taken;
            Ok(value)
        };
        let (shared, unshared, _) = (varint()?, varint()?, varint()?);
        let end = at
            .checked_add(unshared as usize)
            .filter(|&e| e <= self.entries.len() && shared == 0)
            .ok_or(BlockError::Malformed)?;
        Ok(&self.entries[at..end])
    }

    /// The restart point a read of `key` starts at: the last whose key is below `key` (0 when
    /// none is).
    pub fn restart_for(&self, key: &[u8]) -> Result<usize, BlockError> {
        let (mut low, mut high) = (0, self.restart_count());
        while low + 1 < high {
            let mid = (low + high) / 2;
            if self.restart_key(mid)? < key {
                low = mid;
            } else {
                high = mid;
            }
        }
        Ok(low)
    }

    /// Appends the entries from restart point `from` up to restart point `from + intervals`
    /// (or the block's end): a range cursor's chunk, so that a short range does not decode the
    /// whole block. Where the next chunk starts; None at the block's end.
    pub fn decode_intervals(
        &self,
        from: usize,
        intervals: usize,
        out: &mut Entries,
    ) -> Result<Option<usize>, BlockError> {
        assert!(intervals > 0);
        let count = self.restart_count();
        if from >= count {
            return Ok(None);
        }
        let stop = from + intervals;
        let end = if stop < count {
            self.restart(stop) as usize
        } else {
            self.entries.len()
        };
        // A restart entry stores its whole key: decoding can start there with no prefix.
        let mut iter = BlockIter {
            entries: self.entries,
            at: self.restart(from) as usize,
            key: Vec::new(),
            failed: false,
        };
        while iter.at < end {
            let (sequence, kind, value) = iter.decode_next()?;
            out.push(EntryRef {
                key: &iter.key,
                sequence,
                value: (kind == Kind::Value).then_some(value),
            });
        }
        Ok((stop < count).then_some(stop))
    }

    /// The newest version of `key` with sequence ≤ `snapshot`, without allocating (keys are
    /// rebuilt in `scratch`). The point-read path.
    pub fn find(
        &self,
        key: &[u8],
        snapshot: u64,
        scratch: &mut Vec<u8>,
    ) -> Result<Find<'a>, BlockError> {
        let low = self.restart_for(key)?;
        let mut at = if self.restart_count() == 0 {
            0
        } else {
            self.restart(low) as usize
        };
        scratch.clear();
        let mut last_equal = false;
        while at < self.entries.len() {
            let entries = self.entries;
            let mut varint = || -> Result<u64, BlockError> {
                let (value, taken) =
                    varint::decode(&entries[at..]).map_err(|_| BlockError::Malformed)?;
                at += taken;
                Ok(value)
            };
            let (shared, unshared, value_len) = (varint()?, varint()?, varint()?);
            let (shared, unshared) = (shared as usize, unshared as usize);
            let fits = at
                .checked_add(unshared)
                .is_some_and(|end| end <= entries.len());
            if shared > scratch.len() || !fits {
                return Err(BlockError::Malformed);
            }
            scratch.truncate(shared);
            scratch.extend_from_slice(&entries[at..at + unshared]);
            at += unshared;
            let mut varint = || -> Result<u64, BlockError> {
                let (value, taken) =
                    varint::decode(&entries[at..]).map_err(|_| BlockError::Malformed)?;
                at += taken;
                Ok(value)
            };
            let sequence = varint()?;
            let kind = match entries.get(at) {
                Some(0) => Kind::Tombstone,
                Some(1) => Kind::Value,
                _ => return Err(BlockError::Malformed),
            };
            at += 1;
            let end = at
                .checked_add(value_len as usize)
                .filter(|&e| e <= entries.len())
                .ok_or(BlockError::Malformed)?;
            let value = &entries[at..end];
            at = end;
            match scratch.as_slice().cmp(key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Greater => return Ok(Find::Absent),
                std::cmp::Ordering::Equal if sequence <= snapshot => {
                    return Ok(Find::Version {
                        sequence,
                        kind,
                        value,
                    })
                }
                std::cmp::Ordering::Equal => last_equal = true,
            }
        }
        // The block ended among the key's versions, or before the key.
        Ok(if last_equal {
            Find::Continue
        } else {
            Find::Absent
        })
    }

    /// Appends every entry, in order, to `out` without allocating per entry (merges and scans).
    pub fn decode_into(&self, out: &mut Entries) -> Result<(), BlockError> {
        let mut iter = self.iter();
        while iter.at < iter.entries.len() {
            let (sequence, kind, value) = iter.decode_next()?;
            out.push(EntryRef {
                key: &iter.key,
                sequence,
                value: (kind == Kind::Value).then_some(value),
            });
        }
        Ok(())
    }

    /// All entries, in order.
    pub fn iter(&self) -> BlockIter<'a> {
        BlockIter {
            entries: self.entries,
            at: 0,
            key: Vec::new(),
            failed: false,
        }
    }

    /// The entries from the first whose key is at least `key` (the newest version first).
    pub fn seek(&self, key: &[u8]) -> BlockIter<'a> {
        // The last restart point whose key is below `key`: scanning from there finds the first
        // entry at or beyond `key` within one interval.
        let mut low = 0;
        let mut high = self.restart_count();
        while low + 1 < high {
            let mid = (low + high) / 2;
            match self.restart_key(mid) {
                Ok(k) if k < key => low = mid,
                _ => high = mid,
            }
        }
        let start = if high == 0 {
            0
        } else {
            self.restart(low) as usize
        };
        let mut iter = BlockIter {
            entries: self.entries,
            at: start,
            key: Vec::new(),
            failed: false,
        };
        loop {
            let here = iter.at;
            let saved = iter.key.clone();
            match iter.next() {
                Some(Ok(entry)) if entry.key.as_slice() < key => continue,
                None => return iter,
                _ => {
                    iter.at = here;
                    iter.key = saved;
                    return iter;
                }
            }
        }
    }
}

pub struct BlockIter<'a> {
    entries: &'a [u8],
    at: usize,
    key: Vec<u8>,
    failed: bool,
}

impl<'a> Iterator for BlockIter<'a> {
    type Item = Result<Entry<'a>, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.entries.len() {
            return None;
        }
        let entry = self.decode_entry();
        if entry.is_err() {
            self.failed = true;
        }
        Some(entry)
    }
}

impl<'a> BlockIter<'a> {
    fn varint(&mut self) -> Result<u64, BlockError> {
        let (value, taken) =
            varint::decode(&self.entries[self.at..]).map_err(|_| BlockError::Malformed)?;
        self.at += taken;
        Ok(value)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BlockError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.entries.len())
            .ok_or(BlockError::Malformed)?;
        let bytes = &self.entries[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn decode_entry(&mut self) -> Result<Entry<'a>, BlockError> {
        let (sequence, kind, value) = self.decode_next()?;
        Ok(Entry {
            key: self.key.clone(),
            sequence,
            kind,
            value,
        })
    }

    /// Decodes the next entry; its key is left in `self.key` (no allocation once warm).
    fn decode_next(&mut self) -> Result<(u64, Kind, &'a [u8]), BlockError> {
        let shared = self.varint()? as usize;
        let unshared = self.varint()? as usize;
        let value_len = self.varint()? as usize;
        if shared > self.key.len() {
            return Err(BlockError::Malformed);
        }
        let suffix = self.take(unshared)?;
        self.key.truncate(shared);
        self.key.extend_from_slice(suffix);
        let sequence = self.varint()?;
        let kind = match self.take(1)?[0] {
            0 => Kind::Tombstone,
            1 => Kind::Value,
            _ => return Err(BlockError::Malformed),
        };
        let value = self.take(value_len)?;
        Ok((sequence, kind, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Owned = (Vec<u8>, u64, Kind, Vec<u8>);

    fn sorted_entries() -> impl Strategy<Value = Vec<Owned>> {
        proptest::collection::btree_map(
            (proptest::collection::vec(0u8..4, 0..12), any::<u32>()),
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..20)),
            0..80,
        )
        .prop_map(|map| {
            let mut entries: Vec<Owned> = map
                .into_iter()
                .map(|((key, seq), (live, value))| {
                    (
                        key,
                        seq as u64,
                        if live { Kind::Value } else { Kind::Tombstone },
                        value,
                    )
                })
                .collect();
            // Key ascending, then the newest sequence first.
            entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            entries
        })
    }

    fn build(entries: &[Owned]) -> Vec<u8> {
        let mut builder = BlockBuilder::new();
        for (key, seq, kind, value) in entries {
            builder.add(key, *seq, *kind, value);
        }
        let mut out = Vec::new();
        builder.finish(&mut out);
        out
    }

    fn owned(entry: Entry) -> Owned {
        (entry.key, entry.sequence, entry.kind, entry.value.to_vec())
    }

    #[test]
    fn a_huge_key_length_is_malformed_not_an_overflow() {
        // Found by the lsm_blocks fuzz target: shared 0, unshared ~2^63, then one restart at 0.
        let mut bytes = vec![
            0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x00,
        ];
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        let block = Block::decode(&bytes).unwrap();
        assert!(block.find(b"k", u64::MAX, &mut Vec::new()).is_err());
        assert!(block.iter().next().unwrap().is_err());
    }

    proptest! {
        #[test]
        fn round_trips(entries in sorted_entries()) {
            let bytes = build(&entries);
            let block = Block::decode(&bytes).unwrap();
            let back: Vec<Owned> = block.iter().map(|e| owned(e.unwrap())).collect();
            prop_assert_eq!(&back, &entries);
            let mut flat = Entries::new();
            block.decode_into(&mut flat).unwrap();
            let flat: Vec<Owned> = flat
                .iter()
                .map(|e| {
                    let kind = if e.value.is_some() { Kind::Value } else { Kind::Tombstone };
                    (e.key.to_vec(), e.sequence, kind, e.value.unwrap_or_default().to_vec())
                })
                .collect();
            // A tombstone's value bytes, if any, are not an entry's value.
            let expected: Vec<Owned> = entries
                .into_iter()
                .map(|(k, s, kind, v)| (k, s, kind, if kind == Kind::Value { v } else { Vec::new() }))
                .collect();
            prop_assert_eq!(flat, expected);
        }

        #[test]
        fn seek_finds_the_first_entry_at_or_after_a_key(entries in sorted_entries(), probe in proptest::collection::vec(0u8..4, 0..12)) {
            let bytes = build(&entries);
            let block = Block::decode(&bytes).unwrap();
            let got: Vec<Owned> = block.seek(&probe).map(|e| owned(e.unwrap())).collect();
            let want: Vec<Owned> = entries.iter().filter(|e| e.0 >= probe).cloned().collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn damage_in_a_sealed_grid_block_is_detected(entries in sorted_entries(), at in any::<usize>(), bit in 0u8..8) {
            use crate::lsm::grid::{open, seal, BlockKind, HEADER_SIZE};
            let bytes = build(&entries);
            let mut sealed = vec![0u8; (bytes.len() + HEADER_SIZE).next_multiple_of(512)];
            let reference = seal(&mut sealed, BlockKind::Data, 3, &bytes);
            let at = at % (HEADER_SIZE + bytes.len());
            sealed[at] ^= 1 << bit;
            prop_assert!(open(&sealed, BlockKind::Data, reference).is_err());
        }

        #[test]
        fn find_agrees_with_a_scan(entries in sorted_entries(), probe in proptest::collection::vec(0u8..4, 0..12), snapshot in any::<u32>()) {
            let bytes = build(&entries);
            let block = Block::decode(&bytes).unwrap();
            let mut scratch = Vec::new();
            let found = block.find(&probe, snapshot as u64, &mut scratch).unwrap();
            let opened = Block::open(&bytes).unwrap();
            prop_assert_eq!(opened.find(&probe, snapshot as u64, &mut scratch).unwrap(), found);
            let versions: Vec<&Owned> = entries.iter().filter(|e| e.0 == probe).collect();
            let visible = versions.iter().find(|e| e.1 <= snapshot as u64);
            let last_is_probe = entries.last().is_some_and(|e| e.0 == probe);
            let expected = match visible {
                Some(e) => Find::Version { sequence: e.1, kind: e.2, value: &e.3 },
                None if last_is_probe => Find::Continue,
                None => Find::Absent,
            };
            prop_assert_eq!(found, expected);
        }

        #[test]
        fn chunks_from_a_restart_point_are_the_block_from_there(entries in sorted_entries(), probe in proptest::collection::vec(0u8..4, 0..12), intervals in 1usize..4) {
            let bytes = build(&entries);
            let block = Block::decode(&bytes).unwrap();
            let mut whole = Entries::new();
            block.decode_into(&mut whole).unwrap();
            let from = block.restart_for(&probe).unwrap();
            let mut chunked = Entries::new();
            let mut next = Some(from);
            while let Some(at) = next {
                next = block.decode_intervals(at, intervals, &mut chunked).unwrap();
            }
            // Everything at or after the probe is there, and the chunks are a suffix of the block.
            let skipped = whole.len() - chunked.len();
            for (a, b) in whole.iter().skip(skipped).zip(chunked.iter()) {
                prop_assert_eq!((a.key, a.sequence), (b.key, b.sequence));
            }
            prop_assert!(whole.iter().take(skipped).all(|e| e.key < probe.as_slice()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(block) = Block::decode(&bytes) {
                for entry in block.iter() {
                    let _ = entry;
                }
                let _ = block.seek(b"k").count();
                let _ = block.decode_into(&mut Entries::new());
                let _ = block.find(b"k", u64::MAX, &mut Vec::new());
            }
            // Opened unverified, as the point-read path opens cached blocks: wrong answers are
            // allowed on such bytes, panics are not.
            if let Ok(block) = Block::open(&bytes) {
                let _ = block.find(b"k", u64::MAX, &mut Vec::new());
                let _ = block.find(b"", 0, &mut Vec::new());
            }
        }
    }

    #[test]
    fn prefixes_are_shared_between_restarts() {
        let entries: Vec<Owned> = (0..100u32)
            .map(|i| {
                (
                    format!("user:{i:08}").into_bytes(),
                    1,
                    Kind::Value,
                    b"v".to_vec(),
                )
            })
            .collect();
        let bytes = build(&entries);
        let raw: usize = entries.iter().map(|e| e.0.len() + 1).sum();
        assert!(bytes.len() < raw, "compressed {} < raw {raw}", bytes.len());
    }
}
