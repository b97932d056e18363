//! The checkers: an independent model of what the replica must have done, built only from what
//! clients asked and what the replica reported, and checked at every step.
//!
//! - **No committed entry is lost or changed**: once an index is applied with some entry, every
//!   later application of that index (replay after a crash) is the same entry, and after every
//!   recovery the replica has applied at least every index it ever applied or acknowledged.
//! - **Every entry comes from a real request, applied once**: an applied (client, request) was
//!   submitted by that client, and is applied at one index only.
//! - **Replies are right**: a reply's index is where its request was applied, and its bytes are
//!   what the model computes.
//! - **Reads return only written values**: a read sees exactly the model's state at the replica's
//!   applied index.
//! - **Recovery is idempotent**: after every recovery (also one interrupted by a crash and run
//!   again) the state digest equals the model's digest at the recovered index.

use std::collections::BTreeMap;
use ziggy_core::digest::Digest;
use ziggy_core::KvStateMachine;

/// A client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
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

struct AppliedEntry {
    checksum: u32,
    client: u64,
    request: u64,
    reply: Vec<u8>,
    digest: u64,
}

#[derive(Default)]
pub struct Model {
    /// Every request any client submitted.
    requests: BTreeMap<(u64, u64), Op>,
    /// The committed log as first applied, by index (1-based: index i at i - 1).
    log: Vec<AppliedEntry>,
    applied_at: BTreeMap<(u64, u64), u64>,
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The highest index acknowledged to a client.
    pub max_acked: u64,
    /// Where the replica's current incarnation is in replaying/applying.
    replica_applied: u64,
    pub checks: u64,
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    pub fn committed(&self) -> u64 {
        self.log.len() as u64
    }

    pub fn submitted(&mut self, client: u64, request: u64, op: Op) {
        if let Some(previous) = self.requests.insert((client, request), op.clone()) {
            assert_eq!(previous, op, "a retry carries the same operation");
        }
    }

    /// The replica restarted: it will replay from its checkpoint.
    pub fn restarted(&mut self) {
        self.replica_applied = 0;
    }

    fn kv_digest(&self) -> u64 {
        let mut digest = Digest::new();
        for (key, value) in &self.kv {
            digest.field(key).field(value);
        }
        digest.finish()
    }

    /// The replica applied an entry.
    pub fn applied(
        &mut self,
        index: u64,
        checksum: u32,
        client: u64,
        request: u64,
    ) -> Result<(), Violation> {
        self.checks += 1;
        if self.replica_applied != 0 && index != self.replica_applied + 1 {
            return violation!("applied index {index} after {}", self.replica_applied);
        }
        self.replica_applied = index;
        if let Some(entry) = self.log.get(index as usize - 1) {
            if (entry.checksum, entry.client, entry.request) != (checksum, client, request) {
                return violation!(
                    "committed entry {index} changed: was client {} request {} checksum {:#x}, \
                     now client {client} request {request} checksum {checksum:#x}",
                    entry.client,
                    entry.request,
                    entry.checksum
                );
            }
            return Ok(());
        }
        if index != self.committed() + 1 {
            return violation!(
                "entry {index} applied, but the log ends at {}",
                self.committed()
            );
        }
        let Some(op) = self.requests.get(&(client, request)).cloned() else {
            return violation!(
                "entry {index} (client {client} request {request}) was never submitted"
            );
        };
        if let Some(previous) = self.applied_at.insert((client, request), index) {
            return violation!(
                "client {client} request {request} applied twice: at {previous} and {index}"
            );
        }
        let reply = match &op {
            Op::Put { key, value } => {
                self.kv.insert(key.clone(), value.clone());
                vec![KvStateMachine::REPLY_OK]
            }
            Op::Delete { key } => vec![self.kv.remove(key).is_some() as u8],
        };
        let digest = self.kv_digest();
        self.log.push(AppliedEntry {
            checksum,
            client,
            request,
            reply,
            digest,
        });
        Ok(())
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
        match self.applied_at.get(&(client, request)) {
            None => violation!(
                "client {client} request {request} acknowledged at {index} but never applied"
            ),
            Some(&at) if at != index => {
                violation!(
                    "client {client} request {request} acknowledged at {index} but applied at {at}"
                )
            }
            Some(_) => {
                let expected = &self.log[index as usize - 1].reply;
                if expected != reply {
                    return violation!(
                        "client {client} request {request} got reply {reply:?}, expected {expected:?}"
                    );
                }
                self.max_acked = self.max_acked.max(index);
                Ok(())
            }
        }
    }

    /// A client read `key` and saw `value` at the replica's applied index.
    pub fn read(&mut self, key: &[u8], value: Option<&[u8]>, index: u64) -> Result<(), Violation> {
        self.checks += 1;
        if index != self.committed() {
            return violation!(
                "read at index {index}, but the log is committed to {}",
                self.committed()
            );
        }
        let expected = self.kv.get(key).map(|v| v.as_slice());
        if expected != value {
            return violation!(
                "read of {:?} at {index} saw {value:?}, expected {expected:?}",
                String::from_utf8_lossy(key)
            );
        }
        Ok(())
    }

    /// The replica finished recovery at `applied`, with a state digest of `digest`.
    pub fn recovered(&mut self, applied: u64, digest: u64) -> Result<(), Violation> {
        self.checks += 1;
        if applied < self.committed() {
            return violation!(
                "recovery lost committed entries: recovered to {applied}, but {} were applied \
                 before (the highest acknowledged: {})",
                self.committed(),
                self.max_acked
            );
        }
        let expected = if applied == 0 {
            Model::new().kv_digest()
        } else {
            self.log[applied as usize - 1].digest
        };
        if expected != digest {
            return violation!(
                "recovered state at {applied} has digest {digest:#x}, expected {expected:#x}"
            );
        }
        Ok(())
    }
}
