//! The interface every engine under test implements, and opening one by name.

use std::path::Path;

/// One key-value engine, driven from a single thread. Errors are fatal to the benchmark, so the
/// adapters panic on them instead of returning them.
pub trait Engine {
    fn put(&mut self, k: &[u8], v: &[u8]);
    fn get(&mut self, k: &[u8]) -> Option<Vec<u8>>;
    /// Visits up to `n` entries from the first key `>= start`; returns how many it visited.
    fn scan(&mut self, start: &[u8], n: usize) -> usize;
    /// Makes every write so far durable and moves the memtable into tables.
    fn flush(&mut self);
    /// Waits until background flushes and compactions have finished (engines without
    /// background work have nothing to wait for).
    fn wait_idle(&mut self) {}
    /// Engine-specific state worth logging after a phase (tree shape, counters).
    fn describe(&mut self) -> String {
        String::new()
    }
}

/// Settings shared by all engines, so they run on equal terms.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub cache_bytes: u64,
}

pub const ENGINES: [&str; 3] = ["ziggy", "fjall", "rocksdb"];

/// Opens a fresh engine named `name` whose files all live under the empty directory `dir`.
pub fn open(name: &str, dir: &Path, config: &EngineConfig) -> Result<Box<dyn Engine>, String> {
    match name {
        "ziggy" => Ok(Box::new(crate::ziggy::Ziggy::create(dir, config))),
        #[cfg(feature = "peers")]
        "fjall" => Ok(Box::new(crate::fjall::Fjall::create(dir, config))),
        #[cfg(feature = "peers")]
        "rocksdb" => Ok(Box::new(crate::rocksdb::RocksDb::create(dir, config))),
        #[cfg(not(feature = "peers"))]
        "fjall" | "rocksdb" => Err(format!(
            "engine {name} is behind the cargo feature `peers` (build with --features peers)"
        )),
        _ => Err(format!(
            "unknown engine {name} (known: {})",
            ENGINES.join(", ")
        )),
    }
}
