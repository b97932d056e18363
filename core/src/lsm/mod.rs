//! The LSM storage engine (in progress): the building blocks of tables in grid blocks.
//!
//! - [`block`]: data blocks (prefix-compressed keys, restart points, sequence numbers, tombstones).
//! - [`varint`]: LEB128 variable-length integers for block encodings.
//! - [`bloom`]: per-table bloom filters, so a point read of a missing key skips the table.

pub mod block;
pub mod bloom;
pub mod varint;
