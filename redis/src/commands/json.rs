//! JSON documents, RedisJSON's common subset: JSON.SET JSON.GET JSON.DEL JSON.TYPE
//! JSON.NUMINCRBY JSON.STRAPPEND JSON.ARRAPPEND JSON.OBJKEYS JSON.MGET, with JSONPath paths
//! (`$`, `$.a.b`, `$['a']`, `$[0]`, `$[-1]`, `$.*`, `$[*]`) and legacy paths (`.`, `.a.b`,
//! `a[0]`). A `$` path answers every match (an array); a legacy path answers its one value.
//!
//! A document is one record (its compact text, parsed and checked on every write), so it is
//! bounded by the largest value a key may hold. Numbers keep their kind (an integer stays one
//! until a float is added to it), and objects keep their keys' order.

use super::{is, wrong_type};
use crate::keyspace::Keyspace;
use crate::record::{Kind, Record};
use serde_json::{Map, Number, Value};
use ziggy_core::state_machine::StateError;
use ziggy_resp::Reply;

type Result = std::result::Result<Reply, StateError>;

/// One step of a path.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Key(String),
    Index(i64),
    /// `*`: every member of an object or element of an array.
    All,
}

/// A parsed path: its steps, and whether it is a JSONPath (`$`) one.
#[derive(Clone, Debug)]
struct Path {
    steps: Vec<Step>,
    dollar: bool,
}

fn path_error(path: &[u8]) -> Reply {
    Reply::error(format!(
        "ERR invalid JSONPath '{}'",
        String::from_utf8_lossy(path)
    ))
}

impl Path {
    fn parse(text: &[u8]) -> Option<Path> {
        let text = std::str::from_utf8(text).ok()?;
        let (dollar, mut rest) = match text.strip_prefix('$') {
            Some(rest) => (true, rest),
            None if text == "." => (false, ""),
            None if text.starts_with('.') || text.starts_with('[') => (false, text),
            None => (false, text), // legacy `a.b`: a first key without its dot
        };
        let mut steps = Vec::new();
        if !dollar && !rest.is_empty() && !rest.starts_with(['.', '[']) {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Key(rest[..end].to_string()));
            rest = &rest[end..];
        }
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let name = &after[..end];
                if name.is_empty() {
                    return None; // `..` (recursive descent) is not supported
                }
                steps.push(if name == "*" {
                    Step::All
                } else {
                    Step::Key(name.to_string())
                });
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']')?;
                let inside = after[..end].trim();
                let step = if inside == "*" {
                    Step::All
                } else if let Some(quoted) = inside
                    .strip_prefix('\'')
                    .and_then(|q| q.strip_suffix('\''))
                    .or_else(|| inside.strip_prefix('"').and_then(|q| q.strip_suffix('"')))
                {
                    Step::Key(quoted.to_string())
                } else {
                    Step::Index(inside.parse().ok()?)
                };
                steps.push(step);
                rest = &after[end + 1..];
            } else {
                return None;
            }
        }
        Some(Path { steps, dollar })
    }

    fn root() -> Path {
        Path {
            steps: Vec::new(),
            dollar: false,
        }
    }
}

/// The index of `i` (negative: from the end) in an array of `len`.
fn index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { i + len as i64 } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

/// The locations (as concrete key/index steps) of every value `steps` matches in `doc`.
fn locate(doc: &Value, steps: &[Step]) -> Vec<Vec<Step>> {
    let Some((first, rest)) = steps.split_first() else {
        return vec![Vec::new()];
    };
    let children: Vec<(Step, &Value)> = match (first, doc) {
        (Step::Key(k), Value::Object(map)) => {
            map.get(k).map(|v| (first.clone(), v)).into_iter().collect()
        }
        (Step::Index(i), Value::Array(items)) => index(*i, items.len())
            .map(|at| (Step::Index(at as i64), &items[at]))
            .into_iter()
            .collect(),
        (Step::All, Value::Object(map)) => {
            map.iter().map(|(k, v)| (Step::Key(k.clone()), v)).collect()
        }
        (Step::All, Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (Step::Index(i as i64), v))
            .collect(),
        _ => Vec::new(),
    };
    let mut found = Vec::new();
    for (step, child) in children {
        for mut tail in locate(child, rest) {
            tail.insert(0, step.clone());
            found.push(tail);
        }
    }
    found
}

fn at_mut<'a>(doc: &'a mut Value, location: &[Step]) -> Option<&'a mut Value> {
    location.iter().try_fold(doc, |v, step| match (step, v) {
        (Step::Key(k), Value::Object(map)) => map.get_mut(k),
        (Step::Index(i), Value::Array(items)) => items.get_mut(*i as usize),
        _ => None,
    })
}

fn at<'a>(doc: &'a Value, location: &[Step]) -> Option<&'a Value> {
    location.iter().try_fold(doc, |v, step| match (step, v) {
        (Step::Key(k), Value::Object(map)) => map.get(k),
        (Step::Index(i), Value::Array(items)) => items.get(*i as usize),
        _ => None,
    })
}

/// The document at `key`: Ok(None) if absent, Err(reply) for another type.
fn load(
    ks: &mut Keyspace,
    key: &[u8],
) -> std::result::Result<std::result::Result<Option<(Value, u64)>, Reply>, StateError> {
    Ok(match ks.get(key)? {
        None => Ok(None),
        Some(r) if r.kind != Kind::Json => Err(wrong_type()),
        Some(r) => {
            let doc = serde_json::from_slice(&r.payload).expect("a stored document parses");
            Ok(Some((doc, r.expires_at)))
        }
    })
}

fn store(
    ks: &mut Keyspace,
    key: &[u8],
    doc: &Value,
    expires_at: u64,
) -> std::result::Result<Option<Reply>, StateError> {
    let text = serde_json::to_vec(doc).expect("a value serializes");
    if text.len() > ks.value_max {
        return Ok(Some(Reply::error(
            "ERR the document exceeds the largest value a key may hold",
        )));
    }
    let record = Record {
        kind: Kind::Json,
        expires_at,
        modified: 0,
        payload: text,
    };
    ks.put(key, &record)?;
    Ok(None)
}

fn parse_value(text: &[u8]) -> std::result::Result<Value, Reply> {
    serde_json::from_slice(text).map_err(|e| Reply::error(format!("ERR {e}")))
}

fn text(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a value serializes")
}

/// Unwraps a step's result or returns its reply.
macro_rules! take {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reply) => return Ok(reply),
        }
    };
}

/// `JSON.SET key path value [NX|XX]`.
pub fn set(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let Some(path) = Path::parse(args[2]) else {
        return Ok(path_error(args[2]));
    };
    let value = take!(parse_value(args[3]));
    let (nx, xx) = match args.get(4) {
        None => (false, false),
        Some(a) if is(a, "NX") && args.len() == 5 => (true, false),
        Some(a) if is(a, "XX") && args.len() == 5 => (false, true),
        Some(_) => return Ok(super::syntax_error()),
    };
    let loaded = take!(load(ks, args[1])?);
    if path.steps.is_empty() {
        if (nx && loaded.is_some()) || (xx && loaded.is_none()) {
            return Ok(Reply::Nil);
        }
        let expires_at = loaded.map_or(0, |(_, e)| e);
        return Ok(store(ks, args[1], &value, expires_at)?.unwrap_or_else(Reply::ok));
    }
    let Some((mut doc, expires_at)) = loaded else {
        return Ok(Reply::error("ERR new objects must be created at the root"));
    };
    let found = locate(&doc, &path.steps);
    if !found.is_empty() {
        if nx {
            return Ok(Reply::Nil);
        }
        for location in found {
            *at_mut(&mut doc, &location).expect("located") = value.clone();
        }
    } else {
        // A new key in an existing object: the parent must exist, the last step be a key.
        let (last, parent) = path.steps.split_last().expect("not the root");
        let Step::Key(name) = last else {
            return Ok(Reply::Nil);
        };
        let parents = locate(&doc, parent);
        let mut added = false;
        for location in parents {
            if xx {
                break;
            }
            if let Some(Value::Object(map)) = at_mut(&mut doc, &location) {
                map.insert(name.clone(), value.clone());
                added = true;
            }
        }
        if !added {
            return Ok(Reply::Nil);
        }
    }
    Ok(store(ks, args[1], &doc, expires_at)?.unwrap_or_else(Reply::ok))
}

/// `JSON.GET key [path ...]` (formatting options, `INDENT` and the like, are not supported).
pub fn get(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut paths = Vec::new();
    for arg in &args[2..] {
        paths.push(match Path::parse(arg) {
            Some(p) => (p, *arg),
            None => return Ok(path_error(arg)),
        });
    }
    let Some((doc, _)) = take!(load(ks, args[1])?) else {
        return Ok(Reply::Nil);
    };
    if paths.is_empty() {
        return Ok(Reply::Bulk(text(&doc)));
    }
    let answer = |path: &Path| -> std::result::Result<Value, Reply> {
        let found = locate(&doc, &path.steps);
        if path.dollar {
            Ok(Value::Array(
                found.iter().map(|l| at(&doc, l).unwrap().clone()).collect(),
            ))
        } else {
            match found.first() {
                Some(l) => Ok(at(&doc, l).unwrap().clone()),
                None => Err(Reply::error(format!(
                    "ERR Path '{}' does not exist",
                    path_text(path)
                ))),
            }
        }
    };
    if paths.len() == 1 {
        return Ok(Reply::Bulk(text(&take!(answer(&paths[0].0)))));
    }
    let mut object = Map::new();
    for (path, raw) in &paths {
        object.insert(
            String::from_utf8_lossy(raw).into_owned(),
            take!(answer(path)),
        );
    }
    Ok(Reply::Bulk(text(&Value::Object(object))))
}

fn path_text(path: &Path) -> String {
    let mut out = String::from(if path.dollar { "$" } else { "" });
    for step in &path.steps {
        match step {
            Step::Key(k) => out.push_str(&format!(".{k}")),
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::All => out.push_str(".*"),
        }
    }
    out
}

/// `JSON.DEL key [path]` (and `JSON.FORGET`): how many values it removed.
pub fn del(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let path = match args.get(2) {
        None => Path::root(),
        Some(arg) => match Path::parse(arg) {
            Some(p) => p,
            None => return Ok(path_error(arg)),
        },
    };
    let Some((mut doc, expires_at)) = take!(load(ks, args[1])?) else {
        return Ok(Reply::Integer(0));
    };
    if path.steps.is_empty() {
        ks.remove(args[1])?;
        return Ok(Reply::Integer(1));
    }
    let mut found = locate(&doc, &path.steps);
    // Remove later array elements first, so earlier indexes stay valid.
    found.sort_by(|a, b| b.cmp_steps(a));
    let removed = found.len();
    for location in &found {
        let (last, parent) = location.split_last().unwrap();
        match (at_mut(&mut doc, parent), last) {
            (Some(Value::Object(map)), Step::Key(k)) => {
                map.shift_remove(k);
            }
            (Some(Value::Array(items)), Step::Index(i)) => {
                items.remove(*i as usize);
            }
            _ => unreachable!("located"),
        }
    }
    if removed > 0 {
        if let Some(reply) = store(ks, args[1], &doc, expires_at)? {
            return Ok(reply);
        }
    }
    Ok(Reply::Integer(removed as i64))
}

trait Steps {
    fn cmp_steps(&self, other: &Self) -> std::cmp::Ordering;
}

impl Steps for Vec<Step> {
    /// Locations in document order (indexes numerically).
    fn cmp_steps(&self, other: &Self) -> std::cmp::Ordering {
        for (a, b) in self.iter().zip(other) {
            let order = match (a, b) {
                (Step::Index(x), Step::Index(y)) => x.cmp(y),
                (Step::Key(x), Step::Key(y)) => x.cmp(y),
                _ => std::cmp::Ordering::Equal,
            };
            if order.is_ne() {
                return order;
            }
        }
        self.len().cmp(&other.len())
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Runs `each` on every value `path` (default: the root) matches, for the read commands that
/// answer per match: `$` paths an array of answers, legacy paths the first one's.
fn per_match(
    ks: &mut Keyspace,
    args: &[&[u8]],
    absent: Reply,
    each: impl Fn(&Value) -> Reply,
) -> Result {
    let path = match args.get(2) {
        None => Path::root(),
        Some(arg) => match Path::parse(arg) {
            Some(p) => p,
            None => return Ok(path_error(arg)),
        },
    };
    let Some((doc, _)) = take!(load(ks, args[1])?) else {
        return Ok(absent);
    };
    let found = locate(&doc, &path.steps);
    let mut answers = found.iter().map(|l| each(at(&doc, l).unwrap()));
    Ok(if path.dollar {
        Reply::Array(answers.collect())
    } else {
        match answers.next() {
            Some(answer) => answer,
            None => Reply::error(format!("ERR Path '{}' does not exist", path_text(&path))),
        }
    })
}

pub fn type_(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    per_match(ks, args, Reply::Nil, |v| Reply::Status(type_name(v).into()))
}

pub fn objkeys(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    per_match(ks, args, Reply::Nil, |v| match v {
        Value::Object(map) => Reply::Array(map.keys().map(|k| Reply::bulk(k.as_bytes())).collect()),
        _ => Reply::Nil,
    })
}

/// The write commands that change each match in place: `change` returns the match's answer
/// (None: the match is of the wrong type).
fn modify(
    ks: &mut Keyspace,
    key: &[u8],
    path: &[u8],
    change: impl Fn(&mut Value) -> std::result::Result<Option<Reply>, Reply>,
    wrong: &str,
) -> Result {
    let Some(path) = Path::parse(path) else {
        return Ok(path_error(path));
    };
    let Some((mut doc, expires_at)) = take!(load(ks, key)?) else {
        return Ok(Reply::error(
            "ERR could not perform this operation on a key that doesn't exist",
        ));
    };
    let found = locate(&doc, &path.steps);
    let mut answers = Vec::with_capacity(found.len());
    for location in &found {
        let value = at_mut(&mut doc, location).unwrap();
        answers.push(take!(change(value)));
    }
    if !path.dollar {
        match answers.first() {
            None => {
                return Ok(Reply::error(format!(
                    "ERR Path '{}' does not exist",
                    path_text(&path)
                )))
            }
            Some(None) => {
                return Ok(Reply::error(format!(
                    "ERR wrong type of path value - expected {wrong}"
                )))
            }
            Some(Some(_)) => {}
        }
    }
    if answers.iter().any(Option::is_some) {
        if let Some(reply) = store(ks, key, &doc, expires_at)? {
            return Ok(reply);
        }
    }
    Ok(if path.dollar {
        Reply::Array(
            answers
                .into_iter()
                .map(|a| a.unwrap_or(Reply::Nil))
                .collect(),
        )
    } else {
        answers.into_iter().next().flatten().expect("checked above")
    })
}

/// `JSON.NUMINCRBY key path number`: the new value(s), as JSON text.
pub fn numincrby(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let by: Number = match parse_value(args[3]) {
        Ok(Value::Number(n)) => n,
        _ => return Ok(Reply::error("ERR expected a number")),
    };
    let dollar = args[2].starts_with(b"$");
    let reply = modify(
        ks,
        args[1],
        args[2],
        |v| {
            let Value::Number(n) = v else { return Ok(None) };
            let sum = match (n.as_i64(), by.as_i64()) {
                (Some(a), Some(b)) => a.checked_add(b).map(Number::from),
                _ => Number::from_f64(n.as_f64().unwrap() + by.as_f64().unwrap()),
            };
            let Some(sum) = sum else {
                return Err(Reply::error("ERR result is an overflow or not a number"));
            };
            *n = sum;
            Ok(Some(Reply::Bulk(text(v))))
        },
        "a number",
    )?;
    // RedisJSON answers a `$` path's results as one JSON array text.
    Ok(match reply {
        Reply::Array(items) if dollar => {
            let values: Vec<Value> = items
                .into_iter()
                .map(|i| match i {
                    Reply::Bulk(t) => serde_json::from_slice(&t).unwrap(),
                    _ => Value::Null,
                })
                .collect();
            Reply::Bulk(text(&Value::Array(values)))
        }
        other => other,
    })
}

/// `JSON.STRAPPEND key [path] value`: the new length(s).
pub fn strappend(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (path, value) = match args.len() {
        3 => (&b"."[..], args[2]),
        4 => (args[2], args[3]),
        _ => return Ok(super::wrong_arity("json.strappend")),
    };
    let Ok(Value::String(tail)) = parse_value(value) else {
        return Ok(Reply::error("ERR expected a JSON string"));
    };
    modify(
        ks,
        args[1],
        path,
        |v| {
            let Value::String(s) = v else { return Ok(None) };
            s.push_str(&tail);
            Ok(Some(Reply::Integer(s.len() as i64)))
        },
        "a string",
    )
}

/// `JSON.ARRAPPEND key path value...`: the new length(s).
pub fn arrappend(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut values = Vec::with_capacity(args.len() - 3);
    for arg in &args[3..] {
        values.push(take!(parse_value(arg)));
    }
    modify(
        ks,
        args[1],
        args[2],
        |v| {
            let Value::Array(items) = v else {
                return Ok(None);
            };
            items.extend(values.iter().cloned());
            Ok(Some(Reply::Integer(items.len() as i64)))
        },
        "an array",
    )
}

/// `JSON.MGET key [key ...] path`: one answer per key (nil where absent or not a document).
pub fn mget(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let raw = args[args.len() - 1];
    let Some(path) = Path::parse(raw) else {
        return Ok(path_error(raw));
    };
    let mut answers = Vec::with_capacity(args.len() - 2);
    for key in &args[1..args.len() - 1] {
        let doc = match load(ks, key)? {
            Ok(Some((doc, _))) => doc,
            _ => {
                answers.push(Reply::Nil);
                continue;
            }
        };
        let found = locate(&doc, &path.steps);
        let answer = if path.dollar {
            let all = found.iter().map(|l| at(&doc, l).unwrap().clone()).collect();
            Reply::Bulk(text(&Value::Array(all)))
        } else {
            found
                .first()
                .map_or(Reply::Nil, |l| Reply::Bulk(text(at(&doc, l).unwrap())))
        };
        answers.push(answer);
    }
    Ok(Reply::Array(answers))
}
