//! ZiggyDB's real runtime: the core's storage interface over a real data file, the formatter,
//! a synchronous driver, and the WAL group-commit benchmark behind `ziggy bench-wal`.

pub mod backup;
pub mod bench;
pub mod bench_startup;
pub mod db;
pub mod driver;
pub mod entropy;
pub mod file_storage;
pub mod format;
pub mod inspect;
pub mod metrics;
pub mod server;
pub mod stage;
pub mod transfer;
