//! fjall 2.x: one keyspace with one partition, default memtable and journal settings.

use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use fjall::{
    CompressionType, Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode,
};

use crate::engine::{Engine, EngineConfig};
use crate::metrics::process_bytes_written;

pub struct Fjall {
    keyspace: Keyspace,
    partition: PartitionHandle,
}

impl Fjall {
    pub fn create(dir: &Path, config: &EngineConfig) -> Self {
        // Each insert is written to the journal's OS buffer (PersistMode::Buffer), not fsynced.
        let keyspace = Config::new(dir)
            .cache_size(config.cache_bytes)
            .open()
            .expect("fjall: open keyspace");
        let options = PartitionCreateOptions::default().compression(CompressionType::None);
        let partition = keyspace
            .open_partition("bench", options)
            .expect("fjall: open partition");
        Fjall {
            keyspace,
            partition,
        }
    }
}

impl Engine for Fjall {
    fn put(&mut self, k: &[u8], v: &[u8]) {
        self.partition.insert(k, v).expect("fjall: insert");
    }

    fn get(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let value = self.partition.get(k).expect("fjall: get");
        value.map(|v| v.to_vec())
    }

    fn scan(&mut self, start: &[u8], n: usize) -> usize {
        let mut visited = 0;
        for item in self.partition.range(start..).take(n) {
            let (k, v) = item.expect("fjall: scan");
            std::hint::black_box((k.len(), v.len()));
            visited += 1;
        }
        visited
    }

    fn flush(&mut self) {
        self.partition
            .rotate_memtable_and_wait()
            .expect("fjall: flush memtable");
        self.keyspace
            .persist(PersistMode::SyncAll)
            .expect("fjall: persist");
    }

    /// fjall has no "wait for compactions" call: wait until no compaction is running and the
    /// process has written nothing for a whole second.
    fn wait_idle(&mut self) {
        let mut last = process_bytes_written();
        let mut quiet_polls = 0;
        while quiet_polls < 10 {
            sleep(Duration::from_millis(100));
            let now = process_bytes_written();
            let idle = now == last && self.keyspace.active_compactions() == 0;
            quiet_polls = if idle { quiet_polls + 1 } else { 0 };
            last = now;
        }
    }

    fn describe(&mut self) -> String {
        format!(
            "segments {}; journals {}; compactions completed {}",
            self.partition.segment_count(),
            self.keyspace.journal_count(),
            self.keyspace.compactions_completed()
        )
    }
}
