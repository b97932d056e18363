//! Counters: INCR DECR INCRBY DECRBY INCRBYFLOAT. A counter is a string holding a decimal
//! number, so `GET` returns what `INCR` made; its TTL is kept.

use super::{not_integer, parse_f64, parse_i64, wrong_type};
use crate::keyspace::Keyspace;
use crate::record::{Kind, Record};
use ziggy_core::state_machine::StateError;
use ziggy_resp::reply::format_double;
use ziggy_resp::Reply;

type Result = std::result::Result<Reply, StateError>;

/// The counter at `key` (its text and expiry), or the error reply for a non-string.
fn current(ks: &mut Keyspace, key: &[u8]) -> std::result::Result<Result, (Vec<u8>, u64)> {
    match ks.get(key) {
        Err(e) => Ok(Err(e)),
        Ok(Some(r)) if r.kind != Kind::String => Ok(Ok(wrong_type())),
        Ok(Some(r)) => Err((r.payload, r.expires_at)),
        Ok(None) => Err((b"0".to_vec(), 0)),
    }
}

fn add(ks: &mut Keyspace, key: &[u8], delta: i64) -> Result {
    let (text, expires_at) = match current(ks, key) {
        Ok(done) => return done,
        Err(found) => found,
    };
    let Some(value) = parse_i64(&text) else {
        return Ok(not_integer());
    };
    let Some(sum) = value.checked_add(delta) else {
        return Ok(Reply::error("ERR increment or decrement would overflow"));
    };
    ks.put(
        key,
        &Record::string(sum.to_string().into_bytes(), expires_at),
    )?;
    Ok(Reply::Integer(sum))
}

pub fn incr(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    add(ks, args[1], 1)
}

pub fn decr(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    add(ks, args[1], -1)
}

pub fn incrby(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    match parse_i64(args[2]) {
        Some(delta) => add(ks, args[1], delta),
        None => Ok(not_integer()),
    }
}

pub fn decrby(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    match parse_i64(args[2]) {
        Some(i64::MIN) => Ok(Reply::error("ERR decrement would overflow")),
        Some(delta) => add(ks, args[1], -delta),
        None => Ok(not_integer()),
    }
}

pub fn incrbyfloat(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let not_float = || Reply::error("ERR value is not a valid float");
    let Some(delta) = parse_f64(args[2]) else {
        return Ok(not_float());
    };
    let (text, expires_at) = match current(ks, args[1]) {
        Ok(done) => return done,
        Err(found) => found,
    };
    let Some(value) = parse_f64(&text) else {
        return Ok(not_float());
    };
    let sum = value + delta;
    if !sum.is_finite() {
        return Ok(Reply::error("ERR increment would produce NaN or Infinity"));
    }
    let text = format_double(sum).into_bytes();
    ks.put(args[1], &Record::string(text.clone(), expires_at))?;
    Ok(Reply::Bulk(text))
}
