//! The IO interface between the core and the world.
//!
//! The core never blocks and never touches the OS. It *submits* storage reads and writes through a
//! [`Storage`] and is called back by its driver when they complete (`Replica::on_read_complete`,
//! `Replica::on_write_complete`). Time arrives as ticks (`Replica::tick`). The simulator
//! (`ziggy-sim`) and the real runtime (`ziggy-io`) are the two drivers.
//!
//! The storage contract:
//! - Offsets and lengths are multiples of the layout's sector size and lie inside the data file.
//! - `submit_write` copies `data` before it returns; the core may reuse its buffer at once.
//! - A write is **durable when its completion is delivered**, not before. A crash may lose, tear
//!   (per sector: old bytes, new bytes or garbage) or keep any write whose completion was not
//!   delivered.
//! - Completions may arrive in any order, but always after the call that submitted them returned.
//! - A read returns the bytes of the most recent completed write to each sector, or an error (a
//!   latent sector error), or, under faults, corrupted bytes; the core checks every checksum.

/// The tag of one submitted IO, chosen by the core and handed back with its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IoId(pub u64);

/// Why a read returned no data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The device could not read a sector (a latent sector error, EIO).
    Io,
}

/// Why a write failed. The core treats a failed write as fatal: after a failed fsync the state of
/// the file is unknown (see PostgreSQL's "fsyncgate").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The device reported an error.
    Io,
    /// The device is full. Data files are preallocated, so this points at a broken setup.
    NoSpace,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Io => write!(f, "the device reported an I/O error"),
            WriteError::NoSpace => write!(
                f,
                "no space left (the disk, a quota or the file-size limit is full)"
            ),
        }
    }
}

/// Sector-addressed, completion-based storage of one data file.
pub trait Storage {
    /// Submits a read of `len` bytes at byte `offset`.
    fn submit_read(&mut self, id: IoId, offset: u64, len: usize);
    /// Submits a write of `data` at byte `offset`. `data` is copied before this returns.
    fn submit_write(&mut self, id: IoId, offset: u64, data: &[u8]);
}

/// What an IO is for; the top byte of its [`IoId`]. Drivers treat ids as opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum IoKind {
    WalEntry = 1,
    WalHeaders = 2,
    Superblock = 3,
    GridBlock = 4,
    Reply = 5,
    RecoveryRead = 6,
    /// A faulty WAL entry rewritten from the leader's copy.
    WalRepair = 7,
}

impl IoId {
    pub fn new(kind: IoKind, n: u64) -> IoId {
        assert!(n < 1 << 56);
        IoId(((kind as u64) << 56) | n)
    }

    pub fn kind(self) -> Option<IoKind> {
        Some(match self.0 >> 56 {
            1 => IoKind::WalEntry,
            2 => IoKind::WalHeaders,
            3 => IoKind::Superblock,
            4 => IoKind::GridBlock,
            5 => IoKind::Reply,
            6 => IoKind::RecoveryRead,
            7 => IoKind::WalRepair,
            _ => return None,
        })
    }

    pub fn n(self) -> u64 {
        self.0 & ((1 << 56) - 1)
    }
}
