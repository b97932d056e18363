//! Decoders of the LSM's on-disk structures on arbitrary bytes: a data block (iteration, seek,
//! point lookup, flat decoding), a sealed grid block, a table's metadata, a bloom filter, a free set,
//! a manifest root and a manifest chunk. None may panic, and a data block that decodes must iterate
//! in order. Then state sync's walk over a grid of sealed blocks with arbitrary payloads (its
//! chain links, roots, chunks, free sets and table indexes): it never panics, and it never writes
//! a block that does not open against the reference it wanted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ziggy_core::lsm::block::{Block, Kind};
use ziggy_core::lsm::entries::Entries;
use ziggy_core::lsm::bloom::Bloom;
use ziggy_core::lsm::grid::{self, BlockKind, BlockRef, BlockStore, FreeSet, MemoryStore};
use ziggy_core::lsm::sync::Walk;
use ziggy_core::lsm::manifest::{self, Root};
use ziggy_core::lsm::table::{Reader, TableMeta};

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode(data) {
        let mut previous: Option<(Vec<u8>, u64)> = None;
        for entry in block.iter() {
            let Ok(entry) = entry else { break };
            previous = Some((entry.key.clone(), entry.sequence));
        }
        // The merge path's decoder agrees with the iterator wherever the iterator succeeds.
        let mut flat = Entries::new();
        if block.decode_into(&mut flat).is_ok() {
            let iterated: Vec<_> = block.iter().map(|e| e.unwrap()).collect();
            assert_eq!(iterated.len(), flat.len());
            for (a, b) in iterated.iter().zip(flat.iter()) {
                assert_eq!((a.key.as_slice(), a.sequence), (b.key, b.sequence));
                assert_eq!(b.value.is_some(), a.kind == Kind::Value);
            }
        }
        let probe = previous.map(|(k, _)| k).unwrap_or_default();
        let _ = block.seek(&probe).count();
        let _ = block.find(&probe, u64::MAX, &mut Vec::new());
        let _ = block.find(b"", 0, &mut Vec::new());
    }
    // The point-read path opens cached blocks without re-verifying them: never a panic either.
    if let Ok(block) = Block::open(data) {
        let _ = block.find(b"k", u64::MAX, &mut Vec::new());
        let _ = block.find(b"", 0, &mut Vec::new());
    }
    let reference = BlockRef {
        address: 7,
        checksum: data.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap())),
    };
    let _ = grid::open(data, BlockKind::Data, reference);
    let _ = TableMeta::decode(&mut Reader::new(data));
    let _ = Bloom::decode(data).map(|b| b.may_contain(data));
    let _ = FreeSet::decode(data);
    if let Ok(root) = Root::decode(data, 7) {
        // A root's chunk entries then check chunk bodies (the same bytes, arbitrary here).
        for chunk in root.chunks.iter().flatten() {
            let _ = manifest::decode_tables(data, chunk);
        }
    }
    walk(data);
});

/// Seals slices of `data` as the grid's blocks (their kinds taken from the data too) and walks
/// from block 0 as a manifest root, answering each want with the block the data holds there.
fn walk(data: &[u8]) {
    const BLOCK: usize = 512;
    const BLOCKS: u64 = 16;
    let kinds = [BlockKind::Manifest, BlockKind::Index, BlockKind::Filter, BlockKind::Data];
    let payload = grid::payload_size(BLOCK);
    let mut store = MemoryStore::new(BLOCK, BLOCKS, BLOCKS);
    let mut source = MemoryStore::new(BLOCK, BLOCKS, BLOCKS);
    let mut block = vec![0u8; BLOCK];
    let mut root = None;
    for (address, chunk) in data.chunks(payload).take(BLOCKS as usize).enumerate() {
        let kind = kinds[chunk.first().map_or(0, |b| *b as usize % 4)];
        let kind = if address == 0 { BlockKind::Manifest } else { kind };
        let reference = grid::seal(&mut block, kind, address as u64, chunk);
        root.get_or_insert(reference);
        source.write_block(address as u64, &block).unwrap();
        // Half the blocks are already in the local grid, half must be fetched.
        if address % 2 == 0 {
            store.write_block(address as u64, &block).unwrap();
        }
    }
    let mut walk = Walk::new(root, 3);
    let mut wants = Vec::new();
    for _ in 0..64 {
        wants.clear();
        match walk.poll(&mut store, &mut wants, 8) {
            Ok(true) | Err(_) => return,
            Ok(false) if wants.is_empty() => return,
            Ok(false) => {}
        }
        for &want in &wants {
            let address = want.reference.address;
            if address >= BLOCKS {
                continue;
            }
            source.read_block(address, &mut block).unwrap();
            let writes = store.counters.writes;
            let taken = walk.arrived(&mut store, want, &block).unwrap_or(false);
            let opens = grid::open(&block, want.kind, want.reference).is_ok();
            assert_eq!(taken, opens, "a block is taken exactly when it is the one wanted");
            assert_eq!(store.counters.writes, writes + taken as u64);
        }
    }
}
