//! The same seed gives the same run: same trace hash, same outcome.

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
