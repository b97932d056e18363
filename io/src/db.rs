//! The embedded database: ZiggyDB's LSM engine on one real file, with a write-ahead log.
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
//! let snapshot = db.snapshot();
//! db.delete(b"apple")?;
//! assert_eq!(db.get_at(&snapshot, b"apple")?, Some(b"red".to_vec())); // the past stays readable
//! db.release(snapshot);
//! let mut txn = db.begin();
//! txn.put(b"cherry", b"dark red");
//! db.commit(txn)?; // fails with DbError::Conflict if another write to "cherry" came first
//! db.close()?;
//! let mut db = Db::open("example.zdb".as_ref(), DbOptions::default())?;
//! assert_eq!(db.get(b"cherry")?, Some(b"dark red".to_vec()));
//! # Ok(()) }
//! ```
//!
//! File layout: two superblock copies (4 KiB each), the WAL ring, then the grid of LSM blocks,
//! which grows at the end of the file as the data does.
//!
//! Durability: every write is logged (one `pwrite` into the WAL ring) before it is applied. With
//! `DbOptions::sync` each write also waits for `fdatasync`; without it (the default, as in
//! RocksDB) writes survive a process crash but an OS crash may lose the last ones; `flush` makes
//! everything written so far durable. A checkpoint (taken when half the WAL ring is used, and on
//! `close`) flushes the memtable into the grid, writes the manifest and switches the superblock,
//! so the ring can wrap. Opening reads the superblock, the manifest and the WAL since the last
//! checkpoint: its cost does not grow with the data.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ziggy_core::checksum::checksum;
use ziggy_core::lsm::grid::{BlockStore, GridError};
use ziggy_core::lsm::tree::KeyValue;
use ziggy_core::lsm::{self, varint, Checkpoint, Engine, Options, Snapshot, Transaction, Write};
use ziggy_core::{ReadError, WriteError};

use crate::file_storage::lock_data_file;
use crate::format::annotate;
use crate::wal_map::WalMap;

const SUPERBLOCK_SIZE: u64 = 4096;
const SUPERBLOCK_MAGIC: &[u8; 8] = b"ZIGGYDB1";
const FORMAT_VERSION: u32 = 1;
const RECORD_HEADER: usize = 24;
const RECORD_BATCH: u8 = 1;
const RECORD_WRAP: u8 = 2;
/// The WAL ring's unit of space: allocated just before the head reaches it, and given back
/// (a hole punched) once a checkpoint leaves all of it behind, so the ring occupies on disk only
/// what replay still needs, as a log of segment files would.
const WAL_CHUNK: u64 = 1 << 20;

/// Settings chosen when a database is created (block size, WAL size) or opened (the rest).
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Grid block size: the unit of table data, cache and IO. Fixed at creation.
    pub block_size: usize,
    /// The WAL ring's size. Fixed at creation.
    pub wal_bytes: u64,
    /// Bytes of block cache, allocated at open.
    pub cache_bytes: usize,
    /// Bytes of writes the memtable gathers before it is flushed.
    pub memtable_bytes: usize,
    /// Wait for `fdatasync` on every write.
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
    /// The file is not a database, or its superblock or log is damaged beyond recovery.
    Corrupt(String),
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
        allocate(&self.file, from, end).map_err(|e| {
            GridError::Write(if e.raw_os_error() == Some(libc::ENOSPC) {
                WriteError::NoSpace
            } else {
                WriteError::Io
            })
        })?;
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
    if e.raw_os_error() == Some(libc::ENOSPC) {
        WriteError::NoSpace
    } else {
        WriteError::Io
    }
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

/// The newest valid superblock copy, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Superblock {
    generation: u64,
    block_size: u32,
    wal_bytes: u64,
    checkpoint: Option<Checkpoint>,
    /// Where the WAL records after the checkpoint start, relative to the ring.
    wal_start: u64,
}

impl Superblock {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; SUPERBLOCK_SIZE as usize];
        out[4..12].copy_from_slice(SUPERBLOCK_MAGIC);
        out[12..16].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.generation.to_le_bytes());
        out[24..28].copy_from_slice(&self.block_size.to_le_bytes());
        out[28..36].copy_from_slice(&self.wal_bytes.to_le_bytes());
        out[36..44].copy_from_slice(&self.wal_start.to_le_bytes());
        if let Some(c) = self.checkpoint {
            out[44] = 1;
            out[45..45 + Checkpoint::ENCODED_SIZE].copy_from_slice(&c.encode());
        }
        let sum = checksum(&out[4..]);
        out[0..4].copy_from_slice(&sum.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Superblock> {
        let sum = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
        if checksum(&bytes[4..]) != sum || &bytes[4..12] != SUPERBLOCK_MAGIC {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        if u32::from_le_bytes(bytes[12..16].try_into().unwrap()) != FORMAT_VERSION {
            return None;
        }
        let checkpoint = match bytes[44] {
            0 => None,
            _ => Some(Checkpoint::decode(
                &bytes[45..45 + Checkpoint::ENCODED_SIZE],
            )?),
        };
        Some(Superblock {
            generation: u64_at(16),
            block_size: u32::from_le_bytes(bytes[24..28].try_into().unwrap()),
            wal_bytes: u64_at(28),
            wal_start: u64_at(36),
            checkpoint,
        })
    }
}

/// Counters for benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct DbStats {
    pub engine: lsm::Stats,
    pub wal_bytes_written: u64,
    pub grid_block_writes: u64,
    pub grid_block_reads: u64,
    pub checkpoints: u64,
    /// Blocks the grid holds now (in use or free).
    pub grid_blocks: u64,
    pub grid_blocks_in_use: u64,
}

/// An open database. Every method takes `&mut self`: the engine is single-threaded by design.
pub struct Db {
    path: PathBuf,
    wal: File,
    /// The WAL ring, mapped.
    ring: WalMap,
    engine: Engine<FileGrid>,
    options: DbOptions,
    superblock: Superblock,
    /// Where the next WAL record goes, relative to the ring.
    wal_head: u64,
    record: Vec<u8>,
    stats: DbStats,
    /// Where each memtable's writes start in the WAL: (its first sequence, the record's offset).
    /// A checkpoint of the tables keeps the WAL from the first memtable not yet flushed.
    marks: std::collections::VecDeque<(u64, u64)>,
    /// The engine's flush count when the tables were last checkpointed.
    flushes_checkpointed: u64,
    /// Per `WAL_CHUNK` of the ring: whether its space may be allocated in the file.
    wal_chunks: Vec<bool>,
    /// WAL bytes written since writeback of the ring was last started.
    wal_unstarted: u64,
}

impl Db {
    /// Creates a new database file; refuses to overwrite an existing one.
    pub fn create(path: &Path, options: DbOptions) -> Result<Db, DbError> {
        if options.block_size < 1024 || !options.block_size.is_power_of_two() {
            return Err(DbError::Options(
                "block_size must be a power of two of at least 1024",
            ));
        }
        if options.wal_bytes < 1 << 20 || !options.wal_bytes.is_multiple_of(4096) {
            return Err(DbError::Options(
                "wal_bytes must be a multiple of 4096, at least 1 MiB",
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| annotate(e, &format!("creating {}", path.display())))?;
        lock_data_file(&file)?;
        let superblock = Superblock {
            generation: 1,
            block_size: options.block_size as u32,
            wal_bytes: options.wal_bytes,
            checkpoint: None,
            wal_start: 0,
        };
        let grid_start = 2 * SUPERBLOCK_SIZE + options.wal_bytes;
        // The superblocks now; the ring stays a hole until the head reaches each chunk.
        allocate(&file, 0, 2 * SUPERBLOCK_SIZE)?;
        file.set_len(grid_start)?;
        for copy in 0..2 {
            file.write_all_at(&superblock.encode(), copy * SUPERBLOCK_SIZE)?;
        }
        file.sync_all()?;
        sync_parent(path)?;
        drop(file);
        Db::open(path, options)
    }

    /// Opens an existing database: the superblock, the manifest, then the WAL since the last
    /// checkpoint. `block_size` and `wal_bytes` come from the file, not from `options`.
    pub fn open(path: &Path, mut options: DbOptions) -> Result<Db, DbError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| annotate(e, &format!("opening {}", path.display())))?;
        lock_data_file(&file).map_err(|e| annotate(e, &format!("opening {}", path.display())))?;
        let superblock = read_superblock(&file, path)?;
        options.block_size = superblock.block_size as usize;
        options.wal_bytes = superblock.wal_bytes;
        let grid_start = 2 * SUPERBLOCK_SIZE + superblock.wal_bytes;
        let grid = FileGrid::new(file.try_clone()?, grid_start, options.block_size)?;
        let wal_chunks = superblock.wal_bytes.div_ceil(WAL_CHUNK) as usize;
        let engine = Engine::open(grid, options.engine_options(), superblock.checkpoint)?;
        let mut db = Db {
            path: path.to_path_buf(),
            ring: WalMap::new(&file, 2 * SUPERBLOCK_SIZE, superblock.wal_bytes as usize)?,
            wal: file,
            engine,
            wal_head: superblock.wal_start,
            superblock,
            options,
            record: Vec::new(),
            stats: DbStats::default(),
            marks: Default::default(),
            flushes_checkpointed: 0,
            // Unknown after a restart: taken as allocated, released by the next checkpoint.
            wal_chunks: vec![true; wal_chunks],
            wal_unstarted: 0,
        };
        db.replay()?;
        db.flushes_checkpointed = db.engine.stats().flushes;
        Ok(db)
    }

    /// Applies every valid record after the checkpoint, in sequence order; stops at the first
    /// record that is torn, damaged, or from an older lap of the ring.
    fn replay(&mut self) -> Result<(), DbError> {
        let mut position = self.superblock.wal_start;
        let mut expected = self.engine.sequence() + 1;
        loop {
            if position + RECORD_HEADER as u64 > self.options.wal_bytes {
                position = 0;
            }
            let ring = self.ring.bytes();
            let at = position as usize;
            let header = &ring[at..at + RECORD_HEADER];
            let length = u32::from_le_bytes(header[4..8].try_into().unwrap()) as u64;
            let sequence = u64::from_le_bytes(header[8..16].try_into().unwrap());
            let kind = header[16];
            if position + RECORD_HEADER as u64 + length > self.options.wal_bytes {
                break;
            }
            let record = &ring[at..at + RECORD_HEADER + length as usize];
            let sum = u32::from_le_bytes(header[0..4].try_into().unwrap());
            if checksum(&record[4..]) != sum || sequence != expected {
                break;
            }
            let payload = record[RECORD_HEADER..].to_vec();
            match kind {
                RECORD_WRAP => {
                    position = 0;
                    continue;
                }
                RECORD_BATCH => {
                    let writes = decode_batch(&payload).ok_or_else(|| {
                        DbError::Corrupt(format!(
                            "WAL record {sequence} has a valid checksum but does not decode"
                        ))
                    })?;
                    let borrowed: Vec<Write> = writes
                        .iter()
                        .map(|(k, v)| Write {
                            key: k,
                            value: v.as_deref(),
                        })
                        .collect();
                    if self.engine.memtable_is_empty() {
                        self.marks.push_back((sequence, position));
                    }
                    self.engine.apply_replayed(sequence, &borrowed)?;
                }
                _ => break,
            }
            expected += 1;
            position += RECORD_HEADER as u64 + length;
        }
        self.wal_head = position;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.engine.get(key)?)
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
        let max = self.engine.max_entry_size();
        for w in batch {
            let size = w.key.len() + w.value.map_or(0, |v| v.len());
            if size > max {
                return Err(DbError::Engine(lsm::Error::EntryTooLarge { size, max }));
            }
        }
        let sequence = self.engine.sequence() + 1;
        self.log(sequence, batch)?;
        self.engine.apply(sequence, batch)?;
        self.after_apply()
    }

    /// After a memtable flush, checkpoints the tables: blocks compaction released become
    /// reusable once the checkpoint that stops naming them is durable, so checkpoints must
    /// follow flushes closely for the file not to grow.
    fn after_apply(&mut self) -> Result<(), DbError> {
        let flushes = self.engine.stats().flushes;
        if flushes == self.flushes_checkpointed {
            return Ok(());
        }
        self.flushes_checkpointed = flushes;
        let checkpoint = self.engine.checkpoint_tables()?;
        let flushed = checkpoint.sequence;
        while self
            .marks
            .front()
            .is_some_and(|&(first, _)| first <= flushed)
        {
            self.marks.pop_front();
        }
        let wal_start = match self.marks.front() {
            Some(&(first, offset)) => {
                assert_eq!(first, flushed + 1, "the WAL resumes right after the tables");
                offset
            }
            None => self.wal_head,
        };
        self.record_checkpoint(checkpoint, wal_start)
    }

    /// Appends one record to the WAL ring (checkpointing first when half the ring is in use).
    fn log(&mut self, sequence: u64, batch: &[Write]) -> Result<(), DbError> {
        encode_batch(batch, &mut self.record);
        let length = self.record.len() as u64;
        let ring = self.options.wal_bytes;
        let needed = RECORD_HEADER as u64 * 2 + length;
        // Flushes checkpoint the tables and free the ring up to the oldest unflushed memtable;
        // a full checkpoint is the fallback when that is not enough.
        if self.ring_used() + needed > ring - ring / 4 {
            self.checkpoint()?;
        }
        if self.wal_head + RECORD_HEADER as u64 + length > ring {
            if self.wal_head + RECORD_HEADER as u64 <= ring {
                self.write_record(RECORD_WRAP, sequence, 0)?;
            }
            self.wal_head = 0;
        }
        if self.engine.memtable_is_empty() {
            self.marks.push_back((sequence, self.wal_head));
        }
        self.write_record(RECORD_BATCH, sequence, length as usize)?;
        if self.options.sync {
            self.wal.sync_data()?;
        }
        Ok(())
    }

    /// Bytes of the ring between the checkpoint's start and the head.
    fn ring_used(&self) -> u64 {
        let ring = self.options.wal_bytes;
        (self.wal_head + ring - self.superblock.wal_start) % ring
    }

    /// Writes a record at the head; its payload is `self.record[..length]`.
    fn write_record(&mut self, kind: u8, sequence: u64, length: usize) -> Result<(), DbError> {
        let at = self.wal_head as usize;
        let size = RECORD_HEADER + length;
        self.allocate_wal(at as u64, size as u64)?;
        let bytes = &mut self.ring.bytes_mut()[at..at + size];
        bytes[4..8].copy_from_slice(&(length as u32).to_le_bytes());
        bytes[8..16].copy_from_slice(&sequence.to_le_bytes());
        bytes[16..24].copy_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
        bytes[RECORD_HEADER..].copy_from_slice(&self.record[..length]);
        let sum = checksum(&bytes[4..]);
        bytes[0..4].copy_from_slice(&sum.to_le_bytes());
        self.wal_head += size as u64;
        self.stats.wal_bytes_written += size as u64;
        self.wal_unstarted += size as u64;
        if self.wal_unstarted >= WRITE_BEHIND {
            self.wal_unstarted = 0;
            start_writeback(&self.wal, 2 * SUPERBLOCK_SIZE, self.options.wal_bytes);
        }
        Ok(())
    }

    /// Allocates the ring's chunks under `[at, at + size)` that are holes: a full disk fails the
    /// write here, cleanly, rather than as a fault on the mapping.
    fn allocate_wal(&mut self, at: u64, size: u64) -> Result<(), DbError> {
        let ring = self.options.wal_bytes;
        for chunk in at / WAL_CHUNK..=(at + size - 1) / WAL_CHUNK {
            if !self.wal_chunks[chunk as usize] {
                let from = 2 * SUPERBLOCK_SIZE + chunk * WAL_CHUNK;
                let to = 2 * SUPERBLOCK_SIZE + ((chunk + 1) * WAL_CHUNK).min(ring);
                allocate(&self.wal, from, to)?;
                self.wal_chunks[chunk as usize] = true;
            }
        }
        Ok(())
    }

    /// Punches holes over the ring's chunks that hold nothing replay needs: every chunk outside
    /// the run from the one holding `wal_start` to the one holding the head.
    fn release_wal(&mut self) {
        let chunks = self.wal_chunks.len() as u64;
        let first = self.superblock.wal_start / WAL_CHUNK;
        let last = self.wal_head.min(self.options.wal_bytes - 1) / WAL_CHUNK;
        let live = (last + chunks - first) % chunks + 1;
        for step in live..chunks {
            let chunk = (first + step) % chunks;
            if std::mem::take(&mut self.wal_chunks[chunk as usize]) {
                let from = 2 * SUPERBLOCK_SIZE + chunk * WAL_CHUNK;
                let len = WAL_CHUNK.min(self.options.wal_bytes - chunk * WAL_CHUNK);
                punch_hole(&self.wal, from, len);
            }
        }
    }

    /// Makes every write so far durable.
    pub fn flush(&mut self) -> Result<(), DbError> {
        self.wal.sync_data()?;
        Ok(())
    }

    /// Flushes the memtable into the grid and switches the superblock: the WAL before it is free.
    pub fn checkpoint(&mut self) -> Result<(), DbError> {
        let checkpoint = self.engine.checkpoint()?; // syncs the file, the WAL included
        self.marks.clear();
        self.flushes_checkpointed = self.engine.stats().flushes;
        let head = self.wal_head;
        self.record_checkpoint(checkpoint, head)?;
        // The ring's space is given back here, not after each flush's checkpoint (where
        // punching the chunks just left behind and allocating them again a lap later cost
        // two `fallocate` calls per MiB written).
        self.release_wal();
        Ok(())
    }

    /// Switches the superblock to `checkpoint`, with the WAL replayed from `wal_start`.
    fn record_checkpoint(&mut self, checkpoint: Checkpoint, wal_start: u64) -> Result<(), DbError> {
        let next = Superblock {
            generation: self.superblock.generation + 1,
            checkpoint: Some(checkpoint),
            wal_start,
            ..self.superblock.clone()
        };
        let copy = next.generation % 2;
        self.wal
            .write_all_at(&next.encode(), copy * SUPERBLOCK_SIZE)?;
        self.wal.sync_data()?;
        self.superblock = next;
        self.engine.checkpoint_durable();
        self.stats.checkpoints += 1;
        Ok(())
    }

    /// Range scan: up to `limit` pairs with keys in `[start, end)`, ascending or descending.
    pub fn scan(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, DbError> {
        let sequence = self.engine.sequence();
        Ok(self.engine.scan(start, end, sequence, limit, reverse)?)
    }

    /// A consistent read view; writes after it are invisible to reads through it.
    pub fn snapshot(&mut self) -> Snapshot {
        self.engine.snapshot()
    }

    pub fn get_at(&mut self, snapshot: &Snapshot, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.engine.get_at(key, snapshot.sequence)?)
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
            .engine
            .scan(start, end, snapshot.sequence, limit, reverse)?)
    }

    /// Lets compaction drop versions only this snapshot could see.
    pub fn release(&mut self, snapshot: Snapshot) {
        self.engine.release(snapshot);
    }

    /// A snapshot-isolated transaction: buffer writes with `txn.put` / `txn.delete`, read with
    /// [`Db::txn_get`], then [`Db::commit`] or [`Db::abort`].
    pub fn begin(&mut self) -> Transaction {
        self.engine.begin()
    }

    pub fn txn_get(&mut self, txn: &Transaction, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.engine.txn_get(txn, key)?)
    }

    /// Commits atomically through the WAL, or fails with [`DbError::Conflict`] and changes
    /// nothing if a key it writes was written by someone else after its snapshot.
    pub fn commit(&mut self, txn: Transaction) -> Result<(), DbError> {
        if let Err(e) = self.engine.validate(&txn) {
            self.engine.abort(txn);
            return Err(e.into());
        }
        if txn.is_read_only() {
            self.engine.abort(txn);
            return Ok(());
        }
        let sequence = self.engine.sequence() + 1;
        let writes: Vec<Write> = txn.writes().collect();
        if let Err(e) = self.log(sequence, &writes) {
            drop(writes);
            self.engine.abort(txn);
            return Err(e);
        }
        drop(writes);
        self.engine.commit(txn, sequence)?;
        self.after_apply()
    }

    pub fn abort(&mut self, txn: Transaction) {
        self.engine.abort(txn);
    }

    /// Does up to `budget` entries of background compaction; true if more is due.
    pub fn compact(&mut self, budget: usize) -> Result<bool, DbError> {
        Ok(self.engine.work(budget)?)
    }

    pub fn stats(&self) -> DbStats {
        DbStats {
            engine: self.engine.stats(),
            grid_block_writes: self.engine.store().writes,
            grid_block_reads: self.engine.store().reads,
            grid_blocks: self.engine.store().block_count(),
            grid_blocks_in_use: self.engine.blocks_in_use(),
            ..self.stats
        }
    }

    /// The tree's shape (tables per level).
    pub fn shape(&self) -> Vec<usize> {
        self.engine.shape()
    }

    /// Checkpoints and closes: the next open replays nothing.
    pub fn close(mut self) -> Result<(), DbError> {
        self.checkpoint()
    }
}

fn read_superblock(file: &File, path: &Path) -> Result<Superblock, DbError> {
    let mut copies = Vec::new();
    for copy in 0..2 {
        let mut bytes = vec![0u8; SUPERBLOCK_SIZE as usize];
        if file
            .read_exact_at(&mut bytes, copy * SUPERBLOCK_SIZE)
            .is_ok()
        {
            copies.extend(Superblock::decode(&bytes));
        }
    }
    copies
        .into_iter()
        .max_by_key(|s| s.generation)
        .ok_or_else(|| {
            DbError::Corrupt(format!(
                "{}: no valid superblock (not a ZiggyDB database, or both copies are damaged)",
                path.display()
            ))
        })
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// count, then per write: 0 (delete) or 1 (put), key length, key, [value length, value].
fn encode_batch(batch: &[Write], out: &mut Vec<u8>) {
    out.clear();
    varint::encode(batch.len() as u64, out);
    for w in batch {
        out.push(w.value.is_some() as u8);
        varint::encode(w.key.len() as u64, out);
        out.extend_from_slice(w.key);
        if let Some(v) = w.value {
            varint::encode(v.len() as u64, out);
            out.extend_from_slice(v);
        }
    }
}

type OwnedWrite = (Vec<u8>, Option<Vec<u8>>);

fn decode_batch(bytes: &[u8]) -> Option<Vec<OwnedWrite>> {
    let mut reader = lsm::table::Reader::new(bytes);
    let count = reader.varint()? as usize;
    if count > bytes.len() {
        return None;
    }
    let mut writes = Vec::with_capacity(count);
    for _ in 0..count {
        let put = match reader.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let key = reader.bytes()?.to_vec();
        let value = if put {
            Some(reader.bytes()?.to_vec())
        } else {
            None
        };
        writes.push((key, value));
    }
    reader.is_done().then_some(writes)
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
    }

    /// Bytes the file system has allocated to `path`.
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn the_wal_ring_occupies_only_what_replay_needs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let options = DbOptions {
            wal_bytes: 16 << 20,
            memtable_bytes: 1 << 20,
            ..small()
        };
        let mut db = Db::create(&path, options.clone()).unwrap();
        assert!(allocated(&path) < 1 << 20, "a new ring is a hole");
        let value = vec![7u8; 1000];
        // 40 MB of records: the ring wraps twice.
        for i in 0..40_000u32 {
            db.put(format!("key{:06}", i % 5000).as_bytes(), &value)
                .unwrap();
        }
        db.checkpoint().unwrap();
        // At most the grid's whole span is allocated beside the ring (less where holes are).
        let beside_ring = 2 * SUPERBLOCK_SIZE + db.stats().grid_blocks * 4096;
        let ring_on_disk = allocated(&path).saturating_sub(beside_ring);
        assert!(
            ring_on_disk <= 2 * WAL_CHUNK,
            "after a checkpoint the ring keeps at most two chunks: {ring_on_disk} bytes"
        );
        // Writes go on into the released chunks, and a crash replays them.
        for i in 0..3000u32 {
            db.put(format!("new{i:06}").as_bytes(), &value).unwrap();
        }
        drop(db);
        let mut db = Db::open(&path, options).unwrap();
        assert_eq!(db.get(b"new002999").unwrap(), Some(value.clone()));
        assert_eq!(db.get(b"key004999").unwrap(), Some(value));
        assert_eq!(db.scan(b"", None, usize::MAX, false).unwrap().len(), 8000);
    }

    #[test]
    fn a_torn_wal_tail_is_cut_where_it_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut db = Db::create(&path, small()).unwrap();
        db.put(b"a", b"1").unwrap();
        db.put(b"b", b"2").unwrap();
        let head = db.wal_head;
        drop(db);
        // Damage the last record's payload: the record before it survives.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xFF], 2 * SUPERBLOCK_SIZE + head - 1)
            .unwrap();
        drop(file);
        let mut db = Db::open(&path, small()).unwrap();
        assert_eq!(db.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(db.get(b"b").unwrap(), None);
        db.put(b"c", b"3").unwrap();
        drop(db);
        let mut db = Db::open(&path, small()).unwrap();
        assert_eq!(db.get(b"c").unwrap(), Some(b"3".to_vec()));
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
    }

    #[test]
    fn transactions_conflict_and_snapshots_hold() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::create(&dir.path().join("db"), small()).unwrap();
        db.put(b"x", b"0").unwrap();
        let snapshot = db.snapshot();
        let mut a = db.begin();
        let mut b = db.begin();
        a.put(b"x", b"a");
        b.put(b"x", b"b");
        db.commit(a).unwrap();
        let error = db.commit(b).unwrap_err();
        assert!(matches!(error, DbError::Conflict { .. }), "{error}");
        assert_eq!(db.get(b"x").unwrap(), Some(b"a".to_vec()));
        assert_eq!(db.get_at(&snapshot, b"x").unwrap(), Some(b"0".to_vec()));
        db.release(snapshot);
    }
}
