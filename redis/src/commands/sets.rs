//! Sets: SADD SREM SMEMBERS SISMEMBER SMISMEMBER SCARD SINTER SUNION SDIFF SINTERSTORE
//! SUNIONSTORE SDIFFSTORE SPOP SRANDMEMBER SMOVE SSCAN. Each member is its own LSM key with an
//! empty value (`keyspace.rs`).

use super::collection::{
    all_members, draw_count, draw_members, find, find_or_make, save, scan_members, wrong, Found,
    Open,
};
use super::{parse_i64, syntax_error};
use crate::keyspace::Keyspace;
use crate::record::Kind;
use std::collections::BTreeSet;
use ziggy_core::state_machine::StateError;
use ziggy_resp::Reply;

type Result = std::result::Result<Reply, StateError>;

fn live(ks: &mut Keyspace, key: &[u8], absent: Reply) -> std::result::Result<Open, Result> {
    super::collection::live(ks, key, Kind::Set, absent)
}

fn writable(ks: &mut Keyspace, key: &[u8]) -> std::result::Result<Open, Result> {
    super::collection::writable(ks, key, Kind::Set)
}

/// Adds `member`; whether it is new.
fn add(ks: &mut Keyspace, open: &mut Open, member: &[u8]) -> std::result::Result<bool, StateError> {
    let id = open.members.id;
    if ks.member(id, member)?.is_some() {
        return Ok(false);
    }
    ks.put_member(id, member, &[])?;
    open.members.len += 1;
    Ok(true)
}

/// Removes `member`; whether it was there.
fn take(
    ks: &mut Keyspace,
    open: &mut Open,
    member: &[u8],
) -> std::result::Result<bool, StateError> {
    let id = open.members.id;
    if ks.member(id, member)?.is_none() {
        return Ok(false);
    }
    ks.remove_member(id, member)?;
    open.members.len -= 1;
    Ok(true)
}

pub fn sadd(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut open = match writable(ks, args[1]) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let mut added = 0;
    for member in &args[2..] {
        added += add(ks, &mut open, member)? as i64;
    }
    save(ks, args[1], &open)?;
    Ok(Reply::Integer(added))
}

pub fn srem(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut open = match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let mut removed = 0;
    for member in &args[2..] {
        removed += take(ks, &mut open, member)? as i64;
    }
    if removed > 0 {
        save(ks, args[1], &open)?;
    }
    Ok(Reply::Integer(removed))
}

fn as_set(members: impl IntoIterator<Item = Vec<u8>>) -> Reply {
    Reply::Set(members.into_iter().map(Reply::Bulk).collect())
}

pub fn smembers(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let open = match live(ks, args[1], Reply::Set(Vec::new())) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let members = all_members(ks, open.members.id)?;
    Ok(as_set(members.into_iter().map(|(m, _)| m)))
}

pub fn sismember(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let open = match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let found = ks.member(open.members.id, args[2])?.is_some();
    Ok(Reply::Integer(found as i64))
}

pub fn smismember(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let zeros = Reply::Array(vec![Reply::Integer(0); args.len() - 2]);
    let open = match live(ks, args[1], zeros) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let mut found = Vec::with_capacity(args.len() - 2);
    for member in &args[2..] {
        let here = ks.member(open.members.id, member)?.is_some();
        found.push(Reply::Integer(here as i64));
    }
    Ok(Reply::Array(found))
}

pub fn scard(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    Ok(match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => Reply::Integer(open.members.len as i64),
        Err(done) => return done,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Algebra {
    Inter,
    Union,
    Diff,
}

/// The members of every set at `keys` combined, or the WRONGTYPE reply. An absent key is an
/// empty set.
fn combine(
    ks: &mut Keyspace,
    keys: &[&[u8]],
    op: Algebra,
) -> std::result::Result<BTreeSet<Vec<u8>>, Result> {
    let mut result: Option<BTreeSet<Vec<u8>>> = None;
    for key in keys {
        let members: BTreeSet<Vec<u8>> = match find(ks, key, Kind::Set) {
            Err(e) => return Err(Err(e)),
            Ok(Found::Wrong) => return Err(Ok(wrong())),
            Ok(Found::Absent) => BTreeSet::new(),
            Ok(Found::Live(open)) => match all_members(ks, open.members.id) {
                Err(e) => return Err(Err(e)),
                Ok(all) => all.into_iter().map(|(m, _)| m).collect(),
            },
        };
        result = Some(match (result, op) {
            (None, _) => members,
            (Some(acc), Algebra::Inter) => acc.intersection(&members).cloned().collect(),
            (Some(mut acc), Algebra::Union) => {
                acc.extend(members);
                acc
            }
            (Some(acc), Algebra::Diff) => acc.difference(&members).cloned().collect(),
        });
    }
    Ok(result.unwrap_or_default())
}

fn algebra(ks: &mut Keyspace, args: &[&[u8]], op: Algebra) -> Result {
    match combine(ks, &args[1..], op) {
        Ok(members) => Ok(as_set(members)),
        Err(done) => done,
    }
}

/// Stores the combination of the sets at `args[2..]` at `args[1]`, replacing whatever it held
/// (an empty result removes it): the result's size.
fn algebra_store(ks: &mut Keyspace, args: &[&[u8]], op: Algebra) -> Result {
    let members = match combine(ks, &args[2..], op) {
        Ok(members) => members,
        Err(done) => return done,
    };
    ks.remove(args[1])?;
    let Some(mut open) = find_or_make(ks, args[1], Kind::Set)? else {
        unreachable!("the key was just removed");
    };
    for member in &members {
        ks.put_member(open.members.id, member, &[])?;
    }
    open.members.len = members.len() as u64;
    save(ks, args[1], &open)?;
    Ok(Reply::Integer(members.len() as i64))
}

pub fn sinter(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    algebra(ks, args, Algebra::Inter)
}

pub fn sunion(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    algebra(ks, args, Algebra::Union)
}

pub fn sdiff(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    algebra(ks, args, Algebra::Diff)
}

pub fn sinterstore(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    algebra_store(ks, args, Algebra::Inter)
}

pub fn sunionstore(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    algebra_store(ks, args, Algebra::Union)
}

pub fn sdiffstore(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    algebra_store(ks, args, Algebra::Diff)
}

/// `SPOP key [count]`: removes and returns members drawn at random (the entry decides which).
pub fn spop(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    if args.len() > 3 {
        return Ok(syntax_error());
    }
    let count = match args.get(2).map(|a| parse_i64(a)) {
        None => None,
        Some(Some(n)) if n >= 0 => Some(n as usize),
        Some(_) => return Ok(Reply::error("ERR value is out of range, must be positive")),
    };
    let absent = match count {
        None => Reply::Nil,
        Some(_) => Reply::Set(Vec::new()),
    };
    let mut open = match live(ks, args[1], absent) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let drawn = draw_members(ks, args[1], &open, count.unwrap_or(1), true)?;
    for (member, _) in &drawn {
        take(ks, &mut open, member)?;
    }
    if !drawn.is_empty() {
        save(ks, args[1], &open)?;
    }
    let mut members = drawn.into_iter().map(|(m, _)| m);
    Ok(match count {
        None => members.next().map_or(Reply::Nil, Reply::Bulk),
        Some(_) => as_set(members),
    })
}

/// `SRANDMEMBER key [count]`.
pub fn srandmember(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    if args.len() > 3 {
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
    let (count, distinct) = counted.unwrap_or((1, true));
    let drawn = draw_members(ks, args[1], &open, count, distinct)?;
    let mut members = drawn.into_iter().map(|(m, _)| Reply::Bulk(m));
    Ok(match counted {
        None => members.next().unwrap_or(Reply::Nil),
        Some(_) => Reply::Array(members.collect()),
    })
}

/// `SMOVE source destination member`.
pub fn smove(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut source = match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => open,
        Err(Ok(Reply::Integer(0))) => {
            // An absent source moves nothing, but a destination of another type is still wrong.
            return Ok(match find(ks, args[2], Kind::Set)? {
                Found::Wrong => wrong(),
                _ => Reply::Integer(0),
            });
        }
        Err(done) => return done,
    };
    if matches!(find(ks, args[2], Kind::Set)?, Found::Wrong) {
        return Ok(wrong());
    }
    if ks.member(source.members.id, args[3])?.is_none() {
        return Ok(Reply::Integer(0));
    }
    if args[1] == args[2] {
        return Ok(Reply::Integer(1));
    }
    take(ks, &mut source, args[3])?;
    save(ks, args[1], &source)?;
    let Some(mut destination) = find_or_make(ks, args[2], Kind::Set)? else {
        unreachable!("checked above");
    };
    add(ks, &mut destination, args[3])?;
    save(ks, args[2], &destination)?;
    Ok(Reply::Integer(1))
}

/// `SSCAN key cursor [MATCH pattern] [COUNT count]`.
pub fn sscan(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let empty = Reply::Array(vec![Reply::bulk("0"), Reply::Array(Vec::new())]);
    let open = match live(ks, args[1], empty) {
        Ok(open) => open,
        Err(done) => return done,
    };
    Ok(match scan_members(ks, open.members.id, args, false)? {
        Ok(page) => page.reply(false),
        Err(reply) => reply,
    })
}
