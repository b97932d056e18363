//! What hashes and sets share: finding a collection of the right type, making one, saving its
//! length (removing it when it empties), walking its members, and picking members at random.

use super::scan::glob_match;
use super::{is, not_integer, parse_i64, syntax_error, wrong_type};
use crate::keyspace::{Keyspace, Members};
use crate::record::{Collection, Kind, Record};
use ziggy_core::state_machine::StateError;
use ziggy_resp::Reply;

/// A live collection, as a command holds it while it changes members.
pub(super) struct Open {
    pub record: Record,
    pub members: Collection,
    /// Made by this command: nothing is stored yet.
    created: bool,
}

/// What a key holds, for a command on collections of one kind.
pub(super) enum Found {
    Absent,
    /// Another type: the command answers WRONGTYPE.
    Wrong,
    Live(Open),
}

/// The live collection of `kind` at `key`.
pub(super) fn find(ks: &mut Keyspace, key: &[u8], kind: Kind) -> Result<Found, StateError> {
    Ok(match ks.get(key)? {
        None => Found::Absent,
        Some(record) if record.kind != kind => Found::Wrong,
        Some(record) => Found::Live(Open {
            members: record.as_collection().expect("a collection's record"),
            record,
            created: false,
        }),
    })
}

/// What a command answers instead of going on: a reply, or the storage's failure.
pub(super) type Instead = std::result::Result<Reply, StateError>;

/// The live collection of `kind` at `key`, or what the command answers instead: `absent` for a
/// key that holds nothing, WRONGTYPE for another type.
pub(super) fn live(
    ks: &mut Keyspace,
    key: &[u8],
    kind: Kind,
    absent: Reply,
) -> Result<Open, Instead> {
    match find(ks, key, kind) {
        Err(e) => Err(Err(e)),
        Ok(Found::Absent) => Err(Ok(absent)),
        Ok(Found::Wrong) => Err(Ok(wrong_type())),
        Ok(Found::Live(open)) => Ok(open),
    }
}

/// For a write that adds members: the live collection of `kind` at `key` or a new one, or the
/// WRONGTYPE reply.
pub(super) fn writable(ks: &mut Keyspace, key: &[u8], kind: Kind) -> Result<Open, Instead> {
    match find_or_make(ks, key, kind) {
        Err(e) => Err(Err(e)),
        Ok(None) => Err(Ok(wrong_type())),
        Ok(Some(open)) => Ok(open),
    }
}

/// For a write that adds members: the live collection, or a new empty one; None for another
/// type.
pub(super) fn find_or_make(
    ks: &mut Keyspace,
    key: &[u8],
    kind: Kind,
) -> Result<Option<Open>, StateError> {
    Ok(match find(ks, key, kind)? {
        Found::Wrong => None,
        Found::Live(open) => Some(open),
        Found::Absent => {
            let members = Collection {
                id: ks.new_id(),
                len: 0,
                head: 0,
            };
            Some(Open {
                record: Record::collection(kind, members, 0),
                members,
                created: true,
            })
        }
    })
}

/// Stores the collection's record after its members changed: its new length, or its removal
/// once it has none (Redis keeps no empty collections).
pub(super) fn save(ks: &mut Keyspace, key: &[u8], open: &Open) -> Result<(), StateError> {
    let record = Record::collection(open.record.kind, open.members, open.record.expires_at);
    match (open.members.len, open.created) {
        (0, true) => Ok(()),
        (0, false) => ks.unlink_record(key),
        (_, true) => ks.put(key, &record), // over an expired key's record, if any
        (_, false) => ks.update(key, &record),
    }
}

/// Every member of `id` with its value, in member order.
pub(super) fn all_members(ks: &mut Keyspace, id: u64) -> Result<Members, StateError> {
    const BATCH: usize = 1024;
    let mut all = Vec::new();
    let mut from = Vec::new();
    loop {
        let batch = ks.members(id, &from, BATCH)?;
        let done = batch.len() < BATCH;
        if let Some((last, _)) = batch.last() {
            from = [last.as_slice(), &[0]].concat();
        }
        all.extend(batch);
        if done {
            return Ok(all);
        }
    }
}

/// `HSCAN`/`SSCAN key cursor [MATCH pattern] [COUNT count]` (and `NOVALUES` when
/// `novalues_ok`) over collection `id`: `(next cursor, members)`, with `SCAN`'s cursors (a
/// member's first bytes, see `scan.rs`). Errors as Redis's.
pub(super) fn scan_members(
    ks: &mut Keyspace,
    id: u64,
    args: &[&[u8]],
    novalues_ok: bool,
) -> Result<std::result::Result<ScanPage, Reply>, StateError> {
    let Some(cursor) = parse_i64(args[2]).filter(|&c| c >= 0 && c as u64 <= 1 << 56) else {
        return Ok(Err(Reply::error("ERR invalid cursor")));
    };
    let (mut pattern, mut count, mut novalues) = (None, 10usize, false);
    let mut at = 3;
    while at < args.len() {
        if novalues_ok && is(args[at], "NOVALUES") {
            novalues = true;
            at += 1;
            continue;
        }
        let Some(value) = args.get(at + 1) else {
            return Ok(Err(syntax_error()));
        };
        match args[at] {
            a if is(a, "MATCH") => pattern = Some(*value),
            a if is(a, "COUNT") => match parse_i64(value) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return Ok(Err(syntax_error())),
                None => return Ok(Err(not_integer())),
            },
            _ => return Ok(Err(syntax_error())),
        }
        at += 2;
    }
    let from = match cursor as u64 {
        0 => Vec::new(),
        c => super::scan::prefix_start(c - 1),
    };
    let (members, next) =
        super::scan::page(count, &from, |from, limit| ks.members(id, from, limit))?;
    let members = members
        .into_iter()
        .filter(|(m, _)| pattern.is_none_or(|p| glob_match(p, m)))
        .collect();
    Ok(Ok(ScanPage {
        cursor: next,
        members,
        novalues,
    }))
}

pub(super) struct ScanPage {
    pub cursor: u64,
    pub members: Members,
    pub novalues: bool,
}

impl ScanPage {
    /// The reply: `[cursor, [member (value)...]]`.
    pub fn reply(self, values: bool) -> Reply {
        let mut items = Vec::new();
        for (member, value) in self.members {
            items.push(Reply::Bulk(member));
            if values && !self.novalues {
                items.push(Reply::Bulk(value));
            }
        }
        Reply::Array(vec![
            Reply::bulk(self.cursor.to_string()),
            Reply::Array(items),
        ])
    }
}

/// A deterministic draw for `HRANDFIELD`, `SRANDMEMBER` and `SPOP`: from the deciding time and
/// the entry, so every replica draws the same (a read's draw is the leader's).
pub(super) struct Draw(u64);

impl Draw {
    pub fn new(ks: &Keyspace, key: &[u8]) -> Draw {
        let mut seed = ks.now ^ ks.index.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
        for &b in key {
            seed = (seed ^ b as u64).wrapping_mul(0x0100_0000_01B3);
        }
        Draw(seed)
    }

    pub fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `count` members of collection `open` drawn at random: distinct ones (at most all) when
/// `distinct`, else with repeats. Distinct draws take a run of members from a random point,
/// wrapping around; repeated draws pick each from its own random point.
pub(super) fn draw_members(
    ks: &mut Keyspace,
    key: &[u8],
    open: &Open,
    count: usize,
    distinct: bool,
) -> Result<Members, StateError> {
    let id = open.members.id;
    let mut draw = Draw::new(ks, key);
    let mut point = || draw.next().to_be_bytes().to_vec();
    if distinct {
        let want = count.min(open.members.len as usize);
        let start = point();
        let mut got = ks.members(id, &start, want)?;
        if got.len() < want {
            let wrapped = ks.members(id, b"", want - got.len())?;
            got.extend(wrapped.into_iter().filter(|(m, _)| m < &start));
        }
        return Ok(got);
    }
    let mut got = Vec::with_capacity(count);
    for _ in 0..count {
        let start = point();
        let mut one = ks.members(id, &start, 1)?;
        if one.is_empty() {
            one = ks.members(id, b"", 1)?;
        }
        got.extend(one);
    }
    Ok(got)
}

/// A count argument of `HRANDFIELD`/`SRANDMEMBER`: `(count, distinct)` (a negative count asks
/// for repeats), or Redis's error.
pub(super) fn draw_count(arg: &[u8]) -> std::result::Result<(usize, bool), Reply> {
    match parse_i64(arg) {
        None => Err(not_integer()),
        Some(n) if n.unsigned_abs() > (i64::MAX as u64) / 2 => {
            Err(Reply::error("ERR value is out of range"))
        }
        Some(n) if n >= 0 => Ok((n as usize, true)),
        Some(n) => Ok((n.unsigned_abs() as usize, false)),
    }
}

pub(super) fn wrong() -> Reply {
    wrong_type()
}
