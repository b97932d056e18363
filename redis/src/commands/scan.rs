//! Walking the keyspace: KEYS SCAN DBSIZE RANDOMKEY FLUSHDB. Each walks the LSM in key order in
//! batches; expired records are skipped (and left for the reaper).

use super::{is, not_integer, parse_i64, syntax_error};
use crate::keyspace::Keyspace;
use crate::record::Record;
use ziggy_core::state_machine::StateError;
use ziggy_resp::Reply;

type Result = std::result::Result<Reply, StateError>;

const BATCH: usize = 256;

/// The smallest key after `key`.
pub(super) fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Calls `f` with every live key and record, in key order, until it returns false.
fn each_live(
    ks: &mut Keyspace,
    mut f: impl FnMut(&[u8], &Record) -> bool,
) -> std::result::Result<(), StateError> {
    let mut from = Vec::new();
    loop {
        let batch = ks.scan(&from, BATCH)?;
        let done = batch.len() < BATCH;
        for (key, record) in &batch {
            if !record.expired(ks.now) && !f(key, record) {
                return Ok(());
            }
        }
        match batch.last() {
            Some((key, _)) if !done => from = after(key),
            _ => return Ok(()),
        }
    }
}

pub fn keys(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut found = Vec::new();
    each_live(ks, |key, _| {
        if glob_match(args[1], key) {
            found.push(Reply::Bulk(key.to_vec()));
        }
        true
    })?;
    Ok(Reply::Array(found))
}

pub fn dbsize(ks: &mut Keyspace, _args: &[&[u8]]) -> Result {
    let mut count = 0;
    each_live(ks, |_, _| {
        count += 1;
        true
    })?;
    Ok(Reply::Integer(count))
}

/// A key chosen by the deciding time (the same on every replica): the first key at or after a
/// point drawn from it, or the first key.
pub fn randomkey(ks: &mut Keyspace, _args: &[&[u8]]) -> Result {
    let mut x = ks.now.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    let point = x.to_be_bytes();
    let mut chosen = None;
    let mut first = None;
    each_live(ks, |key, _| {
        if first.is_none() {
            first = Some(key.to_vec());
        }
        if key >= &point[..] {
            chosen = Some(key.to_vec());
            return false;
        }
        true
    })?;
    Ok(chosen.or(first).map_or(Reply::Nil, Reply::Bulk))
}

pub fn flushdb(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    if args.len() > 2
        || args
            .get(1)
            .is_some_and(|a| !is(a, "ASYNC") && !is(a, "SYNC"))
    {
        return Ok(syntax_error());
    }
    loop {
        let batch = ks.scan(&[], BATCH)?;
        if batch.is_empty() {
            return Ok(Reply::ok());
        }
        for (key, _) in batch {
            ks.remove(&key)?;
        }
    }
}

/// The first 7 bytes of a key as a number: SCAN's cursor is this plus one (0 means the start or
/// the end). Every key whose prefix is below the cursor's was returned; keys that share a prefix
/// go out in one batch, so a scan always moves on.
pub(super) fn prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(7);
    bytes[1..1 + n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// The smallest key whose prefix is `prefix`.
pub(super) fn prefix_start(prefix: u64) -> Vec<u8> {
    let bytes = prefix.to_be_bytes();
    let mut key = bytes[1..].to_vec();
    while key.last() == Some(&0) {
        key.pop();
    }
    key
}

pub fn scan(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let cursor = match parse_i64(args[1]) {
        Some(c) if c >= 0 && (c as u64) <= 1 << 56 => c as u64,
        _ => return Ok(Reply::error("ERR invalid cursor")),
    };
    let (mut pattern, mut count, mut kind) = (None, 10usize, None);
    let mut at = 2;
    while at < args.len() {
        let Some(value) = args.get(at + 1) else {
            return Ok(syntax_error());
        };
        match args[at] {
            a if is(a, "MATCH") => pattern = Some(*value),
            a if is(a, "COUNT") => match parse_i64(value) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return Ok(syntax_error()),
                None => return Ok(not_integer()),
            },
            a if is(a, "TYPE") => kind = Some(*value),
            _ => return Ok(syntax_error()),
        }
        at += 2;
    }
    let from = if cursor == 0 {
        Vec::new()
    } else {
        prefix_start(cursor - 1)
    };
    let now = ks.now;
    let (records, next) = page(count, &from, |from, limit| ks.scan(from, limit))?;
    let found = records
        .into_iter()
        .filter(|(key, record)| {
            !record.expired(now)
                && pattern.is_none_or(|p| glob_match(p, key))
                && kind.is_none_or(|k| is(k, record.kind.name()))
        })
        .map(|(key, _)| Reply::Bulk(key))
        .collect();
    Ok(scan_reply(next, found))
}

/// Items of a page in order, and the next cursor.
pub(super) type Page<T> = (Vec<(Vec<u8>, T)>, u64);

/// One page of a cursor walk (`SCAN`, `HSCAN`, `SSCAN`) from `from`: at least `count` items
/// when there are that many, then on to the end of the last one's prefix (see [`prefix`]), as
/// `fetch(from, limit)` returns them in order; and the next cursor, 0 at the end.
pub(super) fn page<T>(
    count: usize,
    from: &[u8],
    mut fetch: impl FnMut(&[u8], usize) -> std::result::Result<Vec<(Vec<u8>, T)>, StateError>,
) -> std::result::Result<Page<T>, StateError> {
    let (mut found, mut last) = (Vec::new(), None);
    let mut from = from.to_vec();
    loop {
        let batch = fetch(&from, BATCH)?;
        let done = batch.len() < BATCH;
        if let Some((key, _)) = batch.last() {
            from = after(key);
        }
        for (key, item) in batch {
            let p = prefix(&key);
            if found.len() >= count && last != Some(p) {
                return Ok((found, p + 1));
            }
            last = Some(p);
            found.push((key, item));
        }
        if done {
            return Ok((found, 0));
        }
    }
}

fn scan_reply(cursor: u64, keys: Vec<Reply>) -> Reply {
    Reply::Array(vec![Reply::bulk(cursor.to_string()), Reply::Array(keys)])
}

/// Redis's glob: `*` any run, `?` any byte, `[abc]`, `[^a]`, `[a-z]`, `\x` a literal x.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((&byte, text_rest)) = text.split_first() else {
                return false;
            };
            match class(rest, byte) {
                Some((true, after_class)) => glob_match(after_class, text_rest),
                Some((false, _)) => false,
                None => byte == b'[' && glob_match(rest, text_rest), // no closing ']'
            }
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && glob_match(&rest[1..], &text[1..])
        }
        Some((&c, rest)) => text.first() == Some(&c) && glob_match(rest, &text[1..]),
    }
}

/// Matches `byte` against the class after `[`: whether it matched, and the pattern after `]`.
fn class(pattern: &[u8], byte: u8) -> Option<(bool, &[u8])> {
    let (negated, mut p) = match pattern.first() {
        Some(b'^') => (true, &pattern[1..]),
        _ => (false, pattern),
    };
    let mut matched = false;
    loop {
        match p {
            [] => return None,
            [b']', rest @ ..] => return Some((matched != negated, rest)),
            [b'\\', c, rest @ ..] => {
                matched |= *c == byte;
                p = rest;
            }
            [lo, b'-', hi, rest @ ..] if *hi != b']' => {
                let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                matched |= (lo..=hi).contains(&byte);
                p = rest;
            }
            [c, rest @ ..] => {
                matched |= *c == byte;
                p = rest;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_matches_them() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("*", ""));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("user:*:name", "user:42:name"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(!m("abc", "ab"));
    }

    #[test]
    fn cursor_prefixes_round_trip() {
        for key in [&b"a"[..], b"abcdefgh", b"\0\0x", b"zzzzzzz"] {
            let start = prefix_start(prefix(key));
            assert!(start.as_slice() <= key, "{key:?}");
            assert_eq!(prefix(&start), prefix(key));
        }
    }
}
