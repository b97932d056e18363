//! Expiry: EXPIRE PEXPIRE EXPIREAT PEXPIREAT (NX XX GT LT) TTL PTTL PERSIST EXPIRETIME
//! PEXPIRETIME. Deadlines are absolute Unix milliseconds, decided against the entry's timestamp.

use super::{is, not_integer, parse_i64};
use crate::keyspace::Keyspace;
use crate::record::Record;
use ziggy_core::state_machine::StateError;
use ziggy_resp::Reply;

type Result = std::result::Result<Reply, StateError>;

/// Which existing TTLs an EXPIRE may replace.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Condition {
    Always,
    /// NX: only a key without a TTL.
    NoTtl,
    /// XX: only a key with one.
    HasTtl,
    /// GT: only a later deadline (no TTL counts as forever).
    Later,
    /// LT: only an earlier one.
    Earlier,
}

fn condition(options: &[&[u8]]) -> std::result::Result<Condition, Reply> {
    let mut found = Condition::Always;
    for option in options {
        let next = match option {
            o if is(o, "NX") => Condition::NoTtl,
            o if is(o, "XX") => Condition::HasTtl,
            o if is(o, "GT") => Condition::Later,
            o if is(o, "LT") => Condition::Earlier,
            _ => {
                return Err(Reply::error(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(option)
                )))
            }
        };
        let nx = |c| c == Condition::NoTtl;
        if found != Condition::Always && found != next {
            if nx(found) || nx(next) {
                return Err(Reply::error(
                    "ERR NX and XX, GT or LT options at the same time are not compatible",
                ));
            }
            if matches!(
                (found, next),
                (Condition::Later, Condition::Earlier) | (Condition::Earlier, Condition::Later)
            ) {
                return Err(Reply::error(
                    "ERR GT and LT options at the same time are not compatible",
                ));
            }
            // XX with GT or LT: both must hold.
            if found == Condition::HasTtl {
                found = next;
            }
            continue;
        }
        found = next;
    }
    Ok(found)
}

fn set_deadline(
    ks: &mut Keyspace,
    args: &[&[u8]],
    unit: u64,
    absolute: bool,
    name: &str,
) -> Result {
    let condition = match condition(&args[3..]) {
        Ok(c) => c,
        Err(reply) => return Ok(reply),
    };
    let Some(value) = parse_i64(args[2]) else {
        return Ok(not_integer());
    };
    let invalid = || Reply::error(format!("ERR invalid expire time in '{name}' command"));
    let Some(ms) = value.checked_mul(unit as i64) else {
        return Ok(invalid());
    };
    let Some(deadline) = (if absolute {
        Some(ms)
    } else {
        (ks.now as i64).checked_add(ms)
    }) else {
        return Ok(invalid());
    };
    let Some(record) = ks.get(args[1])? else {
        return Ok(Reply::Integer(0));
    };
    let has_ttl = record.expires_at != 0;
    let current = if has_ttl {
        record.expires_at as i64
    } else {
        i64::MAX
    };
    let allowed = match condition {
        Condition::Always => true,
        Condition::NoTtl => !has_ttl,
        Condition::HasTtl => has_ttl,
        Condition::Later => has_ttl && deadline > current,
        Condition::Earlier => deadline < current,
    };
    if !allowed {
        return Ok(Reply::Integer(0));
    }
    if deadline <= ks.now as i64 {
        ks.remove(args[1])?; // a deadline in the past deletes the key, as in Redis
    } else {
        ks.put(
            args[1],
            &Record {
                expires_at: deadline as u64,
                ..record
            },
        )?;
    }
    Ok(Reply::Integer(1))
}

pub fn expire(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    set_deadline(ks, args, 1000, false, "expire")
}

pub fn pexpire(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    set_deadline(ks, args, 1, false, "pexpire")
}

pub fn expireat(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    set_deadline(ks, args, 1000, true, "expireat")
}

pub fn pexpireat(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    set_deadline(ks, args, 1, true, "pexpireat")
}

/// -2 for no key, -1 for no TTL, else `f(deadline)`.
fn inspect(ks: &mut Keyspace, key: &[u8], f: impl Fn(u64, u64) -> i64) -> Result {
    Ok(Reply::Integer(match ks.get(key)? {
        None => -2,
        Some(r) if r.expires_at == 0 => -1,
        Some(r) => f(r.expires_at, ks.now),
    }))
}

pub fn ttl(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    inspect(ks, args[1], |at, now| ((at - now + 500) / 1000) as i64)
}

pub fn pttl(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    inspect(ks, args[1], |at, now| (at - now) as i64)
}

pub fn expiretime(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    inspect(ks, args[1], |at, _| (at / 1000) as i64)
}

pub fn pexpiretime(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    inspect(ks, args[1], |at, _| at as i64)
}

pub fn persist(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    match ks.get(args[1])? {
        Some(r) if r.expires_at != 0 => {
            ks.put(args[1], &Record { expires_at: 0, ..r })?;
            Ok(Reply::Integer(1))
        }
        _ => Ok(Reply::Integer(0)),
    }
}
