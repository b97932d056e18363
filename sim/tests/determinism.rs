//! The same seed gives the same run: same trace hash, same outcome — for single replicas and
//! clusters alike.

use ziggy_sim::workload::Machine;
use ziggy_sim::{run_seed, Options};

#[test]
fn same_seed_same_trace_hash() {
    for seed in [1, 7, 5155, 5480, 123_456_789] {
        let a = run_seed(Options::from_seed(seed)).unwrap();
        let b = run_seed(Options::from_seed(seed)).unwrap();
        assert_eq!(a, b, "seed {seed} ran differently twice");
        assert!(a.ops > 0);
    }
}

#[test]
fn cluster_seeds_replay_identically() {
    for replicas in [1u8, 2, 3, 4, 5] {
        let seed = 4242 + replicas as u64;
        let a = run_seed(Options::with_replicas(seed, replicas)).unwrap();
        let b = run_seed(Options::with_replicas(seed, replicas)).unwrap();
        assert_eq!(a, b, "cluster of {replicas}, seed {seed}");
        assert_eq!(a.replicas, replicas);
    }
}

#[test]
fn different_seeds_differ() {
    let a = run_seed(Options::from_seed(1)).unwrap();
    let b = run_seed(Options::from_seed(2)).unwrap();
    assert_ne!(a.trace_hash, b.trace_hash);
}

#[test]
fn same_seed_on_another_thread_same_trace_hash() {
    let here = run_seed(Options::from_seed(99)).unwrap();
    let there = std::thread::spawn(|| run_seed(Options::from_seed(99)).unwrap())
        .join()
        .unwrap();
    assert_eq!(here.trace_hash, there.trace_hash);
}

#[test]
fn liveness_mode_commits_after_the_heal() {
    for seed in 0..20u64 {
        let mut options = Options::with_replicas(seed, 3);
        options.liveness = true;
        let outcome = run_seed(options).unwrap();
        assert!(
            outcome.verdict.passed(),
            "seed {seed}: {:?}",
            outcome.verdict
        );
        assert!(
            outcome.liveness_ticks > 0
                && outcome.liveness_ticks <= ziggy_sim::simulation::LIVENESS_TICKS
        );
    }
}

#[test]
fn redis_seeds_replay_identically() {
    for seed in [3, 1017, 1042] {
        let options = || Options {
            machine: Machine::Redis,
            ..Options::from_seed(seed)
        };
        let a = run_seed(options()).unwrap();
        let b = run_seed(options()).unwrap();
        assert_eq!(a, b, "redis seed {seed} ran differently twice");
        assert!(a.verdict.passed(), "seed {seed}: {:?}", a.verdict);
    }
}
