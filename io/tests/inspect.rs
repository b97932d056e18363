//! `ziggy inspect --verify` on a data file a server wrote: clean, it finds nothing; a byte
//! flipped in a grid block (its payload, or the zero padding after it) or in a WAL entry is
//! found and named.

use std::os::unix::fs::FileExt;
use std::path::Path;

use redis::Commands;
use ziggy_io::inspect::inspect;

mod common;
use common::Server;

/// The offset and address of the first LSM grid block holding anything, and its payload size.
fn first_written_block(path: &Path) -> (u64, u64, usize) {
    let layout = ziggy_core::Layout::new(&ziggy_core::Config::production());
    let file = std::fs::File::open(path).unwrap();
    let start = layout.total_size().next_multiple_of(layout.grid_block_size);
    let blocks = (file.metadata().unwrap().len() - start) / layout.grid_block_size;
    let mut block = vec![0u8; layout.grid_block_size as usize];
    for address in 0..blocks {
        let offset = start + address * layout.grid_block_size;
        file.read_exact_at(&mut block, offset).unwrap();
        if block.iter().any(|&b| b != 0) {
            let size = u32::from_le_bytes(block[8..12].try_into().unwrap()) as usize;
            return (offset, address, size);
        }
    }
    panic!("the grid is empty");
}

fn flip(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], offset).unwrap();
}

#[test]
fn verify_names_a_flipped_byte_in_a_grid_block_or_a_wal_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.data");
    let server = Server::start(&path);
    let mut c = server.connect();
    // More entries than the WAL's 1,024 slots: the ring wraps, so checkpoints write the grid.
    for i in 0..2500 {
        let _: () = c.set(format!("key:{i}"), format!("value {i}")).unwrap();
    }
    let _: i64 = c.sadd("set", &["a", "b", "c"]).unwrap();
    drop(c);
    server.stop();

    let clean = inspect(&path, true, |_| {}).unwrap();
    assert_eq!(clean.damage, Vec::<String>::new(), "{}", clean.text);
    assert!(
        clean.text.contains("superblock: sequence"),
        "{}",
        clean.text
    );
    assert!(
        clean
            .text
            .contains("entries ring: 1024 entries verified, 0 faulty"),
        "{}",
        clean.text
    );
    assert!(
        !clean.text.contains(" 0 data,"),
        "data blocks written: {}",
        clean.text
    );
    // The checkpoint's tree, opened from the file: its tables by level, and the free space.
    let tables = clean
        .text
        .lines()
        .find_map(|l| l.strip_prefix("manifest: "))
        .and_then(|l| l.split(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no manifest line: {}", clean.text));
    assert!(tables > 0, "{}", clean.text);
    assert!(clean.text.contains("  level 0: "), "{}", clean.text);
    assert!(clean.text.contains("free space: "), "{}", clean.text);

    let (offset, address, size) = first_written_block(&path);
    flip(&path, offset + 32 + size as u64 / 2); // inside the payload
    let found = inspect(&path, true, |_| {}).unwrap();
    assert_eq!(
        found.damage,
        vec![format!(
            "grid block {address} at offset {offset}: checksum mismatch"
        )]
    );
    flip(&path, offset + 32 + size as u64 / 2); // mended
    flip(&path, offset + 32 + size as u64 + 7); // in the padding, which no checksum covers
    let found = inspect(&path, true, |_| {}).unwrap();
    assert_eq!(
        found.damage,
        vec![format!(
            "grid block {address} at offset {offset}: bytes after the payload are not zero"
        )]
    );
    flip(&path, offset + 32 + size as u64 + 7);

    let layout = ziggy_core::Layout::new(&ziggy_core::Config::production());
    let entry = layout.entry_offset(5);
    flip(&path, entry + 128 + 3); // a byte of entry slot 5's body
    let found = inspect(&path, true, |_| {}).unwrap();
    assert_eq!(found.damage.len(), 1, "{:?}", found.damage);
    assert!(
        found.damage[0].starts_with(&format!("wal entry slot 5 at offset {entry}: entry ")),
        "{:?}",
        found.damage
    );
    // Without --verify nothing is read beyond the superblock and the headers ring.
    assert!(inspect(&path, false, |_| {}).unwrap().damage.is_empty());
    // Not a data file at all: a clear error.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![7u8; 1 << 20]).unwrap();
    let error = inspect(&junk, true, |_| {})
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("not a ZiggyDB data file"), "{error}");
}
