//! The block cache: a fixed number of block-sized slots allocated once at start, replaced by the
//! CLOCK algorithm (second chance). Entries are keyed by address and verified by checksum, so a
//! block reused for another table never serves stale bytes.

use super::grid::BlockRef;
use std::collections::BTreeMap;

pub struct BlockCache {
    block_size: usize,
    memory: Vec<u8>,
    /// Per slot: the block it holds and its payload length.
    slots: Vec<Option<(BlockRef, usize)>>,
    referenced: Vec<bool>,
    by_address: BTreeMap<u64, usize>,
    hand: usize,
    pub hits: u64,
    pub misses: u64,
}

impl BlockCache {
    pub fn new(block_size: usize, capacity: usize) -> BlockCache {
        BlockCache {
            block_size,
            memory: vec![0; block_size * capacity],
            slots: vec![None; capacity],
            referenced: vec![false; capacity],
            by_address: BTreeMap::new(),
            hand: 0,
            hits: 0,
            misses: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn slot_bytes(&self, slot: usize, len: usize) -> &[u8] {
        &self.memory[slot * self.block_size..slot * self.block_size + len]
    }

    /// The slot holding `block`, if cached.
    pub fn lookup(&mut self, block: BlockRef) -> Option<usize> {
        let slot = *self.by_address.get(&block.address)?;
        match self.slots[slot] {
            Some((cached, _)) if cached == block => {
                self.referenced[slot] = true;
                self.hits += 1;
                Some(slot)
            }
            _ => None,
        }
    }

    pub fn get(&self, slot: usize) -> &[u8] {
        let (_, len) = self.slots[slot].expect("a looked-up slot is filled");
        self.slot_bytes(slot, len)
    }

    /// Caches `payload` for `block`; returns its slot, or None when the cache has no slots.
    pub fn insert(&mut self, block: BlockRef, payload: &[u8]) -> Option<usize> {
        assert!(payload.len() <= self.block_size);
        self.misses += 1;
        if self.slots.is_empty() {
            return None;
        }
        let slot = match self.by_address.get(&block.address) {
            Some(&slot) => slot,
            None => self.evict(),
        };
        self.by_address.insert(block.address, slot);
        self.slots[slot] = Some((block, payload.len()));
        self.referenced[slot] = false;
        let start = slot * self.block_size;
        self.memory[start..start + payload.len()].copy_from_slice(payload);
        Some(slot)
    }

    /// Frees a slot: the first one the hand finds unreferenced (clearing bits as it passes).
    fn evict(&mut self) -> usize {
        loop {
            let slot = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            match self.slots[slot] {
                None => return slot,
                Some(_) if self.referenced[slot] => self.referenced[slot] = false,
                Some((old, _)) => {
                    self.by_address.remove(&old.address);
                    self.slots[slot] = None;
                    return slot;
                }
            }
        }
    }

    /// Drops every cached block (to measure cold reads).
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.by_address.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(address: u64, checksum: u32) -> BlockRef {
        BlockRef { address, checksum }
    }

    #[test]
    fn hits_misses_checksums_and_second_chance() {
        let mut cache = BlockCache::new(64, 2);
        let a = cache.insert(block(1, 10), b"a").unwrap();
        cache.insert(block(2, 20), b"b").unwrap();
        let slot = cache.lookup(block(1, 10)).unwrap();
        assert_eq!(cache.get(slot), b"a");
        assert_eq!(
            cache.lookup(block(1, 11)),
            None,
            "another checksum is another block"
        );
        // Block 1 was referenced: inserting a third evicts block 2.
        cache.insert(block(3, 30), b"c").unwrap();
        assert!(cache.lookup(block(2, 20)).is_none());
        assert_eq!(cache.lookup(block(1, 10)), Some(a));
        let slot = cache.lookup(block(3, 30)).unwrap();
        assert_eq!(cache.get(slot), b"c");
        cache.clear();
        assert!(cache.lookup(block(1, 10)).is_none());
    }
}
