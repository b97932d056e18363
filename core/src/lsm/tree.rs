//! The LSM engine: memtable, levels of tables, paced flushes and compactions, MVCC reads,
//! snapshots, transactions and checkpoints, over a [`BlockStore`].
//!
//! The engine is synchronous and deterministic: it never reads a clock, and all background work
//! happens in *beats* — small bounded steps taken inside `apply` (in proportion to the entries
//! written, faster as level 0 fills: stall control) or in `work` when the caller is idle.
//!
//! Durability is the caller's: `apply` takes the sequence number of a write the caller has
//! already logged (the WAL index); `checkpoint` makes everything up to `sequence()` durable in the
//! grid and returns a [`Checkpoint`] for the caller's superblock; after the superblock switch,
//! `checkpoint_durable` lets blocks the new checkpoint no longer references be reused. Opening
//! from a checkpoint reads only its manifest's root (the rest is read as it is needed: see
//! `manifest`), and the caller replays its log from `Checkpoint::sequence + 1`.

use super::block::{Block, Find, Kind};
use super::bloom;
use super::cache::BlockCache;
use super::cursor::{self, Cursor, Source};
use super::entries::{Entries, EntryRef};
use super::grid::{self, BlockKind, BlockRef, BlockStore, FreeSet, GridError};
use super::manifest::{self, Chunk, FreeRef, Root};
use super::memtable::{Found, Frozen, Memtable};
use super::table::{self, Loaded, TableBuilder, TableMeta};
use std::collections::BTreeMap;

/// A key and its value, as scans return them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Tuning, fixed when the engine opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// A memtable holding this many bytes is frozen and flushed.
    pub memtable_bytes: usize,
    /// Data blocks per table written by compaction.
    pub table_blocks: u64,
    pub bits_per_key: u32,
    /// Blocks the block cache holds (allocated at open).
    pub cache_blocks: usize,
    /// Bytes of the row cache: the latest values of keys read recently (`rows.rs`).
    pub row_cache_bytes: usize,
    /// Level-0 tables that start a compaction into level 1.
    pub l0_trigger: usize,
    /// Level-0 tables from which writes do ever more compaction work each.
    pub l0_slowdown: usize,
    /// Level-0 tables at which a write waits for compaction to bring the count down.
    pub l0_stop: usize,
    /// The size of level 1 (bytes of entries); each level below is `level_ratio` times larger.
    pub l1_bytes: u64,
    pub level_ratio: u64,
    pub levels: usize,
    /// Entries of compaction work per entry written, before stall control raises it.
    pub pace: usize,
}

impl Options {
    /// Small everything: many flushes, levels and compactions with little data (tests).
    pub fn small() -> Options {
        Options {
            memtable_bytes: 4 << 10,
            table_blocks: 4,
            bits_per_key: 10,
            cache_blocks: 16,
            row_cache_bytes: 2 << 10, // small: the cache starts over often under test
            l0_trigger: 2,
            l0_slowdown: 4,
            l0_stop: 6,
            l1_bytes: 8 << 10,
            level_ratio: 4,
            levels: 5,
            pace: 8,
        }
    }

    /// Defaults for real files.
    pub fn production() -> Options {
        Options {
            memtable_bytes: 64 << 20,
            table_blocks: 512,
            bits_per_key: 10,
            cache_blocks: 8192,
            row_cache_bytes: 32 << 20,
            l0_trigger: 4,
            l0_slowdown: 12,
            l0_stop: 20,
            l1_bytes: 256 << 20,
            level_ratio: 10,
            levels: 7,
            pace: 24,
        }
    }
}

/// One write of a batch; `value: None` deletes.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    Grid(GridError),
    /// A key plus value larger than a block holds.
    EntryTooLarge {
        size: usize,
        max: usize,
    },
    /// A transaction's write collides with a write committed after its snapshot.
    Conflict {
        key: Vec<u8>,
    },
    /// The manifest a checkpoint names does not decode.
    Manifest(&'static str),
}

impl From<GridError> for Error {
    fn from(e: GridError) -> Error {
        Error::Grid(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Grid(e) => write!(f, "{e}"),
            Error::EntryTooLarge { size, max } => {
                write!(
                    f,
                    "entry of {size} bytes exceeds the maximum of {max} (key + value)"
                )
            }
            Error::Conflict { key } => write!(
                f,
                "transaction conflict: key {:?} was written after the transaction's snapshot",
                String::from_utf8_lossy(key)
            ),
            Error::Manifest(why) => write!(f, "manifest: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// What a caller records to open the engine again: the manifest's first block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub manifest: BlockRef,
    /// Every write up to this sequence is in the checkpoint.
    pub sequence: u64,
}

impl Checkpoint {
    pub const ENCODED_SIZE: usize = 20;

    pub fn encode(&self) -> [u8; Self::ENCODED_SIZE] {
        let mut out = Vec::with_capacity(Self::ENCODED_SIZE);
        self.manifest.encode(&mut out);
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.try_into().unwrap()
    }

    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        Some(Checkpoint {
            manifest: BlockRef::decode(bytes.get(0..12)?)?,
            sequence: u64::from_le_bytes(bytes.get(12..20)?.try_into().ok()?),
        })
    }
}

/// A pinned read view; release it with [`Engine::release`].
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub sequence: u64,
}

/// A snapshot-isolated transaction: reads see its snapshot and its own writes; commit fails with
/// [`Error::Conflict`] if another write to one of its keys committed after the snapshot.
pub struct Transaction {
    snapshot: Snapshot,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Transaction {
    pub fn snapshot(&self) -> u64 {
        self.snapshot.sequence
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }

    pub fn writes(&self) -> impl Iterator<Item = Write<'_>> {
        self.writes.iter().map(|(key, value)| Write {
            key,
            value: value.as_deref(),
        })
    }

    pub fn is_read_only(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Counters for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of keys and values applied.
    pub user_bytes: u64,
    /// Data block reads served from the grid (cache misses).
    pub block_reads: u64,
    pub flushes: u64,
    pub compactions: u64,
    /// Compactions (and trivial moves) by output level: 1, 2, 3 and deeper.
    pub compactions_into: [u64; 3],
    pub trivial_moves: u64,
    /// Writes that had to finish a flush or compaction before returning.
    pub stalls: u64,
    /// Entries compaction and flush processed.
    pub merged: u64,
    /// Table filters a point read consulted, and those that let the key through.
    pub filter_probes: u64,
    pub filter_passes: u64,
}

struct Table {
    meta: TableMeta,
    loaded: Option<Loaded>,
}

/// A table of a sorted level as point reads search it: the key range with its prefixes (see
/// `table::key_prefix`), kept beside the level so a search chases no pointers into the tables.
/// Maintained as tables enter and leave the level (never rebuilt: levels hold thousands).
struct Fence {
    max_prefix: u128,
    max_key: Vec<u8>,
    min_key: Vec<u8>,
    id: u64,
}

impl Fence {
    fn of(meta: &TableMeta) -> Fence {
        Fence {
            max_prefix: table::key_prefix(&meta.max_key),
            max_key: meta.max_key.clone(),
            min_key: meta.min_key.clone(),
            id: meta.id,
        }
    }
}

/// Key ranges of the tables below a job's output: a key none of them holds is at the bottom.
struct Below {
    level0: Vec<(Vec<u8>, Vec<u8>)>,
    /// Per level, sorted and disjoint.
    levels: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Below {
    fn holds(&self, key: &[u8]) -> bool {
        let within = |(min, max): &(Vec<u8>, Vec<u8>)| min.as_slice() <= key && key <= max;
        self.level0.iter().any(within)
            || self.levels.iter().any(|level| {
                let i = level.partition_point(|(_, max)| max.as_slice() < key);
                level.get(i).is_some_and(within)
            })
    }
}

/// A flush or compaction in progress: a merge of its input cursors into output tables.
struct Job {
    cursors: Vec<Cursor>,
    /// (level, table id) of every input table.
    inputs: Vec<(usize, u64)>,
    output_level: usize,
    /// Flushes write one table; compactions split outputs at `table_blocks`.
    split: bool,
    below: Below,
    builder: Option<TableBuilder>,
    outputs: Vec<(TableMeta, Loaded)>,
    done: bool,
}

impl Job {
    /// Blocks written for outputs not yet installed: free in a checkpoint taken now.
    fn unreferenced(&self) -> Vec<u64> {
        let mut blocks: Vec<u64> = self
            .builder
            .iter()
            .flat_map(|b| b.written.clone())
            .collect();
        for (meta, loaded) in &self.outputs {
            blocks.extend(loaded.addresses(meta));
        }
        blocks
    }
}

/// Entries of compaction per step while a write waits at the level-0 stop mark.
const STALL_STEP: usize = 4096;

/// Free blocks left undiscarded before discarding them, at least (see `checkpoint_durable`).
const DISCARD_MIN_BLOCKS: u64 = 4096;
/// The shortest run of free blocks a table checkpoint discards.
const DISCARD_MIN_RUN: u64 = 64;
/// The most blocks a table checkpoint discards (64 MiB of 4 KiB blocks).
const DISCARD_BUDGET_BLOCKS: u64 = 16_384;

pub struct Engine<S: BlockStore> {
    store: S,
    options: Options,
    free: FreeSet,
    /// The checkpoint's free set, until it is read (see `manifest`): `free` is empty until then.
    free_pending: Option<FreeRef>,
    /// Per level, the chunks of its tables not read yet (in key order; see `manifest`).
    unloaded: Vec<Vec<Chunk>>,
    sequence: u64,
    /// Every write up to here is in tables.
    flushed_sequence: u64,
    next_table_id: u64,
    memtable: Memtable,
    frozen: Option<Frozen>,
    /// Table ids per level: level 0 newest first, the others sorted by key.
    levels: Vec<Vec<u64>>,
    /// Per level, its tables' fences (level 0 has none: its tables overlap).
    fences: Vec<Vec<Fence>>,
    /// Per level, the bytes of its tables.
    level_totals: Vec<u64>,
    tables: BTreeMap<u64, Table>,
    flush: Option<Job>,
    compaction: Option<Job>,
    /// The levels changed since compaction was last found not due.
    shape_changed: bool,
    /// Where each level's next compaction starts (round robin over its key space).
    pointers: Vec<Vec<u8>>,
    snapshots: BTreeMap<u64, usize>,
    cache: BlockCache,
    /// The latest values of keys read recently (`rows.rs`).
    rows: super::rows::Rows,
    /// Blocks of the last checkpoint's manifest (those of chunks not read yet excepted).
    manifest_blocks: Vec<u64>,
    stats: Stats,
    scratch: Vec<u8>,
    /// Keys rebuilt during point reads.
    key_scratch: Vec<u8>,
    /// The last flushed memtable's value arena, for the next memtable to reuse.
    spare_arena: Vec<u8>,
    /// Blocks freed since free blocks were last discarded (some may be in use again).
    undiscarded: Vec<u64>,
    /// The checkpoint being written is a full one (memtables flushed).
    full_checkpoint: bool,
    /// Every replica that applied the same log holds the same blocks at a checkpoint (see
    /// [`Engine::make_deterministic`]).
    deterministic: bool,
    /// Deterministic: the last checkpoint is durable, and what it released is freed when the
    /// next one starts.
    staged_durable: bool,
    /// While a backup copies a checkpoint (`hold_frees`): blocks no checkpoint references any
    /// more, kept from reuse so that the checkpoint being copied stays whole. Checkpoints
    /// record them as free (nothing references them), so a restart lets them go.
    held: Option<Vec<u64>>,
    /// Planted bug `FreeOnDurable` (see [`Engine::plant_free_on_durable`]).
    free_on_durable: bool,
    /// One key's versions during merges (reused: merging allocates nothing per entry).
    versions: Entries,
}

impl<S: BlockStore> Engine<S> {
    /// Opens the engine: empty without a checkpoint, else as the checkpoint left it.
    pub fn open(
        store: S,
        options: Options,
        checkpoint: Option<Checkpoint>,
    ) -> Result<Engine<S>, Error> {
        assert!(options.levels >= 2 && options.l0_trigger <= options.l0_slowdown);
        assert!(options.l0_slowdown <= options.l0_stop && options.table_blocks > 0);
        let block_size = store.block_size();
        let mut engine = Engine {
            free: FreeSet::default(),
            free_pending: None,
            unloaded: vec![Vec::new(); options.levels],
            sequence: 0,
            flushed_sequence: 0,
            next_table_id: 1,
            memtable: Memtable::with_capacity(options.memtable_bytes),
            frozen: None,
            levels: vec![Vec::new(); options.levels],
            fences: (0..options.levels).map(|_| Vec::new()).collect(),
            level_totals: vec![0; options.levels],
            tables: BTreeMap::new(),
            flush: None,
            compaction: None,
            shape_changed: true,
            pointers: vec![Vec::new(); options.levels],
            snapshots: BTreeMap::new(),
            cache: BlockCache::new(block_size, options.cache_blocks),
            rows: super::rows::Rows::new(options.row_cache_bytes),
            manifest_blocks: Vec::new(),
            stats: Stats::default(),
            scratch: Vec::new(),
            key_scratch: Vec::new(),
            spare_arena: Vec::with_capacity(options.memtable_bytes),
            undiscarded: Vec::new(),
            full_checkpoint: false,
            deterministic: false,
            staged_durable: false,
            held: None,
            free_on_durable: false,
            versions: Entries::new(),
            options,
            store,
        };
        engine.load_manifest_root(checkpoint)?;
        Ok(engine)
    }

    /// Returns to the state `checkpoint` names (empty for None), keeping the store: everything
    /// since is forgotten, as after a restart. Snapshots taken before are invalid.
    pub fn reopen(&mut self, checkpoint: Option<Checkpoint>) -> Result<(), Error> {
        let levels = self.options.levels;
        self.free_pending = None;
        self.unloaded = vec![Vec::new(); levels];
        self.sequence = 0;
        self.flushed_sequence = 0;
        self.next_table_id = 1;
        self.memtable = Memtable::with_capacity(self.options.memtable_bytes);
        self.frozen = None;
        self.levels = vec![Vec::new(); levels];
        self.fences.iter_mut().for_each(Vec::clear);
        self.level_totals = vec![0; levels];
        self.tables.clear();
        self.flush = None;
        self.compaction = None;
        self.shape_changed = true;
        self.pointers = vec![Vec::new(); levels];
        self.snapshots.clear();
        self.cache.clear();
        self.rows.clear();
        self.manifest_blocks.clear();
        self.undiscarded.clear();
        self.held = None;
        self.full_checkpoint = false;
        // Reopened from a durable checkpoint: what it released waits for the next one.
        self.staged_durable = true;
        self.load_manifest_root(checkpoint)?;
        if self.deterministic {
            self.load_manifest_rest()?;
        }
        Ok(())
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    pub fn into_store(self) -> S {
        self.store
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The sequence of the last write applied.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The largest key + value one entry may hold.
    pub fn max_entry_size(&self) -> usize {
        table::max_entry_size(self.store.block_size())
    }

    /// Table count per level.
    pub fn shape(&self) -> Vec<usize> {
        let unloaded = |l: usize| {
            self.unloaded[l]
                .iter()
                .map(|c| c.tables as usize)
                .sum::<usize>()
        };
        (0..self.levels.len())
            .map(|l| self.levels[l].len() + unloaded(l))
            .collect()
    }

    /// The tree's shape, one line per level: table ids with key and sequence ranges.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (level, ids) in self.levels.iter().enumerate() {
            out.push_str(&format!("L{level}:"));
            for id in ids {
                let m = &self.tables[id].meta;
                out.push_str(&format!(
                    " #{id}[{}..{} s{}..{} n{}]",
                    String::from_utf8_lossy(&m.min_key),
                    String::from_utf8_lossy(&m.max_key),
                    m.min_sequence,
                    m.max_sequence,
                    m.entries
                ));
            }
            let unloaded: u64 = self.unloaded[level].iter().map(|c| c.tables).sum();
            if unloaded > 0 {
                out.push_str(&format!(" (+{unloaded} tables not read yet)"));
            }
            out.push('\n');
        }
        out
    }

    /// Bytes of entries per level.
    pub fn level_bytes(&self, level: usize) -> u64 {
        self.level_totals[level]
    }

    /// Bytes compaction owes: all of level 0 (every flush there is merged down), and what each
    /// level between holds beyond its target size (RocksDB's pending compaction bytes). It grows
    /// when writes outrun compaction; for operators, never for decisions.
    pub fn compaction_debt(&self) -> u64 {
        let last = self.options.levels - 1;
        let over: u64 = (1..last)
            .map(|l| self.level_totals[l].saturating_sub(self.target_bytes(l)))
            .sum();
        self.level_totals[0] + over
    }

    /// Blocks in use (tables, manifest, and blocks awaiting the next durable checkpoint).
    pub fn blocks_in_use(&self) -> u64 {
        match self.free_pending {
            Some(free) => free.acquired,
            None => self.free.acquired(),
        }
    }

    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// Loads every table's index and filter (they stay in memory).
    pub fn load_all_tables(&mut self) -> Result<(), Error> {
        self.load_manifest_rest()?;
        let ids: Vec<u64> = self.tables.keys().copied().collect();
        for id in ids {
            self.loaded(id)?;
        }
        Ok(())
    }

    // ---- writes ----

    /// Applies a batch atomically at `sequence` (> every earlier sequence).
    pub fn apply(&mut self, sequence: u64, writes: &[Write]) -> Result<(), Error> {
        self.insert_batch(sequence, writes)?;
        if self.memtable.bytes() >= self.options.memtable_bytes {
            self.rotate_memtable()?;
        }
        self.pace(writes.len().max(1))
    }

    /// Checks a batch's sizes, then puts it into the memtable at `sequence`.
    fn insert_batch(&mut self, sequence: u64, writes: &[Write]) -> Result<(), Error> {
        assert!(sequence > self.sequence, "sequences increase");
        let max = self.max_entry_size();
        for w in writes {
            let size = w.key.len() + w.value.map_or(0, |v| v.len());
            if size > max {
                return Err(Error::EntryTooLarge { size, max });
            }
        }
        for w in writes {
            self.memtable.insert(w.key, sequence, w.value);
            self.rows.write(w.key, w.value);
            self.stats.user_bytes += (w.key.len() + w.value.map_or(0, |v| v.len())) as u64;
        }
        self.sequence = sequence;
        Ok(())
    }

    /// Applies a batch the caller is replaying from its log at startup: like `apply`, but a full
    /// memtable is flushed at once and no compaction is paid for — so recovery costs the same
    /// whatever the size of the tree, and the debt is paid by the writes that follow.
    pub fn apply_replayed(&mut self, sequence: u64, writes: &[Write]) -> Result<(), Error> {
        self.insert_batch(sequence, writes)?;
        if self.memtable.bytes() >= self.options.memtable_bytes {
            self.rotate_memtable()?;
            self.finish_flush()?;
        }
        Ok(())
    }

    /// Freezes the memtable and starts its flush (finishing the previous flush first).
    fn rotate_memtable(&mut self) -> Result<(), Error> {
        self.load_manifest_rest()?; // a flush needs every table's key range and the free set
        if self.flush.is_some() {
            self.stats.stalls += 1;
            self.finish_flush()?;
        }
        let frozen = self.memtable.freeze(std::mem::take(&mut self.spare_arena));
        if frozen.is_empty() {
            self.spare_arena = frozen.into_arena();
            return Ok(());
        }
        let limit = frozen.len();
        self.frozen = Some(frozen);
        let cursor = Cursor::new(Source::Frozen { next: 0, limit }, &[], None, false);
        let below = self.below(0, true);
        self.flush = Some(Job {
            cursors: vec![cursor],
            inputs: Vec::new(),
            output_level: 0,
            split: false,
            below,
            builder: None,
            outputs: Vec::new(),
            done: false,
        });
        Ok(())
    }

    /// Background work owed for `written` entries: the flush first, then compaction, whose pace
    /// doubles for each level-0 table past the slowdown mark; at the stop mark the write waits.
    fn pace(&mut self, written: usize) -> Result<(), Error> {
        if self.manifest_pending() {
            // After opening: a write reads one more chunk of the manifest; compaction waits for
            // all of it (level 0 cannot grow meanwhile: a flush reads the rest first).
            return self.page_in_step();
        }
        if let Some(job) = self.flush.take() {
            let job = self.step(job, written * 4)?;
            self.flush = job;
        }
        let level0 = self.levels[0].len();
        let mut budget = written * self.options.pace;
        if level0 >= self.options.l0_slowdown {
            budget <<= (level0 + 1 - self.options.l0_slowdown).min(8);
        }
        self.compact(budget)?;
        if self.levels[0].len() >= self.options.l0_stop {
            // Stop: work in steps just until level 0 is below the mark again (not through
            // every compaction that happens to be due).
            self.stats.stalls += 1;
            while self.levels[0].len() >= self.options.l0_stop {
                let before = self.stats.merged;
                self.compact(STALL_STEP)?;
                if self.stats.merged == before && self.compaction.is_none() {
                    break; // nothing left to do (level 0 must be draining through a flush)
                }
            }
        }
        Ok(())
    }

    /// Does up to `budget` entries of background work; returns whether any is left.
    pub fn work(&mut self, budget: usize) -> Result<bool, Error> {
        if self.manifest_pending() {
            self.page_in_step()?;
            return Ok(true);
        }
        if let Some(job) = self.flush.take() {
            self.flush = self.step(job, budget)?;
        }
        self.compact(budget)?;
        Ok(self.flush.is_some() || self.compaction.is_some() || self.pick_compaction().is_some())
    }

    fn finish_flush(&mut self) -> Result<(), Error> {
        while let Some(job) = self.flush.take() {
            self.flush = self.step(job, usize::MAX)?;
        }
        Ok(())
    }

    /// Advances compaction by up to `budget` entries, starting a job when one is due.
    fn compact(&mut self, mut budget: usize) -> Result<(), Error> {
        while budget > 0 {
            let job = match self.compaction.take() {
                Some(job) => job,
                // Whether a compaction is due changes only when the levels do.
                None if !self.shape_changed => return Ok(()),
                None => match self.start_compaction()? {
                    Some(job) => job,
                    None => {
                        self.shape_changed = false;
                        return Ok(());
                    }
                },
            };
            let before = self.stats.merged;
            self.compaction = self.step(job, budget)?;
            let spent = (self.stats.merged - before) as usize;
            budget = budget.saturating_sub(spent.max(1));
        }
        Ok(())
    }

    // ---- jobs ----

    /// The ranges of tables below `level` (including, for a flush, all of level 0).
    fn below(&self, level: usize, flush: bool) -> Below {
        let range = |id: &u64| {
            let meta = &self.tables[id].meta;
            (meta.min_key.clone(), meta.max_key.clone())
        };
        Below {
            level0: if flush {
                self.levels[0].iter().map(range).collect()
            } else {
                Vec::new()
            },
            levels: self.levels[level + 1..]
                .iter()
                .map(|l| l.iter().map(range).collect())
                .collect(),
        }
    }

    fn target_bytes(&self, level: usize) -> u64 {
        let ratio = self.options.level_ratio;
        let bottom = (1..self.options.levels)
            .rev()
            .find(|&l| !self.levels[l].is_empty())
            .unwrap_or(1);
        if level == self.options.levels - 1 {
            return u64::MAX;
        }
        let fixed = self
            .options
            .l1_bytes
            .saturating_mul(ratio.saturating_pow(level as u32 - 1));
        if level >= bottom {
            return fixed;
        }
        // Levels above the bottom are sized from it, so that the bottom holds ~90% of the data
        // and overwritten versions cannot pile up above it (space amplification: everything
        // above the bottom may be garbage under overwrite churn, so no fixed floor here — a
        // 256 MiB level 1 over 1.1 GiB of data was a fifth of the file). Small trees still keep
        // a level 1 a tenth of `l1_bytes`, so that level 0 does not merge straight down.
        let from_bottom = self.level_bytes(bottom) / ratio.saturating_pow((bottom - level) as u32);
        from_bottom.max(self.options.l1_bytes / ratio)
    }

    /// The compaction most due: level 0 past its trigger, else the level most over its target.
    fn pick_compaction(&self) -> Option<usize> {
        if self.levels[0].len() >= self.options.l0_trigger {
            return Some(0);
        }
        let mut best: Option<(f64, usize)> = None;
        for level in 1..self.options.levels - 1 {
            let score = self.level_bytes(level) as f64 / self.target_bytes(level) as f64;
            if score > 1.0 && best.is_none_or(|(s, _)| score > s) {
                best = Some((score, level));
            }
        }
        best.map(|(_, level)| level)
    }

    fn start_compaction(&mut self) -> Result<Option<Job>, Error> {
        self.load_manifest_rest()?;
        loop {
            let Some(level) = self.pick_compaction() else {
                return Ok(None);
            };
            let inputs: Vec<u64> = if level == 0 {
                self.levels[0].clone()
            } else {
                vec![self.next_in_level(level)]
            };
            let (min, max) = self.key_range(&inputs);
            let below = &self.fences[level + 1];
            let first = below.partition_point(|f| f.max_key < min);
            let overlapping: Vec<u64> = below[first..]
                .iter()
                .take_while(|f| f.min_key <= max)
                .map(|f| f.id)
                .collect();
            if level > 0 {
                self.pointers[level] = max.clone();
            }
            if level > 0 && overlapping.is_empty() {
                self.trivial_move(level, inputs[0]);
                continue;
            }
            for &id in inputs.iter().chain(&overlapping) {
                self.loaded(id)?;
            }
            let mut cursors: Vec<Cursor> = inputs
                .iter()
                .map(|&id| Self::table_cursor(vec![id]))
                .collect();
            if !overlapping.is_empty() {
                cursors.push(Self::table_cursor(overlapping.clone()));
            }
            let mut all: Vec<(usize, u64)> = inputs.iter().map(|&id| (level, id)).collect();
            all.extend(overlapping.iter().map(|&id| (level + 1, id)));
            return Ok(Some(Job {
                cursors,
                inputs: all,
                output_level: level + 1,
                split: true,
                below: self.below(level + 1, false),
                builder: None,
                outputs: Vec::new(),
                done: false,
            }));
        }
    }

    fn table_cursor(ids: Vec<u64>) -> Cursor {
        let mut cursor = Cursor::new(
            Source::Tables {
                ids,
                table: 0,
                block: None,
                restart: 0,
            },
            &[],
            None,
            false,
        );
        cursor.cached = false;
        cursor
    }

    /// The next table of `level` after its compaction pointer (wrapping around).
    fn next_in_level(&self, level: usize) -> u64 {
        let ids = &self.levels[level];
        let pointer = &self.pointers[level];
        let i = ids.partition_point(|id| self.tables[id].meta.min_key <= *pointer);
        ids[if i < ids.len() { i } else { 0 }]
    }

    fn key_range(&self, ids: &[u64]) -> (Vec<u8>, Vec<u8>) {
        let metas = ids.iter().map(|id| &self.tables[id].meta);
        let min = metas.clone().map(|m| &m.min_key).min().unwrap().clone();
        let max = metas.map(|m| &m.max_key).max().unwrap().clone();
        (min, max)
    }

    fn trivial_move(&mut self, level: usize, id: u64) {
        self.shape_changed = true;
        self.remove_from_level(level, id);
        self.insert_into_level(level + 1, id);
        self.stats.trivial_moves += 1;
        self.stats.compactions_into[(level + 1).clamp(1, 3) - 1] += 1;
    }

    /// Takes table `id` out of `level` (its fence and its bytes with it).
    fn remove_from_level(&mut self, level: usize, id: u64) {
        let at = self.levels[level]
            .iter()
            .position(|&t| t == id)
            .expect("the table is in its level");
        self.levels[level].remove(at);
        self.level_totals[level] -= self.tables[&id].meta.bytes;
        if level > 0 {
            let fence = self.fences[level].remove(at);
            assert_eq!(fence.id, id, "fences follow their level");
        }
    }

    /// Puts table `id` into `level`: at the front of level 0 (the newest), else in key order,
    /// asserting that it overlaps neither neighbour (the tables of a level are disjoint).
    fn insert_into_level(&mut self, level: usize, id: u64) {
        let meta = &self.tables[&id].meta;
        self.level_totals[level] += meta.bytes;
        if level == 0 {
            self.levels[0].insert(0, id);
            return;
        }
        let fence = Fence::of(meta);
        let fences = &self.fences[level];
        let at = fences.partition_point(|f| f.min_key < fence.min_key);
        assert!(
            at == 0 || fences[at - 1].max_key < fence.min_key,
            "tables of a level are disjoint and sorted"
        );
        assert!(
            fences
                .get(at)
                .is_none_or(|next| fence.max_key < next.min_key),
            "tables of a level are disjoint and sorted"
        );
        self.levels[level].insert(at, id);
        self.fences[level].insert(at, fence);
    }

    /// Merges up to `budget` entries of `job`; installs it when done (returning None).
    fn step(&mut self, mut job: Job, budget: usize) -> Result<Option<Job>, Error> {
        assert!(!self.manifest_pending(), "jobs run on the whole manifest");
        let mut spent = 0;
        let snapshots: Vec<u64> = self.snapshots.keys().copied().collect();
        let mut versions = std::mem::take(&mut self.versions);
        let mut result = Ok(());
        while spent < budget && !job.done {
            match self.next_versions(&mut job.cursors, false, &mut versions) {
                Ok(true) => {}
                Ok(false) => {
                    job.done = true;
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            spent += versions.len();
            cursor::collect_garbage(&mut versions, &snapshots);
            let last = versions.last();
            if last.is_some_and(|v| v.value.is_none() && !job.below.holds(v.key)) {
                versions.pop();
            }
            result = versions
                .iter()
                .try_for_each(|entry| self.emit(&mut job, entry));
            if result.is_err() {
                break;
            }
        }
        self.versions = versions;
        result?;
        self.stats.merged += spent as u64;
        if !job.done {
            return Ok(Some(job));
        }
        if let Some(builder) = job.builder.take() {
            job.outputs
                .push(builder.finish(&mut self.store, &mut self.free)?);
        }
        self.install(job);
        Ok(None)
    }

    fn emit(&mut self, job: &mut Job, entry: EntryRef) -> Result<(), Error> {
        let full = job.builder.as_ref().is_some_and(|b| {
            job.split && b.data_blocks() >= self.options.table_blocks && b.last_key() != entry.key
        });
        if full {
            let builder = job.builder.take().unwrap();
            job.outputs
                .push(builder.finish(&mut self.store, &mut self.free)?);
        }
        if job.builder.is_none() {
            let id = self.next_table_id;
            self.next_table_id += 1;
            job.builder = Some(TableBuilder::new(id, self.options.bits_per_key));
        }
        let builder = job.builder.as_mut().unwrap();
        builder.add(&mut self.store, &mut self.free, entry)?;
        Ok(())
    }

    /// Replaces a job's inputs with its outputs; the inputs' blocks wait for the next checkpoint.
    fn install(&mut self, job: Job) {
        self.shape_changed = true;
        let flush = job.inputs.is_empty();
        for &(level, id) in &job.inputs {
            self.remove_from_level(level, id);
            let table = self.tables.remove(&id).expect("an input table exists");
            let loaded = table.loaded.expect("inputs were loaded to be merged");
            for address in loaded.addresses(&table.meta) {
                self.free.release(address);
            }
        }
        for (meta, loaded) in job.outputs {
            let id = meta.id;
            self.tables.insert(
                id,
                Table {
                    meta,
                    loaded: Some(loaded),
                },
            );
            self.insert_into_level(job.output_level, id);
        }
        if flush {
            let frozen = self
                .frozen
                .take()
                .expect("a flush writes the frozen memtable");
            let newest = frozen.max_sequence();
            self.flushed_sequence = self.flushed_sequence.max(newest.unwrap_or(0));
            self.spare_arena = frozen.into_arena();
            self.stats.flushes += 1;
        } else {
            self.stats.compactions += 1;
            self.stats.compactions_into[job.output_level.clamp(1, 3) - 1] += 1;
        }
    }

    /// Checks every level against its fences and the tables (after loading a manifest).
    fn check_levels(&self) {
        for (level, fences) in self.levels.iter().zip(&self.fences).skip(1) {
            assert_eq!(level.len(), fences.len(), "a fence per table");
            for pair in fences.windows(2) {
                assert!(
                    pair[0].max_key < pair[1].min_key,
                    "tables of a level are disjoint and sorted"
                );
            }
        }
        for (level, ids) in self.levels.iter().enumerate() {
            let bytes: u64 = ids.iter().map(|id| self.tables[id].meta.bytes).sum();
            assert_eq!(
                bytes, self.level_totals[level],
                "level totals follow the tables"
            );
        }
    }

    // ---- reads ----

    /// The newest value of `key` (None: absent or deleted).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(value) = self.rows.get(key) {
            return Ok(value);
        }
        let value = self.get_at(key, self.sequence)?;
        self.rows.fill(key, value.as_deref());
        Ok(value)
    }

    /// The value of `key` as of `snapshot`.
    pub fn get_at(&mut self, key: &[u8], snapshot: u64) -> Result<Option<Vec<u8>>, Error> {
        Ok(match self.find(key, snapshot)? {
            Found::Version { value, .. } => value,
            Found::Absent => None,
        })
    }

    /// The newest version of `key` at `snapshot`, searching layer by layer (newer data above).
    fn find(&mut self, key: &[u8], snapshot: u64) -> Result<Found, Error> {
        if let found @ Found::Version { .. } = self.memtable.get(key, snapshot) {
            return Ok(found);
        }
        if let Some(frozen) = &self.frozen {
            if let found @ Found::Version { .. } = frozen.get(key, snapshot) {
                return Ok(found);
            }
        }
        let hash = bloom::hash(key);
        for i in 0..self.levels[0].len() {
            let id = self.levels[0][i];
            if self.tables[&id].meta.contains(key) {
                if let found @ Found::Version { .. } = self.table_get(id, key, snapshot, hash)? {
                    return Ok(found);
                }
            }
        }
        let probe = table::key_prefix(key);
        for level in 1..self.levels.len() {
            if !self.unloaded[level].is_empty() {
                self.page_in_key(level, key)?;
            }
            let fences = &self.fences[level];
            let i =
                fences.partition_point(|f| table::key_below(f.max_prefix, &f.max_key, probe, key));
            let Some(fence) = fences.get(i) else { continue };
            if fence.min_key.as_slice() <= key {
                let id = fence.id;
                if let found @ Found::Version { .. } = self.table_get(id, key, snapshot, hash)? {
                    return Ok(found);
                }
            }
        }
        Ok(Found::Absent)
    }

    fn loaded(&mut self, id: u64) -> Result<&Loaded, Error> {
        let table = self.tables.get_mut(&id).expect("table exists");
        if table.loaded.is_none() {
            table.loaded = Some(Loaded::load(
                &mut self.store,
                &table.meta,
                &mut self.scratch,
            )?);
        }
        Ok(table.loaded.as_ref().unwrap())
    }

    fn table_get(&mut self, id: u64, key: &[u8], snapshot: u64, hash: u64) -> Result<Found, Error> {
        let loaded = self.loaded(id)?;
        if !loaded.filter.may_contain_hash(hash) {
            self.stats.filter_probes += 1;
            return Ok(Found::Absent);
        }
        let (mut i, blocks) = (loaded.block_for(key), loaded.index.len());
        let mut next_block = (i < blocks).then(|| loaded.index[i].block);
        self.stats.filter_probes += 1;
        self.stats.filter_passes += 1;
        let mut key_scratch = std::mem::take(&mut self.key_scratch);
        let mut found = Ok(Found::Absent);
        while let Some(block) = next_block.take() {
            let payload = match self.read_data(block, true) {
                Ok(payload) => payload,
                Err(e) => {
                    found = Err(e);
                    break;
                }
            };
            let result = Block::open(payload)
                .and_then(|decoded| decoded.find(key, snapshot, &mut key_scratch));
            found = match result {
                Ok(Find::Version {
                    sequence,
                    kind,
                    value,
                }) => Ok(Found::Version {
                    sequence,
                    value: (kind == Kind::Value).then(|| value.to_vec()),
                }),
                Ok(Find::Absent) => Ok(Found::Absent),
                Ok(Find::Continue) => {
                    i += 1; // the key's versions continue in the next block
                    let loaded = self.tables[&id].loaded.as_ref().unwrap();
                    next_block = (i < blocks).then(|| loaded.index[i].block);
                    continue;
                }
                Err(_) => Err(corrupt(block)),
            };
            break;
        }
        self.key_scratch = key_scratch;
        found
    }

    /// A data block's payload, through the cache when `cached`. Every payload it returns has
    /// passed [`Block::decode`] (the cache admits no other), so callers may [`Block::open`] it.
    fn read_data(&mut self, block: BlockRef, cached: bool) -> Result<&[u8], Error> {
        if cached {
            if let Some(slot) = self.cache.lookup(block) {
                return Ok(self.cache.get(slot));
            }
        }
        let len = grid::read_verified(&mut self.store, BlockKind::Data, block, &mut self.scratch)?;
        self.stats.block_reads += 1;
        let payload = &self.scratch[grid::HEADER_SIZE..grid::HEADER_SIZE + len];
        Block::decode(payload).map_err(|_| corrupt(block))?;
        if cached {
            if let Some(slot) = self.cache.insert(block, payload) {
                return Ok(self.cache.get(slot));
            }
        }
        Ok(&self.scratch[grid::HEADER_SIZE..grid::HEADER_SIZE + len])
    }

    /// Up to `limit` live key-value pairs with keys in `[start, end)` as of `snapshot`, in key
    /// order (`reverse`: descending).
    pub fn scan(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        snapshot: u64,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, Error> {
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        for level in 1..self.levels.len() {
            if !self.unloaded[level].is_empty() {
                self.page_in_range(level, start, end)?;
            }
        }
        let mut cursors = self.scan_cursors(start, end, reverse);
        let mut out = Vec::new();
        let mut versions = std::mem::take(&mut self.versions);
        let mut result = Ok(());
        while out.len() < limit {
            match self.next_versions(&mut cursors, reverse, &mut versions) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            // Newest first: the first version at or below the snapshot is the visible one.
            let visible = versions.iter().find(|v| v.sequence <= snapshot);
            if let Some(EntryRef {
                key,
                value: Some(value),
                ..
            }) = visible
            {
                out.push((key.to_vec(), value.to_vec()));
            }
        }
        self.versions = versions;
        result.map(|()| out)
    }

    fn scan_cursors(&self, start: &[u8], end: Option<&[u8]>, reverse: bool) -> Vec<Cursor> {
        let mut cursors = vec![Cursor::new(
            Source::Memtable { after: None },
            start,
            end,
            reverse,
        )];
        if let Some(frozen) = &self.frozen {
            let low = frozen.seek(start, u64::MAX);
            let high = end.map_or(frozen.len(), |e| frozen.seek(e, u64::MAX));
            let (next, limit) = if reverse { (high, low) } else { (low, high) };
            cursors.push(Cursor::new(
                Source::Frozen { next, limit },
                start,
                end,
                reverse,
            ));
        }
        let overlapping = |id: &&u64| {
            let meta = &self.tables[*id].meta;
            meta.max_key.as_slice() >= start && end.is_none_or(|e| meta.min_key.as_slice() < e)
        };
        for id in self.levels[0].iter().filter(overlapping) {
            cursors.push(Self::run_cursor(vec![*id], start, end, reverse));
        }
        let probe = table::key_prefix(start);
        for fences in &self.fences[1..] {
            // The tables from the first whose max key ≥ start to the last whose min key < end.
            let first = fences
                .partition_point(|f| table::key_below(f.max_prefix, &f.max_key, probe, start));
            let last = end.map_or(fences.len(), |e| {
                first + fences[first..].partition_point(|f| f.min_key.as_slice() < e)
            });
            let mut ids: Vec<u64> = fences[first..last].iter().map(|f| f.id).collect();
            if ids.is_empty() {
                continue;
            }
            if reverse {
                ids.reverse();
            }
            cursors.push(Self::run_cursor(ids, start, end, reverse));
        }
        cursors
    }

    fn run_cursor(ids: Vec<u64>, start: &[u8], end: Option<&[u8]>, reverse: bool) -> Cursor {
        let source = Source::Tables {
            ids,
            table: 0,
            block: None,
            restart: 0,
        };
        Cursor::new(source, start, end, reverse)
    }

    /// Takes every version of the next key (the smallest, or largest when `reverse`) from all
    /// cursors, newest first; None when all are exhausted.
    fn next_versions(
        &mut self,
        cursors: &mut [Cursor],
        reverse: bool,
        versions: &mut Entries,
    ) -> Result<bool, Error> {
        versions.clear();
        for c in cursors.iter_mut() {
            while c.needs_refill() {
                self.refill(c)?;
            }
        }
        // The cursor whose head comes first.
        let mut first: Option<(usize, &[u8])> = None;
        for (i, c) in cursors.iter().enumerate() {
            let Some(head) = c.head() else { continue };
            let better = first.is_none_or(|(_, best)| {
                if reverse {
                    head.key > best
                } else {
                    head.key < best
                }
            });
            if better {
                first = Some((i, head.key));
            }
        }
        let Some((first, _)) = first else {
            return Ok(false);
        };
        versions.push(cursors[first].head().unwrap());
        cursors[first].advance();
        for c in cursors.iter_mut() {
            loop {
                while c.needs_refill() {
                    self.refill(c)?;
                }
                match c.head() {
                    Some(e) if e.key == versions.get(0).key => {
                        versions.push(e);
                        c.advance();
                    }
                    _ => break,
                }
            }
        }
        if versions.len() > 1 {
            versions.sort_newest_first();
        }
        Ok(true)
    }

    /// Loads the next chunk of entries into `cursor` (or marks it done).
    fn refill(&mut self, cursor: &mut Cursor) -> Result<(), Error> {
        let mut entries = cursor.take_buffer();
        let result = self.fill(cursor, &mut entries);
        cursor.load(entries);
        result
    }

    fn fill(&mut self, cursor: &mut Cursor, entries: &mut Entries) -> Result<(), Error> {
        let reverse = cursor.reverse;
        match &mut cursor.source {
            Source::Memtable { after } => {
                self.memtable.chunk(
                    after.as_ref(),
                    &cursor.start,
                    cursor.end.as_deref(),
                    reverse,
                    cursor::MEMORY_CHUNK,
                    entries,
                );
                match entries.last() {
                    Some(last) => {
                        *after = Some(super::memtable::VersionKey::new(last.key, last.sequence))
                    }
                    None => cursor.done = true,
                }
            }
            Source::Frozen { next, limit } => {
                let frozen = self.frozen.as_ref().expect("a frozen cursor's memtable");
                let (from, to) = if reverse {
                    let from = next.saturating_sub(cursor::MEMORY_CHUNK).max(*limit);
                    (from, *next)
                } else {
                    (*next, (*next + cursor::MEMORY_CHUNK).min(*limit))
                };
                for i in from..to {
                    entries.push(frozen.entry(i));
                }
                if reverse {
                    entries.reverse();
                    *next = from;
                } else {
                    *next = to;
                }
                cursor.done = from == to;
            }
            Source::Tables {
                ids,
                table,
                block,
                restart,
            } => {
                if *table == ids.len() {
                    cursor.done = true;
                } else {
                    let loaded = self.loaded(ids[*table])?;
                    let blocks = loaded.index.len();
                    // Positioning in a table: at the range's near edge (the first table) or at
                    // the table's first (last, backward) block (the tables after it).
                    let positioned = block.is_none();
                    let i = block.unwrap_or_else(|| match (&cursor.end, reverse) {
                        (Some(end), true) => loaded.block_for(end).min(blocks - 1),
                        (None, true) => blocks - 1,
                        (_, false) => loaded.block_for(&cursor.start),
                    });
                    // Forward reads through the cache (queries) decode a few restart intervals
                    // at a time from where the range starts: a short range decodes a few dozen
                    // entries, not the whole block. Compaction and backward reads decode whole
                    // blocks.
                    let chunked = !reverse && cursor.cached;
                    let mut rest_of_block = None;
                    let mut past_range = false;
                    if i < blocks {
                        let reference = loaded.index[i].block;
                        let payload = self.read_data(reference, cursor.cached)?;
                        if chunked {
                            let opened = Block::open(payload).map_err(|_| corrupt(reference))?;
                            if positioned {
                                *restart = opened
                                    .restart_for(&cursor.start)
                                    .map_err(|_| corrupt(reference))?;
                            }
                            rest_of_block = opened
                                .decode_intervals(*restart, CHUNK_INTERVALS, entries)
                                .map_err(|_| corrupt(reference))?;
                        } else {
                            decode_entries(payload, reference, entries)?;
                        }
                        past_range = match (reverse, entries.first(), entries.last()) {
                            (false, _, Some(last)) => {
                                cursor.end.as_deref().is_some_and(|e| last.key >= e)
                            }
                            (true, Some(first), _) => first.key < cursor.start.as_slice(),
                            _ => false,
                        };
                        // A block's keys are sorted: only one that crosses an edge of the range
                        // needs filtering (compaction's cursors have no edges; filtering every
                        // entry was ~10% of a fill's CPU in `memcmp`).
                        let crosses = entries
                            .first()
                            .is_some_and(|f| f.key < cursor.start.as_slice())
                            || entries
                                .last()
                                .is_some_and(|l| cursor.end.as_deref().is_some_and(|e| l.key >= e));
                        if crosses {
                            entries.retain(|e| cursor_in_range(&cursor.start, &cursor.end, e.key));
                        }
                        if reverse {
                            entries.reverse();
                        }
                    }
                    let table_done = i >= blocks || if reverse { i == 0 } else { i + 1 == blocks };
                    if past_range {
                        *table = ids.len();
                    } else if let Some(next) = rest_of_block {
                        *block = Some(i);
                        *restart = next;
                    } else if table_done {
                        *table += 1;
                        *block = None;
                        *restart = 0;
                    } else {
                        *block = Some(if reverse { i - 1 } else { i + 1 });
                        *restart = 0;
                    }
                }
            }
        }
        Ok(())
    }

    // ---- snapshots and transactions ----

    /// Pins the current state for reads; versions it can see survive compaction until released.
    pub fn snapshot(&mut self) -> Snapshot {
        *self.snapshots.entry(self.sequence).or_default() += 1;
        Snapshot {
            sequence: self.sequence,
        }
    }

    pub fn release(&mut self, snapshot: Snapshot) {
        let count = self
            .snapshots
            .get_mut(&snapshot.sequence)
            .expect("a live snapshot");
        *count -= 1;
        if *count == 0 {
            self.snapshots.remove(&snapshot.sequence);
        }
    }

    pub fn live_snapshots(&self) -> usize {
        self.snapshots.values().sum()
    }

    pub fn begin(&mut self) -> Transaction {
        Transaction {
            snapshot: self.snapshot(),
            writes: BTreeMap::new(),
        }
    }

    /// A read inside `txn`: its own writes first, then its snapshot.
    pub fn txn_get(&mut self, txn: &Transaction, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match txn.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.get_at(key, txn.snapshot.sequence),
        }
    }

    /// First committer wins: a key `txn` writes that has a version newer than its snapshot.
    pub fn validate(&mut self, txn: &Transaction) -> Result<(), Error> {
        for key in txn.writes.keys() {
            if let Found::Version { sequence, .. } = self.find(key, u64::MAX)? {
                if sequence > txn.snapshot.sequence {
                    return Err(Error::Conflict { key: key.clone() });
                }
            }
        }
        Ok(())
    }

    /// Validates and applies `txn` at `sequence` (the caller logs the writes first, or after a
    /// successful `validate` with nothing applied in between); releases its snapshot either way.
    pub fn commit(&mut self, txn: Transaction, sequence: u64) -> Result<(), Error> {
        let result = self.validate(&txn).and_then(|()| {
            let writes: Vec<Write> = txn.writes().collect();
            self.apply(sequence, &writes)
        });
        self.release(txn.snapshot);
        result
    }

    pub fn abort(&mut self, txn: Transaction) {
        self.release(txn.snapshot);
    }

    // ---- checkpoints ----

    /// Makes everything applied durable in the grid: flushes the memtable, writes the manifest
    /// and free set, syncs. The caller then records the returned checkpoint (its superblock) and
    /// calls [`Engine::checkpoint_durable`].
    pub fn checkpoint(&mut self) -> Result<Checkpoint, Error> {
        if self.deterministic {
            if std::mem::take(&mut self.staged_durable) {
                self.free_staged();
            }
            // A job in flight would be redone differently by a replica that restarts from
            // this checkpoint: finish it, and start none.
            while let Some(job) = self.compaction.take() {
                self.compaction = self.step(job, usize::MAX)?;
            }
        }
        self.finish_flush()?;
        self.rotate_memtable()?;
        self.finish_flush()?;
        // Everything applied is in tables now (batches without writes advance the sequence too).
        assert!(self.memtable.is_empty() && self.frozen.is_none());
        self.flushed_sequence = self.sequence;
        self.full_checkpoint = true;
        self.write_checkpoint()
    }

    /// A checkpoint of the tables only, without flushing the memtables: cheap, and taken after
    /// each flush so that released blocks return to use soon. It covers the writes up to
    /// [`Engine::flushed_sequence`]; the caller keeps its log from there.
    pub fn checkpoint_tables(&mut self) -> Result<Checkpoint, Error> {
        self.write_checkpoint()
    }

    /// Every write up to this sequence is in tables (the rest is in memtables).
    pub fn flushed_sequence(&self) -> u64 {
        self.flushed_sequence
    }

    /// Whether the active memtable is empty (the next write starts a new one).
    pub fn memtable_is_empty(&self) -> bool {
        self.memtable.is_empty()
    }

    fn write_checkpoint(&mut self) -> Result<Checkpoint, Error> {
        self.load_manifest_rest()?;
        let jobs = self.flush.iter().chain(self.compaction.iter());
        let mut unreferenced: Vec<u64> = jobs.flat_map(|j| j.unreferenced()).collect();
        unreferenced.extend(self.held.iter().flatten());
        for address in std::mem::take(&mut self.manifest_blocks) {
            self.free.release(address);
        }
        let block_size = self.store.block_size();
        let target = manifest::chunk_target(block_size);
        let bodies: Vec<Vec<manifest::ChunkBody>> = self.levels[1..]
            .iter()
            .map(|ids| manifest::chunk_level(ids.iter().map(|id| &self.tables[id].meta), target))
            .collect();
        // Every block of the manifest must be acquired in the free set it records: acquire them
        // all (the free set's last: acquiring may grow the grid, and the set with it) first.
        let mut root = Root {
            sequence: self.flushed_sequence,
            next_table_id: self.next_table_id,
            level0: self.levels[0]
                .iter()
                .map(|id| self.tables[id].meta.clone())
                .collect(),
            chunks: bodies
                .iter()
                .map(|level| level.iter().map(|b| b.chunk.clone()).collect())
                .collect(),
            free: FreeRef {
                head: BlockRef {
                    address: 0,
                    checksum: 0,
                },
                acquired: 0,
            },
            pointers: self.pointers[1..].to_vec(),
        };
        let mut root_body = Vec::new();
        root.encode(&mut root_body); // its length: the references to come are of fixed size
        let root_blocks =
            self.acquire_blocks(manifest::chain_blocks(block_size, root_body.len()))?;
        let mut chunk_blocks = Vec::new();
        for body in bodies.iter().flatten() {
            let count = manifest::chain_blocks(block_size, body.body.len());
            chunk_blocks.push(self.acquire_blocks(count)?);
        }
        let mut free_blocks = Vec::new();
        let staged = self.deterministic;
        while free_blocks.len() < manifest::chain_blocks(block_size, self.free.encoded_size(staged))
        {
            free_blocks.push(self.free.acquire(&mut self.store)?);
        }
        let mut free_body = Vec::with_capacity(self.free.encoded_size(staged));
        let acquired = self
            .free
            .encode_for_checkpoint(&unreferenced, staged, &mut free_body);
        root.free = FreeRef {
            head: manifest::write_chain(
                &mut self.store,
                &mut self.scratch,
                &free_blocks,
                &free_body,
            )?,
            acquired,
        };
        let mut addresses = chunk_blocks.iter();
        for (level, bodies) in root.chunks.iter_mut().zip(&bodies) {
            for (chunk, body) in level.iter_mut().zip(bodies.iter()) {
                let blocks = addresses.next().expect("blocks for every chunk");
                chunk.head =
                    manifest::write_chain(&mut self.store, &mut self.scratch, blocks, &body.body)?;
            }
        }
        root_body.clear();
        root.encode(&mut root_body);
        let head =
            manifest::write_chain(&mut self.store, &mut self.scratch, &root_blocks, &root_body)?;
        self.store.sync().map_err(GridError::Write)?;
        self.free.checkpoint_written();
        self.manifest_blocks = root_blocks;
        self.manifest_blocks
            .extend(chunk_blocks.into_iter().flatten());
        self.manifest_blocks.extend(free_blocks);
        Ok(Checkpoint {
            manifest: head,
            sequence: self.flushed_sequence,
        })
    }

    fn acquire_blocks(&mut self, count: usize) -> Result<Vec<u64>, Error> {
        (0..count)
            .map(|_| Ok(self.free.acquire(&mut self.store)?))
            .collect()
    }

    /// The checkpoint is recorded durably: blocks only older checkpoints referenced are free.
    ///
    /// Freed blocks are reused lowest first, so most are soon written again. Their space goes
    /// back to the store (`discard`) in two ways: after a full checkpoint, every block freed
    /// since its last discard; after a table checkpoint, once those pass an eighth of the blocks
    /// in use, the runs of them at least `DISCARD_MIN_RUN` long, `DISCARD_BUDGET_BLOCKS` at most
    /// (compaction leaves many single
    /// free blocks between live ones: discarding each after every flush cost a fill 11% of its
    /// time in `fallocate`, for space the allocator was about to reuse; discarding every free
    /// run at each full checkpoint, old holes included, cost a 10M-key run 227k calls).
    pub fn checkpoint_durable(&mut self) {
        assert!(!self.manifest_pending(), "a checkpoint was written");
        if self.deterministic && !self.free_on_durable {
            self.staged_durable = true;
        } else {
            self.free_staged();
        }
    }

    /// From now on, blocks that checkpoints stop referencing are not reused until
    /// [`Engine::release_held`]: every checkpoint durable from here stays whole in the grid for
    /// a backup to copy, however long it takes. The grid grows meanwhile.
    pub fn hold_frees(&mut self) {
        self.held.get_or_insert_with(Vec::new);
    }

    /// Ends [`Engine::hold_frees`]: the blocks held are free.
    pub fn release_held(&mut self) {
        for address in self.held.take().into_iter().flatten() {
            self.free.free_now(address);
            self.undiscarded.push(address);
        }
    }

    /// Blocks held for a backup (`hold_frees`).
    pub fn held(&self) -> Option<usize> {
        self.held.as_ref().map(Vec::len)
    }

    /// Makes checkpoints a function of the writes alone, so that replicas applying one log hold
    /// block-identical checkpoints (a state sync then finds the blocks it lacks in its own
    /// grid). What changes, at a cost to latency and space, not to the data:
    /// - what a checkpoint released is freed when the next one starts (a point in the log), not
    ///   when it became durable (a point in IO timing), and a reopen holds it as long;
    /// - a checkpoint finishes the compaction in flight;
    /// - the manifest is read whole on open, so compaction's pace does not depend on whether
    ///   the engine restarted.
    ///
    /// The embedded database keeps the default (its checkpoints are its own).
    pub fn make_deterministic(&mut self) -> Result<(), Error> {
        self.deterministic = true;
        self.load_manifest_rest()
    }

    /// Planted bug `FreeOnDurable`: frees when a checkpoint is durable, as before determinism.
    pub fn plant_free_on_durable(&mut self) {
        self.free_on_durable = true;
    }

    /// Frees the blocks the last durable checkpoint no longer references, and gives some of
    /// their space back to the store.
    fn free_staged(&mut self) {
        if let Some(held) = &mut self.held {
            held.extend(self.free.take_staged());
            return;
        }
        let freed = self.free.checkpoint_durable();
        self.undiscarded.extend(freed);
        let full = std::mem::take(&mut self.full_checkpoint);
        let threshold = (self.free.acquired() / 8).max(DISCARD_MIN_BLOCKS);
        if !full && self.undiscarded.len() as u64 <= threshold {
            return;
        }
        // Only blocks freed since they were last discarded (and still free): a block is
        // discarded once per time it is freed, never again as part of an old hole.
        let mut free: Vec<u64> = std::mem::take(&mut self.undiscarded);
        free.retain(|&address| !self.free.is_acquired(address));
        free.sort_unstable();
        free.dedup();
        // A table checkpoint discards long runs up to a budget (one large punch can take tens
        // of milliseconds, inside a write); the rest waits, most of it to be reused first.
        let mut budget = DISCARD_BUDGET_BLOCKS;
        let (now, later): (Vec<_>, Vec<_>) =
            self.free
                .free_runs(&free)
                .into_iter()
                .partition(|&(_, count)| {
                    let take = full || (count >= DISCARD_MIN_RUN && count <= budget);
                    if take && !full {
                        budget -= count;
                    }
                    take
                });
        self.store.discard(&now);
        // Both lists are sorted: one pass keeps the addresses inside a run left for later.
        let mut runs = later.iter().peekable();
        for address in free {
            while runs
                .next_if(|&&(start, count)| start + count <= address)
                .is_some()
            {}
            if runs.peek().is_some_and(|&&(start, _)| start <= address) {
                self.undiscarded.push(address);
            }
        }
    }

    // ---- the manifest, read as it is needed (see `manifest`) ----

    /// Reads a checkpoint's root: level 0 and the directory of the other levels' chunks (the
    /// free set is read later: it is sized by the grid). Without a checkpoint: an empty tree.
    fn load_manifest_root(&mut self, checkpoint: Option<Checkpoint>) -> Result<(), Error> {
        let Some(checkpoint) = checkpoint else {
            self.free = FreeSet::new(self.store.block_count());
            return Ok(());
        };
        let (body, addresses) =
            manifest::read_chain(&mut self.store, &mut self.scratch, checkpoint.manifest)?;
        let root = Root::decode(&body, self.options.levels)?;
        if root.sequence != checkpoint.sequence {
            return Err(Error::Manifest("sequence differs from the checkpoint's"));
        }
        self.sequence = root.sequence;
        self.flushed_sequence = root.sequence;
        self.next_table_id = root.next_table_id;
        for (level, pointer) in root.pointers.into_iter().enumerate() {
            self.pointers[level + 1] = pointer;
        }
        for meta in root.level0 {
            self.level_totals[0] += meta.bytes;
            self.levels[0].push(meta.id);
            self.add_table(meta)?;
        }
        for (level, chunks) in root.chunks.into_iter().enumerate() {
            self.level_totals[level + 1] = chunks.iter().map(|c| c.bytes).sum();
            self.unloaded[level + 1] = chunks;
        }
        self.free = FreeSet::default();
        self.free_pending = Some(root.free);
        self.manifest_blocks = addresses;
        Ok(())
    }

    fn add_table(&mut self, meta: TableMeta) -> Result<(), Error> {
        let id = meta.id;
        if id >= self.next_table_id || self.tables.contains_key(&id) {
            return Err(Error::Manifest("a table id is reused or out of range"));
        }
        self.tables.insert(id, Table { meta, loaded: None });
        Ok(())
    }

    /// Whether part of the manifest (chunks, the free set) has not been read yet.
    fn manifest_pending(&self) -> bool {
        self.free_pending.is_some() || self.unloaded.iter().any(|l| !l.is_empty())
    }

    /// Reads one more part of the manifest: the first chunk not read yet, else the free set.
    fn page_in_step(&mut self) -> Result<(), Error> {
        if let Some(level) = (1..self.levels.len()).find(|&l| !self.unloaded[l].is_empty()) {
            return self.load_chunk(level, 0);
        }
        if self.free_pending.is_some() {
            self.load_free_set()?;
        }
        Ok(())
    }

    /// Reads the rest of the manifest (what flushes, compactions and checkpoints need).
    fn load_manifest_rest(&mut self) -> Result<(), Error> {
        if !self.manifest_pending() {
            return Ok(());
        }
        while self.manifest_pending() {
            self.page_in_step()?;
        }
        self.check_levels();
        Ok(())
    }

    /// Reads the chunk of `level` that may hold `key`, if it is not read yet.
    fn page_in_key(&mut self, level: usize, key: &[u8]) -> Result<(), Error> {
        let chunks = &self.unloaded[level];
        let i = chunks.partition_point(|c| c.max_key.as_slice() < key);
        if chunks.get(i).is_some_and(|c| c.min_key.as_slice() <= key) {
            self.load_chunk(level, i)?;
        }
        Ok(())
    }

    /// Reads every chunk of `level` overlapping `[start, end)` not read yet.
    fn page_in_range(
        &mut self,
        level: usize,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<(), Error> {
        loop {
            let chunks = &self.unloaded[level];
            let i = chunks.partition_point(|c| c.max_key.as_slice() < start);
            match chunks.get(i) {
                Some(c) if end.is_none_or(|e| c.min_key.as_slice() < e) => {
                    self.load_chunk(level, i)?
                }
                _ => return Ok(()),
            }
        }
    }

    /// Reads chunk `i` of `level`'s unread chunks and puts its tables into the level (whose
    /// byte total already counts them). On an error the chunk stays unread.
    fn load_chunk(&mut self, level: usize, i: usize) -> Result<(), Error> {
        let head = self.unloaded[level][i].head;
        let (body, addresses) = manifest::read_chain(&mut self.store, &mut self.scratch, head)?;
        let metas = manifest::decode_tables(&body, &self.unloaded[level][i])?;
        let fences = &self.fences[level];
        let at = fences.partition_point(|f| f.min_key < metas[0].min_key);
        let disjoint = (at == 0 || fences[at - 1].max_key < metas[0].min_key)
            && fences
                .get(at)
                .is_none_or(|next| metas.last().unwrap().max_key < next.min_key);
        if !disjoint {
            return Err(Error::Manifest("a chunk overlaps its level's tables"));
        }
        let ids: Vec<u64> = metas.iter().map(|m| m.id).collect();
        let new_fences: Vec<Fence> = metas.iter().map(Fence::of).collect();
        for meta in metas {
            self.add_table(meta)?;
        }
        self.unloaded[level].remove(i);
        self.levels[level].splice(at..at, ids);
        self.fences[level].splice(at..at, new_fences);
        self.manifest_blocks.extend(addresses);
        Ok(())
    }

    /// Reads the free set the checkpoint recorded.
    fn load_free_set(&mut self) -> Result<(), Error> {
        let pending = self.free_pending.expect("a free set to read");
        let (body, addresses) =
            manifest::read_chain(&mut self.store, &mut self.scratch, pending.head)?;
        let mut free = FreeSet::decode(&body).ok_or(Error::Manifest("free set"))?;
        if free.count() > self.store.block_count() {
            return Err(Error::Manifest("free set larger than the grid"));
        }
        if free.acquired() - free.staged() != pending.acquired {
            return Err(Error::Manifest("free set differs from the root's count"));
        }
        free.grow_to(self.store.block_count());
        self.free = free;
        self.free_pending = None;
        self.manifest_blocks.extend(addresses);
        Ok(())
    }
}

fn cursor_in_range(start: &[u8], end: &Option<Vec<u8>>, key: &[u8]) -> bool {
    key >= start && end.as_deref().is_none_or(|e| key < e)
}

fn corrupt(block: BlockRef) -> Error {
    Error::Grid(GridError::Corrupt {
        address: block.address,
        kind: BlockKind::Data,
    })
}

/// Restart intervals a forward query's cursor decodes from a block at a time.
const CHUNK_INTERVALS: usize = 4;

/// Decodes a payload [`Engine::read_data`] returned (verified).
fn decode_entries(payload: &[u8], block: BlockRef, out: &mut Entries) -> Result<(), Error> {
    let decoded = Block::open(payload).map_err(|_| corrupt(block))?;
    decoded.decode_into(out).map_err(|_| corrupt(block))
}
