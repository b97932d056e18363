//! The checkers: an independent model of what the replicas must have done, built only from what
//! clients asked and what replicas reported, and checked at every step.
//!
//! - **No committed entry is lost or changed**: the first replica to apply an index fixes that
//!   entry; every other application of the index, by any replica, in any incarnation, must be the
//!   same entry. Indices are applied contiguously by each replica.
//! - **Every entry comes from a real request, and takes effect once**: an applied (client,
//!   request) was submitted by that client; a write request that reaches the log twice (a retry
//!   across a leader change) takes effect only the first time — as the replicas must agree.
//! - **Sessions**: the model keeps its own table of client sessions (registered in log order,
//!   `clients_max` of them, the least recently used evicted first). A write takes effect only if
//!   its session is in that table — a request of an evicted session never does, even when no
//!   earlier attempt of it took effect.
//! - **Replies are right**: a reply names the index its request took effect at, and carries
//!   exactly the bytes the model computes there.
//! - **State matches**: whenever a replica opens or installs a checkpoint, and at the end, its
//!   state digest equals the model's at its applied index (so recovery is idempotent, and
//!   replicas converge).
//!
//! Linearizability of the clients' history is checked separately
//! ([`crate::linearizability`]).

use crate::workload::Reference;
use std::collections::{BTreeMap, BTreeSet};

/// A violated invariant: what, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! violation {
    ($($arg:tt)*) => { Err(Violation(format!($($arg)*))) };
}

struct Request {
    client: u64,
    request: u64,
    reply: Vec<u8>,
    /// Whether this request took effect (false: a duplicate of an earlier application).
    effective: bool,
}

/// A committed entry: one request, or a batch of them.
struct Committed {
    checksum: u32,
    count: u32,
    requests: Vec<Request>,
    /// The state digest after the whole entry.
    digest: u64,
}

/// The model's copy of a client's session.
struct Session {
    /// The index of the registration that opened it.
    number: u64,
    /// The index of the session's last registration or effective write (eviction order).
    used: u64,
}

pub struct Model<R: Reference> {
    /// Clients that exist (a registration must come from one).
    clients: BTreeSet<u64>,
    sessions: BTreeMap<u64, Session>,
    /// Every session number each client was given.
    registrations: BTreeMap<u64, BTreeSet<u64>>,
    clients_max: usize,
    /// Sessions evicted, and requests not applied because their session was gone.
    pub evictions: u64,
    pub evicted_requests: u64,
    /// Every request any client submitted.
    requests: BTreeMap<(u64, u64), R::Op>,
    /// The committed log, by index (index i at i - 1).
    log: Vec<Committed>,
    /// Where each write request took effect: (index, position).
    effective_at: BTreeMap<(u64, u64), (u64, u32)>,
    /// Where each read request was applied (it may be applied more than once).
    reads_at: BTreeMap<(u64, u64), BTreeSet<(u64, u32)>>,
    /// The state: committed requests execute on it, in log order.
    reference: R,
    /// The reference's digest before any entry.
    empty_digest: u64,
    /// Each replica's last applied request in its current incarnation: (index, position, count).
    replica_applied: BTreeMap<u8, (u64, u32, u32)>,
    pub max_acked: u64,
    pub checks: u64,
}

impl<R: Reference> Model<R> {
    /// A model of a cluster with `clients_max` session slots, over an empty `reference`.
    pub fn new(clients_max: usize, mut reference: R) -> Model<R> {
        Model {
            clients: BTreeSet::new(),
            sessions: BTreeMap::new(),
            registrations: BTreeMap::new(),
            clients_max,
            evictions: 0,
            evicted_requests: 0,
            requests: BTreeMap::new(),
            log: Vec::new(),
            effective_at: BTreeMap::new(),
            reads_at: BTreeMap::new(),
            empty_digest: reference.digest(),
            reference,
            replica_applied: BTreeMap::new(),
            max_acked: 0,
            checks: 0,
        }
    }

    /// The reference state (its counters).
    pub fn reference(&self) -> &R {
        &self.reference
    }

    /// A client came into being (it registers before its first request).
    pub fn client(&mut self, client: u64) {
        self.clients.insert(client);
    }

    /// Where a write request took effect (its first application in the log), if it did.
    pub fn effective_at(&self, client: u64, request: u64) -> Option<(u64, u32)> {
        self.effective_at.get(&(client, request)).copied()
    }

    /// The highest index any replica applied completely.
    pub fn committed(&self) -> u64 {
        match self.log.last() {
            Some(last) if (last.requests.len() as u32) < last.count => self.log.len() as u64 - 1,
            _ => self.log.len() as u64,
        }
    }

    pub fn submitted(&mut self, client: u64, request: u64, op: R::Op) {
        if let Some(previous) = self.requests.insert((client, request), op.clone()) {
            assert_eq!(previous, op, "a retry carries the same operation");
        }
    }

    /// Replica `replica` (re)started at `applied` (its checkpoint), with state digest `digest`.
    pub fn opened(&mut self, replica: u8, applied: u64, digest: u64) -> Result<(), Violation> {
        self.replica_applied.insert(replica, (applied, 0, 1));
        self.state_matches(replica, applied, digest)
    }

    /// The replica's state was replaced by a checkpoint at `applied`: its next entry follows it.
    pub fn restarted_at(&mut self, replica: u8, applied: u64) {
        self.replica_applied.insert(replica, (applied, 0, 1));
    }

    /// The replica's state at `applied` must equal the model's.
    pub fn state_matches(
        &mut self,
        replica: u8,
        applied: u64,
        digest: u64,
    ) -> Result<(), Violation> {
        self.checks += 1;
        if applied > self.committed() {
            return violation!(
                "replica {replica} has state at {applied}, beyond anything applied ({})",
                self.committed()
            );
        }
        let expected = self.digest_at(applied);
        if expected != digest {
            return violation!(
                "replica {replica}'s state at {applied} has digest {digest:#x}, expected {expected:#x}"
            );
        }
        Ok(())
    }

    fn digest_at(&self, index: u64) -> u64 {
        match index {
            0 => self.empty_digest,
            i => self.log[i as usize - 1].digest,
        }
    }

    /// Replica `replica` applied request `position` of the `count` in entry `index` (stamped
    /// `timestamp`).
    #[allow(clippy::too_many_arguments)]
    pub fn applied(
        &mut self,
        replica: u8,
        index: u64,
        position: u32,
        count: u32,
        checksum: u32,
        client: u64,
        session: u64,
        request: u64,
        timestamp: u64,
    ) -> Result<(), Violation> {
        self.checks += 1;
        if let Some(&(last, last_position, last_count)) = self.replica_applied.get(&replica) {
            let expected = if last_position + 1 < last_count {
                (last, last_position + 1)
            } else {
                (last + 1, 0)
            };
            if (index, position) != expected {
                return violation!(
                    "replica {replica} applied {index}.{position} after {last}.{last_position}"
                );
            }
        }
        self.replica_applied
            .insert(replica, (index, position, count));
        if let Some(entry) = self.log.get(index as usize - 1) {
            if let Some(known) = entry.requests.get(position as usize) {
                if (entry.checksum, entry.count, known.client, known.request)
                    != (checksum, count, client, request)
                {
                    return violation!(
                        "committed entry {index}.{position} changed: was client {} request {} checksum {:#x}, \
                         replica {replica} applied client {client} request {request} checksum {checksum:#x}",
                        known.client,
                        known.request,
                        entry.checksum
                    );
                }
                return Ok(());
            }
            if position as usize != entry.requests.len()
                || entry.checksum != checksum
                || entry.count != count
            {
                return violation!("replica {replica} applied {index}.{position} out of order");
            }
        } else if index as usize != self.log.len() + 1 || position != 0 {
            return violation!(
                "replica {replica} applied entry {index}.{position}, but the log ends at {}",
                self.log.len()
            );
        } else {
            self.log.push(Committed {
                checksum,
                count,
                requests: Vec::new(),
                digest: 0,
            });
        }
        self.commit_new(index, position, client, session, request, timestamp)
    }

    fn commit_new(
        &mut self,
        index: u64,
        position: u32,
        client: u64,
        session: u64,
        request: u64,
        timestamp: u64,
    ) -> Result<(), Violation> {
        let (reply, effective) = if client == 0 {
            (Vec::new(), false) // a leader's no-op
        } else if request == 0 {
            if !self.clients.contains(&client) {
                return violation!(
                    "entry {index}.{position} registers client {client}, which never existed"
                );
            }
            self.register(client, index);
            (Vec::new(), false)
        } else {
            let Some(op) = self.requests.get(&(client, request)).cloned() else {
                return violation!("entry {index}.{position} (client {client} request {request}) was never submitted");
            };
            let current = self
                .sessions
                .get(&client)
                .is_some_and(|s| s.number == session);
            if R::is_read(&op) {
                self.reads_at
                    .entry((client, request))
                    .or_default()
                    .insert((index, position));
                (self.reference.execute(&op, index, timestamp), true)
            } else if !current {
                self.evicted_requests += 1;
                (Vec::new(), false)
            } else if let Some(&(first, at)) = self.effective_at.get(&(client, request)) {
                (
                    self.log[first as usize - 1].requests[at as usize]
                        .reply
                        .clone(),
                    false,
                )
            } else {
                self.effective_at
                    .insert((client, request), (index, position));
                self.sessions.get_mut(&client).expect("current").used = index;
                (self.reference.execute(&op, index, timestamp), true)
            }
        };
        let digest = self.reference.digest();
        let entry = self.log.last_mut().expect("pushed above");
        entry.requests.push(Request {
            client,
            request,
            reply,
            effective,
        });
        entry.digest = digest;
        Ok(())
    }

    /// A registration at `index`: a client with a session keeps it; otherwise, with the table
    /// full, the least recently used session (lowest index, then lowest client) makes room.
    fn register(&mut self, client: u64, index: u64) {
        if self.sessions.contains_key(&client) {
            return;
        }
        if self.sessions.len() == self.clients_max {
            let victim = self
                .sessions
                .iter()
                .min_by_key(|(c, s)| (s.used, **c))
                .map(|(c, _)| *c)
                .expect("full, so not empty");
            self.sessions.remove(&victim);
            self.evictions += 1;
        }
        let session = Session {
            number: index,
            used: index,
        };
        self.sessions.insert(client, session);
        self.registrations.entry(client).or_default().insert(index);
    }

    /// A client got a successful reply.
    pub fn replied(
        &mut self,
        client: u64,
        request: u64,
        index: u64,
        reply: &[u8],
    ) -> Result<(), Violation> {
        self.checks += 1;
        if request == 0 {
            // A registration's reply names the session: one the log gave this client.
            let known = self
                .registrations
                .get(&client)
                .is_some_and(|numbers| numbers.contains(&index));
            if !known || !reply.is_empty() {
                return violation!(
                    "client {client} was told it registered session {index} ({reply:?}), which the log never gave it"
                );
            }
            return Ok(());
        }
        let op_is_read = self
            .requests
            .get(&(client, request))
            .is_some_and(R::is_read);
        if op_is_read && index == 0 {
            return Ok(()); // a read answered outside the log: only linearizability can judge it
        }
        let place = if op_is_read {
            // A retried read may be applied more than once, even twice in one batch entry: any
            // application with this reply will do (linearizability judges the rest).
            self.reads_at.get(&(client, request)).and_then(|at| {
                at.iter()
                    .find(|(i, p)| {
                        *i == index
                            && self.log[*i as usize - 1].requests[*p as usize].reply == reply
                    })
                    .or_else(|| at.iter().find(|(i, _)| *i == index))
                    .copied()
            })
        } else {
            self.effective_at
                .get(&(client, request))
                .copied()
                .filter(|(i, _)| *i == index)
        };
        let Some((index, position)) = place else {
            return violation!(
                "client {client} request {request} acknowledged at {index}, where it did not take effect ({:?})",
                self.effective_at.get(&(client, request))
            );
        };
        let applied = &self.log[index as usize - 1].requests[position as usize];
        if !applied.effective || applied.reply != reply {
            return violation!(
                "client {client} request {request} got reply {reply:?} at {index}, expected {:?}",
                applied.reply
            );
        }
        self.max_acked = self.max_acked.max(index);
        Ok(())
    }
}
