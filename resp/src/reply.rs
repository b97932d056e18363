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
