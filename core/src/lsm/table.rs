//! Immutable sorted tables in grid blocks.
//!
//! A table is a run of data blocks (one [`super::block`] per grid block), an index (the last key
//! and the reference of every data block) and a bloom filter over its keys, both spread over as
//! many grid blocks as they need. Its [`TableMeta`] — key range, sequence range, counts and the
//! references of its index and filter blocks — lives in the manifest. A table's index and filter
//! are loaded on first use and kept in memory, so a point read costs at most one data block read
//! per table whose filter admits the key.

use super::block::{BlockBuilder, Kind};
use super::bloom::{self, Bloom};
use super::entries::EntryRef;
use super::grid::{self, BlockKind, BlockRef, BlockStore, FreeSet, GridError};
use super::varint;

/// Room a data block keeps for one entry's framing (three varints, sequence, kind, restart).
const ENTRY_FRAMING: usize = 48;

/// The largest `key.len() + value.len()` a data block of `block_size` holds.
pub fn max_entry_size(block_size: usize) -> usize {
    grid::payload_size(block_size) - ENTRY_FRAMING - 16
}

/// A table as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMeta {
    pub id: u64,
    pub min_key: Vec<u8>,
    pub max_key: Vec<u8>,
    pub min_sequence: u64,
    pub max_sequence: u64,
    pub entries: u64,
    pub data_blocks: u64,
    /// Bytes of encoded entries (the table's logical size).
    pub bytes: u64,
    pub index: Vec<BlockRef>,
    pub filter: Vec<BlockRef>,
}

impl TableMeta {
    /// Blocks the table occupies in the grid.
    pub fn blocks(&self) -> u64 {
        self.data_blocks + self.index.len() as u64 + self.filter.len() as u64
    }

    pub fn overlaps(&self, min: &[u8], max: &[u8]) -> bool {
        self.min_key.as_slice() <= max && min <= self.max_key.as_slice()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.overlaps(key, key)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        varint::encode(self.id, out);
        encode_bytes(&self.min_key, out);
        encode_bytes(&self.max_key, out);
        for n in [
            self.min_sequence,
            self.max_sequence,
            self.entries,
            self.data_blocks,
            self.bytes,
        ] {
            varint::encode(n, out);
        }
        for refs in [&self.index, &self.filter] {
            varint::encode(refs.len() as u64, out);
            refs.iter().for_each(|r| r.encode(out));
        }
    }

    pub fn decode(reader: &mut Reader) -> Option<TableMeta> {
        let id = reader.varint()?;
        let min_key = reader.bytes()?.to_vec();
        let max_key = reader.bytes()?.to_vec();
        let mut numbers = [0u64; 5];
        for n in &mut numbers {
            *n = reader.varint()?;
        }
        let [min_sequence, max_sequence, entries, data_blocks, bytes] = numbers;
        let index = reader.refs()?;
        let filter = reader.refs()?;
        (min_key <= max_key && min_sequence <= max_sequence && !index.is_empty()).then_some(
            TableMeta {
                id,
                min_key,
                max_key,
                min_sequence,
                max_sequence,
                entries,
                data_blocks,
                bytes,
                index,
                filter,
            },
        )
    }
}

fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    varint::encode(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A bounds-checked reader of varint encodings; every method returns None past the end.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// The bytes not yet read.
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }

    pub fn varint(&mut self) -> Option<u64> {
        let (value, taken) = varint::decode(self.bytes.get(self.at..)?).ok()?;
        self.at += taken;
        Some(value)
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.take(n)
    }

    pub fn block_ref(&mut self) -> Option<BlockRef> {
        BlockRef::decode(self.take(BlockRef::ENCODED_SIZE)?)
    }

    pub fn refs(&mut self) -> Option<Vec<BlockRef>> {
        let n = usize::try_from(self.varint()?).ok()?;
        if n > self.bytes.len() / BlockRef::ENCODED_SIZE {
            return None;
        }
        (0..n).map(|_| self.block_ref()).collect()
    }
}

/// One data block as the index names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The last key in the block.
    pub last_key: Vec<u8>,
    pub block: BlockRef,
}

/// The first 16 bytes of `key`, zero-padded, big-endian: `key_prefix(a) < key_prefix(b)`
/// implies `a < b`, so a search compares these integers and reads keys only where they tie.
pub fn key_prefix(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(bytes)
}

/// Whether `(prefix, key)` of a stored key orders before the probe `(probe_prefix, probe)`.
#[inline]
pub fn key_below(prefix: u128, key: &[u8], probe_prefix: u128, probe: &[u8]) -> bool {
    prefix < probe_prefix || (prefix == probe_prefix && key < probe)
}

/// A table's index and filter, loaded.
pub struct Loaded {
    pub index: Vec<IndexEntry>,
    /// `key_prefix` of each index entry's last key (searched first: no pointer chasing).
    prefixes: Vec<u128>,
    pub filter: Bloom,
}

impl Loaded {
    pub fn new(index: Vec<IndexEntry>, filter: Bloom) -> Loaded {
        let prefixes = index.iter().map(|e| key_prefix(&e.last_key)).collect();
        Loaded {
            index,
            prefixes,
            filter,
        }
    }

    /// The first data block that may hold `key`: the first whose last key is ≥ `key`.
    pub fn block_for(&self, key: &[u8]) -> usize {
        let probe = key_prefix(key);
        let (mut low, mut high) = (0, self.index.len());
        while low < high {
            let mid = (low + high) / 2;
            if key_below(self.prefixes[mid], &self.index[mid].last_key, probe, key) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    /// Every block address the table owns (data, then the given index and filter blocks).
    pub fn addresses(&self, meta: &TableMeta) -> Vec<u64> {
        let data = self.index.iter().map(|e| e.block.address);
        let rest = meta.index.iter().chain(&meta.filter).map(|r| r.address);
        data.chain(rest).collect()
    }

    pub fn load(
        store: &mut dyn BlockStore,
        meta: &TableMeta,
        scratch: &mut Vec<u8>,
    ) -> Result<Loaded, GridError> {
        let corrupt = |refs: &[BlockRef], kind| GridError::Corrupt {
            address: refs[0].address,
            kind,
        };
        let bytes = grid::read_blob(store, BlockKind::Index, &meta.index, scratch)?;
        let index = decode_index(&bytes).ok_or_else(|| corrupt(&meta.index, BlockKind::Index))?;
        let filter = if meta.filter.is_empty() {
            Bloom::new(0, 1)
        } else {
            let bytes = grid::read_blob(store, BlockKind::Filter, &meta.filter, scratch)?;
            Bloom::decode(&bytes).ok_or_else(|| corrupt(&meta.filter, BlockKind::Filter))?
        };
        if index.len() as u64 != meta.data_blocks {
            return Err(corrupt(&meta.index, BlockKind::Index));
        }
        Ok(Loaded::new(index, filter))
    }
}

/// Decodes a table's index blob (the data blocks' last keys and references).
pub fn decode_index(bytes: &[u8]) -> Option<Vec<IndexEntry>> {
    let mut reader = Reader::new(bytes);
    let n = usize::try_from(reader.varint()?).ok()?;
    if n > bytes.len() {
        return None;
    }
    let mut index = Vec::with_capacity(n);
    for _ in 0..n {
        let last_key = reader.bytes()?.to_vec();
        let block = reader.block_ref()?;
        index.push(IndexEntry { last_key, block });
    }
    reader.is_done().then_some(index)
}

/// Writes one table, block by block, as its sorted entries arrive.
pub struct TableBuilder {
    id: u64,
    bits_per_key: u32,
    block: BlockBuilder,
    encoded: Vec<u8>,
    sealed: Vec<u8>,
    index: Vec<IndexEntry>,
    key_hashes: Vec<u64>,
    last_key: Vec<u8>,
    min_key: Option<Vec<u8>>,
    min_sequence: u64,
    max_sequence: u64,
    entries: u64,
    bytes: u64,
    /// Every block written so far: free again if the table is abandoned.
    pub written: Vec<u64>,
}

impl TableBuilder {
    pub fn new(id: u64, bits_per_key: u32) -> TableBuilder {
        TableBuilder {
            id,
            bits_per_key,
            block: BlockBuilder::new(),
            encoded: Vec::new(),
            sealed: Vec::new(),
            index: Vec::new(),
            key_hashes: Vec::new(),
            last_key: Vec::new(),
            min_key: None,
            min_sequence: u64::MAX,
            max_sequence: 0,
            entries: 0,
            bytes: 0,
            written: Vec::new(),
        }
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Data blocks finished so far.
    pub fn data_blocks(&self) -> u64 {
        self.index.len() as u64
    }

    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Adds the next entry (in tree order).
    pub fn add(
        &mut self,
        store: &mut dyn BlockStore,
        free: &mut FreeSet,
        entry: EntryRef,
    ) -> Result<(), GridError> {
        let size = entry.size();
        assert!(
            size <= max_entry_size(store.block_size()),
            "entry fits a block"
        );
        let payload = grid::payload_size(store.block_size());
        if !self.block.is_empty() && self.block.size() + size + ENTRY_FRAMING > payload {
            self.finish_block(store, free)?;
        }
        let (kind, value) = match entry.value {
            Some(v) => (Kind::Value, v),
            None => (Kind::Tombstone, &[][..]),
        };
        self.block.add(entry.key, entry.sequence, kind, value);
        if self.entries == 0 || self.last_key != entry.key {
            self.key_hashes.push(bloom::hash(entry.key));
        }
        if self.min_key.is_none() {
            self.min_key = Some(entry.key.to_vec());
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(entry.key);
        self.min_sequence = self.min_sequence.min(entry.sequence);
        self.max_sequence = self.max_sequence.max(entry.sequence);
        self.entries += 1;
        self.bytes += size as u64;
        Ok(())
    }

    fn finish_block(
        &mut self,
        store: &mut dyn BlockStore,
        free: &mut FreeSet,
    ) -> Result<(), GridError> {
        self.block.finish(&mut self.encoded);
        self.sealed.resize(store.block_size(), 0);
        let address = free.acquire(store)?;
        self.written.push(address);
        let block = grid::seal(&mut self.sealed, BlockKind::Data, address, &self.encoded);
        store
            .write_block(address, &self.sealed)
            .map_err(GridError::Write)?;
        self.index.push(IndexEntry {
            last_key: self.last_key.clone(),
            block,
        });
        Ok(())
    }

    /// Writes the last data block, the index and the filter.
    pub fn finish(
        mut self,
        store: &mut dyn BlockStore,
        free: &mut FreeSet,
    ) -> Result<(TableMeta, Loaded), GridError> {
        assert!(self.entries > 0, "a table holds at least one entry");
        if !self.block.is_empty() {
            self.finish_block(store, free)?;
        }
        let mut bytes = Vec::new();
        varint::encode(self.index.len() as u64, &mut bytes);
        for entry in &self.index {
            encode_bytes(&entry.last_key, &mut bytes);
            entry.block.encode(&mut bytes);
        }
        let index = grid::write_blob(store, free, BlockKind::Index, &bytes, &mut self.sealed)?;
        let mut filter = Bloom::new(self.key_hashes.len(), self.bits_per_key);
        self.key_hashes.iter().for_each(|&h| filter.insert_hash(h));
        bytes.clear();
        filter.encode(&mut bytes);
        let filter_refs =
            grid::write_blob(store, free, BlockKind::Filter, &bytes, &mut self.sealed)?;
        let meta = TableMeta {
            id: self.id,
            min_key: self.min_key.take().expect("entries > 0"),
            max_key: std::mem::take(&mut self.last_key),
            min_sequence: self.min_sequence,
            max_sequence: self.max_sequence,
            entries: self.entries,
            data_blocks: self.index.len() as u64,
            bytes: self.bytes,
            index,
            filter: filter_refs,
        };
        Ok((meta, Loaded::new(self.index, filter)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::block::Block;
    use crate::lsm::grid::MemoryStore;
    use crate::lsm::memtable::Entry;

    proptest::proptest! {
        #[test]
        fn prefix_comparison_is_key_comparison(
            a in proptest::collection::vec(0u8..3, 0..24),
            b in proptest::collection::vec(0u8..3, 0..24),
        ) {
            proptest::prop_assert_eq!(key_below(key_prefix(&a), &a, key_prefix(&b), &b), a < b);
        }
    }

    #[test]
    fn a_table_round_trips_through_its_index_and_filter() {
        let mut store = MemoryStore::new(512, 16, 10_000);
        let mut free = FreeSet::new(16);
        let mut builder = TableBuilder::new(9, 10);
        let mut expected = Vec::new();
        for i in 0..500u32 {
            let entry = Entry {
                key: format!("key{i:05}").into_bytes(),
                sequence: 1000 - i as u64,
                value: (i % 7 != 0).then(|| vec![i as u8; (i % 40) as usize]),
            };
            builder
                .add(&mut store, &mut free, EntryRef::of(&entry))
                .unwrap();
            expected.push(entry);
        }
        let written = builder.written.clone();
        let (meta, loaded) = builder.finish(&mut store, &mut free).unwrap();
        assert_eq!(meta.entries, 500);
        assert!(meta.data_blocks > 10, "spread over blocks");
        assert_eq!(meta.min_key, b"key00000");
        assert_eq!(meta.max_key, b"key00499");
        assert_eq!((meta.min_sequence, meta.max_sequence), (501, 1000));
        assert!(written.len() as u64 <= meta.blocks());

        let mut encoded = Vec::new();
        meta.encode(&mut encoded);
        assert_eq!(TableMeta::decode(&mut Reader::new(&encoded)).unwrap(), meta);

        let mut scratch = Vec::new();
        let reloaded = Loaded::load(&mut store, &meta, &mut scratch).unwrap();
        assert_eq!(reloaded.index, loaded.index);
        let mut all = Vec::new();
        for e in &reloaded.index {
            let len =
                grid::read_verified(&mut store, BlockKind::Data, e.block, &mut scratch).unwrap();
            let payload = scratch[grid::HEADER_SIZE..grid::HEADER_SIZE + len].to_vec();
            let block = Block::decode(&payload).unwrap();
            for entry in block.iter() {
                let entry = entry.unwrap();
                all.push(Entry {
                    key: entry.key.clone(),
                    sequence: entry.sequence,
                    value: (entry.kind == Kind::Value).then(|| entry.value.to_vec()),
                });
            }
            assert_eq!(all.last().unwrap().key, e.last_key);
        }
        assert_eq!(all, expected);
        for e in &expected {
            assert!(reloaded.filter.may_contain(&e.key));
            assert!(reloaded.block_for(&e.key) < reloaded.index.len());
        }
        assert_eq!(reloaded.block_for(b"zzz"), reloaded.index.len());
        for probe in [
            &b""[..],
            b"key",
            b"key00250",
            b"key002505",
            b"key00499",
            b"kez",
        ] {
            let plain = reloaded
                .index
                .partition_point(|e| e.last_key.as_slice() < probe);
            assert_eq!(reloaded.block_for(probe), plain, "{probe:?}");
        }
    }
}
