//! `vopr`: runs ZiggyDB simulations. `vopr --seed N` replays one run exactly; without `--seed` a
//! seed is picked and printed. `--count K` runs K consecutive seeds.
//!
//! The last line of a single run is
//! `vopr: seed=N result=pass|fail ops=N crashes=N faults=N trace_hash=HEX`.
//! Exit codes: 0 pass, 127 crash (panic or assertion in the core), 128 liveness, 129 correctness.

use clap::Parser;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use ziggy_core::marks::{Mark, Marks};
use ziggy_core::PlantedBug;
use ziggy_sim::workload::Machine;
use ziggy_sim::{run_seed, Options, Verdict};

#[derive(Parser, Debug)]
#[command(name = "vopr", about = "ZiggyDB's deterministic simulator")]
struct Args {
    /// The seed to run (random, and printed, when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// How many consecutive seeds to run, from --seed.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Worker threads for --count (each seed runs alone on one thread; results are unaffected).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Trace level: error, warn, info, debug, trace.
    #[arg(long)]
    log: Option<String>,
    /// Plants a known bug, to show that the checkers catch it: ack-before-durable,
    /// commit-without-quorum, vote-despite-faulty, apply-twice, local-reads,
    /// evicted-session-replay, stale-truncate, sync-without-flag, torn-anywhere.
    #[arg(long)]
    plant_bug: Option<String>,
    /// With --plant-bug: run the bug's hunting profile (its steered faults) without the bug, as
    /// the planted-bugs test does to show that those profiles pass.
    #[arg(long, requires = "plant_bug")]
    without_bug: bool,
    /// Liveness mode: heal every fault at a random point, then require new requests to commit
    /// within a bound.
    #[arg(long)]
    liveness: bool,
    /// Fix the cluster size (1-5) instead of drawing it from the seed.
    #[arg(long)]
    replicas: Option<u8>,
    /// Make this percentage of the seeds long (100,000 requests, where the LSM grows 3+ levels
    /// and followers sync large states).
    #[arg(long, default_value_t = 1)]
    long_share: u32,
    /// Fix the key space (1-N keys) instead of drawing it from the seed.
    #[arg(long)]
    keys: Option<u64>,
    /// Fix the longest value a write pads to (at most the config's value_size_max).
    #[arg(long)]
    value_size: Option<u64>,
    /// Fix the client operations before the settle phase.
    #[arg(long)]
    requests: Option<u64>,
    /// Appending workload: each write a new key past the others (the state grows by a key per
    /// write), instead of keys drawn from the key space.
    #[arg(long)]
    appending: bool,
    /// With --liveness: heal no earlier than this many operations (so that the state is at
    /// least that large when the faults stop).
    #[arg(long)]
    heal_from: Option<u64>,
    /// The fault phase's tick budget (default 200,000), for runs of many requests.
    #[arg(long)]
    fault_ticks: Option<u64>,
    /// A calm fill: no faults until this many operations have completed (with --appending,
    /// a state of that many keys), then the seed's faults.
    #[arg(long)]
    calm_until: Option<u64>,
    /// The state machine the clients drive: kv (the core's key-value machine) or redis (the
    /// Redis data model: strings, hashes, sets, sorted sets, lists, JSON, expiry, the reaper).
    #[arg(long, default_value_t = Machine::Kv)]
    machine: Machine,
}

const EXIT_CRASH: u8 = 127;
const EXIT_LIVENESS: u8 = 128;
const EXIT_CORRECTNESS: u8 = 129;

struct SeedResult {
    seed: u64,
    /// The coverage marks the run hit (empty for a crash).
    marks: Marks,
    /// Own checkpoints compared with another replica's at the same index, and differing.
    checkpoints: (u64, u64),
    line: String,
    exit: u8,
    detail: Option<String>,
    /// The workload's counters (`Outcome::workload`).
    workload: Vec<(&'static str, u64)>,
}

/// What every seed of a batch shares: the command line's choices.
#[derive(Clone, Copy)]
struct Mode {
    bug: Option<PlantedBug>,
    without_bug: bool,
    liveness: bool,
    replicas: Option<u8>,
    long_share: u32,
    workload: Workload,
}

/// Workload sizes fixed on the command line (None: drawn from the seed).
#[derive(Clone, Copy, Default)]
struct Workload {
    keys: Option<u64>,
    value_size: Option<u64>,
    requests: Option<u64>,
    appending: bool,
    heal_from: Option<u64>,
    fault_ticks: Option<u64>,
    calm_until: Option<u64>,
    machine: Machine,
}

impl Workload {
    fn apply(self, options: &mut Options) {
        if let Some(keys) = self.keys {
            options.key_space = keys.max(1);
        }
        if let Some(size) = self.value_size {
            let max = ziggy_core::Config::test().value_size_max as u64;
            options.value_size = size.min(max);
        }
        if let Some(requests) = self.requests {
            options.requests = requests;
        }
        options.appending |= self.appending;
        if let Some(ops) = self.heal_from {
            options.heal_from = ops;
        }
        if let Some(ticks) = self.fault_ticks {
            options.fault_ticks = ticks;
        }
        if let Some(ops) = self.calm_until {
            options.calm_until = ops;
        }
        options.machine = self.machine;
    }
}

fn run_one(seed: u64, mode: Mode) -> SeedResult {
    let Mode {
        bug,
        without_bug,
        liveness,
        replicas,
        long_share,
        workload,
    } = mode;
    let mut options = match (bug, replicas) {
        (Some(bug), _) => Options::for_bug(seed, bug),
        (None, Some(n)) => Options::with_replicas(seed, n),
        (None, None) => Options::from_seed(seed),
    };
    options.liveness = liveness;
    if without_bug {
        options.planted_bug = None;
    }
    let mut options = options.long_share(long_share);
    workload.apply(&mut options);
    match run_seed(options) {
        Ok(outcome) => {
            let (result, exit, detail) = match &outcome.verdict {
                Verdict::Pass => ("pass", 0, None),
                Verdict::PassHalted(why) => ("pass", 0, Some(format!("halted as expected: {why}"))),
                Verdict::Liveness(why) => ("fail", EXIT_LIVENESS, Some(format!("liveness: {why}"))),
                Verdict::Correctness(why) => (
                    "fail",
                    EXIT_CORRECTNESS,
                    Some(format!("correctness: {why}")),
                ),
            };
            SeedResult {
                seed,
                marks: outcome.marks,
                checkpoints: (outcome.checkpoints_compared, outcome.checkpoints_differing),
                line: format!(
                    "vopr: seed={seed} result={result} ops={} crashes={} faults={} replicas={} trace_hash={:016x}",
                    outcome.ops, outcome.crashes, outcome.faults, outcome.replicas, outcome.trace_hash
                ),
                exit,
                detail,
                workload: outcome.workload,
            }
        }
        Err(panic) => SeedResult {
            seed,
            marks: Marks::default(),
            checkpoints: (0, 0),
            line: format!(
                "vopr: seed={seed} result=fail ops=0 crashes=0 faults=0 replicas=0 trace_hash=0"
            ),
            exit: EXIT_CRASH,
            detail: Some(format!("crash: {panic}")),
            workload: Vec::new(),
        },
    }
}

/// Per coverage mark, how many seeds hit it (and how often in all), naming the seeds of a rare
/// one; unhit marks are named.
fn print_coverage(results: &[SeedResult]) {
    /// Marks hit by at most this many seeds name them (for `sim/tests/coverage.rs`'s list).
    const RARE: usize = 5;
    println!("vopr: coverage (seeds that hit each mark / times hit):");
    let mut unhit = Vec::new();
    for mark in Mark::ALL {
        let hitting: Vec<u64> = results
            .iter()
            .filter(|r| r.marks.count(mark) > 0)
            .map(|r| r.seed)
            .collect();
        let seeds = hitting.len();
        let times: u64 = results.iter().map(|r| r.marks.count(mark)).sum();
        let named = if (1..=RARE).contains(&seeds) {
            format!(" (seeds {hitting:?})")
        } else {
            String::new()
        };
        println!("vopr:   {:<26} {seeds:>7} {times:>12}{named}", mark.name());
        if seeds == 0 {
            unhit.push(mark.name());
        }
    }
    if !unhit.is_empty() {
        println!("vopr: marks no seed hit: {}", unhit.join(", "));
    }
}

/// The workload's counters summed over the batch, with how many seeds reached each.
fn print_workload(results: &[SeedResult]) {
    let mut sums: Vec<(&str, u64, u64)> = Vec::new();
    for result in results {
        for &(name, n) in &result.workload {
            match sums.iter_mut().find(|(known, ..)| *known == name) {
                Some((_, total, seeds)) => {
                    *total += n;
                    *seeds += (n > 0) as u64;
                }
                None => sums.push((name, n, (n > 0) as u64)),
            }
        }
    }
    if sums.is_empty() {
        return;
    }
    println!("vopr: workload (seeds that reached each / total):");
    for (name, total, seeds) in sums {
        println!("vopr:   {name:<26} {seeds:>7} {total:>12}");
    }
}

fn replay_command(seed: u64, args: &Args) -> String {
    let mut extra = String::new();
    if let Some(bug) = &args.plant_bug {
        extra.push_str(&format!(" --plant-bug {bug}"));
    }
    if args.without_bug {
        extra.push_str(" --without-bug");
    }
    if args.liveness {
        extra.push_str(" --liveness");
    }
    for (flag, value) in [
        ("--keys", args.keys),
        ("--value-size", args.value_size),
        ("--requests", args.requests),
        ("--heal-from", args.heal_from),
        ("--fault-ticks", args.fault_ticks),
        ("--calm-until", args.calm_until),
    ] {
        if let Some(value) = value {
            extra.push_str(&format!(" {flag} {value}"));
        }
    }
    if args.appending {
        extra.push_str(" --appending");
    }
    if args.machine != Machine::Kv {
        extra.push_str(&format!(" --machine {}", args.machine));
    }
    if let Some(n) = args.replicas {
        extra.push_str(&format!(" --replicas {n}"));
    }
    format!("cargo run -p ziggy-sim --release -- --seed {seed}{extra} --log debug")
}

fn random_seed() -> u64 {
    // Picking the seed is the one place OS entropy is used; the run itself never sees it.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ ((std::process::id() as u64) << 32)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(level) = &args.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(level))
            .with_target(false)
            .without_time()
            .init();
    }
    let bug = match &args.plant_bug {
        None => None,
        Some(name) => match PlantedBug::parse(name) {
            Some(bug) => Some(bug),
            None => {
                eprintln!(
                    "vopr: unknown planted bug {name:?} (known: {})",
                    PlantedBug::NAMES.join(", ")
                );
                return ExitCode::from(2);
            }
        },
    };
    let first = args.seed.unwrap_or_else(random_seed);
    // Without the panic hook's noise for expected crashes in batches; single runs keep it.
    if args.count > 1 {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let next = AtomicU64::new(0);
    let (tx, rx) = mpsc::channel();
    let mut results = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= args.count {
                    break;
                }
                // Each seed runs on a fresh thread, so no thread-local state leaks between runs.
                let seed = first.wrapping_add(k);
                let mode = Mode {
                    bug,
                    without_bug: args.without_bug,
                    liveness: args.liveness,
                    replicas: args.replicas,
                    long_share: args.long_share,
                    workload: Workload {
                        keys: args.keys,
                        value_size: args.value_size,
                        requests: args.requests,
                        appending: args.appending,
                        heal_from: args.heal_from,
                        fault_ticks: args.fault_ticks,
                        calm_until: args.calm_until,
                        machine: args.machine,
                    },
                };
                let result =
                    std::thread::scope(|s| s.spawn(move || run_one(seed, mode)).join().unwrap());
                if tx.send(result).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let started = std::time::Instant::now();
        for result in rx {
            if args.count > 1 {
                println!("{}", result.line);
            }
            if let Some(detail) = &result.detail {
                if result.exit != 0 {
                    println!("vopr: seed={} {detail}", result.seed);
                    println!("vopr: replay: {}", replay_command(result.seed, &args));
                }
            }
            results.push(result);
            if args.count > 1 && results.len() % 500 == 0 {
                eprintln!(
                    "vopr: {} / {} seeds, {:.1}s",
                    results.len(),
                    args.count,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    });
    let worst = results.iter().map(|r| r.exit).max().unwrap_or(0);
    if args.count > 1 {
        let failed: Vec<u64> = results
            .iter()
            .filter(|r| r.exit != 0)
            .map(|r| r.seed)
            .collect();
        let halted = results
            .iter()
            .filter(|r| r.exit == 0 && r.detail.is_some())
            .count();
        println!(
            "vopr: seeds={}..={} passed={} failed={} halted_as_expected={halted} failing={failed:?}",
            first,
            first.wrapping_add(args.count - 1),
            results.len() - failed.len(),
            failed.len(),
        );
        print_coverage(&results);
        print_workload(&results);
        let compared: u64 = results.iter().map(|r| r.checkpoints.0).sum();
        let differing: u64 = results.iter().map(|r| r.checkpoints.1).sum();
        println!(
            "vopr: checkpoints at one index on two replicas: {compared} compared, {differing} \
             differ (block layouts that share nothing in a state sync)"
        );
    } else if let Some(r) = results.first() {
        if let (0, Some(detail)) = (r.exit, &r.detail) {
            eprintln!("vopr: {detail}");
        }
        // The last line of a single run is the result line.
        println!("{}", r.line);
    }
    ExitCode::from(worst)
}
