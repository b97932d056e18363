//! The checkers: an independent model of what the replicas must have done, built only from what
//! clients asked and what replicas reported, and checked at every step.
//!
//! - **No committed entry is lost or changed**: the first replica to apply an index fixes that
//!   entry; every other application of the index, by any replica, in any incarnation, must be the
//!   same entry. Indices are applied contiguously by each replica.
//! - **Every entry comes from a real request, and takes effect once**: an applied (client,
//!   request) was submitted by that client; a write request that reaches the log twice (a retry
//!   across a leader change) takes effect only the first time — as the replicas must agree.
//! - **Replies are right**: a reply names the index its request took effect at, and carries
//!   exactly the bytes the model computes there.
//! - **State matches**: whenever a replica opens or installs a checkpoint, and at the end, its
//!   state digest equals the model's at its applied index (so recovery is idempotent, and
//!   replicas converge).
//!
//! Linearizability of the clients' history is checked separately
//! ([`crate::linearizability`]).

use std::collections::{BTreeMap, BTreeSet};
use ziggy_core::digest::Digest;
use ziggy_core::KvStateMachine;

/// A client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } | Op::Cas { key, .. } => key,
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. })
    }
}

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

struct Committed {
    checksum: u32,
    client: u64,
    request: u64,
    reply: Vec<u8>,
    digest: u64,
    /// Whether this entry took effect (false: a duplicate of an earlier application).
    effective: bool,
}

#[derive(Default)]
pub struct Model {
    /// Every request any client submitted.
    requests: BTreeMap<(u64, u64), Op>,
    /// The committed log, by index (index i at i - 1).
    log: Vec<Committed>,
    /// Where each write request took effect.
    effective_at: BTreeMap<(u64, u64), u64>,
    /// Where each read request was applied (it may be applied more than once).
    reads_at: BTreeMap<(u64, u64), BTreeSet<u64>>,
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Each replica's last applied index in its current incarnation (None: not yet known).
    replica_applied: BTreeMap<u8, u64>,
    pub max_acked: u64,
    pub checks: u64,
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    /// The highest index any replica applied.
    pub fn committed(&self) -> u64 {
        self.log.len() as u64
    }

    pub fn submitted(&mut self, client: u64, request: u64, op: Op) {
        if let Some(previous) = self.requests.insert((client, request), op.clone()) {
            assert_eq!(previous, op, "a retry carries the same operation");
        }
    }

    /// Replica `replica` (re)started at `applied` (its checkpoint), with state digest `digest`.
    pub fn opened(&mut self, replica: u8, applied: u64, digest: u64) -> Result<(), Violation> {
        self.replica_applied.insert(replica, applied);
        self.state_matches(replica, applied, digest)
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
            return violation!("replica {replica}'s state at {applied} has digest {digest:#x}, expected {expected:#x}");
        }
        Ok(())
    }

    fn digest_at(&self, index: u64) -> u64 {
        match index {
            0 => Digest::new().finish(),
            i => self.log[i as usize - 1].digest,
        }
    }

    fn kv_digest(&self) -> u64 {
        let mut digest = Digest::new();
        for (key, value) in &self.kv {
            digest.field(key).field(value);
        }
        digest.finish()
    }

    /// Replica `replica` applied an entry.
    pub fn applied(
        &mut self,
        replica: u8,
        index: u64,
        checksum: u32,
        client: u64,
        request: u64,
    ) -> Result<(), Violation> {
        self.checks += 1;
        if let Some(&last) = self.replica_applied.get(&replica) {
            if index != last + 1 {
                return violation!("replica {replica} applied index {index} after {last}");
            }
        }
        self.replica_applied.insert(replica, index);
        if let Some(entry) = self.log.get(index as usize - 1) {
            if (entry.checksum, entry.client, entry.request) != (checksum, client, request) {
                return violation!(
                    "committed entry {index} changed: was client {} request {} checksum {:#x}, \
                     replica {replica} applied client {client} request {request} checksum {checksum:#x}",
                    entry.client,
                    entry.request,
                    entry.checksum
                );
            }
            return Ok(());
        }
        if index != self.committed() + 1 {
            return violation!(
                "replica {replica} applied entry {index}, but the log ends at {}",
                self.committed()
            );
        }
        self.commit_new(index, checksum, client, request)
    }

    fn commit_new(
        &mut self,
        index: u64,
        checksum: u32,
        client: u64,
        request: u64,
    ) -> Result<(), Violation> {
        let (reply, effective) = if client == 0 {
            (Vec::new(), false) // a leader's no-op
        } else {
            let Some(op) = self.requests.get(&(client, request)).cloned() else {
                return violation!(
                    "entry {index} (client {client} request {request}) was never submitted"
                );
            };
            if op.is_read() {
                self.reads_at
                    .entry((client, request))
                    .or_default()
                    .insert(index);
                (self.execute(&op), true)
            } else if let Some(&first) = self.effective_at.get(&(client, request)) {
                (self.log[first as usize - 1].reply.clone(), false)
            } else {
                self.effective_at.insert((client, request), index);
                (self.execute(&op), true)
            }
        };
        let digest = self.kv_digest();
        self.log.push(Committed {
            checksum,
            client,
            request,
            reply,
            digest,
            effective,
        });
        Ok(())
    }

    fn execute(&mut self, op: &Op) -> Vec<u8> {
        match op {
            Op::Put { key, value } => {
                self.kv.insert(key.clone(), value.clone());
                vec![KvStateMachine::REPLY_OK]
            }
            Op::Delete { key } => vec![self.kv.remove(key).is_some() as u8],
            Op::Get { key } => match self.kv.get(key) {
                Some(value) => [&[1u8][..], value].concat(),
                None => vec![0],
            },
            Op::Cas { key, expected, new } => {
                let swapped = self.kv.get(key) == expected.as_ref();
                if swapped {
                    self.kv.insert(key.clone(), new.clone());
                }
                vec![swapped as u8]
            }
        }
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
        let op_is_read = self
            .requests
            .get(&(client, request))
            .is_some_and(|op| op.is_read());
        if op_is_read && index == 0 {
            return Ok(()); // a read answered outside the log: only linearizability can judge it
        }
        let known = if op_is_read {
            self.reads_at
                .get(&(client, request))
                .is_some_and(|at| at.contains(&index))
        } else {
            self.effective_at.get(&(client, request)) == Some(&index)
        };
        if !known {
            return violation!(
                "client {client} request {request} acknowledged at {index}, where it did not take effect ({:?})",
                self.effective_at.get(&(client, request))
            );
        }
        let entry = &self.log[index as usize - 1];
        if !entry.effective || entry.reply != reply {
            return violation!(
                "client {client} request {request} got reply {reply:?} at {index}, expected {:?}",
                entry.reply
            );
        }
        self.max_acked = self.max_acked.max(index);
        Ok(())
    }
}
