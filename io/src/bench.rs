//! `ziggy bench-wal`: the durable append rate of the WAL under group commit, beside the raw
//! `fdatasync` rate of the same disk.
//!
//! One core thread owns the [`Driver`]. `W` writer threads are clients, each with one put
//! outstanding at a time: a writer sends its request over a channel and waits for the reply. The
//! core thread submits every request that has arrived, then steps the driver: one `fdatasync`
//! makes all pending writes durable at once, so the more writers wait, the more appends share it.
//! A writer measures each request from send to reply, so latency includes queueing and every
//! retry.
//!
//! The baseline is what a naive log does per append: overwrite one 4 KiB block of the same
//! preallocated data file and `fdatasync` it, by one writer, in a loop.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
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

/// A put from a writer to the core thread. The writer's client id is `writer + 1`.
struct Request {
    client: u64,
    request: u64,
    body: Vec<u8>,
}

type ReplyResult = Result<(), RequestError>;

/// What the core thread saw.
struct CoreSummary {
    io: IoSummary,
    checkpoints: u64,
}

/// What one writer saw.
struct WriterSummary {
    latency: Histogram<u64>,
    appends: u64,
    busy_retries: u64,
    finished: Instant,
}

/// Group commit with `writers` writers, one put outstanding each, on a freshly formatted file.
fn group_commit(
    path: &Path,
    config: &Config,
    writers: usize,
    options: &BenchOptions,
    progress: &Progress,
) -> Result<RunResult, Box<dyn std::error::Error>> {
    let driver = Driver::open(path, config)?;
    let (request_tx, request_rx) = mpsc::channel::<Request>();
    let (reply_txs, reply_rxs): (Vec<_>, Vec<_>) =
        (0..writers).map(|_| mpsc::channel::<ReplyResult>()).unzip();
    let core = thread::Builder::new()
        .name("core".into())
        .spawn(move || serve(driver, request_rx, reply_txs))?;

    let barrier = Arc::new(Barrier::new(writers + 1));
    let appended = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = reply_rxs
        .into_iter()
        .enumerate()
        .map(|(writer, replies)| {
            let (requests, barrier, appended) =
                (request_tx.clone(), barrier.clone(), appended.clone());
            let (duration, value_size) = (options.duration, options.value_size);
            thread::Builder::new()
                .name(format!("writer-{writer}"))
                .spawn(move || {
                    barrier.wait();
                    write_loop(
                        writer as u64 + 1,
                        duration,
                        value_size,
                        &requests,
                        &replies,
                        &appended,
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    drop(request_tx); // the core thread stops once every writer has dropped its sender

    barrier.wait();
    let start = Instant::now();
    report_progress(
        writers,
        start,
        options.duration,
        &appended,
        &handles,
        progress,
    );
    let summaries: Vec<Result<WriterSummary, String>> = handles
        .into_iter()
        .map(|h| h.join().expect("writer thread panicked"))
        .collect();
    let core = core.join().expect("core thread panicked")?;
    let summaries = summaries.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(merge(writers, start, &summaries, &core))
}

/// Prints the appends so far, once a second, until every writer has finished.
fn report_progress(
    writers: usize,
    start: Instant,
    duration: Duration,
    appended: &AtomicU64,
    handles: &[thread::JoinHandle<Result<WriterSummary, String>>],
    progress: &Progress,
) {
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(200));
        let elapsed = start.elapsed().as_secs().min(duration.as_secs());
        let count = appended.load(Ordering::Relaxed);
        progress.update(&format!(
            "W={writers}: {elapsed}/{} s, {count} durable appends",
            duration.as_secs()
        ));
    }
}

fn merge(
    writers: usize,
    start: Instant,
    summaries: &[WriterSummary],
    core: &CoreSummary,
) -> RunResult {
    let mut latency = latency_histogram();
    for summary in summaries {
        latency
            .add(&summary.latency)
            .expect("histograms with equal bounds merge");
    }
    let finished = summaries.iter().map(|s| s.finished).max().unwrap_or(start);
    RunResult {
        writers: Some(writers),
        operations: summaries.iter().map(|s| s.appends).sum(),
        elapsed: finished - start,
        latency,
        io: core.io,
        checkpoints: core.checkpoints,
        busy_retries: summaries.iter().map(|s| s.busy_retries).sum(),
    }
}

/// One client: puts unique keys, one at a time, until `duration` has passed, retrying `Busy`.
fn write_loop(
    client: u64,
    duration: Duration,
    value_size: usize,
    requests: &Sender<Request>,
    replies: &Receiver<ReplyResult>,
    appended: &AtomicU64,
) -> Result<WriterSummary, String> {
    let deadline = Instant::now() + duration;
    let value = vec![b'v'; value_size];
    let mut summary = WriterSummary {
        latency: latency_histogram(),
        appends: 0,
        busy_retries: 0,
        finished: deadline,
    };
    let mut request = 0u64;
    while Instant::now() < deadline {
        request += 1;
        let key = format!("client{client:05}-request{request:010}");
        let body = KvStateMachine::put_body(key.as_bytes(), &value);
        let begin = Instant::now();
        loop {
            let sent = Request {
                client,
                request,
                body: body.clone(),
            };
            requests
                .send(sent)
                .map_err(|_| "the core thread stopped".to_string())?;
            match replies
                .recv()
                .map_err(|_| "the core thread stopped".to_string())?
            {
                Ok(()) => break,
                Err(RequestError::Busy) => summary.busy_retries += 1,
                Err(error) => return Err(format!("client {client} request {request}: {error}")),
            }
        }
        summary.latency.saturating_record(micros(begin.elapsed()));
        summary.appends += 1;
        appended.fetch_add(1, Ordering::Relaxed);
    }
    summary.finished = Instant::now();
    Ok(summary)
}

/// The core thread: submits every request that has arrived, steps the driver (one `fdatasync`
/// for all of them), and routes the replies. Runs until every writer is gone and IO is idle.
fn serve(
    mut driver: Driver,
    requests: Receiver<Request>,
    replies: Vec<Sender<ReplyResult>>,
) -> Result<CoreSummary, DriverError> {
    let before = driver.storage_stats();
    let mut idle_time = Duration::ZERO;
    let mut ready = Vec::new();
    loop {
        if !driver.has_pending_io() {
            // Idle: wait for work, or stop once every writer has hung up.
            let idle_since = Instant::now();
            let received = requests.recv();
            idle_time += idle_since.elapsed();
            let Ok(request) = received else { break };
            submit(&mut driver, request);
        }
        let completions = driver.flush();
        // Requests that arrived during the fdatasync are appended before the completions are
        // delivered, so that they join the WAL batch the completions release.
        while let Ok(request) = requests.try_recv() {
            submit(&mut driver, request);
        }
        driver.complete(completions);
        if let Some(error) = driver.halted() {
            return Err(DriverError::Halted(error.clone()));
        }
        driver.take_replies(&mut ready);
        for reply in ready.drain(..) {
            // A writer that hung up after its deadline no longer needs its reply.
            let _ = replies[reply.client as usize - 1].send(reply.result.map(drop));
        }
    }
    Ok(CoreSummary {
        io: IoSummary::between(before, driver.storage_stats(), idle_time),
        checkpoints: driver.checkpoints(),
    })
}

fn submit(driver: &mut Driver, request: Request) {
    driver.submit(
        request.client,
        request.request,
        KvStateMachine::PUT,
        &request.body,
    );
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
