//! The real server code — connections, lanes, forwarding, peer links, the core loop over real data
//! files — as a three-replica cluster inside madsim's deterministic simulation: simulated time,
//! network and task scheduling, all in one process.
//!
//! Clients on their own simulated hosts speak RESP to any replica while replicas are killed and
//! restarted (on the same data file, as after `kill -9`) and cut off by partitions. Every client
//! operation is recorded with its simulated call and return times, and the history, ending with a
//! read of every key, must be linearizable (`ziggy_sim::linearizability`, the simulator's
//! checker): an acknowledged write that was lost, or a stale read, fails it.
//!
//! Beside strings, the clients write hash fields and set members, each checked as a register of
//! its own (the checker's keys `h1:f2` and `s0:m1`): `HSET`/`HGET`/`HDEL` are a put, a get and a
//! delete; `SADD` is a compare-and-swap from absent to present (it answers whether it added),
//! `SISMEMBER` a get and `SREM` a delete. Fields of one hash and members of one set share their
//! collection's record, so the collections' read-modify-writes run under the same faults.
//!
//! Build and run (a seed replays exactly; `MADSIM_TEST_CHECK_DETERMINISM=1` runs it twice and
//! fails on any divergence):
//!
//! ```text
//! RUSTFLAGS="--cfg madsim" cargo test -p ziggy-io --test madsim_cluster --target-dir target/madsim
//! MADSIM_TEST_SEED=7 MADSIM_TEST_NUM=20 RUSTFLAGS="--cfg madsim" cargo test ...
//! ```
#![cfg(madsim)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::{Handle, NodeHandle};
use madsim::task::NodeId;
use madsim::time::{sleep, timeout, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ziggy_core::{Config, PlantedBug};
use ziggy_io::server::{start, ClusterOptions, ServeOptions};
use ziggy_resp::{parse_reply, Reply};
use ziggy_sim::linearizability::{check, Budget, Input, Operation, Output, Verdict};

const REPLICAS: usize = 3;
const CLIENTS: usize = 4;
const KEYS: usize = 4;
/// Hashes and sets the clients write, and the fields or members of each.
const COLLECTIONS: usize = 2;
const MEMBERS: usize = 3;
const CLIENT_PORT: u16 = 7379;
const PEER_PORT: u16 = 7400;
/// Faults injected, one after another, each lasting 1-4 simulated seconds.
const FAULTS: usize = 8;
/// How long a client waits for a reply before it counts the operation as unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

fn replica_ip(i: usize) -> IpAddr {
    IpAddr::from([10, 0, 0, i as u8 + 1])
}

/// A fresh directory for this run's data files (in memory when `/dev/shm` exists: fsync there is
/// free, and the simulation does not model disks).
fn data_dir() -> PathBuf {
    let base = PathBuf::from("/dev/shm");
    let base = if base.is_dir() {
        base
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!(
        "ziggy-madsim-{}-{}",
        std::process::id(),
        Handle::current().seed()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn replica_options(i: usize, dir: &std::path::Path, bug: Option<PlantedBug>) -> ServeOptions {
    let mut options = ServeOptions::new(dir.join(format!("r{i}.data")));
    options.bind = replica_ip(i);
    options.port = CLIENT_PORT;
    options.config = Config {
        planted_bug: bug,
        ..Config::test()
    };
    options.reap_every = Duration::from_millis(500);
    options.cluster = Some(ClusterOptions {
        id: 42,
        replica: i as u8,
        addresses: (0..REPLICAS)
            .map(|r| SocketAddr::new(replica_ip(r), PEER_PORT))
            .collect(),
    });
    options
}

/// Starts replica `i` as a simulated host; a restart runs the same start on the same data file.
fn replica(
    handle: &Handle,
    i: usize,
    dir: &std::path::Path,
    bug: Option<PlantedBug>,
) -> NodeHandle {
    let options = replica_options(i, dir, bug);
    handle
        .create_node()
        .name(format!("replica{i}"))
        .ip(replica_ip(i))
        .init(move || {
            let options = options.clone();
            async move {
                let running = start(options).await.expect("the replica starts");
                std::future::pending::<()>().await;
                drop(running);
            }
        })
        .build()
}

/// A RESP connection to one replica.
struct RespClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RespClient {
    async fn connect(replica: usize) -> std::io::Result<RespClient> {
        let addr = SocketAddr::new(replica_ip(replica), CLIENT_PORT);
        let stream = TcpStream::connect(addr).await?;
        Ok(RespClient {
            stream,
            buf: Vec::new(),
        })
    }

    async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&request).await?;
        self.stream.flush().await?;
        loop {
            if let Ok(Some((reply, used))) = parse_reply(&self.buf) {
                self.buf.drain(..used);
                return Ok(reply);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// What a client was told, as the checker's output; None when the outcome is unknown (an error
/// reply, a timeout, a broken connection).
fn output(input: &Input, reply: &Reply) -> Option<Output> {
    match Family::of(input.key()) {
        Family::String => {}
        Family::Hash(..) => {
            return match (input, reply) {
                (Input::Put { .. }, Reply::Integer(_)) => Some(Output::Put),
                (Input::Get { .. }, Reply::Bulk(v)) => Some(Output::Get(Some(v.clone()))),
                (Input::Get { .. }, Reply::Nil) => Some(Output::Get(None)),
                (Input::Delete { .. }, Reply::Integer(n)) => {
                    Some(Output::Delete { existed: *n > 0 })
                }
                _ => None,
            }
        }
        Family::Set(..) => {
            return match (input, reply) {
                (Input::Cas { .. }, Reply::Integer(n)) => Some(Output::Cas { swapped: *n == 1 }),
                (Input::Get { .. }, Reply::Integer(1)) => Some(Output::Get(Some(b"1".to_vec()))),
                (Input::Get { .. }, Reply::Integer(0)) => Some(Output::Get(None)),
                (Input::Delete { .. }, Reply::Integer(n)) => {
                    Some(Output::Delete { existed: *n > 0 })
                }
                _ => None,
            }
        }
    }
    match (input, reply) {
        (Input::Put { .. }, Reply::Status(s)) if s == "OK" => Some(Output::Put),
        (Input::Get { .. }, Reply::Bulk(v)) => Some(Output::Get(Some(v.clone()))),
        (Input::Get { .. }, Reply::Nil) => Some(Output::Get(None)),
        (Input::Delete { .. }, Reply::Integer(n)) => Some(Output::Delete { existed: *n > 0 }),
        (Input::Cas { .. }, Reply::Array(replies)) if replies.len() == 1 => {
            Some(Output::Cas { swapped: true })
        }
        _ => None,
    }
}

fn args(input: &Input) -> Vec<Vec<u8>> {
    let command = |parts: &[&[u8]]| parts.iter().map(|p| p.to_vec()).collect();
    match (Family::of(input.key()), input) {
        (Family::String, Input::Put { key, value }) => command(&[b"SET", key, value]),
        (Family::String, Input::Get { key }) => command(&[b"GET", key]),
        (Family::String, Input::Delete { key }) => command(&[b"DEL", key]),
        (Family::Hash(h, f), Input::Put { value, .. }) => command(&[b"HSET", h, f, value]),
        (Family::Hash(h, f), Input::Get { .. }) => command(&[b"HGET", h, f]),
        (Family::Hash(h, f), Input::Delete { .. }) => command(&[b"HDEL", h, f]),
        (Family::Set(s, m), Input::Cas { .. }) => command(&[b"SADD", s, m]),
        (Family::Set(s, m), Input::Get { .. }) => command(&[b"SISMEMBER", s, m]),
        (Family::Set(s, m), Input::Delete { .. }) => command(&[b"SREM", s, m]),
        (_, input) => unreachable!("not a single command: {input:?}"),
    }
}

/// Which kind of key a checker key stands for: a string, a hash's field or a set's member.
enum Family<'a> {
    String,
    Hash(&'a [u8], &'a [u8]),
    Set(&'a [u8], &'a [u8]),
}

impl Family<'_> {
    fn of(key: &[u8]) -> Family<'_> {
        let split = key.iter().position(|&b| b == b':');
        match (key[0], split) {
            (b'h', Some(at)) => Family::Hash(&key[..at], &key[at + 1..]),
            (b's', Some(at)) => Family::Set(&key[..at], &key[at + 1..]),
            _ => Family::String,
        }
    }
}

/// Every key the checker tracks: strings, hash fields, set members.
fn all_keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..KEYS).map(|k| format!("k{k}").into_bytes()).collect();
    for c in 0..COLLECTIONS {
        for m in 0..MEMBERS {
            keys.push(format!("h{c}:f{m}").into_bytes());
            keys.push(format!("s{c}:m{m}").into_bytes());
        }
    }
    keys
}

struct History {
    start: Instant,
    operations: Mutex<Vec<Operation>>,
    /// Transactions whose EXEC aborted (a watched key changed): left out of `operations`.
    aborted: std::sync::atomic::AtomicU64,
}

impl History {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Records an operation called at `call`; it completed at `ret` if there is an `output`.
    /// Returns whether it completed.
    fn record(&self, id: u64, input: Input, call: u64, ret: u64, output: Option<Output>) -> bool {
        let completed = output.is_some();
        self.operations.lock().unwrap().push(Operation {
            client: id,
            input,
            call,
            ret: completed.then_some(ret),
            output,
        });
        completed
    }
}

/// Runs one operation on `client` (connecting first to `replica` if needed) and records it.
async fn run(
    history: &History,
    id: u64,
    client: &mut Option<RespClient>,
    replica: usize,
    input: Input,
) -> bool {
    let call = history.now();
    let argv = args(&input);
    let argv: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    let attempt = async {
        if client.is_none() {
            *client = Some(RespClient::connect(replica).await?);
        }
        client.as_mut().expect("connected").call(&argv).await
    };
    let reply = timeout(OP_TIMEOUT, attempt).await;
    let ret = history.now();
    let output = match &reply {
        Ok(Ok(reply)) => output(&input, reply),
        _ => {
            *client = None; // broken or stuck: the next operation reconnects
            None
        }
    };
    history.record(id, input, call, ret, output)
}

/// A compare-and-swap as a Redis client writes one: `WATCH k`, `GET k`, `MULTI`, `SET k new`,
/// `EXEC`. An EXEC that applies is a CAS that swapped from the value read (nothing changed the
/// key since WATCH, before which the GET could not have read); an aborted one did nothing and
/// is left out of the history (WATCH aborts on changes a CAS would not see, such as a write and
/// delete of an absent key). Returns whether the outcome is known.
async fn cas(
    history: &History,
    id: u64,
    client: &mut Option<RespClient>,
    replica: usize,
    key: Vec<u8>,
    new: Vec<u8>,
) -> bool {
    let call = history.now();
    let mut expected = None;
    let mut exec_sent = false;
    let attempt = async {
        if client.is_none() {
            *client = Some(RespClient::connect(replica).await?);
        }
        let c = client.as_mut().expect("connected");
        c.call(&[b"WATCH", &key]).await?;
        expected = match c.call(&[b"GET", &key]).await? {
            Reply::Bulk(v) => Some(v),
            _ => None,
        };
        c.call(&[b"MULTI"]).await?;
        c.call(&[b"SET", &key, &new]).await?;
        exec_sent = true;
        c.call(&[b"EXEC"]).await
    };
    let reply = timeout(OP_TIMEOUT, attempt).await;
    let ret = history.now();
    let input = Input::Cas {
        key: key.clone(),
        expected: expected.clone(),
        new,
    };
    let output = match &reply {
        Ok(Ok(Reply::NilArray)) => {
            history.aborted.fetch_add(1, Ordering::Relaxed);
            return true; // aborted: no effect
        }
        Ok(Ok(reply)) => output(&input, reply),
        _ => {
            *client = None;
            None
        }
    };
    if output.is_none() && !exec_sent {
        return false; // never reached EXEC: no effect
    }
    history.record(id, input, call, ret, output)
}

/// A client: random SET / GET / DEL / CAS on a few keys, through one replica, moving to the next one
/// when its replica stops answering.
async fn client(id: usize, history: Arc<History>, stop: Arc<AtomicBool>) -> u64 {
    let mut replica = id % REPLICAS;
    let mut connection = None;
    let mut completed = 0;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let value = format!("c{id}-{n}").into_bytes();
        let (c, m) = (
            thread_rng().gen_range(0..COLLECTIONS),
            thread_rng().gen_range(0..MEMBERS),
        );
        let input = match thread_rng().gen_range(0..3) {
            0 => {
                let key = format!("h{c}:f{m}").into_bytes();
                match thread_rng().gen_range(0..10) {
                    0..=4 => Input::Put { key, value },
                    5..=7 => Input::Get { key },
                    _ => Input::Delete { key },
                }
            }
            1 => {
                let key = format!("s{c}:m{m}").into_bytes();
                match thread_rng().gen_range(0..10) {
                    0..=4 => Input::Cas {
                        key,
                        expected: None,
                        new: b"1".to_vec(),
                    },
                    5..=7 => Input::Get { key },
                    _ => Input::Delete { key },
                }
            }
            _ => {
                let key = format!("k{}", thread_rng().gen_range(0..KEYS)).into_bytes();
                match thread_rng().gen_range(0..10) {
                    0..=3 => Input::Put { key, value },
                    4..=6 => Input::Get { key },
                    7 => Input::Delete { key },
                    _ => Input::Cas {
                        key,
                        expected: None,
                        new: value,
                    },
                }
            }
        };
        let known = match input {
            Input::Cas { key, new, .. } if matches!(Family::of(&key), Family::String) => {
                cas(&history, id as u64, &mut connection, replica, key, new).await
            }
            input => run(&history, id as u64, &mut connection, replica, input).await,
        };
        if known {
            completed += 1;
        } else {
            replica = (replica + 1) % REPLICAS;
            sleep(Duration::from_millis(100)).await;
        }
        sleep(Duration::from_millis(thread_rng().gen_range(1..20))).await;
    }
    completed
}

/// `INFO replication` of replica `i`, if it answers in time.
async fn replication(i: usize) -> Option<String> {
    let ask = async {
        let mut client = RespClient::connect(i).await.ok()?;
        match client.call(&[b"INFO", b"replication"]).await.ok()? {
            Reply::Bulk(text) | Reply::Verbatim(text) => String::from_utf8(text).ok(),
            _ => None,
        }
    };
    timeout(Duration::from_secs(1), ask).await.ok().flatten()
}

fn info_field(info: &str, name: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with(&format!("{name}:")))?;
    line[name.len() + 1..].trim().parse().ok()
}

/// The replica that says it leads, if one does.
async fn leader() -> Option<usize> {
    for i in 0..REPLICAS {
        if replication(i)
            .await
            .is_some_and(|info| info.contains("raft_role:leader"))
        {
            return Some(i);
        }
    }
    None
}

/// What the faults hit.
#[derive(Debug, Default)]
struct Faults {
    kills: u32,
    partitions: u32,
    /// Of those, how many struck the replica that led at the time.
    on_leader: u32,
}

/// Kills and restarts replicas, and cuts them off, one fault at a time: every other one strikes
/// the leader, the rest a replica drawn at random.
async fn inject_faults(handle: Handle, replicas: Vec<NodeId>) -> Faults {
    let mut faults = Faults::default();
    for round in 0..FAULTS {
        sleep(Duration::from_millis(thread_rng().gen_range(500..3000))).await;
        let leader = leader().await;
        let victim = match leader {
            Some(l) if round % 2 == 0 => l,
            _ => thread_rng().gen_range(0..REPLICAS),
        };
        faults.on_leader += (leader == Some(victim)) as u32;
        let node = replicas[victim];
        let lasting = Duration::from_millis(thread_rng().gen_range(1000..4000));
        if thread_rng().gen_bool(0.5) {
            faults.kills += 1;
            handle.kill(node);
            sleep(lasting).await;
            handle.restart(node);
        } else {
            faults.partitions += 1;
            NetSim::current().clog_node(node);
            sleep(lasting).await;
            NetSim::current().unclog_node(node);
        }
    }
    faults
}

#[madsim::test]
async fn a_cluster_under_kills_and_partitions_stays_linearizable() {
    let (verdict, report) = scenario(None).await;
    println!("{report}");
    assert_eq!(verdict, Verdict::Linearizable, "{report}");
}

/// The same scenario finds a planted bug (a leader that commits without a quorum: a partitioned
/// leader acknowledges writes the majority never saw) within a few seeds: the checker can fail.
/// It is caught either by the history check or by one of the core's own invariant assertions
/// (a replica that finds a committed entry contradicted panics), whichever comes first.
#[test]
fn a_leader_committing_without_a_quorum_is_caught() {
    for seed in 1..=10 {
        let runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        let bug = Some(PlantedBug::CommitWithoutQuorum);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(scenario(bug))
        }));
        match run {
            Ok((Verdict::NotLinearizable { .. }, report)) => return println!("caught: {report}"),
            Ok((_, report)) => println!("not caught: {report}"),
            Err(_) => return println!("seed {seed}: caught by an invariant of the core"),
        }
    }
    panic!("10 seeds and the planted bug was never caught");
}

/// Three replicas, clients, faults; returns the checker's verdict on the history and a report.
async fn scenario(bug: Option<PlantedBug>) -> (Verdict, String) {
    let handle = Handle::current();
    let dir = data_dir();
    let replicas: Vec<NodeHandle> = (0..REPLICAS)
        .map(|i| replica(&handle, i, &dir, bug))
        .collect();
    sleep(Duration::from_secs(3)).await; // format, elect
    let history = Arc::new(History {
        start: Instant::now(),
        operations: Mutex::new(Vec::new()),
        aborted: Default::default(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let node = handle
                .create_node()
                .name(format!("client{c}"))
                .ip(IpAddr::from([10, 0, 1, c as u8 + 1]))
                .build();
            node.spawn(client(c, history.clone(), stop.clone()))
        })
        .collect();
    // The faults come from a host of their own: it asks the replicas who leads.
    let ids = replicas.iter().map(NodeHandle::id).collect();
    let faults = handle
        .create_node()
        .name("chaos")
        .ip(IpAddr::from([10, 0, 3, 1]))
        .build()
        .spawn(inject_faults(handle.clone(), ids))
        .await
        .unwrap();
    // Healed: every client must get answers again.
    let healed = history.now();
    sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    let mut completed = 0;
    for c in clients {
        completed += c.await.expect("a client task");
    }
    // A last read of every key, retried until answered, closes the history.
    let reader = handle
        .create_node()
        .name("reader")
        .ip(IpAddr::from([10, 0, 2, 1]))
        .build();
    let final_reads = history.clone();
    reader
        .spawn(async move {
            for key in all_keys() {
                let mut connection = None;
                let mut replica = 0;
                while !run(
                    &final_reads,
                    99,
                    &mut connection,
                    replica,
                    Input::Get { key: key.clone() },
                )
                .await
                {
                    replica = (replica + 1) % REPLICAS;
                    sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .await
        .unwrap();
    let operations = std::mem::take(&mut *history.operations.lock().unwrap());
    // The faults reached what they are for: leaders were struck and new ones elected.
    let terms = handle
        .create_node()
        .name("observer")
        .ip(IpAddr::from([10, 0, 2, 2]))
        .build()
        .spawn(async {
            let mut terms = Vec::new();
            for i in 0..REPLICAS {
                terms.push(
                    replication(i)
                        .await
                        .and_then(|info| info_field(&info, "term")),
                );
            }
            terms
        })
        .await
        .unwrap();
    let after_heal = operations
        .iter()
        .filter(|o| o.is_completed() && o.call > healed && o.client != 99)
        .count();
    let writes = operations
        .iter()
        .filter(|o| o.is_completed() && matches!(o.input, Input::Put { .. }))
        .count();
    let aborted = history.aborted.load(Ordering::Relaxed);
    let swaps = operations
        .iter()
        .filter(|o| o.is_completed() && matches!(o.input, Input::Cas { .. }))
        .filter(|o| matches!(Family::of(o.input.key()), Family::String))
        .count();
    let collection_writes = operations
        .iter()
        .filter(|o| o.is_completed() && o.client != 99 && !matches!(o.input, Input::Get { .. }))
        .filter(|o| !matches!(Family::of(o.input.key()), Family::String))
        .count();
    let report = format!(
        "seed {}: {} operations, {completed} answered ({writes} acknowledged writes, {swaps} transactions applied, \
         {aborted} aborted, {collection_writes} hash and set writes), \
         {after_heal} after the faults healed; {faults:?}; terms {terms:?}",
        handle.seed(),
        operations.len()
    );
    assert!(
        faults.on_leader >= 1,
        "no fault struck a leader: {faults:?}"
    );
    let term = terms.iter().flatten().max().copied().unwrap_or(0);
    assert!(term >= 2, "no new leader was elected (terms {terms:?})");
    assert!(writes > 0, "no write was ever acknowledged");
    assert!(swaps > 0, "no transaction ever applied");
    assert!(
        collection_writes > 0,
        "no hash or set write was ever answered"
    );
    assert!(
        aborted > 0,
        "no transaction ever aborted: WATCH went untested"
    );
    assert!(
        after_heal > 0,
        "no operation completed after the faults healed"
    );
    let verdict = check(&operations, Budget::default());
    let _ = std::fs::remove_dir_all(&dir);
    (verdict, report)
}
