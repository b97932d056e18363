//! A replica that comes back with a replaced data file (wiped and reformatted, a swapped disk) is
//! refused by its peers — which know every member's data file from the cluster's formation — so its
//! votes and acknowledgements never count again. The replacement strikes on the very first tick
//! (`Ppm::ALWAYS`), before the replica ever spoke: there is no window.

use ziggy_sim::prng::Ppm;
use ziggy_sim::{run_seed, Options};

#[test]
fn a_replaced_replica_is_refused_and_never_leads() {
    let mut refused = 0;
    for seed in 0..10u64 {
        let mut options = Options::fault_free(seed, 3);
        options.requests = 400;
        options.replace = Ppm::ALWAYS; // on the first tick
        options.replaceable = 1;
        let outcome = run_seed(options).unwrap_or_else(|p| panic!("seed {seed}: {p}"));
        assert!(
            outcome.verdict.passed(),
            "seed {seed}: {:?}",
            outcome.verdict
        );
        assert_eq!(outcome.replaced, 1, "seed {seed}: one data file replaced");
        refused += outcome.refused_replaced;
    }
    assert!(refused > 0, "peers refused the replaced replicas' messages");
}
