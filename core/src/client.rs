//! The client library, sans-IO: one client session talking to a cluster.
//!
//! It numbers requests (1, 2, 3, ...), keeps one request outstanding, remembers which replica
//! leads, follows `NotLeader` redirects, backs off on `Busy`, and on a timeout retries the same
//! request (same number: the cluster applies it once) at the next replica. Its driver delivers
//! reply messages and ticks, and sends what [`Client::drain_messages`] yields; the application sees
//! only requests going in and final replies coming out. The simulator's clients are built on it.

use crate::message::{Command, Header, ReplyStatus, CLIENT};
use crate::wal::header::Operation;

/// Why a request failed for good (not retried).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The cluster refused the request as malformed or over a limit.
    Invalid,
    /// A newer request of this client was already applied (only a bug or a restarted client
    /// reusing its id can cause this).
    Stale,
}

/// A final answer to the outstanding request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientReply {
    pub request: u64,
    /// The log index the request took effect at (0 for a read served by ReadIndex).
    pub index: u64,
    pub result: Result<Vec<u8>, ClientError>,
    /// The replica that answered.
    pub from: u8,
}

struct Outstanding {
    request: u64,
    operation: Operation,
    body: Vec<u8>,
    /// When to send (again).
    send_at: u64,
    /// Sent at least once; and whether the next send follows a redirect or a back-off (keep the
    /// target) rather than a timeout (try the next replica).
    sent: bool,
    redirected: bool,
}

pub struct Client {
    id: u64,
    replica_count: u8,
    /// Ticks to wait for an answer before trying the next replica.
    timeout: u64,
    ticks: u64,
    request: u64,
    leader: u8,
    outstanding: Option<Outstanding>,
    outbox: Vec<(u8, Vec<u8>)>,
}

/// Ticks to wait before resending after `Busy` or `NotReady`.
const BACKOFF_TICKS: u64 = 10;

impl Client {
    /// A client with a unique, non-zero `id`, for a cluster of `replica_count` replicas, first
    /// trying replica `first`.
    pub fn new(id: u64, replica_count: u8, first: u8, timeout: u64) -> Client {
        assert!(id != 0, "client id 0 is reserved");
        assert!(first < replica_count && timeout > 0);
        Client {
            id,
            replica_count,
            timeout,
            ticks: 0,
            request: 0,
            leader: first,
            outstanding: None,
            outbox: Vec::new(),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The replica this client believes leads.
    pub fn leader(&self) -> u8 {
        self.leader
    }

    pub fn is_idle(&self) -> bool {
        self.outstanding.is_none()
    }

    /// Starts a request; returns its number. One request at a time: panics if one is outstanding.
    pub fn request(&mut self, operation: Operation, body: &[u8]) -> u64 {
        assert!(self.outstanding.is_none(), "one request at a time");
        self.request += 1;
        self.outstanding = Some(Outstanding {
            request: self.request,
            operation,
            body: body.to_vec(),
            send_at: self.ticks,
            sent: false,
            redirected: false,
        });
        self.send_due();
        self.request
    }

    pub fn tick(&mut self) {
        self.ticks += 1;
        self.send_due();
    }

    /// Sends (or re-sends) the outstanding request if it is due; a resend after a timeout goes
    /// to the next replica.
    fn send_due(&mut self) {
        let Some(outstanding) = &mut self.outstanding else {
            return;
        };
        if self.ticks < outstanding.send_at {
            return;
        }
        if outstanding.sent && !outstanding.redirected {
            self.leader = (self.leader + 1) % self.replica_count; // timed out: try the next
        }
        outstanding.sent = true;
        outstanding.redirected = false;
        let mut header = Header::new(0, 0, Command::Request, CLIENT, self.leader);
        header.a = self.id;
        header.b = outstanding.request;
        header.c = outstanding.operation.0 as u64;
        let mut bytes = Vec::new();
        header.encode(&outstanding.body, &mut bytes);
        self.outbox.push((self.leader, bytes));
        outstanding.send_at = self.ticks + self.timeout;
    }

    /// Delivers a message from a replica. Returns the final reply of the outstanding request, if
    /// this is it; redirects and back-offs are handled here.
    pub fn on_message(&mut self, bytes: &[u8]) -> Option<ClientReply> {
        let (header, body) = Header::decode(bytes, 0, CLIENT).ok()?;
        if header.command != Command::Reply || header.a != self.id {
            return None;
        }
        let outstanding = self
            .outstanding
            .as_mut()
            .filter(|o| o.request == header.b)?;
        let status = ReplyStatus::from_u64(header.d & 0xFF)?;
        let result = match status {
            ReplyStatus::Ok => Ok(body.to_vec()),
            ReplyStatus::Invalid => Err(ClientError::Invalid),
            ReplyStatus::Stale => Err(ClientError::Stale),
            ReplyStatus::NotLeader => {
                let hint = header.d >> 8;
                let next = (self.leader + 1) % self.replica_count;
                self.leader = if hint > 0 {
                    ((hint - 1) as u8).min(self.replica_count - 1)
                } else {
                    next
                };
                outstanding.send_at = self.ticks + if hint > 0 { 0 } else { BACKOFF_TICKS };
                outstanding.redirected = true;
                self.send_due();
                return None;
            }
            ReplyStatus::Busy | ReplyStatus::NotReady | ReplyStatus::Halted => {
                outstanding.send_at = outstanding.send_at.min(self.ticks + BACKOFF_TICKS);
                outstanding.redirected = true;
                return None;
            }
        };
        self.outstanding = None;
        self.leader = header.from.min(self.replica_count - 1);
        Some(ClientReply {
            request: header.b,
            index: header.c,
            result,
            from: header.from,
        })
    }

    /// Hands each message to send to `send(replica, bytes)`.
    pub fn drain_messages(&mut self, mut send: impl FnMut(u8, &[u8])) {
        for (to, bytes) in self.outbox.drain(..) {
            send(to, &bytes);
        }
    }
}

/// Encodes a replica's reply to a client (the replica side of the client protocol).
pub fn encode_reply(reply: &crate::replica::Reply, from: u8, out: &mut Vec<u8>) {
    use crate::replica::RequestError;
    let mut header = Header::new(0, 0, Command::Reply, from, CLIENT);
    header.a = reply.client;
    header.b = reply.request;
    header.c = reply.index;
    let (status, hint) = match &reply.result {
        Ok(_) => (ReplyStatus::Ok, 0),
        Err(RequestError::NotLeader { leader }) => {
            (ReplyStatus::NotLeader, leader.map_or(0, |l| l as u64 + 1))
        }
        Err(RequestError::Busy) => (ReplyStatus::Busy, 0),
        Err(RequestError::NotReady) => (ReplyStatus::NotReady, 0),
        Err(RequestError::Halted) => (ReplyStatus::Halted, 0),
        Err(RequestError::StaleRequest { .. }) => (ReplyStatus::Stale, 0),
        Err(_) => (ReplyStatus::Invalid, 0),
    };
    header.d = status as u64 | (hint << 8);
    let body: &[u8] = reply.result.as_deref().unwrap_or(&[]);
    header.encode(body, out);
}

/// Decodes a client request: (client, request, operation, body).
pub fn decode_request(bytes: &[u8]) -> Option<(u64, u64, Operation, &[u8])> {
    let (header, body) = decode_any(bytes)?;
    (header.command == Command::Request).then_some((
        header.a,
        header.b,
        Operation(header.c as u8),
        body,
    ))
}

/// Client messages are not addressed by replica index on the wire's `to` check (a client does
/// not know which replica a connection reaches); accept any `to`.
fn decode_any(bytes: &[u8]) -> Option<(Header, &[u8])> {
    let to = *bytes.get(30)?;
    Header::decode(bytes, 0, to).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::{Reply, RequestError};

    fn reply(client: u64, request: u64, result: Result<Vec<u8>, RequestError>) -> Reply {
        Reply {
            client,
            request,
            index: 7,
            result,
        }
    }

    fn sent(client: &mut Client) -> Vec<u8> {
        let mut to = Vec::new();
        client.drain_messages(|replica, bytes| {
            to.push(replica);
            let (c, r, op, body) = decode_request(bytes).unwrap();
            assert_eq!((c, op.0, body), (5, 16, &b"body"[..]));
            assert!(r >= 1);
        });
        to
    }

    #[test]
    fn follows_redirects_backs_off_retries_and_delivers_the_reply() {
        let mut client = Client::new(5, 3, 0, 50);
        let request = client.request(Operation(16), b"body");
        assert_eq!(sent(&mut client), vec![0]);
        // Replica 0 is not the leader; it names replica 2: resent there at once.
        let mut bytes = Vec::new();
        encode_reply(
            &reply(5, request, Err(RequestError::NotLeader { leader: Some(2) })),
            0,
            &mut bytes,
        );
        assert_eq!(client.on_message(&bytes), None);
        assert_eq!(sent(&mut client), vec![2]);
        // Busy: the same replica again after a back-off.
        encode_reply(&reply(5, request, Err(RequestError::Busy)), 2, &mut bytes);
        assert_eq!(client.on_message(&bytes), None);
        for _ in 0..BACKOFF_TICKS {
            client.tick();
        }
        assert_eq!(sent(&mut client), vec![2]);
        // No answer within the timeout: the next replica, same request number.
        for _ in 0..50 {
            client.tick();
        }
        assert_eq!(sent(&mut client), vec![0]);
        // The answer.
        encode_reply(&reply(5, request, Ok(b"ok".to_vec())), 1, &mut bytes);
        let got = client.on_message(&bytes).unwrap();
        assert_eq!(
            (got.request, got.index, got.result, got.from),
            (request, 7, Ok(b"ok".to_vec()), 1)
        );
        assert!(client.is_idle());
        assert_eq!(client.leader(), 1);
        // A late duplicate of that answer is ignored.
        assert_eq!(client.on_message(&bytes), None);
        assert_eq!(client.request(Operation(16), b"body"), request + 1);
    }

    #[test]
    fn refusals_are_final_and_foreign_replies_ignored() {
        let mut client = Client::new(5, 3, 0, 50);
        let request = client.request(Operation(16), b"body");
        let mut bytes = Vec::new();
        encode_reply(&reply(6, request, Ok(vec![])), 0, &mut bytes);
        assert_eq!(client.on_message(&bytes), None, "another client's reply");
        encode_reply(
            &reply(5, request, Err(RequestError::StaleRequest { latest: 9 })),
            0,
            &mut bytes,
        );
        assert_eq!(
            client.on_message(&bytes).unwrap().result,
            Err(ClientError::Stale)
        );
        assert_eq!(client.on_message(&[1, 2, 3]), None, "garbage");
    }
}
