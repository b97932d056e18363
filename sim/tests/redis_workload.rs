//! The simulator drives the Redis state machine (`vopr --machine redis`): a fixed batch of seeds
//! passes every checker and reaches what the workload is there to reach — collections larger
//! than one sweep deleted and swept in several entries, expired keys reaped, state syncs of a
//! Redis state, errors (WRONGTYPE and the like) as replies.

use ziggy_sim::workload::Machine;
use ziggy_sim::{run_seed, Options};

/// Seeds `FIRST..FIRST + SEEDS` (`vopr --machine redis --seed 1000 --count 60`).
const FIRST: u64 = 1000;
const SEEDS: u64 = 60;

#[test]
fn a_fixed_batch_of_redis_seeds_passes_and_reaches_the_reaper() {
    let mut totals: Vec<(&str, u64)> = Vec::new();
    let (mut syncs, mut crashes) = (0, 0);
    for seed in FIRST..FIRST + SEEDS {
        let options = Options {
            machine: Machine::Redis,
            ..Options::from_seed(seed)
        };
        let outcome = run_seed(options).unwrap_or_else(|p| panic!("seed {seed}: {p}"));
        assert!(
            outcome.verdict.passed(),
            "seed {seed}: {:?}",
            outcome.verdict
        );
        syncs += outcome.sync.syncs;
        crashes += outcome.crashes;
        for (name, n) in outcome.workload {
            match totals.iter_mut().find(|(known, _)| *known == name) {
                Some((_, total)) => *total += n,
                None => totals.push((name, n)),
            }
        }
    }
    let total = |name: &str| {
        totals
            .iter()
            .find(|(known, _)| *known == name)
            .map_or(0, |(_, n)| *n)
    };
    for counter in [
        "groups",
        "errors",
        "looks",
        "reaps",
        "reaped",
        "sweeps",
        "swept",
        "sweeps_continued",
    ] {
        assert!(total(counter) > 0, "no seed reached {counter}: {totals:?}");
    }
    assert!(syncs > 0, "no replica synced a Redis state from a peer");
    assert!(crashes > 0, "no replica crashed");
}
