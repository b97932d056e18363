//! The reaper: `~reap max cursor`, an internal write the leader proposes now and then, deletes
//! expired records for good (reads and writes only hide them).
//!
//! It examines at most `max` stored keys in key order from `cursor` (a key; empty: the start)
//! and deletes those expired at the entry's timestamp, so every replica deletes the same keys
//! at the same index, and an entry's work is bounded whether or not the keys expired. It
//! answers `[deleted, next]`: `next` is where the following reap resumes, empty when this one
//! reached the end of the keyspace.

use super::{not_integer, parse_i64, scan::after};
use crate::keyspace::Keyspace;
use ziggy_core::state_machine::StateError;
use ziggy_resp::{parse_reply, Reply};

type Result = std::result::Result<Reply, StateError>;

pub const REAP: &str = "~reap";

/// The most keys one scan of the LSM returns.
const BATCH: usize = 256;

pub(crate) fn reap(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let max = match parse_i64(args[1]) {
        Some(n) if n >= 1 => n as usize,
        _ => return Ok(not_integer()),
    };
    let mut from = args[2].to_vec();
    let (mut examined, mut deleted) = (0, 0);
    while examined < max {
        let batch = ks.scan(&from, BATCH.min(max - examined))?;
        let Some((last, _)) = batch.last() else {
            from.clear(); // the end: the next reap starts over
            break;
        };
        from = after(last);
        examined += batch.len();
        for (key, record) in &batch {
            if record.expired(ks.now) {
                ks.remove(key)?;
                deleted += 1;
            }
        }
    }
    Ok(Reply::Array(vec![
        Reply::Integer(deleted),
        Reply::Bulk(from),
    ]))
}

/// The group that reaps up to `max` keys from `cursor` (empty: the start). A write: it goes
/// through the log, on a session.
pub fn reap_group(max: u32, cursor: &[u8]) -> Vec<Vec<Vec<u8>>> {
    vec![vec![
        REAP.as_bytes().to_vec(),
        max.to_string().into_bytes(),
        cursor.to_vec(),
    ]]
}

/// What a reap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaped {
    /// Expired keys deleted.
    pub deleted: u64,
    /// Where the next reap resumes; empty: it reached the end (the next one starts over).
    pub cursor: Vec<u8>,
}

/// Decodes the reply of a [`reap_group`] (the group's replies as the state machine wrote them);
/// None for anything else, such as an error.
pub fn decode_reap_reply(bytes: &[u8]) -> Option<Reaped> {
    let (reply, used) = parse_reply(bytes).ok()??;
    let Reply::Array(items) = reply else {
        return None;
    };
    match <[Reply; 2]>::try_from(items).ok()? {
        [Reply::Integer(deleted), Reply::Bulk(cursor)] if used == bytes.len() && deleted >= 0 => {
            Some(Reaped {
                deleted: deleted as u64,
                cursor,
            })
        }
        _ => None,
    }
}
