//! The command table: each command's name, arity and whether it writes, and what it does to the
//! keyspace. Replies and error words are Redis's.

mod collection;
mod counters;
mod expiry;
mod hashes;
mod json;
mod keys;
mod lists;
pub mod reap;
mod scan;
mod sets;
mod strings;
pub mod watch;
mod zsets;

use crate::keyspace::Keyspace;
use ziggy_core::state_machine::StateError;
use ziggy_resp::Reply;

/// What a command does, given its arguments (the name first).
pub type Run = fn(&mut Keyspace, &[&[u8]]) -> Result<Reply, StateError>;

pub struct CommandSpec {
    /// Lowercase, as `COMMAND` lists it.
    pub name: &'static str,
    /// Redis's convention: `n` exactly n arguments (the name included), `-n` at least n.
    pub arity: i32,
    /// Whether it may change the keyspace (reads alone need no session slot).
    pub write: bool,
    pub run: Run,
    /// The name packed into an integer ([`pack`]): lookups compare these, not strings.
    key: u128,
}

impl CommandSpec {
    pub fn arity_ok(&self, args: usize) -> bool {
        let args = args as i32;
        if self.arity >= 0 {
            args == self.arity
        } else {
            args >= -self.arity
        }
    }
}

const fn command(name: &'static str, arity: i32, write: bool, run: Run) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        write,
        run,
        key: match pack(name.as_bytes()) {
            Some(key) => key,
            None => panic!("a command's name is at most NAME_MAX bytes"),
        },
    }
}

/// `name`, lowercased, as a big-endian integer padded with zeros: two packed names compare as
/// the names do, so the tables' order by name is their order by key. None for a name longer
/// than any command's, or holding a zero byte (which the padding could not tell apart).
const fn pack(name: &[u8]) -> Option<u128> {
    if name.len() > NAME_MAX {
        return None;
    }
    let mut key = 0u128;
    let mut i = 0;
    while i < NAME_MAX {
        let byte = if i < name.len() {
            name[i].to_ascii_lowercase()
        } else {
            0
        };
        if i < name.len() && byte == 0 {
            return None;
        }
        key = (key << 8) | byte as u128;
        i += 1;
    }
    Some(key)
}

/// Every data command, sorted by name.
static COMMANDS: &[CommandSpec] = &[
    command("append", 3, true, strings::append),
    command("dbsize", 1, false, scan::dbsize),
    command("decr", 2, true, counters::decr),
    command("decrby", 3, true, counters::decrby),
    command("del", -2, true, keys::del),
    command("exists", -2, false, keys::exists),
    command("expire", -3, true, expiry::expire),
    command("expireat", -3, true, expiry::expireat),
    command("expiretime", 2, false, expiry::expiretime),
    command("flushdb", -1, true, scan::flushdb),
    command("get", 2, false, strings::get),
    command("getdel", 2, true, strings::getdel),
    command("getex", -2, true, strings::getex),
    command("getrange", 4, false, strings::getrange),
    command("hdel", -3, true, hashes::hdel),
    command("hexists", 3, false, hashes::hexists),
    command("hget", 3, false, hashes::hget),
    command("hgetall", 2, false, hashes::hgetall),
    command("hincrby", 4, true, hashes::hincrby),
    command("hincrbyfloat", 4, true, hashes::hincrbyfloat),
    command("hkeys", 2, false, hashes::hkeys),
    command("hlen", 2, false, hashes::hlen),
    command("hmget", -3, false, hashes::hmget),
    command("hmset", -4, true, hashes::hmset),
    command("hrandfield", -2, false, hashes::hrandfield),
    command("hscan", -3, false, hashes::hscan),
    command("hset", -4, true, hashes::hset),
    command("hsetnx", 4, true, hashes::hsetnx),
    command("hstrlen", 3, false, hashes::hstrlen),
    command("hvals", 2, false, hashes::hvals),
    command("incr", 2, true, counters::incr),
    command("incrby", 3, true, counters::incrby),
    command("incrbyfloat", 3, true, counters::incrbyfloat),
    command("json.arrappend", -4, true, json::arrappend),
    command("json.del", -2, true, json::del),
    command("json.forget", -2, true, json::del),
    command("json.get", -2, false, json::get),
    command("json.mget", -3, false, json::mget),
    command("json.numincrby", 4, true, json::numincrby),
    command("json.objkeys", -2, false, json::objkeys),
    command("json.set", -4, true, json::set),
    command("json.strappend", -3, true, json::strappend),
    command("json.type", -2, false, json::type_),
    command("keys", 2, false, scan::keys),
    command("lindex", 3, false, lists::lindex),
    command("linsert", 5, true, lists::linsert),
    command("llen", 2, false, lists::llen),
    command("lmove", 5, true, lists::lmove),
    command("lpop", -2, true, lists::lpop),
    command("lpos", -3, false, lists::lpos),
    command("lpush", -3, true, lists::lpush),
    command("lpushx", -3, true, lists::lpushx),
    command("lrange", 4, false, lists::lrange),
    command("lrem", 4, true, lists::lrem),
    command("lset", 4, true, lists::lset),
    command("ltrim", 4, true, lists::ltrim),
    command("mget", -2, false, strings::mget),
    command("mset", -3, true, strings::mset),
    command("msetnx", -3, true, strings::msetnx),
    command("object", -2, false, keys::object),
    command("persist", 2, true, expiry::persist),
    command("pexpire", -3, true, expiry::pexpire),
    command("pexpireat", -3, true, expiry::pexpireat),
    command("pexpiretime", 2, false, expiry::pexpiretime),
    command("psetex", 4, true, strings::psetex),
    command("pttl", 2, false, expiry::pttl),
    command("randomkey", 1, false, scan::randomkey),
    command("rename", 3, true, keys::rename),
    command("renamenx", 3, true, keys::renamenx),
    command("rpop", -2, true, lists::rpop),
    command("rpush", -3, true, lists::rpush),
    command("rpushx", -3, true, lists::rpushx),
    command("sadd", -3, true, sets::sadd),
    command("scan", -2, false, scan::scan),
    command("scard", 2, false, sets::scard),
    command("sdiff", -2, false, sets::sdiff),
    command("sdiffstore", -3, true, sets::sdiffstore),
    command("set", -3, true, strings::set),
    command("setex", 4, true, strings::setex),
    command("setnx", 3, true, strings::setnx),
    command("setrange", 4, true, strings::setrange),
    command("sinter", -2, false, sets::sinter),
    command("sinterstore", -3, true, sets::sinterstore),
    command("sismember", 3, false, sets::sismember),
    command("smembers", 2, false, sets::smembers),
    command("smismember", -3, false, sets::smismember),
    command("smove", 4, true, sets::smove),
    command("spop", -2, true, sets::spop),
    command("srandmember", -2, false, sets::srandmember),
    command("srem", -3, true, sets::srem),
    command("sscan", -3, false, sets::sscan),
    command("strlen", 2, false, strings::strlen),
    command("sunion", -2, false, sets::sunion),
    command("sunionstore", -3, true, sets::sunionstore),
    command("ttl", 2, false, expiry::ttl),
    command("type", 2, false, keys::type_),
    command("unlink", -2, true, keys::del),
    command("zadd", -4, true, zsets::zadd),
    command("zcard", 2, false, zsets::zcard),
    command("zcount", 4, false, zsets::zcount),
    command("zincrby", 4, true, zsets::zincrby),
    command("zmscore", -3, false, zsets::zmscore),
    command("zpopmax", -2, true, zsets::zpopmax),
    command("zpopmin", -2, true, zsets::zpopmin),
    command("zrange", -4, false, zsets::zrange),
    command("zrangebylex", -4, false, zsets::zrangebylex),
    command("zrangebyscore", -4, false, zsets::zrangebyscore),
    command("zrank", -3, false, zsets::zrank),
    command("zrem", -3, true, zsets::zrem),
    command("zremrangebyrank", 4, true, zsets::zremrangebyrank),
    command("zremrangebyscore", 4, true, zsets::zremrangebyscore),
    command("zrevrange", -4, false, zsets::zrevrange),
    command("zrevrangebyscore", -4, false, zsets::zrevrangebyscore),
    command("zrevrank", -3, false, zsets::zrevrank),
    command("zscan", -3, false, zsets::zscan),
    command("zscore", 3, false, zsets::zscore),
];

/// The server's own commands, sorted by name. Clients cannot send them: the connection refuses
/// them as unknown ([`is_internal`]). Their names start with `~`, as no Redis command's does.
static INTERNAL: &[CommandSpec] = &[
    command(watch::CHECK, -5, false, watch::check),
    command(reap::EXPIRED, 3, false, reap::expired),
    command(reap::REAP, -2, true, reap::reap),
    command(reap::SWEEP, 3, true, reap::sweep),
    command(watch::WATCH, -2, false, watch::watch),
];

/// Every data command, sorted by name.
pub fn all() -> &'static [CommandSpec] {
    COMMANDS
}

fn find(table: &'static [CommandSpec], name: &[u8]) -> Option<&'static CommandSpec> {
    // Every command of every group comes here, several times: integer comparisons only.
    let key = pack(name)?;
    table
        .binary_search_by(|c| c.key.cmp(&key))
        .ok()
        .map(|i| &table[i])
}

/// The longest command name (`zremrangebyscore`): names pack into a `u128`.
const NAME_MAX: usize = 16;

/// The data command named `name` (any case), as clients may send it.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    find(COMMANDS, name)
}

/// Whether `name` is one of the server's own commands, which clients may not send.
pub fn is_internal(name: &[u8]) -> bool {
    name.first() == Some(&b'~') && find(INTERNAL, name).is_some()
}

/// The command named `name`, data or internal: what the state machine runs.
pub fn spec(name: &[u8]) -> Option<&'static CommandSpec> {
    lookup(name).or_else(|| find(INTERNAL, name))
}

/// Runs one command against the keyspace: its reply, or Redis's error for a command that is
/// unknown or has the wrong number of arguments.
pub fn execute(keyspace: &mut Keyspace, args: &[&[u8]]) -> Result<Reply, StateError> {
    let Some(spec) = spec(args[0]) else {
        return Ok(unknown_command(args));
    };
    if !spec.arity_ok(args.len()) {
        return Ok(wrong_arity(spec.name));
    }
    (spec.run)(keyspace, args)
}

pub fn unknown_command(args: &[&[u8]]) -> Reply {
    let mut text = format!(
        "ERR unknown command '{}', with args beginning with: ",
        printable(args[0])
    );
    for arg in &args[1..] {
        text.push_str(&format!("'{}' ", printable(arg)));
    }
    Reply::error(text)
}

pub fn wrong_arity(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// An argument as error texts quote it: at most 128 bytes, without line breaks.
fn printable(arg: &[u8]) -> String {
    String::from_utf8_lossy(&arg[..arg.len().min(128)]).replace(['\r', '\n'], " ")
}

pub fn wrong_type() -> Reply {
    Reply::error("WRONGTYPE Operation against a key holding the wrong kind of value")
}

pub fn not_integer() -> Reply {
    Reply::error("ERR value is not an integer or out of range")
}

pub fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

/// A decimal integer as Redis accepts one (`string2ll`): an optional minus, no leading zeros,
/// no spaces or plus sign, within `i64`.
pub fn parse_i64(arg: &[u8]) -> Option<i64> {
    let digits = arg.strip_prefix(b"-").unwrap_or(arg);
    let canonical = match digits {
        [] => false,
        [b'0'] => arg.len() == 1, // "-0" is not an integer to Redis
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical || digits.len() > 19 {
        return None;
    }
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// A float as Redis accepts one: no leading space, not NaN (infinities parse).
pub fn parse_f64(arg: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(arg).ok()?;
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    (!value.is_nan()).then_some(value)
}

/// Whether `arg` is `word`, in any case.
pub fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_lookups_ignore_case() {
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name));
        assert!(INTERNAL.windows(2).all(|w| w[0].name < w[1].name));
        assert!(INTERNAL.iter().all(|c| c.name.starts_with('~')));
        let names = || COMMANDS.iter().chain(INTERNAL).map(|c| c.name.len());
        assert!(names().all(|n| n <= NAME_MAX));
        assert!(lookup(&[b'g'; 1000]).is_none());
        assert!(lookup(b"~watch").is_none() && is_internal(b"~WATCH"));
        assert!(!is_internal(b"get"));
        assert_eq!(lookup(b"GeT").unwrap().name, "get");
        assert!(lookup(b"nope").is_none());
        assert!(lookup(b"get\0").is_none(), "a zero byte is no padding");
        assert!(lookup(b"ge").is_none() && lookup(b"gets").is_none());
        assert!(
            COMMANDS.windows(2).all(|w| w[0].key < w[1].key),
            "keys sort as names"
        );
        for c in COMMANDS.iter().chain(INTERNAL) {
            assert!(std::ptr::eq(spec(c.name.as_bytes()).unwrap(), c));
        }
        assert!(lookup(b"set").unwrap().arity_ok(3));
        assert!(!lookup(b"get").unwrap().arity_ok(3));
    }

    #[test]
    fn integers_parse_as_redis_parses_them() {
        for (text, value) in [
            ("0", Some(0)),
            ("-7", Some(-7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("007", None),
            ("-0", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("", None),
            ("-", None),
            ("1.0", None),
        ] {
            assert_eq!(parse_i64(text.as_bytes()), value, "{text:?}");
        }
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"inf"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
    }
}
