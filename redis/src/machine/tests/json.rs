//! JSON documents in the state machine: RedisJSON's replies for the common subset.

use super::*;

fn json(h: &mut Harness, args: &[&str]) -> String {
    match h.cmd(args) {
        Reply::Bulk(bytes) => String::from_utf8(bytes).unwrap(),
        other => panic!("{args:?} answered {other:?}"),
    }
}

#[test]
fn documents_keep_their_types_and_answer_paths() {
    let mut h = Harness::new();
    let doc = r#"{"name":"ziggy","n":1,"f":1.5,"ok":true,"none":null,"tags":["a","b"],"nested":{"x":{"y":2}}}"#;
    assert_eq!(h.cmd(&["JSON.SET", "d", "$", doc]), ok());
    assert_eq!(
        json(&mut h, &["JSON.GET", "d"]),
        doc,
        "text and key order kept"
    );
    assert_eq!(json(&mut h, &["JSON.GET", "d", "$.n"]), "[1]");
    assert_eq!(
        json(&mut h, &["JSON.GET", "d", ".n"]),
        "1",
        "a legacy path: the value"
    );
    assert_eq!(json(&mut h, &["JSON.GET", "d", "nested.x.y"]), "2");
    assert_eq!(json(&mut h, &["JSON.GET", "d", "$.tags[-1]"]), r#"["b"]"#);
    assert_eq!(
        json(&mut h, &["JSON.GET", "d", "$['name']"]),
        r#"["ziggy"]"#
    );
    assert_eq!(
        json(&mut h, &["JSON.GET", "d", "$.tags[*]"]),
        r#"["a","b"]"#
    );
    assert_eq!(json(&mut h, &["JSON.GET", "d", "$.missing"]), "[]");
    assert_eq!(
        json(&mut h, &["JSON.GET", "d", "$.n", "$.ok"]),
        r#"{"$.n":[1],"$.ok":[true]}"#
    );
    assert_eq!(
        h.cmd(&["JSON.GET", "d", ".missing"]),
        err("ERR Path '.missing' does not exist")
    );
    assert_eq!(h.cmd(&["JSON.GET", "none"]), Reply::Nil);
    // Types.
    for (path, kind) in [
        (".name", "string"),
        (".n", "integer"),
        (".f", "number"),
        (".ok", "boolean"),
        (".none", "null"),
        (".tags", "array"),
        (".", "object"),
    ] {
        assert_eq!(
            h.cmd(&["JSON.TYPE", "d", path]),
            Reply::Status(kind.into()),
            "{path}"
        );
    }
    assert_eq!(
        h.cmd(&["JSON.TYPE", "d", "$.n"]),
        Reply::Array(vec![Reply::Status("integer".into())])
    );
    // Changes in place.
    assert_eq!(json(&mut h, &["JSON.NUMINCRBY", "d", "$.n", "2"]), "[3]");
    assert_eq!(json(&mut h, &["JSON.NUMINCRBY", "d", ".n", "0.5"]), "3.5");
    assert_eq!(
        h.cmd(&["JSON.TYPE", "d", ".n"]),
        Reply::Status("number".into()),
        "now a float"
    );
    assert_eq!(
        json(&mut h, &["JSON.NUMINCRBY", "d", "$.name", "1"]),
        "[null]",
        "not a number"
    );
    assert_eq!(
        h.cmd(&["JSON.NUMINCRBY", "d", ".name", "1"]),
        err("ERR wrong type of path value - expected a number")
    );
    assert_eq!(
        h.cmd(&["JSON.STRAPPEND", "d", "$.name", "\"db\""]),
        Reply::Array(vec![int(7)])
    );
    assert_eq!(
        h.cmd(&["JSON.ARRAPPEND", "d", "$.tags", "\"c\"", "3"]),
        Reply::Array(vec![int(4)])
    );
    assert_eq!(
        json(&mut h, &["JSON.GET", "d", ".tags"]),
        r#"["a","b","c",3]"#
    );
    assert_eq!(
        h.cmd(&["JSON.OBJKEYS", "d", ".nested"]),
        Reply::Array(vec![bulk("x")])
    );
    // Setting below the root: existing values, new keys of existing objects.
    assert_eq!(
        h.cmd(&["JSON.SET", "d", "$.nested.x.y", "{\"deep\":[1]}"]),
        ok()
    );
    assert_eq!(h.cmd(&["JSON.SET", "d", "$.nested.new", "false"]), ok());
    assert_eq!(
        h.cmd(&["JSON.SET", "d", "$.nested.new", "1", "NX"]),
        Reply::Nil
    );
    assert_eq!(
        h.cmd(&["JSON.SET", "d", "$.absent.deeper", "1"]),
        Reply::Nil
    );
    assert_eq!(
        json(&mut h, &["JSON.GET", "d", "$.nested"]),
        r#"[{"x":{"y":{"deep":[1]}},"new":false}]"#
    );
    assert_eq!(
        h.cmd(&["JSON.SET", "new", "$.a", "1"]),
        err("ERR new objects must be created at the root")
    );
    assert!(h.cmd(&["JSON.SET", "d", "$", "{bad json"]).is_error());
    assert_eq!(
        h.cmd(&["JSON.SET", "d", "$..x", "1"]),
        err("ERR invalid JSONPath '$..x'")
    );
    // Deletes.
    assert_eq!(h.cmd(&["JSON.DEL", "d", "$.tags[0]"]), int(1));
    assert_eq!(h.cmd(&["JSON.DEL", "d", "$.tags[*]"]), int(3));
    assert_eq!(json(&mut h, &["JSON.GET", "d", ".tags"]), "[]");
    assert_eq!(h.cmd(&["JSON.DEL", "d", "$.nope"]), int(0));
    // MGET, TYPE, types of errors.
    assert_eq!(h.cmd(&["JSON.SET", "e", ".", r#"{"n":10}"#]), ok());
    assert_eq!(
        h.cmd(&["JSON.MGET", "d", "e", "none", "$.n"]),
        Reply::Array(vec![bulk("[3.5]"), bulk("[10]"), Reply::Nil])
    );
    assert_eq!(h.cmd(&["TYPE", "d"]), Reply::Status("ReJSON-RL".into()));
    assert_eq!(h.cmd(&["GET", "d"]), err(WRONGTYPE_TEXT));
    assert_eq!(h.cmd(&["SET", "s", "v"]), ok());
    assert_eq!(h.cmd(&["JSON.GET", "s"]), err(WRONGTYPE_TEXT));
    assert_eq!(h.cmd(&["JSON.DEL", "d"]), int(1));
    assert_eq!(h.cmd(&["EXISTS", "d"]), int(0));
}

const WRONGTYPE_TEXT: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
