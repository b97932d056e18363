//! `ziggy serve` over real TCP, driven by the `redis` crate (and raw sockets for malformed
//! frames): commands and their error replies, pipelining, transactions, WATCH, AUTH, expiry, a
//! restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use redis::{Commands, Value};
use ziggy_io::server::ServeOptions;

mod common;
use common::{error_text, exchange, http_get, Server};

#[test]
fn strings_counters_keys_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ziggy.data"));
    let mut c = server.connect();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(c.get::<_, Option<String>>("missing").unwrap(), None);
    assert_eq!(c.append::<_, _, i64>("k", "w").unwrap(), 2);
    assert_eq!(c.incr::<_, _, i64>("n", 5).unwrap(), 5);
    assert_eq!(c.decr::<_, _, i64>("n", 2).unwrap(), 3);
    let float: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("1.5")
        .query(&mut c)
        .unwrap();
    assert_eq!(float, "1.5");
    let values: Vec<Option<String>> = c.mget(&["k", "nope", "n"]).unwrap();
    assert_eq!(values, [Some("vw".into()), None, Some("3".into())]);
    assert_eq!(c.exists::<_, i64>(&["k", "n", "x"]).unwrap(), 2);
    assert_eq!(c.del::<_, i64>(&["k", "x"]).unwrap(), 1);
    // A write that answers with a large value keeps that reply for retries.
    let large = vec![b'L'; 50_000];
    let _: () = c.set("large", &large).unwrap();
    let old: Vec<u8> = redis::cmd("SET")
        .arg("large")
        .arg("small")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old, large);
    let _: () = c.set("large", &large).unwrap();
    assert_eq!(c.get_del::<_, Vec<u8>>("large").unwrap(), large);
    // Large values pipelined: each goes in a group it fits.
    let mut pipe = redis::pipe();
    for i in 0..5 {
        pipe.cmd("SET")
            .arg(format!("large{i}"))
            .arg(&large)
            .ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let five: Vec<Vec<u8>> = c.mget(&["large0", "large4"]).unwrap();
    assert_eq!(five, [large.clone(), large.clone()]);
    let removed: i64 = c
        .del(&["large0", "large1", "large2", "large3", "large4"])
        .unwrap();
    assert_eq!(removed, 5);
    let too_large = redis::cmd("SET")
        .arg("x")
        .arg(vec![0u8; 70_000])
        .query::<Value>(&mut c);
    assert!(
        error_text(too_large).starts_with("ERR"),
        "a value beyond the limit is refused"
    );
    let binary = vec![0u8, 255, 13, 10, 7];
    let _: () = c.set(b"bin", &binary).unwrap();
    assert_eq!(c.get::<_, Vec<u8>>(b"bin").unwrap(), binary);

    let not_integer = redis::cmd("INCR").arg("bin").query::<Value>(&mut c);
    assert_eq!(
        error_text(not_integer),
        "ERR value is not an integer or out of range"
    );
    let _: () = c.set("max", i64::MAX).unwrap();
    let overflow = redis::cmd("INCR").arg("max").query::<Value>(&mut c);
    assert_eq!(
        error_text(overflow),
        "ERR increment or decrement would overflow"
    );
    let arity = redis::cmd("GET").query::<Value>(&mut c);
    assert_eq!(
        error_text(arity),
        "ERR wrong number of arguments for 'get' command"
    );
    let unknown = redis::cmd("NOSUCH").arg("a").query::<Value>(&mut c);
    assert!(error_text(unknown).starts_with("ERR unknown command 'NOSUCH'"));
    let syntax = redis::cmd("SET")
        .arg("a")
        .arg("b")
        .arg("NX")
        .arg("XX")
        .query::<Value>(&mut c);
    assert_eq!(error_text(syntax), "ERR syntax error");
    // The connection survives error replies.
    assert_eq!(c.get::<_, String>("n").unwrap(), "3");

    let mut keys: Vec<String> = c.keys("*").unwrap();
    keys.sort();
    assert_eq!(keys, ["bin", "f", "max", "n"]);
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(size, 4);
    let mut scanned: Vec<String> = c
        .scan_match("m*")
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    scanned.sort();
    assert_eq!(scanned, ["max"]);
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(count > 40, "{count}");
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut c)
        .unwrap();
    assert_eq!(config, ["appendonly", "yes"]);
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(size, 0);
    server.stop();
}

#[test]
fn pipelines_keep_order_and_transactions_apply_together() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ziggy.data"));
    let mut c = server.connect();
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("SET").arg("p").arg(i).ignore();
        pipe.cmd("GET").arg("p");
    }
    let seen: Vec<i64> = pipe.query(&mut c).unwrap();
    assert_eq!(
        seen,
        (0..200).collect::<Vec<i64>>(),
        "each GET sees the SET before it"
    );

    // A thousand writes in one pipeline, with long replies: far more than one write's reply
    // slot holds, so the server must split them into several write groups.
    let _: () = c.set("many", 1_000_000_000_000_000_000i64).unwrap();
    let mut pipe = redis::pipe();
    for _ in 0..1000 {
        pipe.cmd("INCR").arg("many");
    }
    pipe.cmd("INCRBY").arg("big").arg(i64::MAX - 1);
    pipe.cmd("SET").arg("many").arg("again").arg("GET");
    let replies: Vec<Value> = pipe.query(&mut c).unwrap();
    assert_eq!(replies.len(), 1002);
    for (i, reply) in replies[..1000].iter().enumerate() {
        assert_eq!(
            *reply,
            Value::Int(1_000_000_000_000_000_001 + i as i64),
            "{i}"
        );
    }
    assert_eq!(replies[1000], Value::Int(i64::MAX - 1));
    assert_eq!(
        replies[1001],
        Value::BulkString(b"1000000000000001000".to_vec())
    );

    let (a, b): (i64, String) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("t")
        .cmd("SET")
        .arg("u")
        .arg("x")
        .ignore()
        .cmd("GET")
        .arg("u")
        .query(&mut c)
        .unwrap();
    assert_eq!((a, b), (1, "x".to_string()));

    // A command refused while queueing aborts EXEC.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: Value = redis::cmd("SET")
        .arg("only-one-arg")
        .query(&mut c)
        .unwrap_or(Value::Nil);
    let _: Value = redis::cmd("INCR").arg("t").query(&mut c).unwrap();
    let aborted = redis::cmd("EXEC").query::<Value>(&mut c);
    assert!(error_text(aborted).starts_with("EXECABORT"));
    assert_eq!(
        c.get::<_, i64>("t").unwrap(),
        1,
        "nothing of the aborted transaction applied"
    );
    let discard = redis::cmd("DISCARD").query::<Value>(&mut c);
    assert_eq!(error_text(discard), "ERR DISCARD without MULTI");
    server.stop();
}

#[test]
fn keys_expire_and_everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ziggy.data");
    let server = Server::start(&data);
    let mut c = server.connect();
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(150)
        .query(&mut c)
        .unwrap();
    let _: () = c.set_ex("long", "v", 1000).unwrap();
    let ttl: i64 = c.ttl("long").unwrap();
    assert!((999..=1000).contains(&ttl), "{ttl}");
    assert_eq!(
        c.get::<_, Option<String>>("short").unwrap(),
        Some("v".into())
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.get::<_, Option<String>>("short").unwrap(), None);
    assert_eq!(c.ttl::<_, i64>("short").unwrap(), -2);
    for i in 0..500 {
        let _: () = c.set(format!("key{i}"), i).unwrap();
    }
    drop(c);
    server.stop();

    let server = Server::start(&data);
    let mut c = server.connect();
    for i in 0..500 {
        assert_eq!(c.get::<_, i64>(format!("key{i}")).unwrap(), i);
    }
    let ttl: i64 = c.ttl("long").unwrap();
    assert!((990..=1000).contains(&ttl), "the deadline survives: {ttl}");
    server.stop();
}

#[test]
fn a_malformed_frame_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ziggy.data"));
    let addr = server.running.as_ref().unwrap().addr;
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"*1\r\n$x\r\n").unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert_eq!(
        answer, "-ERR Protocol error: invalid bulk length\r\n",
        "then closed"
    );

    let mut inline = TcpStream::connect(addr).unwrap();
    inline
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    inline
        .write_all(b"SET greeting \"hello world\"\r\nGET greeting\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < b"+OK\r\n$11\r\nhello world\r\n".len() {
        let n = inline.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"+OK\r\n$11\r\nhello world\r\n");

    let mut resp3 = TcpStream::connect(addr).unwrap();
    resp3
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    resp3.write_all(b"HELLO 3\r\nGET nothing\r\n").unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"_\r\n") {
        let n = resp3.read(&mut buf).unwrap();
        assert!(n > 0, "{:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"%7\r\n"), "HELLO 3 answers a map");
    server.stop();
}

#[test]
fn watch_aborts_exec_when_a_watched_key_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ziggy.data"));
    let mut other = server.connect();
    let mut raw = server.raw();
    let _: () = other.set("k", "1").unwrap();

    // Another connection writes the key: EXEC answers a null array, and nothing applies.
    exchange(&mut raw, "WATCH k\r\n", "+OK\r\n");
    let _: () = other.set("k", "2").unwrap();
    exchange(
        &mut raw,
        "MULTI\r\nSET k 3\r\nSET side 1\r\nEXEC\r\n",
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n*-1\r\n",
    );
    assert_eq!(other.get::<_, String>("k").unwrap(), "2");
    assert_eq!(other.exists::<_, i64>("side").unwrap(), 0);

    // No change: it applies, and EXEC unwatched the key.
    exchange(
        &mut raw,
        "WATCH k\r\nMULTI\r\nINCR k\r\nEXEC\r\n",
        "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n:3\r\n",
    );
    let _: () = other.set("k", "9").unwrap();
    exchange(
        &mut raw,
        "MULTI\r\nINCR k\r\nEXEC\r\n",
        "+OK\r\n+QUEUED\r\n*1\r\n:10\r\n",
    );

    // A DEL of a watched key aborts; so does a key written and deleted while it was absent.
    exchange(&mut raw, "WATCH k gone\r\n", "+OK\r\n");
    let _: i64 = other.del("k").unwrap();
    exchange(
        &mut raw,
        "MULTI\r\nSET k x\r\nEXEC\r\n",
        "+OK\r\n+QUEUED\r\n*-1\r\n",
    );
    exchange(&mut raw, "WATCH gone\r\n", "+OK\r\n");
    let _: () = other.set("gone", "v").unwrap();
    let _: i64 = other.del("gone").unwrap();
    exchange(
        &mut raw,
        "MULTI\r\nSET k x\r\nEXEC\r\n",
        "+OK\r\n+QUEUED\r\n*-1\r\n",
    );
    assert_eq!(other.exists::<_, i64>("k").unwrap(), 0);

    // An absent key that stays absent does not abort.
    exchange(
        &mut raw,
        "WATCH gone\r\nMULTI\r\nSET k x\r\nEXEC\r\n",
        "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n",
    );

    // UNWATCH forgets; DISCARD too.
    exchange(&mut raw, "WATCH k\r\nUNWATCH\r\n", "+OK\r\n+OK\r\n");
    let _: () = other.set("k", "other").unwrap();
    exchange(
        &mut raw,
        "MULTI\r\nGET k\r\nEXEC\r\n",
        "+OK\r\n+QUEUED\r\n*1\r\n$5\r\nother\r\n",
    );
    exchange(
        &mut raw,
        "WATCH k\r\nMULTI\r\nDISCARD\r\n",
        "+OK\r\n+OK\r\n+OK\r\n",
    );
    let _: () = other.set("k", "again").unwrap();
    exchange(
        &mut raw,
        "MULTI\r\nUNWATCH\r\nEXEC\r\n",
        "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n",
    );

    // WATCH inside MULTI is refused, without failing the transaction.
    exchange(
        &mut raw,
        "MULTI\r\nWATCH k\r\nINCR n\r\nEXEC\r\n",
        "+OK\r\n-ERR WATCH inside MULTI is not allowed\r\n+QUEUED\r\n*1\r\n:1\r\n",
    );
    exchange(
        &mut raw,
        "WATCH\r\n",
        "-ERR wrong number of arguments for 'watch' command\r\n",
    );

    // An empty transaction still checks; in RESP3 an aborted EXEC answers `_`.
    exchange(
        &mut raw,
        "WATCH k\r\nMULTI\r\nEXEC\r\n",
        "+OK\r\n+OK\r\n*0\r\n",
    );
    exchange(&mut raw, "WATCH k\r\n", "+OK\r\n");
    let _: () = other.set("k", "changed").unwrap();
    exchange(&mut raw, "MULTI\r\nEXEC\r\n", "+OK\r\n*-1\r\n");
    let mut resp3 = server.raw();
    let mut hello = Vec::new();
    resp3.write_all(b"HELLO 3\r\n").unwrap();
    while !hello.ends_with(b"*0\r\n") {
        let mut buf = [0u8; 512];
        let n = resp3.read(&mut buf).unwrap();
        assert!(n > 0);
        hello.extend_from_slice(&buf[..n]);
    }
    exchange(&mut resp3, "WATCH k\r\n", "+OK\r\n");
    let _: () = other.set("k", "changed again").unwrap();
    exchange(
        &mut resp3,
        "MULTI\r\nINCR n\r\nEXEC\r\n",
        "+OK\r\n+QUEUED\r\n_\r\n",
    );
    assert_eq!(other.get::<_, i64>("n").unwrap(), 1);
    server.stop();
}

#[test]
fn optimistic_transactions_from_many_clients_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ziggy.data"));
    let url = server.url();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                for _ in 0..15 {
                    // GET then SET: a lost update unless WATCH aborts the stale ones.
                    let _: () = redis::transaction(&mut c, &["counter"], |c, pipe| {
                        let n: i64 = c.get::<_, Option<i64>>("counter")?.unwrap_or(0);
                        pipe.set("counter", n + 1).ignore().query(c)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let mut c = server.connect();
    assert_eq!(c.get::<_, i64>("counter").unwrap(), 60);
    server.stop();
}

#[test]
fn clients_cannot_send_the_servers_own_commands() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("ziggy.data"));
    let mut raw = server.raw();
    exchange(&mut raw, "SET k v PX 1\r\n", "+OK\r\n");
    for (request, name) in [
        ("~watch k\r\n", "'~watch', with args beginning with: 'k' "),
        (
            "~check k 1 1 0\r\n",
            "'~check', with args beginning with: 'k' '1' '1' '0' ",
        ),
        (
            "~REAP 10 \"\"\r\n",
            "'~REAP', with args beginning with: '10' '' ",
        ),
    ] {
        exchange(
            &mut raw,
            request,
            &format!("-ERR unknown command {name}\r\n"),
        );
    }
    exchange(
        &mut raw,
        "MULTI\r\n~reap 10 x\r\nEXEC\r\n",
        "+OK\r\n-ERR unknown command '~reap'\r\n-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    let mut c = server.connect();
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    let names: Vec<Value> = redis::cmd("COMMAND").query(&mut c).unwrap();
    assert_eq!(names.len() as i64, count);
    let info: Vec<Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("~reap")
        .arg("watch")
        .query(&mut c)
        .unwrap();
    assert_eq!(info[0], Value::Nil, "not listed");
    assert_ne!(info[1], Value::Nil);
    server.stop();
}

#[test]
fn a_password_is_required_until_auth() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("ziggy.data"), Some("s3cret"));
    let mut raw = server.raw();
    exchange(
        &mut raw,
        "GET k\r\n",
        "-NOAUTH Authentication required.\r\n",
    );
    exchange(
        &mut raw,
        "MULTI\r\n",
        "-NOAUTH Authentication required.\r\n",
    );
    exchange(
        &mut raw,
        "HELLO 3\r\n",
        "-NOAUTH HELLO must be called with the client already authenticated, otherwise the \
         HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
         select the RESP protocol version at the same time\r\n",
    );
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    exchange(&mut raw, "AUTH wrong\r\n", wrongpass);
    exchange(&mut raw, "AUTH s3cre\r\n", wrongpass);
    exchange(&mut raw, "AUTH s3crett\r\n", wrongpass);
    exchange(&mut raw, "AUTH someone s3cret\r\n", wrongpass);
    exchange(&mut raw, "HELLO 3 AUTH default wrong\r\n", wrongpass);
    exchange(&mut raw, "AUTH a b c\r\n", "-ERR syntax error\r\n");
    exchange(
        &mut raw,
        "GET k\r\n",
        "-NOAUTH Authentication required.\r\n",
    );
    exchange(
        &mut raw,
        "AUTH s3cret\r\nSET k v\r\nGET k\r\n",
        "+OK\r\n+OK\r\n$1\r\nv\r\n",
    );

    let mut other = server.raw();
    exchange(
        &mut other,
        "AUTH default s3cret\r\nGET k\r\n",
        "+OK\r\n$1\r\nv\r\n",
    );
    let mut hello = server.raw();
    hello
        .write_all(b"HELLO 3 AUTH default s3cret SETNAME me\r\n")
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"*0\r\n") {
        let mut buf = [0u8; 512];
        let n = hello.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"%7\r\n"), "authenticated, in RESP3");
    exchange(
        &mut hello,
        "GET k\r\nCLIENT GETNAME\r\n",
        "$1\r\nv\r\n$2\r\nme\r\n",
    );
    let mut quit = server.raw();
    exchange(&mut quit, "QUIT\r\n", "+OK\r\n");

    // The redis crate authenticates from the URL.
    let addr = server.running.as_ref().unwrap().addr;
    let mut c = redis::Client::open(format!("redis://:s3cret@{addr}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    server.stop();

    let server = Server::start(&dir.path().join("other.data"));
    let mut raw = server.raw();
    exchange(
        &mut raw,
        "AUTH pass\r\n",
        "-ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?\r\n",
    );
    exchange(
        &mut raw,
        "AUTH default anything\r\nAUTH\r\n",
        "+OK\r\n-ERR wrong number of arguments for 'auth' command\r\n",
    );
    server.stop();
}

/// `GET path` on the HTTP port: the status code and the body.

#[test]
fn expired_keys_are_reaped_and_info_and_http_describe_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = ServeOptions::new(dir.path().join("z.data"));
    options.port = 0;
    options.http_port = Some(0);
    options.reap_every = Duration::from_millis(100);
    let server = Server::start_options(options);
    let mut conn = server.connect();
    for n in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("short{n}"))
            .arg(n)
            .arg("PX")
            .arg(50)
            .query(&mut conn)
            .unwrap();
    }
    for n in 0..10 {
        let _: () = conn.set(format!("long{n}"), n).unwrap();
    }
    let _: Option<String> = conn.get("long0").unwrap(); // a hit
    let _: Option<String> = conn.get("nosuch").unwrap(); // a miss
                                                         // The reaper deletes the 50 expired keys through the log; INFO counts them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats: String = redis::cmd("INFO").arg("stats").query(&mut conn).unwrap();
        if stats.contains("expired_keys:50\r\n") {
            break stats;
        }
        assert!(std::time::Instant::now() < deadline, "not reaped: {stats}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(stats.contains("keyspace_hits:1\r\n"), "{stats}");
    assert!(stats.contains("keyspace_misses:1\r\n"), "{stats}");
    assert!(!stats.contains("# Server"), "only the section asked for");
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(dbsize, 10);
    let info: String = redis::cmd("INFO").query(&mut conn).unwrap();
    for needle in [
        "# Server",
        "# Clients\r\nconnected_clients:1\r\n",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Replication\r\nrole:master\r\nraft_role:leader\r\n",
        "db0:keys=10,",
    ] {
        assert!(info.contains(needle), "{needle:?} missing from {info}");
    }
    let http = server.running.as_ref().unwrap().http.expect("an HTTP port");
    assert_eq!(http_get(http, "/health"), (200, "ok\n".to_string()));
    let (code, status) = http_get(http, "/status");
    assert_eq!(code, 200);
    assert!(
        status.contains(r#""role":"leader""#) && status.contains(r#""leader":0"#),
        "{status}"
    );
    let (code, metrics) = http_get(http, "/metrics");
    assert_eq!(code, 200);
    for needle in [
        "ziggy_commands_total{cmd=\"set\"} 60\n",
        "ziggy_command_seconds_count{cmd=\"get\"} 2\n",
        "ziggy_expired_keys_reaped_total 50\n",
        "ziggy_leader 1\n",
        "ziggy_connections 1\n",
        "ziggy_wal_fsync_seconds_count ",
        "ziggy_compaction_debt_bytes ",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle:?} missing from {metrics}"
        );
    }
    assert_eq!(http_get(http, "/nosuch").0, 404);
    // With nothing left to expire, passes over the keyspace look (reads) but write nothing.
    let entries = |metrics: &str| {
        let line = metrics
            .lines()
            .find(|l| l.starts_with("ziggy_reaper_entries_total "));
        let count = line.and_then(|l| l.split(' ').nth(1)?.parse::<u64>().ok());
        count.expect("ziggy_reaper_entries_total in /metrics")
    };
    let before = entries(&metrics);
    assert!(before >= 1, "the 50 keys took at least one entry");
    std::thread::sleep(Duration::from_millis(600)); // six passes
    assert_eq!(
        entries(&http_get(http, "/metrics").1),
        before,
        "idle passes wrote"
    );
    drop(conn);
    server.stop();
}

/// Raises this process's open-file limit as far as the hard limit allows; returns the soft limit.
fn raise_open_files(wanted: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = wanted.min(limit.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[test]
fn thousands_of_connections_are_served_at_once() {
    // Each connection costs two descriptors here: the client's and the server's.
    let files = raise_open_files(8192) as usize;
    // Room is left for the descriptors of the other tests of this binary, which run alongside.
    let count = 2000.min(files.saturating_sub(400) / 2);
    assert!(
        count >= 300,
        "the open-file limit ({files}) is too low for this test"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("z.data"));
    let mut streams: Vec<TcpStream> = (0..count).map(|_| server.raw()).collect();
    // Every connection's write goes out before any reply is read: all are open at once.
    for (i, stream) in streams.iter_mut().enumerate() {
        let (key, value) = (format!("conn{i}"), format!("v{i}"));
        let request = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
            key.len(),
            value.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
    }
    for stream in streams.iter_mut() {
        let mut reply = [0u8; 5];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+OK\r\n");
    }
    let mut conn = server.connect();
    let info: String = redis::cmd("INFO").arg("clients").query(&mut conn).unwrap();
    let connected = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap();
    assert_eq!(connected, count + 1, "{info}");
    let keys: Vec<String> = (0..count).map(|i| format!("conn{i}")).collect();
    let values: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
    assert!(values
        .iter()
        .enumerate()
        .all(|(i, v)| *v == format!("v{i}")));
    drop(streams);
    drop(conn);
    server.stop();
}
