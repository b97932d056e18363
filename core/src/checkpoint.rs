//! The simple checkpoint of the foundation: the whole state machine and the client table, encoded
//! as one blob, spread over grid blocks in one of two halves of the grid.
//!
//! Checkpoints alternate between the halves, so the previous checkpoint stays intact until the
//! superblock switch makes the new one current. (The storage-engine issue replaces this with the
//! LSM's incremental checkpoint.)
//!
//! Grid block layout: checksum (u32, crc32c of bytes 4 .. 32 + size), size (u32), address (u64),
//! the checkpoint's index (u64, so a block left by an older checkpoint is told apart), reserved (u64), then `size` bytes of the blob.

use crate::checksum::checksum;
use crate::config::Layout;

pub const BLOCK_HEADER_SIZE: usize = 32;

/// The blocks of grid half `area`: `(first address, count)`.
pub fn area_blocks(layout: &Layout, area: u8) -> (u64, u64) {
    let half = layout.grid_block_count / 2;
    (area as u64 * half, half)
}

/// The largest blob one half of the grid holds.
pub fn area_capacity(layout: &Layout) -> u64 {
    (layout.grid_block_count / 2) * (layout.grid_block_size - BLOCK_HEADER_SIZE as u64)
}

/// How many blocks a blob of `size` bytes takes.
pub fn blocks_for(layout: &Layout, size: u64) -> u64 {
    size.div_ceil(layout.grid_block_size - BLOCK_HEADER_SIZE as u64)
}

/// Encodes block `n` of `blob` (for address `address`) into `block`.
pub fn encode_block(
    layout: &Layout,
    blob: &[u8],
    n: u64,
    address: u64,
    tag: u64,
    block: &mut [u8],
) {
    let payload = (layout.grid_block_size as usize) - BLOCK_HEADER_SIZE;
    let start = n as usize * payload;
    let end = (start + payload).min(blob.len());
    let size = end - start;
    block.fill(0);
    block[4..8].copy_from_slice(&(size as u32).to_le_bytes());
    block[8..16].copy_from_slice(&address.to_le_bytes());
    block[16..24].copy_from_slice(&tag.to_le_bytes());
    block[BLOCK_HEADER_SIZE..BLOCK_HEADER_SIZE + size].copy_from_slice(&blob[start..end]);
    let sum = checksum(&block[4..BLOCK_HEADER_SIZE + size]);
    block[0..4].copy_from_slice(&sum.to_le_bytes());
}

/// Verifies a block and returns its payload; None names a corrupt or misplaced block.
pub fn decode_block(block: &[u8], address: u64, tag: u64) -> Option<&[u8]> {
    if block.len() < BLOCK_HEADER_SIZE {
        return None;
    }
    let size = u32::from_le_bytes(block[4..8].try_into().unwrap()) as usize;
    let end = BLOCK_HEADER_SIZE.checked_add(size)?;
    if end > block.len() {
        return None;
    }
    let sum = u32::from_le_bytes(block[0..4].try_into().unwrap());
    let at = u64::from_le_bytes(block[8..16].try_into().unwrap());
    let seq = u64::from_le_bytes(block[16..24].try_into().unwrap());
    (sum == checksum(&block[4..end]) && at == address && seq == tag)
        .then(|| &block[BLOCK_HEADER_SIZE..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn blob_round_trips_through_blocks_and_damage_is_detected() {
        let layout = Layout::new(&Config::test());
        let blob: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let count = blocks_for(&layout, blob.len() as u64);
        let (first, _) = area_blocks(&layout, 1);
        let mut back = Vec::new();
        for n in 0..count {
            let mut block = vec![0u8; layout.grid_block_size as usize];
            encode_block(&layout, &blob, n, first + n, 9, &mut block);
            back.extend_from_slice(decode_block(&block, first + n, 9).unwrap());
            assert!(
                decode_block(&block, first + n + 1, 9).is_none(),
                "misplaced block accepted"
            );
            assert!(
                decode_block(&block, first + n, 8).is_none(),
                "stale block accepted"
            );
            block[100] ^= 4;
            assert!(
                decode_block(&block, first + n, 9).is_none(),
                "bit flip accepted"
            );
        }
        assert_eq!(back, blob);
    }
}
