//! `ziggy`: ZiggyDB's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ziggy_core::Config;
use ziggy_io::bench::{self, BenchOptions, Progress};
use ziggy_io::format::format;

/// The server allocates small buffers on connection tasks and frees some of them on the core's
/// thread; glibc's malloc spent a fifth of the server's time on that (`perf`, GET -P 16).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ziggy",
    version,
    about = "ZiggyDB: a deterministic, durable database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Redis protocol: `redis-cli -p 7379` talks to it. Alone by default; with
    /// `--addresses`, as one replica of a cluster (run one per replica, each with its own
    /// `--replica` index and the same `--cluster-id` and `--addresses`).
    Serve {
        /// The data file (formatted on first start).
        #[arg(long, default_value = "ziggy.data")]
        data: PathBuf,
        /// The port to listen on.
        #[arg(long, default_value_t = ziggy_io::server::DEFAULT_PORT)]
        port: u16,
        /// The address to listen on (loopback unless you choose otherwise).
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// The sizes of the data file's zones, when it is formatted.
        #[arg(long, value_enum, default_value_t = Preset::Production)]
        preset: Preset,
        /// Log lines as JSON instead of text.
        #[arg(long)]
        log_json: bool,
        /// Every replica's address for its peers, in replica order (HOST:PORT,HOST:PORT,...):
        /// serve as one replica of that cluster.
        #[arg(long, value_delimiter = ',', requires = "replica")]
        addresses: Vec<std::net::SocketAddr>,
        /// The operators' HTTP port (/health, /status, /metrics); default: --port + 1000.
        #[arg(long)]
        http_port: Option<u16>,
        /// Serve no HTTP port.
        #[arg(long, conflicts_with = "http_port")]
        no_http: bool,
        /// This replica's index in --addresses (from 0).
        #[arg(long, requires = "addresses")]
        replica: Option<u8>,
        /// The cluster's id: the same number on every replica (any but 0).
        #[arg(long, default_value_t = 1)]
        cluster_id: u64,
        /// Require clients to `AUTH` with this password first.
        #[arg(long)]
        requirepass: Option<String>,
    },
    /// Create a data file, fully allocated, holding an empty database.
    Format {
        /// The data file to create.
        #[arg(long)]
        path: PathBuf,
        /// The sizes of the file's zones.
        #[arg(long, value_enum, default_value_t = Preset::Production)]
        preset: Preset,
        /// Replace an existing file (its data is lost).
        #[arg(long)]
        force: bool,
    },
    /// Measure durable WAL appends per second under group commit, against the disk's raw
    /// single-writer fdatasync rate.
    BenchWal {
        /// The data file to create for the benchmark (must not exist; removed afterwards).
        /// Defaults to a file in the current directory, so that the disk under test is the
        /// one you run from.
        #[arg(long)]
        path: Option<PathBuf>,
        /// How long each run lasts.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        seconds: u64,
        /// The writer counts to measure; each writer keeps one put outstanding.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
        writers: Vec<usize>,
        /// The size of each value, in bytes.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// How many distinct keys the writers cycle through.
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
    },
    /// Describe a data file: superblock copies, WAL, checkpoint, grid. With --verify, read
    /// every sector and block and check every checksum; exit non-zero naming each bad one.
    Inspect {
        /// The data file.
        path: PathBuf,
        /// Read and check everything (the whole grid: minutes for a large file).
        #[arg(long)]
        verify: bool,
    },
    /// Write every key of a live node (its type, value and expiry) as JSON lines.
    Export {
        /// The node: HOST:PORT of any replica.
        #[arg(long, default_value = "127.0.0.1:7379")]
        from: String,
        /// The file to write; `-` for standard output.
        #[arg(long, default_value = "-")]
        to: PathBuf,
    },
    /// Back up a live node while it serves: a data file at a checkpoint the node takes after the
    /// backup begins (every write acknowledged before then is in it), copied block by block.
    Backup {
        /// The node: HOST:PORT of any replica.
        #[arg(long, default_value = "127.0.0.1:7379")]
        from: String,
        /// The backup file to create (never overwritten).
        #[arg(long)]
        to: PathBuf,
        /// The preset the node's data file was formatted with.
        #[arg(long, value_enum, default_value_t = Preset::Production)]
        preset: Preset,
        /// Pause this long after each request for blocks (a gentler load on a busy node).
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
    },
    /// Make a data file from a backup: every checksum of the backup is verified, then it is
    /// copied to PATH, which `ziggy serve --data PATH` opens (a single node).
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The data file to create (never overwritten).
        #[arg(long)]
        to: PathBuf,
    },
    /// Load JSON lines written by `export` into a live node: each key deleted and written anew,
    /// so importing twice leaves the same keys.
    Import {
        /// The file to read; `-` for standard input.
        #[arg(long, default_value = "-")]
        from: PathBuf,
        /// The node: HOST:PORT of any replica.
        #[arg(long, default_value = "127.0.0.1:7379")]
        to: String,
    },
    /// Measure how long opening an embedded database takes, by data size.
    BenchStartup {
        /// Where to create the databases (removed afterwards unless --keep).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Data sizes in GB (keys plus values written).
        #[arg(long, value_delimiter = ',', default_value = "1,10")]
        gb: Vec<f64>,
        #[arg(long, default_value_t = 1000)]
        value_size: usize,
        /// How many times each database is opened.
        #[arg(long, default_value_t = 101)]
        opens: usize,
        #[arg(long)]
        keep: bool,
        /// Open the databases an earlier `--keep` run left (same sizes and value size) instead
        /// of filling them again.
        #[arg(long)]
        reuse: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Preset {
    /// Tiny zones for tests: the WAL ring wraps every few dozen writes.
    Test,
    /// Zones sized for a real disk.
    Production,
}

impl Preset {
    fn config(self) -> Config {
        match self {
            Preset::Test => Config::test(),
            Preset::Production => Config::production(),
        }
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve {
            data,
            port,
            bind,
            preset,
            log_json,
            addresses,
            replica,
            cluster_id,
            http_port,
            no_http,
            requirepass,
        } => {
            init_logs(log_json);
            let mut options = ziggy_io::server::ServeOptions::new(data);
            options.port = port;
            options.bind = bind;
            options.config = preset.config();
            options.http_port = match (no_http, http_port) {
                (true, _) => None,
                (false, Some(p)) => Some(p),
                (false, None) => Some(if port == 0 {
                    0
                } else {
                    port.saturating_add(1000)
                }),
            };
            options.cluster = replica.map(|replica| ziggy_io::server::ClusterOptions {
                id: cluster_id,
                replica,
                addresses,
            });
            options.requirepass = requirepass;
            ziggy_io::server::serve(options).map_err(|e| e.into())
        }
        Command::Format {
            path,
            preset,
            force,
        } => run_format(&path, preset, force),
        Command::BenchWal {
            path,
            seconds,
            writers,
            value_size,
            keys,
        } => {
            let path = path.unwrap_or_else(|| {
                PathBuf::from(format!("ziggy-bench-wal-{}.data", std::process::id()))
            });
            let options = BenchOptions {
                path,
                duration: Duration::from_secs(seconds),
                writers,
                value_size,
                keys: keys.max(1),
                config: Config::production(),
            };
            run_bench(&options)
        }
        Command::Inspect { path, verify } => run_inspect(&path, verify),
        Command::Export { from, to } => run_export(&from, &to),
        Command::Import { from, to } => run_import(&from, &to),
        Command::Backup {
            from,
            to,
            preset,
            pause_ms,
        } => {
            let options = ziggy_io::backup::BackupOptions {
                pause: Duration::from_millis(pause_ms),
                ..Default::default()
            };
            run_backup(&from, &to, &preset.config(), options)
        }
        Command::Restore { file, to } => run_restore(&file, &to),
        Command::BenchStartup {
            dir,
            gb,
            value_size,
            opens,
            keep,
            reuse,
        } => {
            let options = ziggy_io::bench_startup::StartupOptions {
                dir,
                sizes: gb.iter().map(|g| (g * 1e9) as u64).collect(),
                value_size,
                opens,
                keep,
                reuse,
            };
            ziggy_io::bench_startup::run(&options)
                .map(|report| print!("{report}"))
                .map_err(|e| e.into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: info).
fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

fn run_format(
    path: &std::path::Path,
    preset: Preset,
    force: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = preset.config();
    format(path, &config, 0, force)?;
    let size = ziggy_core::Layout::new(&config).total_size();
    println!("formatted {} ({size} bytes)", path.display());
    Ok(())
}

fn run_bench(options: &BenchOptions) -> Result<(), Box<dyn std::error::Error>> {
    let report = bench::run(options, &Progress::stderr())?;
    print!("{report}");
    Ok(())
}

fn run_export(from: &str, to: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let progress = |n| eprintln!("export: {n} keys so far");
    let keys = if to == std::path::Path::new("-") {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        ziggy_io::transfer::export(from, &mut out, progress)?
    } else {
        let mut out = std::io::BufWriter::new(std::fs::File::create(to)?);
        let keys = ziggy_io::transfer::export(from, &mut out, progress)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        keys
    };
    eprintln!("export: {keys} keys from {from}");
    Ok(())
}

fn run_import(from: &std::path::Path, to: &str) -> Result<(), Box<dyn std::error::Error>> {
    let progress = |n| eprintln!("import: {n} keys so far");
    let keys = if from == std::path::Path::new("-") {
        ziggy_io::transfer::import(to, std::io::stdin().lock(), progress)?
    } else {
        ziggy_io::transfer::import(to, std::fs::File::open(from)?, progress)?
    };
    eprintln!("import: {keys} keys into {to}");
    Ok(())
}

fn run_backup(
    from: &str,
    to: &std::path::Path,
    config: &Config,
    options: ziggy_io::backup::BackupOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    let progress = |s: &ziggy_io::backup::BackupSummary| {
        eprintln!(
            "backup: {} blocks ({} MiB) copied so far",
            s.fetched,
            s.bytes >> 20
        )
    };
    let summary = ziggy_io::backup::backup(from, to, config, options, progress)?;
    eprintln!(
        "backup: {} at checkpoint {}: {} blocks ({} MiB) copied, {} newer checkpoints followed",
        to.display(),
        summary.index,
        summary.fetched,
        summary.bytes >> 20,
        summary.retargets
    );
    Ok(())
}

/// A progress callback over a fraction done that tells `say` the percentage at each tenth.
fn every_tenth(say: impl Fn(u32)) -> impl FnMut(f64) {
    let mut shown = 0;
    move |fraction: f64| {
        let percent = (fraction * 100.0) as u32;
        if percent >= shown + 10 {
            shown = percent;
            say(percent);
        }
    }
}

fn run_restore(
    file: &std::path::Path,
    to: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let progress = every_tenth(|percent| eprintln!("restore: {percent}% of the backup verified"));
    let summary = ziggy_io::backup::restore(file, to, progress)?;
    eprintln!(
        "restore: {} made from {} ({} bytes); serve it with `ziggy serve --data {}`",
        to.display(),
        file.display(),
        summary.bytes,
        to.display()
    );
    Ok(())
}

fn run_inspect(path: &std::path::Path, verify: bool) -> Result<(), Box<dyn std::error::Error>> {
    let progress = every_tenth(|percent| eprintln!("inspect: {percent}% of the grid read"));
    let found = ziggy_io::inspect::inspect(path, verify, progress)?;
    print!("{}", found.text);
    if found.damage.is_empty() {
        if verify {
            println!("verify: every checksum matches");
        }
        return Ok(());
    }
    for line in &found.damage {
        println!("damaged: {line}");
    }
    Err(format!("{} damaged sectors or blocks", found.damage.len()).into())
}
