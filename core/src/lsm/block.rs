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
    restarts: Vec<u32>,
}

impl<'a> Block<'a> {
    /// Verifies and opens a block. Never panics.
    pub fn decode(bytes: &'a [u8]) -> Result<Block<'a>, BlockError> {
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
        let restarts: Vec<u32> = offsets
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let sorted = restarts.windows(2).all(|w| w[0] < w[1]);
        let in_bounds = restarts
            .iter()
            .all(|&r| (r as usize) < entries.len().max(1));
        if !sorted || !in_bounds || (restarts.is_empty() != entries.is_empty()) {
            return Err(BlockError::Malformed);
        }
        if restarts.first().is_some_and(|&r| r != 0) {
            return Err(BlockError::Malformed);
        }
        Ok(Block { entries, restarts })
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
        let mut high = self.restarts.len();
        while low + 1 < high {
            let mid = (low + high) / 2;
            let mut probe = BlockIter {
                entries: self.entries,
                at: self.restarts[mid] as usize,
                key: Vec::new(),
                failed: false,
            };
            match probe.next() {
                Some(Ok(entry)) if entry.key.as_slice() < key => low = mid,
                _ => high = mid,
            }
        }
        let start = self.restarts.get(low).copied().unwrap_or(0) as usize;
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
        Ok(Entry {
            key: self.key.clone(),
            sequence,
            kind,
            value,
        })
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

    proptest! {
        #[test]
        fn round_trips(entries in sorted_entries()) {
            let bytes = build(&entries);
            let block = Block::decode(&bytes).unwrap();
            let back: Vec<Owned> = block.iter().map(|e| owned(e.unwrap())).collect();
            prop_assert_eq!(back, entries);
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
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(block) = Block::decode(&bytes) {
                for entry in block.iter() {
                    let _ = entry;
                }
                let _ = block.seek(b"k").count();
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
