//! Batch entries: many client requests in one WAL entry.
//!
//! While one entry write is in flight, a leader queues the requests that arrive and then writes
//! them as one entry — one contiguous write and one redundant header for the whole group, instead
//! of one scattered slot per request. The entry's operation is [`Operation::BATCH`]; its body is a
//! sequence of records:
//!
//! | size | field |
//! |---|---|
//! | 8 | client |
//! | 8 | session (the index of the client's register entry; 0 for a register) |
//! | 8 | request number |
//! | 1 | operation |
//! | 4 | body size |
//! | n | body |

use crate::state_machine::Reader;
use crate::wal::header::Operation;

/// Who sent a request: the client, its session (see `sessions`) and the request's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestId {
    pub client: u64,
    pub session: u64,
    pub request: u64,
}

impl<'a> Record<'a> {
    pub fn id(&self) -> RequestId {
        RequestId {
            client: self.client,
            session: self.session,
            request: self.request,
        }
    }
}

/// The bytes of a record before its body.
pub const RECORD_HEADER_SIZE: usize = 29;

/// One request inside a batch entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub client: u64,
    pub session: u64,
    pub request: u64,
    pub operation: Operation,
    pub body: &'a [u8],
}

/// Appends a record to a batch body.
pub fn push(out: &mut Vec<u8>, id: RequestId, operation: Operation, body: &[u8]) {
    let RequestId {
        client,
        session,
        request,
    } = id;
    out.extend_from_slice(&client.to_le_bytes());
    out.extend_from_slice(&session.to_le_bytes());
    out.extend_from_slice(&request.to_le_bytes());
    out.push(operation.0);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// The records of a batch body, in order. Stops at the first malformed record (a batch body is
/// checksummed with its entry, so this only happens to a bug, and is asserted by callers).
pub fn records(body: &[u8]) -> Records<'_> {
    Records(Reader(body))
}

pub struct Records<'a>(Reader<'a>);

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let r = &mut self.0;
        let client = r.u64()?;
        let session = r.u64()?;
        let request = r.u64()?;
        let operation = Operation(r.take(1)?[0]);
        let len = r.u32()? as usize;
        let body = r.take(len)?;
        Some(Record {
            client,
            session,
            request,
            operation,
            body,
        })
    }
}

/// Whether a batch body decodes exactly into records (no trailing bytes).
pub fn is_well_formed(body: &[u8]) -> bool {
    let mut rest = Reader(body);
    loop {
        if rest.0.is_empty() {
            return true;
        }
        let Some(header) = rest.take(RECORD_HEADER_SIZE) else {
            return false;
        };
        let len = u32::from_le_bytes(header[25..29].try_into().unwrap()) as usize;
        if rest.take(len).is_none() {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut body = Vec::new();
        let id = |client, session, request| RequestId {
            client,
            session,
            request,
        };
        push(&mut body, id(1, 5, 10), Operation(16), b"abc");
        push(&mut body, id(2, 6, 20), Operation(17), b"");
        let got: Vec<_> = records(&body)
            .map(|r| (r.id(), r.operation.0, r.body.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (id(1, 5, 10), 16, b"abc".to_vec()),
                (id(2, 6, 20), 17, vec![])
            ]
        );
        assert!(is_well_formed(&body));
        assert!(!is_well_formed(&body[..body.len() - 1]));
        assert!(is_well_formed(&[]));
    }
}
