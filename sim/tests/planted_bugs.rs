//! Proof that the checkers can fail: a planted bug is caught within a few hundred seeds.

use ziggy_core::PlantedBug;
use ziggy_sim::{run_seed, Options, Verdict};

#[test]
fn ack_before_durable_is_caught_within_a_few_hundred_seeds() {
    std::panic::set_hook(Box::new(|_| {}));
    let caught = (0..300u64).find(|&seed| {
        let mut options = Options::from_seed(seed);
        options.planted_bug = Some(PlantedBug::AckBeforeDurable);
        matches!(run_seed(options), Ok(outcome) if matches!(outcome.verdict, Verdict::Correctness(_)))
    });
    let _ = std::panic::take_hook();
    assert!(
        caught.is_some(),
        "acknowledging before durability went unnoticed for 300 seeds"
    );
}

#[test]
fn the_same_seeds_pass_without_the_bug() {
    for seed in 0..50u64 {
        let outcome = run_seed(Options::from_seed(seed)).unwrap();
        assert!(
            outcome.verdict.passed(),
            "seed {seed}: {:?}",
            outcome.verdict
        );
    }
}
