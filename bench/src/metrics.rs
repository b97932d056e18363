//! Process write counter, disk usage, and latency histograms.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hdrhistogram::Histogram;

/// Bytes this process (all its threads, live and exited) has passed to write-like system calls:
/// the `wchar` line of `/proc/self/io`. It counts every `write`/`pwrite` byte, cached or not.
pub fn process_bytes_written() -> u64 {
    let io = fs::read_to_string("/proc/self/io").expect("read /proc/self/io");
    io.lines()
        .find_map(|line| line.strip_prefix("wchar:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("wchar in /proc/self/io")
}

/// Bytes allocated on disk (`st_blocks * 512`) by every file under `dir`, recursively.
pub fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).expect("read engine directory") {
        let entry = entry.expect("directory entry");
        let meta = entry.metadata().expect("file metadata");
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// Latency histogram in nanoseconds: 1 ns to 10 minutes, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("histogram bounds")
}

/// The percentiles a phase reports, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn of(hist: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50_us: us(hist.value_at_quantile(0.50)),
            p95_us: us(hist.value_at_quantile(0.95)),
            p99_us: us(hist.value_at_quantile(0.99)),
            max_us: us(hist.max()),
        }
    }
}
