//! Decoders of the LSM's on-disk structures on arbitrary bytes: a data block (iteration, seek,
//! point lookup, flat decoding), a sealed grid block, a table's metadata, a bloom filter, a free set,
//! a manifest root and a manifest chunk. None may panic, and a data block that decodes must iterate
//! in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ziggy_core::lsm::block::{Block, Kind};
use ziggy_core::lsm::entries::Entries;
use ziggy_core::lsm::bloom::Bloom;
use ziggy_core::lsm::grid::{self, BlockKind, BlockRef, FreeSet};
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
});
