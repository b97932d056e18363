//! The simulated cluster's speed, with no faults: committed client requests per wall-clock second
//! of `vopr` for 3 replicas, and the mean ticks from a leader crash to a new leader.
//!
//! `cargo bench -p ziggy-sim --bench cluster`

use std::time::Instant;
use ziggy_sim::{Options, Simulation};

fn main() {
    let seeds = 20u64;
    let mut ops = 0u64;
    let mut ticks = 0u64;
    let started = Instant::now();
    for seed in 0..seeds {
        let mut options = Options::fault_free(seed, 3);
        options.requests = 5_000;
        let outcome = ziggy_sim::run_seed(options).expect("no crash");
        assert!(
            outcome.verdict.passed(),
            "seed {seed}: {:?}",
            outcome.verdict
        );
        ops += outcome.ops;
        ticks += outcome.ticks;
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "cluster of 3, no faults: {ops} requests committed in {wall:.2} s of wall time = {:.0} requests/s \
         ({:.0} simulated ticks/s, {seeds} seeds x 5,000 requests, checkers on)",
        ops as f64 / wall,
        ticks as f64 / wall
    );

    let mut all = Vec::new();
    for seed in 0..seeds {
        let ticks =
            Simulation::<ziggy_sim::workload::Kv>::new(Options::fault_free(1_000 + seed, 3))
                .failover_ticks(10)
                .expect("failover completes");
        all.extend(ticks);
    }
    all.sort_unstable();
    let mean = all.iter().sum::<u64>() as f64 / all.len() as f64;
    let p = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    println!(
        "leader crash to a new leader taking requests: mean {mean:.0} ticks, p50 {} p90 {} max {} \
         ({} failovers; election timeout {}..{} ticks)",
        p(0.5),
        p(0.9),
        all[all.len() - 1],
        all.len(),
        ziggy_core::Config::test().election_ticks,
        2 * ziggy_core::Config::test().election_ticks
    );
}
