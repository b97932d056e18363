//! `ziggy export` and `ziggy import`: every key of a live node with its type, value and
//! expiry as JSON lines, and back. Both speak the Redis protocol to the node, so they work
//! against any replica of a running cluster (and against Redis itself).
//!
//! One line per key, in key order, members in the order the node lists them (so two exports of
//! equal keyspaces are equal files):
//!
//! ```text
//! {"key":"user:1","type":"hash","value":[["name","ada"],["age","36"]],"expires_at_ms":1767225600000}
//! ```
//!
//! `value` is a string (`string`), `[[field, value], ...]` (`hash`), `[member, ...]` (`set`,
//! `list`), `[[member, score], ...]` (`zset`, scores as numbers or `"inf"`/`"-inf"`) or the
//! document itself (`json`). Bytes that are not UTF-8 are written `{"hex":"..."}`. An import
//! deletes each key and writes it anew, so running it twice leaves the same keyspace.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use serde_json::{json, Value};
use ziggy_resp::{parse_reply, Reply};

/// Why an export or an import stopped.
#[derive(Debug)]
pub enum TransferError {
    Io(std::io::Error),
    /// The node answered an error (or something this tool does not understand).
    Node(String),
    /// A line of the input is not an exported key.
    Input {
        line: usize,
        why: String,
    },
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::Io(e) => write!(f, "{e}"),
            TransferError::Node(why) => write!(f, "the node answered: {why}"),
            TransferError::Input { line, why } => write!(f, "line {line}: {why}"),
        }
    }
}

impl std::error::Error for TransferError {}

impl From<std::io::Error> for TransferError {
    fn from(e: std::io::Error) -> Self {
        TransferError::Io(e)
    }
}

type Result<T> = std::result::Result<T, TransferError>;

/// A blocking connection to a node: commands out, replies in, pipelined.
pub struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    pub fn connect(addr: &str) -> Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Sends `commands` at once, then reads one reply each.
    pub fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>> {
        let mut out = Vec::new();
        for command in commands {
            out.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
            for arg in command {
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
        }
        self.stream.write_all(&out)?;
        let mut replies = Vec::with_capacity(commands.len());
        while replies.len() < commands.len() {
            match parse_reply(&self.buffer) {
                Ok(Some((reply, used))) => {
                    self.buffer.drain(..used);
                    replies.push(reply);
                }
                Ok(None) => {
                    let mut chunk = [0u8; 64 * 1024];
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(TransferError::Node("the connection closed".into()));
                    }
                    self.buffer.extend_from_slice(&chunk[..n]);
                }
                Err(e) => return Err(TransferError::Node(format!("an unreadable reply: {e:?}"))),
            }
        }
        Ok(replies)
    }

    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply> {
        let command = args.iter().map(|a| a.to_vec()).collect();
        let reply = self.pipeline(&[command])?.remove(0);
        match reply {
            Reply::Error(why) => Err(TransferError::Node(why)),
            reply => Ok(reply),
        }
    }
}

fn bytes_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_string()),
        Err(_) => json!({ "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
    }
}

fn json_bytes(value: &Value) -> std::result::Result<Vec<u8>, String> {
    match value {
        Value::String(text) => Ok(text.as_bytes().to_vec()),
        Value::Object(map) => {
            let hex = map
                .get("hex")
                .and_then(Value::as_str)
                .ok_or("bytes are a string or {\"hex\":...}")?;
            (0..hex.len())
                .step_by(2)
                .map(|i| {
                    u8::from_str_radix(hex.get(i..i + 2).ok_or("odd hex")?, 16)
                        .map_err(|e| e.to_string())
                })
                .collect()
        }
        _ => Err("bytes are a string or {\"hex\":...}".into()),
    }
}

fn bulks(reply: Reply) -> Result<Vec<Vec<u8>>> {
    let items = match reply {
        Reply::Array(items) | Reply::Set(items) => items,
        other => {
            return Err(TransferError::Node(format!(
                "expected an array, got {other:?}"
            )))
        }
    };
    items
        .into_iter()
        .map(|item| match item {
            Reply::Bulk(bytes) => Ok(bytes),
            other => Err(TransferError::Node(format!(
                "expected a bulk string, got {other:?}"
            ))),
        })
        .collect()
}

fn pairs(items: Vec<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    out
}

fn score_json(text: &[u8]) -> Value {
    let text = String::from_utf8_lossy(text);
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => {
            serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
        }
        _ => Value::String(text.into_owned()),
    }
}

/// One key's line, or None if it vanished between the scan and the read.
fn export_key(client: &mut Client, key: &[u8]) -> Result<Option<Value>> {
    let kind = match client.command(&[b"TYPE", key])? {
        Reply::Status(kind) => kind,
        other => return Err(TransferError::Node(format!("TYPE answered {other:?}"))),
    };
    let value = match kind.as_str() {
        "none" => return Ok(None),
        "string" => match client.command(&[b"GET", key])? {
            Reply::Bulk(v) => bytes_json(&v),
            _ => return Ok(None),
        },
        "hash" => {
            let all = bulks(client.command(&[b"HGETALL", key])?)?;
            Value::Array(
                pairs(all)
                    .iter()
                    .map(|(f, v)| json!([bytes_json(f), bytes_json(v)]))
                    .collect(),
            )
        }
        "set" => Value::Array(
            bulks(client.command(&[b"SMEMBERS", key])?)?
                .iter()
                .map(|m| bytes_json(m))
                .collect(),
        ),
        "list" => Value::Array(
            bulks(client.command(&[b"LRANGE", key, b"0", b"-1"])?)?
                .iter()
                .map(|m| bytes_json(m))
                .collect(),
        ),
        "zset" => {
            let all = bulks(client.command(&[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"])?)?;
            Value::Array(
                pairs(all)
                    .iter()
                    .map(|(m, s)| json!([bytes_json(m), score_json(s)]))
                    .collect(),
            )
        }
        "ReJSON-RL" => match client.command(&[b"JSON.GET", key])? {
            Reply::Bulk(text) => serde_json::from_slice(&text)
                .map_err(|e| TransferError::Node(format!("JSON.GET answered no JSON: {e}")))?,
            _ => return Ok(None),
        },
        other => {
            return Err(TransferError::Node(format!(
                "a key of type {other}: not exported"
            )))
        }
    };
    let mut line = json!({ "key": bytes_json(key), "type": kind, "value": value });
    if let Reply::Integer(at) = client.command(&[b"PEXPIRETIME", key])? {
        if at > 0 {
            line["expires_at_ms"] = json!(at);
        }
    }
    Ok(Some(line))
}

/// Writes every key of the node at `addr` to `out`; `progress` hears the count now and then.
/// The number of keys written.
pub fn export(addr: &str, out: &mut impl Write, mut progress: impl FnMut(u64)) -> Result<u64> {
    let mut client = Client::connect(addr)?;
    let (mut cursor, mut written) = (b"0".to_vec(), 0u64);
    let mut last = Instant::now();
    loop {
        let page = match client.command(&[b"SCAN", &cursor, b"COUNT", b"1000"])? {
            Reply::Array(page) if page.len() == 2 => page,
            other => return Err(TransferError::Node(format!("SCAN answered {other:?}"))),
        };
        let mut page = page.into_iter();
        let Some(Reply::Bulk(next)) = page.next() else {
            return Err(TransferError::Node("SCAN's cursor is not a string".into()));
        };
        let mut keys = bulks(page.next().unwrap())?;
        keys.sort(); // ZiggyDB answers in key order already; Redis does not
        for key in keys {
            if let Some(line) = export_key(&mut client, &key)? {
                serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                written += 1;
            }
        }
        if last.elapsed().as_secs() >= 1 {
            progress(written);
            last = Instant::now();
        }
        if next == b"0" {
            out.flush()?;
            return Ok(written);
        }
        cursor = next;
    }
}

/// The commands that recreate one exported key: DEL, then its members in commands of at most
/// `CHUNK` members, then its expiry.
fn import_commands(line: &Value) -> std::result::Result<Vec<Vec<Vec<u8>>>, String> {
    const CHUNK: usize = 256;
    let key = json_bytes(line.get("key").ok_or("no key")?)?;
    let kind = line.get("type").and_then(Value::as_str).ok_or("no type")?;
    let value = line.get("value").ok_or("no value")?;
    let items = || {
        value
            .as_array()
            .ok_or_else(|| format!("a {kind}'s value is an array"))
    };
    let mut commands = vec![vec![b"DEL".to_vec(), key.clone()]];
    let mut chunked = |name: &str, args: Vec<Vec<Vec<u8>>>| {
        for chunk in args.chunks(CHUNK) {
            let mut command = vec![name.as_bytes().to_vec(), key.clone()];
            command.extend(chunk.iter().flatten().cloned());
            commands.push(command);
        }
    };
    match kind {
        "string" => chunked("SET", vec![vec![json_bytes(value)?]]),
        "hash" => {
            let fields = items()?
                .iter()
                .map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([f, v]) => Ok(vec![json_bytes(f)?, json_bytes(v)?]),
                    _ => Err("a hash's items are [field, value]".to_string()),
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            chunked("HSET", fields);
        }
        "set" | "list" => {
            let members = items()?
                .iter()
                .map(|m| json_bytes(m).map(|b| vec![b]))
                .collect::<std::result::Result<Vec<_>, String>>()?;
            chunked(if kind == "set" { "SADD" } else { "RPUSH" }, members);
        }
        "zset" => {
            let members = items()?
                .iter()
                .map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([m, s]) => {
                        let score = match s {
                            Value::Number(n) => n.to_string(),
                            Value::String(t) => t.clone(),
                            _ => return Err("a score is a number".to_string()),
                        };
                        Ok(vec![score.into_bytes(), json_bytes(m)?])
                    }
                    _ => Err("a sorted set's items are [member, score]".to_string()),
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            chunked("ZADD", members);
        }
        "ReJSON-RL" => {
            let text = serde_json::to_vec(value).map_err(|e| e.to_string())?;
            chunked("JSON.SET", vec![vec![b"$".to_vec(), text]]);
        }
        other => return Err(format!("unknown type {other}")),
    }
    if let Some(at) = line.get("expires_at_ms") {
        let at = at.as_u64().ok_or("expires_at_ms is a number")?;
        commands.push(vec![
            b"PEXPIREAT".to_vec(),
            key,
            at.to_string().into_bytes(),
        ]);
    }
    Ok(commands)
}

/// Reads exported lines from `input` into the node at `addr`, in pipelined batches; the
/// number of keys written.
pub fn import(addr: &str, input: impl Read, mut progress: impl FnMut(u64)) -> Result<u64> {
    const BATCH: usize = 512; // commands a pipeline sends before reading their replies
    let mut client = Client::connect(addr)?;
    let mut batch = Vec::new();
    let (mut keys, mut last) = (0u64, Instant::now());
    let flush = |client: &mut Client, batch: &mut Vec<Vec<Vec<u8>>>| -> Result<()> {
        for reply in client.pipeline(batch)? {
            if let Reply::Error(why) = reply {
                return Err(TransferError::Node(why));
            }
        }
        batch.clear();
        Ok(())
    };
    for (n, line) in BufReader::new(input).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let input_error = |why: String| TransferError::Input { line: n + 1, why };
        let parsed: Value = serde_json::from_str(&line).map_err(|e| input_error(e.to_string()))?;
        batch.extend(import_commands(&parsed).map_err(input_error)?);
        keys += 1;
        if batch.len() >= BATCH {
            flush(&mut client, &mut batch)?;
        }
        if last.elapsed().as_secs() >= 1 {
            progress(keys);
            last = Instant::now();
        }
    }
    flush(&mut client, &mut batch)?;
    Ok(keys)
}
