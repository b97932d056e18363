//! Requests a replica forwards to the leader for its connections, and the answers it gets back.
//!
//! They travel on the links between replicas as the core's checksummed messages (`Request` and
//! `Reply`), under the cluster's id and addressed by replica index, so a peer checks them as it
//! checks Raft's messages. A reply goes back to the replica whose connections sent the request:
//! the top byte of every server client id names it ([`client_id`]), so the leader keeps no
//! table of what it forwards.

use ziggy_core::message::{Command, Header, ReplyStatus};
use ziggy_core::wal::batch::RequestId;
use ziggy_core::wal::header::Operation;
use ziggy_core::RequestError;

/// What became of a request, wherever the replica that answered it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Applied (or read) at `index`: the reply.
    Done { index: u64, reply: Vec<u8> },
    /// Not taken now (a full pipeline, a replica still opening): send it again soon.
    Busy,
    /// The replica does not lead; the one it names, if any, may.
    NotLeader(Option<u8>),
    /// The lane's session was evicted: the request was not applied.
    Evicted,
    /// Refused for good, with the reason.
    Failed(String),
}

impl Answer {
    /// The local replica's reply as an answer.
    pub fn from_reply(index: u64, result: Result<Vec<u8>, RequestError>) -> Answer {
        match result {
            Ok(reply) => Answer::Done { index, reply },
            Err(RequestError::Busy | RequestError::NotReady) => Answer::Busy,
            // A halted replica leads nothing; another may, after an election.
            Err(RequestError::Halted) => Answer::NotLeader(None),
            Err(RequestError::NotLeader { leader }) => Answer::NotLeader(leader),
            Err(RequestError::Evicted) => Answer::Evicted,
            Err(error) => Answer::Failed(error.to_string()),
        }
    }
}

/// A server client id for lane or reader `n` of replica `origin`: random, non-zero, with
/// `origin + 1` in its top byte (see the module documentation).
pub fn client_id(origin: u8, n: u64, random: u64) -> u64 {
    let low = (random ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) & ((1 << 56) - 1);
    ((origin as u64 + 1) << 56) | low | 1
}

/// The replica whose connections use `client`.
pub fn origin(client: u64) -> Option<u8> {
    ((client >> 56) as u8).checked_sub(1)
}

pub struct Route {
    pub cluster: u64,
    pub from: u8,
    pub to: u8,
}

pub fn encode_request(
    route: &Route,
    id: RequestId,
    operation: Operation,
    body: &[u8],
    out: &mut Vec<u8>,
) {
    let mut header = Header::new(route.cluster, 0, Command::Request, route.from, route.to);
    header.a = id.client;
    header.b = id.request;
    header.c = operation.0 as u64;
    header.d = id.session;
    header.encode(body, out);
}

/// A forwarded request, if `bytes` is one for replica `me` of `cluster`.
pub fn decode_request(bytes: &[u8], cluster: u64, me: u8) -> Option<(RequestId, Operation, &[u8])> {
    let (header, body) = Header::decode(bytes, cluster, me).ok()?;
    if header.command != Command::Request || header.c > u8::MAX as u64 {
        return None;
    }
    let id = RequestId {
        client: header.a,
        session: header.d,
        request: header.b,
    };
    Some((id, Operation(header.c as u8), body))
}

/// Encodes `answer` to request (`client`, `request`). A refusal carries its reason as the body.
pub fn encode_reply(route: &Route, client: u64, request: u64, answer: &Answer, out: &mut Vec<u8>) {
    let mut header = Header::new(route.cluster, 0, Command::Reply, route.from, route.to);
    header.a = client;
    header.b = request;
    let (status, hint, body): (ReplyStatus, u64, &[u8]) = match answer {
        Answer::Done { index, reply } => {
            header.c = *index;
            (ReplyStatus::Ok, 0, reply)
        }
        Answer::Busy => (ReplyStatus::Busy, 0, &[]),
        Answer::NotLeader(leader) => (
            ReplyStatus::NotLeader,
            leader.map_or(0, |l| l as u64 + 1),
            &[],
        ),
        Answer::Evicted => (ReplyStatus::Evicted, 0, &[]),
        Answer::Failed(why) => (ReplyStatus::Invalid, 0, why.as_bytes()),
    };
    header.d = status as u64 | (hint << 8);
    header.encode(body, out);
}

/// A forwarded request's answer, if `bytes` is one for replica `me` of `cluster`: the client,
/// the request number and the answer.
pub fn decode_reply(bytes: &[u8], cluster: u64, me: u8) -> Option<(u64, u64, Answer)> {
    let (header, body) = Header::decode(bytes, cluster, me).ok()?;
    if header.command != Command::Reply {
        return None;
    }
    let hint = header.d >> 8;
    let answer = match ReplyStatus::from_u64(header.d & 0xFF)? {
        ReplyStatus::Ok => Answer::Done {
            index: header.c,
            reply: body.to_vec(),
        },
        ReplyStatus::Busy | ReplyStatus::NotReady => Answer::Busy,
        ReplyStatus::NotLeader | ReplyStatus::Halted => {
            Answer::NotLeader(hint.checked_sub(1).and_then(|l| u8::try_from(l).ok()))
        }
        ReplyStatus::Evicted => Answer::Evicted,
        ReplyStatus::Invalid | ReplyStatus::Stale => {
            Answer::Failed(String::from_utf8_lossy(body).into_owned())
        }
    };
    Some((header.a, header.b, answer))
}

/// Whether `bytes` is a forwarded request or reply rather than a message for the replica.
pub fn command(bytes: &[u8]) -> Option<Command> {
    bytes.get(28).and_then(|&c| Command::from_u8(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: Route = Route {
        cluster: 7,
        from: 2,
        to: 0,
    };

    #[test]
    fn a_request_round_trips_and_is_checked() {
        let id = RequestId {
            client: client_id(2, 5, 0xABCDEF),
            session: 9,
            request: 11,
        };
        let mut out = Vec::new();
        encode_request(&ROUTE, id, Operation(32), b"body", &mut out);
        let (got, operation, body) = decode_request(&out, 7, 0).expect("decodes");
        assert_eq!((got, operation, body), (id, Operation(32), &b"body"[..]));
        assert_eq!(origin(id.client), Some(2));
        assert!(decode_request(&out, 8, 0).is_none(), "another cluster's");
        assert!(decode_request(&out, 7, 1).is_none(), "another replica's");
        out[73] ^= 1;
        assert!(decode_request(&out, 7, 0).is_none(), "a corrupt body");
    }

    #[test]
    fn every_answer_round_trips() {
        let answers = [
            Answer::Done {
                index: 42,
                reply: b"+OK\r\n".to_vec(),
            },
            Answer::Busy,
            Answer::NotLeader(None),
            Answer::NotLeader(Some(1)),
            Answer::Evicted,
            Answer::Failed("invalid request: not a group".into()),
        ];
        for answer in answers {
            let mut out = Vec::new();
            encode_reply(&ROUTE, 3, 4, &answer, &mut out);
            assert_eq!(decode_reply(&out, 7, 0), Some((3, 4, answer)));
        }
    }

    #[test]
    fn client_ids_name_their_origin_and_are_never_zero() {
        for origin_index in 0..8u8 {
            for n in 0..40 {
                let id = client_id(origin_index, n, 0);
                assert_ne!(id, 0);
                assert_eq!(origin(id), Some(origin_index));
            }
        }
        assert_eq!(origin(5), None, "not a server's client");
    }
}
