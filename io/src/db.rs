//! The embedded database: ZiggyDB's LSM engine on one real file, on the core's durability path.
//!
//! ```no_run
//! use ziggy_io::db::{Db, DbOptions};
//! # fn main() -> Result<(), ziggy_io::db::DbError> {
//! let mut db = Db::create("example.zdb".as_ref(), DbOptions::default())?;
//! db.put(b"apple", b"red")?;
//! db.put(b"banana", b"yellow")?;
//! assert_eq!(db.get(b"apple")?, Some(b"red".to_vec()));
//! let fruits = db.scan(b"a", None, 10, false)?; // [(apple, red), (banana, yellow)]
//! # let _ = fruits;
//! let snapshot = db.snapshot()?;
//! db.delete(b"apple")?;
//! assert_eq!(db.get_at(&snapshot, b"apple")?, Some(b"red".to_vec())); // the past stays readable
//! db.release(snapshot);
//! let mut txn = db.begin()?;
//! txn.put(b"cherry", b"dark red");
//! db.commit(txn)?; // fails with DbError::Conflict if another write to "cherry" came first
//! db.close()?;
//! let mut db = Db::open("example.zdb".as_ref(), DbOptions::default())?;
//! assert_eq!(db.get(b"cherry")?, Some(b"dark red".to_vec()));
//! # Ok(()) }
//! ```
//!
//! The file is a replica's data file (superblock copies, the WAL's redundant headers and entries,
//! the checkpoint), and the LSM grid grows after it. It is written and recovered by the core's
//! own code (`ziggy_core::embedded`): the WAL decision table the simulator and the fuzzers test.
//!
//! Durability: a write is staged in shared memory (`/dev/shm`, see [`crate::stage`]) and applied;
//! it survives a crash of the process once the call returns. Staged writes are sealed into WAL
//! entries (one `pwrite` for a few hundred writes); [`Db::flush`] makes every write so far
//! durable against an OS crash or power loss, as does every write with [`DbOptions::sync`]. After
//! an OS crash the writes present are a prefix of the acknowledged ones.
//!
//! Failures: an acknowledged write that cannot be read on open is reported
//! ([`DbError::CorruptWal`]: which entries, which writes), never dropped. A failed write or
//! `fdatasync` poisons the handle: every later call fails with [`DbError::Poisoned`] until the
//! file is opened again. The data file is never mapped, so no IO error arrives as a signal; a full
//! disk is an error value.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ziggy_core::embedded::{self, writes, Embedded, Sizes, WalDamage};
use ziggy_core::lsm::grid::{BlockStore, GridError};
use ziggy_core::lsm::tree::KeyValue;
use ziggy_core::lsm::{self, Options, Snapshot, Transaction, Write};
use ziggy_core::wal::stage::StageCorrupt;
use ziggy_core::{Layout, ReadError, WriteError};

use crate::file_storage::{lock_data_file, write_error, FileStorage};
use crate::format::annotate;
use crate::stage::{stage_path, ShmStage};

/// The WAL's entry size: a sealed entry holds a few hundred small writes.
const WAL_ENTRY_BYTES: u32 = 64 << 10;

/// Settings chosen when a database is created (block size, WAL size) or opened (the rest).
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Grid block size: the unit of table data, cache and IO. Fixed at creation.
    pub block_size: usize,
    /// The WAL ring's size (entries of 64 KiB). Fixed at creation.
    pub wal_bytes: u64,
    /// Bytes of block cache, allocated at open.
    pub cache_bytes: usize,
    /// Bytes of writes the memtable gathers before it is flushed.
    pub memtable_bytes: usize,
    /// Make every write durable (against an OS crash) before it returns.
    pub sync: bool,
    pub bits_per_key: u32,
}

impl Default for DbOptions {
    fn default() -> DbOptions {
        DbOptions {
            block_size: 4096,
            wal_bytes: 128 << 20,
            cache_bytes: 64 << 20,
            memtable_bytes: 32 << 20,
            sync: false,
            bits_per_key: 10,
        }
    }
}

impl DbOptions {
    fn engine_options(&self) -> Options {
        Options {
            memtable_bytes: self.memtable_bytes,
            bits_per_key: self.bits_per_key,
            cache_blocks: self.cache_bytes / self.block_size,
            ..Options::production()
        }
    }

    fn sizes(&self) -> Result<Sizes, DbError> {
        if self.block_size < 1024 || !self.block_size.is_power_of_two() {
            return Err(DbError::Options(
                "block_size must be a power of two of at least 1024",
            ));
        }
        let slots = self.wal_bytes / WAL_ENTRY_BYTES as u64;
        if !(16..=1 << 20).contains(&slots) {
            return Err(DbError::Options(
                "wal_bytes must be between 1 MiB and 64 GiB",
            ));
        }
        Ok(Sizes {
            grid_block_size: self.block_size as u32,
            wal_slot_count: slots as u32,
            wal_entry_size: WAL_ENTRY_BYTES,
        })
    }
}

#[derive(Debug)]
pub enum DbError {
    Io(io::Error),
    /// The engine refused or failed (an entry too large, a corrupt block, a full grid).
    Engine(lsm::Error),
    /// A transaction lost to a write committed after its snapshot.
    Conflict {
        key: Vec<u8>,
    },
    /// The file is not a database, or a checksummed structure is damaged beyond recovery.
    Corrupt(String),
    /// Acknowledged WAL entries are damaged (which entries, which writes): nothing was dropped.
    CorruptWal(WalDamage),
    /// Acknowledged writes in the stage of unsynced writes are damaged.
    CorruptStage(StageCorrupt),
    /// An earlier failure left the file in an unknown state: drop the handle and reopen.
    Poisoned(String),
    /// Options that cannot work.
    Options(&'static str),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Io(e) => write!(f, "{e}"),
            DbError::Engine(e) => write!(f, "{e}"),
            DbError::Conflict { key } => write!(
                f,
                "transaction conflict on key {:?}: another write committed after its snapshot",
                String::from_utf8_lossy(key)
            ),
            DbError::Corrupt(why) => write!(f, "corrupt database: {why}"),
            DbError::CorruptWal(d) => write!(
                f,
                "corrupt database: {}",
                embedded::Error::CorruptWal(d.clone())
            ),
            DbError::CorruptStage(c) => write!(
                f,
                "corrupt database: {}",
                embedded::Error::CorruptStage(c.clone())
            ),
            DbError::Poisoned(cause) => write!(
                f,
                "an earlier failure left the database in an unknown state ({cause}): reopen it"
            ),
            DbError::Options(why) => write!(f, "invalid options: {why}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<io::Error> for DbError {
    fn from(e: io::Error) -> DbError {
        DbError::Io(e)
    }
}

impl From<lsm::Error> for DbError {
    fn from(e: lsm::Error) -> DbError {
        match e {
            lsm::Error::Conflict { key } => DbError::Conflict { key },
            e => DbError::Engine(e),
        }
    }
}

impl From<embedded::Error> for DbError {
    fn from(e: embedded::Error) -> DbError {
        use embedded::Error as E;
        match e {
            E::Read { offset, error } => DbError::Io(io::Error::other(format!(
                "read at byte {offset} failed: {error:?}"
            ))),
            E::Write(WriteError::NoSpace) => {
                DbError::Io(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            E::Write(WriteError::Io) => DbError::Io(io::Error::from_raw_os_error(libc::EIO)),
            E::NoSuperblock => DbError::Corrupt(
                "no valid superblock (not a ZiggyDB database, or every copy is damaged)".into(),
            ),
            E::NotEmbedded(why) => DbError::Corrupt(format!("not an embedded database: {why}")),
            E::Corrupt(why) => DbError::Corrupt(why),
            E::CorruptWal(d) => DbError::CorruptWal(d),
            E::CorruptStage(c) => DbError::CorruptStage(c),
            E::Engine(e) => e.into(),
            E::TooLarge { size, max } => DbError::Engine(lsm::Error::EntryTooLarge { size, max }),
            E::Poisoned(cause) => DbError::Poisoned(cause.to_string()),
        }
    }
}

/// The grid part of the file as the engine's block store.
pub struct FileGrid {
    file: File,
    start: u64,
    block_size: usize,
    blocks: u64,
    pub reads: u64,
    pub writes: u64,
    /// Bytes written since writeback was last started.
    unstarted: u64,
}

impl FileGrid {
    /// The blocks of `file` from byte `start` on (as many as the file holds now).
    pub fn new(file: File, start: u64, block_size: usize) -> io::Result<FileGrid> {
        let length = file.metadata()?.len();
        Ok(FileGrid {
            file,
            start,
            block_size,
            blocks: length.saturating_sub(start) / block_size as u64,
            reads: 0,
            writes: 0,
            unstarted: 0,
        })
    }
}

impl BlockStore for FileGrid {
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn block_count(&self) -> u64 {
        self.blocks
    }

    fn grow(&mut self, count: u64) -> Result<(), GridError> {
        let from = self.start + self.blocks * self.block_size as u64;
        let end = self.start + count * self.block_size as u64;
        // Reserve the new space now, so that a full disk is an error here and not a lost write
        // later. Only the new range: allocating from 0 would fill the holes punched over freed
        // blocks again (the file's space would never shrink below its high-water mark).
        allocate(&self.file, from, end).map_err(|e| GridError::Write(write_error(&e)))?;
        self.blocks = count;
        Ok(())
    }

    fn read_block(&mut self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.reads += 1;
        let offset = self.start + address * self.block_size as u64;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|_| ReadError::Io)
    }

    fn write_block(&mut self, address: u64, data: &[u8]) -> Result<(), WriteError> {
        assert!(address < self.blocks, "a block inside the grid");
        self.writes += 1;
        let offset = self.start + address * self.block_size as u64;
        self.file
            .write_all_at(data, offset)
            .map_err(io_write_error)?;
        self.unstarted += data.len() as u64;
        if self.unstarted >= WRITE_BEHIND {
            self.unstarted = 0;
            start_writeback(&self.file, self.start, 0);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WriteError> {
        self.file.sync_data().map_err(io_write_error)
    }

    /// Punches holes over runs of freed blocks, so the file's allocated space follows the data
    /// (best effort: a file system without hole punching keeps the space for reuse).
    fn discard(&mut self, runs: &[(u64, u64)]) {
        let block = self.block_size as u64;
        for &(start, count) in runs {
            punch_hole(&self.file, self.start + start * block, count * block);
        }
    }
}

fn io_write_error(e: io::Error) -> WriteError {
    write_error(&e)
}

/// Extends the file to `len` bytes with allocated (not sparse) space.
/// Bytes written between two starts of writeback: the kernel writes them out while the engine
/// goes on, so that a checkpoint's `fdatasync` (inside a write) finds little left to do — it
/// was 13% of a fill's time, with single syncs of 1.7 s behind a page cache full of tables.
const WRITE_BEHIND: u64 = 8 << 20;

/// Starts (does not wait for) writeback of the dirty pages of `len` bytes at `offset` (0: to
/// the end). Best effort: an error here surfaces at the next `fdatasync`.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open for the call.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Gives the space of `len` bytes at `offset` back to the file system (best effort: a file
/// system without hole punching keeps it, which costs space, not correctness).
fn punch_hole(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate only reads the descriptor, which `file` keeps open for the call.
    unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        );
    }
}

/// Allocates bytes `from..len` of `file` (extending it to `len`).
fn allocate(file: &File, from: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    assert!(from <= len);
    if from == len {
        return Ok(());
    }
    // SAFETY: posix_fallocate only reads the descriptor, which `file` keeps open for the call.
    let result = unsafe {
        libc::posix_fallocate(
            file.as_raw_fd(),
            from as libc::off_t,
            (len - from) as libc::off_t,
        )
    };
    match result {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len.max(file.metadata()?.len())),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Counters for benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct DbStats {
    pub engine: lsm::Stats,
    pub wal_bytes_written: u64,
    /// WAL entries sealed (one `pwrite` each) and sync points (two `fdatasync`s each).
    pub seals: u64,
    pub syncs: u64,
    pub grid_block_writes: u64,
    pub grid_block_reads: u64,
    pub checkpoints: u64,
    /// Of those, full checkpoints (memtable flushed; at ¾ of the ring, `checkpoint`, `close`).
    pub full_checkpoints: u64,
    /// Blocks the grid holds now (in use or free).
    pub grid_blocks: u64,
    pub grid_blocks_in_use: u64,
}

/// What the last open found (see [`embedded::OpenReport`]).
pub use ziggy_core::embedded::OpenReport;

/// An open database. Every method takes `&mut self`: the engine is single-threaded by design.
pub struct Db {
    path: PathBuf,
    inner: Embedded<FileStorage, FileGrid, ShmStage>,
    report: OpenReport,
    scratch: Vec<u8>,
}

impl Db {
    /// Creates a new database file; refuses to overwrite an existing one.
    pub fn create(path: &Path, options: DbOptions) -> Result<Db, DbError> {
        let sizes = options.sizes()?;
        let layout = Layout::new(&sizes.config(options.engine_options()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| annotate(e, &format!("creating {}", path.display())))?;
        lock_data_file(&file)?;
        // Sparse: the WAL's space is taken as it is first written (a full disk then fails that
        // `pwrite`, an error value); the grid's is reserved as it grows.
        file.set_len(grid_start(&layout, options.block_size))?;
        let mut storage = FileStorage::from_file(file.try_clone()?, layout.sector_size)?;
        embedded::format(&mut storage, sizes, incarnation())?;
        file.sync_all()?;
        sync_parent(path)?;
        drop((storage, file));
        Db::open(path, options)
    }

    /// Opens an existing database: the superblock, the checkpoint, then the WAL since it and the
    /// writes the stage holds. `block_size` and `wal_bytes` come from the file, not `options`.
    pub fn open(path: &Path, mut options: DbOptions) -> Result<Db, DbError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| annotate(e, &format!("opening {}", path.display())))?;
        lock_data_file(&file).map_err(|e| annotate(e, &format!("opening {}", path.display())))?;
        let mut storage = FileStorage::from_file(file.try_clone()?, 4096)?;
        let (sizes, incarnation) = embedded::read_sizes(&mut storage)?;
        options.block_size = sizes.grid_block_size as usize;
        options.wal_bytes = sizes.wal_slot_count as u64 * sizes.wal_entry_size as u64;
        let config = sizes.config(options.engine_options());
        let layout = Layout::new(&config);
        if storage.size() < layout.total_size() {
            return Err(DbError::Corrupt(format!(
                "{}: {} bytes, but its layout needs {}: the file was truncated",
                path.display(),
                storage.size(),
                layout.total_size()
            )));
        }
        let grid = FileGrid::new(
            file.try_clone()?,
            grid_start(&layout, options.block_size),
            options.block_size,
        )?;
        let stage_len = ziggy_core::wal::stage::object_size(config.entry_body_max());
        let stage = ShmStage::open(&stage_path(path, &file, incarnation)?, stage_len)?;
        let (inner, report) = Embedded::open(
            storage,
            grid,
            stage,
            sizes,
            options.engine_options(),
            options.sync,
        )?;
        Ok(Db {
            path: path.to_path_buf(),
            inner,
            report,
            scratch: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the open found: the checkpoint, the log, writes replayed and re-staged.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Fault injection for tests: after `n` more `fdatasync`s of the data file's WAL and
    /// superblock, every one fails with EIO.
    #[doc(hidden)]
    pub fn fail_syncs_after(&mut self, n: u64) {
        self.inner.storage_mut().fail_syncs_after(n);
    }

    /// The stage object of unsynced writes (in `/dev/shm`).
    pub fn stage_path(&self) -> &Path {
        self.inner.stage().path()
    }

    fn engine(&mut self) -> Result<&mut lsm::Engine<FileGrid>, DbError> {
        Ok(self.inner.engine_mut()?)
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.engine()?.get(key)?)
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        self.write(&[Write {
            key,
            value: Some(value),
        }])
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<(), DbError> {
        self.write(&[Write { key, value: None }])
    }

    /// Writes a batch atomically: all of it survives a crash, or none.
    pub fn write(&mut self, batch: &[Write]) -> Result<(), DbError> {
        self.check_sizes(batch)?;
        writes::encode(batch, &mut self.scratch);
        self.inner.write(&self.scratch, |engine, sequence| {
            engine.apply(sequence, batch)
        })?;
        Ok(())
    }

    fn check_sizes(&mut self, batch: &[Write]) -> Result<(), DbError> {
        let max = self.engine()?.max_entry_size();
        for w in batch {
            let size = w.key.len() + w.value.map_or(0, |v| v.len());
            if size > max {
                return Err(DbError::Engine(lsm::Error::EntryTooLarge { size, max }));
            }
        }
        Ok(())
    }

    /// Makes every write so far durable (against an OS crash and power loss).
    pub fn flush(&mut self) -> Result<(), DbError> {
        Ok(self.inner.sync()?)
    }

    /// Flushes the memtable into the grid and switches the superblock: the next open replays
    /// nothing and the WAL ring is free.
    pub fn checkpoint(&mut self) -> Result<(), DbError> {
        Ok(self.inner.checkpoint()?)
    }

    /// Range scan: up to `limit` pairs with keys in `[start, end)`, ascending or descending.
    pub fn scan(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, DbError> {
        let engine = self.engine()?;
        let sequence = engine.sequence();
        Ok(engine.scan(start, end, sequence, limit, reverse)?)
    }

    /// A consistent read view; writes after it are invisible to reads through it.
    pub fn snapshot(&mut self) -> Result<Snapshot, DbError> {
        Ok(self.engine()?.snapshot())
    }

    pub fn get_at(&mut self, snapshot: &Snapshot, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.engine()?.get_at(key, snapshot.sequence)?)
    }

    pub fn scan_at(
        &mut self,
        snapshot: &Snapshot,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, DbError> {
        Ok(self
            .engine()?
            .scan(start, end, snapshot.sequence, limit, reverse)?)
    }

    /// Lets compaction drop versions only this snapshot could see.
    pub fn release(&mut self, snapshot: Snapshot) {
        if let Ok(engine) = self.inner.engine_mut() {
            engine.release(snapshot);
        }
    }

    /// A snapshot-isolated transaction: buffer writes with `txn.put` / `txn.delete`, read with
    /// [`Db::txn_get`], then [`Db::commit`] or [`Db::abort`].
    pub fn begin(&mut self) -> Result<Transaction, DbError> {
        Ok(self.engine()?.begin())
    }

    pub fn txn_get(&mut self, txn: &Transaction, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.engine()?.txn_get(txn, key)?)
    }

    /// Commits atomically through the WAL, or fails with [`DbError::Conflict`] and changes
    /// nothing if a key it writes was written by someone else after its snapshot.
    pub fn commit(&mut self, txn: Transaction) -> Result<(), DbError> {
        let engine = self.engine()?;
        if let Err(e) = engine.validate(&txn) {
            engine.abort(txn);
            return Err(e.into());
        }
        if txn.is_read_only() {
            engine.abort(txn);
            return Ok(());
        }
        let writes: Vec<Write> = txn.writes().collect();
        if let Err(e) = self.check_sizes(&writes) {
            drop(writes);
            self.abort(txn);
            return Err(e);
        }
        writes::encode(&writes, &mut self.scratch);
        drop(writes);
        let mut txn = Some(txn);
        let result = self.inner.write(&self.scratch, |engine, sequence| {
            engine.commit(txn.take().expect("applied once"), sequence)
        });
        if let Some(txn) = txn {
            self.abort(txn); // not logged: release its snapshot
        }
        result?;
        Ok(())
    }

    pub fn abort(&mut self, txn: Transaction) {
        if let Ok(engine) = self.inner.engine_mut() {
            engine.abort(txn);
        }
    }

    /// Does up to `budget` entries of background compaction; true if more is due.
    pub fn compact(&mut self, budget: usize) -> Result<bool, DbError> {
        Ok(self.inner.compact(budget)?)
    }

    pub fn stats(&self) -> DbStats {
        let engine = self.inner.engine();
        let ours = self.inner.stats();
        DbStats {
            engine: engine.stats(),
            wal_bytes_written: ours.wal_bytes,
            seals: ours.seals,
            syncs: ours.syncs,
            grid_block_writes: engine.store().writes,
            grid_block_reads: engine.store().reads,
            checkpoints: ours.checkpoints,
            full_checkpoints: ours.full_checkpoints,
            grid_blocks: engine.store().block_count(),
            grid_blocks_in_use: engine.blocks_in_use(),
        }
    }

    /// The tree's shape (tables per level).
    pub fn shape(&self) -> Vec<usize> {
        self.inner.engine().shape()
    }

    /// Checkpoints and closes: the next open replays nothing, and the stage is removed.
    pub fn close(mut self) -> Result<(), DbError> {
        self.checkpoint()?;
        let (_, _, stage) = self.inner.into_parts();
        stage.remove()?;
        Ok(())
    }
}

/// Where the LSM grid starts: after the layout, at a block boundary.
fn grid_start(layout: &Layout, block_size: usize) -> u64 {
    layout.total_size().next_multiple_of(block_size as u64)
}

/// A data file's incarnation: random, so a replaced file never meets its predecessor's stage.
fn incarnation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish() | 1
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> DbOptions {
        DbOptions {
            block_size: 4096,
            wal_bytes: 1 << 20,
            cache_bytes: 1 << 20,
            memtable_bytes: 64 << 10,
            ..DbOptions::default()
        }
    }

    #[test]
    fn writes_survive_close_and_crash_and_the_wal_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut db = Db::create(&path, small()).unwrap();
        let value = vec![9u8; 200];
        // 2 MB through a 1 MB ring: it wraps, checkpointing on the way.
        for i in 0..10_000u32 {
            db.put(format!("key{i:06}").as_bytes(), &value).unwrap();
        }
        db.delete(b"key000007").unwrap();
        assert!(db.stats().checkpoints >= 2, "{:?}", db.stats());
        // A crash: drop without close; the WAL tail since the last checkpoint is replayed.
        drop(db);
        let mut db = Db::open(&path, small()).unwrap();
        assert_eq!(db.get(b"key000007").unwrap(), None);
        assert_eq!(db.get(b"key009999").unwrap(), Some(value.clone()));
        let all = db.scan(b"", None, usize::MAX, false).unwrap();
        assert_eq!(all.len(), 9_999);
        db.close().unwrap();
        let mut db = Db::open(&path, small()).unwrap();
        assert_eq!(db.scan(b"key0099", None, 3, true).unwrap().len(), 3);
        assert_eq!(db.get(b"key000008").unwrap(), Some(value));
        db.close().unwrap(); // removes the stage from /dev/shm
    }

    /// Bytes the file system has allocated to `path`.
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn a_full_checkpoint_gives_the_wal_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let options = DbOptions {
            wal_bytes: 8 << 20,
            ..small()
        };
        let mut db = Db::create(&path, options.clone()).unwrap();
        let value = vec![7u8; 1000];
        for i in 0..6000u32 {
            db.put(format!("key{:06}", i % 2000).as_bytes(), &value)
                .unwrap();
        }
        let grid = |db: &Db| db.stats().grid_blocks * 4096;
        assert!(
            allocated(&path) > grid(&db) + (4 << 20),
            "the WAL was written"
        );
        db.checkpoint().unwrap();
        let beside_grid = allocated(&path) - grid(&db).min(allocated(&path));
        assert!(beside_grid < 1 << 20, "{beside_grid} bytes beside the grid");
        // Writes go on into the released space, and a crash replays them.
        for i in 0..3000u32 {
            db.put(format!("new{i:06}").as_bytes(), &value).unwrap();
        }
        drop(db);
        let mut db = Db::open(&path, options).unwrap();
        assert_eq!(db.get(b"new002999").unwrap(), Some(value.clone()));
        assert_eq!(db.get(b"key001999").unwrap(), Some(value));
        assert_eq!(db.scan(b"", None, usize::MAX, false).unwrap().len(), 5000);
        db.close().unwrap();
    }

    #[test]
    fn a_failed_fdatasync_poisons_the_handle_and_loses_nothing_acknowledged() {
        for sync in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            let options = DbOptions { sync, ..small() };
            let mut db = Db::create(&path, options.clone()).unwrap();
            for i in 0..300u32 {
                db.put(format!("k{i}").as_bytes(), b"acknowledged").unwrap();
            }
            db.fail_syncs_after(0);
            // Without `sync` the flush fails; with it, the write itself does.
            let failed = match sync {
                false => db.flush(),
                true => db.put(b"in-flight", b"maybe"),
            };
            assert!(matches!(failed, Err(DbError::Io(_))), "{failed:?}");
            for later in [
                db.put(b"late", b"never").map(|_| None),
                db.get(b"k1"),
                db.flush().map(|_| None),
                db.scan(b"", None, 1, false).map(|_| None),
            ] {
                assert!(matches!(later, Err(DbError::Poisoned(_))), "{later:?}");
            }
            drop(db);
            let mut db = Db::open(&path, options).unwrap();
            for i in 0..300u32 {
                let key = format!("k{i}");
                assert_eq!(
                    db.get(key.as_bytes()).unwrap(),
                    Some(b"acknowledged".to_vec())
                );
            }
            assert_eq!(db.get(b"late").unwrap(), None, "nothing after the failure");
            // Sequences go on from what the file holds: nothing is reused.
            db.put(b"after", b"reopen").unwrap();
            db.close().unwrap();
            let mut db = Db::open(&path, small()).unwrap();
            assert_eq!(db.get(b"after").unwrap(), Some(b"reopen".to_vec()));
            db.close().unwrap();
        }
    }

    #[test]
    fn the_data_file_is_never_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mapped");
        let mut db = Db::create(&path, small()).unwrap();
        db.put(b"k", b"v").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let name = path.to_str().unwrap();
        assert!(
            !maps.contains(name),
            "{name} is mapped: an IO error would be a SIGBUS"
        );
        assert!(
            maps.contains(db.stage_path().to_str().unwrap()),
            "the stage is"
        );
    }

    #[test]
    fn an_os_crash_loses_at_most_the_writes_after_the_last_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut db = Db::create(&path, small()).unwrap();
        db.put(b"a", b"1").unwrap();
        db.flush().unwrap();
        db.put(b"b", b"2").unwrap();
        // The OS's crash takes the stage (tmpfs) with it; `b` was never sealed.
        let stage = db.stage_path().to_path_buf();
        drop(db);
        std::fs::remove_file(stage).unwrap();
        let mut db = Db::open(&path, small()).unwrap();
        assert_eq!(db.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(db.get(b"b").unwrap(), None);
        // A process crash keeps it.
        db.put(b"c", b"3").unwrap();
        drop(db);
        let mut db = Db::open(&path, small()).unwrap();
        assert_eq!(db.get(b"c").unwrap(), Some(b"3".to_vec()));
        assert_eq!(db.open_report().staged_writes, 1);
        db.close().unwrap();
    }

    #[test]
    fn clear_errors_for_bad_files_and_oversized_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, vec![0u8; 100_000]).unwrap();
        let error = Db::open(&path, small()).err().unwrap();
        assert!(error.to_string().contains("no valid superblock"), "{error}");
        assert!(Db::create(&path, small()).is_err(), "refuses to overwrite");
        let path = dir.path().join("db2");
        let mut db = Db::create(&path, small()).unwrap();
        let error = db.put(b"k", &vec![0u8; 10_000]).unwrap_err();
        assert!(error.to_string().contains("exceeds the maximum"), "{error}");
        let second = Db::open(&path, small()).err().unwrap();
        assert!(second.to_string().contains("in use"), "{second}");
        db.close().unwrap();
    }

    #[test]
    fn transactions_conflict_and_snapshots_hold() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::create(&dir.path().join("db"), small()).unwrap();
        db.put(b"x", b"0").unwrap();
        let snapshot = db.snapshot().unwrap();
        let mut a = db.begin().unwrap();
        let mut b = db.begin().unwrap();
        a.put(b"x", b"a");
        b.put(b"x", b"b");
        db.commit(a).unwrap();
        let error = db.commit(b).unwrap_err();
        assert!(matches!(error, DbError::Conflict { .. }), "{error}");
        assert_eq!(db.get(b"x").unwrap(), Some(b"a".to_vec()));
        assert_eq!(db.get_at(&snapshot, b"x").unwrap(), Some(b"0".to_vec()));
        db.release(snapshot);
        db.close().unwrap();
    }
}
