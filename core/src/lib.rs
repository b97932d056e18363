//! ZiggyDB's core: deterministic, single-threaded and sans-IO.
//!
//! The core owns the data file's format, the write-ahead log, the state machine and recovery. It
//! never touches the OS: storage IO is submitted through [`io::Storage`] and completed by the
//! driver, time arrives as ticks, and nothing reads a wall clock, a thread or OS randomness. The
//! same code runs under the simulator (`ziggy-sim`) and the real runtime (`ziggy-io`).
//!
//! Start at [`replica::Replica`].

pub mod checkpoint;
pub mod checksum;
pub mod client;
pub mod config;
pub mod digest;
pub mod embedded;
pub mod io;
pub mod lsm;
pub mod marks;
pub mod message;
pub mod prng;
pub mod replica;
pub mod sessions;
pub mod state_machine;
pub mod storage_contract;
pub mod superblock;
pub mod wal;

pub use config::{Config, Layout, PlantedBug, Zone};
pub use io::{IoId, IoKind, ReadError, Storage, WriteError};
pub use replica::{Error, Event, Replica, Reply, RequestError, Status};
pub use state_machine::{KvStateMachine, StateMachine};
