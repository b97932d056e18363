//! `ziggy backup` of a live node under a write load, and `ziggy restore`: the restored node
//! holds exactly the state the node had at the backup's point (every write acknowledged before
//! the backup began, a prefix of the writes after it, nothing torn), and a damaged backup is
//! refused with the bad block named.

use redis::Commands;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use ziggy_core::Config;
use ziggy_io::backup::{backup, restore, BackupError, BackupOptions};
use ziggy_io::transfer::export;

mod common;
use common::Server;

fn addr(server: &Server) -> String {
    server.running.as_ref().unwrap().addr.to_string()
}

/// Every key of the node, as `export` writes them: key → its line.
fn keys(server: &Server) -> BTreeMap<String, String> {
    let mut out = Vec::new();
    export(&addr(server), &mut out, |_| {}).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            (value["key"].as_str().unwrap().to_string(), line.to_string())
        })
        .collect()
}

/// A state of several blocks' worth of every family.
fn fill(c: &mut redis::Connection) {
    for chunk in 0..20 {
        let pairs: Vec<(String, String)> = (0..500)
            .map(|i| {
                (
                    format!("s:{chunk}:{i}"),
                    format!("value {i} {}", "x".repeat(40)),
                )
            })
            .collect();
        let _: () = c.mset(&pairs).unwrap();
    }
    let fields: Vec<(String, String)> = (0..1_000)
        .map(|i| (format!("f{i}"), format!("{i}")))
        .collect();
    let _: () = c.hset_multiple("hash", &fields).unwrap();
    let members: Vec<String> = (0..3_000).map(|i| format!("m{i}")).collect();
    let _: i64 = c.sadd("set", &members).unwrap();
    let scored: Vec<(f64, String)> = (0..2_000)
        .map(|i| (i as f64 / 3.0, format!("z{i}")))
        .collect();
    let _: i64 = c.zadd_multiple("zset", &scored).unwrap();
    let _: i64 = c.rpush("list", &members[..500]).unwrap();
    let _: () = redis::cmd("JSON.SET")
        .arg("doc")
        .arg("$")
        .arg(r#"{"a":[1,true,null],"b":{"c":"d"}}"#)
        .query(c)
        .unwrap();
}

#[test]
fn a_backup_under_writes_restores_to_the_state_at_its_point() {
    let dir = tempfile::tempdir().unwrap();
    let source = Server::start(&dir.path().join("source.data"));
    let mut c = source.connect();
    fill(&mut c);
    let before = keys(&source);

    // A writer: write i sets seq:i and counter to i + 1 in one transaction, one after another.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, mut c) = (acked.clone(), stop.clone(), source.connect());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _: () = redis::pipe()
                    .atomic()
                    .set(format!("seq:{i}"), i)
                    .set("counter", i + 1)
                    .query(&mut c)
                    .unwrap();
                i += 1;
                acked.store(i, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 200 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let acked_before = acked.load(Ordering::SeqCst);
    let file = dir.path().join("backup.data");
    // One block a request, paced, so that the node checkpoints, flushes and compacts many times
    // while the backup copies: the blocks of the checkpoint being copied must stay whole.
    let options = BackupOptions {
        blocks_per_request: 1,
        pause: std::time::Duration::from_millis(40),
    };
    let summary = backup(
        &addr(&source),
        &file,
        &Config::production(),
        options,
        |_| {},
    )
    .unwrap();
    eprintln!(
        "{summary:?}, {} writes during the backup",
        acked.load(Ordering::SeqCst) - acked_before
    );
    let acked_during = acked.load(Ordering::SeqCst) - acked_before;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(summary.fetched > 10, "{summary:?}");
    assert_eq!(
        summary.retargets, 0,
        "the node held the checkpoint's blocks for the whole copy: {summary:?}"
    );
    assert!(
        acked_during > 0,
        "the node kept serving writes during the backup"
    );

    let restored_path = dir.path().join("restored.data");
    restore(&file, &restored_path, |_| {}).unwrap();
    let restored = Server::start(&restored_path);
    let mut r = restored.connect();
    let counter: u64 = r.get("counter").unwrap();
    assert!(
        counter >= acked_before,
        "every write acknowledged before the backup is in it ({counter} < {acked_before})"
    );
    let after = keys(&restored);
    let seq: Vec<u64> = after
        .keys()
        .filter_map(|k| k.strip_prefix("seq:"))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        seq.len() as u64,
        counter,
        "the writes form a prefix: none torn"
    );
    assert!(seq.iter().all(|&n| n < counter));
    let rest: BTreeMap<_, _> = after
        .into_iter()
        .filter(|(k, _)| !k.starts_with("seq:") && k != "counter")
        .collect();
    assert_eq!(rest, before, "the rest of the keyspace is the node's");
    // The restored node takes writes of its own.
    let _: () = r.set("after-restore", "yes").unwrap();
    assert_eq!(r.get::<_, String>("after-restore").unwrap(), "yes");
    restored.stop();
    source.stop();
}

#[test]
fn a_damaged_backup_is_refused_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let source = Server::start(&dir.path().join("source.data"));
    fill(&mut source.connect());
    let file = dir.path().join("backup.data");
    let config = Config::production();
    backup(
        &addr(&source),
        &file,
        &config,
        BackupOptions::default(),
        |_| {},
    )
    .unwrap();
    assert!(matches!(
        backup(
            &addr(&source),
            &file,
            &config,
            BackupOptions::default(),
            |_| {}
        ),
        Err(BackupError::Exists(_))
    ));
    let taken = dir.path().join("taken.data");
    std::fs::write(&taken, b"mine").unwrap();
    assert!(matches!(
        restore(&file, &taken, |_| {}),
        Err(BackupError::Exists(_))
    ));
    assert_eq!(std::fs::read(&taken).unwrap(), b"mine");

    // Flip a byte in the middle of the last grid block (an LSM block the backup copied).
    let mut bytes = std::fs::read(&file).unwrap();
    let block = config.grid_block_size as usize;
    let at = bytes.len() - block + block / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let target = dir.path().join("restored.data");
    match restore(&file, &target, |_| {}) {
        Err(BackupError::Damaged(lines)) => {
            assert!(lines.iter().any(|l| l.contains("block")), "{lines:?}")
        }
        other => panic!("a damaged backup restored: {other:?}"),
    }
    assert!(!target.exists(), "nothing is left behind");
    source.stop();
}
