//! The LSM storage engine (in progress): the building blocks of tables in grid blocks.
//!
//! - [`varint`]: LEB128 variable-length integers for block encodings.
//! - [`bloom`]: per-table bloom filters, so a point read of a missing key skips the table.

pub mod bloom;
pub mod varint;
