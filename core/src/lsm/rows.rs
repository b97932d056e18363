//! The row cache: the latest value (or absence) of keys read recently, so that a hot key's
//! point read skips the memtable's B-tree and the tables below it (a hash probe instead of a
//! descent and a block search). Writes keep the cached keys up to date; nothing else changes a
//! key's latest value, except a reopen, which empties the cache.
//!
//! Only reads at the latest sequence use it (a snapshot's read goes to the layers). It never
//! iterates, so the hash map's order never shows: the engine stays deterministic.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Bytes a cached row costs beyond its key and value (the map's slot and two boxes).
const ROW_OVERHEAD: usize = 64;
/// Rows larger than this are not cached (they would crowd out many small ones).
const ROW_MAX: usize = 1024;

/// Key → its latest value (`None`: absent).
type RowMap = HashMap<Box<[u8]>, Option<Box<[u8]>>, BuildHasherDefault<FoldHasher>>;

#[derive(Default)]
pub struct Rows {
    map: RowMap,
    bytes: usize,
    budget: usize,
    pub hits: u64,
    pub misses: u64,
}

impl Rows {
    pub fn new(budget: usize) -> Rows {
        Rows {
            budget,
            ..Rows::default()
        }
    }

    /// The cached latest value: `Some(None)` for a key known absent, `None` when not cached.
    pub fn get(&mut self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let found = self
            .map
            .get(key)
            .map(|value| value.as_deref().map(<[u8]>::to_vec));
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    /// Caches what a read at the latest sequence found. A full cache starts over (the next
    /// reads fill it with what is hot now).
    pub fn fill(&mut self, key: &[u8], value: Option<&[u8]>) {
        let size = cost(key, value);
        if size > ROW_MAX + ROW_OVERHEAD || self.budget == 0 {
            return;
        }
        if self.bytes + size > self.budget {
            self.clear();
        }
        if let Some(old) = self.map.insert(key.into(), value.map(Into::into)) {
            self.bytes -= cost(key, old.as_deref());
        }
        self.bytes += size;
    }

    /// A write: a cached key takes its new latest value (an uncached one stays out).
    pub fn write(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Some(slot) = self.map.get_mut(key) else {
            return;
        };
        if cost(key, value) > ROW_MAX + ROW_OVERHEAD {
            let old = self.map.remove(key).expect("found above");
            self.bytes -= cost(key, old.as_deref());
            return;
        }
        self.bytes -= cost(key, slot.as_deref());
        *slot = value.map(Into::into);
        self.bytes += cost(key, value);
        if self.bytes > self.budget {
            self.clear();
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn cost(key: &[u8], value: Option<&[u8]>) -> usize {
    ROW_OVERHEAD + key.len() + value.map_or(0, <[u8]>::len)
}

/// A fast, non-cryptographic hasher for byte keys (word at a time, multiply and fold). The
/// keys are the database's own (no attacker picks collisions to degrade a map's buckets any
/// more than they could fill the memtable).
#[derive(Default)]
pub struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.mix(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.mix(u64::from_le_bytes(tail) ^ (rest.len() as u64) << 59);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FoldHasher {
    fn mix(&mut self, word: u64) {
        let folded = (u128::from(self.0 ^ word)) * 0x9E37_79B9_7F4A_7C15_u128;
        self.0 = (folded as u64) ^ ((folded >> 64) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_update_cached_rows_and_a_full_cache_starts_over() {
        let mut rows = Rows::new(4 * (ROW_OVERHEAD + 8));
        assert_eq!(rows.get(b"a"), None);
        rows.fill(b"a", Some(b"1"));
        rows.fill(b"b", None);
        assert_eq!(rows.get(b"a"), Some(Some(b"1".to_vec())));
        assert_eq!(rows.get(b"b"), Some(None), "absence is cached too");
        rows.write(b"a", Some(b"22"));
        rows.write(b"b", Some(b"3"));
        rows.write(b"c", Some(b"4"));
        assert_eq!(rows.get(b"a"), Some(Some(b"22".to_vec())));
        assert_eq!(rows.get(b"b"), Some(Some(b"3".to_vec())));
        assert_eq!(rows.get(b"c"), None, "a write does not cache an unread key");
        rows.write(b"a", None);
        assert_eq!(rows.get(b"a"), Some(None));
        for key in [b"d", b"e", b"f"] {
            rows.fill(key, Some(b"12345678"));
        }
        assert!(
            rows.len() < 5 && rows.bytes <= rows.budget,
            "over budget: started over"
        );
        rows.fill(b"big", Some(&[0u8; ROW_MAX + 1]));
        assert_eq!(
            rows.get(b"big"),
            None,
            "rows larger than ROW_MAX are not cached"
        );
    }

    #[test]
    fn the_hasher_separates_keys_that_differ_only_in_length_or_tail() {
        let hash = |bytes: &[u8]| {
            let mut h = FoldHasher::default();
            h.write(bytes);
            h.finish()
        };
        assert_ne!(hash(b""), hash(b"\0"));
        assert_ne!(hash(b"abcdefgh"), hash(b"abcdefgh\0"));
        assert_ne!(hash(b"record:1"), hash(b"record:2"));
    }
}
