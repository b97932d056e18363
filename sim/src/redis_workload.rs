//! The Redis workload: clients send command groups to replicas running
//! [`RedisStateMachine`], over every family of the data model.
//!
//! Two kinds of keys, so that each request is checked as tightly as its semantics allow:
//!
//! - **Registers**: strings `s*` (`SET GET DEL`), hash fields `h*/f*` (`HSET HSETNX HGET
//!   HDEL`), set members `t*/m*` (`SADD SISMEMBER SREM`) and sorted-set scores `z*/m*` (`ZADD
//!   ZSCORE ZREM`). Each command touches one field of one key, so each is an operation on one
//!   register for the linearizability checker (`SADD` a compare-and-set from absent). Fields
//!   come and go, so collections empty (their record removed) and come back under new ids.
//! - **Churned keys**: lists `l*` (pushes, pops, trims, moves, inserts), and `c*` / `j*`
//!   collections of any type, grown in bulk past a sweep's size, deleted, renamed, combined
//!   (`SUNIONSTORE` ...), popped, expired (`PEXPIRE`), read by scans and ranges, inside
//!   MULTI groups too. Their replies are checked by the model alone: every reply must equal the
//!   reference's, a `RedisStateMachine` that executes the committed log in order.
//!
//! The clients also run the server's reaper: `~expired` looks, then the `~reap` and `~sweep`
//! writes a look asks for, interleaved with everything else, so that expiry and the
//! background reclaiming of deleted collections run under every fault.

use crate::linearizability::{Input, Output};
use crate::prng::{Ppm, Prng};
use crate::simulation::Options;
use crate::storage::SimGrid;
use crate::workload::{Reference, Workload};
use std::collections::VecDeque;
use ziggy_core::state_machine::StateMachine;
use ziggy_core::wal::header::{EntryHeader, Operation};
use ziggy_core::Config;
use ziggy_redis::{encode_group, RedisStateMachine};
use ziggy_resp::{parse_reply, Reply};

/// A request: a command group and what checks it.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisOp {
    pub operation: Operation,
    pub body: Vec<u8>,
    /// The register operation it is, and how its reply reads as one.
    pub register: Option<(Input, Read)>,
    /// The reaper step it is, if it is one.
    pub step: Option<Step>,
}

/// How a reply reads as a register's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// A bulk string, or nil.
    Value,
    /// `SISMEMBER`'s 1 or 0: present ("1") or absent.
    Member,
    /// `ZSCORE`'s double, or nil.
    Score,
}

/// A step of the reaper, as the server's core loop takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Look,
    Reap(Vec<Vec<u8>>),
    Sweep(u64, Vec<u8>),
}

/// What the run's requests reached (shown by the coverage test).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reached {
    pub looks: u64,
    pub reaps: u64,
    pub reaped: u64,
    pub sweeps: u64,
    pub swept: u64,
    /// Sweeps that left members for another (a collection larger than a sweep).
    pub sweeps_continued: u64,
    pub groups: u64,
    pub errors: u64,
}

pub struct Redis {
    /// Strings drawn from `s0..`; collections of each register family from `h0..` etc.
    strings: u64,
    collections: u64,
    members: u64,
    value_size: u64,
    /// The seed's mix (swarm testing): the weights of strings, hashes, sets, sorted sets,
    /// lists and churned keys, and how many churned keys share the churn.
    weights: [u64; 6],
    churned: u64,
    reaper: Ppm,
    /// The longest body a request may have (one request alone in a batch entry).
    body_max: usize,
    reaper_cursor: Vec<u8>,
    pending: VecDeque<Step>,
    reached: Reached,
}

/// Lists, and churned collections at most.
const CHURNED: u64 = 3;
/// Churned members are drawn from this many names (enough for sets larger than a sweep).
const CHURN_NAMES: u64 = 4_000;

impl Workload for Redis {
    type Machine = RedisStateMachine;
    type Op = RedisOp;
    type Reference = RedisReference;
    type Target = ();

    fn new(options: &Options, config: &Config) -> (Redis, RedisReference) {
        let strings = options.key_space.clamp(1, 32);
        let mut prng = Prng::new(options.seed ^ 0x4ed1_5000);
        let weights = [(); 6].map(|_| prng.range(0, 4));
        let weights = if weights == [0; 6] { [1; 6] } else { weights };
        let redis = Redis {
            weights,
            churned: prng.range(1, CHURNED),
            strings,
            collections: strings.min(4),
            members: strings.clamp(2, 12),
            value_size: options.value_size.min(160),
            reaper: Ppm(prng.range(10_000, 150_000) as u32),
            body_max: config.entry_body_max() - ziggy_core::wal::batch::RECORD_HEADER_SIZE,
            reaper_cursor: Vec::new(),
            pending: VecDeque::new(),
            reached: Reached::default(),
        };
        (redis, RedisReference::new(config))
    }

    fn target(&mut self, _prng: &mut Prng) {}

    fn draw(&mut self, prng: &mut Prng, _target: (), client: u64, request: u64) -> RedisOp {
        let value = self.value(prng, client, request);
        if prng.chance(self.reaper) {
            return self.reaper_step(prng);
        }
        let draw = Draw {
            prng,
            budget: self.body_max - GROUP_HEADER,
            collections: self.collections,
            members: self.members,
            churned: self.churned,
            value,
            score: (client % 4096) * 1_000_000 + request,
        };
        let total: u64 = self.weights.iter().sum();
        let mut pick = draw.prng.range(0, total - 1);
        let family = self
            .weights
            .iter()
            .position(|&w| {
                let hit = pick < w;
                pick = pick.saturating_sub(w);
                hit
            })
            .expect("a pick below the total");
        match family {
            0 => draw.string(self.strings),
            1 => draw.hash(),
            2 => draw.set(),
            3 => draw.zset(),
            4 => draw.list(),
            _ => draw.churn(),
        }
    }

    fn encode(op: &RedisOp) -> (Operation, Vec<u8>) {
        (op.operation, op.body.clone())
    }

    fn input(op: &RedisOp) -> Option<Input> {
        op.register.as_ref().map(|(input, _)| input.clone())
    }

    fn output(op: &RedisOp, reply: &[u8]) -> Output {
        let (input, read) = op.register.as_ref().expect("only registers have outputs");
        let reply = match parse_reply(reply) {
            Ok(Some((reply, _))) => reply,
            _ => Reply::Error(format!("unparsable reply {reply:?}")),
        };
        match input {
            Input::Put { .. } => Output::Put,
            Input::Delete { .. } => Output::Delete {
                existed: reply == Reply::Integer(1),
            },
            Input::Cas { .. } => Output::Cas {
                swapped: reply == Reply::Integer(1),
            },
            Input::Get { .. } => Output::Get(read_value(*read, reply)),
        }
    }

    fn replied(&mut self, op: &RedisOp, reply: &[u8]) {
        self.reached.groups += 1;
        if reply.starts_with(b"-") {
            self.reached.errors += 1;
        }
        let Some(step) = &op.step else {
            return;
        };
        match step {
            Step::Look => {
                self.reached.looks += 1;
                let found = ziggy_redis::decode_expired_reply(reply).expect("a look's reply");
                self.reaper_cursor = found.cursor;
                // As many entries a reap as fit in a request.
                let mut entries = found.entries.into_iter().peekable();
                while entries.peek().is_some() {
                    let mut reap = Vec::new();
                    let mut size = GROUP_HEADER + encoded_size(&ziggy_redis::reap_group(&[])[0]);
                    while let Some(entry) = entries.next_if(|e| size + 4 + e.len() <= self.body_max)
                    {
                        size += 4 + entry.len();
                        reap.push(entry);
                    }
                    assert!(!reap.is_empty(), "an expiry entry fits in a request");
                    self.pending.push_back(Step::Reap(reap));
                }
                let sweeps = found.dead.into_iter().map(|id| Step::Sweep(id, Vec::new()));
                self.pending.extend(sweeps);
            }
            Step::Reap(_) => {
                self.reached.reaps += 1;
                self.reached.reaped += ziggy_redis::decode_reap_reply(reply).expect("a count");
            }
            Step::Sweep(id, _) => {
                let swept = ziggy_redis::decode_sweep_reply(reply).expect("a sweep's reply");
                self.reached.sweeps += 1;
                self.reached.swept += swept.deleted;
                if !swept.cursor.is_empty() {
                    self.reached.sweeps_continued += 1;
                    self.pending.push_front(Step::Sweep(*id, swept.cursor));
                }
            }
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let r = self.reached;
        vec![
            ("groups", r.groups),
            ("errors", r.errors),
            ("looks", r.looks),
            ("reaps", r.reaps),
            ("reaped", r.reaped),
            ("sweeps", r.sweeps),
            ("swept", r.swept),
            ("sweeps_continued", r.sweeps_continued),
        ]
    }
}

impl Redis {
    /// A value unique to the request, padded up to the seed's value size.
    fn value(&self, prng: &mut Prng, client: u64, request: u64) -> Vec<u8> {
        let mut value = format!("c{client:x}-r{request}").into_bytes();
        let padded = prng.range(0, self.value_size) as usize;
        value.resize(padded.max(value.len()), b'.');
        value
    }

    /// The reaper's next step: what the last look asked for, else a new look (of a drawn
    /// size, so that looks both finish and resume).
    fn reaper_step(&mut self, prng: &mut Prng) -> RedisOp {
        let (group, step) = match self.pending.pop_front() {
            Some(Step::Reap(entries)) => (ziggy_redis::reap_group(&entries), Step::Reap(entries)),
            Some(Step::Sweep(id, cursor)) => (
                ziggy_redis::sweep_group(id, &cursor),
                Step::Sweep(id, cursor),
            ),
            Some(Step::Look) | None => {
                let max = prng.range(1, 64) as u32;
                (
                    ziggy_redis::expired_group(max, &self.reaper_cursor),
                    Step::Look,
                )
            }
        };
        let mut op = group_op(group, None);
        op.step = Some(step);
        op
    }
}

/// A request's command group, with its operation: a read if every command only reads.
fn group_op(group: Vec<Vec<Vec<u8>>>, register: Option<(Input, Read)>) -> RedisOp {
    let operation = if RedisStateMachine::reads_only(&group) {
        RedisStateMachine::READ
    } else {
        RedisStateMachine::WRITE
    };
    let mut body = Vec::new();
    encode_group(&group, &mut body);
    RedisOp {
        operation,
        body,
        register,
        step: None,
    }
}

/// A group's bytes before its commands (`body.rs`: the command count).
const GROUP_HEADER: usize = 4;

/// A command's bytes in a group: its argument count, then each argument's length and bytes.
fn encoded_size(command: &[Vec<u8>]) -> usize {
    4 + command.iter().map(|arg| 4 + arg.len()).sum::<usize>()
}

fn command(words: &[&[u8]]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.to_vec()).collect()
}

fn read_value(read: Read, reply: Reply) -> Option<Vec<u8>> {
    match (read, reply) {
        (Read::Value, Reply::Bulk(value)) => Some(value),
        (Read::Member, Reply::Integer(1)) => Some(b"1".to_vec()),
        (Read::Score, Reply::Double(score)) => Some(format!("{score}").into_bytes()),
        (Read::Score, Reply::Bulk(score)) => {
            let score: f64 = String::from_utf8_lossy(&score).parse().ok()?;
            Some(format!("{score}").into_bytes())
        }
        _ => None,
    }
}

/// One request being drawn.
struct Draw<'a> {
    prng: &'a mut Prng,
    /// The bytes the group's commands may take.
    budget: usize,
    collections: u64,
    members: u64,
    churned: u64,
    value: Vec<u8>,
    score: u64,
}

impl Draw<'_> {
    fn name(&mut self, prefix: &str, count: u64) -> Vec<u8> {
        format!("{prefix}{}", self.prng.range(0, count - 1)).into_bytes()
    }

    /// A register op: one command on `key` (and `field`), seen as `input` on register
    /// `key/field`.
    fn register(words: &[&[u8]], input: Input, read: Read) -> RedisOp {
        group_op(vec![command(words)], Some((input, read)))
    }

    fn string(mut self, strings: u64) -> RedisOp {
        let key = self.name("s", strings);
        let register = key.clone();
        match self.prng.index(5) {
            0 | 1 => Self::register(
                &[b"SET", &key, &self.value],
                Input::Put {
                    key: register,
                    value: self.value.clone(),
                },
                Read::Value,
            ),
            2 | 3 => Self::register(&[b"GET", &key], Input::Get { key: register }, Read::Value),
            _ => Self::register(
                &[b"DEL", &key],
                Input::Delete { key: register },
                Read::Value,
            ),
        }
    }

    /// A field of a register collection: its key, field, and register name.
    fn field(&mut self, prefix: &str, field: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let key = self.name(prefix, self.collections);
        let member = self.name(field, self.members);
        let register = [&key[..], b"/", &member].concat();
        (key, member, register)
    }

    fn hash(mut self) -> RedisOp {
        let (key, field, register) = self.field("h", "f");
        let value = self.value.clone();
        match self.prng.index(7) {
            0 | 1 => Self::register(
                &[b"HSET", &key, &field, &self.value],
                Input::Put {
                    key: register,
                    value,
                },
                Read::Value,
            ),
            2 => Self::register(
                &[b"HSETNX", &key, &field, &self.value],
                Input::Cas {
                    key: register,
                    expected: None,
                    new: value,
                },
                Read::Value,
            ),
            3 | 4 => Self::register(
                &[b"HGET", &key, &field],
                Input::Get { key: register },
                Read::Value,
            ),
            _ => Self::register(
                &[b"HDEL", &key, &field],
                Input::Delete { key: register },
                Read::Value,
            ),
        }
    }

    fn set(mut self) -> RedisOp {
        let (key, member, register) = self.field("t", "m");
        match self.prng.index(3) {
            0 => Self::register(
                &[b"SADD", &key, &member],
                Input::Cas {
                    key: register,
                    expected: None,
                    new: b"1".to_vec(),
                },
                Read::Member,
            ),
            1 => Self::register(
                &[b"SISMEMBER", &key, &member],
                Input::Get { key: register },
                Read::Member,
            ),
            _ => Self::register(
                &[b"SREM", &key, &member],
                Input::Delete { key: register },
                Read::Member,
            ),
        }
    }

    fn zset(mut self) -> RedisOp {
        let (key, member, register) = self.field("z", "m");
        match self.prng.index(3) {
            0 => {
                let score = self.score.to_string().into_bytes();
                let value = format!("{}", self.score as f64).into_bytes();
                Self::register(
                    &[b"ZADD", &key, &score, &member],
                    Input::Put {
                        key: register,
                        value,
                    },
                    Read::Score,
                )
            }
            1 => Self::register(
                &[b"ZSCORE", &key, &member],
                Input::Get { key: register },
                Read::Score,
            ),
            _ => Self::register(
                &[b"ZREM", &key, &member],
                Input::Delete { key: register },
                Read::Score,
            ),
        }
    }

    /// A list command (checked by the reference alone: a list is no register).
    fn list(mut self) -> RedisOp {
        let key = self.name("l", CHURNED);
        let other = self.name("l", CHURNED);
        let v = self.value.clone();
        let index = (self.prng.range(0, 12) as i64 - 6).to_string().into_bytes();
        let count = self.prng.range(1, 4).to_string().into_bytes();
        let words: Vec<&[u8]> = match self.prng.index(14) {
            0 => vec![b"LPUSH", &key, &v],
            1 => vec![b"RPUSH", &key, &v, b"x"],
            2 => vec![b"LPUSHX", &key, &v],
            3 => vec![b"LPOP", &key],
            4 => vec![b"RPOP", &key, &count],
            5 => vec![b"LRANGE", &key, b"0", b"9"],
            6 => vec![b"LINDEX", &key, &index],
            7 => vec![b"LSET", &key, &index, &v],
            8 => vec![b"LTRIM", &key, &index, b"-1"],
            9 => vec![b"LINSERT", &key, b"BEFORE", b"x", &v],
            10 => vec![b"LREM", &key, &index, b"x"],
            11 => vec![b"LMOVE", &key, &other, b"LEFT", b"RIGHT"],
            12 => vec![b"LPOS", &key, b"x", b"RANK", b"-1"],
            _ => vec![b"LLEN", &key],
        };
        group_op(vec![command(&words)], None)
    }

    /// Churned collections: bulk growth past a sweep's size, deletes, expiry, renames,
    /// combinations, pops, scans, and MULTI groups of several.
    fn churn(mut self) -> RedisOp {
        let commands = match self.prng.index(8) {
            0 => 2 + self.prng.index(2),
            _ => 1,
        };
        let mut group = Vec::new();
        for _ in 0..commands {
            let command = self.churn_command();
            let size = encoded_size(&command);
            if size > self.budget {
                break;
            }
            self.budget -= size;
            group.push(command);
        }
        assert!(!group.is_empty(), "the first command fits");
        group_op(group, None)
    }

    fn churn_command(&mut self) -> Vec<Vec<u8>> {
        let key = self.name("c", self.churned);
        let other = self.name("c", self.churned);
        let third = self.name("c", self.churned);
        let member = self.name("m", CHURN_NAMES);
        let words = |w: &[&[u8]]| command(w);
        match self.prng.index(32) {
            0..=11 => self.bulk(key),
            12 => words(&[b"DEL", &key]),
            13 => {
                let ms = self.prng.range(1, 4_000).to_string().into_bytes();
                words(&[b"PEXPIRE", &key, &ms])
            }
            14 => words(&[b"PERSIST", &key]),
            15 => words(&[b"RENAME", &key, &other]),
            16 => words(&[b"SUNIONSTORE", &key, &other, &third]),
            17 => words(&[b"SINTERSTORE", &key, &other, &third]),
            18 => words(&[b"SDIFFSTORE", &key, &other, &third]),
            19 => words(&[b"SPOP", &key, b"2"]),
            20 => words(&[b"ZPOPMIN", &key, b"2"]),
            21 => words(&[b"ZINCRBY", &key, b"1.5", &member]),
            22 => words(&[b"HINCRBY", &key, &member, b"3"]),
            23 => words(&[b"SSCAN", &key, b"0", b"COUNT", b"5"]),
            24 => words(&[
                b"ZRANGEBYSCORE",
                &key,
                b"-inf",
                b"+inf",
                b"LIMIT",
                b"0",
                b"5",
            ]),
            25 => words(&[b"ZRANK", &key, &member]),
            26 => words(&[b"SRANDMEMBER", &key, b"2"]),
            27 => words(&[b"PTTL", &key]),
            28 => self.json(),
            29 => words(&[b"TYPE", &key]),
            30 => words(&[b"SCARD", &key]),
            _ => words(&[b"EXISTS", &key, &other]),
        }
    }

    /// Many members at once, mostly of the key's own type (`c0` a set, `c1` a hash, `c2` a
    /// sorted set), else of another (WRONGTYPE, or a new type after a DEL or RENAME).
    fn bulk(&mut self, key: Vec<u8>) -> Vec<Vec<u8>> {
        let n = self.prng.range(1, 150);
        let own = (key[1] - b'0') as usize % 3;
        let kind = if self.prng.chance(Ppm::percent(85)) {
            own
        } else {
            self.prng.index(3)
        };
        let verb: &[u8] = [&b"SADD"[..], b"HSET", b"ZADD"][kind];
        let mut args = vec![verb.to_vec(), key];
        for _ in 0..n {
            let member = self.name("m", CHURN_NAMES);
            let more = match kind {
                0 => vec![member],
                1 => vec![member, b"v".to_vec()],
                _ => vec![self.prng.range(0, 100).to_string().into_bytes(), member],
            };
            if encoded_size(&args) + encoded_size(&more) - 4 > self.budget {
                break;
            }
            args.extend(more);
        }
        args
    }

    fn json(&mut self) -> Vec<Vec<u8>> {
        let key = self.name("j", CHURNED);
        let words: Vec<&[u8]> = match self.prng.index(6) {
            0 => vec![
                b"JSON.SET",
                &key,
                b"$",
                br#"{"a":1,"b":[true,null],"c":{"d":"e"}}"#,
            ],
            1 => vec![b"JSON.NUMINCRBY", &key, b"$.a", b"2"],
            2 => vec![b"JSON.ARRAPPEND", &key, b"$.b", b"3"],
            3 => vec![b"JSON.DEL", &key, b"$.c"],
            4 => vec![b"JSON.STRAPPEND", &key, b".c.d", br#""f""#],
            _ => vec![b"JSON.GET", &key, b"$"],
        };
        command(&words)
    }
}

/// The reference: a [`RedisStateMachine`] of its own, over a fault-free grid, executing the
/// committed log in order; its digest is kept as it writes.
pub struct RedisReference {
    machine: RedisStateMachine,
    _grid: SimGrid,
    executed: u64,
}

/// The reference checkpoints now and then, so that its grid reuses the space compaction frees.
const REFERENCE_CHECKPOINT_EVERY: u64 = 256;

impl RedisReference {
    fn new(config: &Config) -> RedisReference {
        let grid = SimGrid::new(
            config.grid_block_size as usize,
            Ppm::NEVER,
            Prng::new(0x5eed),
        );
        let mut machine = RedisStateMachine::new(config, grid.handle());
        machine
            .lsm()
            .track_digest()
            .expect("an empty state has a digest");
        RedisReference {
            machine,
            _grid: grid,
            executed: 0,
        }
    }
}

impl Reference for RedisReference {
    type Op = RedisOp;

    fn is_read(op: &RedisOp) -> bool {
        RedisStateMachine::is_read_only(op.operation)
    }

    fn execute(&mut self, op: &RedisOp, index: u64, timestamp: u64) -> Vec<u8> {
        let header = EntryHeader {
            checksum: 0,
            body_checksum: 0,
            parent: 0,
            operation: op.operation,
            cluster: 0,
            index,
            term: 0,
            timestamp,
            client: 0,
            request: 0,
            size: op.body.len() as u32,
        };
        let mut reply = Vec::new();
        self.machine
            .apply(&header, &op.body, &mut reply)
            .expect("the reference's grid never fails");
        self.executed += 1;
        if self.executed.is_multiple_of(REFERENCE_CHECKPOINT_EVERY) {
            let mut bytes = Vec::new();
            self.machine
                .checkpoint(&mut bytes)
                .expect("the reference's grid never fails");
            self.machine.checkpoint_durable();
        }
        reply
    }

    fn digest(&mut self) -> u64 {
        self.machine.digest().expect("the tracked digest")
    }
}
