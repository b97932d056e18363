//! State sync (issue 10, defect 4): a follower that was down while the leader took thousands of
//! writes into a state of thousands of keys comes back behind the leader's checkpoint, and must
//! catch up by fetching the checkpoint's blocks. Before state sync, the leader exported the whole
//! state as one payload and resent every chunk of it on each heartbeat; the follower restarted
//! the transfer whenever the leader checkpointed again, and never finished ("replicas converge:
//! not done").

use ziggy_sim::{run_seed, Options, Outcome};

fn lagging(seed: u64, keys: u64, requests: u64, down_until: u64) -> Options {
    Options::lagging(seed, keys, requests, (0, down_until))
}

fn run(options: Options) -> Outcome {
    let seed = options.seed;
    let outcome = run_seed(options).unwrap_or_else(|p| panic!("seed {seed}: {p}"));
    assert!(
        outcome.verdict.passed(),
        "seed {seed}: {:?}",
        outcome.verdict
    );
    outcome
}

#[test]
fn lagging_follower_syncs_a_large_state() {
    for seed in 0..2 {
        let outcome = run(lagging(seed, 5_000, 10_000, 9_000));
        let sync = outcome.sync;
        assert!(
            sync.syncs >= 1,
            "seed {seed}: the follower synced: {sync:?}"
        );
        assert!(sync.fetched > 100, "seed {seed}: a large state: {sync:?}");
        // Blocks go out only in answer to requests, a request is repeated only after a timeout,
        // and nothing that arrived is asked for again: what the leader sends beyond what the
        // follower takes in is what went stale under it (the leader checkpointed and moved on).
        let waste = sync.duplicates + sync.retransmits;
        assert!(waste <= sync.fetched, "seed {seed}: {sync:?}");
        assert!(sync.served <= 3 * sync.fetched, "seed {seed}: {sync:?}");
        assert!(sync.offers > 0);
    }
}

#[test]
fn a_follower_far_behind_catches_up_while_writes_continue() {
    // Down for the first fifth; the leader keeps checkpointing while it syncs, so its target
    // moves (retargets) and each hop fetches what changed.
    let outcome = run(lagging(7, 2_000, 6_000, 1_200));
    let sync = outcome.sync;
    assert!(sync.syncs >= 1, "{sync:?}");
    assert!(sync.fetched > 50, "{sync:?}");
}

/// Cost follows what differs (stage 2, deterministic checkpoints): a follower that misses the
/// last 1% of an appending workload finds the leader's checkpoint in its own grid but for the
/// new tables and the manifest. Before checkpoints were deterministic it fetched every block
/// (each replica laid out its grid in its own way). Seed 1 is the clean case: the follower
/// syncs once (`docs/bench-sync.md`).
#[test]
fn a_follower_1_percent_behind_fetches_about_1_percent_of_the_blocks() {
    let (requests, keys) = (20_000, 10_000);
    let mut options = Options::lagging(1, keys, requests, (requests - requests / 100, requests));
    options.appending = true;
    let sync = run(options).sync;
    assert_eq!(sync.syncs, 1, "{sync:?}");
    let walked = sync.fetched + sync.local;
    assert!(walked > 1_000, "a state of many blocks: {sync:?}");
    assert!(
        sync.fetched * 100 <= 3 * walked,
        "fetched {} of {walked} blocks: {sync:?}",
        sync.fetched
    );
}
