//! Opening from a checkpoint reads the manifest's root and nothing else, whatever the data size:
//! the tables' metadata is read in chunks as reads need them, in the background as writes
//! arrive, and whole before the first flush, compaction or checkpoint. Counted by the store's IO
//! counters; the data is checked against a map through reopens, writes, a second checkpoint and a
//! damaged chunk.

use std::collections::BTreeMap;
use ziggy_core::lsm::manifest::{self, Chunk, Root};
use ziggy_core::lsm::{Checkpoint, Engine, Error, GridError, MemoryStore, Options, Write};

fn options() -> Options {
    Options {
        memtable_bytes: 16 << 10,
        table_blocks: 4,
        cache_blocks: 64,
        l0_trigger: 4,
        l0_slowdown: 8,
        l0_stop: 12,
        l1_bytes: 64 << 10,
        level_ratio: 4,
        levels: 6,
        ..Options::small()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!(
        "key{:08}",
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 100_000_000
    )
    .into_bytes()
}

struct Tree {
    engine: Engine<MemoryStore>,
    model: BTreeMap<Vec<u8>, Vec<u8>>,
    checkpoint: Checkpoint,
}

impl Tree {
    fn fill(keys: u64) -> Tree {
        let store = MemoryStore::new(1024, 256, 1 << 22);
        let engine = Engine::open(store, options(), None).unwrap();
        let mut tree = Tree {
            engine,
            model: BTreeMap::new(),
            checkpoint: Checkpoint {
                manifest: ziggy_core::lsm::grid::BlockRef {
                    address: 0,
                    checksum: 0,
                },
                sequence: 0,
            },
        };
        tree.write(0..keys, "first");
        tree.checkpoint();
        tree
    }

    fn write(&mut self, keys: std::ops::Range<u64>, tag: &str) {
        for i in keys {
            let (k, v) = (key(i), format!("{tag}-{i}-").repeat(3).into_bytes());
            let sequence = self.engine.sequence() + 1;
            let write = Write {
                key: &k,
                value: Some(&v),
            };
            self.engine.apply(sequence, &[write]).unwrap();
            self.model.insert(k, v);
        }
    }

    fn checkpoint(&mut self) {
        self.checkpoint = self.engine.checkpoint().unwrap();
        self.engine.checkpoint_durable();
    }

    /// Reopens from the checkpoint (nothing was written after it); returns the blocks read.
    fn reopen(self) -> (Tree, u64) {
        let store = self.engine.into_store();
        let before = store.counters.reads;
        let engine = Engine::open(store, options(), Some(self.checkpoint)).unwrap();
        let reads = engine.store().counters.reads - before;
        let tree = Tree {
            engine,
            model: self.model,
            checkpoint: self.checkpoint,
        };
        (tree, reads)
    }

    fn root(&mut self) -> (Root, usize) {
        let mut scratch = Vec::new();
        let store = self.engine.store_mut();
        let (body, blocks) =
            manifest::read_chain(store, &mut scratch, self.checkpoint.manifest).unwrap();
        (Root::decode(&body, options().levels).unwrap(), blocks.len())
    }

    /// Blocks the whole manifest occupies: root, chunks and free set.
    fn manifest_blocks(&mut self) -> usize {
        let (root, root_blocks) = self.root();
        let mut scratch = Vec::new();
        let store = self.engine.store_mut();
        let heads = root.chunks.iter().flatten().map(|c| c.head);
        let chains: usize = heads
            .chain([root.free.head])
            .map(|head| {
                manifest::read_chain(store, &mut scratch, head)
                    .unwrap()
                    .1
                    .len()
            })
            .sum();
        root_blocks + chains
    }

    fn check(&mut self) {
        for (k, v) in &self.model {
            assert_eq!(self.engine.get(k).unwrap().as_ref(), Some(v), "key {k:?}");
        }
        let all = self
            .engine
            .scan(&[], None, u64::MAX, usize::MAX, false)
            .unwrap();
        let expected: Vec<(Vec<u8>, Vec<u8>)> = self
            .model
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert!(all == expected, "a full scan returns the model");
    }
}

#[test]
fn opening_reads_only_the_root_at_any_size() {
    let mut opened = Vec::new();
    for keys in [3_000, 30_000] {
        let mut tree = Tree::fill(keys);
        let shape = tree.engine.shape();
        let whole = tree.manifest_blocks();
        let (_, root_blocks) = tree.root();
        let (mut tree, reads) = tree.reopen();
        assert_eq!(reads, root_blocks as u64, "opening reads the root alone");
        let known = tree.engine.shape();
        assert_eq!(known, shape, "the root knows every level's tables");
        let recorded = tree.engine.blocks_in_use();
        tree.engine.load_all_tables().unwrap();
        assert_eq!(
            tree.engine.blocks_in_use(),
            recorded,
            "the root counts the free set"
        );
        assert_eq!(tree.engine.shape(), shape);
        opened.push((keys, shape, whole, reads));
    }
    for (keys, shape, whole, reads) in &opened {
        println!(
            "{keys} keys, tables per level {shape:?}: manifest {whole} blocks, open read {reads}"
        );
    }
    let (small, large) = (&opened[0], &opened[1]);
    assert!(
        large.2 >= 10 * large.3 as usize,
        "the manifest at {} keys is {} blocks, of which opening read {}: {opened:?}",
        large.0,
        large.2,
        large.3
    );
    assert!(
        large.3 <= small.3 + 1,
        "opening reads as much at ten times the data: {opened:?}"
    );
}

#[test]
fn reads_and_writes_page_in_the_manifest_and_nothing_is_lost() {
    let tree = Tree::fill(20_000);
    let (mut tree, _) = tree.reopen();
    // A point read reads at most one chunk per sorted level, besides the blocks of the tables
    // it consults (index, filter, data): far from the whole manifest.
    let before = tree.engine.store().counters.reads;
    let k = key(77);
    assert_eq!(tree.engine.get(&k).unwrap().as_ref(), tree.model.get(&k));
    let reads = tree.engine.store().counters.reads - before;
    let level0 = tree.engine.shape()[0] as u64;
    let sorted = options().levels as u64 - 1;
    assert!(reads <= 4 * sorted + 3 * level0, "{reads} reads");
    assert!(tree.engine.describe().contains("not read yet"));
    // Writes read the rest in the background, then compact, flush and checkpoint as before.
    tree.write(10_000..26_000, "second");
    assert!(!tree.engine.describe().contains("not read yet"));
    tree.check();
    tree.checkpoint();
    let (mut tree, _) = tree.reopen();
    tree.check();
    // A scan reads the chunks of its range; a checkpoint the rest.
    let (mut tree, _) = tree.reopen();
    let from = key(5);
    let got = tree.engine.scan(&from, None, u64::MAX, 10, false).unwrap();
    let expected: Vec<_> = tree
        .model
        .range(from..)
        .take(10)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got, expected);
    tree.checkpoint();
    let (mut tree, _) = tree.reopen();
    tree.check();
}

#[test]
fn a_damaged_chunk_is_reported_when_read_and_never_answers_wrong() {
    let mut tree = Tree::fill(20_000);
    let (root, _) = tree.root();
    let level = root
        .chunks
        .iter()
        .rposition(|l| l.len() >= 3)
        .expect("a level of chunks");
    let chunk: Chunk = root.chunks[level][1].clone();
    let (mut tree, _) = tree.reopen();
    tree.engine.store_mut().corrupt(chunk.head.address, 100);
    let inside: Vec<Vec<u8>> = tree
        .model
        .keys()
        .filter(|k| chunk.min_key <= **k && **k <= chunk.max_key)
        .cloned()
        .collect();
    let outside = tree
        .model
        .keys()
        .find(|k| **k > chunk.max_key)
        .unwrap()
        .clone();
    let expected = tree.model[&outside].clone();
    assert_eq!(tree.engine.get(&outside).unwrap(), Some(expected));
    // Every key of the damaged chunk's range either is found above it or fails: none is absent.
    let mut failed = 0;
    for k in &inside {
        match tree.engine.get(k) {
            Ok(value) => assert_eq!(value.as_ref(), tree.model.get(k)),
            Err(Error::Grid(GridError::Corrupt { address, .. })) => {
                assert_eq!(address, chunk.head.address);
                failed += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(failed > 0, "the damage was seen");
    let checkpoint = tree.engine.checkpoint();
    assert!(
        matches!(checkpoint, Err(Error::Grid(GridError::Corrupt { .. }))),
        "a checkpoint cannot be written without the damaged chunk: {checkpoint:?}"
    );
}

#[test]
fn random_reads_and_writes_over_a_partly_read_manifest_match_a_map() {
    let mut tree = Tree::fill(12_000);
    for seed in 0..6 {
        let (reopened, _) = tree.reopen();
        tree = reopened;
        assert!(tree.engine.describe().contains("not read yet"));
        let mut prng = ziggy_core::prng::Prng::new(seed);
        for _ in 0..300 {
            let k = key(prng.below(14_000));
            match prng.below(4) {
                0 => {
                    let got = tree.engine.get(&k).unwrap();
                    assert_eq!(got.as_ref(), tree.model.get(&k), "seed {seed} key {k:?}");
                }
                1 => {
                    let reverse = prng.below(2) == 0;
                    let limit = 1 + prng.below(40) as usize;
                    let got = tree
                        .engine
                        .scan(&k, None, u64::MAX, limit, reverse)
                        .unwrap();
                    let expected: Vec<(Vec<u8>, Vec<u8>)> = if reverse {
                        let start = k.clone();
                        let mut all: Vec<_> = tree.model.range(start..).collect();
                        all.reverse();
                        all.into_iter()
                            .take(limit)
                            .map(|(a, b)| (a.clone(), b.clone()))
                            .collect()
                    } else {
                        let range = tree.model.range(k.clone()..);
                        range
                            .take(limit)
                            .map(|(a, b)| (a.clone(), b.clone()))
                            .collect()
                    };
                    assert_eq!(got, expected, "seed {seed} scan from {k:?}");
                }
                2 => {
                    let sequence = tree.engine.sequence() + 1;
                    let write = Write {
                        key: &k,
                        value: None,
                    };
                    tree.engine.apply(sequence, &[write]).unwrap();
                    tree.model.remove(&k);
                }
                _ => {
                    let i = prng.below(14_000);
                    tree.write(i..i + 1, &format!("s{seed}"));
                }
            }
        }
        tree.check();
        tree.checkpoint();
    }
    let (mut tree, _) = tree.reopen();
    tree.check();
}
