//! Hashes: HSET HMSET HSETNX HGET HMGET HDEL HGETALL HKEYS HVALS HLEN HEXISTS HINCRBY
//! HINCRBYFLOAT HSTRLEN HRANDFIELD HSCAN. Each field is its own LSM key (`keyspace.rs`), so
//! touching one field of a large hash never rewrites the others.

use super::collection::{all_members, draw_count, draw_members, save, scan_members, Open};
use super::{is, not_integer, parse_f64, parse_i64, syntax_error, wrong_arity};
use crate::keyspace::{Keyspace, Members};
use crate::record::Kind;
use ziggy_core::state_machine::StateError;
use ziggy_resp::reply::format_double;
use ziggy_resp::Reply;

type Result = std::result::Result<Reply, StateError>;

fn live(ks: &mut Keyspace, key: &[u8], absent: Reply) -> std::result::Result<Open, Result> {
    super::collection::live(ks, key, Kind::Hash, absent)
}

fn writable(ks: &mut Keyspace, key: &[u8]) -> std::result::Result<Open, Result> {
    super::collection::writable(ks, key, Kind::Hash)
}

/// Sets one field; whether it is new.
fn set_field(
    ks: &mut Keyspace,
    open: &mut Open,
    field: &[u8],
    value: &[u8],
) -> std::result::Result<bool, StateError> {
    let id = open.members.id;
    let new = ks.member(id, field)?.is_none();
    ks.put_member(id, field, value)?;
    open.members.len += new as u64;
    Ok(new)
}

/// `HSET key field value [field value ...]`: the count of new fields. `HMSET` answers OK.
fn set_pairs(ks: &mut Keyspace, args: &[&[u8]], name: &str) -> Result {
    if !args.len().is_multiple_of(2) {
        return Ok(wrong_arity(name));
    }
    let mut open = match writable(ks, args[1]) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let mut added = 0;
    for pair in args[2..].chunks(2) {
        added += set_field(ks, &mut open, pair[0], pair[1])? as i64;
    }
    save(ks, args[1], &open)?;
    Ok(if name == "hmset" {
        Reply::ok()
    } else {
        Reply::Integer(added)
    })
}

pub fn hset(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    set_pairs(ks, args, "hset")
}

pub fn hmset(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    set_pairs(ks, args, "hmset")
}

pub fn hsetnx(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut open = match writable(ks, args[1]) {
        Ok(open) => open,
        Err(done) => return done,
    };
    if ks.member(open.members.id, args[2])?.is_some() {
        return Ok(Reply::Integer(0));
    }
    set_field(ks, &mut open, args[2], args[3])?;
    save(ks, args[1], &open)?;
    Ok(Reply::Integer(1))
}

pub fn hget(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let open = match live(ks, args[1], Reply::Nil) {
        Ok(open) => open,
        Err(done) => return done,
    };
    Ok(ks
        .member(open.members.id, args[2])?
        .map_or(Reply::Nil, Reply::Bulk))
}

pub fn hmget(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let nils = Reply::Array(vec![Reply::Nil; args.len() - 2]);
    let open = match live(ks, args[1], nils) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let mut values = Vec::with_capacity(args.len() - 2);
    for field in &args[2..] {
        let value = ks.member(open.members.id, field)?;
        values.push(value.map_or(Reply::Nil, Reply::Bulk));
    }
    Ok(Reply::Array(values))
}

pub fn hdel(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut open = match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let mut removed = 0;
    for field in &args[2..] {
        if ks.member(open.members.id, field)?.is_some() {
            ks.remove_member(open.members.id, field)?;
            open.members.len -= 1;
            removed += 1;
        }
    }
    if removed > 0 {
        save(ks, args[1], &open)?;
    }
    Ok(Reply::Integer(removed))
}

/// Every field with its value, as `HGETALL`, `HKEYS` and `HVALS` want them.
fn all(ks: &mut Keyspace, key: &[u8], shape: fn(Members) -> Reply) -> Result {
    let open = match live(ks, key, shape(Vec::new())) {
        Ok(open) => open,
        Err(done) => return done,
    };
    Ok(shape(all_members(ks, open.members.id)?))
}

pub fn hgetall(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    all(ks, args[1], |pairs| {
        Reply::Map(
            pairs
                .into_iter()
                .map(|(f, v)| (Reply::Bulk(f), Reply::Bulk(v)))
                .collect(),
        )
    })
}

pub fn hkeys(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    all(ks, args[1], |pairs| {
        Reply::Array(pairs.into_iter().map(|(f, _)| Reply::Bulk(f)).collect())
    })
}

pub fn hvals(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    all(ks, args[1], |pairs| {
        Reply::Array(pairs.into_iter().map(|(_, v)| Reply::Bulk(v)).collect())
    })
}

pub fn hlen(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    Ok(match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => Reply::Integer(open.members.len as i64),
        Err(done) => return done,
    })
}

pub fn hexists(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let open = match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let found = ks.member(open.members.id, args[2])?.is_some();
    Ok(Reply::Integer(found as i64))
}

pub fn hstrlen(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let open = match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let len = ks.member(open.members.id, args[2])?.map_or(0, |v| v.len());
    Ok(Reply::Integer(len as i64))
}

pub fn hincrby(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let Some(delta) = parse_i64(args[3]) else {
        return Ok(not_integer());
    };
    let mut open = match writable(ks, args[1]) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let old = ks.member(open.members.id, args[2])?;
    let value = match old.as_deref().map(parse_i64) {
        None => 0,
        Some(Some(value)) => value,
        Some(None) => return Ok(Reply::error("ERR hash value is not an integer")),
    };
    let Some(sum) = value.checked_add(delta) else {
        return Ok(Reply::error("ERR increment or decrement would overflow"));
    };
    set_field(ks, &mut open, args[2], sum.to_string().as_bytes())?;
    save(ks, args[1], &open)?;
    Ok(Reply::Integer(sum))
}

pub fn hincrbyfloat(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let Some(delta) = parse_f64(args[3]) else {
        return Ok(Reply::error("ERR value is not a valid float"));
    };
    let mut open = match writable(ks, args[1]) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let old = ks.member(open.members.id, args[2])?;
    let value = match old.as_deref().map(parse_f64) {
        None => 0.0,
        Some(Some(value)) => value,
        Some(None) => return Ok(Reply::error("ERR hash value is not a float")),
    };
    let sum = value + delta;
    if !sum.is_finite() {
        return Ok(Reply::error("ERR increment would produce NaN or Infinity"));
    }
    let text = format_double(sum).into_bytes();
    set_field(ks, &mut open, args[2], &text)?;
    save(ks, args[1], &open)?;
    Ok(Reply::Bulk(text))
}

/// `HRANDFIELD key [count [WITHVALUES]]`.
pub fn hrandfield(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    if args.len() > 4 || (args.len() == 4 && !is(args[3], "WITHVALUES")) {
        return Ok(syntax_error());
    }
    let counted = match args.get(2).map(|a| draw_count(a)) {
        None => None,
        Some(Ok(count)) => Some(count),
        Some(Err(reply)) => return Ok(reply),
    };
    let absent = match counted {
        None => Reply::Nil,
        Some(_) => Reply::Array(Vec::new()),
    };
    let open = match live(ks, args[1], absent) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let Some((count, distinct)) = counted else {
        let drawn = draw_members(ks, args[1], &open, 1, true)?;
        return Ok(drawn
            .into_iter()
            .next()
            .map_or(Reply::Nil, |(f, _)| Reply::Bulk(f)));
    };
    let values = args.len() == 4;
    let mut items = Vec::new();
    for (field, value) in draw_members(ks, args[1], &open, count, distinct)? {
        items.push(Reply::Bulk(field));
        if values {
            items.push(Reply::Bulk(value));
        }
    }
    Ok(Reply::Array(items))
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count] [NOVALUES]`.
pub fn hscan(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let empty = Reply::Array(vec![Reply::bulk("0"), Reply::Array(Vec::new())]);
    let open = match live(ks, args[1], empty) {
        Ok(open) => open,
        Err(done) => return done,
    };
    Ok(match scan_members(ks, open.members.id, args, true)? {
        Ok(page) => page.reply(true),
        Err(reply) => reply,
    })
}
