//! Encoding replies in RESP2 or RESP3 (chosen per connection by `HELLO`).
//!
//! A reply is built once as a [`Reply`] and encoded for the connection's protocol: RESP3's
//! richer types fall back to their RESP2 forms (a map to a flat array, a double to a bulk
//! string, a boolean to an integer, null to a null bulk string or null array).

/// The protocol a connection speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`: a short status without CR or LF.
    Status(String),
    /// `-ERR ...`: the text starts with its error word (`ERR`, `WRONGTYPE`, ...).
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    /// A missing value: RESP2's null bulk string.
    Nil,
    /// A missing array (`EXEC` after a `WATCH` abort): RESP2's null array.
    NilArray,
    Array(Vec<Reply>),
    Double(f64),
    Boolean(bool),
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    /// Text with a three-letter format (`txt`), as `INFO` returns in RESP3.
    Verbatim(Vec<u8>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Status("OK".into())
    }

    /// An error reply; `text` starts with its error word.
    pub fn error(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }

    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(bytes.into())
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the encoding of this reply in `protocol` to `out`.
    pub fn encode(&self, protocol: Protocol, out: &mut Vec<u8>) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Reply::Status(text) => line(out, b'+', text.as_bytes()),
            Reply::Error(text) => line(out, b'-', text.as_bytes()),
            Reply::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(bytes) => bulk(out, b'$', bytes),
            Reply::Nil if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::NilArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NilArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => sequence(out, b'*', items, protocol),
            Reply::Set(items) if resp3 => sequence(out, b'~', items, protocol),
            Reply::Set(items) => sequence(out, b'*', items, protocol),
            Reply::Double(x) if resp3 => line(out, b',', format_double(*x).as_bytes()),
            Reply::Double(x) => bulk(out, b'$', format_double(*x).as_bytes()),
            Reply::Boolean(b) if resp3 => line(out, b'#', if *b { b"t" } else { b"f" }),
            Reply::Boolean(b) => line(out, b':', if *b { b"1" } else { b"0" }),
            Reply::Map(pairs) => {
                let (tag, len) = if resp3 {
                    (b'%', pairs.len())
                } else {
                    (b'*', pairs.len() * 2)
                };
                line(out, tag, len.to_string().as_bytes());
                for (key, value) in pairs {
                    key.encode(protocol, out);
                    value.encode(protocol, out);
                }
            }
            Reply::Verbatim(text) if resp3 => {
                let mut body = b"txt:".to_vec();
                body.extend_from_slice(text);
                bulk(out, b'=', &body);
            }
            Reply::Verbatim(text) => bulk(out, b'$', text),
        }
    }
}

fn line(out: &mut Vec<u8>, tag: u8, text: &[u8]) {
    debug_assert!(!text.contains(&b'\r') && !text.contains(&b'\n'));
    out.push(tag);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    line(out, tag, bytes.len().to_string().as_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn sequence(out: &mut Vec<u8>, tag: u8, items: &[Reply], protocol: Protocol) {
    line(out, tag, items.len().to_string().as_bytes());
    for item in items {
        item.encode(protocol, out);
    }
}

/// A double as Redis prints one: the shortest text that reads back to the same value
/// (`1.5`, `10`, `3.0000000000000004`), and `inf`, `-inf`, `nan`.
pub fn format_double(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else if x == x.trunc() && x.abs() < 1e17 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply, protocol: Protocol) -> String {
        let mut out = Vec::new();
        reply.encode(protocol, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn scalars() {
        let both = |r: Reply, text: &str| {
            assert_eq!(encoded(&r, Protocol::Resp2), text);
            assert_eq!(encoded(&r, Protocol::Resp3), text);
        };
        both(Reply::ok(), "+OK\r\n");
        both(Reply::error("ERR unknown"), "-ERR unknown\r\n");
        both(Reply::Integer(-7), ":-7\r\n");
        both(Reply::bulk("a\r\nb"), "$4\r\na\r\nb\r\n");
        both(Reply::bulk(""), "$0\r\n\r\n");
    }

    #[test]
    fn resp3_types_fall_back_in_resp2() {
        let cases = [
            (Reply::Nil, "$-1\r\n", "_\r\n"),
            (Reply::NilArray, "*-1\r\n", "_\r\n"),
            (Reply::Double(1.5), "$3\r\n1.5\r\n", ",1.5\r\n"),
            (Reply::Double(f64::INFINITY), "$3\r\ninf\r\n", ",inf\r\n"),
            (Reply::Boolean(true), ":1\r\n", "#t\r\n"),
            (
                Reply::Map(vec![(Reply::bulk("k"), Reply::Integer(1))]),
                "*2\r\n$1\r\nk\r\n:1\r\n",
                "%1\r\n$1\r\nk\r\n:1\r\n",
            ),
            (
                Reply::Set(vec![Reply::bulk("a")]),
                "*1\r\n$1\r\na\r\n",
                "~1\r\n$1\r\na\r\n",
            ),
            (
                Reply::Verbatim(b"x".to_vec()),
                "$1\r\nx\r\n",
                "=5\r\ntxt:x\r\n",
            ),
        ];
        for (reply, resp2, resp3) in cases {
            assert_eq!(encoded(&reply, Protocol::Resp2), resp2, "{reply:?}");
            assert_eq!(encoded(&reply, Protocol::Resp3), resp3, "{reply:?}");
        }
    }

    #[test]
    fn doubles_print_as_redis_prints_them() {
        assert_eq!(format_double(10.0), "10");
        assert_eq!(format_double(-0.5), "-0.5");
        assert_eq!(format_double(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_double(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_double(1e20), "100000000000000000000");
    }
}

/// Why bytes are not a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyError {
    UnknownType(u8),
    BadLength,
    BadNumber,
    /// Aggregates nested deeper than [`NESTING_MAX`].
    TooDeep,
    MissingCrlf,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::UnknownType(t) => {
                write!(
                    f,
                    "unknown reply type '{}'",
                    char::from(*t).escape_default()
                )
            }
            ReplyError::BadLength => f.write_str("bad length in a reply"),
            ReplyError::BadNumber => f.write_str("bad number in a reply"),
            ReplyError::TooDeep => write!(f, "reply nested deeper than {NESTING_MAX}"),
            ReplyError::MissingCrlf => f.write_str("expected CRLF after a bulk reply"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// The deepest nesting of aggregates a reply may have.
pub const NESTING_MAX: usize = 64;

/// Parses the reply at the start of `buf` (RESP2 or RESP3): the reply and the bytes it took, or
/// `Ok(None)` when more bytes are needed. For clients, tests and the replies that travel
/// between replicas; pushes (`>`) are read as arrays.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut at = 0;
    Ok(parse_at(buf, &mut at, 0)?.map(|reply| (reply, at)))
}

/// The length of the complete reply at the start of `buf` when RESP2 and RESP3 write it alike
/// (statuses, errors, integers, bulk strings, and arrays of these), so that a server can relay
/// it as it is instead of decoding and encoding it again; None otherwise.
pub fn shared_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut left = 1usize; // replies still to read: arrays add their items
    while left > 0 {
        let tag = *buf.get(at)?;
        let end = at + buf[at..].iter().position(|&b| b == b'\r')?;
        let text = &buf[at + 1..end];
        at = end + 2;
        if buf.get(end + 1) != Some(&b'\n') {
            return None;
        }
        left -= 1;
        match tag {
            b'+' | b'-' | b':' => {}
            b'$' => {
                at = at.checked_add(count(text)?)?;
                if buf.get(at..at + 2)? != b"\r\n" {
                    return None;
                }
                at += 2;
            }
            b'*' => left = left.checked_add(count(text)?)?,
            _ => return None,
        }
    }
    Some(at)
}

/// A length or count that is not negative (a RESP2 null has no RESP3 twin).
fn count(text: &[u8]) -> Option<usize> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn parse_at(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Reply>, ReplyError> {
    if depth > NESTING_MAX {
        return Err(ReplyError::TooDeep);
    }
    let Some(&tag) = buf.get(*at) else {
        return Ok(None);
    };
    let Some(newline) = buf[*at..].iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let end = *at + newline;
    // The shortest line is a tag, CR and LF.
    if newline < 2 || buf[end - 1] != b'\r' {
        return Err(ReplyError::MissingCrlf);
    }
    let text = &buf[*at + 1..end - 1];
    let next = end + 1;
    let text_str = || String::from_utf8_lossy(text).into_owned();
    let reply = match tag {
        b'+' => Reply::Status(text_str()),
        b'-' => Reply::Error(text_str()),
        b':' => Reply::Integer(integer(text)?),
        b'_' => Reply::Nil,
        b'#' => match text {
            b"t" => Reply::Boolean(true),
            b"f" => Reply::Boolean(false),
            _ => return Err(ReplyError::BadNumber),
        },
        b',' => Reply::Double(double(text)?),
        b'$' | b'=' => {
            let length = integer(text)?;
            if length == -1 && tag == b'$' {
                *at = next;
                return Ok(Some(Reply::Nil));
            }
            let length = usize::try_from(length).map_err(|_| ReplyError::BadLength)?;
            let Some(body) = buf.get(next..next + length + 2) else {
                return Ok(None);
            };
            if &body[length..] != b"\r\n" {
                return Err(ReplyError::MissingCrlf);
            }
            *at = next + length + 2;
            let bytes = body[..length].to_vec();
            return Ok(Some(if tag == b'=' {
                let text = bytes.get(4..).ok_or(ReplyError::BadLength)?.to_vec();
                Reply::Verbatim(text)
            } else {
                Reply::Bulk(bytes)
            }));
        }
        b'*' | b'~' | b'>' | b'%' => {
            let count = integer(text)?;
            if count == -1 && tag == b'*' {
                *at = next;
                return Ok(Some(Reply::NilArray));
            }
            let count = usize::try_from(count).map_err(|_| ReplyError::BadLength)?;
            let elements = if tag == b'%' { count * 2 } else { count };
            // The count is the peer's word: reserve for what can have arrived.
            let mut items = Vec::with_capacity(elements.min(buf.len() - next));
            let mut cursor = next;
            for _ in 0..elements {
                match parse_at(buf, &mut cursor, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            *at = cursor;
            return Ok(Some(match tag {
                b'~' => Reply::Set(items),
                b'%' => {
                    let mut pairs = Vec::with_capacity(count);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    Reply::Map(pairs)
                }
                _ => Reply::Array(items),
            }));
        }
        other => return Err(ReplyError::UnknownType(other)),
    };
    *at = next;
    Ok(Some(reply))
}

fn integer(text: &[u8]) -> Result<i64, ReplyError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(ReplyError::BadNumber)
}

fn double(text: &[u8]) -> Result<f64, ReplyError> {
    match text {
        b"inf" => Ok(f64::INFINITY),
        b"-inf" => Ok(f64::NEG_INFINITY),
        b"nan" => Ok(f64::NAN),
        _ => std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(ReplyError::BadNumber),
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    fn sample() -> Reply {
        Reply::Array(vec![
            Reply::ok(),
            Reply::error("ERR x"),
            Reply::Integer(-3),
            Reply::bulk("a\r\nb"),
            Reply::Nil,
            Reply::Double(2.5),
            Reply::Boolean(false),
            Reply::Map(vec![(
                Reply::bulk("k"),
                Reply::Set(vec![Reply::Integer(1)]),
            )]),
            Reply::Verbatim(b"text".to_vec()),
            Reply::Array(vec![]),
        ])
    }

    #[test]
    fn resp3_round_trips_and_every_prefix_asks_for_more() {
        let reply = sample();
        let mut buf = Vec::new();
        reply.encode(Protocol::Resp3, &mut buf);
        assert_eq!(parse_reply(&buf), Ok(Some((reply, buf.len()))));
        for end in 0..buf.len() {
            assert_eq!(parse_reply(&buf[..end]), Ok(None), "{end}");
        }
    }

    #[test]
    fn shared_replies_are_measured_and_resp3_ones_refused() {
        let shared = Reply::Array(vec![
            Reply::ok(),
            Reply::error("ERR x"),
            Reply::Integer(-3),
            Reply::bulk("a\r\nb"),
            Reply::Array(vec![]),
        ]);
        let mut buf = Vec::new();
        shared.encode(Protocol::Resp3, &mut buf);
        buf.extend_from_slice(b"+next\r\n");
        assert_eq!(shared_len(&buf), Some(buf.len() - 7));
        for end in 0..buf.len() - 7 {
            assert_eq!(shared_len(&buf[..end]), None, "{end}");
        }
        for reply in sample_resp3_only() {
            let mut buf = Vec::new();
            reply.encode(Protocol::Resp3, &mut buf);
            assert_eq!(shared_len(&buf), None, "{reply:?}");
        }
        assert_eq!(shared_len(b"$-1\r\n"), None);
        assert_eq!(shared_len(b"$1\r\nab\r\n"), None);
    }

    fn sample_resp3_only() -> Vec<Reply> {
        vec![
            Reply::Nil,
            Reply::NilArray,
            Reply::Double(1.5),
            Reply::Boolean(true),
            Reply::Map(vec![]),
            Reply::Set(vec![]),
            Reply::Verbatim(b"x".to_vec()),
            Reply::Array(vec![Reply::bulk("a"), Reply::Nil]),
        ]
    }

    #[test]
    fn resp2_nulls_and_errors() {
        assert_eq!(parse_reply(b"$-1\r\n"), Ok(Some((Reply::Nil, 5))));
        assert_eq!(parse_reply(b"*-1\r\n"), Ok(Some((Reply::NilArray, 5))));
        assert_eq!(parse_reply(b"?x\r\n"), Err(ReplyError::UnknownType(b'?')));
        assert_eq!(parse_reply(b":x\r\n"), Err(ReplyError::BadNumber));
        assert_eq!(parse_reply(b"$1\r\nab\r\n"), Err(ReplyError::MissingCrlf));
        let deep = "*1\r\n".repeat(NESTING_MAX + 2);
        assert_eq!(parse_reply(deep.as_bytes()), Err(ReplyError::TooDeep));
    }
}
