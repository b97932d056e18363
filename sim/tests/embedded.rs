//! The embedded database (`ziggy_core::embedded`) under the simulator's storage: torn and lost
//! writes at machine crashes, failed writes, latent faults in the WAL, and process crashes that
//! keep the OS's cache and the stage. The checker:
//!
//! - after a process crash, the database holds exactly the acknowledged writes;
//! - after a machine crash (the stage and unsynced writes gone), it holds a prefix of them at
//!   least as long as the last completed sync;
//! - an open may fail only where a fault damaged the file, and then it names the damage.
//!
//! `ZIGGY_EMBEDDED_SEEDS` sets the number of seeds (default 100), `ZIGGY_EMBEDDED_FIRST` the
//! first (default 0).

use std::collections::BTreeMap;

use ziggy_core::embedded::{self, writes, Embedded, Error, Sizes};
use ziggy_core::lsm::{Options, Write};
use ziggy_core::wal::stage::MemStage;
use ziggy_core::{Layout, Zone};
use ziggy_sim::prng::{Ppm, Prng};
use ziggy_sim::storage::{FaultAtlas, SimGrid, SimStorage, StorageFaults};

type Db = Embedded<SimStorage, SimGrid, MemStage>;
type Batch = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// What a batch of seeds reached: each counter must be hit for the checker to mean anything.
#[derive(Default, Debug)]
struct Reached {
    writes: u64,
    seals: u64,
    syncs: u64,
    table_checkpoints: u64,
    full_checkpoints: u64,
    process_crashes: u64,
    machine_crashes: u64,
    restaged: u64,
    proofs: u64,
    poisoned: u64,
    reported_damage: u64,
    truncated: u64,
}

struct Run {
    prng: Prng,
    faults: StorageFaults,
    sizes: Sizes,
    options: Options,
    /// Every acknowledged batch; batch `i` has sequence `i + 1`.
    history: Vec<Batch>,
    /// The sequence the last completed sync made durable.
    synced: u64,
    reached: Reached,
}

impl Run {
    fn state_at(&self, sequence: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut state = BTreeMap::new();
        for batch in &self.history[..sequence as usize] {
            for (key, value) in batch {
                match value {
                    Some(v) => state.insert(key.clone(), v.clone()),
                    None => state.remove(key),
                };
            }
        }
        state
    }

    fn area(&self) -> usize {
        self.sizes.config(self.options.clone()).entry_body_max()
    }

    fn batch(&mut self) -> Batch {
        let keys = 1 + self.prng.range(0, 300);
        (0..1 + self.prng.range(0, 3))
            .map(|_| {
                let key = format!("k{}", self.prng.range(0, keys)).into_bytes();
                let value = (!self.prng.chance(Ppm::percent(15))).then(|| {
                    let len = self.prng.range(0, 300) as usize;
                    let mut v = vec![0u8; len];
                    self.prng.fill(&mut v);
                    v
                });
                (key, value)
            })
            .collect()
    }

    /// Opens after a crash and checks what survived; None when the open reported damage.
    fn reopen(&mut self, parts: (SimStorage, SimGrid, MemStage), machine: bool) -> Option<Db> {
        let (mut storage, grid, stage) = parts;
        // Opens run without injected write errors: a failed open returns nothing to retry with
        // here (a real caller reopens the path). Writes fail again once it is open.
        storage.set_faults(StorageFaults {
            write_error: Ppm::NEVER,
            ..self.faults.clone()
        });
        let damaged = !storage.damaged().is_empty();
        match Embedded::open(
            storage,
            grid,
            stage,
            self.sizes,
            self.options.clone(),
            false,
        ) {
            Ok((mut db, report)) => {
                db.storage_mut().set_faults(self.faults.clone());
                self.reached.restaged += (report.staged_writes > 0) as u64;
                self.reached.proofs += report.stage_proof as u64;
                self.reached.truncated += (report.truncated > 0) as u64;
                let sequence = db.engine().sequence();
                let acknowledged = self.history.len() as u64;
                if machine {
                    assert!(
                        sequence >= self.synced && sequence <= acknowledged,
                        "after a machine crash: sequence {sequence}, synced {}, acknowledged \
                         {acknowledged}",
                        self.synced
                    );
                    self.history.truncate(sequence as usize);
                } else {
                    assert_eq!(sequence, acknowledged, "a process crash lost writes");
                }
                let expected = self.state_at(sequence);
                let engine = db.engine_mut().unwrap();
                let found: BTreeMap<_, _> = engine
                    .scan(b"", None, sequence, usize::MAX, false)
                    .unwrap()
                    .into_iter()
                    .collect();
                assert!(
                    found == expected,
                    "the contents differ at sequence {sequence}"
                );
                self.synced = self.synced.min(sequence);
                Some(db)
            }
            Err(e) => {
                assert!(damaged, "an open failed without a fault: {e}");
                assert!(
                    matches!(
                        e,
                        Error::CorruptWal(_)
                            | Error::CorruptStage(_)
                            | Error::Corrupt(_)
                            | Error::Read { .. }
                            | Error::Engine(_)
                            | Error::NoSuperblock
                    ),
                    "{e}"
                );
                self.reached.reported_damage += 1;
                None
            }
        }
    }
}

fn run(seed: u64, reached: &mut Reached) {
    let mut prng = Prng::new(seed);
    let sizes = Sizes {
        grid_block_size: 4096,
        wal_slot_count: [8, 16, 32][prng.index(3)],
        wal_entry_size: 4096 * (1 + prng.range(0, 1) as u32),
    };
    let options = Options {
        memtable_bytes: [2 << 10, 8 << 10, 32 << 10][prng.index(3)],
        ..Options::small()
    };
    let layout = Layout::new(&sizes.config(options.clone()));
    let fatal = prng.chance(Ppm::percent(30));
    let mut atlas = FaultAtlas::none();
    atlas.tear = [Zone::WalEntries, Zone::WalHeaders, Zone::Grid]
        .into_iter()
        .collect();
    if fatal {
        atlas.latent = [Zone::WalEntries, Zone::WalHeaders].into_iter().collect();
    }
    let faults = StorageFaults {
        atlas,
        tear: Ppm::percent(prng.range(0, 50) as u32),
        write_error: if prng.chance(Ppm::percent(20)) {
            Ppm(prng.range(100, 3000) as u32)
        } else {
            Ppm::NEVER
        },
        ..StorageFaults::none()
    };
    let quiet = StorageFaults {
        write_error: Ppm::NEVER,
        ..faults.clone()
    };
    let mut storage = SimStorage::new(layout, quiet, prng.fork());
    embedded::format(&mut storage, sizes, seed | 1).unwrap();
    let grid = SimGrid::new(4096, Ppm::NEVER, prng.fork());
    let mut run = Run {
        prng,
        faults,
        sizes,
        options,
        history: Vec::new(),
        synced: 0,
        reached: Reached::default(),
    };
    let stage = MemStage::new(run.area());
    let mut db = run
        .reopen((storage, grid, stage), false)
        .expect("a new file opens");
    let ops = run.prng.range(100, 3000);
    for _ in 0..ops {
        let roll = run.prng.range(0, 999);
        let result = match roll {
            0..=899 => {
                let batch = run.batch();
                let borrowed: Vec<Write> = batch
                    .iter()
                    .map(|(k, v)| Write {
                        key: k,
                        value: v.as_deref(),
                    })
                    .collect();
                let mut payload = Vec::new();
                writes::encode(&borrowed, &mut payload);
                let result = db.write(&payload, |e, s| e.apply(s, &borrowed));
                if result.is_ok() {
                    run.history.push(batch);
                    run.reached.writes += 1;
                }
                result.map(|_| ())
            }
            900..=929 => db.sync().map(|()| run.synced = run.history.len() as u64),
            930..=939 => db
                .checkpoint()
                .map(|()| run.synced = run.history.len() as u64),
            940..=969 => db.compact(64).map(|_| ()),
            _ => Err(Error::Corrupt("crash".into())), // a crash, below
        };
        let crash = result.is_err();
        if matches!(result, Err(Error::Write(_) | Error::Poisoned(_))) {
            run.reached.poisoned += 1;
        }
        if !crash {
            continue;
        }
        let stats = db.stats();
        run.reached.seals += stats.seals;
        run.reached.syncs += stats.syncs;
        run.reached.full_checkpoints += stats.full_checkpoints;
        run.reached.table_checkpoints += stats.checkpoints - stats.full_checkpoints;
        let (mut storage, grid, mut stage) = db.into_parts();
        let machine = run.prng.chance(Ppm::percent(30));
        if machine {
            storage.crash();
            grid.crash(run.prng.next_u64());
            stage = MemStage::new(run.area());
            run.reached.machine_crashes += 1;
        } else {
            storage.process_crash();
            run.reached.process_crashes += 1;
        }
        if fatal && run.prng.chance(Ppm::percent(50)) {
            storage.inject_latent();
        }
        match run.reopen((storage, grid, stage), machine) {
            Some(next) => db = next,
            None => break,
        }
    }
    let r = &run.reached;
    for (total, part) in [
        (&mut reached.writes, r.writes),
        (&mut reached.seals, r.seals),
        (&mut reached.syncs, r.syncs),
        (&mut reached.table_checkpoints, r.table_checkpoints),
        (&mut reached.full_checkpoints, r.full_checkpoints),
        (&mut reached.process_crashes, r.process_crashes),
        (&mut reached.machine_crashes, r.machine_crashes),
        (&mut reached.restaged, r.restaged),
        (&mut reached.proofs, r.proofs),
        (&mut reached.poisoned, r.poisoned),
        (&mut reached.reported_damage, r.reported_damage),
        (&mut reached.truncated, r.truncated),
    ] {
        *total += part;
    }
}

#[test]
fn embedded_database_under_storage_faults() {
    let seeds: u64 = std::env::var("ZIGGY_EMBEDDED_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let first: u64 = std::env::var("ZIGGY_EMBEDDED_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut reached = Reached::default();
    for seed in first..first + seeds {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed, &mut reached)));
        if let Err(panic) = outcome {
            eprintln!("embedded seed {seed} failed");
            std::panic::resume_unwind(panic);
        }
    }
    eprintln!("{reached:?}");
    let r = &reached;
    for (name, n) in [
        ("seals", r.seals),
        ("syncs", r.syncs),
        ("table checkpoints", r.table_checkpoints),
        ("full checkpoints", r.full_checkpoints),
        ("process crashes", r.process_crashes),
        ("machine crashes", r.machine_crashes),
        ("re-staged writes", r.restaged),
        ("stage proofs", r.proofs),
        ("poisoned handles", r.poisoned),
        ("reported damage", r.reported_damage),
        ("truncated tails", r.truncated),
    ] {
        assert!(n > 0, "no seed reached {name}: {reached:?}");
    }
}
