//! Cost per member against collection size, in the state machine alone (production LSM
//! options over an in-memory grid: CPU, not disk or network). For each family and size (1k,
//! 100k, 1M members) a fresh machine holds the same total data: the collection measured, and
//! a ballast collection of the same kind with the rest, so that only the collection's size
//! differs between the columns (not the LSM's depth or its compaction debt). Then it times a
//! batch of operations on the collection:
//!
//!   cargo run --release -p ziggy-redis --example collections_bench [-- --max 1000000]
//!       [--only ZRANGEBYSCORE]   # the families whose name starts so
//!
//! Then it times `DEL` of the 1M-member set (one entry) and the reaper's sweep that reclaims
//! its members. Prints a Markdown table; `docs/bench-collections.md` holds the figures.

use std::time::Instant;
use ziggy_core::config::Config;
use ziggy_core::lsm::MemoryStore;
use ziggy_core::state_machine::StateMachine;
use ziggy_core::wal::header::EntryHeader;
use ziggy_redis::{
    decode_expired_reply, decode_sweep_reply, encode_group, expired_group, sweep_group,
    RedisStateMachine,
};

struct Machine {
    machine: RedisStateMachine,
    index: u64,
    body: Vec<u8>,
    reply: Vec<u8>,
}

impl Machine {
    fn new() -> Machine {
        let config = Config::production();
        let grid = Box::new(MemoryStore::new(
            config.grid_block_size as usize,
            64,
            1 << 16,
        ));
        Machine {
            machine: RedisStateMachine::new(&config, grid),
            index: 0,
            body: Vec::new(),
            reply: Vec::new(),
        }
    }

    /// Applies one write group, as the replica would; its replies' bytes.
    fn write(&mut self, group: &[Vec<Vec<u8>>]) -> &[u8] {
        self.body.clear();
        encode_group(group, &mut self.body);
        self.index += 1;
        let op = RedisStateMachine::WRITE;
        let timestamp = 1_700_000_000_000_000_000 + self.index * 1_000_000;
        let header = EntryHeader::new(op, 1, self.index, 1, timestamp, 1, 1, 0, &self.body);
        self.machine
            .apply(&header, &self.body, &mut self.reply)
            .unwrap();
        &self.reply
    }

    /// Runs one read group.
    fn read(&mut self, group: &[Vec<Vec<u8>>]) -> &[u8] {
        self.body.clear();
        encode_group(group, &mut self.body);
        let timestamp = 1_700_000_000_000_000_000 + self.index * 1_000_000;
        let op = RedisStateMachine::READ;
        self.machine
            .query(op, &self.body, timestamp, &mut self.reply)
            .unwrap();
        &self.reply
    }
}

fn command(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// Adds members `from..to` to the collection at `key`, 100 a group, with `add(key, i)`.
fn fill(m: &mut Machine, key: &[u8], from: usize, to: usize, add: &Add) {
    let mut group = Vec::with_capacity(100);
    for i in from..to {
        group.push(add(key, i));
        if group.len() == 100 {
            m.write(&group);
            group.clear();
        }
    }
    if !group.is_empty() {
        m.write(&group);
    }
}

/// Times `ops` operations, each a one-command group made by `op(i)`: µs per operation.
fn time(m: &mut Machine, ops: usize, write: bool, op: &dyn Fn(usize) -> Vec<Vec<u8>>) -> f64 {
    let start = Instant::now();
    for i in 0..ops {
        let group = [op(i)];
        if write {
            m.write(&group);
        } else {
            m.read(&group);
        }
    }
    start.elapsed().as_secs_f64() * 1e6 / ops as f64
}

type Add = dyn Fn(&[u8], usize) -> Vec<Vec<u8>>;

struct Family {
    name: &'static str,
    add: Box<Add>,
    /// The measured operation at a size (its argument: the op's number).
    op: Box<dyn Fn(usize) -> Vec<Vec<u8>>>,
    write: bool,
}

fn families(max: usize) -> Vec<Family> {
    let member = |i: usize| {
        format!(
            "member:{:012}",
            (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % (1 << 40)
        )
        .into_bytes()
    };
    let fresh = move |i: usize| {
        format!(
            "fresh:{:012}",
            (i as u64).wrapping_mul(0x9E37_79B9) % (1 << 40)
        )
        .into_bytes()
    };
    vec![
        Family {
            name: "SADD (new member)",
            add: Box::new(move |k, i| command(&[b"SADD", k, &member(i)])),
            op: Box::new(move |i| command(&[b"SADD", b"c", &fresh(i)])),
            write: true,
        },
        Family {
            name: "SISMEMBER",
            add: Box::new(move |k, i| command(&[b"SADD", k, &member(i)])),
            op: Box::new(move |i| command(&[b"SISMEMBER", b"c", &member(i * 7919 % max.max(1))])),
            write: false,
        },
        Family {
            name: "HSET (new field)",
            add: Box::new(move |k, i| command(&[b"HSET", k, &member(i), b"value"])),
            op: Box::new(move |i| command(&[b"HSET", b"c", &fresh(i), b"value"])),
            write: true,
        },
        Family {
            name: "HGET",
            add: Box::new(move |k, i| command(&[b"HSET", k, &member(i), b"value"])),
            op: Box::new(move |i| command(&[b"HGET", b"c", &member(i * 7919 % max.max(1))])),
            write: false,
        },
        Family {
            name: "ZADD (new member)",
            add: Box::new(move |k, i| {
                command(&[b"ZADD", k, (i % 1000).to_string().as_bytes(), &member(i)])
            }),
            op: Box::new(move |i| {
                command(&[b"ZADD", b"c", (i % 1000).to_string().as_bytes(), &fresh(i)])
            }),
            write: true,
        },
        Family {
            name: "ZRANGEBYSCORE … LIMIT 0 10",
            add: Box::new(move |k, i| {
                command(&[b"ZADD", k, (i % 1000).to_string().as_bytes(), &member(i)])
            }),
            op: Box::new(move |i| {
                let min = (i % 990).to_string();
                command(&[
                    b"ZRANGEBYSCORE",
                    b"c",
                    min.as_bytes(),
                    b"+inf",
                    b"LIMIT",
                    b"0",
                    b"10",
                ])
            }),
            write: false,
        },
        Family {
            name: "LPUSH + RPOP",
            add: Box::new(move |k, i| command(&[b"RPUSH", k, &member(i)])),
            op: Box::new(move |i| {
                if i % 2 == 0 {
                    command(&[b"LPUSH", b"c", b"pushed"])
                } else {
                    command(&[b"RPOP", b"c"])
                }
            }),
            write: true,
        },
        Family {
            name: "LINDEX (middle)",
            add: Box::new(move |k, i| command(&[b"RPUSH", k, &member(i)])),
            op: Box::new(move |_| command(&[b"LINDEX", b"c", b"500"])),
            write: false,
        },
    ]
}

fn main() {
    let max: usize = std::env::args()
        .skip_while(|a| a != "--max")
        .nth(1)
        .map(|v| v.parse().expect("--max N"))
        .unwrap_or(1_000_000);
    let sizes: Vec<usize> = [1_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&s| s <= max)
        .collect();
    let ops = 20_000;
    println!(
        "| operation | {} | ratio largest / smallest |",
        sizes
            .iter()
            .map(|s| format!("{s} members (µs/op)"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}---:|", "---:|".repeat(sizes.len()));
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    let chosen = families(max)
        .into_iter()
        .filter(|f| only.as_ref().is_none_or(|o| f.name.starts_with(o.as_str())));
    for family in chosen {
        let mut row = Vec::new();
        for &size in &sizes {
            let mut m = Machine::new();
            fill(&mut m, b"ballast", 0, max - size, &*family.add);
            fill(&mut m, b"c", 0, size, &*family.add);
            row.push(time(&mut m, ops, family.write, &*family.op));
            eprintln!(
                "{}: {} members: {:.2} µs/op",
                family.name,
                size,
                row.last().unwrap()
            );
        }
        let ratio = row.last().unwrap() / row[0];
        println!(
            "| {} | {} | {:.2} |",
            family.name,
            row.iter()
                .map(|t| format!("{t:.2}"))
                .collect::<Vec<_>>()
                .join(" | "),
            ratio
        );
    }
    // DEL of the largest set: one entry; then the sweep reclaims its members.
    let mut m = Machine::new();
    let size = *sizes.last().unwrap();
    fill(&mut m, b"big", 0, size, &|k, i| {
        command(&[b"SADD", k, format!("m{i}").as_bytes()])
    });
    let start = Instant::now();
    let reply = m.write(&[command(&[b"DEL", b"big"])]).to_vec();
    let del = start.elapsed();
    assert_eq!(reply, b":1\r\n");
    let start = Instant::now();
    let mut sweeps = 0;
    loop {
        let found = decode_expired_reply(m.read(&expired_group(256, b""))).unwrap();
        let Some(&id) = found.dead.first() else { break };
        let mut cursor = Vec::new();
        loop {
            let swept = decode_sweep_reply(m.write(&sweep_group(id, &cursor))).unwrap();
            sweeps += 1;
            if swept.cursor.is_empty() {
                break;
            }
            cursor = swept.cursor;
        }
    }
    let sweep = start.elapsed();
    println!();
    println!(
        "DEL of a {size}-member set: {:.3} ms (one entry); the sweep reclaimed its members in {sweeps} entries, {:.2} s",
        del.as_secs_f64() * 1e3,
        sweep.as_secs_f64()
    );
}
