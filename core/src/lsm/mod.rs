//! The LSM storage engine: tables of sorted entries in grid blocks under a memtable.
//!
//! - [`tree`]: the engine — writes, reads, scans, snapshots, transactions, compaction, checkpoints.
//! - [`memtable`]: the newest writes in memory; [`cursor`]: merged iteration over every layer;
//!   [`entries`]: the flat entry buffers merges move entries through.
//! - [`table`]: tables (data blocks, index, filter); [`block`]: data blocks; [`bloom`]: filters.
//! - [`grid`]: checksummed blocks, the free set, block stores; [`cache`]: the block cache.
//! - [`manifest`]: the tree's shape in the grid — a root naming chunks of table metadata.
//! - [`sync`]: state sync — which blocks of a checkpoint a replica lacks, fetched by reference.
//! - [`varint`]: LEB128 variable-length integers for the encodings.

pub mod block;
pub mod bloom;
pub mod cache;
pub mod cursor;
pub mod entries;
pub mod grid;
pub mod manifest;
pub mod memtable;
pub mod rows;
pub mod sync;
pub mod table;
pub mod tree;
pub mod varint;

pub use grid::{BlockStore, GridError, MemoryStore};
pub use tree::{Checkpoint, Engine, Error, Options, Snapshot, Stats, Transaction, Write};
