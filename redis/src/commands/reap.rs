//! The reaper of expired keys, in two internal commands over the expiry index (see
//! `keyspace.rs`), so that keys that never expire cost it nothing and an idle keyspace costs no
//! log entries:
//!
//! - `~expired max cursor`, a read the leader runs now and then: up to `max` expiry entries due
//!   at the leader's clock, after `cursor` (an entry; empty: the first), and up to `max` removed
//!   collections, answered as `[next, [entry...], [id...]]`: where the following look resumes
//!   (empty when this one reached the last entry due), the entries, each
//!   `[expires_at u64 BE][key]`, and the collections' ids (8 bytes BE each).
//! - `~reap entry...`, a write the leader proposes only when a look found some: each entry due
//!   at the entry's timestamp is deleted, with its key's record if the record still expires at
//!   that time (one rewritten since is kept), so every replica deletes the same keys at the same
//!   index. It answers how many records it deleted.
//!
//! - `~sweep id cursor`, a write the leader proposes for each removed collection a look found:
//!   it deletes up to [`SWEEP_MAX`] of the collection's members from `cursor` on, and its mark
//!   once none are left, answering `[deleted, next cursor]`.
//!
//! Reads and writes already hide expired keys and removed collections' members; the reaper
//! reclaims their space for good.

use super::{not_integer, parse_i64};
use crate::keyspace::Keyspace;
use ziggy_core::state_machine::StateError;
use ziggy_resp::{parse_reply, Reply};

type Result = std::result::Result<Reply, StateError>;

pub const EXPIRED: &str = "~expired";
pub const REAP: &str = "~reap";
pub const SWEEP: &str = "~sweep";

/// The most members of a removed collection one sweep deletes.
pub const SWEEP_MAX: usize = 1024;

pub(crate) fn expired(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let max = match parse_i64(args[1]) {
        Some(n) if n >= 1 => n as usize,
        _ => return Ok(not_integer()),
    };
    let due = ks.due(args[2], max)?;
    let next = match due.last() {
        Some(last) if due.len() == max => last.clone(),
        _ => Vec::new(), // the last entry due: the next look starts over
    };
    let dead = ks.dead(max)?;
    Ok(Reply::Array(vec![
        Reply::Bulk(next),
        Reply::Array(due.into_iter().map(Reply::Bulk).collect()),
        Reply::Array(
            dead.into_iter()
                .map(|id| Reply::bulk(id.to_be_bytes()))
                .collect(),
        ),
    ]))
}

pub(crate) fn sweep(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let Ok(id) = <[u8; 8]>::try_from(args[1]) else {
        return Ok(Reply::error("ERR a collection id is 8 bytes"));
    };
    let (deleted, next) = ks.sweep(u64::from_be_bytes(id), args[2], SWEEP_MAX)?;
    Ok(Reply::Array(vec![
        Reply::Integer(deleted as i64),
        Reply::Bulk(next),
    ]))
}

/// The write group that sweeps members of the removed collection `id` from `cursor` (what the
/// last sweep of it answered; empty: the start).
pub fn sweep_group(id: u64, cursor: &[u8]) -> Vec<Vec<Vec<u8>>> {
    vec![vec![
        SWEEP.as_bytes().to_vec(),
        id.to_be_bytes().to_vec(),
        cursor.to_vec(),
    ]]
}

/// What a sweep did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swept {
    pub deleted: u64,
    /// Where the next sweep of the same collection resumes; empty: it is gone.
    pub cursor: Vec<u8>,
}

/// Decodes the reply of a [`sweep_group`].
pub fn decode_sweep_reply(bytes: &[u8]) -> Option<Swept> {
    let Reply::Array(items) = only_reply(bytes)? else {
        return None;
    };
    match <[Reply; 2]>::try_from(items).ok()? {
        [Reply::Integer(deleted), Reply::Bulk(cursor)] if deleted >= 0 => Some(Swept {
            deleted: deleted as u64,
            cursor,
        }),
        _ => None,
    }
}

pub(crate) fn reap(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut deleted = 0;
    for &entry in &args[1..] {
        if ks.reap(entry)? {
            deleted += 1;
        }
    }
    Ok(Reply::Integer(deleted))
}

/// The read group that looks for up to `max` expiry entries due, after `cursor` (empty: from the
/// first).
pub fn expired_group(max: u32, cursor: &[u8]) -> Vec<Vec<Vec<u8>>> {
    vec![vec![
        EXPIRED.as_bytes().to_vec(),
        max.to_string().into_bytes(),
        cursor.to_vec(),
    ]]
}

/// The write group that reaps the expiry `entries` a look found.
pub fn reap_group(entries: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
    let mut command = Vec::with_capacity(1 + entries.len());
    command.push(REAP.as_bytes().to_vec());
    command.extend(entries.iter().cloned());
    vec![command]
}

/// What a look for expired keys found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// Where the next look resumes; empty: it reached the last entry due (the next one starts
    /// over).
    pub cursor: Vec<u8>,
    /// Expiry entries due, in the order they fell due: what a [`reap_group`] takes.
    pub entries: Vec<Vec<u8>>,
    /// Removed collections with members left: what [`sweep_group`] takes.
    pub dead: Vec<u64>,
}

/// The one reply of a group, as the state machine wrote it; None if there is anything else.
fn only_reply(bytes: &[u8]) -> Option<Reply> {
    let (reply, used) = parse_reply(bytes).ok()??;
    (used == bytes.len()).then_some(reply)
}

/// Decodes the reply of an [`expired_group`]; None for anything else, such as an error.
pub fn decode_expired_reply(bytes: &[u8]) -> Option<Expired> {
    let Reply::Array(items) = only_reply(bytes)? else {
        return None;
    };
    let [Reply::Bulk(cursor), Reply::Array(entries), Reply::Array(dead)] =
        <[Reply; 3]>::try_from(items).ok()?
    else {
        return None;
    };
    let bulk = |item: Reply| match item {
        Reply::Bulk(bytes) => Some(bytes),
        _ => None,
    };
    let entries = entries.into_iter().map(bulk).collect::<Option<Vec<_>>>()?;
    let dead = dead
        .into_iter()
        .map(|item| Some(u64::from_be_bytes(bulk(item)?.try_into().ok()?)))
        .collect::<Option<Vec<_>>>()?;
    Some(Expired {
        cursor,
        entries,
        dead,
    })
}

/// Decodes the reply of a [`reap_group`]: how many keys it deleted.
pub fn decode_reap_reply(bytes: &[u8]) -> Option<u64> {
    match only_reply(bytes)? {
        Reply::Integer(deleted) if deleted >= 0 => Some(deleted as u64),
        _ => None,
    }
}
