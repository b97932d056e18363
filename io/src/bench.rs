//! `ziggy bench-wal`: the durable append rate of the WAL under group commit, beside the raw
//! `fdatasync` rate of the same disk.
//!
//! One thread owns the [`Driver`] and `W` logical writers (clients), each with one put outstanding
//! at a time — the closed-loop model of `redis-benchmark -c W`, without a thread per client. The
//! loop makes every pending write durable with one `fdatasync`, delivers the completions, and each
//! writer whose put is acknowledged submits its next one at once: puts that arrive while a WAL write
//! is in flight are gathered into one batch entry, so the more writers wait, the more appends
//! share a write and its `fdatasync`. Latency is measured per put from submission to
//! acknowledgement (queueing and retries included). Keys cycle through a bounded key space, so the
//! state — which each checkpoint still rewrites whole until the LSM engine lands — stays bounded.
//!
//! The baseline is what a naive log does per append: overwrite one 4 KiB block of the same
//! preallocated data file and `fdatasync` it, by one writer, in a loop.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ziggy_core::wal::batch::RequestId;
use ziggy_core::{Config, KvStateMachine, Layout, RequestError};

use crate::driver::{Driver, DriverError};
use crate::file_storage::StorageStats;
use crate::format::format;

/// The size of the block the raw `fdatasync` baseline overwrites.
const RAW_BLOCK_SIZE: usize = 4096;
/// The cluster id of benchmark data files.
const CLUSTER: u64 = 0xBE4C;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Where to create the data file (it must not exist); removed afterwards.
    pub path: PathBuf,
    /// How long each measurement runs.
    pub duration: Duration,
    /// The writer counts to measure, one run each, each on a freshly formatted file.
    pub writers: Vec<usize>,
    /// The size of each put's value, in bytes.
    pub value_size: usize,
    /// How many distinct keys the writers cycle through.
    pub keys: u64,
    /// The replica's configuration (`ziggy bench-wal` uses the production preset).
    pub config: Config,
}

/// One measured run: either the raw `fdatasync` loop or group commit with `writers` writers.
pub struct RunResult {
    /// `None` for the raw `fdatasync` baseline.
    pub writers: Option<usize>,
    /// Durable operations: appends acknowledged, or `fdatasync` calls for the baseline.
    pub operations: u64,
    pub elapsed: Duration,
    /// Per-operation latency, in microseconds.
    pub latency: Histogram<u64>,
    pub io: IoSummary,
    pub checkpoints: u64,
    /// Requests refused as `Busy` (the ring full until a checkpoint lands) and retried.
    pub busy_retries: u64,
}

impl RunResult {
    /// Durable operations per second.
    pub fn rate(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    pub fn syncs_per_second(&self) -> f64 {
        self.io.syncs as f64 / self.elapsed.as_secs_f64()
    }

    pub fn operations_per_sync(&self) -> f64 {
        self.operations as f64 / self.io.syncs.max(1) as f64
    }

    /// The share of the run's wall time a thread spent in `what`.
    fn share(&self, what: Duration) -> f64 {
        100.0 * what.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

/// The IO behind a run, as the thread that did it saw it.
#[derive(Clone, Copy, Debug, Default)]
pub struct IoSummary {
    /// `fdatasync` calls.
    pub syncs: u64,
    /// Writes submitted (entries, redundant headers, replies, checkpoint blocks, superblocks).
    pub writes: u64,
    pub bytes_written: u64,
    /// Time spent in `fdatasync`.
    pub sync_time: Duration,
    /// Time spent in `pwrite`.
    pub write_time: Duration,
    /// Time the core thread waited for requests with no IO pending (zero for the baseline).
    pub idle_time: Duration,
}

impl IoSummary {
    fn between(before: StorageStats, after: StorageStats, idle_time: Duration) -> IoSummary {
        IoSummary {
            syncs: after.syncs - before.syncs,
            writes: after.writes - before.writes,
            bytes_written: after.bytes_written - before.bytes_written,
            sync_time: Duration::from_nanos(after.sync_nanos - before.sync_nanos),
            write_time: Duration::from_nanos(after.write_nanos - before.write_nanos),
            idle_time,
        }
    }

    fn add(&mut self, other: &IoSummary) {
        self.syncs += other.syncs;
        self.writes += other.writes;
        self.bytes_written += other.bytes_written;
        self.sync_time += other.sync_time;
        self.write_time += other.write_time;
        self.idle_time += other.idle_time;
    }
}

/// A group-commit run and the raw `fdatasync` run measured just before it, so that a report
/// shows the disk's speed next to each run: it drifts with whatever else the machine does.
pub struct Pair {
    pub raw: RunResult,
    pub wal: RunResult,
}

/// Every run of one benchmark.
pub struct BenchReport {
    pub options: BenchOptions,
    pub pairs: Vec<Pair>,
}

impl BenchReport {
    /// The measurement with this many writers, if made.
    pub fn pair(&self, writers: usize) -> Option<&Pair> {
        self.pairs.iter().find(|p| p.wal.writers == Some(writers))
    }

    /// The raw `fdatasync` rate every run is compared with: the fastest raw run. A slow phase of
    /// the disk during one raw run would otherwise flatter the ratio of the run after it.
    pub fn baseline_rate(&self) -> f64 {
        self.pairs.iter().map(|p| p.raw.rate()).fold(0.0, f64::max)
    }

    /// How many times the baseline rate a run achieved.
    pub fn ratio(&self, run: &RunResult) -> f64 {
        run.rate() / self.baseline_rate()
    }

    /// Why the figures cannot be trusted, if they cannot: the raw `fdatasync` rate drifted
    /// between runs, or its latency was bimodal within one. Both happen when other work on the
    /// machine delays the syncing thread (on a busy 2-core VM, a woken thread can wait a whole
    /// 4 ms scheduler tick), and both flatter the ratio.
    pub fn noise(&self) -> Option<String> {
        let rates = self.pairs.iter().map(|p| p.raw.rate());
        let slowest = rates.clone().fold(f64::INFINITY, f64::min);
        if slowest < 0.67 * self.baseline_rate() {
            return Some(format!(
                "the raw fdatasync rate varied from {slowest:.0}/s to {:.0}/s between runs",
                self.baseline_rate()
            ));
        }
        let bimodal = self
            .pairs
            .iter()
            .map(|p| &p.raw.latency)
            .find(|h| h.value_at_quantile(0.99) > 10 * h.value_at_quantile(0.50))?;
        Some(format!(
            "the raw fdatasync latency was bimodal in one run (p50 {} µs, p99 {} µs)",
            bimodal.value_at_quantile(0.50),
            bimodal.value_at_quantile(0.99)
        ))
    }

    /// All raw `fdatasync` runs as one.
    pub fn raw(&self) -> RunResult {
        let mut all = RunResult {
            writers: None,
            operations: 0,
            elapsed: Duration::ZERO,
            latency: latency_histogram(),
            io: IoSummary::default(),
            checkpoints: 0,
            busy_retries: 0,
        };
        for raw in self.pairs.iter().map(|p| &p.raw) {
            all.operations += raw.operations;
            all.elapsed += raw.elapsed;
            all.latency.add(&raw.latency).expect("equal bounds");
            all.io.add(&raw.io);
        }
        all
    }
}

/// Progress on stderr: updated in place on a terminal, one line per phase otherwise.
pub struct Progress {
    enabled: bool,
    terminal: bool,
}

impl Progress {
    pub fn stderr() -> Progress {
        Progress {
            enabled: true,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// No progress at all (for tests).
    pub fn silent() -> Progress {
        Progress {
            enabled: false,
            terminal: false,
        }
    }

    /// A transient status line (shown only on a terminal).
    fn update(&self, line: &str) {
        if self.enabled && self.terminal {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        }
    }

    /// A line that stays.
    fn done(&self, line: &str) {
        if !self.enabled {
            return;
        }
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{line}");
    }
}

/// Removes the benchmark's data file when the benchmark ends, however it ends.
struct DataFile<'a>(&'a Path);

impl Drop for DataFile<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// Runs the baseline and one group-commit run per writer count.
pub fn run(
    options: &BenchOptions,
    progress: &Progress,
) -> Result<BenchReport, Box<dyn std::error::Error>> {
    let config = &options.config;
    if options.value_size > config.value_size_max as usize {
        return Err(format!(
            "--value-size exceeds the configuration's limit of {} bytes",
            config.value_size_max
        )
        .into());
    }
    if options
        .writers
        .iter()
        .any(|&w| w == 0 || w > config.clients_max as usize)
    {
        return Err(format!(
            "writer counts must be in 1..={} (clients_max)",
            config.clients_max
        )
        .into());
    }
    let path = options.path.as_path();
    progress.update(&format!("formatting {}", path.display()));
    format(path, config, CLUSTER, false)?;
    let _remove = DataFile(path);
    let mut pairs = Vec::new();
    for (n, &writers) in options.writers.iter().enumerate() {
        if n > 0 {
            progress.update(&format!("W={writers}: formatting a fresh data file"));
            format(path, config, CLUSTER, true)?;
        }
        let raw = raw_fdatasync(path, &Layout::new(config), options.duration, progress)?;
        progress.done(&format!("raw fdatasync: {:.0}/s", raw.rate()));
        let wal = group_commit(path, config, writers, options, progress)?;
        progress.done(&format!(
            "W={writers}: {:.0} durable appends/s ({:.1} per fdatasync)",
            wal.rate(),
            wal.operations_per_sync()
        ));
        pairs.push(Pair { raw, wal });
    }
    Ok(BenchReport {
        options: options.clone(),
        pairs,
    })
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn micros(elapsed: Duration) -> u64 {
    elapsed.as_micros().max(1) as u64
}

/// One writer overwrites one 4 KiB block of the data file and `fdatasync`s it, in a loop.
fn raw_fdatasync(
    path: &Path,
    layout: &Layout,
    duration: Duration,
    progress: &Progress,
) -> std::io::Result<RunResult> {
    let file = OpenOptions::new().write(true).open(path)?;
    // The end of the grid: a block the WAL runs do not touch (and each is on a fresh file).
    let offset = layout.total_size() - RAW_BLOCK_SIZE as u64;
    let mut block = vec![0u8; RAW_BLOCK_SIZE];
    let mut latency = latency_histogram();
    let start = Instant::now();
    let mut next_report = start;
    let mut io = IoSummary::default();
    while start.elapsed() < duration {
        io.syncs += 1;
        block[..8].copy_from_slice(&io.syncs.to_le_bytes());
        let begin = Instant::now();
        file.write_all_at(&block, offset)?;
        let written = Instant::now();
        file.sync_data()?;
        let synced = Instant::now();
        io.write_time += written - begin;
        io.sync_time += synced - written;
        latency.saturating_record(micros(synced - begin));
        if begin >= next_report {
            progress.update(&format!(
                "raw fdatasync: {}/{} s",
                start.elapsed().as_secs(),
                duration.as_secs()
            ));
            next_report += Duration::from_secs(1);
        }
    }
    io.writes = io.syncs;
    io.bytes_written = io.syncs * RAW_BLOCK_SIZE as u64;
    Ok(RunResult {
        writers: None,
        operations: io.syncs,
        elapsed: start.elapsed(),
        latency,
        io,
        checkpoints: 0,
        busy_retries: 0,
    })
}

/// One logical writer: a client with one put outstanding.
struct Writer {
    client: u64,
    session: u64,
    request: u64,
    sent: Instant,
    done: bool,
}

/// Group commit with `writers` writers, one put outstanding each, on a freshly formatted file.
fn group_commit(
    path: &Path,
    config: &Config,
    writers: usize,
    options: &BenchOptions,
    progress: &Progress,
) -> Result<RunResult, Box<dyn std::error::Error>> {
    let mut driver = Driver::open(path, config)?;
    let before = driver.storage_stats();
    let value = vec![b'v'; options.value_size];
    let mut latency = latency_histogram();
    let (mut appends, mut busy_retries) = (0u64, 0u64);
    let mut next_key = 0u64;
    let mut body = Vec::new();
    let mut key = Vec::with_capacity(16);
    let mut put =
        |driver: &mut Driver, writer: &mut Writer, body: &mut Vec<u8>, now: Option<Instant>| {
            if let Some(now) = now {
                writer.request += 1;
                writer.sent = now;
                next_key = (next_key + 1) % options.keys;
                key.clear();
                key.extend_from_slice(b"key");
                key.extend_from_slice(&next_key.to_be_bytes());
                body.clear();
                body.extend_from_slice(&(key.len() as u16).to_le_bytes());
                body.extend_from_slice(&key);
                body.extend_from_slice(&value);
            }
            let id = RequestId {
                client: writer.client,
                session: writer.session,
                request: writer.request,
            };
            driver.submit(id, KvStateMachine::PUT, body);
        };
    let start = Instant::now();
    let deadline = start + options.duration;
    let mut pool: Vec<Writer> = (0..writers)
        .map(|w| Writer {
            client: w as u64 + 1,
            session: 0,
            request: 0,
            sent: start,
            done: false,
        })
        .collect();
    for writer in &mut pool {
        writer.session = driver.register(writer.client)?;
    }
    // Bodies are rebuilt per put; a writer's current body is kept for `Busy` retries.
    let mut bodies: Vec<Vec<u8>> = vec![Vec::new(); writers];
    for (writer, body) in pool.iter_mut().zip(bodies.iter_mut()) {
        put(&mut driver, writer, body, Some(start));
    }
    let mut ready = Vec::new();
    let mut last_progress = start;
    while pool.iter().any(|w| !w.done) || driver.has_pending_io() {
        let completions = driver.flush();
        driver.complete(completions);
        if let Some(error) = driver.halted() {
            return Err(DriverError::Halted(error.clone()).into());
        }
        driver.take_replies(&mut ready);
        let now = Instant::now();
        for reply in ready.drain(..) {
            let w = reply.client as usize - 1;
            let writer = &mut pool[w];
            match reply.result {
                Ok(_) => {
                    latency.saturating_record(micros(now - writer.sent));
                    appends += 1;
                    if now < deadline {
                        put(&mut driver, writer, &mut bodies[w], Some(now));
                    } else {
                        writer.done = true;
                    }
                }
                Err(RequestError::Busy) => {
                    busy_retries += 1;
                    std::mem::swap(&mut body, &mut bodies[w]);
                    put(&mut driver, writer, &mut body, None);
                    std::mem::swap(&mut body, &mut bodies[w]);
                }
                Err(error) => {
                    return Err(format!(
                        "client {} request {}: {error}",
                        writer.client, writer.request
                    )
                    .into())
                }
            }
        }
        if now - last_progress > Duration::from_millis(200) {
            last_progress = now;
            let elapsed = (now - start).as_secs().min(options.duration.as_secs());
            progress.update(&format!(
                "W={writers}: {elapsed}/{} s, {appends} durable appends",
                options.duration.as_secs()
            ));
        }
    }
    let elapsed = start.elapsed();
    Ok(RunResult {
        writers: Some(writers),
        operations: appends,
        elapsed,
        latency,
        io: IoSummary::between(before, driver.storage_stats(), Duration::ZERO),
        checkpoints: driver.checkpoints(),
        busy_retries,
    })
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "ziggy bench-wal: {}-byte values, {} s per run, WAL ring of {} slots of {} KiB, \
             batches of up to {}, data file {}",
            o.value_size,
            o.duration.as_secs_f64(),
            o.config.wal_slot_count,
            o.config.wal_entry_size_max / 1024,
            o.config.batch_max,
            o.path.display()
        )?;
        writeln!(f)?;
        self.write_rates(f)?;
        writeln!(f)?;
        self.write_costs(f)?;
        writeln!(f)?;
        writeln!(
            f,
            "x raw: durable ops/s over the fastest raw fdatasync run ({:.0}/s)",
            self.baseline_rate()
        )?;
        let noise = self.noise();
        if let Some(why) = &noise {
            writeln!(
                f,
                "warning: {why}: other work on this machine makes these figures noisy; \
                 rerun when it is quiet"
            )?;
        }
        if let Some(pair) = self.pair(64) {
            let ratio = self.ratio(&pair.wal);
            let verdict = match (ratio >= 20.0, noise.is_some()) {
                (_, true) => "unreliable, see the warning; compare with",
                (true, false) => "meets",
                (false, false) => "falls short of",
            };
            writeln!(
                f,
                "W=64 / raw fdatasync = {ratio:.1}x ({verdict} the target of >= 20x)"
            )?;
        }
        Ok(())
    }
}

impl BenchReport {
    /// Durable operations per second and their latency, as the writers saw it, with the raw
    /// `fdatasync` rate measured just before each run.
    fn write_rates(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>12}",
            "durable ops", "ops/s", "x raw", "p50 µs", "p95 µs", "p99 µs", "max µs", "raw before"
        )?;
        let raw = self.raw();
        self.write_rate(f, &raw, None)?;
        for pair in &self.pairs {
            self.write_rate(f, &pair.wal, Some(pair.raw.rate()))?;
        }
        Ok(())
    }

    fn write_rate(
        &self,
        f: &mut fmt::Formatter<'_>,
        run: &RunResult,
        raw: Option<f64>,
    ) -> fmt::Result {
        let h = &run.latency;
        let raw = raw.map_or(String::new(), |rate| format!("{rate:.0}/s"));
        writeln!(
            f,
            "{:<14} {:>9.0} {:>6.1}x {:>8} {:>8} {:>8} {:>8} {:>12}",
            run_name(run),
            run.rate(),
            self.ratio(run),
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.95),
            h.value_at_quantile(0.99),
            h.max(),
            raw,
        )
    }

    /// Where the time goes: how many `fdatasync`s, what each carried and cost, and how the
    /// thread that drives the IO spent the run (in `fdatasync`, in `pwrite`, waiting for
    /// requests; the rest is CPU: the core, the channels, scheduling).
    fn write_costs(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:>8} {:>9} {:>11} {:>7} {:>8} {:>7} {:>8} {:>7} {:>6} {:>5}",
            "io",
            "syncs/s",
            "ops/sync",
            "writes/sync",
            "KiB/op",
            "µs/sync",
            "sync %",
            "pwrite %",
            "idle %",
            "ckpts",
            "busy"
        )?;
        write_cost(f, &self.raw())?;
        for pair in &self.pairs {
            write_cost(f, &pair.wal)?;
        }
        Ok(())
    }
}

fn run_name(run: &RunResult) -> String {
    match run.writers {
        None => "raw fdatasync".to_string(),
        Some(w) => format!("WAL W={w}"),
    }
}

fn write_cost(f: &mut fmt::Formatter<'_>, run: &RunResult) -> fmt::Result {
    let io = &run.io;
    let syncs = io.syncs.max(1) as f64;
    writeln!(
        f,
        "{:<14} {:>8.0} {:>9.1} {:>11.1} {:>7.1} {:>8.0} {:>6.0}% {:>7.0}% {:>6.0}% {:>6} {:>5}",
        run_name(run),
        run.syncs_per_second(),
        run.operations_per_sync(),
        io.writes as f64 / syncs,
        io.bytes_written as f64 / run.operations.max(1) as f64 / 1024.0,
        io.sync_time.as_secs_f64() * 1e6 / syncs,
        run.share(io.sync_time),
        run.share(io.write_time),
        run.share(io.idle_time),
        run.checkpoints,
        run.busy_retries,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `operations` in one second whose latencies are `latencies` (µs).
    fn run(writers: Option<usize>, operations: u64, latencies: &[u64]) -> RunResult {
        let mut latency = latency_histogram();
        for &l in latencies {
            latency.record(l).unwrap();
        }
        RunResult {
            writers,
            operations,
            elapsed: Duration::from_secs(1),
            latency,
            io: IoSummary::default(),
            checkpoints: 0,
            busy_retries: 0,
        }
    }

    fn report(raws: &[(u64, &[u64])]) -> BenchReport {
        let pairs = raws
            .iter()
            .enumerate()
            .map(|(n, &(rate, latencies))| Pair {
                raw: run(None, rate, latencies),
                wal: run(Some(n + 1), 30_000, &[1000]),
            })
            .collect();
        let options = BenchOptions {
            path: PathBuf::from("x"),
            duration: Duration::from_secs(1),
            writers: vec![],
            value_size: 100,
            keys: 100_000,
            config: Config::test(),
        };
        BenchReport { options, pairs }
    }

    const QUIET: &[u64] = &[80, 80, 90, 100, 150];

    #[test]
    fn runs_are_compared_with_the_fastest_raw_run() {
        let report = report(&[(10_000, QUIET), (12_000, QUIET)]);
        assert_eq!(report.baseline_rate(), 12_000.0);
        assert_eq!(report.ratio(&report.pairs[0].wal), 2.5);
        assert_eq!(report.noise(), None);
    }

    #[test]
    fn a_drifting_or_bimodal_baseline_is_reported_as_noise() {
        let drifting = report(&[(12_000, QUIET), (5_000, QUIET)]);
        assert!(drifting
            .noise()
            .unwrap()
            .contains("varied from 5000/s to 12000/s"));
        let ticks: Vec<u64> = (0..100)
            .map(|i| if i % 3 == 0 { 4000 } else { 80 })
            .collect();
        let bimodal = report(&[(1_500, &ticks)]);
        assert!(bimodal.noise().unwrap().contains("bimodal"));
        assert!(bimodal.to_string().contains("warning"));
    }
}
