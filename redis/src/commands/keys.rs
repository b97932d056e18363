//! Keys: DEL UNLINK EXISTS TYPE OBJECT RENAME RENAMENX.

use super::{is, syntax_error};
use crate::keyspace::Keyspace;
use ziggy_core::state_machine::StateError;
use ziggy_resp::Reply;

type Result = std::result::Result<Reply, StateError>;

pub fn del(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut removed = 0;
    for key in &args[1..] {
        removed += ks.remove(key)? as i64;
    }
    Ok(Reply::Integer(removed))
}

/// Counts each argument, so a key named twice counts twice (as in Redis).
pub fn exists(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let mut found = 0;
    for key in &args[1..] {
        found += ks.get(key)?.is_some() as i64;
    }
    Ok(Reply::Integer(found))
}

pub fn type_(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    let name = ks.get(args[1])?.map_or("none", |r| r.kind.name());
    Ok(Reply::Status(name.into()))
}

/// `OBJECT ENCODING key` (how the value is kept), and `OBJECT HELP`. Other subcommands
/// (FREQ, IDLETIME, REFCOUNT) describe Redis's memory manager, which ZiggyDB has not.
pub fn object(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    match args {
        [_, sub, key] if is(sub, "ENCODING") => Ok(match ks.get(key)? {
            Some(record) => Reply::bulk(record.kind.encoding()),
            None => Reply::Nil,
        }),
        [_, sub] if is(sub, "HELP") => Ok(Reply::Array(vec![
            Reply::Status("OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:".into()),
            Reply::Status("ENCODING <key>".into()),
            Reply::Status("    Return the kind of internal representation used in order to store the value associated with a <key>.".into()),
        ])),
        _ => Ok(syntax_error()),
    }
}

/// Moves `args[1]`'s record, with its TTL, to `args[2]`; with `only_new`, not over a live key.
fn rename_to(ks: &mut Keyspace, args: &[&[u8]], only_new: bool) -> Result {
    let Some(record) = ks.get(args[1])? else {
        return Ok(Reply::error("ERR no such key"));
    };
    if only_new && ks.get(args[2])?.is_some() {
        return Ok(Reply::Integer(0));
    }
    if args[1] != args[2] {
        ks.unlink_record(args[1])?; // a collection's members go with its record (its id)
        ks.put(args[2], &record)?;
    }
    Ok(if only_new {
        Reply::Integer(1)
    } else {
        Reply::ok()
    })
}

pub fn rename(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    rename_to(ks, args, false)
}

pub fn renamenx(ks: &mut Keyspace, args: &[&[u8]]) -> Result {
    rename_to(ks, args, true)
}
