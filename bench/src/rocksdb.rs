//! RocksDB through the `rocksdb` crate: defaults, plus the shared block cache size, a 10 bits/key
//! bloom filter (as ZiggyDB and fjall have) and no compression.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, Options, WaitForCompactOptions, WriteOptions, DB,
};

use crate::engine::{Engine, EngineConfig};

pub struct RocksDb {
    db: DB,
    write_options: WriteOptions,
}

impl RocksDb {
    pub fn create(dir: &Path, config: &EngineConfig) -> Self {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(config.cache_bytes as usize));
        table.set_bloom_filter(10.0, false);
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(DBCompressionType::None);
        options.set_block_based_table_factory(&table);
        let db = DB::open(&options, dir).expect("rocksdb: open");
        // The default: the WAL is written per put, not synced.
        let mut write_options = WriteOptions::default();
        write_options.set_sync(false);
        RocksDb { db, write_options }
    }
}

impl Engine for RocksDb {
    fn put(&mut self, k: &[u8], v: &[u8]) {
        self.db
            .put_opt(k, v, &self.write_options)
            .expect("rocksdb: put");
    }

    fn get(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let value = self.db.get_pinned(k).expect("rocksdb: get");
        value.map(|v| v.to_vec())
    }

    fn scan(&mut self, start: &[u8], n: usize) -> usize {
        let mut iter = self.db.raw_iterator();
        iter.seek(start);
        let mut visited = 0;
        while visited < n && iter.valid() {
            std::hint::black_box((iter.key().map(<[u8]>::len), iter.value().map(<[u8]>::len)));
            visited += 1;
            iter.next();
        }
        iter.status().expect("rocksdb: scan");
        visited
    }

    fn flush(&mut self) {
        self.db.flush().expect("rocksdb: flush");
        self.db.flush_wal(true).expect("rocksdb: sync wal");
    }

    fn wait_idle(&mut self) {
        let mut options = WaitForCompactOptions::default();
        options.set_flush(true);
        self.db
            .wait_for_compact(&options)
            .expect("rocksdb: wait for compactions");
    }

    fn describe(&mut self) -> String {
        let files: Vec<u64> = (0..7)
            .map(|level| {
                let name = format!("rocksdb.num-files-at-level{level}");
                self.db
                    .property_int_value(&name)
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            })
            .collect();
        format!("files per level {files:?}")
    }
}
