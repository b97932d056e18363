//! What the simulated clients run against the replicas: the state machine, how a request is
//! drawn and encoded, the reference that computes what each committed request must answer (the
//! model executes the log on it), and how a request and its reply look to the linearizability
//! checker.
//!
//! Two workloads: [`Kv`], the core's key-value machine (registers with compare-and-set), and
//! [`crate::redis_workload::Redis`], the Redis data model with its collections.

use crate::linearizability::{Input, Output};
use crate::prng::Prng;
use crate::simulation::Options;
use std::collections::BTreeMap;
use std::fmt::Debug;
use ziggy_core::digest::pair_hash;
use ziggy_core::state_machine::StateMachine;
use ziggy_core::wal::header::Operation;
use ziggy_core::{Config, KvStateMachine};

pub trait Workload: Sized {
    type Machine: StateMachine;
    type Op: Clone + Debug + PartialEq;
    type Reference: Reference<Op = Self::Op>;
    /// What a request addresses, drawn before the client's think time (the order the recorded
    /// seeds were drawn in).
    type Target;

    /// The workload of a run, and an empty reference state for its model.
    fn new(options: &Options, config: &Config) -> (Self, Self::Reference);
    fn target(&mut self, prng: &mut Prng) -> Self::Target;
    /// Request number `request` of client `client`, addressed to `target`.
    fn draw(
        &mut self,
        prng: &mut Prng,
        target: Self::Target,
        client: u64,
        request: u64,
    ) -> Self::Op;
    fn encode(op: &Self::Op) -> (Operation, Vec<u8>);
    /// The operation on one register that the linearizability checker sees; `None`: the
    /// request is checked by the model's reference alone.
    fn input(op: &Self::Op) -> Option<Input>;
    /// The register outcome a successful reply shows (only for requests with an input).
    fn output(op: &Self::Op, reply: &[u8]) -> Output;
    /// A client got `reply` to `op` (a workload that follows up on what it learns).
    fn replied(&mut self, _op: &Self::Op, _reply: &[u8]) {}
    /// What the run's requests reached, as named counters (for coverage tests and the summary).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// The model's state: committed requests execute on it in log order.
pub trait Reference {
    type Op: Clone + std::fmt::Debug + PartialEq;
    fn is_read(op: &Self::Op) -> bool;
    /// Executes `op`, committed at entry `index` stamped `timestamp`, and returns the reply
    /// bytes every replica must give.
    fn execute(&mut self, op: &Self::Op, index: u64, timestamp: u64) -> Vec<u8>;
    /// The digest a replica's state must have after the same requests.
    fn digest(&mut self) -> u64;
}

/// An operation of the key-value workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
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

/// The core's key-value machine: keys drawn from the seed's key space (or appended past each
/// other), values unique per request.
pub struct Kv {
    appending: bool,
    key_space: u64,
    value_size: u64,
    reads: crate::prng::Ppm,
    deletes: crate::prng::Ppm,
    cas: crate::prng::Ppm,
    /// Keys written so far in an appending workload (the next key's number).
    appended: u64,
}

impl Workload for Kv {
    type Machine = KvStateMachine;
    type Op = KvOp;
    type Reference = KvReference;
    type Target = Vec<u8>;

    fn new(options: &Options, _config: &Config) -> (Kv, KvReference) {
        let kv = Kv {
            appending: options.appending,
            key_space: options.key_space,
            value_size: options.value_size,
            reads: options.reads,
            deletes: options.deletes,
            cas: options.cas,
            appended: 0,
        };
        (kv, KvReference::default())
    }

    fn target(&mut self, prng: &mut Prng) -> Vec<u8> {
        if self.appending {
            self.appended += 1;
            format!("k{:012}", self.appended).into_bytes()
        } else {
            format!("k{}", prng.range(0, self.key_space - 1)).into_bytes()
        }
    }

    fn draw(&mut self, prng: &mut Prng, key: Vec<u8>, client: u64, request: u64) -> KvOp {
        let mut value = format!("c{client:x}-r{request}").into_bytes();
        let padded = prng.range(0, self.value_size) as usize;
        value.resize(padded.max(value.len()), b'.');
        if prng.chance(self.reads) {
            KvOp::Get { key }
        } else if prng.chance(self.deletes) {
            KvOp::Delete { key }
        } else if prng.chance(self.cas) {
            // Expect a value some earlier request of this client may have written, or absence.
            let expected = (request > 1 && prng.bool())
                .then(|| format!("c{client:x}-r{}", prng.range(1, request - 1)).into_bytes());
            KvOp::Cas {
                key,
                expected,
                new: value,
            }
        } else {
            KvOp::Put { key, value }
        }
    }

    fn encode(op: &KvOp) -> (Operation, Vec<u8>) {
        match op {
            KvOp::Put { key, value } => (KvStateMachine::PUT, KvStateMachine::put_body(key, value)),
            KvOp::Delete { key } => (KvStateMachine::DELETE, KvStateMachine::delete_body(key)),
            KvOp::Get { key } => (KvStateMachine::GET, KvStateMachine::get_body(key)),
            KvOp::Cas { key, expected, new } => (
                KvStateMachine::CAS,
                KvStateMachine::cas_body(key, expected.as_deref(), new),
            ),
        }
    }

    fn input(op: &KvOp) -> Option<Input> {
        Some(match op.clone() {
            KvOp::Put { key, value } => Input::Put { key, value },
            KvOp::Delete { key } => Input::Delete { key },
            KvOp::Get { key } => Input::Get { key },
            KvOp::Cas { key, expected, new } => Input::Cas { key, expected, new },
        })
    }

    fn output(op: &KvOp, reply: &[u8]) -> Output {
        match op {
            KvOp::Put { .. } => Output::Put,
            KvOp::Delete { .. } => Output::Delete {
                existed: reply.first() == Some(&1),
            },
            KvOp::Get { .. } => {
                Output::Get((reply.first() == Some(&1)).then(|| reply[1..].to_vec()))
            }
            KvOp::Cas { .. } => Output::Cas {
                swapped: reply.first() == Some(&1),
            },
        }
    }
}

/// The key-value machine's semantics over a map, with its digest kept as it changes.
#[derive(Default)]
pub struct KvReference {
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The digest of `kv` (see `digest::pairs_digest`).
    sum: u64,
}

impl KvReference {
    /// Sets (or with `None` removes) a key, keeping the running digest.
    fn set(&mut self, key: &[u8], value: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let old = match value {
            Some(value) => {
                self.sum = self.sum.wrapping_add(pair_hash(key, &value));
                self.kv.insert(key.to_vec(), value)
            }
            None => self.kv.remove(key),
        };
        if let Some(old) = &old {
            self.sum = self.sum.wrapping_sub(pair_hash(key, old));
        }
        old
    }
}

impl Reference for KvReference {
    type Op = KvOp;

    fn is_read(op: &KvOp) -> bool {
        matches!(op, KvOp::Get { .. })
    }

    fn execute(&mut self, op: &KvOp, _index: u64, _timestamp: u64) -> Vec<u8> {
        match op {
            KvOp::Put { key, value } => {
                self.set(key, Some(value.clone()));
                vec![KvStateMachine::REPLY_OK]
            }
            KvOp::Delete { key } => vec![self.set(key, None).is_some() as u8],
            KvOp::Get { key } => match self.kv.get(key) {
                Some(value) => [&[1u8][..], value].concat(),
                None => vec![0],
            },
            KvOp::Cas { key, expected, new } => {
                let swapped = self.kv.get(key) == expected.as_ref();
                if swapped {
                    self.set(key, Some(new.clone()));
                }
                vec![swapped as u8]
            }
        }
    }

    fn digest(&mut self) -> u64 {
        self.sum
    }
}

/// The state machine a run's clients drive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Machine {
    /// The core's key-value machine (`KvStateMachine`).
    #[default]
    Kv,
    /// The Redis data model (`ziggy_redis::RedisStateMachine`).
    Redis,
}

impl std::str::FromStr for Machine {
    type Err = String;

    fn from_str(name: &str) -> Result<Machine, String> {
        match name {
            "kv" => Ok(Machine::Kv),
            "redis" => Ok(Machine::Redis),
            other => Err(format!("unknown machine {other:?} (kv or redis)")),
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Machine::Kv => "kv",
            Machine::Redis => "redis",
        })
    }
}
