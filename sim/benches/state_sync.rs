//! State sync's cost in blocks, in the simulator (block counts are the claim, and they do not
//! depend on disk speed): a cluster of 3, no faults, 256-byte values over a key space of
//! `KEYS`, replica 2 down for part of the run.
//!
//! - **A, 1% behind:** replica 2 misses the last 1% of the writes, then comes back once writes
//!   stop. Checkpoints are deterministic (replicas at one index hold the same blocks), so the
//!   sync fetches what the missed writes changed: with *appends* (each write a new key past
//!   the others), about 1% of the blocks; with *random overwrites* over `KEYS`, the tables
//!   the writes landed in, which compaction rewrites whole.
//! - **B, far behind while writes continue:** replica 2 misses the first half, then syncs while
//!   clients keep writing; the leader checkpoints under it (retargets), and each hop to a newer
//!   checkpoint fetches what changed.
//!
//! `cargo bench -p ziggy-sim --bench state_sync` (env `KEYS`, `REQUESTS`, `SEEDS` to resize;
//! `MB=1024` runs scenario A with appends at production sizes instead, about 1 GB of state).
//! The simulator's fault phase is a tick budget (200,000): a run that has not completed its
//! writes by then settles early, so each line reports the writes done.

use std::time::Instant;
use ziggy_sim::{run_seed, Options, SyncCounters};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn scenario(name: &str, seeds: u64, make: impl Fn(u64) -> Options) {
    let started = Instant::now();
    let mut total = SyncCounters::default();
    let mut ticks = 0;
    for seed in 0..seeds {
        let outcome = run_seed(make(seed)).unwrap_or_else(|p| panic!("seed {seed}: {p}"));
        assert!(
            outcome.verdict.passed(),
            "seed {seed}: {:?}",
            outcome.verdict
        );
        let s = outcome.sync;
        let seen = s.fetched + s.local;
        println!(
            "{name} seed {seed}: syncs {} fetched {} local {} ({:.1}% fetched) served {} \
             retransmits {} retargets {} duplicates {} offers {}; {} writes in {} ticks",
            s.syncs,
            s.fetched,
            s.local,
            100.0 * s.fetched as f64 / seen.max(1) as f64,
            s.served,
            s.retransmits,
            s.retargets,
            s.duplicates,
            s.offers,
            outcome.ops,
            outcome.ticks
        );
        total.syncs += s.syncs;
        total.fetched += s.fetched;
        total.local += s.local;
        total.served += s.served;
        total.retargets += s.retargets;
        ticks += outcome.ticks;
    }
    let seen = total.fetched + total.local;
    println!(
        "{name}: {seeds} seeds, {} syncs, {:.1}% of the blocks walked were fetched ({} of {}), \
         leader served {} ({:.2}x fetched), {} retargets, {} ticks in all, {:.1} s wall",
        total.syncs,
        100.0 * total.fetched as f64 / seen.max(1) as f64,
        total.fetched,
        seen,
        total.served,
        total.served as f64 / total.fetched.max(1) as f64,
        total.retargets,
        ticks,
        started.elapsed().as_secs_f64()
    );
}

/// Scenario A at production block sizes (64 KiB blocks and entries, values up to 60 KiB, the
/// production LSM options): `MB` megabytes of appended values (about 30 KiB each), the follower
/// down for the last 1% of them. The ring is shortened to 64 slots (production has 1,024): 1%
/// of the writes must outrun the leader's log, or the follower catches up from the log alone.
fn at_scale(megabytes: u64) {
    let requests = megabytes * 1024 / 30;
    let mut config = ziggy_core::Config::production();
    config.wal_slot_count = 64;
    config.batch_max = 16;
    println!(
        "state sync at production block sizes: 3 replicas, ~{megabytes} MB appended in \
         {requests} writes, a 64-slot ring"
    );
    scenario("A at scale (1% behind, appends)", 1, |seed| {
        let behind = requests / 100;
        let down = (requests - behind, requests);
        let mut options = Options::lagging(seed + 1, requests, requests, down);
        options.value_size = config.value_size_max as u64;
        options.config = Some(config.clone());
        options.appending = true;
        options
    });
}

fn main() {
    let megabytes = env("MB", 0);
    if megabytes > 0 {
        return at_scale(megabytes);
    }
    let keys = env("KEYS", 10_000);
    let requests = env("REQUESTS", 20_000);
    let seeds = env("SEEDS", 3);
    println!("state sync: 3 replicas, {keys} keys, 256-byte values, {requests} writes");
    let behind = requests / 100;
    scenario("A (1% behind, random overwrites)", seeds, |seed| {
        Options::lagging(seed, keys, requests, (requests - behind, requests))
    });
    scenario("A (1% behind, appends)", seeds, |seed| {
        let mut options = Options::lagging(seed, keys, requests, (requests - behind, requests));
        options.appending = true;
        options
    });
    scenario("B (half behind, writes go on)", seeds, |seed| {
        Options::lagging(seed, keys, requests, (0, requests / 2))
    });
}
