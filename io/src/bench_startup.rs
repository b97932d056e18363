//! `ziggy bench-startup`: how long opening an embedded database takes, by data size.
//!
//! For each size, fills a fresh database with random keys and values until that many bytes of
//! user data are written, closes it (a checkpoint), then opens it several times and reports the
//! median open time, plus the first point read after opening (which loads one table's index and
//! filter on demand). Opening reads the superblock, the manifest and the WAL since the last
//! checkpoint, so its cost should not follow the data size.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::db::{Db, DbError, DbOptions};

pub struct StartupOptions {
    pub dir: PathBuf,
    /// Data sizes to measure, in bytes of keys plus values written.
    pub sizes: Vec<u64>,
    pub value_size: usize,
    pub opens: usize,
    /// Keep the database files afterwards.
    pub keep: bool,
    /// Open files a kept earlier run filled, instead of filling them again.
    pub reuse: bool,
}

struct Row {
    size: u64,
    keys: u64,
    file_bytes: u64,
    tables: usize,
    fill: Duration,
    open_median: Duration,
    open_max: Duration,
    first_read: Duration,
    /// Opening after a crash with `CRASH_TAIL` writes in the WAL since the last checkpoint.
    crash_open_median: Duration,
}

/// Writes left in the WAL (not checkpointed) before the simulated crash: the same at every data
/// size, so the replay costs the same.
const CRASH_TAIL: u64 = 50_000;

fn key(i: u64) -> [u8; 16] {
    // A bijective mix: distinct keys, random order.
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&z.to_be_bytes());
    out[8..].copy_from_slice(&i.to_be_bytes());
    out
}

fn fill(path: &Path, size: u64, value_size: usize) -> Result<(u64, Duration), DbError> {
    let mut db = Db::create(path, DbOptions::default())?;
    let mut value = vec![0u8; value_size];
    let started = Instant::now();
    let mut last_report = started;
    let per_key = (16 + value_size) as u64;
    let keys = size.div_ceil(per_key);
    for i in 0..keys {
        value[..8].copy_from_slice(&i.to_le_bytes());
        db.put(&key(i), &value)?;
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "bench-startup: {} filling: {:.1}% ({} of {} keys, {:.0} s)",
                path.display(),
                100.0 * i as f64 / keys as f64,
                i,
                keys,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let stats = db.stats();
    eprintln!(
        "bench-startup: filled {}: shape {:?}, grid blocks {} ({} in use), checkpoints {}, {:?}",
        path.display(),
        db.shape(),
        stats.grid_blocks,
        stats.grid_blocks_in_use,
        stats.checkpoints,
        stats.engine
    );
    db.close()?;
    Ok((keys, started.elapsed()))
}

fn measure(options: &StartupOptions, size: u64) -> Result<Row, DbError> {
    let path = options.dir.join(format!("ziggy-startup-{size}.zdb"));
    let (keys, fill_time) = if options.reuse && path.exists() {
        eprintln!("bench-startup: reusing {}", path.display());
        (
            size.div_ceil((16 + options.value_size) as u64),
            Duration::ZERO,
        )
    } else {
        let _ = std::fs::remove_file(&path);
        fill(&path, size, options.value_size)?
    };
    let mut opens = Vec::with_capacity(options.opens);
    let mut first_read = Duration::ZERO;
    let mut tables = 0;
    for n in 0..options.opens.max(1) {
        let started = Instant::now();
        let mut db = Db::open(&path, DbOptions::default())?;
        opens.push(started.elapsed());
        tables = db.shape().iter().sum();
        if n == 0 {
            let started = Instant::now();
            let found = db.get(&key(keys / 2))?;
            first_read = started.elapsed();
            assert!(found.is_some(), "a written key is found after reopening");
        }
        drop(db); // nothing written since the checkpoint: no checkpoint needed
    }
    opens.sort();
    let crash_open_median = crash_opens(&path, keys, options)?;
    let file_bytes = std::fs::metadata(&path)?.len();
    if !options.keep {
        std::fs::remove_file(&path)?;
    }
    Ok(Row {
        size,
        keys,
        file_bytes,
        tables,
        fill: fill_time,
        open_median: opens[opens.len() / 2],
        open_max: *opens.last().unwrap(),
        first_read,
        crash_open_median,
    })
}

/// Overwrites `CRASH_TAIL` keys and drops the database without closing it (a crash: the writes
/// are only in the WAL), then times opens, each replaying that tail; closes it at the end.
fn crash_opens(path: &Path, keys: u64, options: &StartupOptions) -> Result<Duration, DbError> {
    let mut db = Db::open(path, DbOptions::default())?;
    let value = vec![3u8; options.value_size];
    for i in 0..CRASH_TAIL.min(keys) {
        db.put(&key(i * (keys / CRASH_TAIL).max(1)), &value)?;
    }
    db.flush()?;
    drop(db);
    let mut opens = Vec::with_capacity(options.opens);
    for _ in 0..options.opens.max(1) {
        let started = Instant::now();
        let db = Db::open(path, DbOptions::default())?;
        opens.push(started.elapsed());
        drop(db); // still a crash: the tail stays in the WAL
    }
    Db::open(path, DbOptions::default())?.close()?;
    opens.sort();
    Ok(opens[opens.len() / 2])
}

pub fn run(options: &StartupOptions) -> Result<String, DbError> {
    let mut rows = Vec::new();
    for &size in &options.sizes {
        rows.push(measure(options, size)?);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| data | keys | file | tables | fill | open (median of {}) | open (max) | first read | open after a crash ({CRASH_TAIL} writes to replay) |",
        options.opens
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let _ = writeln!(
            out,
            "| {:.2} GB | {} | {:.2} GB | {} | {:.1} s | {:.3} ms | {:.3} ms | {:.2} ms | {:.1} ms |",
            r.size as f64 / 1e9,
            r.keys,
            r.file_bytes as f64 / 1e9,
            r.tables,
            r.fill.as_secs_f64(),
            r.open_median.as_secs_f64() * 1e3,
            r.open_max.as_secs_f64() * 1e3,
            r.first_read.as_secs_f64() * 1e3,
            r.crash_open_median.as_secs_f64() * 1e3,
        );
    }
    if let (Some(small), Some(large)) = (rows.first(), rows.last()) {
        let ratio = large.open_median.as_secs_f64() / small.open_median.as_secs_f64();
        let crash = large.crash_open_median.as_secs_f64() / small.crash_open_median.as_secs_f64();
        let _ = writeln!(
            out,
            "\nopen time, largest / smallest: {ratio:.2}x; after a crash: {crash:.2}x (data {:.0}x)",
            large.size as f64 / small.size as f64
        );
    }
    Ok(out)
}
