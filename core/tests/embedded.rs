//! The embedded database's core over in-memory storage with crash semantics: every write it
//! acknowledged survives a process crash, every write before a sync survives an OS crash, and a
//! flipped byte in an acknowledged record is reported on open, never dropped.

use std::collections::BTreeMap;

use ziggy_core::embedded::{self, writes, Embedded, EmbeddedStorage, Error, Sizes};
use ziggy_core::lsm::grid::MemoryStore;
use ziggy_core::lsm::{Options, Write};
use ziggy_core::prng::Prng;
use ziggy_core::storage_contract::{Completion, ContractStorage};
use ziggy_core::wal::stage::{self, MemStage};
use ziggy_core::{IoId, Layout, Storage, WriteError, Zone};

/// A data file in memory: `cache` is what a process sees (the OS's page cache), `durable` what
/// an OS crash leaves. A completion (or a barrier) copies the written ranges to `durable`.
struct MemStorage {
    cache: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<(u64, usize)>,
    pending: Vec<Completion>,
    /// Fail the sync after this many more (then every later one).
    fail_sync_after: Option<u32>,
}

impl MemStorage {
    fn new(size: u64) -> MemStorage {
        MemStorage {
            cache: vec![0; size as usize],
            durable: vec![0; size as usize],
            unsynced: Vec::new(),
            pending: Vec::new(),
            fail_sync_after: None,
        }
    }

    fn sync(&mut self) -> Result<(), WriteError> {
        if let Some(n) = &mut self.fail_sync_after {
            if *n == 0 {
                return Err(WriteError::Io);
            }
            *n -= 1;
        }
        for (offset, len) in self.unsynced.drain(..) {
            let r = offset as usize..offset as usize + len;
            self.durable[r.clone()].copy_from_slice(&self.cache[r]);
        }
        Ok(())
    }

    fn os_crash(&mut self) {
        self.cache.copy_from_slice(&self.durable);
        self.unsynced.clear();
        self.pending.clear();
    }
}

impl Storage for MemStorage {
    fn submit_read(&mut self, id: IoId, offset: u64, len: usize) {
        let data = self.cache[offset as usize..offset as usize + len].to_vec();
        self.pending.push(Completion::Read {
            id,
            result: Ok(data),
        });
    }

    fn submit_write(&mut self, id: IoId, offset: u64, data: &[u8]) {
        self.cache[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        self.unsynced.push((offset, data.len()));
        self.pending.push(Completion::Write { id, result: Ok(()) });
    }
}

impl ContractStorage for MemStorage {
    fn complete_all(&mut self) -> Vec<Completion> {
        let result = self.sync();
        let mut done = std::mem::take(&mut self.pending);
        if let Err(e) = result {
            for c in &mut done {
                if let Completion::Write { result, .. } = c {
                    *result = Err(e);
                }
            }
        }
        done
    }
}

impl EmbeddedStorage for MemStorage {
    fn barrier(&mut self) -> Result<(), WriteError> {
        self.sync()
    }

    fn take_write_error(&mut self) -> Option<WriteError> {
        None
    }
}

type Db = Embedded<MemStorage, MemoryStore, MemStage>;

const SIZES: Sizes = Sizes {
    grid_block_size: 4096,
    wal_slot_count: 32,
    wal_entry_size: 8192,
};

fn options() -> Options {
    Options {
        memtable_bytes: 16 << 10,
        ..Options::small()
    }
}

fn layout() -> Layout {
    Layout::new(&SIZES.config(options()))
}

fn create() -> (MemStorage, MemoryStore, MemStage) {
    let mut storage = MemStorage::new(layout().total_size());
    embedded::format(&mut storage, SIZES, 77).unwrap();
    let area = SIZES.config(options()).entry_body_max();
    (
        storage,
        MemoryStore::new(4096, 0, 1 << 20),
        MemStage::new(area),
    )
}

fn open(parts: (MemStorage, MemoryStore, MemStage)) -> Result<Db, Error> {
    let (storage, grid, stage) = parts;
    Embedded::open(storage, grid, stage, SIZES, options(), false).map(|(db, _)| db)
}

/// The model: every acknowledged write, by key, and the sequence each key was last written at.
#[derive(Default)]
struct Model {
    keys: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
}

fn put(db: &mut Db, model: &mut Model, key: &[u8], value: &[u8]) {
    let batch = [Write {
        key,
        value: Some(value),
    }];
    let mut payload = Vec::new();
    writes::encode(&batch, &mut payload);
    let seq = db.write(&payload, |e, s| e.apply(s, &batch)).unwrap();
    model.keys.insert(key.to_vec(), (value.to_vec(), seq));
}

fn value(prng: &mut Prng, len: usize) -> Vec<u8> {
    (0..len).map(|_| prng.below(256) as u8).collect()
}

fn contents(db: &mut Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let engine = db.engine_mut().unwrap();
    let sequence = engine.sequence();
    engine
        .scan(b"", None, sequence, usize::MAX, false)
        .unwrap()
        .into_iter()
        .collect()
}

fn assert_holds(db: &mut Db, model: &Model, when: &str) {
    let expected: BTreeMap<_, _> = model
        .keys
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    assert_eq!(contents(db), expected, "{when}");
}

#[test]
fn every_acknowledged_write_survives_process_crashes() {
    let mut prng = Prng::new(1);
    let mut model = Model::default();
    let mut db = open(create()).unwrap();
    let (mut seals, mut checkpoints, mut full) = (0, 0, 0);
    for round in 0..30 {
        for _ in 0..prng.below(400) {
            let key = format!("key{}", prng.below(300)).into_bytes();
            let len = prng.below(200) as usize;
            let v = value(&mut prng, len);
            put(&mut db, &mut model, &key, &v);
            match prng.below(200) {
                0 => db.sync().unwrap(),
                1 => db.checkpoint().unwrap(),
                2 => {
                    db.compact(64).unwrap();
                }
                _ => {}
            }
        }
        let stats = db.stats();
        (seals, checkpoints) = (seals + stats.seals, checkpoints + stats.checkpoints);
        full += stats.full_checkpoints;
        db = open(db.into_parts()).unwrap();
        assert_holds(&mut db, &model, &format!("after crash {round}"));
    }
    // The runs sealed entries, took table checkpoints after flushes and full ones (the ring).
    assert!(
        seals > 100 && checkpoints > full && full > 5,
        "{seals} {checkpoints} {full}"
    );
}

#[test]
fn writes_before_a_sync_survive_an_os_crash() {
    let mut prng = Prng::new(2);
    let mut model = Model::default();
    let mut db = open(create()).unwrap();
    for round in 0..20 {
        for _ in 0..prng.below(300) {
            let key = format!("key{}", prng.below(200)).into_bytes();
            let len = prng.below(100) as usize;
            let v = value(&mut prng, len);
            put(&mut db, &mut model, &key, &v);
        }
        db.sync().unwrap();
        let synced: Vec<_> = model
            .keys
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Unsynced writes after the sync may or may not survive.
        for _ in 0..prng.below(50) {
            let key = format!("late{round}-{}", prng.below(10)).into_bytes();
            put(&mut db, &mut Model::default(), &key, b"maybe");
        }
        let (mut storage, mut grid, _stage) = db.into_parts();
        storage.os_crash();
        grid.crash(round);
        let area = SIZES.config(options()).entry_body_max();
        db = open((storage, grid, MemStage::new(area))).unwrap();
        let now = contents(&mut db);
        for (k, (v, _)) in synced {
            assert_eq!(
                now.get(&k),
                Some(&v),
                "round {round}: a synced write was lost"
            );
        }
        model.keys.retain(|k, _| now.contains_key(k));
        for (k, v) in &now {
            if !k.starts_with(b"late") {
                assert_eq!(&model.keys[k].0, v);
            }
        }
        model.keys = now.into_iter().map(|(k, v)| (k, (v, 0))).collect();
    }
}

/// Where the bytes of `value` lie in the WAL entries zone or the stage, if exactly once.
fn unique_place(storage: &MemStorage, stage: &MemStage, value: &[u8]) -> Option<(bool, usize)> {
    let layout = layout();
    let zone = layout.zone_start(Zone::WalEntries) as usize;
    let entries = &storage.cache[zone..zone + layout.zone_size(Zone::WalEntries) as usize];
    let find = |hay: &[u8]| -> Vec<usize> {
        hay.windows(value.len())
            .enumerate()
            .filter(|(_, w)| *w == value)
            .map(|(i, _)| i)
            .collect()
    };
    let (in_wal, in_stage) = (find(entries), find(&stage.0));
    match (in_wal.as_slice(), in_stage.as_slice()) {
        ([at], []) => Some((true, zone + at)),
        ([], [at]) => Some((false, *at)),
        _ => None,
    }
}

#[test]
fn a_flipped_bit_in_an_acknowledged_record_is_reported_and_loses_nothing() {
    let mut prng = Prng::new(3);
    let (mut in_wal, mut in_stage) = (0, 0);
    for round in 0..200 {
        let mut model = Model::default();
        let mut db = open(create()).unwrap();
        for i in 0..prng.below(600) + 50 {
            let v = value(&mut prng, 40);
            put(&mut db, &mut model, format!("k{i}").as_bytes(), &v);
        }
        // Writes not yet in a table live only in the WAL's live range (or the stage).
        let flushed = db.engine().flushed_sequence();
        let parts = db.into_parts();
        let candidates: Vec<_> = model
            .keys
            .values()
            .filter(|(_, s)| *s > flushed)
            .cloned()
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let (target, seq) = &candidates[prng.below(candidates.len() as u64) as usize];
        let Some((wal, at)) = unique_place(&parts.0, &parts.2, target) else {
            continue; // flushed into a table, or in two places
        };
        let (mut storage, grid, mut stage) = parts;
        let bit = 1 << prng.below(8);
        let at = at + prng.below(target.len() as u64) as usize;
        if wal {
            storage.cache[at] ^= bit;
            in_wal += 1;
        } else {
            stage.0[at] ^= bit;
            in_stage += 1;
        }
        let mut parts = (storage, grid, stage);
        match open(parts_clone(&parts)) {
            Err(Error::CorruptWal(damage)) => {
                assert!(wal, "round {round}");
                assert!(
                    damage.writes.iter().any(|r| r.contains(seq)),
                    "round {round}: {damage:?} names write {seq}"
                );
            }
            Err(Error::CorruptStage(c)) => assert!(!wal, "round {round}: {c:?}"),
            Err(e) => panic!("round {round}: unexpected {e}"),
            Ok(_) => panic!("round {round}: a flipped acknowledged write opened silently"),
        }
        if wal {
            parts.0.cache[at] ^= bit;
        } else {
            parts.2 .0[at] ^= bit;
        }
        let mut db = open(parts).unwrap();
        assert_holds(&mut db, &model, &format!("round {round}, flipped back"));
    }
    assert!(
        in_wal > 30 && in_stage > 30,
        "both places tried: {in_wal} {in_stage}"
    );
}

fn parts_clone(parts: &(MemStorage, MemoryStore, MemStage)) -> (MemStorage, MemoryStore, MemStage) {
    let storage = MemStorage {
        cache: parts.0.cache.clone(),
        durable: parts.0.durable.clone(),
        unsynced: parts.0.unsynced.clone(),
        pending: Vec::new(),
        fail_sync_after: None,
    };
    (storage, parts.1.clone(), parts.2.clone())
}

#[test]
fn a_failed_sync_poisons_the_handle_and_loses_nothing_acknowledged() {
    let mut prng = Prng::new(4);
    let mut model = Model::default();
    let mut db = open(create()).unwrap();
    for i in 0..200 {
        put(
            &mut db,
            &mut model,
            format!("k{i}").as_bytes(),
            &value(&mut prng, 30),
        );
    }
    db.storage_mut().fail_sync_after = Some(0);
    assert_eq!(db.sync(), Err(Error::Write(WriteError::Io)));
    let batch = [Write {
        key: b"after",
        value: Some(b"x"),
    }];
    let mut payload = Vec::new();
    writes::encode(&batch, &mut payload);
    let later = db.write(&payload, |e, s| e.apply(s, &batch));
    assert!(matches!(later, Err(Error::Poisoned(_))), "{later:?}");
    assert!(matches!(db.engine_mut(), Err(Error::Poisoned(_))));
    assert!(matches!(db.sync(), Err(Error::Poisoned(_))));
    let (mut storage, grid, stage) = db.into_parts();
    storage.fail_sync_after = None;
    let mut db = open((storage, grid, stage)).unwrap();
    assert_holds(&mut db, &model, "reopened after the failed sync");
}

#[test]
fn a_stage_record_is_a_whole_number_of_words() {
    assert_eq!(stage::record_size(0) % 8, 0);
}
