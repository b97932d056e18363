//! Hashes, sets, lists, sorted sets and JSON documents over real TCP with the `redis` crate: every command, type errors, empty
//! collections removed, each family inside MULTI/EXEC, RESP2 and RESP3 shapes, a restart, and
//! a removed collection's members swept by the reaper.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use redis::Commands;
use ziggy_io::server::ServeOptions;

mod common;
use common::{error_text, exchange, Server};

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

#[test]
fn hashes_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("z.data"));
    let mut c = server.connect();
    let added: i64 = redis::cmd("HSET")
        .arg("h")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut c)
        .unwrap();
    assert_eq!(added, 2);
    let n: i64 = redis::cmd("HSET")
        .arg("h")
        .arg("c")
        .arg("3")
        .arg("a")
        .arg("10")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(c.hget::<_, _, String>("h", "a").unwrap(), "10");
    assert_eq!(c.hget::<_, _, Option<String>>("h", "zz").unwrap(), None);
    let values: Vec<Option<String>> = redis::cmd("HMGET")
        .arg("h")
        .arg("a")
        .arg("zz")
        .query(&mut c)
        .unwrap();
    assert_eq!(values, vec![Some("10".to_string()), None]);
    assert_eq!(c.hlen::<_, i64>("h").unwrap(), 3);
    assert!(c.hexists::<_, _, bool>("h", "b").unwrap());
    let all: BTreeMap<String, String> = c.hgetall("h").unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all["c"], "3");
    let keys: Vec<String> = c.hkeys("h").unwrap();
    assert_eq!(keys, ["a", "b", "c"]);
    let vals: Vec<String> = c.hvals("h").unwrap();
    assert_eq!(vals, ["10", "2", "3"]);
    assert_eq!(c.hincr::<_, _, _, i64>("h", "b", 5).unwrap(), 7);
    let f: f64 = redis::cmd("HINCRBYFLOAT")
        .arg("h")
        .arg("c")
        .arg("0.25")
        .query(&mut c)
        .unwrap();
    assert_eq!(f, 3.25);
    let strlen: i64 = redis::cmd("HSTRLEN")
        .arg("h")
        .arg("a")
        .query(&mut c)
        .unwrap();
    assert_eq!(strlen, 2);
    let nx: i64 = redis::cmd("HSETNX")
        .arg("h")
        .arg("a")
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert_eq!(nx, 0);
    let field: String = redis::cmd("HRANDFIELD").arg("h").query(&mut c).unwrap();
    assert!(all.contains_key(&field));
    let pairs: Vec<String> = redis::cmd("HRANDFIELD")
        .arg("h")
        .arg(2)
        .arg("WITHVALUES")
        .query(&mut c)
        .unwrap();
    assert_eq!(pairs.len(), 4);
    let (cursor, items): (String, Vec<String>) =
        redis::cmd("HSCAN").arg("h").arg(0).query(&mut c).unwrap();
    assert_eq!((cursor.as_str(), items.len()), ("0", 6));
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg("h")
        .query(&mut c)
        .unwrap();
    assert_eq!(encoding, "hashtable");
    let kind: String = redis::cmd("TYPE").arg("h").query(&mut c).unwrap();
    assert_eq!(kind, "hash");
    // Errors.
    let _: () = c.set("s", "v").unwrap();
    assert_eq!(
        error_text(redis::cmd("HGET").arg("s").arg("a").query(&mut c)),
        WRONGTYPE
    );
    assert_eq!(
        error_text(redis::cmd("GET").arg("h").query(&mut c)),
        WRONGTYPE
    );
    assert_eq!(
        error_text(redis::cmd("HSET").arg("h").arg("a").query(&mut c)),
        "ERR wrong number of arguments for 'hset' command"
    );
    let _: i64 = redis::cmd("HSET")
        .arg("h")
        .arg("t")
        .arg("text")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        error_text(redis::cmd("HINCRBY").arg("h").arg("t").arg(1).query(&mut c)),
        "ERR hash value is not an integer"
    );
    // Emptied, removed.
    let removed: i64 = redis::cmd("HDEL")
        .arg("h")
        .arg("a")
        .arg("b")
        .arg("c")
        .arg("t")
        .query(&mut c)
        .unwrap();
    assert_eq!(removed, 4);
    assert!(!c.exists::<_, bool>("h").unwrap());
    // Survives a restart.
    let _: i64 = redis::cmd("HSET")
        .arg("kept")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    drop(c);
    server.stop();
    let server = Server::start(&dir.path().join("z.data"));
    let mut c = server.connect();
    assert_eq!(c.hget::<_, _, String>("kept", "f").unwrap(), "v");
    server.stop();
}

#[test]
fn sets_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("z.data"));
    let mut c = server.connect();
    assert_eq!(c.sadd::<_, _, i64>("s", &["a", "b", "c", "a"]).unwrap(), 3);
    assert_eq!(c.sadd::<_, _, i64>("t", &["b", "c", "d"]).unwrap(), 3);
    assert_eq!(c.scard::<_, i64>("s").unwrap(), 3);
    assert!(c.sismember::<_, _, bool>("s", "a").unwrap());
    let many: Vec<bool> = redis::cmd("SMISMEMBER")
        .arg("s")
        .arg("a")
        .arg("z")
        .query(&mut c)
        .unwrap();
    assert_eq!(many, [true, false]);
    let members: BTreeSet<String> = c.smembers("s").unwrap();
    assert_eq!(members, ["a", "b", "c"].map(String::from).into());
    let inter: BTreeSet<String> = c.sinter(&["s", "t"]).unwrap();
    assert_eq!(inter, ["b", "c"].map(String::from).into());
    let union: BTreeSet<String> = c.sunion(&["s", "t"]).unwrap();
    assert_eq!(union.len(), 4);
    let diff: BTreeSet<String> = c.sdiff(&["s", "t"]).unwrap();
    assert_eq!(diff, ["a"].map(String::from).into());
    assert_eq!(c.sinterstore::<_, _, i64>("i", &["s", "t"]).unwrap(), 2);
    assert_eq!(c.sunionstore::<_, _, i64>("u", &["s", "t"]).unwrap(), 4);
    assert_eq!(c.sdiffstore::<_, _, i64>("d", &["s", "t"]).unwrap(), 1);
    assert!(c.smove::<_, _, _, bool>("s", "t", "a").unwrap());
    assert_eq!(c.srem::<_, _, i64>("s", &["b", "zz"]).unwrap(), 1);
    let drawn: Vec<String> = c.srandmember_multiple("t", 2).unwrap();
    assert_eq!(drawn.len(), 2);
    let popped: String = c.spop("s").unwrap();
    assert_eq!(popped, "c");
    assert!(!c.exists::<_, bool>("s").unwrap(), "emptied by SPOP");
    let (cursor, items): (String, Vec<String>) =
        redis::cmd("SSCAN").arg("t").arg(0).query(&mut c).unwrap();
    assert_eq!((cursor.as_str(), items.len()), ("0", 4));
    let _: () = c.set("str", "v").unwrap();
    assert_eq!(
        error_text(redis::cmd("SADD").arg("str").arg("x").query(&mut c)),
        WRONGTYPE
    );
    assert_eq!(
        error_text(redis::cmd("SINTER").arg("t").arg("str").query(&mut c)),
        WRONGTYPE
    );
    let scanned: (String, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("TYPE")
        .arg("set")
        .arg("COUNT")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let names: BTreeSet<String> = scanned.1.into_iter().collect();
    assert_eq!(names, ["d", "i", "t", "u"].map(String::from).into());
    server.stop();
}

#[test]
fn lists_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("z.data"));
    let mut c = server.connect();
    assert_eq!(c.rpush::<_, _, i64>("l", &["a", "b", "c"]).unwrap(), 3);
    assert_eq!(c.lpush::<_, _, i64>("l", "z").unwrap(), 4);
    assert_eq!(
        c.lrange::<_, Vec<String>>("l", 0, -1).unwrap(),
        ["z", "a", "b", "c"]
    );
    assert_eq!(c.llen::<_, i64>("l").unwrap(), 4);
    assert_eq!(c.lindex::<_, String>("l", -1).unwrap(), "c");
    let _: () = c.lset("l", 0, "Z").unwrap();
    assert_eq!(c.lpop::<_, String>("l", None).unwrap(), "Z");
    assert_eq!(
        c.rpop::<_, Vec<String>>("l", std::num::NonZeroUsize::new(2))
            .unwrap(),
        ["c", "b"]
    );
    assert_eq!(c.rpush_exists::<_, _, i64>("l", "q").unwrap(), 2);
    assert_eq!(c.lpush_exists::<_, _, i64>("nothing", "q").unwrap(), 0);
    assert_eq!(c.linsert_before::<_, _, _, i64>("l", "q", "p").unwrap(), 3);
    assert_eq!(c.lrem::<_, _, i64>("l", 0, "p").unwrap(), 1);
    let pos: Option<i64> = redis::cmd("LPOS").arg("l").arg("q").query(&mut c).unwrap();
    assert_eq!(pos, Some(1));
    let _: () = c.ltrim("l", 0, 0).unwrap();
    let moved: String = redis::cmd("LMOVE")
        .arg("l")
        .arg("m")
        .arg("LEFT")
        .arg("RIGHT")
        .query(&mut c)
        .unwrap();
    assert_eq!(moved, "a");
    assert!(!c.exists::<_, bool>("l").unwrap(), "emptied by LMOVE");
    let _: () = c.set("s", "v").unwrap();
    assert_eq!(
        error_text(redis::cmd("LPUSH").arg("s").arg("x").query(&mut c)),
        WRONGTYPE
    );
    assert_eq!(
        error_text(redis::cmd("LSET").arg("m").arg(5).arg("x").query(&mut c)),
        "ERR index out of range"
    );
    let kind: String = redis::cmd("TYPE").arg("m").query(&mut c).unwrap();
    assert_eq!(kind, "list");
    // An absent key: a counted pop misses an array in RESP2, a string without the count.
    let mut raw = server.raw();
    exchange(&mut raw, "LPOP nothing 2\r\n", "*-1\r\n");
    exchange(&mut raw, "RPOP nothing\r\n", "$-1\r\n");
    server.stop();
}

#[test]
fn sorted_sets_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("z.data"));
    let mut c = server.connect();
    assert_eq!(
        c.zadd_multiple::<_, _, _, i64>("z", &[(1, "a"), (2, "b"), (3, "c")])
            .unwrap(),
        3
    );
    assert_eq!(c.zscore::<_, _, f64>("z", "b").unwrap(), 2.0);
    assert_eq!(c.zincr::<_, _, _, f64>("z", "a", 10).unwrap(), 11.0);
    assert_eq!(c.zcard::<_, i64>("z").unwrap(), 3);
    assert_eq!(
        c.zrange::<_, Vec<String>>("z", 0, -1).unwrap(),
        ["b", "c", "a"]
    );
    let with: Vec<(String, f64)> = c.zrange_withscores("z", 0, 0).unwrap();
    assert_eq!(with, [("b".to_string(), 2.0)]);
    assert_eq!(
        c.zrangebyscore::<_, _, _, Vec<String>>("z", "(2", "+inf")
            .unwrap(),
        ["c", "a"]
    );
    assert_eq!(c.zrevrange::<_, Vec<String>>("z", 0, 0).unwrap(), ["a"]);
    assert_eq!(c.zrank::<_, _, Option<i64>>("z", "a").unwrap(), Some(2));
    assert_eq!(c.zcount::<_, _, _, i64>("z", 2, 3).unwrap(), 2);
    let popped: Vec<(String, f64)> = c.zpopmin("z", 1).unwrap();
    assert_eq!(popped, [("b".to_string(), 2.0)]);
    assert_eq!(c.zrem::<_, _, i64>("z", "c").unwrap(), 1);
    let byscore: Vec<String> = redis::cmd("ZRANGE")
        .arg("z")
        .arg("+inf")
        .arg("-inf")
        .arg("BYSCORE")
        .arg("REV")
        .arg("LIMIT")
        .arg(0)
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(byscore, ["a"]);
    let _: () = c.set("s", "v").unwrap();
    assert_eq!(
        error_text(redis::cmd("ZADD").arg("s").arg(1).arg("m").query(&mut c)),
        WRONGTYPE
    );
    assert_eq!(
        error_text(redis::cmd("ZADD").arg("z").arg("x").arg("m").query(&mut c)),
        "ERR value is not a valid float"
    );
    let kind: String = redis::cmd("TYPE").arg("z").query(&mut c).unwrap();
    assert_eq!(kind, "zset");
    // RESP2 answers a score as a bulk string; RESP3 as a double.
    let mut raw = server.raw();
    exchange(&mut raw, "ZSCORE z a\r\n", "$2\r\n11\r\n");
    // RESP2 flattens [member, score] pairs, as Redis does; RESP3 nests them.
    exchange(
        &mut raw,
        "ZRANGE z 0 -1 WITHSCORES\r\n",
        "*2\r\n$1\r\na\r\n$2\r\n11\r\n",
    );
    server.stop();
}

#[test]
fn json_documents_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("z.data"));
    let mut c = server.connect();
    let doc = r#"{"name":"ziggy","n":1,"tags":["a"],"ok":true,"none":null}"#;
    let _: () = redis::cmd("JSON.SET")
        .arg("d")
        .arg("$")
        .arg(doc)
        .query(&mut c)
        .unwrap();
    let got: String = redis::cmd("JSON.GET").arg("d").query(&mut c).unwrap();
    assert_eq!(got, doc);
    let n: String = redis::cmd("JSON.NUMINCRBY")
        .arg("d")
        .arg("$.n")
        .arg(2)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, "[3]");
    let lens: Vec<i64> = redis::cmd("JSON.ARRAPPEND")
        .arg("d")
        .arg("$.tags")
        .arg("\"b\"")
        .query(&mut c)
        .unwrap();
    assert_eq!(lens, [2]);
    let kind: String = redis::cmd("JSON.TYPE")
        .arg("d")
        .arg(".none")
        .query(&mut c)
        .unwrap();
    assert_eq!(kind, "null");
    let keys: Vec<String> = redis::cmd("JSON.OBJKEYS").arg("d").query(&mut c).unwrap();
    assert_eq!(keys, ["name", "n", "tags", "ok", "none"]);
    let many: Vec<Option<String>> = redis::cmd("JSON.MGET")
        .arg("d")
        .arg("nope")
        .arg("$.ok")
        .query(&mut c)
        .unwrap();
    assert_eq!(many, [Some("[true]".to_string()), None]);
    assert!(error_text(
        redis::cmd("JSON.SET")
            .arg("d")
            .arg("$")
            .arg("{oops")
            .query(&mut c)
    )
    .starts_with("ERR "));
    assert_eq!(
        error_text(redis::cmd("GET").arg("d").query(&mut c)),
        WRONGTYPE
    );
    let deleted: i64 = redis::cmd("JSON.DEL")
        .arg("d")
        .arg("$.tags[0]")
        .query(&mut c)
        .unwrap();
    assert_eq!(deleted, 1);
    // Survives a restart, types intact.
    drop(c);
    server.stop();
    let server = Server::start(&dir.path().join("z.data"));
    let mut c = server.connect();
    let got: String = redis::cmd("JSON.GET")
        .arg("d")
        .arg("$.tags")
        .arg("$.n")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, r#"{"$.tags":[["b"]],"$.n":[3]}"#);
    let kind: String = redis::cmd("TYPE").arg("d").query(&mut c).unwrap();
    assert_eq!(kind, "ReJSON-RL");
    server.stop();
}

#[test]
fn each_family_applies_inside_multi_exec_and_replies_take_each_protocols_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("z.data"));
    let mut c = server.connect();
    let (h, s, card): (i64, i64, i64) = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("v")
        .cmd("SADD")
        .arg("s")
        .arg("m1")
        .arg("m2")
        .cmd("SCARD")
        .arg("s")
        .query(&mut c)
        .unwrap();
    assert_eq!((h, s, card), (1, 2, 2));
    let (pushed, popped): (i64, String) = redis::pipe()
        .atomic()
        .cmd("RPUSH")
        .arg("l")
        .arg("x")
        .arg("y")
        .cmd("LPOP")
        .arg("l")
        .query(&mut c)
        .unwrap();
    assert_eq!((pushed, popped.as_str()), (2, "x"));
    let (added, score): (i64, f64) = redis::pipe()
        .atomic()
        .cmd("ZADD")
        .arg("z")
        .arg(1)
        .arg("m")
        .cmd("ZINCRBY")
        .arg("z")
        .arg(2)
        .arg("m")
        .query(&mut c)
        .unwrap();
    assert_eq!((added, score), (1, 3.0));
    // An error inside EXEC answers in its place; the rest applies.
    let mut raw = server.raw();
    exchange(
        &mut raw,
        "MULTI\r\nHINCRBY h f 1\r\nSREM s m1\r\nEXEC\r\n",
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n-ERR hash value is not an integer\r\n:1\r\n",
    );
    // RESP2: HGETALL and SMEMBERS are flat arrays; RESP3: a map and a set.
    exchange(&mut raw, "HGETALL h\r\n", "*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
    exchange(&mut raw, "SMEMBERS s\r\n", "*1\r\n$2\r\nm2\r\n");
    let mut raw = server.raw();
    std::io::Write::write_all(&mut raw, b"HELLO 3\r\nSELECT 0\r\n").unwrap();
    let mut hello = Vec::new();
    while !hello.ends_with(b"+OK\r\n") {
        let mut buf = [0u8; 512];
        let n = std::io::Read::read(&mut raw, &mut buf).unwrap();
        assert!(n > 0);
        hello.extend_from_slice(&buf[..n]);
    }
    exchange(&mut raw, "HGETALL h\r\n", "%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
    exchange(&mut raw, "SMEMBERS s\r\n", "~1\r\n$2\r\nm2\r\n");
    server.stop();
}

#[test]
fn a_deleted_large_set_goes_at_once_and_its_members_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = ServeOptions::new(dir.path().join("z.data"));
    options.port = 0;
    options.http_port = Some(0);
    options.reap_every = Duration::from_millis(100);
    let server = Server::start_options(options);
    let mut c = server.connect();
    let members: Vec<String> = (0..5000).map(|i| format!("member-{i}")).collect();
    for chunk in members.chunks(1000) {
        assert_eq!(c.sadd::<_, _, i64>("big", chunk).unwrap(), 1000);
    }
    assert_eq!(c.del::<_, i64>("big").unwrap(), 1);
    assert_eq!(c.scard::<_, i64>("big").unwrap(), 0);
    let http = server.running.as_ref().unwrap().http.expect("an HTTP port");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = common::http_get(http, "/metrics").1;
        let swept: HashMap<&str, u64> = metrics
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        if swept.get("ziggy_collection_members_swept_total") == Some(&5000) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not swept: {metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
}
