//! `ziggy bench-wal` on a small configuration: it measures what it claims and cleans up.

use std::time::Duration;

use ziggy_core::Config;
use ziggy_io::bench::{self, BenchOptions, Progress};

fn options(dir: &std::path::Path, writers: Vec<usize>) -> BenchOptions {
    BenchOptions {
        path: dir.join("bench.data"),
        duration: Duration::from_millis(300),
        writers,
        value_size: 100,
        keys: 1_000,
        // The test preset's tiny ring, with a grid large enough for the keys a run writes.
        config: Config {
            grid_block_count: 4096,
            ..Config::test()
        },
    }
}

#[test]
fn concurrent_writers_share_each_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path(), vec![1, 8]);
    let report = bench::run(&options, &Progress::silent()).unwrap();
    println!("{report}"); // shown when an assertion fails
    assert!(
        !options.path.exists(),
        "the data file is removed afterwards"
    );

    let one = &report.pair(1).unwrap().wal;
    let eight = &report.pair(8).unwrap().wal;
    for pair in &report.pairs {
        assert!(pair.raw.operations > 0 && pair.wal.operations > 0);
        assert_eq!(
            pair.raw.io.syncs, pair.raw.operations,
            "raw: one fdatasync per write"
        );
        assert_eq!(
            pair.wal.latency.len(),
            pair.wal.operations,
            "one latency per append"
        );
    }
    // Alone, a writer waits for its entry, then for its redundant header: two syncs at least.
    assert!(
        one.operations_per_sync() <= 0.5,
        "{}",
        one.operations_per_sync()
    );
    // Eight writers share them.
    assert!(
        eight.operations_per_sync() > 1.5,
        "{}",
        eight.operations_per_sync()
    );
    assert!(eight.checkpoints > 0, "the tiny ring wrapped");

    let text = report.to_string();
    assert!(
        text.contains("raw fdatasync") && text.contains("WAL W=8"),
        "{text}"
    );
}

#[test]
fn an_existing_file_is_neither_used_nor_removed() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path(), vec![1]);
    std::fs::write(&options.path, b"precious").unwrap();
    let error = bench::run(&options, &Progress::silent()).err().unwrap();
    assert!(error.to_string().contains("already exists"), "{error}");
    assert_eq!(std::fs::read(&options.path).unwrap(), b"precious");
}
