//! ZiggyDB's embedded database (`ziggy_io::db`): one data file holding the WAL ring and the LSM
//! grid. Default options except the shared block cache size; writes are logged without sync.

use std::path::Path;

use ziggy_io::db::{Db, DbOptions};

use crate::engine::{Engine, EngineConfig};

/// Compaction entries per `Db::compact` call while draining.
const DRAIN_BUDGET: usize = 1 << 20;

pub struct Ziggy {
    db: Db,
}

impl Ziggy {
    pub fn create(dir: &Path, config: &EngineConfig) -> Self {
        let options = DbOptions {
            cache_bytes: config.cache_bytes as usize,
            ..DbOptions::default()
        };
        let db = Db::create(&dir.join("data.ziggy"), options).expect("ziggy: create");
        Ziggy { db }
    }
}

impl Engine for Ziggy {
    fn put(&mut self, k: &[u8], v: &[u8]) {
        self.db.put(k, v).expect("ziggy: put");
    }

    fn get(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        self.db.get(k).expect("ziggy: get")
    }

    fn scan(&mut self, start: &[u8], n: usize) -> usize {
        let entries = self.db.scan(start, None, n, false).expect("ziggy: scan");
        std::hint::black_box(&entries);
        entries.len()
    }

    /// A checkpoint: the memtable goes into the grid and the file is synced (`Db::flush` alone
    /// only syncs the WAL).
    fn flush(&mut self) {
        self.db.checkpoint().expect("ziggy: checkpoint");
    }

    /// ZiggyDB compacts inside its writes, paced; this finishes whatever compaction is still due,
    /// then checkpoints so that the blocks it freed are released.
    fn wait_idle(&mut self) {
        let merged = self.db.stats().engine.merged;
        while self.db.compact(DRAIN_BUDGET).expect("ziggy: compact") {}
        if self.db.stats().engine.merged != merged {
            self.flush();
        }
    }

    fn describe(&mut self) -> String {
        let s = self.db.stats();
        let block = DbOptions::default().block_size as f64 / f64::from(1 << 20);
        format!(
            "shape {:?}; grid {:.0}/{:.0} MiB in use; flushes {} compactions {} trivial moves {} stalls {} checkpoints {}; block reads {} filter probes {} passes {}",
            self.db.shape(),
            s.grid_blocks_in_use as f64 * block,
            s.grid_blocks as f64 * block,
            s.engine.flushes,
            s.engine.compactions,
            s.engine.trivial_moves,
            s.engine.stalls,
            s.checkpoints,
            s.engine.block_reads,
            s.engine.filter_probes,
            s.engine.filter_passes,
        )
    }
}
