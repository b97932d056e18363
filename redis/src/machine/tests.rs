use super::*;
use crate::body::encode_group;
use crate::{
    check_command, decode_expired_reply, decode_reap_reply, exec_aborted, expired_group,
    reap_group, sweep_group, watch_command, watched, Expired, Watched,
};
use ziggy_core::lsm::MemoryStore;
use ziggy_resp::parse_reply;

/// A machine fed one group at a time, as the replica feeds it: writes through `apply` at the
/// next index, reads through `query`, both at the harness's clock.
struct Harness {
    machine: RedisStateMachine,
    index: u64,
    /// Unix milliseconds.
    now: u64,
    /// The write entries applied since the last checkpoint ([`Harness::checkpoint`]), to replay
    /// after a crash as the replica replays its WAL.
    log: Vec<(EntryHeader, Vec<u8>)>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(Config::test())
    }

    fn with_config(config: Config) -> Harness {
        Harness::on_grid(&config, Box::new(MemoryStore::new(4096, 16, 1 << 16)))
    }

    fn on_grid(config: &Config, grid: ziggy_core::state_machine::Grid) -> Harness {
        Harness {
            machine: RedisStateMachine::new(config, grid),
            index: 0,
            now: 1_700_000_000_000,
            log: Vec::new(),
        }
    }

    fn group(&mut self, commands: &[&[&str]]) -> Vec<Reply> {
        self.raw(args(commands))
    }

    /// Runs a group of commands given as bytes (internal ones too).
    fn raw(&mut self, group: Vec<Vec<Vec<u8>>>) -> Vec<Reply> {
        let mut body = Vec::new();
        encode_group(&group, &mut body);
        let operation = if RedisStateMachine::reads_only(&group) {
            RedisStateMachine::READ
        } else {
            RedisStateMachine::WRITE
        };
        self.machine.validate(operation, &body).unwrap();
        let mut out = Vec::new();
        let timestamp = self.now * 1_000_000;
        if operation == RedisStateMachine::READ {
            self.machine
                .query(operation, &body, timestamp, &mut out)
                .unwrap();
        } else {
            self.index += 1;
            let header = EntryHeader::new(operation, 1, self.index, 1, timestamp, 1, 1, 0, &body);
            self.machine.apply(&header, &body, &mut out).unwrap();
            self.log.push((header, body));
        }
        let mut replies = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let (reply, used) = parse_reply(&out[at..]).unwrap().expect("whole replies");
            replies.push(reply);
            at += used;
        }
        assert_eq!(replies.len(), group.len(), "a reply per command");
        replies
    }

    fn cmd(&mut self, args: &[&str]) -> Reply {
        self.group(&[args]).remove(0)
    }
}

fn args(commands: &[&[&str]]) -> Vec<Vec<Vec<u8>>> {
    commands
        .iter()
        .map(|c| c.iter().map(|a| a.as_bytes().to_vec()).collect())
        .collect()
}

fn ok() -> Reply {
    Reply::ok()
}

fn bulk(text: &str) -> Reply {
    Reply::bulk(text)
}

fn int(n: i64) -> Reply {
    Reply::Integer(n)
}

fn err(text: &str) -> Reply {
    Reply::error(text)
}

#[test]
fn strings() {
    let mut h = Harness::new();
    assert_eq!(h.cmd(&["GET", "k"]), Reply::Nil);
    assert_eq!(h.cmd(&["SET", "k", "hello"]), ok());
    assert_eq!(h.cmd(&["get", "k"]), bulk("hello"));
    assert_eq!(h.cmd(&["APPEND", "k", " world"]), int(11));
    assert_eq!(h.cmd(&["STRLEN", "k"]), int(11));
    assert_eq!(h.cmd(&["STRLEN", "none"]), int(0));
    assert_eq!(h.cmd(&["GETRANGE", "k", "0", "4"]), bulk("hello"));
    assert_eq!(h.cmd(&["GETRANGE", "k", "-5", "-1"]), bulk("world"));
    assert_eq!(h.cmd(&["GETRANGE", "k", "5", "2"]), bulk(""));
    assert_eq!(h.cmd(&["GETRANGE", "k", "0", "100"]), bulk("hello world"));
    assert_eq!(h.cmd(&["SETRANGE", "k", "6", "WORLD"]), int(11));
    assert_eq!(h.cmd(&["SETRANGE", "pad", "3", "x"]), int(4));
    assert_eq!(h.cmd(&["GET", "pad"]), Reply::Bulk(b"\0\0\0x".to_vec()));
    assert_eq!(
        h.cmd(&["SETRANGE", "k", "-1", "x"]),
        err("ERR offset is out of range")
    );
    assert_eq!(h.cmd(&["GETDEL", "k"]), bulk("hello WORLD"));
    assert_eq!(h.cmd(&["GETDEL", "k"]), Reply::Nil);
    assert_eq!(h.cmd(&["SETNX", "n", "1"]), int(1));
    assert_eq!(h.cmd(&["SETNX", "n", "2"]), int(0));
    assert_eq!(h.cmd(&["MSET", "a", "1", "b", "2"]), ok());
    assert_eq!(
        h.cmd(&["MGET", "a", "missing", "b"]),
        Reply::Array(vec![bulk("1"), Reply::Nil, bulk("2")])
    );
    assert_eq!(h.cmd(&["MSETNX", "a", "9", "c", "3"]), int(0));
    assert_eq!(h.cmd(&["GET", "c"]), Reply::Nil, "all or nothing");
    assert_eq!(h.cmd(&["MSETNX", "c", "3", "d", "4"]), int(1));
    assert_eq!(
        h.cmd(&["MSET", "a", "1", "b"]),
        err("ERR wrong number of arguments for 'mset' command")
    );
}

#[test]
fn set_options() {
    let mut h = Harness::new();
    assert_eq!(h.cmd(&["SET", "k", "1", "XX"]), Reply::Nil);
    assert_eq!(h.cmd(&["SET", "k", "1", "NX"]), ok());
    assert_eq!(h.cmd(&["SET", "k", "2", "NX"]), Reply::Nil);
    assert_eq!(h.cmd(&["SET", "k", "2", "XX", "GET"]), bulk("1"));
    assert_eq!(h.cmd(&["SET", "new", "v", "GET"]), Reply::Nil);
    assert_eq!(h.cmd(&["SET", "k", "3", "NX", "GET"]), bulk("2"));
    assert_eq!(
        h.cmd(&["SET", "k", "1", "NX", "XX"]),
        err("ERR syntax error")
    );
    assert_eq!(
        h.cmd(&["SET", "k", "1", "EX", "10", "PX", "5"]),
        err("ERR syntax error")
    );
    assert_eq!(h.cmd(&["SET", "k", "1", "EX"]), err("ERR syntax error"));
    assert_eq!(h.cmd(&["SET", "k", "1", "BOGUS"]), err("ERR syntax error"));
    assert_eq!(
        h.cmd(&["SET", "k", "1", "EX", "0"]),
        err("ERR invalid expire time in 'set' command")
    );
    assert_eq!(
        h.cmd(&["SET", "k", "1", "EX", "x"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        h.cmd(&["SET", "k", "1", "EX", "9223372036854775807"]),
        err("ERR invalid expire time in 'set' command")
    );
    assert_eq!(h.cmd(&["SET", "k", "1", "EX", "100"]), ok());
    assert_eq!(h.cmd(&["SET", "k", "2", "KEEPTTL"]), ok());
    assert_eq!(h.cmd(&["TTL", "k"]), int(100));
    assert_eq!(h.cmd(&["SET", "k", "3"]), ok());
    assert_eq!(h.cmd(&["TTL", "k"]), int(-1), "a plain SET clears the TTL");
}

#[test]
fn counters() {
    let mut h = Harness::new();
    assert_eq!(h.cmd(&["INCR", "c"]), int(1));
    assert_eq!(h.cmd(&["INCRBY", "c", "41"]), int(42));
    assert_eq!(h.cmd(&["DECR", "c"]), int(41));
    assert_eq!(h.cmd(&["DECRBY", "c", "-9"]), int(50));
    assert_eq!(h.cmd(&["GET", "c"]), bulk("50"), "stored as text");
    assert_eq!(
        h.cmd(&["INCRBY", "c", "x"]),
        err("ERR value is not an integer or out of range")
    );
    h.cmd(&["SET", "text", "abc"]);
    assert_eq!(
        h.cmd(&["INCR", "text"]),
        err("ERR value is not an integer or out of range")
    );
    h.cmd(&["SET", "max", "9223372036854775807"]);
    assert_eq!(
        h.cmd(&["INCR", "max"]),
        err("ERR increment or decrement would overflow")
    );
    assert_eq!(
        h.cmd(&["GET", "max"]),
        bulk("9223372036854775807"),
        "unchanged"
    );
    assert_eq!(
        h.cmd(&["DECRBY", "c", "-9223372036854775808"]),
        err("ERR decrement would overflow")
    );
    assert_eq!(h.cmd(&["INCRBYFLOAT", "f", "10.5"]), bulk("10.5"));
    assert_eq!(h.cmd(&["INCRBYFLOAT", "f", "0.1"]), bulk("10.6"));
    assert_eq!(h.cmd(&["INCRBYFLOAT", "f", "-0.6"]), bulk("10"));
    assert_eq!(
        h.cmd(&["INCR", "f"]),
        int(11),
        "an integral float is an integer"
    );
    assert_eq!(
        h.cmd(&["INCRBYFLOAT", "text", "1"]),
        err("ERR value is not a valid float")
    );
    assert_eq!(
        h.cmd(&["INCRBYFLOAT", "f", "inf"]),
        err("ERR increment would produce NaN or Infinity")
    );
}

#[test]
fn expiry_is_decided_by_the_entry_time() {
    let mut h = Harness::new();
    h.cmd(&["SET", "k", "v", "PX", "1500"]);
    assert_eq!(h.cmd(&["PTTL", "k"]), int(1500));
    assert_eq!(h.cmd(&["TTL", "k"]), int(2), "rounded as Redis rounds");
    h.now += 1499;
    assert_eq!(h.cmd(&["GET", "k"]), bulk("v"));
    h.now += 1;
    assert_eq!(h.cmd(&["GET", "k"]), Reply::Nil);
    assert_eq!(h.cmd(&["TTL", "k"]), int(-2));
    assert_eq!(h.cmd(&["EXISTS", "k"]), int(0));
    assert_eq!(
        h.cmd(&["INCR", "k"]),
        int(1),
        "an expired key is absent to writes too"
    );
    assert_eq!(h.cmd(&["TTL", "k"]), int(-1));

    assert_eq!(h.cmd(&["EXPIRE", "k", "100", "XX"]), int(0));
    assert_eq!(h.cmd(&["EXPIRE", "k", "100", "NX"]), int(1));
    assert_eq!(h.cmd(&["EXPIRE", "k", "50", "GT"]), int(0));
    assert_eq!(h.cmd(&["EXPIRE", "k", "200", "GT"]), int(1));
    assert_eq!(h.cmd(&["EXPIRE", "k", "150", "LT"]), int(1));
    assert_eq!(h.cmd(&["TTL", "k"]), int(150));
    assert_eq!(
        h.cmd(&["EXPIRE", "k", "1", "NX", "XX"]),
        err("ERR NX and XX, GT or LT options at the same time are not compatible")
    );
    assert_eq!(
        h.cmd(&["EXPIRE", "k", "1", "GT", "LT"]),
        err("ERR GT and LT options at the same time are not compatible")
    );
    let at = (h.now / 1000 + 1000).to_string();
    assert_eq!(h.cmd(&["EXPIREAT", "k", &at]), int(1));
    assert_eq!(
        h.cmd(&["EXPIRETIME", "k"]),
        Reply::Integer(at.parse().unwrap())
    );
    assert_eq!(h.cmd(&["PERSIST", "k"]), int(1));
    assert_eq!(h.cmd(&["PERSIST", "k"]), int(0));
    assert_eq!(h.cmd(&["EXPIRETIME", "k"]), int(-1));
    assert_eq!(h.cmd(&["EXPIRE", "missing", "10"]), int(0));
    assert_eq!(
        h.cmd(&["EXPIRE", "k", "-1"]),
        int(1),
        "a past deadline deletes"
    );
    assert_eq!(h.cmd(&["EXISTS", "k"]), int(0));

    h.cmd(&["SET", "g", "v"]);
    assert_eq!(h.cmd(&["GETEX", "g", "EX", "10"]), bulk("v"));
    assert_eq!(h.cmd(&["TTL", "g"]), int(10));
    assert_eq!(h.cmd(&["GETEX", "g", "PERSIST"]), bulk("v"));
    assert_eq!(h.cmd(&["TTL", "g"]), int(-1));
    h.cmd(&["SETEX", "s", "5", "v"]);
    h.cmd(&["PSETEX", "p", "5000", "v"]);
    assert_eq!(h.cmd(&["PTTL", "s"]), int(5000));
    assert_eq!(h.cmd(&["PTTL", "p"]), int(5000));
    assert_eq!(
        h.cmd(&["SETEX", "s", "0", "v"]),
        err("ERR invalid expire time in 'setex' command")
    );
}

#[test]
fn keys_and_errors() {
    let mut h = Harness::new();
    h.cmd(&["MSET", "a", "1", "b", "2"]);
    assert_eq!(h.cmd(&["EXISTS", "a", "a", "x"]), int(2));
    assert_eq!(h.cmd(&["TYPE", "a"]), Reply::Status("string".into()));
    assert_eq!(h.cmd(&["TYPE", "x"]), Reply::Status("none".into()));
    h.cmd(&["EXPIRE", "a", "100"]);
    assert_eq!(h.cmd(&["RENAME", "a", "z"]), ok());
    assert_eq!(
        h.cmd(&["TTL", "z"]),
        int(100),
        "the TTL moves with the value"
    );
    assert_eq!(h.cmd(&["RENAME", "a", "z"]), err("ERR no such key"));
    assert_eq!(h.cmd(&["RENAMENX", "z", "b"]), int(0));
    assert_eq!(h.cmd(&["RENAMENX", "z", "c"]), int(1));
    assert_eq!(h.cmd(&["DEL", "b", "c", "nope"]), int(2));
    assert_eq!(h.cmd(&["UNLINK", "b"]), int(0));
    assert_eq!(
        h.cmd(&["GET"]),
        err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        h.cmd(&["FOO", "a", "b"]),
        err("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ")
    );
}

#[test]
fn a_group_applies_in_order_in_one_entry() {
    let mut h = Harness::new();
    let replies = h.group(&[
        &["SET", "k", "1"],
        &["INCR", "k"],
        &["GET", "k"],
        &["NOPE"],
        &["INCRBY", "k", "10"],
    ]);
    assert_eq!(h.index, 1, "one entry");
    assert_eq!(replies[..3], [ok(), int(2), bulk("2")]);
    assert!(
        replies[3].is_error(),
        "an error in a group fails only its command"
    );
    assert_eq!(replies[4], int(12));
}

/// Requests of several clients batched into one entry apply at one index: each collection
/// they make needs an id of its own (the simulator found two sharing one).
#[test]
fn collections_made_by_requests_of_one_batch_entry_have_their_own_ids() {
    let mut h = Harness::new();
    h.index += 1;
    for group in [
        &[&["SADD", "set", "m", "n"][..]][..],
        &[&["ZADD", "zset", "2.5", "m"]],
        &[&["HSET", "hash", "m", "v"]],
    ] {
        let mut body = Vec::new();
        encode_group(&args(group), &mut body);
        let operation = RedisStateMachine::WRITE;
        let header = EntryHeader::new(operation, 1, h.index, 1, h.now * 1_000_000, 1, 1, 0, &body);
        h.machine.apply(&header, &body, &mut Vec::new()).unwrap();
    }
    assert_eq!(h.cmd(&["ZSCORE", "zset", "m"]), Reply::Double(2.5));
    assert_eq!(h.cmd(&["SCARD", "set"]), int(2));
    assert_eq!(
        h.cmd(&["HGETALL", "hash"]),
        Reply::Map(vec![(bulk("m"), bulk("v"))])
    );
    assert_eq!(h.cmd(&["ZCARD", "zset"]), int(1));
}

#[test]
fn the_same_log_gives_the_same_state_and_checkpoints_restore_it() {
    let script: &[&[&str]] = &[
        &["SET", "a", "1", "EX", "5"],
        &["INCR", "n"],
        &["APPEND", "s", "xyz"],
        &["DEL", "a"],
        &["SET", "b", "2"],
    ];
    let mut one = Harness::new();
    let mut two = Harness::new();
    for command in script {
        one.cmd(command);
        two.cmd(command);
    }
    let digest = one.machine.digest().unwrap();
    assert_eq!(two.machine.digest().unwrap(), digest);
    let mut named = Vec::new();
    one.machine.checkpoint(&mut named).unwrap();
    one.machine.checkpoint_durable();
    one.cmd(&["SET", "later", "x"]);
    assert_ne!(one.machine.digest().unwrap(), digest);
    one.machine.restore(&named).unwrap();
    assert_eq!(one.machine.digest().unwrap(), digest);
    assert_eq!(one.cmd(&["GET", "b"]), bulk("2"));
}

#[test]
fn validation_refuses_what_is_not_a_group() {
    let h = Harness::new();
    let refused = |op, body: &[u8]| h.machine.validate(op, body).is_err();
    assert!(refused(RedisStateMachine::WRITE, b"junk"));
    assert!(refused(Operation(99), &[]));
    let mut body = Vec::new();
    encode_group(
        &[vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]],
        &mut body,
    );
    assert!(
        refused(RedisStateMachine::READ, &body),
        "a write in a read group"
    );
    assert!(!refused(RedisStateMachine::WRITE, &body));
}

#[test]
fn walking_the_keyspace() {
    let mut h = Harness::new();
    assert_eq!(h.cmd(&["DBSIZE"]), int(0));
    assert_eq!(h.cmd(&["RANDOMKEY"]), Reply::Nil);
    // Many keys share their first 7 bytes: a SCAN batch must still move on.
    let keys: Vec<String> = (0..300)
        .map(|i| format!("samepfx:{i:03}"))
        .chain((0..300).map(|i| format!("k{i:03}")))
        .collect();
    for chunk in keys.chunks(50) {
        let mut args = vec!["MSET"];
        for key in chunk {
            args.push(key);
            args.push("v");
        }
        h.cmd(&args);
    }
    h.cmd(&["SET", "gone", "v", "PX", "10"]);
    h.now += 20;
    assert_eq!(
        h.cmd(&["DBSIZE"]),
        int(600),
        "the expired key is not counted"
    );
    let Reply::Array(found) = h.cmd(&["KEYS", "k1?5"]) else {
        panic!("an array")
    };
    assert_eq!(
        found,
        (0..10)
            .map(|i| bulk(&format!("k1{i}5")))
            .collect::<Vec<_>>()
    );
    assert!(matches!(h.cmd(&["RANDOMKEY"]), Reply::Bulk(_)));

    let mut cursor = "0".to_string();
    let mut seen = std::collections::BTreeSet::new();
    let mut calls = 0;
    loop {
        let Reply::Array(reply) = h.cmd(&["SCAN", &cursor, "COUNT", "7"]) else {
            panic!("an array")
        };
        let (Reply::Bulk(next), Reply::Array(batch)) = (&reply[0], &reply[1]) else {
            panic!("cursor and keys")
        };
        for key in batch {
            let Reply::Bulk(key) = key else { panic!() };
            seen.insert(String::from_utf8(key.clone()).unwrap());
        }
        calls += 1;
        cursor = String::from_utf8(next.clone()).unwrap();
        if cursor == "0" {
            break;
        }
        assert!(calls < 1000, "the scan moves on");
    }
    assert_eq!(
        seen,
        keys.iter().cloned().collect(),
        "every key, the expired one not"
    );
    assert!(calls > 10, "COUNT 7 splits the walk: {calls} calls");
    let Reply::Array(matched) = h.cmd(&["SCAN", "0", "MATCH", "k29*", "COUNT", "1000"]) else {
        panic!()
    };
    assert_eq!(matched[0], bulk("0"));
    assert_eq!(
        matched[1],
        Reply::Array((0..10).map(|i| bulk(&format!("k29{i}"))).collect())
    );
    assert_eq!(h.cmd(&["SCAN", "x"]), err("ERR invalid cursor"));
    assert_eq!(h.cmd(&["FLUSHDB"]), ok());
    assert_eq!(h.cmd(&["DBSIZE"]), int(0));
}

#[test]
fn a_write_groups_replies_never_outgrow_its_reply_slot() {
    // Values a little longer than the test preset's, so two fill a reply slot.
    let mut h = Harness::with_config(Config {
        value_size_max: 320,
        ..Config::test()
    });
    // Large enough that two do not fit one write's reply slot, small enough for one.
    let size = (h.machine.reply_max * 2 / 3).min(h.machine.value_max);
    assert!(2 * size > h.machine.reply_max, "the config allows the case");
    let big = "x".repeat(size);
    h.cmd(&["SET", "a", &big]);
    h.cmd(&["SET", "b", &big]);
    // Alone, a large old value fits; two of them in one write group do not.
    assert_eq!(h.cmd(&["SET", "a", &big, "GET"]), bulk(&big));
    let replies = h.group(&[&["GETDEL", "a"], &["GETDEL", "b"], &["INCR", "n"]]);
    assert_eq!(replies[0], bulk(&big));
    assert_eq!(
        replies[1],
        err(REPLY_TOO_LARGE),
        "its effect stands, its reply is lost"
    );
    assert_eq!(replies[2], int(1));
    assert_eq!(h.cmd(&["EXISTS", "a", "b"]), int(0));
    // Reads are not kept for retries: no bound.
    h.cmd(&["SET", "a", &big]);
    h.cmd(&["SET", "b", &big]);
    let Reply::Array(both) = h.cmd(&["MGET", "a", "b"]) else {
        panic!()
    };
    assert_eq!(both, [bulk(&big), bulk(&big)]);
}

impl Harness {
    /// WATCH: what the machine's read of `keys` saw.
    fn watch(&mut self, keys: &[&str]) -> Vec<Watched> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        let reply = self.raw(vec![watch_command(&keys)]).remove(0);
        watched(&keys, &reply).expect("a watch reply")
    }

    /// EXEC after WATCH: the transaction's replies, or None if it aborted.
    fn exec(&mut self, watched: &[Watched], commands: &[&[&str]]) -> Option<Vec<Reply>> {
        let mut group = vec![check_command(watched)];
        group.extend(args(commands));
        let mut replies = self.raw(group);
        let check = replies.remove(0);
        if exec_aborted(&check) {
            assert!(replies.iter().all(|r| *r == Reply::Nil), "nothing ran");
            return None;
        }
        assert_eq!(check, ok());
        Some(replies)
    }

    /// Records stored in the LSM, expired ones included.
    fn stored(&mut self) -> usize {
        self.lsm_keys(crate::keyspace::RECORDS)
    }

    /// Expiry entries stored in the LSM, stale ones included.
    fn expiry_entries(&mut self) -> usize {
        self.lsm_keys(crate::keyspace::EXPIRIES)
    }

    fn lsm_keys(&mut self, namespace: u8) -> usize {
        let pairs = self.machine.lsm.all_pairs().unwrap();
        pairs.iter().filter(|(key, _)| key[0] == namespace).count()
    }

    /// The reply of a one-command group, encoded as the state machine writes it.
    fn encoded(&mut self, group: Vec<Vec<Vec<u8>>>) -> Vec<u8> {
        let reply = self.raw(group).remove(0);
        let mut bytes = Vec::new();
        reply.encode(Protocol::Resp3, &mut bytes);
        bytes
    }

    /// One look for expired keys (a read): what it found and where it stopped.
    fn expired(&mut self, max: u32, cursor: &[u8]) -> Expired {
        let bytes = self.encoded(expired_group(max, cursor));
        decode_expired_reply(&bytes).expect("an expired reply")
    }

    /// One reap of expiry `entries` (a write): how many records it deleted.
    fn reap(&mut self, entries: &[Vec<u8>]) -> u64 {
        let bytes = self.encoded(reap_group(entries));
        decode_reap_reply(&bytes).expect("a reap reply")
    }

    /// One sweep of removed collection `id` from `cursor` (a write).
    fn sweep(&mut self, id: u64, cursor: &[u8]) -> crate::Swept {
        let bytes = self.encoded(sweep_group(id, cursor));
        crate::decode_sweep_reply(&bytes).expect("a sweep reply")
    }

    /// Sweeps removed collection `id` until it is gone: the members deleted.
    fn sweep_all(&mut self, id: u64) -> u64 {
        let (mut deleted, mut cursor) = (0, Vec::new());
        loop {
            let swept = self.sweep(id, &cursor);
            deleted += swept.deleted;
            if swept.cursor.is_empty() {
                return deleted;
            }
            cursor = swept.cursor;
        }
    }

    /// A whole pass: looks `max` keys at a time and reaps what each look found. The keys
    /// deleted and the looks it took.
    fn reap_pass(&mut self, max: u32) -> (u64, usize) {
        let (mut cursor, mut deleted, mut looks) = (Vec::new(), 0, 0);
        loop {
            let found = self.expired(max, &cursor);
            assert!(found.entries.len() <= max as usize);
            looks += 1;
            if !found.entries.is_empty() {
                deleted += self.reap(&found.entries);
            }
            let full = found.dead.len() == max as usize;
            for id in found.dead {
                self.sweep_all(id);
            }
            cursor = found.cursor;
            if cursor.is_empty() && !full {
                return (deleted, looks);
            }
        }
    }
}

#[test]
fn exec_applies_only_if_no_watched_key_changed() {
    let mut h = Harness::new();
    h.cmd(&["SET", "k", "1"]);
    let w = h.watch(&["k", "absent"]);
    assert_eq!(
        h.exec(
            &w,
            &[&["INCR", "k"], &["SET", "absent", "x"], &["GET", "k"]]
        ),
        Some(vec![int(2), ok(), bulk("2")]),
        "unchanged: it applies, and its own writes do not abort it"
    );

    let w = h.watch(&["k"]);
    h.cmd(&["SET", "k", "2"]);
    assert_eq!(h.exec(&w, &[&["SET", "k", "mine"]]), None, "a write aborts");
    assert_eq!(h.cmd(&["GET", "k"]), bulk("2"), "nothing applied");
    let w = h.watch(&["k"]);
    h.cmd(&["SET", "k", "2"]);
    assert_eq!(h.exec(&w, &[&["GET", "k"]]), None, "even to the same value");

    let w = h.watch(&["k"]);
    h.cmd(&["DEL", "k"]);
    assert_eq!(h.exec(&w, &[&["INCR", "k"]]), None, "a DEL aborts");
    assert_eq!(h.cmd(&["EXISTS", "k"]), int(0));

    let w = h.watch(&["missing"]);
    h.cmd(&["SET", "other", "v"]);
    assert!(
        h.exec(&w, &[&["GET", "missing"]]).is_some(),
        "absent and still absent"
    );
    let w = h.watch(&["missing"]);
    h.cmd(&["SET", "missing", "v"]);
    h.cmd(&["DEL", "missing"]);
    assert_eq!(
        h.exec(&w, &[&["INCR", "c"]]),
        None,
        "written and removed in between"
    );

    h.cmd(&["SET", "a", "1"]);
    let w = h.watch(&["a", "b"]);
    h.cmd(&["FLUSHDB"]);
    assert_eq!(h.exec(&w, &[&["INCR", "c"]]), None, "FLUSHDB aborts");
}

#[test]
fn a_watched_key_that_expires_aborts_exec() {
    let mut h = Harness::new();
    h.cmd(&["SET", "k", "v", "PX", "100"]);
    let w = h.watch(&["k"]);
    h.now += 100;
    assert_eq!(h.exec(&w, &[&["SET", "x", "1"]]), None, "as in Redis 7");
    assert_eq!(h.cmd(&["EXISTS", "x"]), int(0));

    let w = h.watch(&["k"]);
    assert_eq!(w[0].modified, 1, "expired, not yet reaped");
    assert!(!w[0].live);
    h.now += 1000;
    assert_eq!(
        h.exec(&w, &[&["SET", "x", "1"]]),
        Some(vec![ok()]),
        "expired before WATCH and still: no change"
    );
    h.reap_pass(10);
    assert_eq!(h.exec(&w, &[&["SET", "x", "2"]]), None, "reaped since");
}

#[test]
fn removals_survive_a_checkpoint() {
    let mut h = Harness::new();
    h.cmd(&["SET", "k", "v"]);
    h.cmd(&["DEL", "k"]);
    let w = h.watch(&["k"]);
    assert_eq!(w[0].removed_at, 2);
    let mut named = Vec::new();
    h.machine.checkpoint(&mut named).unwrap();
    h.machine.checkpoint_durable();
    h.cmd(&["SET", "k", "v"]);
    h.cmd(&["DEL", "k"]);
    assert_ne!(h.watch(&["k"]), w);
    h.machine.restore(&named).unwrap();
    assert_eq!(h.watch(&["k"]), w, "removed_at restored with the keys");
    h.machine.restore(&[]).unwrap();
    assert_eq!(h.watch(&["k"])[0].removed_at, 0, "the empty state");
    assert!(h.machine.restore(&[1, 2, 3]).is_err());
}

#[test]
fn internal_commands_are_not_data_commands() {
    assert!(crate::lookup(b"~watch").is_none());
    assert!(crate::is_internal(b"~check") && crate::is_internal(b"~reap"));
    assert!(crate::is_internal(b"~expired"));
    assert!(crate::commands().iter().all(|c| !c.name.starts_with('~')));
    let mut h = Harness::new();
    assert_eq!(
        h.raw(vec![vec![
            b"~check".to_vec(),
            b"k".to_vec(),
            b"x".to_vec(),
            b"1".to_vec(),
            b"0".to_vec()
        ]]),
        [err("ERR syntax error")]
    );
}

/// An expiry entry as a look lists it.
fn entry(expires_at: u64, key: &str) -> Vec<u8> {
    [&expires_at.to_be_bytes()[..], key.as_bytes()].concat()
}

#[test]
fn the_reaper_deletes_expired_keys_for_good() {
    let mut h = Harness::new();
    let start = h.now;
    for i in 0..60 {
        let key = format!("key{i:02}");
        match i % 3 {
            0 => h.cmd(&["SET", &key, "live"]),
            1 => h.cmd(&["SET", &key, "soon", "PX", "10"]),
            _ => h.cmd(&["SET", &key, "later", "EX", "100"]),
        };
    }
    assert_eq!(h.expiry_entries(), 40, "one per key written with an expiry");
    let index = h.index;
    let found = h.expired(100, b"");
    assert_eq!(
        found.entries,
        Vec::<Vec<u8>>::new(),
        "nothing has expired yet"
    );
    assert_eq!(found.cursor, b"", "the last entry due");
    assert_eq!(h.index, index, "a look is a read: no entry");
    h.now += 10;
    assert_eq!(h.stored(), 60, "expired, only hidden");
    let found = h.expired(100, b"");
    assert_eq!(
        found.entries.len(),
        20,
        "only the 20 due; never the keys without expiry"
    );
    assert_eq!(found.entries[0], entry(start + 10, "key01"));

    assert_eq!(h.reap_pass(7), (20, 3), "20 due, 7 a look");
    assert_eq!(h.stored(), 40, "gone from the LSM");
    assert_eq!(h.expiry_entries(), 20, "the due entries went with them");
    assert_eq!(h.cmd(&["DBSIZE"]), int(40));
    assert_eq!(h.cmd(&["GET", "key00"]), bulk("live"));
    assert_eq!(h.cmd(&["GET", "key02"]), bulk("later"));
    assert_eq!(h.reap_pass(1000), (0, 1), "nothing left to reap");
    h.now += 100_000;
    let found = h.expired(1000, &entry(start + 100_000, "key50"));
    assert_eq!(
        found.entries.len(),
        3,
        "after the cursor: key53, key56, key59"
    );
    assert_eq!(h.reap(&found.entries), 3);
    assert_eq!(h.cmd(&["GET", "key59"]), Reply::Nil);
    assert_eq!(h.cmd(&["TTL", "key02"]), int(-2), "expired, not reaped yet");
    assert_eq!(h.stored(), 37);
}

#[test]
fn a_reap_keeps_what_was_rewritten_since_the_look() {
    let mut h = Harness::new();
    let start = h.now;
    h.cmd(&["SET", "a", "1", "PX", "5"]);
    h.cmd(&["SET", "b", "2", "PX", "5"]);
    h.cmd(&["SET", "c", "3", "PX", "5"]);
    h.cmd(&["SET", "d", "4", "PX", "500"]);
    h.now += 10;
    let found = h.expired(10, b"");
    let due: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|k| entry(start + 5, k))
        .collect();
    assert_eq!(found.entries, due);
    h.cmd(&["SET", "a", "fresh"]); // rewritten without expiry: a's entry is stale
    h.cmd(&["SET", "b", "2", "PX", "1000"]); // a later expiry: b's first entry is stale
    let mut listed = found.entries.clone();
    listed.push(entry(start + 500, "d")); // not due yet: left alone
    listed.push(b"short".to_vec()); // not an entry at all
    assert_eq!(h.reap(&listed), 1, "only c");
    assert_eq!(h.cmd(&["GET", "a"]), bulk("fresh"));
    assert_eq!(h.cmd(&["GET", "b"]), bulk("2"));
    assert_eq!(h.cmd(&["GET", "c"]), Reply::Nil);
    assert_eq!(h.stored(), 3);
    assert_eq!(h.expiry_entries(), 2, "b's new entry and d's");
    h.now += 1000;
    assert_eq!(h.reap_pass(10), (2, 1), "b and d in their turn");
    assert_eq!((h.stored(), h.expiry_entries()), (1, 0));
}

#[test]
fn replicas_reap_the_same_keys() {
    let script: &[&[&str]] = &[
        &["SET", "a", "1", "PX", "5"],
        &["SET", "b", "2"],
        &["SET", "c", "3", "PX", "50"],
        &["SET", "d", "4", "PX", "5"],
    ];
    let mut one = Harness::new();
    let mut two = Harness::new();
    for command in script {
        one.cmd(command);
        two.cmd(command);
    }
    one.now += 10;
    two.now += 10;
    let found = one.expired(10, b"");
    assert_eq!(found.entries.len(), 2, "a and d");
    assert_eq!(one.reap(&found.entries), two.reap(&found.entries));
    assert_eq!(one.machine.digest().unwrap(), two.machine.digest().unwrap());
    assert_eq!(one.stored(), 2, "a and d reaped, b and c live");
    assert_eq!(decode_reap_reply(b"-ERR no\r\n"), None);
    assert_eq!(decode_reap_reply(b":1\r\n:1\r\n"), None, "one reply only");
    assert_eq!(decode_expired_reply(b"*1\r\n:1\r\n"), None, "bulks only");
    assert_eq!(decode_expired_reply(b"*0\r\n"), None, "a cursor first");
}

#[test]
fn a_checkpoint_of_another_layout_is_refused() {
    let mut h = Harness::new();
    h.cmd(&["SET", "k", "v"]);
    let mut bytes = Vec::new();
    h.machine.checkpoint(&mut bytes).unwrap();
    let (removed_at, lsm) = split_checkpoint(&bytes).unwrap();
    assert_eq!((removed_at, lsm.len()), (0, bytes.len() - 16));
    // A layout-1 checkpoint began with removed_at.
    let old = [&0u64.to_le_bytes()[..], &bytes[8..]].concat();
    let refused = h.machine.restore(&old).unwrap_err();
    assert!(refused.to_string().contains("another layout"), "{refused}");
    assert_eq!(h.cmd(&["GET", "k"]), bulk("v"), "the state is untouched");
}

mod collections;
mod json;
