//! ZiggyDB's deterministic simulator.
//!
//! The replica from `ziggy-core` runs over [`storage::SimStorage`] (simulated disk with crashes,
//! torn writes, latent sector faults and misdirected writes) under simulated time, driven by
//! simulated clients, and checked at every step by [`model::Model`]. One seed determines the whole
//! run; `vopr --seed N` replays it exactly.

pub mod linearizability;
pub mod model;
pub mod network;
pub mod prng;
pub mod redis_workload;
pub mod simulation;
pub mod storage;
pub mod witness;
pub mod workload;

pub use simulation::{Options, Outcome, Simulation, SyncCounters, Verdict, WiderFaults};

/// Runs one seed, catching a panic of the core as a crash verdict.
pub fn run_seed(options: Options) -> Result<Outcome, String> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match options.machine {
        workload::Machine::Kv => Simulation::<workload::Kv>::new(options).run(),
        workload::Machine::Redis => Simulation::<redis_workload::Redis>::new(options).run(),
    }));
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string())
    })
}
