//! The manifest in the grid: which tables are at which level, and which blocks are free.
//!
//! A checkpoint writes three kinds of block chains (each block links to the next):
//! - the *root*, which the checkpoint names: a header, level 0's tables (few: level 0 is
//!   bounded), and per sorted level a directory of *chunks* — runs of consecutive tables, each
//!   entry with its key range, table count, bytes and the first block of its chain;
//! - one chain per chunk, holding its tables' metadata (about two blocks' worth);
//! - the free set's chain (one bit per grid block).
//!
//! Opening reads the root alone, whose size follows the number of chunks (a few blocks for
//! 10 GB of data), so startup does not grow with the data. The engine reads a chunk when a read
//! first needs one of its tables, and the rest in the background — a chunk per write beat —
//! or at once before its first flush, compaction or checkpoint (which need every table and the
//! free set).

use super::grid::{self, BlockKind, BlockRef, BlockStore, GridError};
use super::table::{Reader, TableMeta};
use super::tree::Error;
use super::varint;

const MAGIC: u32 = 0x4D53_4C5A; // "ZLSM"
/// Version 3 added the compaction pointers; version 2 roots still open (pointers at the start).
const VERSION: u32 = 3;
const NO_NEXT: u64 = u64::MAX;

/// A run of consecutive tables of a sorted level, as the root names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub min_key: Vec<u8>,
    pub max_key: Vec<u8>,
    pub tables: u64,
    pub bytes: u64,
    pub head: BlockRef,
}

/// A chunk's encoded tables, before its chain is written.
pub struct ChunkBody {
    pub body: Vec<u8>,
    pub chunk: Chunk,
}

/// Where the free set's chain starts, and how many blocks it records as acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeRef {
    pub head: BlockRef,
    pub acquired: u64,
}

/// The manifest's root, decoded.
#[derive(Debug)]
pub struct Root {
    /// Every write up to here is in the tables.
    pub sequence: u64,
    pub next_table_id: u64,
    /// Level 0's tables, newest first.
    pub level0: Vec<TableMeta>,
    /// Per level from 1, its chunks in key order (index 0 is level 1).
    pub chunks: Vec<Vec<Chunk>>,
    pub free: FreeRef,
    /// Per level from 1, where its next compaction starts: kept, so that a reopened engine
    /// compacts as one that never stopped.
    pub pointers: Vec<Vec<u8>>,
}

impl Root {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&self.next_table_id.to_le_bytes());
        out.push(u8::try_from(self.chunks.len() + 1).expect("levels fit a byte"));
        self.free.head.encode(out);
        out.extend_from_slice(&self.free.acquired.to_le_bytes());
        varint::encode(self.level0.len() as u64, out);
        for meta in &self.level0 {
            meta.encode(out);
        }
        for level in &self.chunks {
            varint::encode(level.len() as u64, out);
            for chunk in level {
                chunk.head.encode(out);
                varint::encode(chunk.tables, out);
                varint::encode(chunk.bytes, out);
                varint::encode(chunk.min_key.len() as u64, out);
                out.extend_from_slice(&chunk.min_key);
                varint::encode(chunk.max_key.len() as u64, out);
                out.extend_from_slice(&chunk.max_key);
            }
        }
        assert_eq!(
            self.pointers.len(),
            self.chunks.len(),
            "a pointer per level"
        );
        for pointer in &self.pointers {
            varint::encode(pointer.len() as u64, out);
            out.extend_from_slice(pointer);
        }
    }

    /// Decodes a root of a tree with `levels` levels; checks that each level's chunks are sorted
    /// and disjoint (the tables inside are checked when a chunk is read).
    pub fn decode(body: &[u8], levels: usize) -> Result<Root, Error> {
        let bad = || Error::Manifest("malformed root");
        let mut r = Reader::new(body);
        let u32_at = |r: &mut Reader| Some(u32::from_le_bytes(r.take(4)?.try_into().ok()?));
        let u64_at = |r: &mut Reader| Some(u64::from_le_bytes(r.take(8)?.try_into().ok()?));
        if u32_at(&mut r) != Some(MAGIC) {
            return Err(Error::Manifest("not a manifest"));
        }
        let version = u32_at(&mut r).ok_or_else(bad)?;
        if version != 2 && version != VERSION {
            return Err(Error::Manifest("not a manifest of this version"));
        }
        let sequence = u64_at(&mut r).ok_or_else(bad)?;
        let next_table_id = u64_at(&mut r).ok_or_else(bad)?;
        if r.take(1).ok_or_else(bad)?[0] as usize != levels {
            return Err(Error::Manifest("level count differs from the options"));
        }
        let free = FreeRef {
            head: r.block_ref().ok_or_else(bad)?,
            acquired: u64_at(&mut r).ok_or_else(bad)?,
        };
        let count = r.varint().ok_or_else(bad)?;
        let level0 = (0..count)
            .map(|_| TableMeta::decode(&mut r).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()?;
        let mut chunks = Vec::with_capacity(levels - 1);
        for _ in 1..levels {
            let count = r.varint().ok_or_else(bad)?;
            let level = (0..count)
                .map(|_| decode_chunk(&mut r).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?;
            let sorted = level.windows(2).all(|w| w[0].max_key < w[1].min_key);
            if !sorted {
                return Err(Error::Manifest("a level's chunks overlap"));
            }
            chunks.push(level);
        }
        let pointers = if version == 2 {
            vec![Vec::new(); levels - 1]
        } else {
            (1..levels)
                .map(|_| r.bytes().map(<[u8]>::to_vec).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?
        };
        if !r.is_done() {
            return Err(bad());
        }
        Ok(Root {
            sequence,
            next_table_id,
            level0,
            chunks,
            free,
            pointers,
        })
    }
}

fn decode_chunk(r: &mut Reader) -> Option<Chunk> {
    let head = r.block_ref()?;
    let tables = r.varint()?;
    let bytes = r.varint()?;
    let min_key = r.bytes()?.to_vec();
    let max_key = r.bytes()?.to_vec();
    (tables > 0 && min_key <= max_key).then_some(Chunk {
        min_key,
        max_key,
        tables,
        bytes,
        head,
    })
}

/// Splits a sorted level's tables into chunks of about `target` encoded bytes each (at least
/// one table per chunk).
pub fn chunk_level<'a>(
    tables: impl Iterator<Item = &'a TableMeta>,
    target: usize,
) -> Vec<ChunkBody> {
    let mut out: Vec<ChunkBody> = Vec::new();
    let mut entry = Vec::new();
    for meta in tables {
        entry.clear();
        meta.encode(&mut entry);
        let open = out
            .last()
            .is_some_and(|c| c.body.len() + entry.len() <= target);
        if !open {
            out.push(ChunkBody {
                body: Vec::with_capacity(target),
                chunk: Chunk {
                    min_key: meta.min_key.clone(),
                    max_key: Vec::new(),
                    tables: 0,
                    bytes: 0,
                    head: BlockRef {
                        address: NO_NEXT,
                        checksum: 0,
                    },
                },
            });
        }
        let last = out.last_mut().unwrap();
        last.body.extend_from_slice(&entry);
        last.chunk.max_key.clone_from(&meta.max_key);
        last.chunk.tables += 1;
        last.chunk.bytes += meta.bytes;
    }
    out
}

/// Decodes a chunk's tables and checks them against the root's entry for it.
pub fn decode_tables(body: &[u8], chunk: &Chunk) -> Result<Vec<TableMeta>, Error> {
    let bad = Error::Manifest("a chunk's tables do not match the root");
    let mut r = Reader::new(body);
    let mut tables: Vec<TableMeta> = Vec::new();
    while !r.is_done() {
        let meta = TableMeta::decode(&mut r).ok_or(Error::Manifest("malformed chunk"))?;
        if tables.last().is_some_and(|p| p.max_key >= meta.min_key) {
            return Err(bad);
        }
        tables.push(meta);
    }
    let (Some(first), Some(last)) = (tables.first(), tables.last()) else {
        return Err(bad);
    };
    let bytes: u64 = tables.iter().map(|t| t.bytes).sum();
    let matches = first.min_key == chunk.min_key
        && last.max_key == chunk.max_key
        && tables.len() as u64 == chunk.tables
        && bytes == chunk.bytes;
    if !matches {
        return Err(bad);
    }
    Ok(tables)
}

/// The payload of one chain block (the rest of it links to the next block).
fn link_payload(block_size: usize) -> usize {
    grid::payload_size(block_size) - BlockRef::ENCODED_SIZE
}

/// The encoded bytes a chunk aims at: two chain blocks (~60 tables of 16-byte keys in 4 KiB
/// blocks). Larger chunks make the root smaller (10 GB of data: ~100 chunks, a 5 KiB root) and
/// a first read after opening read more (a chunk per level).
pub fn chunk_target(block_size: usize) -> usize {
    2 * link_payload(block_size)
}

/// Blocks a chain of `len` bytes occupies.
pub fn chain_blocks(block_size: usize, len: usize) -> usize {
    len.div_ceil(link_payload(block_size)).max(1)
}

/// Writes `body` as a chain over `addresses` (exactly [`chain_blocks`] of them, already
/// acquired); returns the reference to its first block.
pub fn write_chain(
    store: &mut dyn BlockStore,
    scratch: &mut Vec<u8>,
    addresses: &[u64],
    body: &[u8],
) -> Result<BlockRef, GridError> {
    let block_size = store.block_size();
    let payload = link_payload(block_size);
    assert_eq!(addresses.len(), chain_blocks(block_size, body.len()));
    scratch.resize(block_size, 0);
    let mut next = BlockRef {
        address: NO_NEXT,
        checksum: 0,
    };
    let mut chunk = Vec::with_capacity(payload + BlockRef::ENCODED_SIZE);
    // Last block first: each block names the one after it.
    for (i, &address) in addresses.iter().enumerate().rev() {
        chunk.clear();
        next.encode(&mut chunk);
        let from = (i * payload).min(body.len());
        chunk.extend_from_slice(&body[from..(from + payload).min(body.len())]);
        next = grid::seal(scratch, BlockKind::Manifest, address, &chunk);
        store
            .write_block(address, scratch)
            .map_err(GridError::Write)?;
    }
    Ok(next)
}

/// Splits the payload of one chain block into the link to the next block (None at the chain's
/// end) and this block's share of the chain's bytes.
pub fn chain_link(payload: &[u8]) -> Option<(Option<BlockRef>, &[u8])> {
    let link = BlockRef::decode(payload)?;
    let next = (link.address != NO_NEXT).then_some(link);
    Some((next, &payload[BlockRef::ENCODED_SIZE..]))
}

/// Reads a chain written by [`write_chain`]: its bytes and the addresses of its blocks.
pub fn read_chain(
    store: &mut dyn BlockStore,
    scratch: &mut Vec<u8>,
    head: BlockRef,
) -> Result<(Vec<u8>, Vec<u64>), Error> {
    let mut body = Vec::new();
    let mut addresses = Vec::new();
    let mut next = head;
    while next.address != NO_NEXT {
        if addresses.len() as u64 > store.block_count() {
            return Err(Error::Manifest("a manifest chain loops"));
        }
        let len = grid::read_verified(store, BlockKind::Manifest, next, scratch)?;
        let payload = &scratch[grid::HEADER_SIZE..grid::HEADER_SIZE + len];
        let link = BlockRef::decode(payload).ok_or(Error::Manifest("short block"))?;
        body.extend_from_slice(&payload[BlockRef::ENCODED_SIZE..]);
        addresses.push(next.address);
        next = link;
    }
    Ok((body, addresses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::grid::{FreeSet, MemoryStore};

    fn meta(id: u64, min: &str, max: &str) -> TableMeta {
        TableMeta {
            id,
            min_key: min.as_bytes().to_vec(),
            max_key: max.as_bytes().to_vec(),
            min_sequence: 1,
            max_sequence: 2,
            entries: 3,
            data_blocks: 1,
            bytes: 100 + id,
            index: vec![BlockRef {
                address: id,
                checksum: 7,
            }],
            filter: Vec::new(),
        }
    }

    #[test]
    fn chunks_split_a_level_and_decode_back() {
        let tables: Vec<TableMeta> = (0..50)
            .map(|i| meta(i, &format!("k{i:03}a"), &format!("k{i:03}z")))
            .collect();
        let chunks = chunk_level(tables.iter(), 200);
        assert!(chunks.len() > 5, "{} chunks", chunks.len());
        let mut back = Vec::new();
        for c in &chunks {
            assert!(c.body.len() <= 200);
            back.extend(decode_tables(&c.body, &c.chunk).unwrap());
        }
        assert_eq!(back, tables);
        let mut wrong = chunks[1].chunk.clone();
        wrong.bytes += 1;
        assert!(decode_tables(&chunks[1].body, &wrong).is_err());
    }

    #[test]
    fn a_root_round_trips_and_rejects_overlapping_chunks() {
        let chunk = |min: &str, max: &str| Chunk {
            min_key: min.into(),
            max_key: max.into(),
            tables: 2,
            bytes: 9,
            head: BlockRef {
                address: 4,
                checksum: 5,
            },
        };
        let mut root = Root {
            sequence: 10,
            next_table_id: 20,
            level0: vec![meta(3, "a", "z")],
            chunks: vec![vec![chunk("a", "c"), chunk("d", "f")], Vec::new()],
            free: FreeRef {
                head: BlockRef {
                    address: 1,
                    checksum: 2,
                },
                acquired: 6,
            },
            pointers: vec![b"k7".to_vec(), Vec::new()],
        };
        let mut bytes = Vec::new();
        root.encode(&mut bytes);
        let back = Root::decode(&bytes, 3).unwrap();
        assert_eq!(back.level0, root.level0);
        assert_eq!(back.chunks, root.chunks);
        assert_eq!(back.free, root.free);
        assert_eq!(back.pointers, root.pointers);
        assert!(Root::decode(&bytes, 4).is_err());
        assert!(Root::decode(&bytes[..bytes.len() - 1], 3).is_err());
        root.chunks[0][1].min_key = b"b".to_vec();
        bytes.clear();
        root.encode(&mut bytes);
        assert!(Root::decode(&bytes, 3).is_err());
    }

    #[test]
    fn chains_round_trip_over_several_blocks() {
        let mut store = MemoryStore::new(512, 64, 1 << 10);
        let mut free = FreeSet::new(64);
        let mut scratch = Vec::new();
        for len in [0, 1, 400, 2000] {
            let body: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let addresses: Vec<u64> = (0..chain_blocks(512, len))
                .map(|_| free.acquire(&mut store).unwrap())
                .collect();
            let head = write_chain(&mut store, &mut scratch, &addresses, &body).unwrap();
            let (back, read) = read_chain(&mut store, &mut scratch, head).unwrap();
            assert_eq!(back, body);
            assert_eq!(read, addresses);
        }
    }
}
