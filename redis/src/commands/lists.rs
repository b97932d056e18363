//! Lists: LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LLEN LINDEX LRANGE LSET LREM LTRIM LINSERT LPOS
//! LMOVE. Elements sit at consecutive positions `head..head + len`, each its own LSM key, so a
//! push or a pop at either end is one write and an index is one read; `LREM` and `LINSERT`
//! rewrite the positions after the change, as Redis's are O(n) too.

use super::collection::{find, find_or_make, save, wrong, Found, Open};
use super::{is, not_integer, parse_i64, syntax_error};
use crate::keyspace::Keyspace;
use crate::record::Kind;
use ziggy_core::state_machine::StateError;
use ziggy_resp::Reply;

type Result = std::result::Result<Reply, StateError>;

/// A position as the bytes of its LSM key: order-preserving for negative positions too.
fn at(position: i64) -> [u8; 8] {
    ((position as u64) ^ (1 << 63)).to_be_bytes()
}

fn live(ks: &mut Keyspace, key: &[u8], absent: Reply) -> std::result::Result<Open, Result> {
    super::collection::live(ks, key, Kind::List, absent)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Left,
    Right,
}

impl End {
    fn parse(arg: &[u8]) -> Option<End> {
        if is(arg, "LEFT") {
            Some(End::Left)
        } else if is(arg, "RIGHT") {
            Some(End::Right)
        } else {
            None
        }
    }
}

fn push_one(
    ks: &mut Keyspace,
    open: &mut Open,
    end: End,
    element: &[u8],
) -> std::result::Result<(), StateError> {
    let c = &mut open.members;
    let position = match end {
        End::Left => {
            c.head -= 1;
            c.head
        }
        End::Right => c.head + c.len as i64,
    };
    c.len += 1;
    ks.put_member(c.id, &at(position), element)
}

fn pop_one(
    ks: &mut Keyspace,
    open: &mut Open,
    end: End,
) -> std::result::Result<Option<Vec<u8>>, StateError> {
    let c = &mut open.members;
    if c.len == 0 {
        return Ok(None);
    }
    let position = match end {
        End::Left => c.head,
        End::Right => c.head + c.len as i64 - 1,
    };
    let element = ks
        .member(c.id, &at(position))?
        .expect("a list's element at each position");
    ks.remove_member(c.id, &at(position))?;
    c.len -= 1;
    if end == End::Left {
        c.head += 1;
    }
    Ok(Some(element))
}

fn push(ks: &mut Keyspace, args: &[&[u8]], end: End, only_existing: bool) -> Result {
    let mut open = if only_existing {
        match live(ks, args[1], Reply::Integer(0)) {
            Ok(open) => open,
            Err(done) => return done,
        }
    } else {
        match find_or_make(ks, args[1], Kind::List)? {
            Some(open) => open,
            None => return Ok(wrong()),
        }
    };
    for element in &args[2..] {
        push_one(ks, &mut open, end, element)?;
    }
    save(ks, args[1], &open)?;
    Ok(Reply::Integer(open.members.len as i64))
}

pub fn lpush(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    push(ks, args, End::Left, false)
}

pub fn rpush(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    push(ks, args, End::Right, false)
}

pub fn lpushx(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    push(ks, args, End::Left, true)
}

pub fn rpushx(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    push(ks, args, End::Right, true)
}

/// `LPOP`/`RPOP key [count]`.
fn pop(ks: &mut Keyspace, args: &[&[u8]], end: End) -> Result {
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
        Some(_) => Reply::NilArray,
    };
    let mut open = match live(ks, args[1], absent) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let mut popped = Vec::new();
    while popped.len() < count.unwrap_or(1) {
        match pop_one(ks, &mut open, end)? {
            Some(element) => popped.push(element),
            None => break,
        }
    }
    if !popped.is_empty() {
        save(ks, args[1], &open)?;
    }
    Ok(match count {
        None => popped.pop().map_or(Reply::Nil, Reply::Bulk),
        Some(_) => Reply::Array(popped.into_iter().map(Reply::Bulk).collect()),
    })
}

pub fn lpop(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    pop(ks, args, End::Left)
}

pub fn rpop(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    pop(ks, args, End::Right)
}

pub fn llen(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    Ok(match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => Reply::Integer(open.members.len as i64),
        Err(done) => return done,
    })
}

/// An index (negative: from the end) as an offset from the head, if within the list.
fn offset(index: i64, len: u64) -> Option<i64> {
    let i = if index < 0 { index + len as i64 } else { index };
    (0..len as i64).contains(&i).then_some(i)
}

pub fn lindex(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let Some(index) = parse_i64(args[2]) else {
        return Ok(not_integer());
    };
    let open = match live(ks, args[1], Reply::Nil) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let c = open.members;
    let Some(i) = offset(index, c.len) else {
        return Ok(Reply::Nil);
    };
    Ok(ks
        .member(c.id, &at(c.head + i))?
        .map_or(Reply::Nil, Reply::Bulk))
}

/// Redis's `start stop` range (negatives from the end, clamped) as offsets `[from, to)`.
fn span(start: i64, stop: i64, len: u64) -> (i64, i64) {
    let len = len as i64;
    let norm = |i: i64| if i < 0 { (i + len).max(0) } else { i };
    let (from, to) = (norm(start), norm(stop).min(len - 1) + 1);
    if from >= to {
        (0, 0)
    } else {
        (from, to)
    }
}

/// The elements at offsets `[from, to)`.
fn elements(
    ks: &mut Keyspace,
    open: &Open,
    from: i64,
    to: i64,
) -> std::result::Result<Vec<Vec<u8>>, StateError> {
    let c = open.members;
    if from >= to {
        return Ok(Vec::new());
    }
    let found = ks.members(c.id, &at(c.head + from), (to - from) as usize)?;
    Ok(found.into_iter().map(|(_, element)| element).collect())
}

pub fn lrange(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (Some(start), Some(stop)) = (parse_i64(args[2]), parse_i64(args[3])) else {
        return Ok(not_integer());
    };
    let open = match live(ks, args[1], Reply::Array(Vec::new())) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let (from, to) = span(start, stop, open.members.len);
    let found = elements(ks, &open, from, to)?;
    Ok(Reply::Array(found.into_iter().map(Reply::Bulk).collect()))
}

pub fn lset(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let Some(index) = parse_i64(args[2]) else {
        return Ok(not_integer());
    };
    let open = match live(ks, args[1], Reply::error("ERR no such key")) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let Some(i) = offset(index, open.members.len) else {
        return Ok(Reply::error("ERR index out of range"));
    };
    ks.put_member(open.members.id, &at(open.members.head + i), args[3])?;
    save(ks, args[1], &open)?;
    Ok(Reply::ok())
}

/// Replaces the whole list with `elements` (at positions from 0): what `LREM` and `LINSERT`
/// do after they change the middle.
fn rewrite(
    ks: &mut Keyspace,
    key: &[u8],
    open: &mut Open,
    elements: &[Vec<u8>],
) -> std::result::Result<(), StateError> {
    let c = &mut open.members;
    for i in 0..c.len as i64 {
        ks.remove_member(c.id, &at(c.head + i))?;
    }
    for (i, element) in elements.iter().enumerate() {
        ks.put_member(c.id, &at(i as i64), element)?;
    }
    c.head = 0;
    c.len = elements.len() as u64;
    save(ks, key, open)
}

pub fn lrem(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let Some(count) = parse_i64(args[2]) else {
        return Ok(not_integer());
    };
    let mut open = match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let mut all = elements(ks, &open, 0, open.members.len as i64)?;
    let limit = if count == 0 {
        usize::MAX
    } else {
        count.unsigned_abs() as usize
    };
    let mut removed = 0;
    let mut keep = |e: &Vec<u8>| {
        let drop = removed < limit && e.as_slice() == args[3];
        removed += drop as usize;
        !drop
    };
    if count < 0 {
        all.reverse();
        all.retain(&mut keep);
        all.reverse();
    } else {
        all.retain(&mut keep);
    }
    if removed > 0 {
        rewrite(ks, args[1], &mut open, &all)?;
    }
    Ok(Reply::Integer(removed as i64))
}

pub fn ltrim(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (Some(start), Some(stop)) = (parse_i64(args[2]), parse_i64(args[3])) else {
        return Ok(not_integer());
    };
    let mut open = match live(ks, args[1], Reply::ok()) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let c = open.members;
    let (from, to) = span(start, stop, c.len);
    for i in (0..from).chain(to.max(from)..c.len as i64) {
        ks.remove_member(c.id, &at(c.head + i))?;
    }
    open.members.head = c.head + from;
    open.members.len = (to - from) as u64;
    save(ks, args[1], &open)?;
    Ok(Reply::ok())
}

pub fn linsert(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let after = if is(args[2], "AFTER") {
        true
    } else if is(args[2], "BEFORE") {
        false
    } else {
        return Ok(syntax_error());
    };
    let mut open = match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let mut all = elements(ks, &open, 0, open.members.len as i64)?;
    let Some(pivot) = all.iter().position(|e| e.as_slice() == args[3]) else {
        return Ok(Reply::Integer(-1));
    };
    all.insert(pivot + after as usize, args[4].to_vec());
    rewrite(ks, args[1], &mut open, &all)?;
    Ok(Reply::Integer(all.len() as i64))
}

/// `LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]`.
pub fn lpos(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0usize);
    let mut i = 3;
    while i < args.len() {
        let Some(value) = args.get(i + 1).map(|v| parse_i64(v)) else {
            return Ok(syntax_error());
        };
        let Some(value) = value else {
            return Ok(not_integer());
        };
        match args[i] {
            a if is(a, "RANK") => {
                if value == 0 || value == i64::MIN {
                    return Ok(Reply::error(
                        "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
                    ));
                }
                rank = value;
            }
            a if is(a, "COUNT") && value >= 0 => count = Some(value as usize),
            a if is(a, "MAXLEN") && value >= 0 => maxlen = value as usize,
            a if is(a, "COUNT") || is(a, "MAXLEN") => {
                return Ok(Reply::error(format!(
                    "ERR {} can't be negative",
                    String::from_utf8_lossy(a).to_uppercase()
                )))
            }
            _ => return Ok(syntax_error()),
        }
        i += 2;
    }
    let absent = if count.is_some() {
        Reply::Array(Vec::new())
    } else {
        Reply::Nil
    };
    let open = match live(ks, args[1], absent) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let all = elements(ks, &open, 0, open.members.len as i64)?;
    let len = all.len();
    let order: Box<dyn Iterator<Item = usize>> = if rank > 0 {
        Box::new(0..len)
    } else {
        Box::new((0..len).rev())
    };
    let scanned = if maxlen == 0 { len } else { maxlen };
    let want = match count {
        Some(0) => usize::MAX,
        Some(n) => n,
        None => 1,
    };
    let mut matches = order
        .take(scanned)
        .filter(|&i| all[i].as_slice() == args[2])
        .skip(rank.unsigned_abs() as usize - 1)
        .take(want)
        .map(|i| Reply::Integer(i as i64));
    Ok(match count {
        None => matches.next().unwrap_or(Reply::Nil),
        Some(_) => Reply::Array(matches.collect()),
    })
}

/// `LMOVE source destination LEFT|RIGHT LEFT|RIGHT`.
pub fn lmove(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (Some(from), Some(to)) = (End::parse(args[3]), End::parse(args[4])) else {
        return Ok(syntax_error());
    };
    let mut source = match live(ks, args[1], Reply::Nil) {
        Ok(open) => open,
        Err(done) => return done,
    };
    if matches!(find(ks, args[2], Kind::List)?, Found::Wrong) {
        return Ok(wrong());
    }
    let element = pop_one(ks, &mut source, from)?.expect("a live list has an element");
    save(ks, args[1], &source)?;
    let Some(mut destination) = find_or_make(ks, args[2], Kind::List)? else {
        unreachable!("checked above");
    };
    push_one(ks, &mut destination, to, &element)?;
    save(ks, args[2], &destination)?;
    Ok(Reply::Bulk(element))
}
