//! The embedded database's core: the LSM engine behind the replica's own durability path.
//!
//! One process writes; there are no peers, so nothing is repaired and nothing is voted on. But
//! the data file is the replica's: superblock copies, the WAL's entries and redundant headers
//! (written by the same [`Journal`]), the checkpoint blob, and recovery by the same decision table.
//! The simulator's storage faults and the WAL fuzzers cover what an embedded user runs.
//!
//! # Writes
//!
//! A write is staged (see [`crate::wal::stage`]: a memcpy into memory that survives the process)
//! and applied to the engine. The stage's records are *sealed* into one `EMBEDDED` WAL entry, one
//! `pwrite`, when the area is full, when a write starts a new memtable (so every memtable starts
//! an entry, and a table checkpoint can name the WAL index it covers), and at every sync point.
//! A sync point is the journal's two rounds: entries durable, then their redundant headers.
//!
//! | the call returned `Ok` | survives a process crash | survives an OS crash |
//! |---|---|---|
//! | a write | yes | once a later sync point completed |
//! | a write with `sync` | yes | yes |
//! | [`Embedded::sync`], a checkpoint | — | every write before it |
//!
//! # Failures
//!
//! A failed write, sync or engine step *poisons* the handle: every later call returns
//! [`Error::Poisoned`] until the file is opened again, so no sequence is reused and nothing is
//! written after state the OS may have dropped. Acknowledged entries that cannot be read on open
//! are reported ([`Error::CorruptWal`]), never cut away.

mod open;
pub mod writes;

use std::collections::VecDeque;

use crate::checkpoint;
use crate::config::{Config, Layout};
use crate::io::{IoId, IoKind, ReadError, WriteError};
use crate::lsm::grid::BlockStore;
use crate::lsm::{self, Checkpoint, Engine};
use crate::storage_contract::{Completion, ContractStorage};
use crate::superblock::Superblock;
use crate::wal::header::Operation;
use crate::wal::journal::{AppendError, Journal};
use crate::wal::stage::{self, Stage, StageCorrupt, StageWriter};

pub use open::{format, read_sizes, OpenReport};

/// The operation of an entry whose body is embedded writes (stage records).
pub const EMBEDDED: Operation = Operation(5);
/// The term every embedded entry carries (one writer, no elections).
const TERM: u64 = 1;
/// The checkpoint blob's tag for an LSM checkpoint (as a replica's state machine writes it).
const BLOB_LSM: u8 = 1;

/// Storage the embedded database drives synchronously.
pub trait EmbeddedStorage: ContractStorage {
    /// Makes every write so far durable, including those whose completion was delivered before
    /// the process last started (a process crash leaves them in the OS's cache only).
    fn barrier(&mut self) -> Result<(), WriteError>;
    /// The first error a submitted write met before its completion (a real file reports a failed
    /// `pwrite` at once; its completion would wait for the next sync).
    fn take_write_error(&mut self) -> Option<WriteError>;
    /// Gives the space of `len` bytes at `offset` back (they read as zeros after). Best effort:
    /// a storage that cannot keeps the bytes, which costs space, not correctness.
    fn discard(&mut self, _offset: u64, _len: u64) {}
}

/// An embedded database's sizes, fixed when its file is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub grid_block_size: u32,
    pub wal_slot_count: u32,
    pub wal_entry_size: u32,
}

impl Sizes {
    pub fn config(&self, lsm: lsm::Options) -> Config {
        Config::embedded(
            self.grid_block_size,
            self.wal_slot_count,
            self.wal_entry_size,
            lsm,
        )
    }

    fn encode(&self) -> [u32; 3] {
        [
            self.grid_block_size,
            self.wal_slot_count,
            self.wal_entry_size,
        ]
    }
}

/// Acknowledged WAL entries that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalDamage {
    /// The faulty WAL indices.
    pub entries: Vec<u64>,
    /// The writes (sequences) they held, where a surviving header names them.
    pub writes: Vec<std::ops::RangeInclusive<u64>>,
    /// The last index of the log: entries after the damage that depend on it.
    pub head: u64,
    /// The byte offset of the first faulty entry's slot in the data file.
    pub offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A read of the data file failed.
    Read {
        offset: u64,
        error: ReadError,
    },
    /// A write or a sync of the data file failed.
    Write(WriteError),
    /// No superblock copy is valid: not a database, or every copy is damaged.
    NoSuperblock,
    /// The file was made with other sizes, or by a replica.
    NotEmbedded(String),
    /// A checksummed structure is damaged (named).
    Corrupt(String),
    /// Acknowledged WAL entries are damaged: nothing was dropped.
    CorruptWal(WalDamage),
    /// Acknowledged writes in the stage are damaged.
    CorruptStage(StageCorrupt),
    Engine(lsm::Error),
    /// A write's payload exceeds what one WAL entry holds.
    TooLarge {
        size: usize,
        max: usize,
    },
    /// An earlier call failed in a way that leaves the file's state unknown: reopen.
    Poisoned(Box<Error>),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Read { offset, error } => write!(f, "read at byte {offset} failed: {error:?}"),
            Error::Write(e @ WriteError::NoSpace) => write!(f, "write failed: {e}"),
            Error::Write(e) => write!(f, "write or sync failed: {e}"),
            Error::NoSuperblock => write!(
                f,
                "no valid superblock: not a ZiggyDB database, or every copy is damaged"
            ),
            Error::NotEmbedded(why) => write!(f, "not an embedded database: {why}"),
            Error::Corrupt(what) => write!(f, "corrupt: {what}"),
            Error::CorruptWal(d) => {
                write!(
                    f,
                    "WAL entries {:?} were acknowledged but are unreadable (slot at byte {})",
                    d.entries, d.offset
                )?;
                if !d.writes.is_empty() {
                    write!(f, "; they held writes {:?}", d.writes)?;
                }
                write!(
                    f,
                    "; the log runs to entry {}, which depends on them; nothing was dropped",
                    d.head
                )
            }
            Error::CorruptStage(c) => write!(
                f,
                "the stage of unsynced writes is damaged at byte {}{}: {}; nothing was dropped",
                c.offset,
                c.seq.map_or(String::new(), |s| format!(" (write {s})")),
                c.what
            ),
            Error::Engine(e) => write!(f, "{e}"),
            Error::TooLarge { size, max } => {
                write!(f, "a write of {size} bytes exceeds the largest, {max}")
            }
            Error::Poisoned(cause) => write!(
                f,
                "an earlier failure left the file in an unknown state ({cause}): reopen it"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<lsm::Error> for Error {
    fn from(e: lsm::Error) -> Error {
        Error::Engine(e)
    }
}

/// Counters for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries sealed (each one `pwrite`).
    pub seals: u64,
    /// Sync points completed (each two `fdatasync`s when there was something to sync).
    pub syncs: u64,
    /// Superblock switches: table and full checkpoints.
    pub checkpoints: u64,
    pub full_checkpoints: u64,
    /// Bytes of entries written.
    pub wal_bytes: u64,
}

/// An open embedded database. See the module documentation.
pub struct Embedded<S: EmbeddedStorage, G: BlockStore, T: Stage> {
    layout: Layout,
    storage: S,
    engine: Engine<G>,
    journal: Journal,
    stage: StageWriter<T>,
    superblock: Superblock,
    /// Where each memtable's writes start: (its first sequence, the WAL index of its first
    /// entry). A table checkpoint keeps the WAL from the first memtable not yet flushed.
    marks: VecDeque<(u64, u64)>,
    /// The engine's flush count when the tables were last checkpointed.
    flushes_checkpointed: u64,
    poisoned: Option<Error>,
    /// Seal and sync after every write.
    sync_writes: bool,
    stats: Stats,
    block: Vec<u8>,
    sector: Vec<u8>,
}

impl<S: EmbeddedStorage, G: BlockStore, T: Stage> Embedded<S, G, T> {
    pub fn engine(&self) -> &Engine<G> {
        &self.engine
    }

    /// The engine, for reads (which never touch the log). Errors when the handle is poisoned.
    pub fn engine_mut(&mut self) -> Result<&mut Engine<G>, Error> {
        self.check()?;
        Ok(&mut self.engine)
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The storage, for tests that inject faults into it.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    pub fn stage(&self) -> &T {
        self.stage.stage()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Gives up the handle without a checkpoint, as a crash would: its storage, grid and stage.
    pub fn into_parts(self) -> (S, G, T) {
        (
            self.storage,
            self.engine.into_store(),
            self.stage.into_stage(),
        )
    }

    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// The largest payload one write may carry.
    pub fn payload_max(&self) -> usize {
        let area = self.stage.header().area_size as usize;
        // record_size(n) = 16 + round4(n) + 4, rounded to 8.
        (area - 20) & !7
    }

    fn check(&self) -> Result<(), Error> {
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned(Box::new(cause.clone()))),
            None => Ok(()),
        }
    }

    fn poison(&mut self, error: Error) -> Error {
        if self.poisoned.is_none() {
            self.poisoned = Some(error.clone());
        }
        error
    }

    /// Logs `payload` (an encoded batch, see [`writes`]) at the next sequence and applies it
    /// with `apply`. Returns the sequence. On `Err` the write had no effect, except with `sync`
    /// writes, where a failed sync leaves it staged but maybe not durable. A failure after the
    /// write was staged poisons the handle and still returns `Ok`: a reopen replays the write.
    pub fn write(
        &mut self,
        payload: &[u8],
        apply: impl FnOnce(&mut Engine<G>, u64) -> Result<(), lsm::Error>,
    ) -> Result<u64, Error> {
        self.check()?;
        if stage::record_size(payload.len()) > self.stage.header().area_size as usize {
            return Err(Error::TooLarge {
                size: payload.len(),
                max: self.payload_max(),
            });
        }
        let seq = self.engine.sequence() + 1;
        assert_eq!(seq, self.stage.next_seq(), "the stage follows the engine");
        if !self.stage.fits(payload.len()) {
            self.seal()?;
        }
        if self.engine.memtable_is_empty() {
            // Every memtable starts an entry (a seal may checkpoint, so ask again after it).
            self.seal()?;
            self.marks.push_back((seq, self.journal.head() + 1));
        }
        self.stage.append(seq, payload);
        // From here the write is logged: an engine failure cannot take it back, so it poisons
        // the handle and the write is reported done (a reopen replays it).
        if let Err(e) = apply(&mut self.engine, seq) {
            self.poison(Error::Engine(e));
            return Ok(seq);
        }
        if self.sync_writes {
            // On `Err` the write is staged but maybe not durable: indeterminate, and poisoned.
            self.sync()?;
        }
        // A failed table checkpoint poisons the handle; the write itself is logged already.
        let _ = self.after_apply();
        Ok(seq)
    }

    /// Makes every write so far durable: seals the stage, then the journal's two rounds.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.check()?;
        self.seal()?;
        self.make_durable()
    }

    /// Flushes the memtable into tables and switches the superblock: the next open replays no
    /// WAL, and the ring is free again.
    pub fn checkpoint(&mut self) -> Result<(), Error> {
        self.check()?;
        self.seal()?;
        self.make_durable()?;
        let checkpoint = self
            .engine
            .checkpoint()
            .map_err(|e| self.poison(e.into()))?;
        self.marks.clear();
        self.flushes_checkpointed = self.engine.stats().flushes;
        let index = self.journal.head();
        self.record_checkpoint(checkpoint, index)?;
        self.stats.full_checkpoints += 1;
        // The durable checkpoint covers the whole log: no entry is read again, so their space
        // goes back to the file system until the ring reaches it (recovery reads zeros: empty).
        let zone = crate::config::Zone::WalEntries;
        self.storage
            .discard(self.layout.zone_start(zone), self.layout.zone_size(zone));
        Ok(())
    }

    /// Background work: up to `budget` entries of compaction; true if more is due.
    pub fn compact(&mut self, budget: usize) -> Result<bool, Error> {
        self.check()?;
        let more = self
            .engine
            .work(budget)
            .map_err(|e| self.poison(e.into()))?;
        self.after_apply()?;
        Ok(more)
    }

    /// Seals the stage's records into the next WAL entry and writes it.
    fn seal(&mut self) -> Result<(), Error> {
        if self.stage.is_empty() {
            return Ok(());
        }
        let first = self.stage.header().next_seq;
        let last = self.stage.next_seq() - 1;
        let index = loop {
            let appended =
                self.journal
                    .append(EMBEDDED, TERM, 0, first, last, &[self.stage.body()]);
            match appended {
                Ok(index) => break index,
                Err(AppendError::PipelineFull) => self.make_durable()?,
                Err(e) => panic!("an embedded entry always fits the ring: {e:?}"),
            }
        };
        self.journal.flush(&mut self.storage);
        if let Some(e) = self.storage.take_write_error() {
            return Err(self.poison(Error::Write(e)));
        }
        let (header, body) = self.journal.entry(index).expect("just appended");
        self.stats.wal_bytes += (body.len() + crate::wal::header::HEADER_SIZE) as u64;
        self.stats.seals += 1;
        self.stage.sealed(header, last + 1);
        if self.journal.ring_free() < self.layout.wal_slot_count / 4 {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// The journal's two rounds for everything sealed: entries durable, then their headers.
    fn make_durable(&mut self) -> Result<(), Error> {
        match make_durable(&mut self.journal, &mut self.storage) {
            Ok(true) => self.stats.syncs += 1,
            Ok(false) => {}
            Err(e) => return Err(self.poison(e)),
        }
        Ok(())
    }

    /// Delivers every pending completion; a failed write poisons.
    fn complete(&mut self) -> Result<(), Error> {
        complete(&mut self.journal, &mut self.storage).map_err(|e| self.poison(e))
    }

    /// After a memtable flush, checkpoints the tables: blocks compaction released become
    /// reusable once a checkpoint that stops naming them is durable, and the WAL before the
    /// first unflushed memtable is free.
    fn after_apply(&mut self) -> Result<(), Error> {
        let flushes = self.engine.stats().flushes;
        if flushes == self.flushes_checkpointed {
            return Ok(());
        }
        self.flushes_checkpointed = flushes;
        let flushed = self.engine.flushed_sequence();
        while self
            .marks
            .front()
            .is_some_and(|&(first, _)| first <= flushed)
        {
            self.marks.pop_front();
        }
        let index = match self.marks.front() {
            Some(&(first, index)) => {
                assert_eq!(first, flushed + 1, "the WAL resumes right after the tables");
                index - 1
            }
            None => {
                // Sealed before the engine writes its checkpoint: a seal may take a full one.
                let before = self.journal.checkpoint();
                self.seal()?;
                if self.journal.checkpoint() != before {
                    return Ok(());
                }
                self.journal.head()
            }
        };
        if index < self.journal.checkpoint() {
            return Ok(()); // a full checkpoint already covers more
        }
        if self.journal.durable() < index {
            self.make_durable()?;
        }
        let checkpoint = self
            .engine
            .checkpoint_tables()
            .map_err(|e| self.poison(e.into()))?;
        assert_eq!(
            checkpoint.sequence, flushed,
            "the tables cover what was flushed"
        );
        self.record_checkpoint(checkpoint, index)
    }

    /// Writes the checkpoint blob into the other half, then the superblock naming it and WAL
    /// index `index`, copy by copy in two halves, each durable before the next.
    fn record_checkpoint(&mut self, lsm: Checkpoint, index: u64) -> Result<(), Error> {
        assert!(index >= self.journal.checkpoint() && index <= self.journal.durable());
        let mut blob = vec![BLOB_LSM];
        blob.extend_from_slice(&lsm.encode());
        let area = 1 - self.superblock.state_area;
        let (first, _) = checkpoint::area_blocks(&self.layout, area);
        for n in 0..checkpoint::blocks_for(&self.layout, blob.len() as u64) {
            checkpoint::encode_block(&self.layout, &blob, n, first + n, index, &mut self.block);
            let offset = self.layout.grid_block_offset(first + n);
            self.storage
                .submit_write(IoId::new(IoKind::GridBlock, first + n), offset, &self.block);
        }
        self.complete()?;
        let mut target = self.superblock.successor();
        target.checkpoint_index = index;
        target.checkpoint_checksum = self.journal.checksum_at(index).expect("index in the log");
        target.checkpoint_term = self.journal.term_at(index).expect("index in the log");
        target.state_area = area;
        target.state_size = blob.len() as u64;
        target.state_checksum = crate::checksum::checksum(&blob);
        self.write_superblock(&target)?;
        self.superblock = target;
        self.journal
            .set_checkpoint(index, target.checkpoint_checksum, target.checkpoint_term);
        self.engine.checkpoint_durable();
        self.stats.checkpoints += 1;
        Ok(())
    }

    fn write_superblock(&mut self, target: &Superblock) -> Result<(), Error> {
        let copies = self.layout.superblock_copies as u16;
        for half in [0..copies / 2, copies / 2..copies] {
            for copy in half {
                target.encode(copy, &mut self.sector);
                let offset = self.layout.superblock_copy_offset(copy as u64);
                self.storage.submit_write(
                    IoId::new(IoKind::Superblock, copy as u64),
                    offset,
                    &self.sector,
                );
            }
            self.complete()?;
        }
        Ok(())
    }
}

/// Runs the journal's rounds until everything appended is durable; true if there was any.
fn make_durable<S: EmbeddedStorage>(journal: &mut Journal, storage: &mut S) -> Result<bool, Error> {
    let mut rounds = 0;
    while journal.durable() < journal.head() {
        journal.flush(storage);
        complete(journal, storage)?;
        rounds += 1;
        assert!(rounds <= 4, "two rounds make the journal durable");
    }
    Ok(rounds > 0)
}

/// Delivers every pending completion to the journal.
fn complete<S: EmbeddedStorage>(journal: &mut Journal, storage: &mut S) -> Result<(), Error> {
    for completion in storage.complete_all() {
        match completion {
            Completion::Write { result: Err(e), .. } => return Err(Error::Write(e)),
            Completion::Write { id, result: Ok(()) } => match id.kind() {
                Some(IoKind::WalEntry) => journal.on_entry_written(id.n()),
                Some(IoKind::WalHeaders) => {
                    journal.on_headers_written();
                }
                _ => {}
            },
            Completion::Read { .. } => unreachable!("reads are completed where submitted"),
        }
    }
    Ok(())
}
