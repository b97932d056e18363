//! `ziggy serve` under real `kill -9`: clients write with acknowledgements, the server process is
//! killed at a random moment, restarted on the same data file, and every acknowledged write must
//! be there. The test preset's tiny WAL ring makes checkpoints and ring wraps happen every few
//! dozen writes, so kills land in them too.
//!
//! `ZIGGY_SERVE_CRASH_ROUNDS` sets the rounds (default 100).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: u64 = 4;

struct Server {
    child: Child,
    addr: SocketAddr,
}

/// Starts `ziggy serve` on `data` on a free port and waits until it listens.
fn start(data: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ziggy"))
        .args([
            "serve",
            "--preset",
            "test",
            "--port",
            "0",
            "--log-json",
            "--data",
        ])
        .arg(data)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ziggy serve");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        if let Some(at) = line.find("\"addr\":\"") {
            let rest = &line[at + 8..];
            break rest[..rest.find('"').unwrap()].parse().unwrap();
        }
    };
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

/// What one client had acknowledged when the server died: keys `c{c}:0..written` hold their
/// index, and its counter reached `counted`.
#[derive(Clone, Copy, Default)]
struct Acked {
    written: u64,
    counted: i64,
}

/// Writes until the connection fails: a SET of the next key, then an INCR of the counter.
fn write_until_failure(addr: SocketAddr, c: u64, mut acked: Acked, stop: Arc<AtomicBool>) -> Acked {
    let Ok(client) = redis::Client::open(format!("redis://{addr}/")) else {
        return acked;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return acked;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    while !stop.load(Ordering::Relaxed) {
        let key = format!("c{c}:{}", acked.written);
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(acked.written)
            .query(&mut conn);
        if set.is_err() {
            break;
        }
        acked.written += 1;
        match redis::cmd("INCR")
            .arg(format!("ctr{c}"))
            .query::<i64>(&mut conn)
        {
            Ok(n) => acked.counted = n,
            Err(_) => break,
        }
    }
    acked
}

fn check(addr: SocketAddr, acked: &[Acked], round: u64) {
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let mut conn = client.get_connection().unwrap();
    for (c, a) in acked.iter().enumerate() {
        let keys: Vec<String> = (0..a.written).map(|n| format!("c{c}:{n}")).collect();
        for (chunk_at, chunk) in keys.chunks(500).enumerate() {
            let values: Vec<Option<u64>> = redis::cmd("MGET").arg(chunk).query(&mut conn).unwrap();
            for (i, value) in values.iter().enumerate() {
                let n = (chunk_at * 500 + i) as u64;
                assert_eq!(
                    *value,
                    Some(n),
                    "round {round}: client {c}'s acknowledged write {n} is lost"
                );
            }
        }
        let counter: Option<i64> = redis::cmd("GET")
            .arg(format!("ctr{c}"))
            .query(&mut conn)
            .unwrap();
        let counter = counter.unwrap_or(0);
        // The INCR in flight at the kill may or may not have applied: never less, at most one more.
        assert!(
            counter == a.counted || counter == a.counted + 1,
            "round {round}: client {c}'s counter is {counter}, acknowledged {}",
            a.counted
        );
    }
}

#[test]
fn kill_nine_loses_no_acknowledged_write() {
    let rounds: u64 = std::env::var("ZIGGY_SERVE_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ziggy.data");
    let mut acked = vec![Acked::default(); CLIENTS as usize];
    let mut seed: u64 = 0x5eed;
    let started = Instant::now();
    for round in 0..rounds {
        let mut server = start(&data);
        if round > 0 {
            check(server.addr, &acked, round);
            // The counters may have taken the in-flight INCR: start from what is there.
            let client = redis::Client::open(format!("redis://{}/", server.addr)).unwrap();
            let mut conn = client.get_connection().unwrap();
            for (c, a) in acked.iter_mut().enumerate() {
                let n: Option<i64> = redis::cmd("GET")
                    .arg(format!("ctr{c}"))
                    .query(&mut conn)
                    .unwrap();
                a.counted = n.unwrap_or(0);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (addr, from, stop) = (server.addr, acked[c as usize], stop.clone());
                std::thread::spawn(move || write_until_failure(addr, c, from, stop))
            })
            .collect();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(20 + (seed >> 33) % 400);
        std::thread::sleep(delay);
        server.child.kill().expect("kill -9");
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for (c, writer) in writers.into_iter().enumerate() {
            acked[c] = writer.join().expect("writer");
        }
    }
    let mut server = start(&data);
    check(server.addr, &acked, rounds);
    let total: u64 = acked.iter().map(|a| a.written).sum();
    eprintln!(
        "{rounds} kills, {total} acknowledged writes checked, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        total > rounds,
        "the clients wrote between the kills: {total}"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
