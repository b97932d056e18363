//! Sorted sets: ZADD (NX XX GT LT CH INCR) ZREM ZSCORE ZMSCORE ZINCRBY ZCARD ZCOUNT ZRANK
//! ZREVRANK ZRANGE (BYSCORE BYLEX REV LIMIT WITHSCORES) ZRANGEBYSCORE ZREVRANGEBYSCORE ZREVRANGE
//! ZRANGEBYLEX ZPOPMIN ZPOPMAX ZREMRANGEBYRANK ZREMRANGEBYSCORE ZSCAN.
//!
//! Each member is two LSM keys (`keyspace.rs`): `[MEMBERS][id][member]` → its score, for
//! `ZSCORE` and membership in one read, and `[SCORES][id][score][member]`, so ranges by score
//! are one seek. Members of equal score order by their bytes, as in Redis. A rank is a count
//! from the lower end: O(rank), not O(log n) (the LSM keeps no counts per range).

use super::collection::{find_or_make, save, scan_members, wrong, Open};
use super::{is, not_integer, parse_f64, parse_i64, syntax_error};
use crate::keyspace::{Keyspace, ScoreStart};
use crate::record::Kind;
use ziggy_core::state_machine::StateError;
use ziggy_resp::Reply;

type Result = std::result::Result<Reply, StateError>;

fn live(ks: &mut Keyspace, key: &[u8], absent: Reply) -> std::result::Result<Open, Result> {
    super::collection::live(ks, key, Kind::ZSet, absent)
}

fn not_float() -> Reply {
    Reply::error("ERR value is not a valid float")
}

fn score(
    ks: &mut Keyspace,
    id: u64,
    member: &[u8],
) -> std::result::Result<Option<f64>, StateError> {
    Ok(ks
        .member(id, member)?
        .map(|bytes| f64::from_le_bytes(bytes.try_into().expect("a score is 8 bytes"))))
}

/// Sets `member`'s score (moving its index entry); whether it is new.
fn set_score(
    ks: &mut Keyspace,
    open: &mut Open,
    member: &[u8],
    old: Option<f64>,
    new: f64,
) -> std::result::Result<(), StateError> {
    let id = open.members.id;
    if let Some(old) = old {
        ks.remove_score(id, old, member)?;
    } else {
        open.members.len += 1;
    }
    let new = if new == 0.0 { 0.0 } else { new }; // -0 is 0
    ks.put_member(id, member, &new.to_le_bytes())?;
    ks.put_score(id, new, member)
}

fn remove(
    ks: &mut Keyspace,
    open: &mut Open,
    member: &[u8],
    old: f64,
) -> std::result::Result<(), StateError> {
    ks.remove_member(open.members.id, member)?;
    ks.remove_score(open.members.id, old, member)?;
    open.members.len -= 1;
    Ok(())
}

/// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`.
pub fn zadd(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut at = 2;
    while at < args.len() {
        match args[at] {
            a if is(a, "NX") => nx = true,
            a if is(a, "XX") => xx = true,
            a if is(a, "GT") => gt = true,
            a if is(a, "LT") => lt = true,
            a if is(a, "CH") => ch = true,
            a if is(a, "INCR") => incr = true,
            _ => break,
        }
        at += 1;
    }
    let pairs = &args[at..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Ok(syntax_error());
    }
    if nx && xx {
        return Ok(Reply::error(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if (gt && lt) || (nx && (gt || lt)) {
        return Ok(Reply::error(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if incr && pairs.len() != 2 {
        return Ok(Reply::error(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    let mut scores = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks(2) {
        match parse_f64(pair[0]) {
            Some(s) => scores.push((s, pair[1])),
            None => return Ok(not_float()),
        }
    }
    let mut open = match find_or_make(ks, args[1], Kind::ZSet)? {
        Some(open) => open,
        None => return Ok(wrong()),
    };
    let (mut added, mut changed, mut result) = (0, 0, None);
    for (given, member) in scores {
        let old = score(ks, open.members.id, member)?;
        if (nx && old.is_some()) || (xx && old.is_none()) {
            continue;
        }
        let new = match (incr, old) {
            (true, Some(old)) => old + given,
            _ => given,
        };
        if new.is_nan() {
            return Ok(Reply::error("ERR resulting score is not a number (NaN)"));
        }
        if let Some(old) = old {
            if (gt && new <= old) || (lt && new >= old) {
                continue;
            }
            if new != old {
                set_score(ks, &mut open, member, Some(old), new)?;
                changed += 1;
            }
        } else {
            set_score(ks, &mut open, member, None, new)?;
            added += 1;
        }
        result = Some(new);
    }
    save(ks, args[1], &open)?;
    Ok(if incr {
        result.map_or(Reply::Nil, Reply::Double)
    } else {
        Reply::Integer(if ch { added + changed } else { added })
    })
}

pub fn zincrby(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let Some(delta) = parse_f64(args[2]) else {
        return Ok(not_float());
    };
    let mut open = match find_or_make(ks, args[1], Kind::ZSet)? {
        Some(open) => open,
        None => return Ok(wrong()),
    };
    let old = score(ks, open.members.id, args[3])?;
    let new = old.unwrap_or(0.0) + delta;
    if new.is_nan() {
        return Ok(Reply::error("ERR resulting score is not a number (NaN)"));
    }
    set_score(ks, &mut open, args[3], old, new)?;
    save(ks, args[1], &open)?;
    Ok(Reply::Double(new))
}

pub fn zrem(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut open = match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let mut removed = 0;
    for member in &args[2..] {
        if let Some(old) = score(ks, open.members.id, member)? {
            remove(ks, &mut open, member, old)?;
            removed += 1;
        }
    }
    if removed > 0 {
        save(ks, args[1], &open)?;
    }
    Ok(Reply::Integer(removed))
}

pub fn zscore(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let open = match live(ks, args[1], Reply::Nil) {
        Ok(open) => open,
        Err(done) => return done,
    };
    Ok(score(ks, open.members.id, args[2])?.map_or(Reply::Nil, Reply::Double))
}

pub fn zmscore(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let nils = Reply::Array(vec![Reply::Nil; args.len() - 2]);
    let open = match live(ks, args[1], nils) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let mut scores = Vec::with_capacity(args.len() - 2);
    for member in &args[2..] {
        scores.push(score(ks, open.members.id, member)?.map_or(Reply::Nil, Reply::Double));
    }
    Ok(Reply::Array(scores))
}

pub fn zcard(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    Ok(match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => Reply::Integer(open.members.len as i64),
        Err(done) => return done,
    })
}

/// One end of a score range: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`.
#[derive(Clone, Copy, Debug)]
struct Bound {
    value: f64,
    exclusive: bool,
}

impl Bound {
    fn parse(arg: &[u8]) -> Option<Bound> {
        let (exclusive, text) = match arg.strip_prefix(b"(") {
            Some(rest) => (true, rest),
            None => (false, arg),
        };
        let value = parse_f64(text)?;
        Some(Bound { value, exclusive })
    }

    fn below(&self, score: f64) -> bool {
        // Whether `score` is past this bound as a maximum.
        if self.exclusive {
            score >= self.value
        } else {
            score > self.value
        }
    }

    fn above(&self, score: f64) -> bool {
        // Whether `score` is short of this bound as a minimum.
        if self.exclusive {
            score <= self.value
        } else {
            score < self.value
        }
    }
}

/// One end of a lexicographic range: `[a`, `(a`, `-`, `+`.
#[derive(Clone, Debug)]
enum Lex {
    Min,
    Max,
    At(Vec<u8>, bool),
}

impl Lex {
    fn parse(arg: &[u8]) -> Option<Lex> {
        match arg.split_first()? {
            (b'-', []) => Some(Lex::Min),
            (b'+', []) => Some(Lex::Max),
            (b'[', rest) => Some(Lex::At(rest.to_vec(), false)),
            (b'(', rest) => Some(Lex::At(rest.to_vec(), true)),
            _ => None,
        }
    }

    /// Whether `member` is at or past this end as a minimum.
    fn admits_from(&self, member: &[u8]) -> bool {
        match self {
            Lex::Min => true,
            Lex::Max => false,
            Lex::At(v, exclusive) => {
                member > v.as_slice() || (!exclusive && member == v.as_slice())
            }
        }
    }

    /// Whether `member` is at or before this end as a maximum.
    fn admits_to(&self, member: &[u8]) -> bool {
        match self {
            Lex::Min => false,
            Lex::Max => true,
            Lex::At(v, exclusive) => {
                member < v.as_slice() || (!exclusive && member == v.as_slice())
            }
        }
    }
}

fn lex_error() -> Reply {
    Reply::error("ERR min or max not valid string range item")
}

fn score_error() -> Reply {
    Reply::error("ERR min or max is not a float")
}

/// Every member in score order (descending with `reverse`) from `start` (a score; None: the
/// end), walked in batches until `keep` returns false: what ranges by rank, score and lex are
/// made of.
fn walk(
    ks: &mut Keyspace,
    id: u64,
    reverse: bool,
    start: Option<f64>,
    wanted: usize,
    mut keep: impl FnMut(f64, &[u8]) -> bool,
) -> std::result::Result<(), StateError> {
    // The first batch is what the caller expects to need (a LIMIT, a rank), so `LIMIT 0 10`
    // reads about ten; later batches double.
    let mut batch_size = wanted.clamp(4, 1024);
    let mut last: Option<(f64, Vec<u8>)> = None;
    loop {
        let at = match (&last, start) {
            (Some((s, m)), _) => ScoreStart::After(*s, m),
            (None, Some(s)) => ScoreStart::Score(s),
            (None, None) => ScoreStart::End,
        };
        let batch = ks.by_score(id, at, batch_size, reverse)?;
        let done = batch.len() < batch_size;
        batch_size = (batch_size * 2).min(1024);
        for (score, member) in &batch {
            if !keep(*score, member) {
                return Ok(());
            }
        }
        match batch.into_iter().last() {
            Some(end) if !done => last = Some(end),
            _ => return Ok(()),
        }
    }
}

/// What a range asks for, parsed from `ZRANGE`'s arguments or one of its older forms.
struct Range {
    by: By,
    reverse: bool,
    limit: Option<(i64, i64)>,
    withscores: bool,
}

enum By {
    Rank(i64, i64),
    Score(Bound, Bound),
    Lex(Lex, Lex),
}

/// The members a range selects, in its order.
fn select(
    ks: &mut Keyspace,
    open: &Open,
    range: &Range,
) -> std::result::Result<Vec<(f64, Vec<u8>)>, StateError> {
    let (id, len) = (open.members.id, open.members.len as i64);
    let mut out = Vec::new();
    match &range.by {
        By::Rank(start, stop) => {
            let norm = |i: i64| if i < 0 { (i + len).max(0) } else { i };
            let (from, to) = (norm(*start), norm(*stop).min(len - 1));
            if from > to {
                return Ok(out);
            }
            let mut rank = 0;
            let wanted = (to + 1) as usize;
            walk(ks, id, range.reverse, None, wanted, |score, member| {
                if rank >= from {
                    out.push((score, member.to_vec()));
                }
                rank += 1;
                rank <= to
            })?;
        }
        By::Score(min, max) => {
            let (offset, count) = range.limit.unwrap_or((0, -1));
            let mut skipped = 0;
            let start = if range.reverse { max.value } else { min.value };
            let wanted = wanted(offset, count);
            walk(
                ks,
                id,
                range.reverse,
                Some(start),
                wanted,
                |score, member| {
                    let (past, short) = if range.reverse {
                        (min.above(score), max.below(score))
                    } else {
                        (max.below(score), min.above(score))
                    };
                    if past {
                        return false;
                    }
                    if short {
                        return true;
                    }
                    if skipped < offset {
                        skipped += 1;
                        return true;
                    }
                    out.push((score, member.to_vec()));
                    count < 0 || (out.len() as i64) < count
                },
            )?;
        }
        By::Lex(min, max) => {
            let (offset, count) = range.limit.unwrap_or((0, -1));
            let mut skipped = 0;
            let wanted = wanted(offset, count);
            walk(ks, id, range.reverse, None, wanted, |score, member| {
                let (past, short) = if range.reverse {
                    (!min.admits_from(member), !max.admits_to(member))
                } else {
                    (!max.admits_to(member), !min.admits_from(member))
                };
                if past {
                    return false;
                }
                if short {
                    return true;
                }
                if skipped < offset {
                    skipped += 1;
                    return true;
                }
                out.push((score, member.to_vec()));
                count < 0 || (out.len() as i64) < count
            })?;
        }
    }
    Ok(out)
}

/// How many members a range with `LIMIT offset count` expects to read (-1: no limit).
fn wanted(offset: i64, count: i64) -> usize {
    match count {
        c if c < 0 => 1024,
        c => (offset.max(0) as usize)
            .saturating_add(c as usize)
            .saturating_add(1),
    }
}

fn range_reply(members: Vec<(f64, Vec<u8>)>, withscores: bool) -> Reply {
    let mut items = Vec::with_capacity(members.len() * (1 + withscores as usize));
    for (score, member) in members {
        if withscores {
            items.push(Reply::Array(vec![
                Reply::Bulk(member),
                Reply::Double(score),
            ]));
        } else {
            items.push(Reply::Bulk(member));
        }
    }
    Reply::Array(items)
}

/// Parses the tail of a range command: `[BYSCORE|BYLEX] [REV] [LIMIT offset count]
/// [WITHSCORES]` after `key min max` (`zrange`), or the older forms' flags.
fn parse_range(
    args: &[&[u8]],
    modern: bool,
    by_score: bool,
    by_lex: bool,
    reverse: bool,
) -> std::result::Result<Range, Reply> {
    let (mut score, mut lex, mut rev, mut limit, mut withscores) =
        (by_score, by_lex, reverse, None, false);
    let mut at = 4;
    while at < args.len() {
        match args[at] {
            a if modern && is(a, "BYSCORE") => score = true,
            a if modern && is(a, "BYLEX") => lex = true,
            a if modern && is(a, "REV") => rev = true,
            a if is(a, "WITHSCORES") => withscores = true,
            a if is(a, "LIMIT") => {
                let (Some(o), Some(c)) = (args.get(at + 1), args.get(at + 2)) else {
                    return Err(syntax_error());
                };
                let (Some(o), Some(c)) = (parse_i64(o), parse_i64(c)) else {
                    return Err(not_integer());
                };
                limit = Some((o, c));
                at += 2;
            }
            _ => return Err(syntax_error()),
        }
        at += 1;
    }
    if score && lex {
        return Err(syntax_error());
    }
    if limit.is_some() && !score && !lex {
        return Err(Reply::error(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if lex && withscores {
        return Err(Reply::error(
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    // With REV, the modern form names the range max first.
    let (lo, hi) = if rev && (score || lex) {
        (args[3], args[2])
    } else {
        (args[2], args[3])
    };
    let by = if score {
        match (Bound::parse(lo), Bound::parse(hi)) {
            (Some(min), Some(max)) => By::Score(min, max),
            _ => return Err(score_error()),
        }
    } else if lex {
        match (Lex::parse(lo), Lex::parse(hi)) {
            (Some(min), Some(max)) => By::Lex(min, max),
            _ => return Err(lex_error()),
        }
    } else {
        match (parse_i64(args[2]), parse_i64(args[3])) {
            (Some(start), Some(stop)) => By::Rank(start, stop),
            _ => return Err(not_integer()),
        }
    };
    Ok(Range {
        by,
        reverse: rev,
        limit,
        withscores,
    })
}

fn range_command(
    ks: &mut Keyspace,
    args: &[&[u8]],
    modern: bool,
    by_score: bool,
    by_lex: bool,
    reverse: bool,
) -> Result {
    let range = match parse_range(args, modern, by_score, by_lex, reverse) {
        Ok(range) => range,
        Err(reply) => return Ok(reply),
    };
    let open = match live(ks, args[1], Reply::Array(Vec::new())) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let members = select(ks, &open, &range)?;
    Ok(range_reply(members, range.withscores))
}

pub fn zrange(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    range_command(ks, args, true, false, false, false)
}

pub fn zrevrange(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    range_command(ks, args, false, false, false, true)
}

pub fn zrangebyscore(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    range_command(ks, args, false, true, false, false)
}

pub fn zrevrangebyscore(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    // `ZREVRANGEBYSCORE key max min`: the same order of arguments as ZRANGE ... BYSCORE REV.
    range_command(ks, args, false, true, false, true)
}

pub fn zrangebylex(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    range_command(ks, args, false, false, true, false)
}

pub fn zcount(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (Some(min), Some(max)) = (Bound::parse(args[2]), Bound::parse(args[3])) else {
        return Ok(score_error());
    };
    let open = match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let range = Range {
        by: By::Score(min, max),
        reverse: false,
        limit: None,
        withscores: false,
    };
    Ok(Reply::Integer(select(ks, &open, &range)?.len() as i64))
}

fn rank(ks: &mut Keyspace, args: &[&[u8]], reverse: bool) -> Result {
    let withscore = match args.get(3) {
        None => false,
        Some(a) if is(a, "WITHSCORE") && args.len() == 4 => true,
        Some(_) => return Ok(syntax_error()),
    };
    let open = match live(ks, args[1], Reply::Nil) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let Some(own) = score(ks, open.members.id, args[2])? else {
        return Ok(Reply::Nil);
    };
    let mut rank = 0i64;
    walk(ks, open.members.id, reverse, None, 1024, |_, member| {
        if member == args[2] {
            return false;
        }
        rank += 1;
        true
    })?;
    Ok(if withscore {
        Reply::Array(vec![Reply::Integer(rank), Reply::Double(own)])
    } else {
        Reply::Integer(rank)
    })
}

pub fn zrank(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    rank(ks, args, false)
}

pub fn zrevrank(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    rank(ks, args, true)
}

fn pop(ks: &mut Keyspace, args: &[&[u8]], max: bool) -> Result {
    let count = match args.get(2).map(|a| parse_i64(a)) {
        None => 1,
        Some(Some(n)) if n >= 0 => n as usize,
        Some(_) => return Ok(Reply::error("ERR value is out of range, must be positive")),
    };
    if args.len() > 3 {
        return Ok(syntax_error());
    }
    let mut open = match live(ks, args[1], Reply::Array(Vec::new())) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let taken = ks.by_score(open.members.id, ScoreStart::End, count, max)?;
    for (score, member) in &taken {
        remove(ks, &mut open, member, *score)?;
    }
    if !taken.is_empty() {
        save(ks, args[1], &open)?;
    }
    let nested = args.len() == 3;
    let mut items = Vec::new();
    for (score, member) in taken {
        if nested {
            items.push(Reply::Array(vec![
                Reply::Bulk(member),
                Reply::Double(score),
            ]));
        } else {
            items.push(Reply::Bulk(member));
            items.push(Reply::Double(score));
        }
    }
    Ok(Reply::Array(items))
}

pub fn zpopmin(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    pop(ks, args, false)
}

pub fn zpopmax(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    pop(ks, args, true)
}

fn remove_selected(ks: &mut Keyspace, args: &[&[u8]], range: Range) -> Result {
    let mut open = match live(ks, args[1], Reply::Integer(0)) {
        Ok(open) => open,
        Err(done) => return done,
    };
    let selected = select(ks, &open, &range)?;
    for (score, member) in &selected {
        remove(ks, &mut open, member, *score)?;
    }
    if !selected.is_empty() {
        save(ks, args[1], &open)?;
    }
    Ok(Reply::Integer(selected.len() as i64))
}

pub fn zremrangebyrank(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (Some(start), Some(stop)) = (parse_i64(args[2]), parse_i64(args[3])) else {
        return Ok(not_integer());
    };
    let range = Range {
        by: By::Rank(start, stop),
        reverse: false,
        limit: None,
        withscores: false,
    };
    remove_selected(ks, args, range)
}

pub fn zremrangebyscore(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let (Some(min), Some(max)) = (Bound::parse(args[2]), Bound::parse(args[3])) else {
        return Ok(score_error());
    };
    let range = Range {
        by: By::Score(min, max),
        reverse: false,
        limit: None,
        withscores: false,
    };
    remove_selected(ks, args, range)
}

/// `ZSCAN key cursor [MATCH pattern] [COUNT count]`: members with their scores.
pub fn zscan(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let empty = Reply::Array(vec![Reply::bulk("0"), Reply::Array(Vec::new())]);
    let open = match live(ks, args[1], empty) {
        Ok(open) => open,
        Err(done) => return done,
    };
    Ok(match scan_members(ks, open.members.id, args, false)? {
        Ok(mut page) => {
            for (_, value) in &mut page.members {
                let score = f64::from_le_bytes(value.as_slice().try_into().expect("8 bytes"));
                *value = ziggy_resp::reply::format_double(score).into_bytes();
            }
            page.reply(true)
        }
        Err(reply) => reply,
    })
}
