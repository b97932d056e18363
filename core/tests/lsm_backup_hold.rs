//! While a backup holds frees (`Engine::hold_frees`), the checkpoint it copies stays whole in
//! the grid however many checkpoints, flushes and compactions follow; without the hold, those
//! blocks are reused. After `release_held` they are reused again.

use ziggy_core::lsm::{BlockStore, Engine, MemoryStore, Options, Write};

fn options() -> Options {
    Options {
        memtable_bytes: 8 << 10,
        table_blocks: 4,
        l0_trigger: 2,
        l1_bytes: 32 << 10,
        level_ratio: 4,
        levels: 4,
        ..Options::small()
    }
}

fn put(engine: &mut Engine<MemoryStore>, sequence: u64, round: u64) {
    let key = format!("key{:05}", sequence.wrapping_mul(7919) % 2_000).into_bytes();
    let value = format!("round {round} {}", "v".repeat(60)).into_bytes();
    let writes = [Write {
        key: &key,
        value: Some(&value),
    }];
    engine.apply(sequence, &writes).unwrap();
}

/// Fills a tree, checkpoints it, then rewrites every key over `rounds` more checkpoints; returns
/// whether the first checkpoint still reads back whole, and the pairs it should hold.
fn first_checkpoint_survives(hold: bool) -> bool {
    let store = MemoryStore::new(4096, 1024, 1 << 22);
    let mut engine = Engine::open(store, options(), None).unwrap();
    engine.make_deterministic().unwrap();
    let mut sequence = 0;
    for _ in 0..2_000 {
        sequence += 1;
        put(&mut engine, sequence, 0);
    }
    let first = engine.checkpoint().unwrap();
    engine.checkpoint_durable();
    let expected = engine.scan(&[], None, sequence, usize::MAX, false).unwrap();
    if hold {
        engine.hold_frees();
    }
    for round in 1..=6 {
        for _ in 0..2_000 {
            sequence += 1;
            put(&mut engine, sequence, round);
        }
        engine.checkpoint().unwrap();
        engine.checkpoint_durable();
    }
    if hold {
        assert!(
            engine.held().unwrap() > 0,
            "rewrites freed blocks, all held"
        );
    }
    // Open the first checkpoint again (as a backup's copy of its blocks would read them).
    match engine.reopen(Some(first)) {
        Ok(()) => {}
        Err(_) => return false,
    }
    match engine.scan(&[], None, engine.sequence(), usize::MAX, false) {
        Ok(pairs) => pairs == expected,
        Err(_) => false,
    }
}

#[test]
fn a_held_checkpoint_stays_whole_and_an_unheld_one_is_reused() {
    assert!(first_checkpoint_survives(true));
    assert!(
        !first_checkpoint_survives(false),
        "without the hold, later checkpoints reuse the first one's blocks"
    );
}

#[test]
fn released_blocks_are_reused() {
    let store = MemoryStore::new(4096, 1024, 1 << 22);
    let mut engine = Engine::open(store, options(), None).unwrap();
    engine.make_deterministic().unwrap();
    let mut sequence = 0;
    let mut grow = |engine: &mut Engine<MemoryStore>, rounds: u64| {
        for round in 0..rounds {
            for _ in 0..2_000 {
                sequence += 1;
                put(engine, sequence, round);
            }
            engine.checkpoint().unwrap();
            engine.checkpoint_durable();
        }
    };
    grow(&mut engine, 3);
    engine.hold_frees();
    grow(&mut engine, 4);
    let held = engine.held().unwrap();
    let grown = engine.store_mut().block_count();
    engine.release_held();
    assert_eq!(engine.held(), None);
    grow(&mut engine, 4);
    assert!(
        engine.store_mut().block_count() <= grown,
        "the {held} blocks released were reused before the grid grew"
    );
}
