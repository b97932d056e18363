//! The write-ahead log: a ring of fixed slots of entries beside a ring of their redundant headers.
//!
//! - [`header`]: the checksummed, hash-chained entry header.
//! - [`journal`]: the write path (group commit, two-phase durability) and the ring's state.
//! - [`recovery`]: the decision table that classifies every slot after a crash.

pub mod batch;
pub mod damage;
pub mod header;
pub mod image;
pub mod journal;
pub mod recovery;
pub mod stage;
