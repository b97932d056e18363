//! The compaction debt operators watch (`ziggy_compaction_debt_bytes`): it grows while writes
//! outrun compaction, and compaction that catches up pays it back to nothing.

use ziggy_core::lsm::{Engine, MemoryStore, Options, Write};

#[test]
fn debt_grows_while_compaction_lags_and_is_paid_back() {
    let options = Options {
        memtable_bytes: 16 << 10,
        table_blocks: 8,
        l0_trigger: 2,
        l0_slowdown: 64,
        l0_stop: 128,
        l1_bytes: 64 << 10,
        level_ratio: 4,
        levels: 5,
        pace: 0, // writes pay no compaction: it all waits for `work`
        ..Options::small()
    };
    let store = MemoryStore::new(4096, 1024, 1 << 22);
    let mut engine = Engine::open(store, options, None).unwrap();
    assert_eq!(engine.compaction_debt(), 0, "an empty tree owes nothing");
    let value = [5u8; 100];
    for sequence in 1..=4_000u64 {
        let key = format!("key{:06}", sequence.wrapping_mul(7919) % 4_000).into_bytes();
        let writes = [Write {
            key: &key,
            value: Some(&value),
        }];
        engine.apply(sequence, &writes).unwrap();
    }
    let owed = engine.compaction_debt();
    assert!(owed >= engine.level_bytes(0), "level 0 is owed whole");
    assert!(
        owed > 64 << 10,
        "with no compaction, flushes pile up in level 0: owed {owed}, shape {:?}",
        engine.shape()
    );
    while engine.work(1 << 20).unwrap() {}
    assert_eq!(
        engine.compaction_debt(),
        0,
        "caught up: shape {:?}",
        engine.shape()
    );
}
