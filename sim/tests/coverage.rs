//! The simulator reaches what it must check: a fixed batch of seeds hits every coverage mark
//! (elections, truncations, every group of recovery decisions, repairs, session evictions,
//! checkpoints, WAL wraps, state syncs, flushes, compactions into level 1, 2 and deeper). A mark
//! no seed hits is a branch no checker sees.

use ziggy_core::marks::{Mark, Marks};
use ziggy_sim::{run_seed, Options, WiderFaults};

/// Reads one count of the wider fault model from a run's outcome.
type Count = fn(&WiderFaults) -> u64;

/// Seeds 0..SEEDS (the batch `vopr --seed 0 --count 300` runs).
const SEEDS: u64 = 300;

#[test]
fn a_fixed_batch_hits_every_mark() {
    let mut seeds_hitting = Marks::default();
    let mut wider = Vec::new();
    for seed in 0..SEEDS {
        let outcome = run_seed(Options::from_seed(seed)).unwrap_or_else(|p| panic!("{seed}: {p}"));
        assert!(
            outcome.verdict.passed(),
            "seed {seed}: {:?}",
            outcome.verdict
        );
        wider.push(outcome.wider);
        for (mark, n) in outcome.marks.iter() {
            if n > 0 {
                seeds_hitting.hit(mark);
            }
        }
    }
    let unhit: Vec<&str> = Mark::ALL
        .iter()
        .filter(|&&m| seeds_hitting.count(m) == 0 && !RARE.iter().any(|(r, _)| *r == m))
        .map(|m| m.name())
        .collect();
    assert!(unhit.is_empty(), "no seed of 0..{SEEDS} hit {unhit:?}");
    // Every fault of the wider model strikes somewhere in the batch.
    let reached = |count: Count| wider.iter().filter(|w| count(w) > 0).count();
    let faults: [(&str, Count); 9] = [
        ("write failures", |w| w.write_failures),
        ("write errors", |w| w.write_errors),
        ("misdirected reads", |w| w.misdirected_reads),
        ("stalls", |w| w.stalls),
        ("delay spikes", |w| w.delay_spikes),
        ("corrupted packets", |w| w.corrupted_packets),
        ("client cuts", |w| w.client_cuts),
        ("requests given up", |w| w.given_up),
        ("pauses", |w| w.pauses),
    ];
    let unreached: Vec<&str> = faults
        .iter()
        .filter(|(_, count)| reached(*count) == 0)
        .map(|(name, _)| *name)
        .collect();
    assert!(
        unreached.is_empty(),
        "no seed of 0..{SEEDS} had {unreached:?}"
    );
}

/// Marks too rare for the fixed batch (a few seeds in a thousand), with seeds that hit them
/// (`vopr --count N` names the seeds of marks this rare).
/// - `full_ring_noop_slot`: 4 seeds in 3,000 (seed 35 is inside the batch, by luck); on purpose
///   in `sim/tests/full_ring.rs`.
/// - `hole_inquiry_cut`: 1 seed in 2,000 since damaged redundant headers count against the
///   fault budget (stop 19; before, seeds 17 and 69 of the batch hit it, with holes on more
///   replicas than the budget allows); on purpose in `sim/tests/hole_inquiry.rs`.
/// - `checkpoint_off_boundary`: 1 seed in 1,000 (the escape hatches of boundary checkpoints:
///   a candidate with no slot for its no-op, a peer asking for a newer checkpoint). Seed 476 hit
///   it until the LSM's row cache (stop 23): fewer grid reads draw the simulated disk's rot
///   differently, so runs with rotting grids took other paths; 1465 hits it now.
/// - `sync_older_than_checkpoint`: found once in CI's fresh batches (stop 20): a leader loses its
///   state while a checkpoint of its own is in flight, and a sync finishes after it is durable.
const RARE: [(Mark, &[u64]); 4] = [
    (Mark::FullRingNoopSlot, &[35, 1861]),
    (Mark::HoleInquiryCut, &[1808]),
    (Mark::CheckpointOffBoundary, &[1465]),
    (Mark::SyncOlderThanCheckpoint, &[1012821877, 2629]),
];

#[test]
fn the_rare_marks_are_hit_by_their_seeds() {
    for (mark, seeds) in RARE {
        for &seed in seeds {
            let outcome =
                run_seed(Options::from_seed(seed)).unwrap_or_else(|p| panic!("{seed}: {p}"));
            assert!(
                outcome.verdict.passed(),
                "seed {seed}: {:?}",
                outcome.verdict
            );
            assert!(
                outcome.marks.count(mark) > 0,
                "seed {seed} no longer hits {}",
                mark.name()
            );
        }
    }
}
