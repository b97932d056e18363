//! WATCH's two halves, as internal commands (a client cannot send them: the connection refuses
//! their names).
//!
//! - `~watch key…`, a read, answers `[removed_at, modified₁, live₁, …]`: per key, the index of
//!   the entry that last wrote its stored record (0: none) and whether the record is live (1) or
//!   expired (0); and once the machine's `removed_at`, the index of the last entry that removed
//!   a stored record.
//! - `~check (key modified live removed_at)…` opens an EXEC's group. It answers OK when every
//!   watched key is as it was, else a null array, and the machine skips the rest of the group
//!   ([`exec_aborted`]).
//!
//! A key is as it was when its stored record is the same write (same `modified`) in the same
//! state, live or expired: time only moves a live record to expired, which aborts, as in Redis 7.
//! A key that had no record must still have none, and no record may have been removed since:
//! else it could have been written and removed between WATCH and EXEC. That is coarser than
//! Redis, which tracks each key: any removal anywhere (DEL, FLUSHDB, an expired key reaped)
//! aborts an EXEC that watched a missing key. An extra abort is safe (the client retries); a
//! missed one is not.

use super::{parse_i64, syntax_error};
use crate::keyspace::Keyspace;
use ziggy_core::state_machine::StateError;
use ziggy_resp::Reply;

type Result = std::result::Result<Reply, StateError>;

/// The internal commands' names.
pub const WATCH: &str = "~watch";
pub const CHECK: &str = "~check";

/// What WATCH saw of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub key: Vec<u8>,
    /// The index of the entry that last wrote the key's record; 0: no record.
    pub modified: u64,
    /// Whether the record was live (not expired).
    pub live: bool,
    /// The machine's `removed_at` then (what decides for a key without a record).
    pub removed_at: u64,
}

/// The stored state of `key`: its record's `modified` (0: none) and whether it is live.
fn version(ks: &mut Keyspace, key: &[u8]) -> std::result::Result<(u64, bool), StateError> {
    Ok(ks
        .stored(key)?
        .map_or((0, false), |r| (r.modified, !r.expired(ks.now))))
}

pub(crate) fn watch(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut answer = vec![Reply::Integer(*ks.removed_at as i64)];
    for key in &args[1..] {
        let (modified, live) = version(ks, key)?;
        answer.push(Reply::Integer(modified as i64));
        answer.push(Reply::Integer(live as i64));
    }
    Ok(Reply::Array(answer))
}

pub(crate) fn check(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    if !(args.len() - 1).is_multiple_of(4) {
        return Ok(syntax_error());
    }
    for pair in args[1..].chunks(4) {
        let number = |arg: &[u8]| parse_i64(arg).filter(|n| *n >= 0).map(|n| n as u64);
        let (Some(modified), Some(live), Some(removed_at)) =
            (number(pair[1]), number(pair[2]), number(pair[3]))
        else {
            return Ok(syntax_error());
        };
        let now = version(ks, pair[0])?;
        let changed =
            now != (modified, live == 1) || (modified == 0 && *ks.removed_at != removed_at);
        if changed {
            return Ok(Reply::NilArray);
        }
    }
    Ok(Reply::ok())
}

/// Whether the check's reply says that EXEC aborts. Replies cross from the machine in RESP3,
/// where a null array and a nil are one `_`.
pub fn exec_aborted(check_reply: &Reply) -> bool {
    matches!(check_reply, Reply::Nil | Reply::NilArray)
}

/// The read that WATCH sends for `keys`.
pub fn watch_command(keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut args = vec![WATCH.as_bytes().to_vec()];
    args.extend(keys.iter().cloned());
    args
}

/// What the read of [`watch_command`] saw of each of `keys`; None for a reply of another shape.
pub fn watched(keys: &[Vec<u8>], reply: &Reply) -> Option<Vec<Watched>> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let number = |r: &Reply| match r {
        Reply::Integer(n) if *n >= 0 => Some(*n as u64),
        _ => None,
    };
    let (removed_at, pairs) = items.split_first()?;
    let removed_at = number(removed_at)?;
    if pairs.len() != 2 * keys.len() {
        return None;
    }
    keys.iter()
        .zip(pairs.chunks(2))
        .map(|(key, pair)| {
            Some(Watched {
                key: key.clone(),
                modified: number(&pair[0])?,
                live: number(&pair[1])? == 1,
                removed_at,
            })
        })
        .collect()
}

/// The command that opens an EXEC's group: it aborts the group if a watched key changed.
pub fn check_command(watched: &[Watched]) -> Vec<Vec<u8>> {
    let mut args = vec![CHECK.as_bytes().to_vec()];
    for w in watched {
        args.push(w.key.clone());
        args.push(w.modified.to_string().into_bytes());
        args.push(if w.live { b"1".to_vec() } else { b"0".to_vec() });
        args.push(w.removed_at.to_string().into_bytes());
    }
    args
}
