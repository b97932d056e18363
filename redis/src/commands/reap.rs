//! The reaper of expired keys, in two internal commands over the expiry index (see
//! `keyspace.rs`), so that keys that never expire cost it nothing and an idle keyspace costs no
//! log entries:
//!
//! - `~expired max cursor`, a read the leader runs now and then: up to `max` expiry entries due
//!   at the leader's clock, after `cursor` (an entry; empty: the first), answered as
//!   `[next, entry...]`: where the following look resumes (empty when this one reached the last
//!   entry due) and the entries, each `[expires_at u64 BE][key]`.
//! - `~reap entry...`, a write the leader proposes only when a look found some: each entry due
//!   at the entry's timestamp is deleted, with its key's record if the record still expires at
//!   that time (one rewritten since is kept), so every replica deletes the same keys at the same
//!   index. It answers how many records it deleted.
//!
//! Reads and writes already hide expired keys; the reaper reclaims their space for good.

use super::{not_integer, parse_i64};
use crate::keyspace::Keyspace;
use ziggy_core::state_machine::StateError;
use ziggy_resp::{parse_reply, Reply};

type Result = std::result::Result<Reply, StateError>;

pub const EXPIRED: &str = "~expired";
pub const REAP: &str = "~reap";

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
    let mut reply = Vec::with_capacity(1 + due.len());
    reply.push(Reply::Bulk(next));
    reply.extend(due.into_iter().map(Reply::Bulk));
    Ok(Reply::Array(reply))
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
    let mut bulks = items.into_iter().map(|item| match item {
        Reply::Bulk(bytes) => Some(bytes),
        _ => None,
    });
    let cursor = bulks.next()??;
    let entries = bulks.collect::<Option<Vec<_>>>()?;
    Some(Expired { cursor, entries })
}

/// Decodes the reply of a [`reap_group`]: how many keys it deleted.
pub fn decode_reap_reply(bytes: &[u8]) -> Option<u64> {
    match only_reply(bytes)? {
        Reply::Integer(deleted) if deleted >= 0 => Some(deleted as u64),
        _ => None,
    }
}
