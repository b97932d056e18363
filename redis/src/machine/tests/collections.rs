//! Collections in the state machine: Redis's replies and errors, members as their own LSM keys
//! (removal in O(1), reclaimed by the sweep), and a model-based property test against an
//! in-memory model of Redis's semantics through flushes, compactions, crashes and recovery.

use super::*;
use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use ziggy_core::io::{ReadError, WriteError};
use ziggy_core::lsm::grid::{BlockStore, GridError};

/// An in-memory grid the test keeps a handle on, to cut its power.
#[derive(Clone)]
struct SharedGrid(Rc<RefCell<MemoryStore>>);

impl BlockStore for SharedGrid {
    fn block_size(&self) -> usize {
        self.0.borrow().block_size()
    }
    fn block_count(&self) -> u64 {
        self.0.borrow().block_count()
    }
    fn grow(&mut self, count: u64) -> Result<(), GridError> {
        self.0.borrow_mut().grow(count)
    }
    fn read_block(&mut self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.0.borrow_mut().read_block(address, buf)
    }
    fn write_block(&mut self, address: u64, data: &[u8]) -> Result<(), WriteError> {
        self.0.borrow_mut().write_block(address, data)
    }
    fn sync(&mut self) -> Result<(), WriteError> {
        self.0.borrow_mut().sync()
    }
}

/// A harness whose grid can crash: checkpoints as the replica takes them (grid synced, then
/// durable), and a crash that tears the grid's unsynced writes, reopens a machine on it from
/// the last checkpoint and replays the entries after it, as a replica recovers from its WAL.
struct Crashable {
    h: Harness,
    grid: SharedGrid,
    config: Config,
    checkpoint: Vec<u8>,
}

impl Crashable {
    fn new() -> Crashable {
        let config = Config::test();
        let grid = SharedGrid(Rc::new(RefCell::new(MemoryStore::new(4096, 16, 1 << 16))));
        Crashable {
            h: Harness::on_grid(&config, Box::new(grid.clone())),
            grid,
            config,
            checkpoint: Vec::new(),
        }
    }

    fn checkpoint(&mut self) {
        let mut bytes = Vec::new();
        self.h.machine.checkpoint(&mut bytes).unwrap();
        self.grid.sync().unwrap();
        self.h.machine.checkpoint_durable();
        self.checkpoint = bytes;
        self.h.log.clear();
    }

    fn crash(&mut self, seed: u64) {
        self.grid.0.borrow_mut().crash(seed);
        let mut machine = RedisStateMachine::new(&self.config, Box::new(self.grid.clone()));
        machine
            .restore(&self.checkpoint)
            .expect("the checkpoint restores");
        let mut out = Vec::new();
        for (header, body) in &self.h.log {
            machine.apply(header, body, &mut out).unwrap();
        }
        self.h.machine = machine;
    }
}

fn array(items: &[&str]) -> Reply {
    Reply::Array(items.iter().map(|i| bulk(i)).collect())
}

fn set_of(items: &[&str]) -> Reply {
    Reply::Set(items.iter().map(|i| bulk(i)).collect())
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

impl Harness {
    /// Members of collections stored in the LSM, live or waiting for the sweep.
    fn member_keys(&mut self) -> usize {
        self.lsm_keys(crate::keyspace::MEMBERS)
    }

    fn dead_marks(&mut self) -> usize {
        self.lsm_keys(crate::keyspace::DEAD)
    }
}

#[test]
fn hashes() {
    let mut h = Harness::new();
    assert_eq!(h.cmd(&["HSET", "h", "a", "1", "b", "2"]), int(2));
    assert_eq!(
        h.cmd(&["HSET", "h", "a", "10", "c", "3"]),
        int(1),
        "a existed"
    );
    assert_eq!(h.cmd(&["HGET", "h", "a"]), bulk("10"));
    assert_eq!(h.cmd(&["HGET", "h", "zz"]), Reply::Nil);
    assert_eq!(h.cmd(&["HGET", "none", "a"]), Reply::Nil);
    assert_eq!(
        h.cmd(&["HMGET", "h", "a", "zz", "c"]),
        Reply::Array(vec![bulk("10"), Reply::Nil, bulk("3")])
    );
    assert_eq!(h.cmd(&["HLEN", "h"]), int(3));
    assert_eq!(h.cmd(&["HEXISTS", "h", "b"]), int(1));
    assert_eq!(h.cmd(&["HSTRLEN", "h", "a"]), int(2));
    assert_eq!(h.cmd(&["HSETNX", "h", "a", "x"]), int(0));
    assert_eq!(h.cmd(&["HSETNX", "h", "d", "4"]), int(1));
    assert_eq!(h.cmd(&["HKEYS", "h"]), array(&["a", "b", "c", "d"]));
    assert_eq!(h.cmd(&["HVALS", "h"]), array(&["10", "2", "3", "4"]));
    let all = Reply::Map(
        [("a", "10"), ("b", "2"), ("c", "3"), ("d", "4")]
            .iter()
            .map(|(f, v)| (bulk(f), bulk(v)))
            .collect(),
    );
    assert_eq!(h.cmd(&["HGETALL", "h"]), all);
    assert_eq!(h.cmd(&["HINCRBY", "h", "b", "5"]), int(7));
    assert_eq!(h.cmd(&["HINCRBY", "h", "new", "-3"]), int(-3));
    assert_eq!(h.cmd(&["HINCRBYFLOAT", "h", "c", "0.5"]), bulk("3.5"));
    assert_eq!(h.cmd(&["HSET", "h", "s", "abc"]), int(1));
    assert_eq!(
        h.cmd(&["HINCRBY", "h", "s", "1"]),
        err("ERR hash value is not an integer")
    );
    assert_eq!(
        h.cmd(&["HINCRBYFLOAT", "h", "s", "1"]),
        err("ERR hash value is not a float")
    );
    assert_eq!(
        h.cmd(&["HINCRBY", "h", "b", "x"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(h.cmd(&["HSET", "h", "m", "9223372036854775807"]), int(1));
    assert_eq!(
        h.cmd(&["HINCRBY", "h", "m", "1"]),
        err("ERR increment or decrement would overflow")
    );
    assert_eq!(
        h.cmd(&["HSET", "h", "a"]),
        err("ERR wrong number of arguments for 'hset' command")
    );
    assert_eq!(
        h.cmd(&["HSET", "h", "a", "1", "b"]),
        err("ERR wrong number of arguments for 'hset' command")
    );
    assert_eq!(h.cmd(&["HMSET", "h", "x", "1"]), ok());
    assert_eq!(h.cmd(&["HDEL", "h", "a", "zz", "b"]), int(2));
    assert_eq!(h.cmd(&["TYPE", "h"]), Reply::Status("hash".into()));
    assert_eq!(h.cmd(&["OBJECT", "ENCODING", "h"]), bulk("hashtable"));
    assert_eq!(h.cmd(&["SET", "str", "v"]), ok());
    assert_eq!(h.cmd(&["HGET", "str", "a"]), err(WRONGTYPE));
    assert_eq!(h.cmd(&["HSET", "str", "a", "1"]), err(WRONGTYPE));
    assert_eq!(h.cmd(&["GET", "h"]), err(WRONGTYPE));
    assert_eq!(h.cmd(&["INCR", "h"]), err(WRONGTYPE));
    // Emptied, it is gone.
    let fields = ["c", "d", "new", "s", "m", "x"];
    let mut hdel = vec!["HDEL", "h"];
    hdel.extend(fields);
    assert_eq!(h.cmd(&hdel), int(6));
    assert_eq!(h.cmd(&["EXISTS", "h"]), int(0));
    assert_eq!(h.cmd(&["HLEN", "h"]), int(0));
    assert_eq!(h.member_keys(), 0);
    assert_eq!(h.dead_marks(), 0, "nothing left to sweep");
}

#[test]
fn sets() {
    let mut h = Harness::new();
    assert_eq!(h.cmd(&["SADD", "s", "a", "b", "c", "a"]), int(3));
    assert_eq!(h.cmd(&["SADD", "s", "c", "d"]), int(1));
    assert_eq!(h.cmd(&["SCARD", "s"]), int(4));
    assert_eq!(h.cmd(&["SISMEMBER", "s", "a"]), int(1));
    assert_eq!(h.cmd(&["SISMEMBER", "s", "z"]), int(0));
    assert_eq!(
        h.cmd(&["SMISMEMBER", "s", "a", "z"]),
        Reply::Array(vec![int(1), int(0)])
    );
    assert_eq!(h.cmd(&["SMEMBERS", "s"]), set_of(&["a", "b", "c", "d"]));
    assert_eq!(h.cmd(&["SREM", "s", "a", "z"]), int(1));
    assert_eq!(h.cmd(&["SADD", "t", "c", "d", "e"]), int(3));
    assert_eq!(h.cmd(&["SINTER", "s", "t"]), set_of(&["c", "d"]));
    assert_eq!(h.cmd(&["SUNION", "s", "t"]), set_of(&["b", "c", "d", "e"]));
    assert_eq!(h.cmd(&["SDIFF", "s", "t"]), set_of(&["b"]));
    assert_eq!(h.cmd(&["SINTER", "s", "none"]), set_of(&[]));
    assert_eq!(h.cmd(&["SINTERSTORE", "i", "s", "t"]), int(2));
    assert_eq!(h.cmd(&["SMEMBERS", "i"]), set_of(&["c", "d"]));
    assert_eq!(h.cmd(&["SUNIONSTORE", "i", "s", "t"]), int(4), "replaces i");
    assert_eq!(h.cmd(&["SCARD", "i"]), int(4));
    assert_eq!(h.cmd(&["SDIFFSTORE", "i", "s", "s"]), int(0));
    assert_eq!(
        h.cmd(&["EXISTS", "i"]),
        int(0),
        "an empty result removes it"
    );
    assert_eq!(h.cmd(&["SMOVE", "s", "t", "b"]), int(1));
    assert_eq!(h.cmd(&["SMOVE", "s", "t", "zz"]), int(0));
    assert_eq!(h.cmd(&["SMEMBERS", "t"]), set_of(&["b", "c", "d", "e"]));
    assert_eq!(h.cmd(&["SET", "str", "v"]), ok());
    assert_eq!(h.cmd(&["SMOVE", "s", "str", "c"]), err(WRONGTYPE));
    assert_eq!(h.cmd(&["SADD", "str", "a"]), err(WRONGTYPE));
    assert_eq!(h.cmd(&["SUNION", "s", "str"]), err(WRONGTYPE));
    assert_eq!(h.cmd(&["TYPE", "t"]), Reply::Status("set".into()));
    assert_eq!(
        h.cmd(&["SCAN", "0", "TYPE", "set"]),
        Reply::Array(vec![bulk("0"), array(&["s", "t"])])
    );
    // Draws: distinct members of the set, as many as asked for (at most all).
    let Reply::Array(drawn) = h.cmd(&["SRANDMEMBER", "t", "3"]) else {
        panic!()
    };
    let distinct: BTreeSet<_> = drawn.iter().map(|r| format!("{r:?}")).collect();
    assert_eq!((drawn.len(), distinct.len()), (3, 3));
    let Reply::Array(drawn) = h.cmd(&["SRANDMEMBER", "t", "-10"]) else {
        panic!()
    };
    assert_eq!(drawn.len(), 10, "repeats allowed");
    assert_eq!(h.cmd(&["SRANDMEMBER", "t", "100"]), {
        let Reply::Array(all) = h.cmd(&["SRANDMEMBER", "t", "100"]) else {
            panic!()
        };
        assert_eq!(all.len(), 4);
        Reply::Array(all)
    });
    let Reply::Set(popped) = h.cmd(&["SPOP", "t", "3"]) else {
        panic!()
    };
    assert_eq!(popped.len(), 3);
    assert_eq!(h.cmd(&["SCARD", "t"]), int(1));
    assert_eq!(
        h.cmd(&["SPOP", "t", "-1"]),
        err("ERR value is out of range, must be positive")
    );
}

#[test]
fn lists() {
    let mut h = Harness::new();
    assert_eq!(h.cmd(&["RPUSH", "l", "a", "b", "c"]), int(3));
    assert_eq!(h.cmd(&["LPUSH", "l", "z", "y"]), int(5));
    assert_eq!(
        h.cmd(&["LRANGE", "l", "0", "-1"]),
        array(&["y", "z", "a", "b", "c"])
    );
    assert_eq!(h.cmd(&["LRANGE", "l", "-2", "100"]), array(&["b", "c"]));
    assert_eq!(h.cmd(&["LRANGE", "l", "3", "1"]), array(&[]));
    assert_eq!(h.cmd(&["LLEN", "l"]), int(5));
    assert_eq!(h.cmd(&["LINDEX", "l", "0"]), bulk("y"));
    assert_eq!(h.cmd(&["LINDEX", "l", "-1"]), bulk("c"));
    assert_eq!(h.cmd(&["LINDEX", "l", "9"]), Reply::Nil);
    assert_eq!(h.cmd(&["LSET", "l", "1", "Z"]), ok());
    assert_eq!(
        h.cmd(&["LSET", "l", "9", "x"]),
        err("ERR index out of range")
    );
    assert_eq!(h.cmd(&["LSET", "none", "0", "x"]), err("ERR no such key"));
    assert_eq!(h.cmd(&["LPOP", "l"]), bulk("y"));
    assert_eq!(h.cmd(&["RPOP", "l", "2"]), array(&["c", "b"]));
    assert_eq!(h.cmd(&["LPOP", "none", "2"]), Reply::Nil, "RESP3's null");
    assert_eq!(h.cmd(&["RPUSH", "l", "a", "q", "a"]), int(5));
    assert_eq!(h.cmd(&["LPOS", "l", "a"]), int(1));
    assert_eq!(h.cmd(&["LPOS", "l", "a", "RANK", "-1"]), int(4));
    assert_eq!(
        h.cmd(&["LPOS", "l", "a", "COUNT", "0"]),
        Reply::Array(vec![int(1), int(2), int(4)])
    );
    assert_eq!(h.cmd(&["LREM", "l", "-2", "a"]), int(2));
    assert_eq!(h.cmd(&["LRANGE", "l", "0", "-1"]), array(&["Z", "a", "q"]));
    assert_eq!(h.cmd(&["LINSERT", "l", "BEFORE", "q", "p"]), int(4));
    assert_eq!(h.cmd(&["LINSERT", "l", "AFTER", "nope", "p"]), int(-1));
    assert_eq!(h.cmd(&["LTRIM", "l", "1", "-2"]), ok());
    assert_eq!(h.cmd(&["LRANGE", "l", "0", "-1"]), array(&["a", "p"]));
    assert_eq!(h.cmd(&["LMOVE", "l", "m", "LEFT", "RIGHT"]), bulk("a"));
    assert_eq!(
        h.cmd(&["LMOVE", "l", "l", "RIGHT", "LEFT"]),
        bulk("p"),
        "a rotation"
    );
    assert_eq!(h.cmd(&["LRANGE", "m", "0", "-1"]), array(&["a"]));
    assert_eq!(h.cmd(&["TYPE", "l"]), Reply::Status("list".into()));
    assert_eq!(h.cmd(&["SET", "s", "v"]), ok());
    assert_eq!(h.cmd(&["LPUSH", "s", "x"]), err(WRONGTYPE));
    assert_eq!(h.cmd(&["LMOVE", "l", "s", "LEFT", "LEFT"]), err(WRONGTYPE));
    assert_eq!(h.cmd(&["RPOP", "l"]), bulk("p"));
    assert_eq!(h.cmd(&["EXISTS", "l"]), int(0), "emptied, removed");
    assert_eq!(h.cmd(&["LPUSHX", "l", "x"]), int(0));
    assert_eq!(h.cmd(&["LTRIM", "m", "1", "0"]), ok());
    assert_eq!(h.cmd(&["EXISTS", "m"]), int(0), "trimmed to nothing");
    assert_eq!(h.member_keys(), 0);
}

fn d(x: f64) -> Reply {
    Reply::Double(x)
}

fn scored(items: &[(&str, f64)]) -> Reply {
    Reply::Array(
        items
            .iter()
            .map(|(m, s)| Reply::Array(vec![bulk(m), d(*s)]))
            .collect(),
    )
}

#[test]
fn sorted_sets() {
    let mut h = Harness::new();
    assert_eq!(h.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c"]), int(3));
    assert_eq!(
        h.cmd(&["ZADD", "z", "CH", "5", "a", "4", "d"]),
        int(2),
        "a changed, d added"
    );
    assert_eq!(h.cmd(&["ZADD", "z", "NX", "9", "a", "-1", "e"]), int(1));
    assert_eq!(
        h.cmd(&["ZADD", "z", "XX", "GT", "CH", "0", "b", "7", "c"]),
        int(1),
        "c up, b not"
    );
    assert_eq!(h.cmd(&["ZADD", "z", "INCR", "10", "a"]), d(15.0));
    assert_eq!(h.cmd(&["ZADD", "z", "NX", "INCR", "1", "a"]), Reply::Nil);
    assert_eq!(h.cmd(&["ZSCORE", "z", "c"]), d(7.0));
    assert_eq!(
        h.cmd(&["ZMSCORE", "z", "b", "zz"]),
        Reply::Array(vec![d(2.0), Reply::Nil])
    );
    assert_eq!(h.cmd(&["ZCARD", "z"]), int(5));
    // e -1, b 2, d 4, c 7, a 15
    assert_eq!(
        h.cmd(&["ZRANGE", "z", "0", "-1"]),
        array(&["e", "b", "d", "c", "a"])
    );
    assert_eq!(
        h.cmd(&["ZRANGE", "z", "0", "1", "WITHSCORES"]),
        scored(&[("e", -1.0), ("b", 2.0)])
    );
    assert_eq!(h.cmd(&["ZREVRANGE", "z", "0", "1"]), array(&["a", "c"]));
    assert_eq!(
        h.cmd(&["ZRANGE", "z", "(2", "7", "BYSCORE"]),
        array(&["d", "c"])
    );
    assert_eq!(
        h.cmd(&["ZRANGE", "z", "+inf", "-inf", "BYSCORE", "REV", "LIMIT", "1", "2"]),
        array(&["c", "d"])
    );
    assert_eq!(
        h.cmd(&["ZRANGEBYSCORE", "z", "-inf", "4"]),
        array(&["e", "b", "d"])
    );
    assert_eq!(
        h.cmd(&["ZREVRANGEBYSCORE", "z", "7", "(2"]),
        array(&["c", "d"])
    );
    assert_eq!(h.cmd(&["ZCOUNT", "z", "2", "(7"]), int(2));
    assert_eq!(h.cmd(&["ZRANK", "z", "d"]), int(2));
    assert_eq!(h.cmd(&["ZREVRANK", "z", "d"]), int(2));
    assert_eq!(
        h.cmd(&["ZRANK", "z", "a", "WITHSCORE"]),
        Reply::Array(vec![int(4), d(15.0)])
    );
    assert_eq!(h.cmd(&["ZRANK", "z", "zz"]), Reply::Nil);
    assert_eq!(h.cmd(&["ZINCRBY", "z", "-20", "a"]), d(-5.0));
    assert_eq!(h.cmd(&["ZRANGE", "z", "0", "0"]), array(&["a"]));
    assert_eq!(
        h.cmd(&["ZPOPMIN", "z"]),
        Reply::Array(vec![bulk("a"), d(-5.0)])
    );
    assert_eq!(
        h.cmd(&["ZPOPMAX", "z", "2"]),
        scored(&[("c", 7.0), ("d", 4.0)])
    );
    assert_eq!(h.cmd(&["ZREM", "z", "e", "zz"]), int(1));
    assert_eq!(
        h.cmd(&["ZRANGE", "z", "0", "-1", "WITHSCORES"]),
        scored(&[("b", 2.0)])
    );
    // Lex ranges: equal scores order by member.
    h.cmd(&["ZADD", "lex", "0", "a", "0", "b", "0", "c", "0", "d"]);
    assert_eq!(
        h.cmd(&["ZRANGEBYLEX", "lex", "[b", "(d"]),
        array(&["b", "c"])
    );
    assert_eq!(
        h.cmd(&["ZRANGE", "lex", "+", "[c", "BYLEX", "REV"]),
        array(&["d", "c"])
    );
    assert_eq!(
        h.cmd(&["ZRANGEBYLEX", "lex", "-", "+", "LIMIT", "1", "1"]),
        array(&["b"])
    );
    assert_eq!(
        h.cmd(&["ZRANGEBYLEX", "lex", "b", "+"]),
        err("ERR min or max not valid string range item")
    );
    assert_eq!(h.cmd(&["ZREMRANGEBYRANK", "lex", "0", "1"]), int(2));
    assert_eq!(h.cmd(&["ZREMRANGEBYSCORE", "lex", "-inf", "+inf"]), int(2));
    assert_eq!(h.cmd(&["EXISTS", "lex"]), int(0));
    // Errors and types.
    assert_eq!(
        h.cmd(&["ZADD", "z", "x", "m"]),
        err("ERR value is not a valid float")
    );
    assert_eq!(
        h.cmd(&["ZADD", "z", "NX", "XX", "1", "m"]),
        err("ERR XX and NX options at the same time are not compatible")
    );
    assert_eq!(
        h.cmd(&["ZADD", "z", "GT", "LT", "1", "m"]),
        err("ERR GT, LT, and/or NX options at the same time are not compatible")
    );
    assert_eq!(
        h.cmd(&["ZADD", "z", "INCR", "1", "m", "2", "n"]),
        err("ERR INCR option supports a single increment-element pair")
    );
    assert_eq!(
        h.cmd(&["ZADD", "z", "1"]),
        err("ERR wrong number of arguments for 'zadd' command")
    );
    assert_eq!(
        h.cmd(&["ZADD", "z", "1", "m", "2"]),
        err("ERR syntax error")
    );
    assert_eq!(
        h.cmd(&["ZRANGEBYSCORE", "z", "x", "1"]),
        err("ERR min or max is not a float")
    );
    assert_eq!(
        h.cmd(&["ZADD", "z", "inf", "top", "-inf", "bottom"]),
        int(2)
    );
    assert_eq!(
        h.cmd(&["ZADD", "z", "INCR", "-inf", "top"]),
        err("ERR resulting score is not a number (NaN)")
    );
    assert_eq!(
        h.cmd(&["ZRANGE", "z", "0", "-1"]),
        array(&["bottom", "b", "top"])
    );
    assert_eq!(h.cmd(&["TYPE", "z"]), Reply::Status("zset".into()));
    assert_eq!(h.cmd(&["SET", "s", "v"]), ok());
    assert_eq!(h.cmd(&["ZADD", "s", "1", "m"]), err(WRONGTYPE));
    assert_eq!(h.cmd(&["DEL", "z"]), int(1));
    h.reap_pass(10);
    assert_eq!(
        h.member_keys() + h.lsm_keys(crate::keyspace::SCORES),
        0,
        "both indexes swept"
    );
}

#[test]
fn a_removed_collection_is_one_write_and_its_members_are_swept() {
    let mut h = Harness::new();
    let members: Vec<String> = (0..3000).map(|i| format!("m{i:05}")).collect();
    for chunk in members.chunks(500) {
        let mut sadd = vec!["SADD", "big"];
        sadd.extend(chunk.iter().map(String::as_str));
        assert_eq!(h.cmd(&sadd), int(500));
    }
    assert_eq!(h.member_keys(), 3000);
    let index = h.index;
    assert_eq!(h.cmd(&["DEL", "big"]), int(1));
    assert_eq!(h.index, index + 1, "one entry");
    assert_eq!(h.cmd(&["SCARD", "big"]), int(0));
    assert_eq!(
        h.cmd(&["SADD", "big", "fresh"]),
        int(1),
        "a new set, not the old one"
    );
    assert_eq!(h.cmd(&["SMEMBERS", "big"]), set_of(&["fresh"]));
    assert_eq!((h.member_keys(), h.dead_marks()), (3001, 1));
    let found = h.expired(10, b"");
    assert_eq!(found.dead.len(), 1);
    let first = h.sweep(found.dead[0], b"");
    assert_eq!(first.deleted, crate::SWEEP_MAX as u64);
    assert!(!first.cursor.is_empty(), "more to come");
    h.reap_pass(10);
    assert_eq!(
        (h.member_keys(), h.dead_marks()),
        (1, 0),
        "all swept but the new set's"
    );
    assert_eq!(
        h.sweep(found.dead[0], b"").deleted,
        0,
        "a swept id stays swept"
    );
    // Overwritten by another type, or expired: its members are swept too.
    h.cmd(&["HSET", "h", "f", "v"]);
    h.cmd(&["SET", "h", "string now"]);
    h.cmd(&["SADD", "e", "x", "y"]);
    h.cmd(&["PEXPIRE", "e", "5"]);
    h.now += 10;
    assert_eq!(h.cmd(&["SADD", "e", "z"]), int(1), "expired: a new set");
    assert_eq!(h.cmd(&["SMEMBERS", "e"]), set_of(&["z"]));
    h.reap_pass(10);
    assert_eq!(
        (h.member_keys(), h.dead_marks()),
        (2, 0),
        "big's fresh, e's z"
    );
    // A rename moves the record; the members follow their id.
    assert_eq!(h.cmd(&["RENAME", "big", "moved"]), ok());
    assert_eq!(h.cmd(&["SMEMBERS", "moved"]), set_of(&["fresh"]));
    h.reap_pass(10);
    assert_eq!(h.member_keys(), 2, "nothing swept");
}

#[test]
fn a_key_removed_and_made_again_in_one_entry_starts_empty() {
    let mut h = Harness::new();
    h.cmd(&["SADD", "s", "old"]);
    let replies = h.group(&[
        &["DEL", "s"],
        &["SADD", "s", "a"],
        &["DEL", "s"],
        &["SADD", "s", "b"],
    ]);
    assert_eq!(replies, vec![int(1), int(1), int(1), int(1)]);
    assert_eq!(h.cmd(&["SMEMBERS", "s"]), set_of(&["b"]));
}

#[test]
fn hscan_and_sscan_walk_every_member_once() {
    let mut h = Harness::new();
    for i in 0..300 {
        h.cmd(&["HSET", "h", &format!("field:{i:03}"), &i.to_string()]);
        h.cmd(&["SADD", "s", &format!("m:{i:03}")]);
    }
    for (command, key, width) in [("HSCAN", "h", 2), ("SSCAN", "s", 1)] {
        let (mut cursor, mut seen, mut calls) = ("0".to_string(), BTreeSet::new(), 0);
        loop {
            let Reply::Array(page) = h.cmd(&[command, key, &cursor, "COUNT", "7"]) else {
                panic!()
            };
            let [Reply::Bulk(next), Reply::Array(items)] = <[Reply; 2]>::try_from(page).unwrap()
            else {
                panic!()
            };
            for item in items.chunks(width) {
                assert!(seen.insert(format!("{:?}", item[0])), "once each");
            }
            calls += 1;
            cursor = String::from_utf8(next).unwrap();
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 300, "{command}");
        assert!(calls > 1, "{command} took pages");
    }
    let Reply::Array(page) = h.cmd(&[
        "HSCAN",
        "h",
        "0",
        "MATCH",
        "field:00*",
        "NOVALUES",
        "COUNT",
        "1000",
    ]) else {
        panic!()
    };
    assert_eq!(
        page[1],
        Reply::Array((0..10).map(|i| bulk(&format!("field:{i:03}"))).collect())
    );
}

/// What Redis would hold: each key a hash, a set, a list or a string.
#[derive(Clone, Debug)]
enum Value {
    Hash(BTreeMap<String, String>),
    Set(BTreeSet<String>),
    List(std::collections::VecDeque<String>),
    ZSet(BTreeMap<String, f64>),
    Text(String),
}

#[derive(Clone, Debug)]
enum Op {
    HSet(usize, usize, u8),
    HDel(usize, usize),
    HIncrBy(usize, usize, i8),
    SAdd(usize, usize),
    SRem(usize, usize),
    SMove(usize, usize, usize),
    SInterStore(usize, usize, usize),
    Del(usize),
    Set(usize),
    Rename(usize, usize),
    Push(usize, bool, usize),
    Pop(usize, bool),
    LSet(usize, i8, usize),
    LRem(usize, i8, usize),
    LInsert(usize, bool, usize, usize),
    LTrim(usize, i8, i8),
    LMove(usize, usize, bool, bool),
    ZAdd(usize, usize, i8),
    ZRem(usize, usize),
    ZIncrBy(usize, usize, i8),
    ZPopMin(usize),
    /// Looks and sweeps, as the reaper does.
    Reap,
    /// A checkpoint, as the replica takes one.
    Checkpoint,
    /// A power loss and a restart from the last checkpoint and the log after it.
    Crash(u64),
}

const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

fn member(m: usize) -> String {
    format!("member-with-a-longer-name-{m:02}")
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    let m = 0..24usize;
    prop_oneof![
        4 => (k.clone(), m.clone(), any::<u8>()).prop_map(|(k, m, v)| Op::HSet(k, m, v)),
        2 => (k.clone(), m.clone()).prop_map(|(k, m)| Op::HDel(k, m)),
        1 => (k.clone(), m.clone(), any::<i8>()).prop_map(|(k, m, d)| Op::HIncrBy(k, m, d)),
        4 => (k.clone(), m.clone()).prop_map(|(k, m)| Op::SAdd(k, m)),
        2 => (k.clone(), m.clone()).prop_map(|(k, m)| Op::SRem(k, m)),
        1 => (k.clone(), k.clone(), m).prop_map(|(a, b, m)| Op::SMove(a, b, m)),
        1 => (k.clone(), k.clone(), k.clone()).prop_map(|(d, a, b)| Op::SInterStore(d, a, b)),
        1 => k.clone().prop_map(Op::Del),
        1 => k.clone().prop_map(Op::Set),
        1 => (k.clone(), k.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        3 => (k.clone(), any::<bool>(), 0..6usize).prop_map(|(k, l, m)| Op::Push(k, l, m)),
        2 => (k.clone(), any::<bool>()).prop_map(|(k, l)| Op::Pop(k, l)),
        1 => (k.clone(), -4..4i8, 0..6usize).prop_map(|(k, i, m)| Op::LSet(k, i, m)),
        1 => (k.clone(), -2..3i8, 0..6usize).prop_map(|(k, c, m)| Op::LRem(k, c, m)),
        1 => (k.clone(), any::<bool>(), 0..6usize, 0..6usize).prop_map(|(k, a, p, m)| Op::LInsert(k, a, p, m)),
        1 => (k.clone(), -5..5i8, -5..5i8).prop_map(|(k, a, b)| Op::LTrim(k, a, b)),
        1 => (k.clone(), k.clone(), any::<bool>(), any::<bool>()).prop_map(|(a, b, l, r)| Op::LMove(a, b, l, r)),
        3 => (k.clone(), 0..24usize, -3..3i8).prop_map(|(k, m, s)| Op::ZAdd(k, m, s)),
        1 => (k.clone(), 0..24usize).prop_map(|(k, m)| Op::ZRem(k, m)),
        1 => (k.clone(), 0..24usize, -3..3i8).prop_map(|(k, m, s)| Op::ZIncrBy(k, m, s)),
        1 => k.clone().prop_map(Op::ZPopMin),
        1 => Just(Op::Reap),
        1 => Just(Op::Checkpoint),
        1 => any::<u64>().prop_map(Op::Crash),
    ]
}

/// Applies `op` to the model: the reply Redis gives.
fn model_apply(model: &mut BTreeMap<usize, Value>, op: &Op) -> Reply {
    let wrong = || err(WRONGTYPE);
    match *op {
        Op::HSet(k, m, v) => match model
            .entry(k)
            .or_insert_with(|| Value::Hash(BTreeMap::new()))
        {
            Value::Hash(h) => int(h.insert(member(m), v.to_string()).is_none() as i64),
            _ => wrong(),
        },
        Op::HDel(k, m) => match model.get_mut(&k) {
            None => int(0),
            Some(Value::Hash(h)) => {
                let removed = h.remove(&member(m)).is_some();
                if h.is_empty() {
                    model.remove(&k);
                }
                int(removed as i64)
            }
            Some(_) => wrong(),
        },
        Op::HIncrBy(k, m, d) => match model
            .entry(k)
            .or_insert_with(|| Value::Hash(BTreeMap::new()))
        {
            Value::Hash(h) => {
                let old = h.get(&member(m)).map_or(Some(0), |v| v.parse::<i64>().ok());
                match old {
                    Some(old) => {
                        h.insert(member(m), (old + d as i64).to_string());
                        int(old + d as i64)
                    }
                    None => err("ERR hash value is not an integer"),
                }
            }
            _ => wrong(),
        },
        Op::SAdd(k, m) => match model
            .entry(k)
            .or_insert_with(|| Value::Set(BTreeSet::new()))
        {
            Value::Set(s) => int(s.insert(member(m)) as i64),
            _ => wrong(),
        },
        Op::SRem(k, m) => match model.get_mut(&k) {
            None => int(0),
            Some(Value::Set(s)) => {
                let removed = s.remove(&member(m));
                if s.is_empty() {
                    model.remove(&k);
                }
                int(removed as i64)
            }
            Some(_) => wrong(),
        },
        Op::SMove(a, b, m) => {
            let is_set = |v: Option<&Value>| v.is_none_or(|v| matches!(v, Value::Set(_)));
            if !is_set(model.get(&a)) || !is_set(model.get(&b)) {
                return wrong();
            }
            let has = matches!(model.get(&a), Some(Value::Set(s)) if s.contains(&member(m)));
            if !has {
                return int(0);
            }
            if a != b {
                model_apply(model, &Op::SRem(a, m));
                model_apply(model, &Op::SAdd(b, m));
            }
            int(1)
        }
        Op::SInterStore(d, a, b) => {
            let members = |v: Option<&Value>| match v {
                None => Some(BTreeSet::new()),
                Some(Value::Set(s)) => Some(s.clone()),
                Some(_) => None,
            };
            let (Some(x), Some(y)) = (members(model.get(&a)), members(model.get(&b))) else {
                return wrong();
            };
            let both: BTreeSet<String> = x.intersection(&y).cloned().collect();
            let n = both.len();
            if n == 0 {
                model.remove(&d);
            } else {
                model.insert(d, Value::Set(both));
            }
            int(n as i64)
        }
        Op::Del(k) => int(model.remove(&k).is_some() as i64),
        Op::Set(k) => {
            model.insert(k, Value::Text("text".into()));
            ok()
        }
        Op::Rename(a, b) => match model.remove(&a) {
            None => err("ERR no such key"),
            Some(v) => {
                model.insert(b, v);
                ok()
            }
        },
        Op::Push(k, left, m) => match model
            .entry(k)
            .or_insert_with(|| Value::List(Default::default()))
        {
            Value::List(l) => {
                if left {
                    l.push_front(member(m));
                } else {
                    l.push_back(member(m));
                }
                int(l.len() as i64)
            }
            _ => wrong(),
        },
        Op::Pop(k, left) => match model.get_mut(&k) {
            None => Reply::Nil,
            Some(Value::List(l)) => {
                let popped = if left { l.pop_front() } else { l.pop_back() };
                if l.is_empty() {
                    model.remove(&k);
                }
                popped.map_or(Reply::Nil, |p| bulk(&p))
            }
            Some(_) => wrong(),
        },
        Op::LSet(k, i, m) => match model.get_mut(&k) {
            None => err("ERR no such key"),
            Some(Value::List(l)) => {
                let n = l.len() as i64;
                let i = if i < 0 { i as i64 + n } else { i as i64 };
                if (0..n).contains(&i) {
                    l[i as usize] = member(m);
                    ok()
                } else {
                    err("ERR index out of range")
                }
            }
            Some(_) => wrong(),
        },
        Op::LRem(k, c, m) => match model.get_mut(&k) {
            None => int(0),
            Some(Value::List(l)) => {
                let target = member(m);
                let limit = if c == 0 {
                    usize::MAX
                } else {
                    c.unsigned_abs() as usize
                };
                let mut items: Vec<String> = l.iter().cloned().collect();
                if c < 0 {
                    items.reverse();
                }
                let mut removed = 0;
                items.retain(|e| {
                    let drop = removed < limit && *e == target;
                    removed += drop as usize;
                    !drop
                });
                if c < 0 {
                    items.reverse();
                }
                *l = items.into();
                if l.is_empty() {
                    model.remove(&k);
                }
                int(removed as i64)
            }
            Some(_) => wrong(),
        },
        Op::LInsert(k, after, p, m) => match model.get_mut(&k) {
            None => int(0),
            Some(Value::List(l)) => match l.iter().position(|e| *e == member(p)) {
                None => int(-1),
                Some(i) => {
                    l.insert(i + after as usize, member(m));
                    int(l.len() as i64)
                }
            },
            Some(_) => wrong(),
        },
        Op::LTrim(k, a, b) => match model.get_mut(&k) {
            None => ok(),
            Some(Value::List(l)) => {
                let n = l.len() as i64;
                let norm = |i: i64| if i < 0 { (i + n).max(0) } else { i };
                let (from, to) = (norm(a as i64), (norm(b as i64)).min(n - 1) + 1);
                let kept: Vec<String> = if from >= to {
                    Vec::new()
                } else {
                    l.iter()
                        .skip(from as usize)
                        .take((to - from) as usize)
                        .cloned()
                        .collect()
                };
                *l = kept.into();
                if l.is_empty() {
                    model.remove(&k);
                }
                ok()
            }
            Some(_) => wrong(),
        },
        Op::LMove(a, b, left, to_left) => {
            let is_list = |v: Option<&Value>| v.is_none_or(|v| matches!(v, Value::List(_)));
            match model.get(&a) {
                None => return Reply::Nil,
                Some(Value::List(_)) => {}
                Some(_) => return wrong(),
            }
            if !is_list(model.get(&b)) {
                return wrong();
            }
            let Some(Value::List(l)) = model.get_mut(&a) else {
                unreachable!()
            };
            let e = if left { l.pop_front() } else { l.pop_back() }.unwrap();
            if l.is_empty() {
                model.remove(&a);
            }
            let Value::List(d) = model
                .entry(b)
                .or_insert_with(|| Value::List(Default::default()))
            else {
                unreachable!()
            };
            if to_left {
                d.push_front(e.clone());
            } else {
                d.push_back(e.clone());
            }
            bulk(&e)
        }
        Op::ZAdd(k, m, score) => match model
            .entry(k)
            .or_insert_with(|| Value::ZSet(BTreeMap::new()))
        {
            Value::ZSet(z) => int(z.insert(member(m), score as f64).is_none() as i64),
            _ => wrong(),
        },
        Op::ZRem(k, m) => match model.get_mut(&k) {
            None => int(0),
            Some(Value::ZSet(z)) => {
                let removed = z.remove(&member(m)).is_some();
                if z.is_empty() {
                    model.remove(&k);
                }
                int(removed as i64)
            }
            Some(_) => wrong(),
        },
        Op::ZIncrBy(k, m, by) => match model
            .entry(k)
            .or_insert_with(|| Value::ZSet(BTreeMap::new()))
        {
            Value::ZSet(z) => {
                let score = z.entry(member(m)).or_insert(0.0);
                *score += by as f64;
                Reply::Double(*score)
            }
            _ => wrong(),
        },
        Op::ZPopMin(k) => match model.get_mut(&k) {
            None => Reply::Array(Vec::new()),
            Some(Value::ZSet(z)) => {
                let lowest = zset_order(z).into_iter().next().unwrap();
                z.remove(&lowest.0);
                if z.is_empty() {
                    model.remove(&k);
                }
                Reply::Array(vec![bulk(&lowest.0), Reply::Double(lowest.1)])
            }
            Some(_) => wrong(),
        },
        Op::Reap | Op::Checkpoint | Op::Crash(_) => Reply::Nil,
    }
}

/// A sorted set's members in Redis's order: by score, then by member.
fn zset_order(z: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let mut members: Vec<(String, f64)> = z.iter().map(|(m, s)| (m.clone(), *s)).collect();
    members.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    members
}

fn machine_apply(c: &mut Crashable, op: &Op) -> Reply {
    match *op {
        Op::Checkpoint => {
            c.checkpoint();
            Reply::Nil
        }
        Op::Crash(seed) => {
            c.crash(seed);
            Reply::Nil
        }
        _ => command_apply(&mut c.h, op),
    }
}

fn command_apply(h: &mut Harness, op: &Op) -> Reply {
    let (k, m) = (|k: usize| KEYS[k], member);
    match *op {
        Op::HSet(a, x, v) => h.cmd(&["HSET", k(a), &m(x), &v.to_string()]),
        Op::HDel(a, x) => h.cmd(&["HDEL", k(a), &m(x)]),
        Op::HIncrBy(a, x, d) => h.cmd(&["HINCRBY", k(a), &m(x), &d.to_string()]),
        Op::SAdd(a, x) => h.cmd(&["SADD", k(a), &m(x)]),
        Op::SRem(a, x) => h.cmd(&["SREM", k(a), &m(x)]),
        Op::SMove(a, b, x) => h.cmd(&["SMOVE", k(a), k(b), &m(x)]),
        Op::SInterStore(d, a, b) => h.cmd(&["SINTERSTORE", k(d), k(a), k(b)]),
        Op::Del(a) => h.cmd(&["DEL", k(a)]),
        Op::Set(a) => h.cmd(&["SET", k(a), "text"]),
        Op::Rename(a, b) => h.cmd(&["RENAME", k(a), k(b)]),
        Op::Push(a, left, x) => h.cmd(&[if left { "LPUSH" } else { "RPUSH" }, k(a), &m(x)]),
        Op::Pop(a, left) => h.cmd(&[if left { "LPOP" } else { "RPOP" }, k(a)]),
        Op::LSet(a, i, x) => h.cmd(&["LSET", k(a), &i.to_string(), &m(x)]),
        Op::LRem(a, c, x) => h.cmd(&["LREM", k(a), &c.to_string(), &m(x)]),
        Op::LInsert(a, after, p, x) => h.cmd(&[
            "LINSERT",
            k(a),
            if after { "AFTER" } else { "BEFORE" },
            &m(p),
            &m(x),
        ]),
        Op::LTrim(a, s, e) => h.cmd(&["LTRIM", k(a), &s.to_string(), &e.to_string()]),
        Op::LMove(a, b, l, r) => {
            let side = |left: bool| if left { "LEFT" } else { "RIGHT" };
            h.cmd(&["LMOVE", k(a), k(b), side(l), side(r)])
        }
        Op::ZAdd(a, x, score) => h.cmd(&["ZADD", k(a), &score.to_string(), &m(x)]),
        Op::ZRem(a, x) => h.cmd(&["ZREM", k(a), &m(x)]),
        Op::ZIncrBy(a, x, by) => h.cmd(&["ZINCRBY", k(a), &by.to_string(), &m(x)]),
        Op::ZPopMin(a) => h.cmd(&["ZPOPMIN", k(a)]),
        Op::Reap => {
            h.reap_pass(4);
            Reply::Nil
        }
        Op::Checkpoint | Op::Crash(_) => unreachable!("the crashable harness's"),
    }
}

/// The whole keyspace as the machine reports it, in the model's terms.
fn machine_state(h: &mut Harness) -> BTreeMap<usize, String> {
    let mut state = BTreeMap::new();
    for (i, key) in KEYS.iter().enumerate() {
        let shown = match h.cmd(&["TYPE", key]) {
            Reply::Status(t) if t == "none" => continue,
            Reply::Status(t) if t == "hash" => format!("{:?}", h.cmd(&["HGETALL", key])),
            Reply::Status(t) if t == "set" => format!("{:?}", h.cmd(&["SMEMBERS", key])),
            Reply::Status(t) if t == "list" => format!("{:?}", h.cmd(&["LRANGE", key, "0", "-1"])),
            Reply::Status(t) if t == "zset" => {
                format!("{:?}", h.cmd(&["ZRANGE", key, "0", "-1", "WITHSCORES"]))
            }
            Reply::Status(t) => format!("{:?}", (t, h.cmd(&["GET", key]))),
            other => panic!("TYPE answered {other:?}"),
        };
        state.insert(i, shown);
    }
    state
}

fn model_state(model: &BTreeMap<usize, Value>) -> BTreeMap<usize, String> {
    model
        .iter()
        .map(|(&k, v)| {
            let shown = match v {
                Value::Hash(h) => format!(
                    "{:?}",
                    Reply::Map(h.iter().map(|(f, v)| (bulk(f), bulk(v))).collect())
                ),
                Value::Set(s) => format!("{:?}", Reply::Set(s.iter().map(|m| bulk(m)).collect())),
                Value::List(l) => {
                    format!("{:?}", Reply::Array(l.iter().map(|e| bulk(e)).collect()))
                }
                Value::ZSet(z) => {
                    let members = zset_order(z);
                    let shown: Vec<(&str, f64)> =
                        members.iter().map(|(m, s)| (m.as_str(), *s)).collect();
                    format!("{:?}", scored(&shown))
                }
                Value::Text(t) => format!("{:?}", ("string".to_string(), bulk(t))),
            };
            (k, shown)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random hash, set, list and sorted-set commands agree with the model reply by reply, and
    /// the keyspace agrees after every command; a small memtable (4 KiB) makes the LSM flush and
    /// compact under them, and checkpoints and crashes (torn unsynced grid writes, a restart
    /// from the last checkpoint and a replay of the entries after it) come among them. A last
    /// reap pass leaves no member of a removed collection behind.
    #[test]
    fn collections_behave_as_the_model(ops in proptest::collection::vec(op(), 1..300)) {
        let mut c = Crashable::new();
        let mut model = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let expected = model_apply(&mut model, op);
            let got = machine_apply(&mut c, op);
            prop_assert_eq!(got, expected, "op {} {:?}", i, op);
            prop_assert_eq!(machine_state(&mut c.h), model_state(&model), "after op {} {:?}", i, op);
        }
        let h = &mut c.h;
        h.reap_pass(4);
        let live: u64 = model.values().map(|v| match v {
            Value::Hash(h) => h.len() as u64,
            Value::Set(s) => s.len() as u64,
            Value::List(l) => l.len() as u64,
            Value::ZSet(z) => 2 * z.len() as u64, // a member key and a score key each
            Value::Text(_) => 0,
        }).sum();
        let stored = h.member_keys() + h.lsm_keys(crate::keyspace::SCORES);
        prop_assert_eq!(stored as u64, live, "the sweep left dead members");
        prop_assert_eq!(h.dead_marks(), 0);
    }
}

#[test]
fn the_model_test_runs_through_flushes_compactions_and_crashes() {
    // The same generator, one long run: the LSM must have flushed and compacted under it, and
    // the machine crashed and recovered.
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let ops = proptest::collection::vec(op(), 2000..2001)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let mut c = Crashable::new();
    let mut model = BTreeMap::new();
    let (mut flushes, mut compactions, mut crashes) = (0, 0, 0);
    for op in &ops {
        if matches!(op, Op::Crash(_)) {
            let stats = c.h.machine.lsm.engine().stats();
            (flushes, compactions, crashes) = (
                flushes + stats.flushes,
                compactions + stats.compactions,
                crashes + 1,
            );
        }
        assert_eq!(
            machine_apply(&mut c, op),
            model_apply(&mut model, op),
            "{op:?}"
        );
    }
    assert_eq!(machine_state(&mut c.h), model_state(&model));
    let stats = c.h.machine.lsm.engine().stats();
    flushes += stats.flushes;
    compactions += stats.compactions;
    assert!(
        flushes > 5 && compactions > 0,
        "{flushes} flushes, {compactions} compactions"
    );
    assert!(crashes > 10, "{crashes} crashes");
}
