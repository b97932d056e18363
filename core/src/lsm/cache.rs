//! The block cache: a fixed number of block-sized slots allocated once at start, replaced by the
//! CLOCK algorithm (second chance). Entries are keyed by address and verified by checksum, so a
//! block reused for another table never serves stale bytes.

use super::grid::BlockRef;

pub struct BlockCache {
    block_size: usize,
    memory: Vec<u8>,
    /// Per slot: the block it holds and its payload length.
    slots: Vec<Option<(BlockRef, usize)>>,
    referenced: Vec<bool>,
    by_address: SlotIndex,
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
            by_address: SlotIndex::new(capacity),
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
        let slot = self.by_address.get(block.address)?;
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
        let slot = match self.by_address.get(block.address) {
            Some(slot) => slot,
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
                    self.by_address.remove(old.address);
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

/// Block address -> cache slot: open addressing with linear probing in tables allocated once,
/// at least twice as many buckets as slots (a `BTreeMap` here cost ~8% of a random read).
/// The hash is a fixed multiplication: the same addresses always land in the same buckets.
struct SlotIndex {
    /// Per bucket: the address + 1 (0: empty).
    keys: Vec<u64>,
    slots: Vec<u32>,
    shift: u32,
    len: usize,
}

impl SlotIndex {
    fn new(capacity: usize) -> SlotIndex {
        let buckets = (capacity * 2).next_power_of_two().max(2);
        SlotIndex {
            keys: vec![0; buckets],
            slots: vec![0; buckets],
            shift: 64 - buckets.trailing_zeros(),
            len: 0,
        }
    }

    fn home(&self, address: u64) -> usize {
        (address.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The bucket holding `address`, or the empty bucket where it would go.
    fn find(&self, address: u64) -> usize {
        let mask = self.keys.len() - 1;
        let mut bucket = self.home(address);
        while self.keys[bucket] != 0 && self.keys[bucket] != address + 1 {
            bucket = (bucket + 1) & mask;
        }
        bucket
    }

    fn get(&self, address: u64) -> Option<usize> {
        let bucket = self.find(address);
        (self.keys[bucket] != 0).then(|| self.slots[bucket] as usize)
    }

    fn insert(&mut self, address: u64, slot: usize) {
        let bucket = self.find(address);
        assert!(
            self.keys[bucket] != 0 || self.len < self.keys.len() / 2,
            "the index holds at most one entry per cache slot"
        );
        self.len += usize::from(self.keys[bucket] == 0);
        self.keys[bucket] = address + 1;
        self.slots[bucket] = slot as u32;
    }

    /// Removes `address`, shifting later entries of its probe run back (no tombstones).
    fn remove(&mut self, address: u64) {
        let mask = self.keys.len() - 1;
        let mut hole = self.find(address);
        if self.keys[hole] == 0 {
            return;
        }
        let mut next = (hole + 1) & mask;
        while self.keys[next] != 0 {
            let home = self.home(self.keys[next] - 1);
            // The entry at `next` may move into the hole if its home is not in (hole, next].
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.keys[hole] = self.keys[next];
                self.slots[hole] = self.slots[next];
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.keys[hole] = 0;
        self.len -= 1;
    }

    fn clear(&mut self) {
        self.keys.iter_mut().for_each(|k| *k = 0);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(address: u64, checksum: u32) -> BlockRef {
        BlockRef { address, checksum }
    }

    proptest::proptest! {
        #[test]
        fn the_slot_index_behaves_like_a_map(
            ops in proptest::collection::vec((0u64..40, proptest::bool::ANY), 0..300),
        ) {
            let mut index = SlotIndex::new(8);
            let mut model = std::collections::BTreeMap::new();
            for (i, &(address, insert)) in ops.iter().enumerate() {
                if insert && (model.len() < 8 || model.contains_key(&address)) {
                    index.insert(address, i);
                    model.insert(address, i);
                } else {
                    index.remove(address);
                    model.remove(&address);
                }
                for a in 0..40 {
                    proptest::prop_assert_eq!(index.get(a), model.get(&a).copied());
                }
            }
        }
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
