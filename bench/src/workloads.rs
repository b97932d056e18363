//! The phases: key and value generation, the timed loop, and the measurements around it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::engine::Engine;
use crate::metrics::{disk_bytes, latency_histogram, process_bytes_written, Latency};
use crate::rng::{mix64, Rng};
use crate::zipfian::{Zipfian, THETA};

pub const KEY_LEN: usize = 16;
/// Keys read by read-missing come from indexes here and above, far past any inserted one.
const MISSING_BASE: u64 = 1 << 62;
const SCAN_LEN: usize = 100;
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The key of item `index`: a bijective hash of the index (so consecutive items land all over the
/// key space and any index past the inserted ones is a missing key inside the range), then the
/// index itself.
pub fn key(index: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&mix64(index).to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

#[derive(Clone, Debug)]
pub struct Params {
    pub keys: u64,
    pub value_size: usize,
    pub ops: u64,
    pub seed: u64,
}

/// What one phase measured on one engine.
#[derive(Clone, Debug)]
pub struct PhaseResult {
    pub engine: String,
    pub phase: String,
    pub ops: u64,
    pub secs: f64,
    pub latency: Latency,
    /// Process bytes written over user bytes written, for the phase plus its drain.
    pub write_amp: Option<f64>,
    /// Disk bytes allocated over live logical bytes, after the drain.
    pub space_amp: Option<f64>,
    pub disk_mib: Option<f64>,
    /// Time to flush and wait for background work after the timed loop (not in ops/s).
    pub drain_secs: Option<f64>,
    /// A sanity check of the answers (hits, entries scanned).
    pub check: String,
    pub engine_state: String,
}

impl PhaseResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// Counts of what the operations of a phase did.
#[derive(Default)]
struct Counters {
    puts: u64,
    lookups: u64,
    hits: u64,
    scans: u64,
    scanned: u64,
}

/// One engine under test and everything the phases share.
pub struct Bench {
    engine: Box<dyn Engine>,
    name: String,
    dir: PathBuf,
    params: Params,
    rng: Rng,
    /// Items `0..items` have been inserted.
    items: u64,
    value: Vec<u8>,
    counters: Counters,
    zipfian: Option<Zipfian>,
}

/// A YCSB core workload: operation shares (the rest are reads) and the key chooser.
struct Mix {
    name: &'static str,
    update: f64,
    insert: f64,
    scan: f64,
    read_modify_write: f64,
    latest: bool,
}

const YCSB: [Mix; 6] = [
    Mix::new("ycsb-a", 0.5, 0.0, 0.0, 0.0, false),
    Mix::new("ycsb-b", 0.05, 0.0, 0.0, 0.0, false),
    Mix::new("ycsb-c", 0.0, 0.0, 0.0, 0.0, false),
    Mix::new("ycsb-d", 0.0, 0.05, 0.0, 0.0, true),
    Mix::new("ycsb-e", 0.0, 0.05, 0.95, 0.0, false),
    Mix::new("ycsb-f", 0.0, 0.0, 0.0, 0.5, false),
];

impl Mix {
    const fn new(
        name: &'static str,
        update: f64,
        insert: f64,
        scan: f64,
        read_modify_write: f64,
        latest: bool,
    ) -> Mix {
        Mix {
            name,
            update,
            insert,
            scan,
            read_modify_write,
            latest,
        }
    }
}

enum Op {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
}

impl Bench {
    pub fn new(engine: Box<dyn Engine>, name: &str, dir: &Path, params: Params) -> Self {
        Bench {
            engine,
            name: name.to_string(),
            dir: dir.to_path_buf(),
            rng: Rng::new(params.seed),
            value: vec![0; params.value_size],
            params,
            items: 0,
            counters: Counters::default(),
            zipfian: None,
        }
    }

    /// Runs every phase in order, handing each result to `report` as soon as it is measured.
    pub fn run_all(&mut self, mut report: impl FnMut(&PhaseResult)) -> Vec<PhaseResult> {
        let mut results = Vec::new();
        let mut record = |r: PhaseResult| {
            report(&r);
            results.push(r);
        };
        record(self.fill_random());
        record(self.read_random());
        record(self.read_missing());
        record(self.scan());
        record(self.overwrite());
        for mix in &YCSB {
            record(self.ycsb(mix));
        }
        results
    }

    fn fill_random(&mut self) -> PhaseResult {
        let total = self.params.keys;
        self.writing_phase("fill-random", total, |b| {
            let index = b.items;
            b.insert(index);
        })
    }

    fn read_random(&mut self) -> PhaseResult {
        let (items, size) = (self.items, self.params.value_size);
        let mut r = self.phase("read-random", self.params.ops, |b| {
            let index = b.rng.below(items);
            b.read(index, size);
        });
        r.check = self.hits_check();
        r
    }

    fn read_missing(&mut self) -> PhaseResult {
        let mut r = self.phase("read-missing", self.params.ops, |b| {
            let index = MISSING_BASE + b.rng.below(1 << 40);
            b.read(index, 0);
        });
        r.check = self.hits_check();
        r
    }

    fn scan(&mut self) -> PhaseResult {
        let items = self.items;
        let total = (self.params.ops / 100).max(1);
        let mut r = self.phase("scan", total, |b| {
            let index = b.rng.below(items);
            b.scan_from(index, SCAN_LEN);
        });
        r.check = self.scan_check();
        r
    }

    fn overwrite(&mut self) -> PhaseResult {
        let (items, total) = (self.items, self.params.keys);
        self.writing_phase("overwrite", total, |b| {
            let index = b.rng.below(items);
            b.write(index);
        })
    }

    fn ycsb(&mut self, mix: &Mix) -> PhaseResult {
        let items = self.items;
        let zipfian = self
            .zipfian
            .get_or_insert_with(|| Zipfian::new(items, THETA));
        zipfian.grow(items);
        let ops = self.params.ops;
        let writes = mix.update + mix.insert + mix.read_modify_write > 0.0;
        let run = |b: &mut Bench| b.ycsb_op(mix);
        let mut r = if writes {
            self.writing_phase(mix.name, ops, run)
        } else {
            self.phase(mix.name, ops, run)
        };
        r.check = [r.check.clone(), self.hits_check(), self.scan_check()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        r
    }

    fn ycsb_op(&mut self, mix: &Mix) {
        let size = self.params.value_size;
        match self.choose(mix) {
            Op::Read => {
                let index = self.choose_item(mix.latest);
                self.read(index, size);
            }
            Op::Update => {
                let index = self.choose_item(false);
                self.write(index);
            }
            Op::Insert => {
                let index = self.items;
                self.insert(index);
                let items = self.items;
                self.zipfian.as_mut().expect("zipfian").grow(items);
            }
            Op::Scan => {
                let index = self.choose_item(false);
                let len = 1 + self.rng.below(SCAN_LEN as u64) as usize;
                self.scan_from(index, len);
            }
            Op::ReadModifyWrite => {
                let index = self.choose_item(false);
                self.read(index, size);
                self.write(index);
            }
        }
    }

    fn choose(&mut self, mix: &Mix) -> Op {
        let mut u = self.rng.unit();
        for (share, op) in [
            (mix.update, Op::Update),
            (mix.insert, Op::Insert),
            (mix.scan, Op::Scan),
            (mix.read_modify_write, Op::ReadModifyWrite),
        ] {
            if u < share {
                return op;
            }
            u -= share;
        }
        Op::Read
    }

    /// A zipfian item: item 0 (the first inserted) is the hottest, or with `latest` the newest.
    fn choose_item(&mut self, latest: bool) -> u64 {
        let rank = self.zipfian.as_ref().expect("zipfian").next(&mut self.rng);
        if latest {
            self.items - 1 - rank
        } else {
            rank
        }
    }

    // ---- single operations ----

    /// Writes a new pseudo-random value for item `index`.
    fn write(&mut self, index: u64) {
        self.rng.fill(&mut self.value);
        self.engine.put(&key(index), &self.value);
        self.counters.puts += 1;
    }

    fn insert(&mut self, index: u64) {
        debug_assert_eq!(index, self.items);
        self.write(index);
        self.items += 1;
    }

    /// Reads item `index`; a hit is a value of `expected_len` bytes.
    fn read(&mut self, index: u64, expected_len: usize) {
        let value = self.engine.get(&key(index));
        self.counters.lookups += 1;
        if value.is_some_and(|v| v.len() == expected_len) {
            self.counters.hits += 1;
        }
    }

    fn scan_from(&mut self, index: u64, len: usize) {
        let visited = self.engine.scan(&key(index), len);
        self.counters.scans += 1;
        self.counters.scanned += visited as u64;
    }

    // ---- measurement ----

    /// Runs `op` `total` times, timing each call; logs progress to stderr.
    fn phase(&mut self, phase: &str, total: u64, mut op: impl FnMut(&mut Bench)) -> PhaseResult {
        self.counters = Counters::default();
        let mut hist = latency_histogram();
        let start = Instant::now();
        let mut next_progress = start + PROGRESS_EVERY;
        for done in 0..total {
            let t = Instant::now();
            op(self);
            record(&mut hist, t.elapsed());
            if done % 1024 == 0 && Instant::now() >= next_progress {
                self.progress(phase, done, total, start.elapsed());
                next_progress += PROGRESS_EVERY;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let engine_state = self.engine.describe();
        PhaseResult {
            engine: self.name.clone(),
            phase: phase.to_string(),
            ops: total,
            secs,
            latency: Latency::of(&hist),
            write_amp: None,
            space_amp: None,
            disk_mib: None,
            drain_secs: None,
            check: String::new(),
            engine_state,
        }
    }

    /// A phase that writes: also drains (flush, then wait for background work) and measures
    /// write and space amplification over the phase and its drain.
    fn writing_phase(
        &mut self,
        phase: &str,
        total: u64,
        op: impl FnMut(&mut Bench),
    ) -> PhaseResult {
        let written_before = process_bytes_written();
        let mut r = self.phase(phase, total, op);
        let user_bytes = self.counters.puts * (KEY_LEN + self.params.value_size) as u64;
        let drain = Instant::now();
        self.engine.flush();
        self.engine.wait_idle();
        r.drain_secs = Some(drain.elapsed().as_secs_f64());
        let written = process_bytes_written() - written_before;
        r.write_amp = Some(written as f64 / user_bytes as f64);
        let disk = disk_bytes(&self.dir);
        r.disk_mib = Some(disk as f64 / f64::from(1 << 20));
        r.space_amp = Some(disk as f64 / self.live_bytes() as f64);
        r.check = format!("{} puts", self.counters.puts);
        r.engine_state = self.engine.describe();
        r
    }

    fn live_bytes(&self) -> u64 {
        self.items * (KEY_LEN + self.params.value_size) as u64
    }

    fn hits_check(&self) -> String {
        let c = &self.counters;
        if c.lookups == 0 {
            return String::new();
        }
        format!("found {}/{}", c.hits, c.lookups)
    }

    fn scan_check(&self) -> String {
        let c = &self.counters;
        if c.scans == 0 {
            return String::new();
        }
        format!("{:.1} entries/scan", c.scanned as f64 / c.scans as f64)
    }

    fn progress(&self, phase: &str, done: u64, total: u64, elapsed: Duration) {
        eprintln!(
            "[{}] {phase}: {done}/{total} ({:.0}%, {:.0} ops/s)",
            self.name,
            100.0 * done as f64 / total as f64,
            done as f64 / elapsed.as_secs_f64()
        );
    }
}

fn record(hist: &mut Histogram<u64>, elapsed: Duration) {
    hist.saturating_record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1));
}
