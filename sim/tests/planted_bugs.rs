//! Proof that the checkers can fail: each planted bug is caught within a few hundred seeds, and
//! the same seeds (same fault profile) pass without it.

use ziggy_core::PlantedBug;
use ziggy_sim::{run_seed, Options, Verdict};

const SEEDS: u64 = 300;

fn caught(options: Options) -> bool {
    match run_seed(options) {
        Ok(outcome) => matches!(outcome.verdict, Verdict::Correctness(_)),
        Err(_panic) => true, // an assertion in the core caught it
    }
}

fn first_catch(bug: PlantedBug) -> Option<u64> {
    (0..SEEDS).find(|&seed| caught(Options::for_bug(seed, bug)))
}

fn assert_caught(bug: PlantedBug) {
    std::panic::set_hook(Box::new(|_| {}));
    let found = first_catch(bug);
    let _ = std::panic::take_hook();
    assert!(found.is_some(), "{bug:?} went unnoticed for {SEEDS} seeds");
}

#[test]
fn ack_before_durable_is_caught() {
    assert_caught(PlantedBug::AckBeforeDurable);
}

#[test]
fn commit_without_quorum_is_caught() {
    assert_caught(PlantedBug::CommitWithoutQuorum);
}

#[test]
fn vote_despite_faulty_log_is_caught() {
    assert_caught(PlantedBug::VoteDespiteFaulty);
}

#[test]
fn apply_twice_is_caught() {
    assert_caught(PlantedBug::ApplyTwice);
}

#[test]
fn stale_read_from_a_deposed_leader_is_caught() {
    assert_caught(PlantedBug::LocalReads);
}

#[test]
fn a_retry_from_an_evicted_session_applied_again_is_caught() {
    assert_caught(PlantedBug::EvictedSessionReplay);
}

#[test]
fn stale_truncate_is_caught() {
    assert_caught(PlantedBug::StaleTruncate);
}

#[test]
fn a_state_sync_without_its_superblock_flag_is_caught() {
    assert_caught(PlantedBug::SyncWithoutFlag);
}

#[test]
fn torn_anywhere_is_caught() {
    assert_caught(PlantedBug::TornAnywhere);
}

#[test]
fn free_on_durable_is_caught() {
    assert_caught(PlantedBug::FreeOnDurable);
}

#[test]
fn the_hunting_profiles_pass_without_the_bugs() {
    for bug in [
        PlantedBug::VoteDespiteFaulty,
        PlantedBug::LocalReads,
        PlantedBug::StaleTruncate,
        PlantedBug::TornAnywhere,
    ] {
        for seed in 0..40u64 {
            let mut options = Options::for_bug(seed, bug);
            options.planted_bug = None;
            let outcome = run_seed(options).unwrap_or_else(|p| panic!("{bug:?} seed {seed}: {p}"));
            assert!(
                outcome.verdict.passed(),
                "{bug:?} profile, seed {seed}: {:?}",
                outcome.verdict
            );
        }
    }
}
