//! The embedded database under real `kill -9` (issue 10, defect 5): a child process writes, with
//! flushes, compactions, checkpoints and WAL wraps, printing `A <op>` after each acknowledged
//! operation; the parent kills it at a random moment, reopens the file, and requires the state to
//! be exactly the acknowledged operations (plus, possibly, the one in flight).
//!
//! The child is this test binary, re-executed with `ZIGGY_CRASH_CHILD=path,seed,round` (without
//! it, `crash_child` returns at once). `ZIGGY_CRASH_ROUNDS` sets the rounds (default 200).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use ziggy_io::db::{Db, DbOptions};

const KEYS: u64 = 2_000;
const VALUE: usize = 100;

fn options() -> DbOptions {
    DbOptions {
        wal_bytes: 4 << 20,
        memtable_bytes: 64 << 10,
        cache_bytes: 1 << 20,
        ..DbOptions::default()
    }
}

/// splitmix64: the operations of a round are a function of (seed, round) alone.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Flush,
    Checkpoint,
}

fn ops(seed: u64, round: u64) -> impl Iterator<Item = Op> {
    let mut prng = Prng(seed ^ round.wrapping_mul(0x2545_F491_4F6C_DD1D));
    std::iter::repeat_with(move || {
        let roll = prng.next() % 100;
        let key = format!("key{:05}", prng.next() % KEYS).into_bytes();
        match roll {
            0 => Op::Flush,
            1 => Op::Checkpoint,
            2..=9 => Op::Delete(key),
            _ => {
                // Unique bytes: a value can be found in the file by its contents.
                let value = (0..VALUE).map(|_| prng.next() as u8).collect();
                Op::Put(key, value)
            }
        }
    })
}

fn apply(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &Op) {
    match op {
        Op::Put(key, value) => {
            model.insert(key.clone(), value.clone());
        }
        Op::Delete(key) => {
            model.remove(key);
        }
        Op::Flush | Op::Checkpoint => {}
    }
}

/// Run by the child process only: writes until killed.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var("ZIGGY_CRASH_CHILD") else {
        return; // the parent re-executes this test binary with the variable set
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let (path, seed, round) = (
        Path::new(parts[0]),
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
    );
    let mut db = Db::open(path, options()).expect("open");
    let mut out = std::io::stdout().lock();
    for (n, op) in ops(seed, round).enumerate() {
        let result = match &op {
            Op::Put(key, value) => db.put(key, value),
            Op::Delete(key) => db.delete(key),
            Op::Flush => db.flush(),
            Op::Checkpoint => db.checkpoint(),
        };
        match result {
            Ok(()) => writeln!(out, "A {n}").unwrap(),
            Err(e) => {
                writeln!(out, "E {n} {e}").unwrap();
                out.flush().unwrap();
                std::process::exit(2);
            }
        }
        out.flush().unwrap();
    }
}

/// Starts a child on `path`, kills it after `delay`, and returns the last acknowledged op.
fn run_child(path: &Path, seed: u64, round: u64, delay: Duration) -> Option<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(
            "ZIGGY_CRASH_CHILD",
            format!("{},{seed},{round}", path.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("A ") {
                last = Some(n.parse::<u64>().unwrap());
            } else if line.starts_with("E ") {
                panic!("round {round}: the child failed: {line}");
            }
        }
        last
    });
    std::thread::sleep(delay);
    child.kill().expect("kill -9");
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "round {round}: the child died of {status:?}, not of the kill (SIGBUS is an I/O error)"
    );
    reader.join().expect("reader")
}

fn contents(db: &mut Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.scan(b"", None, usize::MAX, false)
        .expect("scan")
        .into_iter()
        .collect()
}

#[test]
fn kill_nine_loses_no_acknowledged_write() {
    if std::env::var("ZIGGY_CRASH_CHILD").is_ok() {
        return;
    }
    let rounds: u64 = std::env::var("ZIGGY_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let seed = 0x5eed_d00d;
    let dir = tempfile::tempdir().unwrap();
    let mut timing = Prng(seed);
    let mut model = BTreeMap::new();
    let mut path = dir.path().join("crash-0.zdb");
    let mut acknowledged = 0;
    for round in 0..rounds {
        if round % 20 == 0 {
            // Every 20th round starts on a fresh file; the others continue the last one. The
            // parent creates it, so that every kill lands in the child's writes.
            path = dir.path().join(format!("crash-{round}.zdb"));
            Db::create(&path, options())
                .expect("create")
                .close()
                .expect("close");
            model.clear();
        }
        let delay = Duration::from_millis(5 + timing.next() % 300);
        let last = run_child(&path, seed, round, delay);
        let mut expected = model.clone();
        let mut ops = ops(seed, round);
        if let Some(last) = last {
            for op in ops.by_ref().take(last as usize + 1) {
                apply(&mut expected, &op);
            }
            acknowledged += last + 1;
        }
        let mut with_next = expected.clone();
        apply(&mut with_next, &ops.next().unwrap());
        let mut db = Db::open(&path, options())
            .unwrap_or_else(|e| panic!("round {round}: reopen after kill -9: {e}"));
        let found = contents(&mut db);
        assert!(
            found == expected || found == with_next,
            "round {round}: after {last:?} acknowledged operations the state differs: \
             {} keys found, {} expected",
            found.len(),
            expected.len()
        );
        drop(db);
        model = found;
    }
    assert!(
        acknowledged > rounds * 10,
        "{acknowledged} operations acknowledged"
    );
}

/// Defect 5 of issue 10, still open: replay stops at the first record that fails its checksum and
/// reports success, so a flipped byte in an acknowledged record silently drops it and every later
/// one. This test shows it (it fails today; run it with `--ignored`); the fix is the embedded
/// database on the core's WAL and recovery (`docs/design/db-durability-plan.md`).
#[test]
#[ignore = "issue 10 defect 5: the embedded database's replay truncates at a corrupt record"]
fn a_flipped_byte_in_an_acknowledged_record_is_reported() {
    if std::env::var("ZIGGY_CRASH_CHILD").is_ok() {
        return;
    }
    let seed = 0xf11b_b17e;
    let dir = tempfile::tempdir().unwrap();
    let mut prng = Prng(seed);
    let (mut tried, mut silent) = (0, Vec::new());
    for round in 0..40 {
        let path = dir.path().join(format!("flip-{round}.zdb"));
        Db::create(&path, options())
            .expect("create")
            .close()
            .expect("close");
        let delay = Duration::from_millis(50 + prng.next() % 250);
        let Some(last) = run_child(&path, seed, round, delay) else {
            continue;
        };
        // The acknowledged puts whose value is still the key's latest, newest first.
        let mut latest = BTreeMap::new();
        for (n, op) in ops(seed, round).take(last as usize + 1).enumerate() {
            match op {
                Op::Put(key, value) => latest.insert(key, Some((n, value))),
                Op::Delete(key) => latest.insert(key, None),
                _ => None,
            };
        }
        let mut values: Vec<(usize, Vec<u8>)> = latest.into_values().flatten().collect();
        values.sort_unstable_by_key(|(n, _)| std::cmp::Reverse(*n));
        let values: Vec<Vec<u8>> = values.into_iter().map(|(_, v)| v).collect();
        let mut bytes = std::fs::read(&path).unwrap();
        // A value found exactly once in the file, inside the WAL ring (after the two 4 KiB
        // superblocks), is a record only the WAL holds.
        let wal = 8192..8192 + options().wal_bytes as usize;
        let Some((at, value)) = values.iter().take(5).find_map(|v| {
            let mut hits = bytes.windows(VALUE).enumerate().filter(|(_, w)| w == v);
            let first = hits.next()?.0;
            (hits.next().is_none() && wal.contains(&first)).then_some((first, v.clone()))
        }) else {
            continue;
        };
        tried += 1;
        bytes[at + VALUE / 2] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(mut db) = Db::open(&path, options()) {
            if let Ok(found) = db.scan(b"", None, usize::MAX, false) {
                let lost = !found.iter().any(|(_, v)| *v == value);
                silent.push((round, lost));
            }
        }
    }
    assert!(tried > 0, "no round had a value only the WAL holds");
    assert!(
        silent.is_empty(),
        "{} of {tried} opens succeeded after an acknowledged record was damaged \
         (round, record lost): {silent:?}",
        silent.len()
    );
}
