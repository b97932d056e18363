//! Strings: GET SET (NX XX GET EX PX EXAT PXAT KEEPTTL) SETNX SETEX PSETEX MGET MSET MSETNX
//! APPEND STRLEN GETRANGE SETRANGE GETDEL GETEX.

use super::{is, not_integer, parse_i64, syntax_error, wrong_arity, wrong_type};
use crate::keyspace::Keyspace;
use crate::record::{Kind, Record};
use ziggy_core::state_machine::StateError;
use ziggy_resp::Reply;

type Result = std::result::Result<Reply, StateError>;

fn too_large() -> Reply {
    Reply::error("ERR string exceeds maximum allowed size")
}

/// Stores `payload` as a string, unless it is longer than a key may hold.
fn store(ks: &mut Keyspace, key: &[u8], payload: Vec<u8>, expires_at: u64) -> Result {
    if payload.len() > ks.value_max {
        return Ok(too_large());
    }
    ks.put(key, &Record::string(payload, expires_at))?;
    Ok(Reply::ok())
}

pub fn get(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    Ok(match ks.get(args[1])? {
        None => Reply::Nil,
        Some(r) if r.kind != Kind::String => wrong_type(),
        Some(r) => Reply::Bulk(r.payload),
    })
}

/// When a write makes a key expire: none (also clearing an old TTL), an absolute deadline, or
/// the key's current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Clear,
    At(u64),
    Keep,
}

/// A relative (`EX`/`PX`) or absolute (`EXAT`/`PXAT`) time argument as a deadline in Unix
/// milliseconds, or Redis's error for `command`.
pub fn deadline(
    ks: &Keyspace,
    arg: &[u8],
    unit_ms: u64,
    absolute: bool,
    command: &str,
) -> std::result::Result<u64, Reply> {
    let value = parse_i64(arg).ok_or_else(not_integer)?;
    let invalid = || Reply::error(format!("ERR invalid expire time in '{command}' command"));
    if value <= 0 {
        return Err(invalid());
    }
    let ms = (value as u64).checked_mul(unit_ms).ok_or_else(invalid)?;
    let at = if absolute {
        ms
    } else {
        ks.now.checked_add(ms).ok_or_else(invalid)?
    };
    if at > i64::MAX as u64 {
        return Err(invalid());
    }
    Ok(at)
}

/// Takes the expiry option at `args[*at]` (EX PX EXAT PXAT, with its value) into `expiry`.
/// None if the argument is not one of them; an error reply for a bad value or a second expiry.
fn take_expiry(
    ks: &Keyspace,
    args: &[&[u8]],
    at: &mut usize,
    command: &str,
    expiry: &mut Option<Expiry>,
) -> Option<std::result::Result<(), Reply>> {
    let (unit, absolute) = match args[*at] {
        a if is(a, "EX") => (1000, false),
        a if is(a, "PX") => (1, false),
        a if is(a, "EXAT") => (1000, true),
        a if is(a, "PXAT") => (1, true),
        _ => return None,
    };
    let Some(value) = args.get(*at + 1) else {
        return Some(Err(syntax_error()));
    };
    *at += 1;
    if expiry.is_some() {
        return Some(Err(syntax_error()));
    }
    Some(deadline(ks, value, unit, absolute, command).map(|when| *expiry = Some(Expiry::At(when))))
}

pub fn set(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (mut nx, mut xx, mut get, mut expiry) = (false, false, false, None);
    let mut at = 3;
    while at < args.len() {
        let arg = args[at];
        if is(arg, "NX") && !xx {
            nx = true;
        } else if is(arg, "XX") && !nx {
            xx = true;
        } else if is(arg, "GET") {
            get = true;
        } else if is(arg, "KEEPTTL") && expiry.is_none() {
            expiry = Some(Expiry::Keep);
        } else if let Some(taken) = take_expiry(ks, args, &mut at, "set", &mut expiry) {
            if let Err(reply) = taken {
                return Ok(reply);
            }
        } else {
            return Ok(syntax_error());
        }
        at += 1;
    }
    let old = ks.get(args[1])?;
    if get && old.as_ref().is_some_and(|r| r.kind != Kind::String) {
        return Ok(wrong_type());
    }
    let old_reply = || match &old {
        Some(r) => Reply::Bulk(r.payload.clone()),
        None => Reply::Nil,
    };
    if (nx && old.is_some()) || (xx && old.is_none()) {
        return Ok(if get { old_reply() } else { Reply::Nil });
    }
    let expires_at = match expiry.unwrap_or(Expiry::Clear) {
        Expiry::Clear => 0,
        Expiry::At(when) => when,
        Expiry::Keep => old.as_ref().map_or(0, |r| r.expires_at),
    };
    let stored = store(ks, args[1], args[2].to_vec(), expires_at)?;
    if stored.is_error() {
        return Ok(stored);
    }
    Ok(if get { old_reply() } else { stored })
}

pub fn setnx(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    if ks.get(args[1])?.is_some() {
        return Ok(Reply::Integer(0));
    }
    let stored = store(ks, args[1], args[2].to_vec(), 0)?;
    Ok(if stored.is_error() {
        stored
    } else {
        Reply::Integer(1)
    })
}

fn set_with_ttl(ks: &mut Keyspace, args: &[&[u8]], unit: u64, name: &str) -> Result {
    match deadline(ks, args[2], unit, false, name) {
        Ok(when) => store(ks, args[1], args[3].to_vec(), when),
        Err(reply) => Ok(reply),
    }
}

pub fn setex(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    set_with_ttl(ks, args, 1000, "setex")
}

pub fn psetex(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    set_with_ttl(ks, args, 1, "psetex")
}

pub fn mget(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut values = Vec::with_capacity(args.len() - 1);
    for key in &args[1..] {
        values.push(match ks.get(key)? {
            Some(r) if r.kind == Kind::String => Reply::Bulk(r.payload),
            _ => Reply::Nil,
        });
    }
    Ok(Reply::Array(values))
}

/// The key-value pairs of MSET and MSETNX (an odd count is an arity error).
fn pairs_or_arity<'a>(
    args: &'a [&'a [u8]],
    name: &str,
) -> std::result::Result<&'a [&'a [u8]], Reply> {
    if args.len().is_multiple_of(2) {
        return Err(wrong_arity(name));
    }
    Ok(&args[1..])
}

pub fn mset(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let pairs = match pairs_or_arity(args, "mset") {
        Ok(pairs) => pairs,
        Err(reply) => return Ok(reply),
    };
    if pairs.chunks(2).any(|p| p[1].len() > ks.value_max) {
        return Ok(too_large());
    }
    for pair in pairs.chunks(2) {
        store(ks, pair[0], pair[1].to_vec(), 0)?;
    }
    Ok(Reply::ok())
}

pub fn msetnx(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let pairs = match pairs_or_arity(args, "msetnx") {
        Ok(pairs) => pairs,
        Err(reply) => return Ok(reply),
    };
    if pairs.chunks(2).any(|p| p[1].len() > ks.value_max) {
        return Ok(too_large());
    }
    for pair in pairs.chunks(2) {
        if ks.get(pair[0])?.is_some() {
            return Ok(Reply::Integer(0));
        }
    }
    for pair in pairs.chunks(2) {
        store(ks, pair[0], pair[1].to_vec(), 0)?;
    }
    Ok(Reply::Integer(1))
}

pub fn append(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (mut payload, expires_at) = match ks.get(args[1])? {
        Some(r) if r.kind != Kind::String => return Ok(wrong_type()),
        Some(r) => (r.payload, r.expires_at),
        None => (Vec::new(), 0),
    };
    payload.extend_from_slice(args[2]);
    let len = payload.len() as i64;
    let stored = store(ks, args[1], payload, expires_at)?;
    Ok(if stored.is_error() {
        stored
    } else {
        Reply::Integer(len)
    })
}

pub fn strlen(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    Ok(match ks.get(args[1])? {
        Some(r) if r.kind != Kind::String => wrong_type(),
        Some(r) => Reply::Integer(r.payload.len() as i64),
        None => Reply::Integer(0),
    })
}

/// `start..=end` with Redis's negative indices, clamped to a string of `len` bytes.
fn range(start: i64, end: i64, len: usize) -> Option<std::ops::Range<usize>> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 { len + end } else { end.min(len - 1) };
    (start <= end && start < len).then(|| start as usize..end as usize + 1)
}

pub fn getrange(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (Some(start), Some(end)) = (parse_i64(args[2]), parse_i64(args[3])) else {
        return Ok(not_integer());
    };
    Ok(match ks.get(args[1])? {
        Some(r) if r.kind != Kind::String => wrong_type(),
        Some(r) => match range(start, end, r.payload.len()) {
            Some(range) => Reply::Bulk(r.payload[range].to_vec()),
            None => Reply::bulk(""),
        },
        None => Reply::bulk(""),
    })
}

pub fn setrange(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let Some(offset) = parse_i64(args[2]) else {
        return Ok(not_integer());
    };
    if offset < 0 {
        return Ok(Reply::error("ERR offset is out of range"));
    }
    let value = args[3];
    let (mut payload, expires_at) = match ks.get(args[1])? {
        Some(r) if r.kind != Kind::String => return Ok(wrong_type()),
        Some(r) => (r.payload, r.expires_at),
        None if value.is_empty() => return Ok(Reply::Integer(0)),
        None => (Vec::new(), 0),
    };
    if value.is_empty() {
        return Ok(Reply::Integer(payload.len() as i64));
    }
    let offset = offset as u64;
    if offset + value.len() as u64 > ks.value_max as u64 {
        return Ok(too_large());
    }
    let (offset, end) = (offset as usize, offset as usize + value.len());
    if payload.len() < end {
        payload.resize(end, 0);
    }
    payload[offset..end].copy_from_slice(value);
    let len = payload.len() as i64;
    store(ks, args[1], payload, expires_at)?;
    Ok(Reply::Integer(len))
}

pub fn getdel(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    Ok(match ks.get(args[1])? {
        Some(r) if r.kind != Kind::String => wrong_type(),
        Some(r) => {
            ks.remove(args[1])?;
            Reply::Bulk(r.payload)
        }
        None => Reply::Nil,
    })
}

pub fn getex(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut expiry = None;
    let mut at = 2;
    while at < args.len() {
        if is(args[at], "PERSIST") && expiry.is_none() {
            expiry = Some(Expiry::Clear);
        } else if let Some(taken) = take_expiry(ks, args, &mut at, "getex", &mut expiry) {
            if let Err(reply) = taken {
                return Ok(reply);
            }
        } else {
            return Ok(syntax_error());
        }
        at += 1;
    }
    let record = match ks.get(args[1])? {
        Some(r) if r.kind != Kind::String => return Ok(wrong_type()),
        Some(r) => r,
        None => return Ok(Reply::Nil),
    };
    let expires_at = match expiry {
        None => return Ok(Reply::Bulk(record.payload)),
        Some(Expiry::At(when)) => when,
        Some(_) => 0,
    };
    if expires_at != record.expires_at {
        ks.put(args[1], &Record::string(record.payload.clone(), expires_at))?;
    }
    Ok(Reply::Bulk(record.payload))
}
