//! `bench-engine`: ZiggyDB's LSM engine against fjall and RocksDB, single-threaded, on the same
//! keys, values, cache size and durability (each engine's WAL, no sync per write).

mod engine;
#[cfg(feature = "peers")]
mod fjall;
mod metrics;
mod report;
mod rng;
#[cfg(feature = "peers")]
mod rocksdb;
mod workloads;
mod ziggy;
mod zipfian;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use engine::EngineConfig;
use workloads::{Bench, Params, PhaseResult};

#[derive(Parser, Debug)]
#[command(about = "Engine benchmark: fill, reads, scans, overwrite churn and YCSB A-F")]
struct Args {
    /// Engines to run, in order (fjall and rocksdb need the `peers` feature).
    #[arg(long, value_delimiter = ',', default_value = "ziggy,fjall,rocksdb")]
    engines: Vec<String>,
    /// Keys inserted by fill-random, and overwrites done by the churn phase.
    #[arg(long, default_value_t = 10_000_000)]
    keys: u64,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Operations per read phase and per YCSB workload (scans: ops / 100).
    #[arg(long, default_value_t = 1_000_000)]
    ops: u64,
    /// Each engine runs in a fresh directory under this one.
    #[arg(long, default_value = "bench-data")]
    dir: PathBuf,
    /// Block cache size for every engine, MiB.
    #[arg(long, default_value_t = 64)]
    cache_mb: u64,
    /// Also append each result as a JSON line to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep each engine's data directory instead of deleting it after its run.
    #[arg(long)]
    keep: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-engine: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let mut out = args.out.as_ref().map(open_out).transpose()?;
    println!("{}\n", describe_run(args));
    let mut all = Vec::new();
    for name in &args.engines {
        let results = run_engine(name, args, &mut |r| {
            eprintln!("[{name}] {} done: {:.0} ops/s", r.phase, r.ops_per_sec());
            if !r.engine_state.is_empty() {
                eprintln!("[{name}] after {}: {}", r.phase, r.engine_state);
            }
            if let Some(file) = out.as_mut() {
                writeln!(file, "{}", report::json_line(r)).expect("write --out");
            }
        })?;
        println!("## {name}\n\n{}", report::table(&results));
        all.extend(results);
    }
    if args.engines.len() > 1 {
        println!("## By phase\n{}", report::tables_by_phase(&all));
    }
    Ok(())
}

/// Runs every phase on a fresh `name` engine in `<dir>/<name>`, then deletes the directory.
fn run_engine(
    name: &str,
    args: &Args,
    report: &mut dyn FnMut(&PhaseResult),
) -> Result<Vec<PhaseResult>, String> {
    let dir = args.dir.join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let config = EngineConfig {
        cache_bytes: args.cache_mb << 20,
    };
    let engine = engine::open(name, &dir, &config)?;
    let params = Params {
        keys: args.keys,
        value_size: args.value_size,
        ops: args.ops,
        seed: args.seed,
    };
    let mut bench = Bench::new(engine, name, &dir, params);
    let results = bench.run_all(report);
    drop(bench);
    if !args.keep {
        fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    Ok(results)
}

fn open_out(path: &PathBuf) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

fn describe_run(a: &Args) -> String {
    format!(
        "# bench-engine\n\nengines {}; keys {}; key 16 B; value {} B; ops {}; scans {} of 100; cache {} MiB; seed {}; single-threaded client, WAL without sync per write",
        a.engines.join(","),
        a.keys,
        a.value_size,
        a.ops,
        (a.ops / 100).max(1),
        a.cache_mb,
        a.seed
    )
}
