//! The embedded database on a file that cannot grow (issue 10, "`ENOSPC` is an error value and
//! loses nothing"): a child process writes new keys under a file-size limit (`ulimit -f`, which
//! fails the grid's growth with `EFBIG` the way a full disk fails it with `ENOSPC`) until a call
//! fails. The failure must be an error value naming the lack of space (not a signal), every
//! later call must fail until reopen, and a reopen without the limit must hold every
//! acknowledged write.
//!
//! The child is this test binary, re-executed with `ZIGGY_FULL_CHILD=path,limit` (without it,
//! `full_child` returns at once).

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use ziggy_io::db::{Db, DbOptions};

/// More writes than the limit leaves room for: a child that never fails is a test failure.
const WRITES_MAX: u64 = 200_000;

fn options() -> DbOptions {
    DbOptions {
        wal_bytes: 4 << 20,
        memtable_bytes: 128 << 10,
        cache_bytes: 1 << 20,
        ..DbOptions::default()
    }
}

fn key(n: u64) -> Vec<u8> {
    format!("key{n:08}").into_bytes()
}

/// 500 bytes that only write `n` holds.
fn value(n: u64) -> Vec<u8> {
    (0..500u64)
        .map(|i| (n.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8)
        .collect()
}

/// Run by the child process only: writes new keys until a call fails, then tries once more.
#[test]
fn full_child() {
    let Ok(spec) = std::env::var("ZIGGY_FULL_CHILD") else {
        return; // the parent re-executes this test binary with the variable set
    };
    let (path, limit) = spec.split_once(',').unwrap();
    let limit: u64 = limit.parse().unwrap();
    // SAFETY: plain libc calls on this process, before any file is opened.
    unsafe {
        // Past the limit a write fails with EFBIG instead of killing the process.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit), 0);
    }
    let mut db = Db::open(Path::new(path), options()).expect("open");
    let mut out = std::io::stdout().lock();
    for n in 0..WRITES_MAX {
        if let Err(e) = db.put(&key(n), &value(n)) {
            writeln!(out, "E {n} {e}").unwrap();
            let again = db.put(b"after", b"the failure");
            writeln!(out, "P {again:?}").unwrap();
            return;
        }
        writeln!(out, "A {n}").unwrap();
    }
    writeln!(out, "DONE").unwrap();
}

#[test]
fn a_file_that_cannot_grow_fails_a_write_cleanly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Db::create(&path, options()).unwrap());
    // Room for a few MiB of tables past what the new file holds.
    let limit = std::fs::metadata(&path).unwrap().len() + (6 << 20);

    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "full_child", "--nocapture", "--test-threads=1"])
        .env("ZIGGY_FULL_CHILD", format!("{},{limit}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .expect("run the child");
    assert!(
        output.status.success(),
        "the child died of {:?} (a signal is not an error value)",
        output.status
    );
    let mut acknowledged = 0;
    let (mut failure, mut after) = (None, None);
    for line in BufReader::new(&output.stdout[..]).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("A ") {
            acknowledged = n.parse::<u64>().unwrap() + 1;
        } else if let Some(e) = line.strip_prefix("E ") {
            failure = Some(e.to_string());
        } else if let Some(p) = line.strip_prefix("P ") {
            after = Some(p.to_string());
        } else if line == "DONE" {
            panic!("{WRITES_MAX} writes fit under a limit of {limit} bytes");
        }
    }
    let failure = failure.expect("a write failed");
    eprintln!("{acknowledged} writes acknowledged, then write {failure}; then {after:?}");
    assert!(
        failure.contains("no space left"),
        "the error names the lack of space: {failure}"
    );
    let after = after.expect("the child tried again");
    assert!(
        after.starts_with("Err(Poisoned"),
        "every call after the failure fails until reopen: {after}"
    );
    assert!(
        acknowledged > 1_000,
        "the limit left room for writes: {acknowledged}"
    );

    let mut db = Db::open(&path, options()).expect("reopen without the limit");
    for n in 0..acknowledged {
        assert_eq!(
            db.get(&key(n)).unwrap(),
            Some(value(n)),
            "acknowledged write {n} of {acknowledged} (failed: {failure})"
        );
    }
    assert_eq!(db.get(b"after").unwrap(), None, "refused, never applied");
    // With room again, the database takes writes.
    db.put(b"after", b"room again").unwrap();
    db.checkpoint().unwrap();
    assert_eq!(db.get(b"after").unwrap(), Some(b"room again".to_vec()));
}
