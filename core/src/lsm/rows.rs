//! The row cache: the latest value (or absence) of keys read recently, so that a hot key's
//! point read skips the memtable's B-tree and the tables below it (a hash probe instead of a
//! descent and a block search). Writes keep the cached keys up to date; nothing else changes a
//! key's latest value, except a reopen, which empties the cache.
//!
//! A 4-way set-associative table of its own (the core keeps out of `std`'s hash maps and their
//! random seeds): a key hashes to a set of four slots, kept in order of use; a hit moves its row
//! to the front, a miss fills the front and the set's least recently used row leaves. Only reads at the latest sequence use it (a snapshot's read
//! goes to the layers). It is never iterated: the engine stays deterministic.

use std::hash::Hasher;

/// Bytes a cached row costs beyond its key and value (its slot and two boxes).
const ROW_OVERHEAD: usize = 64;
/// Rows larger than this are not cached (they would crowd out many small ones).
const ROW_MAX: usize = 1024;
/// The budget's bytes per slot: small rows (~100 bytes) fill under half the slots, so few sets
/// overflow (a probe of 100k hot keys in 32 MiB: 2-way sets at 256 bytes a slot hit 74%).
const BYTES_PER_SLOT: usize = 128;
/// Slots per set.
const WAYS: usize = 4;

/// A cached row: its key's hash (compared before the key, which sits behind a pointer), its
/// key and latest value (`None`: absent).
struct Row {
    hash: u64,
    key: Box<[u8]>,
    value: Option<Box<[u8]>>,
}

#[derive(Default)]
pub struct Rows {
    /// Sets of `WAYS` slots, each set's in order of use (the first used last).
    slots: Vec<Option<Row>>,
    bytes: usize,
    budget: usize,
    pub hits: u64,
    pub misses: u64,
}

impl Rows {
    pub fn new(budget: usize) -> Rows {
        let sets = (budget / BYTES_PER_SLOT / WAYS).next_power_of_two();
        Rows {
            slots: (0..if budget == 0 { 0 } else { sets * WAYS })
                .map(|_| None)
                .collect(),
            budget,
            ..Rows::default()
        }
    }

    /// The slot holding `key` (of hash `hash`), if cached.
    fn find(&self, key: &[u8], hash: u64) -> Option<usize> {
        let set = self.set_of(hash)?;
        (set..set + WAYS).find(|&i| {
            self.slots[i]
                .as_ref()
                .is_some_and(|r| r.hash == hash && *r.key == *key)
        })
    }

    /// The first slot of the set `hash` falls in (None: a cache of no slots).
    fn set_of(&self, hash: u64) -> Option<usize> {
        let sets = self.slots.len() / WAYS;
        (sets > 0).then(|| (hash as usize & (sets - 1)) * WAYS)
    }

    /// The cached latest value: `Some(None)` for a key known absent, `None` when not cached.
    pub fn get(&mut self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let Some(i) = self.find(key, hash(key)) else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        let set = i - i % WAYS;
        self.slots[set..=i].rotate_right(1); // used last: to the front of its set
        let row = self.slots[set].as_ref().expect("found");
        Some(row.value.as_deref().map(<[u8]>::to_vec))
    }

    /// Caches what a read at the latest sequence found, in front of its set (the set's least
    /// recently used row leaves). A cache over its budget starts over.
    pub fn fill(&mut self, key: &[u8], value: Option<&[u8]>) {
        let size = cost(key, value);
        if size > ROW_MAX + ROW_OVERHEAD {
            return;
        }
        let hash = hash(key);
        let Some(set) = self.set_of(hash) else {
            return;
        };
        if let Some(i) = self.find(key, hash) {
            self.take(i);
        }
        if let Some(old) = self.slots[set + WAYS - 1].take() {
            self.bytes -= cost(&old.key, old.value.as_deref());
        }
        self.slots[set..set + WAYS].rotate_right(1);
        self.slots[set] = Some(Row {
            hash,
            key: key.into(),
            value: value.map(Into::into),
        });
        self.bytes += size;
        if self.bytes > self.budget {
            self.clear();
        }
    }

    /// A write: a cached key takes its new latest value (an uncached one stays out).
    pub fn write(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Some(i) = self.find(key, hash(key)) else {
            return;
        };
        let row = self.take(i);
        if cost(key, value) <= ROW_MAX + ROW_OVERHEAD {
            self.bytes += cost(key, value);
            self.slots[i] = Some(Row {
                hash: row.hash,
                key: row.key,
                value: value.map(Into::into),
            });
        }
        if self.bytes > self.budget {
            self.clear();
        }
    }

    /// Empties slot `i` (which holds a row).
    fn take(&mut self, i: usize) -> Row {
        let row = self.slots[i].take().expect("a cached row");
        self.bytes -= cost(&row.key, row.value.as_deref());
        row
    }

    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|slot| *slot = None);
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.slots.iter().filter(|slot| slot.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn hash(key: &[u8]) -> u64 {
    let mut hasher = FoldHasher::default();
    hasher.write(key);
    hasher.finish()
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
        let mut rows = Rows::new(2 * WAYS * BYTES_PER_SLOT);
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
        for n in 0..64u32 {
            rows.fill(&n.to_le_bytes(), Some(&[7u8; 200]));
            assert!(rows.bytes <= rows.budget, "over budget: started over");
            assert!(rows.len() <= 2 * WAYS, "no more rows than slots");
        }
        rows.fill(b"big", Some(&[0u8; ROW_MAX + 1]));
        assert_eq!(
            rows.get(b"big"),
            None,
            "rows larger than ROW_MAX are not cached"
        );
    }

    #[test]
    fn a_full_set_drops_its_least_recently_used_row() {
        let mut rows = Rows::new(WAYS * BYTES_PER_SLOT); // one set
        for (key, value) in [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")] {
            rows.fill(key, Some(value));
        }
        assert_eq!(rows.get(b"a"), Some(Some(b"1".to_vec())), "all four fit");
        rows.fill(b"e", Some(b"5")); // "b" was used least recently: it leaves
        assert_eq!(rows.get(b"b"), None);
        for key in [b"a", b"c", b"d", b"e"] {
            assert!(rows.get(key).is_some(), "{key:?} stays");
        }
        assert_eq!(rows.len(), WAYS);
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

    /// The sizing the server runs with: 100k hot keys of small rows in 32 MiB nearly all stay
    /// (a 2-way table at 256 bytes a slot kept 81% of them).
    #[test]
    fn the_production_budget_holds_nearly_all_of_100k_small_rows() {
        let mut rows = Rows::new(32 << 20);
        let mut x = 12345u64;
        for _ in 0..1_000_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = format!("key:{:012}", (x >> 33) % 100_000);
            if rows.get(key.as_bytes()).is_none() {
                rows.fill(key.as_bytes(), Some(b"xxx"));
            }
        }
        assert!(rows.len() > 97_000, "{} of 100k rows cached", rows.len());
        assert!(rows.hits > 870_000, "{} hits of 1M reads", rows.hits);
    }
}
