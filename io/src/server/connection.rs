//! One client connection: parses requests as they arrive, answers connection-level commands
//! itself, and sends data commands to the core in groups, keeping the replies in request order.
//!
//! A pipeline's data commands that arrived together go out as one group (one round trip, one
//! entry for its writes). A connection has at most one group in flight, so its commands apply in
//! the order it sent them. A malformed frame gets Redis's protocol error and closes this
//! connection only.
//!
//! `WATCH` reads what the state machine knows of its keys (the index of each one's last write)
//! and remembers it; `EXEC` then opens its group with a check of those, which aborts the whole
//! group in the state machine if a watched key changed (`ziggy_redis::check_command`). With a
//! password set (`requirepass`), only `AUTH`, `HELLO … AUTH` and `QUIT` are served until the
//! connection authenticates.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use ziggy_redis::{encode_group, RedisStateMachine, Watched};
use ziggy_resp::{parse, parse_reply, shared_len, Limits, Protocol, Reply};

use super::core_loop::{CoreMsg, CoreSender, GroupResult};
use super::info;
use super::metrics::Metrics;

/// What the connection does after a command.
enum Next {
    Continue,
    Close,
}

pub struct Connection {
    id: u64,
    core: CoreSender,
    limits: Limits,
    protocol: Protocol,
    name: Option<Vec<u8>>,
    /// Commands queued by MULTI (None: not in a transaction).
    multi: Option<Vec<Vec<Vec<u8>>>>,
    /// A command refused while queueing: EXEC aborts.
    multi_failed: bool,
    /// What WATCH saw of each watched key, in the order watched.
    watched: Vec<Watched>,
    /// The password clients must give (`requirepass`); None: no password.
    requirepass: Option<Arc<str>>,
    authenticated: bool,
    /// Data commands parsed and not yet sent to the core.
    group: Vec<Vec<Vec<u8>>>,
    /// Their metrics' names and when each was parsed, for the latency metrics.
    timings: Vec<(&'static str, Instant)>,
    metrics: Arc<Metrics>,
    out: Vec<u8>,
}

impl Connection {
    pub fn new(
        id: u64,
        core: CoreSender,
        limits: Limits,
        requirepass: Option<Arc<str>>,
        metrics: Arc<Metrics>,
    ) -> Connection {
        Connection {
            timings: Vec::new(),
            metrics,
            authenticated: requirepass.is_none(),
            requirepass,
            watched: Vec::new(),
            id,
            core,
            limits,
            protocol: Protocol::Resp2,
            name: None,
            multi: None,
            multi_failed: false,
            group: Vec::new(),
            out: Vec::new(),
        }
    }

    pub async fn serve(mut self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(16 << 10);
        loop {
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
            let mut used = 0;
            let mut close = false;
            // One clock reading for the commands of one read: they arrived together.
            let arrived = Instant::now();
            loop {
                match parse(&buf[used..], &self.limits) {
                    Ok(Some(request)) => {
                        used += request.consumed;
                        if request.args.is_empty() {
                            continue;
                        }
                        if let Next::Close = self.request(request.args, arrived).await {
                            close = true;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        self.send_group().await;
                        Reply::error(format!("ERR {error}")).encode(self.protocol, &mut self.out);
                        close = true;
                        break;
                    }
                }
            }
            buf.drain(..used);
            self.send_group().await;
            stream.write_all(&self.out).await?;
            stream.flush().await?; // a no-op on a real socket; madsim sends on flush
            self.out.clear();
            if close {
                return Ok(());
            }
        }
    }

    /// Handles one request (read at `started`), and records its latency: at once for what the
    /// connection answers itself, once its group is answered for a data command.
    async fn request(&mut self, args: Vec<Vec<u8>>, started: Instant) -> Next {
        let name = self.metrics.key(&args[0]);
        let grouped = self.group.len();
        let next = self.dispatch(args).await;
        if self.group.len() > grouped {
            self.timings.push((name, started));
        } else {
            self.metrics
                .record_as(name, started.elapsed().as_nanos() as u64);
        }
        next
    }

    /// Connection commands at once (after the group before them), data commands into the group.
    async fn dispatch(&mut self, args: Vec<Vec<u8>>) -> Next {
        let mut upper = [0u8; NAME_MAX];
        let name = uppercase(&args[0], &mut upper);
        let in_multi = self.multi.is_some();
        if !self.authenticated && !matches!(name, b"AUTH" | b"HELLO" | b"QUIT") {
            self.answer(Reply::error("NOAUTH Authentication required."))
                .await;
            return Next::Continue;
        }
        match name {
            b"MULTI" | b"EXEC" | b"DISCARD" => return self.transaction(name, args).await,
            b"WATCH" if in_multi => {
                self.answer(Reply::error("ERR WATCH inside MULTI is not allowed"))
                    .await;
                return Next::Continue;
            }
            b"WATCH" => {
                let reply = self.watch(&args).await;
                self.answer(reply).await;
                return Next::Continue;
            }
            b"ZIGGY.BACKUP" => {
                let reply = self.backup(&args[1..]).await;
                self.answer(reply).await;
                return Next::Continue;
            }
            b"INFO" => {
                let reply = self.info(&args[1..]).await;
                self.answer(reply).await;
                return Next::Continue;
            }
            _ if in_multi => {
                self.queue_in_multi(args);
                return Next::Continue;
            }
            _ if ziggy_redis::is_internal(&args[0]) => {
                let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                self.answer(ziggy_redis::unknown_command(&args)).await;
                return Next::Continue;
            }
            _ => {}
        }
        if let Some(reply) = self.connection_command(name, &args) {
            self.send_group().await;
            let close = name == b"QUIT";
            reply.encode(self.protocol, &mut self.out);
            return if close { Next::Close } else { Next::Continue };
        }
        self.group.push(args);
        Next::Continue
    }

    /// Answers a command the connection handles itself, after the group before it.
    async fn answer(&mut self, reply: Reply) {
        self.send_group().await;
        reply.encode(self.protocol, &mut self.out);
    }

    /// `WATCH key…`: reads what the state machine knows of the keys not yet watched. A key
    /// watched twice keeps what the first WATCH saw, as in Redis.
    async fn watch(&mut self, args: &[Vec<u8>]) -> Reply {
        if args.len() < 2 {
            return Reply::error("ERR wrong number of arguments for 'watch' command");
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for key in &args[1..] {
            if !keys.contains(key) && !self.watched.iter().any(|w| w.key == *key) {
                keys.push(key.clone());
            }
        }
        if keys.is_empty() {
            return Reply::ok();
        }
        self.send_group().await;
        let replies = match self.execute(vec![ziggy_redis::watch_command(&keys)]).await {
            Ok(replies) => replies,
            Err(why) => return Reply::error(why),
        };
        match ziggy_redis::watched(&keys, &replies[0]) {
            Some(seen) => {
                self.watched.extend(seen);
                Reply::ok()
            }
            None if replies[0].is_error() => replies[0].clone(),
            None => Reply::error("ERR internal: a WATCH reply that does not decode"),
        }
    }

    /// Commands that concern the connection, not the data; None for a data command.
    fn connection_command(&mut self, name: &[u8], args: &[Vec<u8>]) -> Option<Reply> {
        let arity = |n: usize| args.len() == n;
        Some(match name {
            b"PING" if arity(1) => Reply::Status("PONG".into()),
            b"PING" if arity(2) => Reply::Bulk(args[1].clone()),
            b"ECHO" if arity(2) => Reply::Bulk(args[1].clone()),
            b"QUIT" => Reply::ok(),
            b"AUTH" => self.auth(args),
            b"UNWATCH" if arity(1) => {
                self.watched.clear();
                Reply::ok()
            }
            b"SELECT" if arity(2) => match args[1].as_slice() {
                b"0" => Reply::ok(),
                _ => Reply::error("ERR DB index is out of range"),
            },
            b"HELLO" => self.hello(args),
            b"CLIENT" if args.len() >= 2 => self.client(args),
            b"COMMAND" => command_info(args),
            b"CONFIG" if args.len() >= 2 => config(args),
            b"PING" | b"ECHO" | b"SELECT" | b"UNWATCH" => Reply::error(format!(
                "ERR wrong number of arguments for '{}' command",
                String::from_utf8_lossy(name).to_lowercase()
            )),
            _ => return None,
        })
    }

    /// `HELLO [protover [AUTH username password] [SETNAME name]]`, checked in Redis's order.
    fn hello(&mut self, args: &[Vec<u8>]) -> Reply {
        let protocol = match args.get(1).map(|v| v.as_slice()) {
            None => None,
            Some(b"2") => Some(Protocol::Resp2),
            Some(b"3") => Some(Protocol::Resp3),
            Some(v) if ziggy_redis::parse_i64(v).is_none() => {
                return Reply::error("ERR Protocol version is not an integer or out of range")
            }
            Some(_) => return Reply::error("NOPROTO unsupported protocol version"),
        };
        let (mut credentials, mut name) = (None, None);
        let mut at = 2;
        while at < args.len() {
            let more = args.len() - 1 - at;
            match args[at].to_ascii_uppercase().as_slice() {
                b"AUTH" if more >= 2 => {
                    credentials = Some((&args[at + 1], &args[at + 2]));
                    at += 3;
                }
                b"SETNAME" if more >= 1 => {
                    name = Some(&args[at + 1]);
                    at += 2;
                }
                _ => {
                    return Reply::error(format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(&args[at])
                    ))
                }
            }
        }
        if let Some((user, password)) = credentials {
            if !self.login(user, password) {
                return wrong_password();
            }
        }
        if !self.authenticated {
            return Reply::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise \
                 the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
                 client and select the RESP protocol version at the same time",
            );
        }
        if let Some(name) = name {
            if let Err(refused) = self.set_name(name) {
                return refused;
            }
        }
        if let Some(protocol) = protocol {
            self.protocol = protocol;
        }
        let proto = if self.protocol == Protocol::Resp3 {
            3
        } else {
            2
        };
        let field = |k: &str, v: Reply| (Reply::bulk(k), v);
        Reply::Map(vec![
            field("server", Reply::bulk("ziggydb")),
            field("version", Reply::bulk(env!("CARGO_PKG_VERSION"))),
            field("proto", Reply::Integer(proto)),
            field("id", Reply::Integer(self.id as i64)),
            field("mode", Reply::bulk("standalone")),
            field("role", Reply::bulk("master")),
            field("modules", Reply::Array(vec![])),
        ])
    }

    /// `AUTH [username] password`. The only user is `default`, as in Redis without ACLs.
    fn auth(&mut self, args: &[Vec<u8>]) -> Reply {
        let (user, password) = match args.len() {
            0 | 1 => return Reply::error("ERR wrong number of arguments for 'auth' command"),
            2 if self.requirepass.is_none() => {
                return Reply::error(
                    "ERR AUTH <password> called without any password configured for the \
                     default user. Are you sure your configuration is correct?",
                )
            }
            2 => (&b"default"[..], &args[1]),
            3 => (args[1].as_slice(), &args[2]),
            _ => return Reply::error("ERR syntax error"),
        };
        if self.login(user, password) {
            Reply::ok()
        } else {
            wrong_password()
        }
    }

    /// Authenticates as `user` if the password is right (any is, without `requirepass`); a
    /// failure leaves the connection as it was.
    fn login(&mut self, user: &[u8], password: &[u8]) -> bool {
        let right = user == b"default"
            && self
                .requirepass
                .as_deref()
                .is_none_or(|expected| same_secret(password, expected.as_bytes()));
        self.authenticated |= right;
        right
    }

    fn set_name(&mut self, name: &[u8]) -> Result<(), Reply> {
        if name.iter().any(|b| *b <= b' ' || *b > b'~') {
            return Err(Reply::error(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        self.name = (!name.is_empty()).then(|| name.to_vec());
        Ok(())
    }

    fn client(&mut self, args: &[Vec<u8>]) -> Reply {
        match args[1].to_ascii_uppercase().as_slice() {
            b"SETNAME" if args.len() == 3 => match self.set_name(&args[2]) {
                Ok(()) => Reply::ok(),
                Err(refused) => refused,
            },
            b"GETNAME" if args.len() == 2 => match &self.name {
                Some(name) => Reply::Bulk(name.clone()),
                None => Reply::Nil,
            },
            b"ID" if args.len() == 2 => Reply::Integer(self.id as i64),
            _ => Reply::error(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&args[1])
            )),
        }
    }

    fn queue_in_multi(&mut self, args: Vec<Vec<u8>>) {
        let queued = self.multi.as_mut().expect("in a transaction");
        if is_unwatch(&args) {
            queued.push(args);
            Reply::Status("QUEUED".into()).encode(self.protocol, &mut self.out);
            return;
        }
        match ziggy_redis::lookup(&args[0]) {
            Some(spec) if spec.arity_ok(args.len()) => {
                queued.push(args);
                Reply::Status("QUEUED".into()).encode(self.protocol, &mut self.out);
            }
            Some(spec) => {
                self.multi_failed = true;
                Reply::error(format!(
                    "ERR wrong number of arguments for '{}' command",
                    spec.name
                ))
                .encode(self.protocol, &mut self.out);
            }
            None => {
                self.multi_failed = true;
                Reply::error(format!(
                    "ERR unknown command '{}'",
                    String::from_utf8_lossy(&args[0])
                ))
                .encode(self.protocol, &mut self.out);
            }
        }
    }

    async fn transaction(&mut self, name: &[u8], args: Vec<Vec<u8>>) -> Next {
        self.send_group().await;
        if args.len() != 1 {
            Reply::error(format!(
                "ERR wrong number of arguments for '{}' command",
                String::from_utf8_lossy(name).to_lowercase()
            ))
            .encode(self.protocol, &mut self.out);
            return Next::Continue;
        }
        let reply = match (name, self.multi.take()) {
            (b"MULTI", Some(queued)) => {
                self.multi = Some(queued);
                Reply::error("ERR MULTI calls can not be nested")
            }
            (b"MULTI", None) => {
                self.multi = Some(Vec::new());
                self.multi_failed = false;
                Reply::ok()
            }
            (b"DISCARD", Some(_)) => {
                self.watched.clear();
                Reply::ok()
            }
            (b"DISCARD", None) => Reply::error("ERR DISCARD without MULTI"),
            (_, None) => Reply::error("ERR EXEC without MULTI"),
            (_, Some(_)) if self.multi_failed => {
                self.watched.clear();
                Reply::error("EXECABORT Transaction discarded because of previous errors.")
            }
            (_, Some(queued)) => self.exec(queued).await,
        };
        reply.encode(self.protocol, &mut self.out);
        Next::Continue
    }

    /// Runs a transaction as one group, opened by the check of the watched keys if any: the
    /// replies, or a null array if a watched key changed. Unwatches either way.
    async fn exec(&mut self, queued: Vec<Vec<Vec<u8>>>) -> Reply {
        let watched = std::mem::take(&mut self.watched);
        // A queued UNWATCH answers OK in its place; EXEC unwatches anyway.
        let unwatches: Vec<usize> = (0..queued.len())
            .filter(|&i| is_unwatch(&queued[i]))
            .collect();
        let mut group: Vec<_> = queued.into_iter().filter(|c| !is_unwatch(c)).collect();
        if !watched.is_empty() {
            group.insert(0, ziggy_redis::check_command(&watched));
        }
        let mut replies = if group.is_empty() {
            Vec::new()
        } else {
            match self.execute(group).await {
                Ok(replies) => replies,
                Err(why) => return Reply::error(why),
            }
        };
        if !watched.is_empty() {
            let check = replies.remove(0);
            if ziggy_redis::exec_aborted(&check) {
                return Reply::NilArray;
            }
            if check.is_error() {
                return check;
            }
        }
        for at in unwatches {
            replies.insert(at, Reply::ok());
        }
        Reply::Array(replies)
    }

    /// Sends the pending commands to the core, one group at a time, and appends their replies.
    /// Reads and writes go in separate groups: a write group's replies are kept for retries in
    /// a bounded slot, so write groups are kept short, and a write that answers with a value
    /// (`SET … GET`, `GETDEL`, `GETEX`) goes alone.
    async fn send_group(&mut self) {
        self.run_group().await;
        let now = Instant::now();
        for (name, started) in self.timings.drain(..) {
            let nanos = now.duration_since(started).as_nanos() as u64;
            self.metrics.record_as(name, nanos);
        }
    }

    async fn run_group(&mut self) {
        let mut commands = std::mem::take(&mut self.group);
        while !commands.is_empty() {
            let (end, class) = run_end(&commands);
            let rest = commands.split_off(end);
            let group = std::mem::replace(&mut commands, rest);
            let relayed = match self.submit(&group, class == Class::Read).await {
                Ok(bytes) => self.relay(&group, &bytes),
                Err(why) => Err(why),
            };
            if let Err(why) = relayed {
                for _ in 0..group.len() {
                    Reply::error(why.clone()).encode(self.protocol, &mut self.out);
                }
            }
        }
    }

    /// Appends a group's replies (RESP3, from the core) in the connection's protocol: as they
    /// are when both protocols write them alike, else decoded and encoded again. Nothing is
    /// appended if they do not match the commands.
    fn relay(&mut self, group: &[Vec<Vec<u8>>], mut bytes: &[u8]) -> Result<(), String> {
        let start = self.out.len();
        for args in group {
            let lookup = is_lookup(&args[0]);
            // A lookup's hit is a bulk string; anything else is decoded to be counted.
            let shared = shared_len(bytes).filter(|_| !lookup || bytes[0] == b'$');
            let used = match shared {
                Some(used) => {
                    self.out.extend_from_slice(&bytes[..used]);
                    used
                }
                None => match parse_reply(bytes) {
                    Ok(Some((reply, used))) => {
                        let reply = match (self.protocol, reply) {
                            (Protocol::Resp2, reply) if pairs_flatten_in_resp2(&args[0]) => {
                                flatten(reply)
                            }
                            // RESP3 has one null; RESP2 tells a missing array from a missing
                            // string, and a pop with a count misses an array.
                            (Protocol::Resp2, Reply::Nil) if is_counted_pop(args) => {
                                Reply::NilArray
                            }
                            (_, reply) => reply,
                        };
                        reply.encode(self.protocol, &mut self.out);
                        used
                    }
                    _ => {
                        self.out.truncate(start);
                        return Err("ERR internal: a reply that does not decode".into());
                    }
                },
            };
            if lookup {
                self.count_lookups(&bytes[..used]);
            }
            bytes = &bytes[used..];
        }
        if !bytes.is_empty() {
            self.out.truncate(start);
            return Err("ERR internal: replies do not match the commands".into());
        }
        Ok(())
    }

    /// Counts a lookup's hits and misses (`MGET`: one per key) from its RESP3 reply.
    fn count_lookups(&self, reply: &[u8]) {
        let (hits, misses) = match reply[0] {
            b'$' => (1, 0),
            b'_' => (0, 1),
            b'-' => (0, 0),
            _ => match parse_reply(reply) {
                Ok(Some((Reply::Array(items), _))) => {
                    let misses = items.iter().filter(|r| matches!(r, Reply::Nil)).count();
                    (items.len() - misses, misses)
                }
                _ => (1, 0),
            },
        };
        self.metrics
            .keyspace_hits
            .fetch_add(hits as u64, Ordering::Relaxed);
        self.metrics
            .keyspace_misses
            .fetch_add(misses as u64, Ordering::Relaxed);
    }

    /// `ZIGGY.BACKUP ...`: a backup's question, answered by the core from the replica.
    async fn backup(&mut self, args: &[Vec<u8>]) -> Reply {
        self.send_group().await;
        let ask = match super::backup::BackupAsk::parse(args) {
            Ok(ask) => ask,
            Err(reply) => return reply,
        };
        let (tx, rx) = oneshot::channel();
        if self.core.send(CoreMsg::Backup(ask, tx)).is_err() {
            return Reply::error("ERR the server is shutting down");
        }
        rx.await
            .unwrap_or_else(|_| Reply::error("ERR the server is shutting down"))
    }

    /// `INFO [section…]`: the replica's status from the core, the key count through a read.
    async fn info(&mut self, args: &[Vec<u8>]) -> Reply {
        self.send_group().await;
        let sections = info::wanted(args);
        let Some(status) = super::http::node_status(&self.core).await else {
            return Reply::error("ERR the server is shutting down");
        };
        let keys = if sections.contains(&"keyspace") {
            match self.execute(vec![vec![b"DBSIZE".to_vec()]]).await {
                Ok(replies) => match replies.first() {
                    Some(Reply::Integer(n)) => Some(*n as u64),
                    _ => None,
                },
                Err(_) => None,
            }
        } else {
            None
        };
        let facts = info::Facts {
            status: &status,
            metrics: &self.metrics,
            keys,
        };
        Reply::Verbatim(info::render(&sections, &facts).into_bytes())
    }

    /// Runs `commands` as one group in the core: a reply per command.
    async fn execute(&mut self, commands: Vec<Vec<Vec<u8>>>) -> Result<Vec<Reply>, String> {
        let count = commands.len();
        let bytes = self
            .submit(&commands, RedisStateMachine::reads_only(&commands))
            .await?;
        let mut replies = Vec::with_capacity(count);
        let mut at = 0;
        while at < bytes.len() {
            match parse_reply(&bytes[at..]) {
                Ok(Some((reply, used))) => {
                    replies.push(reply);
                    at += used;
                }
                _ => return Err("ERR internal: a reply that does not decode".into()),
            }
        }
        if replies.len() != count {
            return Err("ERR internal: replies do not match the commands".into());
        }
        Ok(replies)
    }

    /// Sends `commands` to the core as one group (`reads`: of reads alone): their replies, in
    /// RESP3.
    async fn submit(&self, commands: &[Vec<Vec<u8>>], reads: bool) -> GroupResult {
        let (tx, rx) = oneshot::channel::<GroupResult>();
        let mut body = Vec::with_capacity(group_size(commands));
        encode_group(commands, &mut body);
        let group = CoreMsg::Group {
            body,
            reads,
            reply: tx,
        };
        let closed = || "ERR the server is shutting down".to_string();
        self.core.send(group).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

/// The bytes `commands` take once encoded as a group.
fn group_size(commands: &[Vec<Vec<u8>>]) -> usize {
    let args = |c: &Vec<Vec<u8>>| c.iter().map(|a| 4 + a.len()).sum::<usize>();
    4 + commands.iter().map(|c| 4 + args(c)).sum::<usize>()
}

/// The longest name of a command the connection answers itself.
const NAME_MAX: usize = 12; // ZIGGY.BACKUP

/// `name` in uppercase, in `buf`: empty when no command the connection answers is that long
/// (a copy on the heap for every command would cost an allocation each).
fn uppercase<'a>(name: &[u8], buf: &'a mut [u8; NAME_MAX]) -> &'a [u8] {
    let Some(upper) = buf.get_mut(..name.len()) else {
        return &[];
    };
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    upper
}

/// Whether a command answers `[member, score]` pairs nested in RESP3 and flat in RESP2, as
/// Redis 7 does (`ZRANGE … WITHSCORES`, `ZPOPMIN key count`).
fn pairs_flatten_in_resp2(name: &[u8]) -> bool {
    const PAIRED: [&[u8]; 6] = [
        b"ZRANGE",
        b"ZREVRANGE",
        b"ZRANGEBYSCORE",
        b"ZREVRANGEBYSCORE",
        b"ZPOPMIN",
        b"ZPOPMAX",
    ];
    PAIRED.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// `LPOP key count` or `RPOP key count`: Redis's RESP2 answers an absent key with a null array.
fn is_counted_pop(args: &[Vec<u8>]) -> bool {
    args.len() == 3
        && (args[0].eq_ignore_ascii_case(b"LPOP") || args[0].eq_ignore_ascii_case(b"RPOP"))
}

/// An array of two-element arrays, flattened; anything else as it is.
fn flatten(reply: Reply) -> Reply {
    match reply {
        Reply::Array(items)
            if items
                .iter()
                .all(|i| matches!(i, Reply::Array(p) if p.len() == 2)) =>
        {
            Reply::Array(
                items
                    .into_iter()
                    .flat_map(|i| match i {
                        Reply::Array(pair) => pair,
                        _ => unreachable!("checked"),
                    })
                    .collect(),
            )
        }
        reply => reply,
    }
}

/// Whether a command looks keys up for `INFO`'s keyspace hits and misses.
fn is_lookup(name: &[u8]) -> bool {
    [&b"GET"[..], b"GETEX", b"GETDEL", b"MGET"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

fn is_unwatch(args: &[Vec<u8>]) -> bool {
    args.len() == 1 && args[0].eq_ignore_ascii_case(b"UNWATCH")
}

fn wrong_password() -> Reply {
    Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
}

/// Whether `given` is `expected`, in a time that depends on `expected`'s length alone: no early
/// exit tells a guesser how much of the password was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut differ = given.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        differ |= (given.get(i).copied().unwrap_or(0) ^ byte) as usize;
    }
    std::hint::black_box(differ) == 0
}

/// The connection-level commands, with their arities, for `COMMAND`.
const CONNECTION_COMMANDS: &[(&str, i64)] = &[
    ("auth", -2),
    ("client", -2),
    ("command", -1),
    ("config", -2),
    ("discard", 1),
    ("echo", 2),
    ("exec", 1),
    ("hello", -1),
    ("info", -1),
    ("multi", 1),
    ("ping", -1),
    ("quit", -1),
    ("select", 2),
    ("unwatch", 1),
    ("watch", -2),
];

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`, `COMMAND DOCS` (none yet: an empty map).
fn command_info(args: &[Vec<u8>]) -> Reply {
    let describe = |name: &str, arity: i64, write: bool| {
        let flag = if write { "write" } else { "readonly" };
        Reply::Array(vec![
            Reply::bulk(name),
            Reply::Integer(arity),
            Reply::Set(vec![Reply::Status(flag.into())]),
            Reply::Integer(1),
            Reply::Integer(1),
            Reply::Integer(1),
        ])
    };
    let every = || {
        ziggy_redis::commands()
            .iter()
            .map(|c| (c.name, c.arity as i64, c.write))
            .chain(CONNECTION_COMMANDS.iter().map(|&(n, a)| (n, a, false)))
    };
    match args.get(1).map(|a| a.to_ascii_uppercase()) {
        None => Reply::Array(every().map(|(n, a, w)| describe(n, a, w)).collect()),
        Some(sub) if sub == b"COUNT" => Reply::Integer(every().count() as i64),
        Some(sub) if sub == b"DOCS" => Reply::Map(vec![]),
        Some(sub) if sub == b"INFO" => Reply::Array(
            args[2..]
                .iter()
                .map(|name| {
                    let name = String::from_utf8_lossy(name).to_lowercase();
                    every()
                        .find(|(n, _, _)| *n == name)
                        .map_or(Reply::Nil, |(n, a, w)| describe(n, a, w))
                })
                .collect(),
        ),
        Some(sub) => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&sub)
        )),
    }
}

/// `CONFIG GET` answers what tools ask (`redis-benchmark` asks for `save` and `appendonly`):
/// ZiggyDB is always durable, with no snapshots to configure.
fn config(args: &[Vec<u8>]) -> Reply {
    match args[1].to_ascii_uppercase().as_slice() {
        b"GET" if args.len() >= 3 => {
            let mut pairs = Vec::new();
            for name in &args[2..] {
                let value = match name.to_ascii_lowercase().as_slice() {
                    b"save" => "",
                    b"appendonly" => "yes",
                    b"appendfsync" => "always",
                    b"databases" => "1",
                    _ => continue,
                };
                pairs.push((Reply::Bulk(name.clone()), Reply::bulk(value)));
            }
            Reply::Map(pairs)
        }
        b"RESETSTAT" if args.len() == 2 => Reply::ok(),
        b"SET" => Reply::error("ERR CONFIG SET is not supported: ZiggyDB is configured at start"),
        _ => Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

/// The most commands in one write group: their replies must fit the session's reply slot.
const WRITE_GROUP_MAX: usize = 64;

/// The most argument bytes in a write group of several commands (one command may be larger).
const WRITE_GROUP_BYTES: usize = 16 << 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Read,
    Write,
    /// A write whose reply is a value: in a group of its own.
    Alone,
}

fn class(args: &[Vec<u8>]) -> Class {
    let Some(spec) = ziggy_redis::lookup(&args[0]) else {
        return Class::Read; // answered with an error, from a read group
    };
    let returns_value = matches!(spec.name, "getdel" | "getex")
        || (spec.name == "set" && args[3..].iter().any(|a| a.eq_ignore_ascii_case(b"GET")));
    match (spec.write, returns_value) {
        (false, _) => Class::Read,
        (true, false) => Class::Write,
        (true, true) => Class::Alone,
    }
}

/// Where the first group of `commands` ends: a run of reads, a run of writes (at most
/// `WRITE_GROUP_MAX` of them and `WRITE_GROUP_BYTES` of arguments, so that the group fits a WAL
/// entry beside others), or one write that answers with a value. Returns the end and the
/// group's class.
fn run_end(commands: &[Vec<Vec<u8>>]) -> (usize, Class) {
    let first = class(&commands[0]);
    if first == Class::Alone {
        return (1, first);
    }
    let size = |command: &Vec<Vec<u8>>| command.iter().map(|a| a.len() + 8).sum::<usize>();
    let mut bytes = size(&commands[0]);
    for (i, command) in commands.iter().enumerate().skip(1) {
        if class(command) != first {
            return (i, first);
        }
        if first == Class::Write {
            bytes += size(command);
            if i == WRITE_GROUP_MAX || bytes > WRITE_GROUP_BYTES {
                return (i, first);
            }
        }
    }
    (commands.len(), first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&[u8]]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.to_vec()).collect()
    }

    /// The group sizes `commands` is sent in.
    fn groups(mut commands: &[Vec<Vec<u8>>]) -> Vec<usize> {
        let mut sizes = Vec::new();
        while !commands.is_empty() {
            let (end, _) = run_end(commands);
            sizes.push(end);
            commands = &commands[end..];
        }
        sizes
    }

    #[test]
    fn pipelines_split_into_groups_that_fit() {
        let set = command(&[b"SET", b"k", b"v"]);
        let get = command(&[b"GET", b"k"]);
        let large = command(&[b"SET", b"k", &[b'x'; 50_000]]);
        let set_get = command(&[b"set", b"k", b"v", b"get"]);
        assert_eq!(groups(&vec![set.clone(); 100]), [64, 36]);
        assert_eq!(groups(&vec![get.clone(); 100]), [100]);
        assert_eq!(
            groups(&vec![large.clone(); 3]),
            [1, 1, 1],
            "each fits an entry alone"
        );
        let mixed = [set.clone(), set.clone(), get.clone(), set_get, set, get];
        assert_eq!(groups(&mixed), [2, 1, 1, 1, 1]);
        assert_eq!(
            groups(&[command(&[b"NOSUCH"]), command(&[b"GETDEL", b"k"])]),
            [1, 1]
        );
    }

    #[test]
    fn passwords_compare_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(same_secret(b"", b""));
        for wrong in [&b""[..], b"s3cre", b"s3crett", b"S3cret", b"s3cret\0"] {
            assert!(!same_secret(wrong, b"s3cret"), "{wrong:?}");
        }
        assert!(!same_secret(b"x", b""));
    }
}
