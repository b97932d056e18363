//! The LSM engine against a `BTreeMap` model: random puts, deletes, gets, scans (both ways),
//! snapshots, transactions, checkpoints, clean reopens and crashes (including power failing in
//! the middle of a flush, a compaction or a checkpoint), with options small enough that every
//! run goes through many flushes, compactions and levels.
//!
//! The caller's side of durability is modelled as the engine's contract asks: every applied batch
//! is in a durable log; a checkpoint counts once "the superblock" records it; reopening replays
//! the log after the recorded checkpoint.

use proptest::prelude::*;
use std::collections::BTreeMap;
use ziggy_core::lsm::{Checkpoint, Engine, Error, MemoryStore, Options, Write};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;
type Batch = Vec<(Vec<u8>, Option<Vec<u8>>)>;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8, usize),
    Delete(u8),
    Batch(Vec<(u8, Option<(u8, usize)>)>),
    Get(u8),
    Scan(u8, u8, usize, bool),
    Snapshot,
    ReadSnapshot(usize, u8, u8),
    ReleaseSnapshot(usize),
    /// Writes of a transaction, whether another writer commits to `interfere` first, reads.
    Transaction(Vec<(u8, Option<u8>)>, Option<u8>, Vec<u8>),
    Work(usize),
    Checkpoint {
        record: bool,
    },
    /// A checkpoint of the tables only (memtables stay; the log is replayed from the flushed
    /// sequence).
    CheckpointTables {
        record: bool,
    },
    Reopen,
    /// Power fails after this many more block writes; then puts continue until it has.
    Crash(u64, u64),
}

fn key(k: u8) -> Vec<u8> {
    // Keys of varied lengths that share prefixes, as real keys do.
    let mut key = format!("key/{:02}", k % 40).into_bytes();
    key.extend(std::iter::repeat_n(b'x', (k / 40) as usize * 7));
    key
}

fn value(v: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| v.wrapping_add(i as u8)).collect()
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u8..120;
    prop_oneof![
        20 => (k.clone(), any::<u8>(), 0usize..120).prop_map(|(k, v, l)| Op::Put(k, v, l)),
        5 => k.clone().prop_map(Op::Delete),
        4 => proptest::collection::vec(
            (k.clone(), proptest::option::of((any::<u8>(), 0usize..60))),
            1..6
        )
        .prop_map(Op::Batch),
        6 => k.clone().prop_map(Op::Get),
        3 => (k.clone(), k.clone(), 0usize..30, any::<bool>())
            .prop_map(|(a, b, n, r)| Op::Scan(a, b, n, r)),
        2 => Just(Op::Snapshot),
        3 => (0usize..8, k.clone(), k.clone()).prop_map(|(i, a, b)| Op::ReadSnapshot(i, a, b)),
        1 => (0usize..8).prop_map(Op::ReleaseSnapshot),
        3 => (
            proptest::collection::vec((k.clone(), proptest::option::of(any::<u8>())), 1..4),
            proptest::option::of(k.clone()),
            proptest::collection::vec(k.clone(), 0..3)
        )
            .prop_map(|(w, i, r)| Op::Transaction(w, i, r)),
        2 => (1usize..400).prop_map(Op::Work),
        2 => any::<bool>().prop_map(|record| Op::Checkpoint { record }),
        2 => any::<bool>().prop_map(|record| Op::CheckpointTables { record }),
        1 => Just(Op::Reopen),
        1 => (0u64..40, any::<u64>()).prop_map(|(n, s)| Op::Crash(n, s)),
    ]
}

struct Harness {
    engine: Option<Engine<MemoryStore>>,
    model: Model,
    /// The durable log: every applied batch with its sequence.
    log: Vec<(u64, Batch)>,
    recorded: Option<Checkpoint>,
    /// Snapshots: engine sequence and the model as of it.
    snapshots: Vec<(ziggy_core::lsm::Snapshot, Model)>,
    next_sequence: u64,
    /// Per key, the sequence of its last write (for transaction conflicts).
    written_at: BTreeMap<Vec<u8>, u64>,
}

impl Harness {
    fn new() -> Harness {
        let store = MemoryStore::new(512, 64, 1 << 20);
        Harness {
            engine: Some(Engine::open(store, Options::small(), None).unwrap()),
            model: Model::new(),
            log: Vec::new(),
            recorded: None,
            snapshots: Vec::new(),
            next_sequence: 1,
            written_at: BTreeMap::new(),
        }
    }

    fn engine(&mut self) -> &mut Engine<MemoryStore> {
        self.engine.as_mut().unwrap()
    }

    fn write(&mut self, batch: Batch) -> Result<(), Error> {
        let sequence = self.next_sequence;
        let writes: Vec<Write> = batch
            .iter()
            .map(|(k, v)| Write {
                key: k,
                value: v.as_deref(),
            })
            .collect();
        self.engine.as_mut().unwrap().apply(sequence, &writes)?;
        self.next_sequence += 1;
        self.commit_to_model(sequence, batch);
        Ok(())
    }

    fn commit_to_model(&mut self, sequence: u64, batch: Batch) {
        for (k, v) in &batch {
            match v {
                Some(v) => self.model.insert(k.clone(), v.clone()),
                None => self.model.remove(k),
            };
            self.written_at.insert(k.clone(), sequence);
        }
        self.log.push((sequence, batch));
    }

    fn check_scan(&mut self, a: u8, b: u8, limit: usize, reverse: bool, snapshot: Option<usize>) {
        let (start, end) = (key(a).min(key(b)), key(a).max(key(b)));
        let (sequence, model) = match snapshot {
            Some(i) => (self.snapshots[i].0.sequence, self.snapshots[i].1.clone()),
            None => (self.engine().sequence(), self.model.clone()),
        };
        let got = self
            .engine()
            .scan(&start, Some(&end), sequence, limit, reverse)
            .unwrap();
        let range = model.range(start..end).map(|(k, v)| (k.clone(), v.clone()));
        let expected: Vec<_> = if reverse {
            range.rev().take(limit).collect()
        } else {
            range.take(limit).collect()
        };
        assert_eq!(
            got, expected,
            "scan [{a}, {b}) limit {limit} reverse {reverse}"
        );
    }

    /// Reopens from the recorded checkpoint and replays the log after it.
    fn reopen(&mut self, store: MemoryStore) {
        let engine = Engine::open(store, Options::small(), self.recorded).unwrap();
        self.engine = Some(engine);
        self.snapshots.clear();
        let from = self.recorded.map_or(0, |c| c.sequence);
        let tail: Vec<(u64, Batch)> = self
            .log
            .iter()
            .filter(|(s, _)| *s > from)
            .cloned()
            .collect();
        for (i, (sequence, batch)) in tail.into_iter().enumerate() {
            let writes: Vec<Write> = batch
                .iter()
                .map(|(k, v)| Write {
                    key: k,
                    value: v.as_deref(),
                })
                .collect();
            // Replay as the embedded database does (no compaction), or as a replica does.
            if (i / 7).is_multiple_of(2) {
                self.engine().apply_replayed(sequence, &writes).unwrap();
            } else {
                self.engine().apply(sequence, &writes).unwrap();
            }
        }
        self.check_all();
    }

    fn check_all(&mut self) {
        for k in 0..120 {
            let k = key(k);
            let expected = self.model.get(&k).cloned();
            assert_eq!(self.engine().get(&k).unwrap(), expected, "key {k:?}");
        }
        self.check_scan(0, 255, usize::MAX, false, None);
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Put(k, v, len) => self.write(vec![(key(k), Some(value(v, len)))]).unwrap(),
            Op::Delete(k) => self.write(vec![(key(k), None)]).unwrap(),
            Op::Batch(writes) => {
                let batch = writes
                    .into_iter()
                    .map(|(k, v)| (key(k), v.map(|(v, l)| value(v, l))))
                    .collect::<Vec<_>>();
                // A batch writing a key twice: the later write wins, as in the model.
                self.write(batch).unwrap()
            }
            Op::Get(k) => {
                let k = key(k);
                let expected = self.model.get(&k).cloned();
                assert_eq!(self.engine().get(&k).unwrap(), expected);
            }
            Op::Scan(a, b, limit, reverse) => self.check_scan(a, b, limit, reverse, None),
            Op::Snapshot => {
                let snapshot = self.engine().snapshot();
                self.snapshots.push((snapshot, self.model.clone()));
            }
            Op::ReadSnapshot(i, a, b) if !self.snapshots.is_empty() => {
                let i = i % self.snapshots.len();
                let k = key(a);
                let (sequence, expected) = {
                    let (s, m) = &self.snapshots[i];
                    (s.sequence, m.get(&k).cloned())
                };
                assert_eq!(self.engine().get_at(&k, sequence).unwrap(), expected);
                self.check_scan(a, b, 20, b % 2 == 0, Some(i));
            }
            Op::ReleaseSnapshot(i) if !self.snapshots.is_empty() => {
                let (snapshot, _) = self.snapshots.remove(i % self.snapshots.len());
                self.engine().release(snapshot);
            }
            Op::ReadSnapshot(..) | Op::ReleaseSnapshot(_) => {}
            Op::Transaction(writes, interfere, reads) => self.transaction(writes, interfere, reads),
            Op::Work(budget) => {
                self.engine().work(budget).unwrap();
            }
            Op::Checkpoint { record } => {
                let checkpoint = self.engine().checkpoint().unwrap();
                assert_eq!(checkpoint.sequence, self.engine().sequence());
                if record {
                    self.recorded = Some(checkpoint);
                    self.engine().checkpoint_durable();
                } else {
                    // The superblock write is lost: reopen from the previous checkpoint.
                    let mut store = self.engine.take().unwrap().into_store();
                    store.crash(checkpoint.sequence);
                    self.reopen(store);
                }
            }
            Op::CheckpointTables { record } => {
                let checkpoint = self.engine().checkpoint_tables().unwrap();
                assert_eq!(checkpoint.sequence, self.engine().flushed_sequence());
                if record {
                    self.recorded = Some(checkpoint);
                    self.engine().checkpoint_durable();
                } else {
                    let mut store = self.engine.take().unwrap().into_store();
                    store.crash(checkpoint.sequence ^ 0x55);
                    self.reopen(store);
                }
            }
            Op::Reopen => {
                let checkpoint = self.engine().checkpoint().unwrap();
                self.recorded = Some(checkpoint);
                self.engine().checkpoint_durable();
                let store = self.engine.take().unwrap().into_store();
                self.reopen(store);
            }
            Op::Crash(after, seed) => self.crash(after, seed),
        }
    }

    fn transaction(
        &mut self,
        writes: Vec<(u8, Option<u8>)>,
        interfere: Option<u8>,
        reads: Vec<u8>,
    ) {
        let mut txn = self.engine().begin();
        let before = self.model.clone();
        let mut own: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (k, v) in &writes {
            let v = v.map(|v| value(v, 5));
            match &v {
                Some(v) => txn.put(&key(*k), v),
                None => txn.delete(&key(*k)),
            }
            own.insert(key(*k), v);
        }
        if let Some(k) = interfere {
            self.write(vec![(key(k), Some(b"other writer".to_vec()))])
                .unwrap();
        }
        for k in reads {
            let k = key(k);
            let expected = match own.get(&k) {
                Some(v) => v.clone(),
                None => before.get(&k).cloned(),
            };
            assert_eq!(
                self.engine().txn_get(&txn, &k).unwrap(),
                expected,
                "read in txn"
            );
        }
        let snapshot = txn.snapshot();
        let conflict = own
            .keys()
            .find(|k| self.written_at.get(*k).is_some_and(|&s| s > snapshot))
            .cloned();
        let sequence = self.next_sequence;
        match (self.engine().commit(txn, sequence), conflict) {
            (Ok(()), None) => {
                self.next_sequence += 1;
                self.commit_to_model(sequence, own.into_iter().collect());
            }
            (Err(Error::Conflict { key }), Some(expected)) => assert_eq!(key, expected),
            (result, expected) => panic!("commit gave {result:?}, expected conflict {expected:?}"),
        }
    }

    /// Power fails `after` block writes from now; writes continue until it has (or 500 puts),
    /// then the machine restarts from the recorded checkpoint and the log.
    fn crash(&mut self, after: u64, seed: u64) {
        let writes = self.engine().store().counters.writes;
        self.engine().store_mut().power_fails_at_write = Some(writes + after);
        for i in 0..500u32 {
            if !self.engine().store().powered() {
                break;
            }
            let k = key((seed.wrapping_add(i as u64) % 120) as u8);
            // Errors are expected once the power is out (reads of blocks never written).
            if let Err(_power_lost) = self.write(vec![(k, Some(value(i as u8, 90)))]) {
                break;
            }
            if i % 50 == 49 {
                if let Ok(checkpoint) = self.engine().checkpoint() {
                    if self.engine().store().powered() {
                        self.recorded = Some(checkpoint);
                        self.engine().checkpoint_durable();
                    }
                }
            }
        }
        let mut store = self.engine.take().unwrap().into_store();
        store.crash(seed);
        self.reopen(store);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_a_btreemap(ops in proptest::collection::vec(op(), 1..250)) {
        let mut harness = Harness::new();
        for op in ops {
            harness.run(op);
        }
        harness.check_all();
        harness.run(Op::Reopen);
    }
}

#[test]
fn a_long_run_reaches_deep_levels_and_stays_bounded() {
    let mut harness = Harness::new();
    let mut prng = ziggy_core::prng::Prng::new(7);
    for i in 0..20_000u64 {
        let k = prng.below(120) as u8;
        match prng.below(10) {
            0 => harness.run(Op::Delete(k)),
            1 => harness.run(Op::Get(k)),
            _ => harness.run(Op::Put(k, i as u8, prng.below(120) as usize)),
        }
        if i % 2_000 == 1_999 {
            harness.run(Op::Checkpoint { record: true });
        }
    }
    harness.check_all();
    let engine = harness.engine();
    let shape = engine.shape();
    assert!(
        shape[2..].iter().any(|&n| n > 0),
        "data reached level 2 or deeper: {shape:?}"
    );
    assert!(engine.stats().compactions > 20, "{:?}", engine.stats());
    // 120 live keys of ≤ 127 bytes: the tree must not grow with the 20,000 writes.
    let live: u64 = harness
        .model
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum();
    let engine = harness.engine();
    let blocks = engine.blocks_in_use();
    assert!(
        blocks * 512 < 40 * live.max(512 * 20),
        "{blocks} blocks in use for {live} live bytes"
    );
}

#[test]
fn regression_stale_cached_block_with_equal_checksum() {
    let mut harness = Harness::new();
    for op in [
        Op::Transaction(vec![(17, None)], None, vec![]),
        Op::Put(17, 0, 18),
        Op::Crash(23, 8070310272529922502),
        Op::Work(28),
        Op::Checkpoint { record: true },
        Op::Put(40, 0, 20),
        Op::Checkpoint { record: true },
        Op::Work(54),
        Op::Put(0, 0, 0),
    ] {
        harness.run(op);
    }
    harness.check_all();
    harness.run(Op::Reopen);
}
