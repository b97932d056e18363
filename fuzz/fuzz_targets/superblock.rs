//! Superblock decoding and copy selection on arbitrary bytes: never panics, and whatever it
//! selects re-encodes to the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ziggy_core::superblock::{select, Superblock};
use ziggy_core::{Config, Layout, Zone};

fuzz_target!(|data: &[u8]| {
    let layout = Layout::new(&Config::test());
    let size = layout.zone_size(Zone::Superblock) as usize;
    let mut zone = data.to_vec();
    zone.resize(size, 0);
    if let Some(selection) = select(&layout, &zone) {
        let copy_size = layout.superblock_copy_size as usize;
        let chosen = (0..layout.superblock_copies as u16)
            .find(|c| !selection.stale_copies.contains(c))
            .expect("a selected version lives in some copy");
        let mut sector = vec![0u8; copy_size];
        selection.superblock.encode(chosen, &mut sector);
        let at = chosen as usize * copy_size;
        assert_eq!(&zone[at..at + copy_size], &sector[..], "decode/encode round trip");
    }
    for copy in 0..4 {
        let _ = Superblock::decode(copy, data);
    }
});
