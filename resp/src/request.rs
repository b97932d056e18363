//! Parsing client requests: a multibulk array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`)
//! or an inline line (`GET k\r\n`, as telnet sends it), with Redis's limits and error words.
//!
//! The parser is a pure function of the bytes received so far: it returns a complete request and
//! the bytes it used, asks for more, or names a protocol error. After an error the connection
//! cannot be resynchronised (the frame boundaries are lost), so the server writes the error and
//! closes that connection only, as Redis does.

use std::fmt;

/// The limits a request must fit. The defaults are Redis's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest inline request, and the longest count line of an array or bulk string.
    pub inline_max: usize,
    /// The most arguments in one request.
    pub args_max: usize,
    /// The longest argument.
    pub bulk_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            inline_max: 64 << 10,
            args_max: 1 << 20,
            bulk_max: 512 << 20,
        }
    }
}

/// Why the bytes are not a request. The server replies `-ERR Protocol error: <this>` and closes
/// the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    TooBigInline,
    TooBigCount,
    TooBigBulkCount,
    InvalidMultibulkLength,
    InvalidBulkLength,
    /// An array element is not a bulk string (a nested array, an integer, ...).
    ExpectedBulk(u8),
    /// A bulk string's bytes are not followed by CRLF.
    MissingCrlf,
    UnbalancedQuotes,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::TooBigInline => f.write_str("too big inline request"),
            ProtocolError::TooBigCount => f.write_str("too big mbulk count string"),
            ProtocolError::TooBigBulkCount => f.write_str("too big bulk count string"),
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::ExpectedBulk(got) => {
                write!(
                    f,
                    "expected '$', got '{}'",
                    char::from(*got).escape_default()
                )
            }
            ProtocolError::MissingCrlf => f.write_str("expected CRLF after a bulk string"),
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// One parsed request: its arguments (the command name first), and the bytes it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub args: Vec<Vec<u8>>,
    pub consumed: usize,
}

/// Parses the request at the start of `buf`. `Ok(None)`: more bytes are needed. A request with
/// no arguments (an empty line, `*0`) is returned with empty `args`: skip it.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// The line at `buf[from..]` up to CRLF (or LF), and where the next one starts.
fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let newline = buf[from..].iter().position(|&b| b == b'\n')? + from;
    let end = if newline > from && buf[newline - 1] == b'\r' {
        newline - 1
    } else {
        newline
    };
    Some((&buf[from..end], newline + 1))
}

/// A count line's number: decimal digits with an optional minus sign, nothing else.
fn number(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -value } else { value })
}

fn parse_multibulk(buf: &[u8], limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    let Some((count, mut at)) = bounded_line(buf, 1, limits, ProtocolError::TooBigCount)? else {
        return Ok(None);
    };
    let count = number(count).ok_or(ProtocolError::InvalidMultibulkLength)?;
    if count > limits.args_max as i64 {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    let count = count.max(0) as usize;
    // Reserve for what has arrived, not what the count claims: the count is the peer's word.
    let mut args = Vec::with_capacity(count.min(buf.len() / 4 + 1));
    for _ in 0..count {
        let Some(&first) = buf.get(at) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(ProtocolError::ExpectedBulk(first));
        }
        let Some((length, body)) =
            bounded_line(buf, at + 1, limits, ProtocolError::TooBigBulkCount)?
        else {
            return Ok(None);
        };
        let length = match number(length) {
            Some(n) if n >= 0 && n as u64 <= limits.bulk_max as u64 => n as usize,
            _ => return Err(ProtocolError::InvalidBulkLength),
        };
        let end = body + length;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        args.push(buf[body..end].to_vec());
        at = end + 2;
    }
    Ok(Some(Request { args, consumed: at }))
}

/// The line at `buf[from..]`, or `too_long` once it is (or is certain to become) longer than
/// `inline_max`. The verdict does not depend on how the bytes arrived: without a newline yet,
/// the line will hold every byte so far but a final CR.
fn bounded_line<'a>(
    buf: &'a [u8],
    from: usize,
    limits: &Limits,
    too_long: ProtocolError,
) -> Result<Option<(&'a [u8], usize)>, ProtocolError> {
    match line(buf, from) {
        Some((text, _)) if text.len() > limits.inline_max => Err(too_long),
        Some(found) => Ok(Some(found)),
        None if buf.len() - from > limits.inline_max + 1 => Err(too_long),
        None => Ok(None),
    }
}

fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    let Some((text, consumed)) = bounded_line(buf, 0, limits, ProtocolError::TooBigInline)? else {
        return Ok(None);
    };
    let args = split_args(text)?;
    if args.len() > limits.args_max {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    Ok(Some(Request { args, consumed }))
}

/// Splits an inline request into arguments as redis-cli and Redis do: spaces separate, double
/// quotes allow escapes (`\n`, `\xff`, ...), single quotes allow only `\'`. A closing quote
/// must be followed by a space or the end.
pub fn split_args(text: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut at = 0;
    loop {
        while text.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        if at == text.len() {
            return Ok(args);
        }
        let (arg, next) = match text[at] {
            b'"' => double_quoted(text, at + 1)?,
            b'\'' => single_quoted(text, at + 1)?,
            _ => {
                let end = text[at..]
                    .iter()
                    .position(u8::is_ascii_whitespace)
                    .map_or(text.len(), |n| at + n);
                (text[at..end].to_vec(), end)
            }
        };
        args.push(arg);
        at = next;
    }
}

/// After a closing quote: the end, or whitespace.
fn closed(text: &[u8], after: usize) -> Result<usize, ProtocolError> {
    match text.get(after) {
        None => Ok(after),
        Some(b) if b.is_ascii_whitespace() => Ok(after),
        Some(_) => Err(ProtocolError::UnbalancedQuotes),
    }
}

fn double_quoted(text: &[u8], mut at: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut arg = Vec::new();
    loop {
        match text.get(at) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'"') => return Ok((arg, closed(text, at + 1)?)),
            Some(b'\\') if text.get(at + 1) == Some(&b'x') && hex_pair(text, at + 2).is_some() => {
                arg.push(hex_pair(text, at + 2).expect("checked"));
                at += 4;
            }
            Some(b'\\') if at + 1 < text.len() => {
                arg.push(match text[at + 1] {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
                at += 2;
            }
            Some(&b) => {
                arg.push(b);
                at += 1;
            }
        }
    }
}

fn hex_pair(text: &[u8], at: usize) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    let high = digit(*text.get(at)?)?;
    let low = digit(*text.get(at + 1)?)?;
    Some((high * 16 + low) as u8)
}

fn single_quoted(text: &[u8], mut at: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut arg = Vec::new();
    loop {
        match text.get(at) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'\'') => return Ok((arg, closed(text, at + 1)?)),
            Some(b'\\') if text.get(at + 1) == Some(&b'\'') => {
                arg.push(b'\'');
                at += 2;
            }
            Some(&b) => {
                arg.push(b);
                at += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    fn parsed(buf: &[u8]) -> Request {
        parse(buf, &Limits::default()).unwrap().unwrap()
    }

    #[test]
    fn a_multibulk_request_and_what_it_used() {
        let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n";
        let first = parsed(buf);
        assert_eq!(first.args, args(&["GET", "k"]));
        assert_eq!(first.consumed, 20);
        assert_eq!(parsed(&buf[20..]).args, args(&["PING"]));
    }

    #[test]
    fn every_prefix_of_a_request_asks_for_more() {
        let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nxy\r\n";
        for end in 0..buf.len() {
            assert_eq!(parse(&buf[..end], &Limits::default()), Ok(None), "{end}");
        }
        assert_eq!(parsed(buf).args[2], b"v\r\nxy".to_vec(), "binary safe");
    }

    #[test]
    fn inline_requests_split_like_redis_cli() {
        assert_eq!(parsed(b"SET k v\r\n").args, args(&["SET", "k", "v"]));
        assert_eq!(parsed(b"  PING  \n").args, args(&["PING"]));
        assert_eq!(
            parsed(b"SET \"a b\\n\\x41\" 'it\\'s'\r\n").args,
            args(&["SET", "a b\nA", "it's"])
        );
        assert_eq!(parsed(b"\r\n").args, Vec::<Vec<u8>>::new());
        let unbalanced = parse(b"SET \"k v\r\n", &Limits::default());
        assert_eq!(unbalanced, Err(ProtocolError::UnbalancedQuotes));
        let glued = parse(b"SET \"k\"v\r\n", &Limits::default());
        assert_eq!(glued, Err(ProtocolError::UnbalancedQuotes));
    }

    #[test]
    fn limits_and_malformed_frames_are_named() {
        let limits = Limits {
            inline_max: 16,
            args_max: 3,
            bulk_max: 8,
        };
        let error = |buf: &[u8]| parse(buf, &limits).unwrap_err();
        assert_eq!(error(&[b'x'; 18]), ProtocolError::TooBigInline);
        assert_eq!(
            parse(&[b'x'; 17], &limits),
            Ok(None),
            "the 17th byte may be a CR"
        );
        assert_eq!(
            error(&[&[b'x'; 17][..], b"\n"].concat()),
            ProtocolError::TooBigInline
        );
        assert_eq!(error(b"*111111111111111111"), ProtocolError::TooBigCount);
        assert_eq!(error(b"*4\r\n"), ProtocolError::InvalidMultibulkLength);
        assert_eq!(error(b"*x\r\n"), ProtocolError::InvalidMultibulkLength);
        assert_eq!(error(b"*1\r\n$9\r\n"), ProtocolError::InvalidBulkLength);
        assert_eq!(error(b"*1\r\n$-1\r\n"), ProtocolError::InvalidBulkLength);
        assert_eq!(error(b"*1\r\n*1\r\n"), ProtocolError::ExpectedBulk(b'*'));
        assert_eq!(error(b"*1\r\n$1\r\nab\r\n"), ProtocolError::MissingCrlf);
        assert_eq!(
            error(b"*1\r\n$11111111111111111111"),
            ProtocolError::TooBigBulkCount
        );
        assert_eq!(
            ProtocolError::ExpectedBulk(b':').to_string(),
            "Protocol error: expected '$', got ':'"
        );
        // An empty or negative count is an empty request, skipped as Redis skips it.
        assert_eq!(parse(b"*0\r\n", &limits).unwrap().unwrap().args.len(), 0);
        assert_eq!(parse(b"*-1\r\n", &limits).unwrap().unwrap().consumed, 5);
    }

    proptest::proptest! {
        /// Any arguments, encoded as a client encodes them, parse back whole, and no prefix of
        /// the encoding parses.
        #[test]
        fn encoded_requests_round_trip(
            list in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 1..6)
        ) {
            let mut buf = format!("*{}\r\n", list.len()).into_bytes();
            for arg in &list {
                buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                buf.extend_from_slice(arg);
                buf.extend_from_slice(b"\r\n");
            }
            let request = parse(&buf, &Limits::default()).unwrap().unwrap();
            proptest::prop_assert_eq!(&request.args, &list);
            proptest::prop_assert_eq!(request.consumed, buf.len());
            for end in 0..buf.len() {
                proptest::prop_assert_eq!(parse(&buf[..end], &Limits::default()), Ok(None));
            }
        }

        /// Arbitrary bytes never panic, and a request never claims more than it was given.
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(Some(request)) = parse(&buf, &Limits::default()) {
                proptest::prop_assert!(request.consumed <= buf.len() && request.consumed > 0);
            }
        }
    }
}
