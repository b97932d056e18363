//! The reaper of expired keys, in two internal commands so that an idle keyspace costs no log
//! entries:
//!
//! - `~expired max cursor`, a read the leader runs now and then: it examines at most `max`
//!   stored keys in key order from `cursor` (a key; empty: the start) and answers
//!   `[next, key...]`: where the following look resumes (empty when this one reached the end of
//!   the keyspace) and the keys expired at the leader's clock.
//! - `~reap key...`, a write the leader proposes only when a look found some: it deletes each
//!   listed key that is expired at the entry's timestamp (one rewritten since the look is kept),
//!   so every replica deletes the same keys at the same index. It answers how many it deleted.
//!
//! Reads and writes already hide expired keys; the reaper reclaims their space for good.

use super::{not_integer, parse_i64, scan::after};
use crate::keyspace::Keyspace;
use ziggy_core::state_machine::StateError;
use ziggy_resp::{parse_reply, Reply};

type Result = std::result::Result<Reply, StateError>;

pub const EXPIRED: &str = "~expired";
pub const REAP: &str = "~reap";

/// The most keys one scan of the LSM returns.
const BATCH: usize = 256;

pub(crate) fn expired(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let max = match parse_i64(args[1]) {
        Some(n) if n >= 1 => n as usize,
        _ => return Ok(not_integer()),
    };
    let mut from = args[2].to_vec();
    let mut examined = 0;
    let mut found = Vec::new();
    while examined < max {
        let batch = ks.scan(&from, BATCH.min(max - examined))?;
        let Some((last, _)) = batch.last() else {
            from.clear(); // the end: the next look starts over
            break;
        };
        from = after(last);
        examined += batch.len();
        let expired = batch.into_iter().filter(|(_, r)| r.expired(ks.now));
        found.extend(expired.map(|(key, _)| Reply::Bulk(key)));
    }
    let mut reply = Vec::with_capacity(1 + found.len());
    reply.push(Reply::Bulk(from));
    reply.extend(found);
    Ok(Reply::Array(reply))
}

pub(crate) fn reap(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut deleted = 0;
    for &key in &args[1..] {
        if ks.stored(key)?.is_some_and(|record| record.expired(ks.now)) {
            ks.remove(key)?;
            deleted += 1;
        }
    }
    Ok(Reply::Integer(deleted))
}

/// The read group that looks for expired keys among at most `max` from `cursor` (empty: the
/// start).
pub fn expired_group(max: u32, cursor: &[u8]) -> Vec<Vec<Vec<u8>>> {
    vec![vec![
        EXPIRED.as_bytes().to_vec(),
        max.to_string().into_bytes(),
        cursor.to_vec(),
    ]]
}

/// The write group that deletes those of `keys` still expired when it applies.
pub fn reap_group(keys: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
    let mut command = Vec::with_capacity(1 + keys.len());
    command.push(REAP.as_bytes().to_vec());
    command.extend(keys.iter().cloned());
    vec![command]
}

/// What a look for expired keys found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// Where the next look resumes; empty: it reached the end (the next one starts over).
    pub cursor: Vec<u8>,
    /// Expired keys, in key order.
    pub keys: Vec<Vec<u8>>,
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
    let keys = bulks.collect::<Option<Vec<_>>>()?;
    Some(Expired { cursor, keys })
}

/// Decodes the reply of a [`reap_group`]: how many keys it deleted.
pub fn decode_reap_reply(bytes: &[u8]) -> Option<u64> {
    match only_reply(bytes)? {
        Reply::Integer(deleted) if deleted >= 0 => Some(deleted as u64),
        _ => None,
    }
}
