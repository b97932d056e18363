//! A three-replica `ziggy serve` cluster on loopback, its leader killed (`kill -9`) again and
//! again under write load.
//!
//! - Writers stay connected to the surviving replicas through every failover: their commands wait
//!   for the new leader, and they never reconnect.
//! - No acknowledged write is lost: every key acknowledged is read back at the end, through every
//!   replica.
//! - The pause of each failover is measured: from the kill to the first acknowledgement of a write
//!   sent after it. Median and worst are printed (`docs/design/server-plan.md` records them).
//!
//! `ZIGGY_CLUSTER_KILLS` sets how many leaders are killed (default 20).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPLICAS: usize = 3;
/// Writers per replica, each on one connection.
const WRITERS: usize = 2;

/// Ports nobody listens on now (the kernel hands out free ones; they are released at once).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

struct Cluster {
    dir: PathBuf,
    peers: String,
    ports: Vec<u16>,
    http: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl Cluster {
    fn new(dir: &Path) -> Cluster {
        let ports = free_ports(3 * REPLICAS);
        let peers = ports[2 * REPLICAS..]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            peers,
            ports: ports[..REPLICAS].to_vec(),
            http: ports[REPLICAS..2 * REPLICAS].to_vec(),
            children: (0..REPLICAS).map(|_| None).collect(),
        };
        for replica in 0..REPLICAS {
            cluster.start(replica);
        }
        cluster
    }

    /// Starts replica `i` (formatting its data file on first start).
    fn start(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.join(format!("r{i}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ziggy"))
            .arg("serve")
            .arg("--data")
            .arg(self.dir.join(format!("r{i}.data")))
            .args(["--port", &self.ports[i].to_string()])
            .args(["--http-port", &self.http[i].to_string()])
            .args(["--replica", &i.to_string(), "--cluster-id", "77"])
            .args(["--addresses", &self.peers])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ziggy serve");
        self.children[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        let mut child = self.children[i].take().expect("running");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }

    /// `/status` of replica `i`, if it answers.
    fn status(&self, i: usize) -> Option<String> {
        let (code, body) = http_get(self.http[i], "/status")?;
        (code == 200).then_some(body)
    }

    fn healthy(&self, i: usize) -> bool {
        http_get(self.http[i], "/health").is_some_and(|(code, _)| code == 200)
    }

    /// The leader every running replica agrees on, once they do.
    fn leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let seen: Vec<Option<u64>> = (0..REPLICAS)
                .filter(|&i| self.children[i].is_some())
                .map(|i| self.status(i).and_then(|s| field(&s, "leader")))
                .collect();
            if let Some(Some(l)) = seen.first() {
                if seen.iter().all(|s| *s == Some(*l)) {
                    return *l as usize;
                }
            }
            assert!(Instant::now() < deadline, "no leader agreed on: {seen:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !(0..REPLICAS).all(|i| self.healthy(i)) {
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.get(9..12)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1)?.to_string();
    Some((code, body))
}

/// A number field of a flat JSON object (None for `null` or absent).
fn field(json: &str, name: &str) -> Option<u64> {
    let at = json.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &json[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// One writer's record: the writes acknowledged (key number → when it was sent and answered),
/// and how often it had to reconnect.
#[derive(Default)]
struct Record {
    acked: BTreeMap<u64, (Instant, Instant)>,
    reconnects: u64,
}

/// Writes `w{id}:{n}` = n, one after another on one connection, reconnecting only when the
/// connection breaks (its replica was killed).
fn writer(addr: SocketAddr, id: usize, record: Arc<Mutex<Record>>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    let mut connection: Option<redis::Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => {
                let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
                match client.get_connection_with_timeout(Duration::from_millis(500)) {
                    Ok(conn) => {
                        conn.set_read_timeout(Some(Duration::from_secs(30)))
                            .unwrap();
                        connection.insert(conn)
                    }
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
            }
        };
        n += 1;
        let sent = Instant::now();
        let result: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("w{id}:{n}"))
            .arg(n)
            .query(conn);
        match result {
            Ok(()) => {
                record
                    .lock()
                    .unwrap()
                    .acked
                    .insert(n, (sent, Instant::now()));
            }
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                connection = None;
                record.lock().unwrap().reconnects += 1;
            }
            Err(e) => panic!("writer {id}: SET refused: {e}"),
        }
    }
}

#[test]
fn leader_kills_lose_no_acknowledged_write_and_survivors_keep_writing() {
    let kills: usize = std::env::var("ZIGGY_CLUSTER_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(dir.path());
    cluster.wait_healthy(Duration::from_secs(60));
    let stop = Arc::new(AtomicBool::new(false));
    let records: Vec<Arc<Mutex<Record>>> = (0..REPLICAS * WRITERS)
        .map(|_| Arc::new(Mutex::new(Record::default())))
        .collect();
    let threads: Vec<_> = (0..REPLICAS * WRITERS)
        .map(|w| {
            let (addr, record, stop) =
                (cluster.addr(w / WRITERS), records[w].clone(), stop.clone());
            std::thread::spawn(move || writer(addr, w, record, stop))
        })
        .collect();
    let mut pauses = Vec::new();
    for round in 0..kills {
        std::thread::sleep(Duration::from_millis(500)); // writes flow before the kill
        let leader = cluster.leader(Duration::from_secs(30));
        let survivors: Vec<usize> = (0..REPLICAS * WRITERS)
            .filter(|w| w / WRITERS != leader)
            .collect();
        let reconnects_before: Vec<u64> = survivors
            .iter()
            .map(|&w| records[w].lock().unwrap().reconnects)
            .collect();
        let killed_at = Instant::now();
        cluster.kill(leader);
        // The pause: until a survivor's write sent after the kill is acknowledged.
        let pause = loop {
            let first = survivors
                .iter()
                .filter_map(|&w| {
                    let record = records[w].lock().unwrap();
                    record
                        .acked
                        .values()
                        .rev()
                        .take_while(|(sent, _)| *sent > killed_at)
                        .map(|(_, acked)| *acked)
                        .min()
                })
                .min();
            if let Some(acked) = first {
                break acked - killed_at;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "round {round}: no write acknowledged 30 s after killing leader {leader}"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let new_leader = cluster.leader(Duration::from_secs(30));
        assert_ne!(new_leader, leader);
        for (&w, before) in survivors.iter().zip(&reconnects_before) {
            assert_eq!(
                records[w].lock().unwrap().reconnects,
                *before,
                "round {round}: writer {w}, on a surviving replica, had to reconnect"
            );
        }
        println!("round {round}: killed leader {leader}, new leader {new_leader}, pause {pause:?}");
        pauses.push(pause);
        cluster.start(leader);
        cluster.wait_healthy(Duration::from_secs(60));
    }
    // The leader's /status names both peers, each with how far it is behind once it has
    // answered in this term (a replica restarted a moment ago may not have yet).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.leader(Duration::from_secs(30));
        let status = cluster.status(leader).unwrap_or_default();
        let peers = status.split(r#""peers":["#).nth(1).unwrap_or_default();
        if peers.matches(r#""lag":"#).count() == 2 && !peers.contains("null") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader's peers in /status: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    // Every acknowledged write, read back through every replica.
    let mut total = 0;
    for replica in 0..REPLICAS {
        let client = redis::Client::open(format!("redis://{}/", cluster.addr(replica))).unwrap();
        let mut conn = client.get_connection().unwrap();
        for (w, record) in records.iter().enumerate() {
            let record = record.lock().unwrap();
            let keys: Vec<u64> = record.acked.keys().copied().collect();
            for chunk in keys.chunks(500) {
                let names: Vec<String> = chunk.iter().map(|n| format!("w{w}:{n}")).collect();
                let values: Vec<Option<u64>> =
                    redis::cmd("MGET").arg(&names).query(&mut conn).unwrap();
                for (n, value) in chunk.iter().zip(values) {
                    assert_eq!(
                        value,
                        Some(*n),
                        "replica {replica}: acknowledged w{w}:{n} lost"
                    );
                }
            }
            total += keys.len();
        }
    }
    pauses.sort();
    if !pauses.is_empty() {
        println!(
            "{} leader kills, {} acknowledged writes all present: pause median {:?}, worst {:?}",
            pauses.len(),
            total / REPLICAS,
            pauses[pauses.len() / 2],
            pauses[pauses.len() - 1]
        );
    }
}
