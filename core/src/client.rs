//! The client library, sans-IO: one client session talking to a cluster.
//!
//! Before its first request it registers a session (a logged request; the reply names the
//! session, which every later request carries). It numbers requests (1, 2, 3, ...), keeps one
//! request outstanding, remembers which replica
//! leads, follows `NotLeader` redirects, backs off on `Busy`, and on a timeout retries the same
//! request (same number: the cluster applies it once) at the next replica. Its driver delivers
//! reply messages and ticks, and sends what [`Client::drain_messages`] yields; the application sees
//! only requests going in and final replies coming out. The simulator's clients are built on it.
//!
//! When more clients register than the cluster has session slots, the least recently used
//! session is evicted. The evicted client's request in flight fails with
//! [`ClientError::Evicted`] (it was not applied then; whether an earlier attempt of it was is
//! unknown), and so does every later call: the application creates a new client, with a new id.

use crate::message::{Command, Header, ReplyStatus, CLIENT};
use crate::wal::batch::RequestId;
use crate::wal::header::Operation;

/// Why a request failed for good (not retried).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The cluster refused the request as malformed or over a limit.
    Invalid,
    /// A newer request of this client was already applied (only a bug or a restarted client
    /// reusing its id can cause this).
    Stale,
    /// The cluster evicted this client's session to make room for others: the request was not
    /// applied when it was refused, but an earlier attempt of it may have been. Final: make a new
    /// client (with a new id) to go on.
    Evicted,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientError::Invalid => "the cluster refused the request as malformed or over a limit",
            ClientError::Stale => "a newer request of this client was already applied",
            ClientError::Evicted => {
                "the client's session was evicted (more clients than session slots): \
                 the outcome of the request is unknown; use a new client"
            }
        })
    }
}

impl std::error::Error for ClientError {}

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
    /// The session number, once registered (0 before).
    session: u64,
    evicted: bool,
    /// The request on the wire: the registration, or the application's request.
    outstanding: Option<Outstanding>,
    /// The application's first request, waiting for the registration.
    after_register: Option<Outstanding>,
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
            session: 0,
            evicted: false,
            outstanding: None,
            after_register: None,
            outbox: Vec::new(),
        }
    }

    /// The session number (0 until registered).
    pub fn session(&self) -> u64 {
        self.session
    }

    pub fn is_evicted(&self) -> bool {
        self.evicted
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

    /// Starts a request (registering first, if this client has no session yet); returns its
    /// number. One request at a time: panics if one is outstanding. An evicted client takes no
    /// more requests.
    pub fn request(&mut self, operation: Operation, body: &[u8]) -> Result<u64, ClientError> {
        assert!(self.outstanding.is_none(), "one request at a time");
        if self.evicted {
            return Err(ClientError::Evicted);
        }
        self.request += 1;
        let outstanding = Outstanding {
            request: self.request,
            operation,
            body: body.to_vec(),
            send_at: self.ticks,
            sent: false,
            redirected: false,
        };
        if self.session == 0 {
            self.after_register = Some(outstanding);
            self.outstanding = Some(Outstanding {
                request: 0,
                operation: Operation::REGISTER,
                body: Vec::new(),
                ..outstanding_template(self.ticks)
            });
        } else {
            self.outstanding = Some(outstanding);
        }
        self.send_due();
        Ok(self.request)
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
        header.d = self.session;
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
            ReplyStatus::Evicted => {
                self.evicted = true;
                Err(ClientError::Evicted)
            }
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
        if header.b == 0 {
            return self.on_registered(header.c, header.from, result);
        }
        Some(ClientReply {
            request: header.b,
            index: header.c,
            result,
            from: header.from,
        })
    }

    /// The registration was answered: send the application's request, or fail it.
    fn on_registered(
        &mut self,
        session: u64,
        from: u8,
        result: Result<Vec<u8>, ClientError>,
    ) -> Option<ClientReply> {
        let mut first = self.after_register.take().expect("a request waits for it");
        if let Err(error) = result {
            return Some(ClientReply {
                request: first.request,
                index: 0,
                result: Err(error),
                from,
            });
        }
        assert!(session > 0, "a session is the index of its registration");
        self.session = session;
        first.send_at = self.ticks;
        self.outstanding = Some(first);
        self.send_due();
        None
    }

    /// Hands each message to send to `send(replica, bytes)`.
    pub fn drain_messages(&mut self, mut send: impl FnMut(u8, &[u8])) {
        for (to, bytes) in self.outbox.drain(..) {
            send(to, &bytes);
        }
    }
}

fn outstanding_template(ticks: u64) -> Outstanding {
    Outstanding {
        request: 0,
        operation: Operation::NOOP,
        body: Vec::new(),
        send_at: ticks,
        sent: false,
        redirected: false,
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
        Err(RequestError::Evicted) => (ReplyStatus::Evicted, 0),
        Err(_) => (ReplyStatus::Invalid, 0),
    };
    header.d = status as u64 | (hint << 8);
    let body: &[u8] = reply.result.as_deref().unwrap_or(&[]);
    header.encode(body, out);
}

/// Decodes a client request: who sent it, the operation and its body.
pub fn decode_request(bytes: &[u8]) -> Option<(RequestId, Operation, &[u8])> {
    let (header, body) = decode_any(bytes)?;
    let id = RequestId {
        client: header.a,
        session: header.d,
        request: header.b,
    };
    (header.command == Command::Request).then_some((id, Operation(header.c as u8), body))
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

    /// The replicas the client sent to, checking each message is client 5's request `request`
    /// of session 7.
    fn sent(client: &mut Client) -> Vec<u8> {
        let mut to = Vec::new();
        client.drain_messages(|replica, bytes| {
            to.push(replica);
            let (id, op, body) = decode_request(bytes).unwrap();
            assert_eq!(
                (id.client, id.session, op.0, body),
                (5, 7, 16, &b"body"[..])
            );
            assert!(id.request >= 1);
        });
        to
    }

    /// A client whose first request is under way, registered as session 7 by replica 0.
    fn registered(timeout: u64) -> (Client, u64) {
        let mut client = Client::new(5, 3, 0, timeout);
        let request = client.request(Operation(16), b"body").unwrap();
        let mut registrations = Vec::new();
        client.drain_messages(|replica, bytes| registrations.push((replica, bytes.to_vec())));
        assert_eq!(registrations.len(), 1);
        let (id, op, body) = decode_request(&registrations[0].1).unwrap();
        assert_eq!((id.client, id.session, id.request), (5, 0, 0));
        assert_eq!((op, body), (Operation::REGISTER, &[][..]));
        let mut bytes = Vec::new();
        encode_reply(&reply(5, 0, Ok(vec![])), 0, &mut bytes);
        assert_eq!(
            client.on_message(&bytes),
            None,
            "not the application's reply"
        );
        assert_eq!(client.session(), 7);
        (client, request)
    }

    #[test]
    fn registers_then_follows_redirects_backs_off_retries_and_delivers_the_reply() {
        let (mut client, request) = registered(50);
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
        // The next request goes out at once, in the same session.
        assert_eq!(client.request(Operation(16), b"body"), Ok(request + 1));
        assert_eq!(sent(&mut client), vec![1]);
    }

    #[test]
    fn refusals_are_final_and_foreign_replies_ignored() {
        let (mut client, request) = registered(50);
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

    #[test]
    fn eviction_fails_the_request_and_every_later_one() {
        let (mut client, request) = registered(50);
        assert_eq!(sent(&mut client), vec![0]);
        let mut bytes = Vec::new();
        encode_reply(
            &reply(5, request, Err(RequestError::Evicted)),
            0,
            &mut bytes,
        );
        let got = client.on_message(&bytes).unwrap();
        assert_eq!(
            (got.request, got.result),
            (request, Err(ClientError::Evicted))
        );
        assert!(client.is_evicted() && client.is_idle());
        assert_eq!(
            client.request(Operation(16), b"body"),
            Err(ClientError::Evicted)
        );
        assert!(sent(&mut client).is_empty(), "nothing more goes out");
    }
}
