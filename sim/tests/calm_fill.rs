//! The calm fill (`Options::calm_until`, `vopr --calm-until`): a large state is built without
//! faults, then the seed's faults strike it. Liveness at a state of 100,000 keys is run this way
//! (`docs/testing.md`); here at a size a test can afford.

use ziggy_sim::{run_seed, Options};

fn options(seed: u64, requests: u64, calm_until: u64) -> Options {
    let mut options = Options::from_seed(seed);
    options.requests = requests;
    options.appending = true;
    options.calm_until = calm_until;
    options
}

#[test]
fn nothing_is_injected_while_the_fill_is_calm() {
    for seed in 0..6 {
        let outcome = run_seed(options(seed, 1_500, 1_500)).unwrap();
        assert!(
            outcome.verdict.passed(),
            "seed {seed}: {:?}",
            outcome.verdict
        );
        assert!(outcome.ops >= 1_500, "seed {seed}");
        assert_eq!(
            outcome.crashes, 0,
            "seed {seed}: a crash during the calm fill"
        );
        assert_eq!(
            outcome.faults, 0,
            "seed {seed}: a fault during the calm fill"
        );
    }
}

#[test]
fn faults_strike_the_filled_state_and_liveness_holds() {
    let mut crashes = 0;
    for seed in 0..6 {
        let mut options = options(seed, 3_000, 2_000);
        options.liveness = true;
        options.heal_from = 2_500;
        let outcome = run_seed(options).unwrap();
        assert!(
            outcome.verdict.passed(),
            "seed {seed}: {:?}",
            outcome.verdict
        );
        crashes += outcome.crashes;
    }
    assert!(crashes > 0, "the faults after the fill struck nothing");
}
