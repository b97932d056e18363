//! One simulation run: a replica over simulated storage, simulated clients, faults, and the
//! checkers of [`crate::model`], all driven by one seed.
//!
//! A run has two phases. In the **fault phase** clients issue requests while the storage tears,
//! rots and misdirects and the replica crashes (also during recovery). Once enough requests have
//! completed, the **settle phase** stops injecting faults and requires every outstanding request to
//! be answered within a tick bound; a final crash and recovery must then reproduce the model's
//! state exactly.

use crate::model::{Model, Op, Violation};
use crate::prng::{Ppm, Prng};
use crate::storage::{FaultAtlas, SimStorage, StorageFaults};
use ziggy_core::digest::Digest;
use ziggy_core::storage_contract::Completion;
use ziggy_core::{
    Config, Error, Event, KvStateMachine, Layout, PlantedBug, Replica, RequestError, StateMachine,
    Status, Zone,
};

/// Everything a run does, drawn from its seed (swarm testing: each seed its own mix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub seed: u64,
    pub clients: u64,
    pub key_space: u64,
    /// Client operations to complete before the settle phase.
    pub requests: u64,
    /// Per tick: the chance that the replica crashes.
    pub crash: Ppm,
    /// Per tick while the replica is recovering: the chance that it crashes again.
    pub crash_recovering: Ppm,
    /// Per tick: the chance that a latent sector fault is injected.
    pub latent: Ppm,
    /// Of client operations: the share that are reads, and deletes.
    pub reads: Ppm,
    pub deletes: Ppm,
    /// Ticks a client waits for a reply before retrying.
    pub request_timeout: u64,
    /// Ticks between a client's operations, at most.
    pub think_max: u64,
    pub storage: StorageFaults,
    /// A zone where faults beyond the fault model strike: the replica may halt, and must then
    /// name a region that really was damaged.
    pub fatal: Option<Zone>,
    pub planted_bug: Option<PlantedBug>,
}

impl Options {
    pub fn from_seed(seed: u64) -> Options {
        let mut prng = Prng::new(seed);
        let config = Config::test();
        let clients = prng.range(1, config.clients_max as u64);
        let fatal = if prng.chance(Ppm::percent(10)) {
            Some([Zone::WalEntries, Zone::Grid, Zone::ClientReplies][prng.index(3)])
        } else {
            None
        };
        let mut atlas = FaultAtlas::none();
        for zone in Zone::ALL {
            if prng.chance(Ppm::percent(80)) {
                atlas.tear.insert(zone);
            }
        }
        if prng.chance(Ppm::percent(60)) {
            atlas.latent.insert(Zone::WalHeaders);
        }
        if prng.chance(Ppm::percent(40)) {
            atlas.latent.insert(Zone::Superblock);
        }
        if prng.chance(Ppm::percent(40)) {
            atlas.misdirect.insert(Zone::WalHeaders);
        }
        if let Some(zone) = fatal {
            atlas.latent.insert(zone);
            atlas.misdirect.insert(zone);
            if zone == Zone::WalEntries {
                // The redundant headers must stay whole for entry damage to be detectable on a
                // single replica (a torn header sector and a rotten entry together are two faults
                // that no single copy can tell from a torn write).
                atlas.tear.remove(&Zone::WalHeaders);
                atlas.latent.remove(&Zone::WalHeaders);
                atlas.misdirect.remove(&Zone::WalHeaders);
            }
        }
        let storage = StorageFaults {
            atlas,
            tear: Ppm(prng.range(0, 1_000_000) as u32),
            misdirect: Ppm(prng.range(0, 20_000) as u32),
            latent_error: Ppm(prng.range(0, 1_000_000) as u32),
            latency_max: prng.range(1, 12),
        };
        Options {
            seed,
            clients,
            key_space: prng.range(1, 24),
            requests: prng.range(50, 2_000),
            crash: Ppm(prng.range(0, 10_000) as u32),
            crash_recovering: Ppm(prng.range(0, 150_000) as u32),
            latent: Ppm(prng.range(0, 3_000) as u32),
            reads: Ppm(prng.range(0, 500_000) as u32),
            deletes: Ppm(prng.range(0, 300_000) as u32),
            request_timeout: prng.range(20, 200),
            think_max: prng.range(0, 20),
            storage,
            fatal,
            planted_bug: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The replica halted on damage the run injected beyond the fault model, and named it.
    PassHalted(String),
    /// A checker found a violated invariant.
    Correctness(String),
    /// The settle phase did not finish within its bound.
    Liveness(String),
}

impl Verdict {
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Pass | Verdict::PassHalted(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub ops: u64,
    pub crashes: u64,
    pub faults: u64,
    pub ticks: u64,
    pub checkpoints: u64,
    pub checks: u64,
    pub trace_hash: u64,
}

struct PendingRequest {
    request: u64,
    op: Op,
    resend_at: u64,
}

struct Client {
    id: u64,
    next_request: u64,
    pending: Option<PendingRequest>,
    next_action_at: u64,
}

/// Ticks the settle phase may take to answer every outstanding request.
const SETTLE_TICKS: u64 = 20_000;
/// Ticks the fault phase may take, at most (a liveness bound on the fault phase itself).
const FAULT_PHASE_TICKS: u64 = 200_000;

pub struct Simulation {
    options: Options,
    config: Config,
    prng: Prng,
    storage: SimStorage,
    replica: Replica<KvStateMachine>,
    clients: Vec<Client>,
    model: Model,
    trace: Digest,
    tick: u64,
    ops: u64,
    crashes: u64,
    faults: u64,
    checkpoints: u64,
    settling: bool,
    halted: Option<Error>,
}

impl Simulation {
    pub fn new(options: Options) -> Simulation {
        let mut prng = Prng::new(options.seed ^ 0x0005_eed0_fa11);
        let mut config = Config::test();
        config.planted_bug = options.planted_bug;
        let layout = Layout::new(&config);
        let mut storage = SimStorage::new(layout, options.storage.clone(), prng.fork());
        let cluster = prng.next_u64();
        for (offset, bytes) in Replica::<KvStateMachine>::format(&config, cluster, 0) {
            storage.write_durable(offset, &bytes);
        }
        let clients = (0..options.clients)
            .map(|_| Client {
                id: prng.next_u64() | 1,
                next_request: 1,
                pending: None,
                next_action_at: 0,
            })
            .collect();
        let replica = Replica::new(config.clone()).expect("test config is valid");
        Simulation {
            options,
            config,
            prng,
            storage,
            replica,
            clients,
            model: Model::new(),
            trace: Digest::new(),
            tick: 0,
            ops: 0,
            crashes: 0,
            faults: 0,
            checkpoints: 0,
            settling: false,
            halted: None,
        }
    }

    /// Runs to the end and returns the outcome. Panics (a crash of the core) propagate.
    pub fn run(mut self) -> Outcome {
        tracing::info!(options = ?self.options, "start");
        self.replica.open(&mut self.storage);
        let verdict = match self.run_phases() {
            Ok(verdict) => verdict,
            Err(violation) => Verdict::Correctness(violation.0),
        };
        tracing::info!(?verdict, ops = self.ops, crashes = self.crashes, faults = self.faults, checkpoints = self.checkpoints, ticks = self.tick, checks = self.model.checks, storage = ?self.storage.stats, "end");
        Outcome {
            verdict,
            ops: self.ops,
            crashes: self.crashes,
            faults: self.faults + self.storage.stats.misdirected + self.storage.stats.torn_sectors,
            ticks: self.tick,
            checkpoints: self.checkpoints,
            checks: self.model.checks,
            trace_hash: self.trace.finish(),
        }
    }

    fn run_phases(&mut self) -> Result<Verdict, Violation> {
        while self.ops < self.options.requests {
            if self.tick > FAULT_PHASE_TICKS {
                return Ok(Verdict::Liveness(format!(
                    "fault phase: only {} of {} operations completed in {} ticks",
                    self.ops, self.options.requests, FAULT_PHASE_TICKS
                )));
            }
            self.step()?;
            if let Some(verdict) = self.halt_verdict()? {
                return Ok(verdict);
            }
        }
        self.settle();
        let deadline = self.tick + SETTLE_TICKS;
        while self.clients.iter().any(|c| c.pending.is_some())
            || self.replica.status() != Status::Ready
        {
            if self.tick > deadline {
                return Ok(Verdict::Liveness(format!(
                    "settle phase: requests still outstanding after {SETTLE_TICKS} ticks without faults"
                )));
            }
            self.step()?;
            if let Some(verdict) = self.halt_verdict()? {
                return Ok(verdict);
            }
        }
        // A final crash and recovery must reproduce the model's state exactly.
        self.crash();
        let deadline = self.tick + SETTLE_TICKS;
        while self.replica.status() != Status::Ready {
            if self.tick > deadline {
                return Ok(Verdict::Liveness("final recovery did not finish".into()));
            }
            self.step()?;
            if let Some(verdict) = self.halt_verdict()? {
                return Ok(verdict);
            }
        }
        Ok(Verdict::Pass)
    }

    /// Turns faults off (damage already done stays).
    fn settle(&mut self) {
        tracing::info!(tick = self.tick, "settle: faults off");
        self.settling = true;
        let mut faults = StorageFaults::none();
        faults.latency_max = self.options.storage.latency_max;
        self.storage.set_faults(faults);
    }

    fn halt_verdict(&mut self) -> Result<Option<Verdict>, Violation> {
        let Some(error) = self.halted.clone() else {
            return Ok(None);
        };
        match &error {
            Error::Corrupt { offset, len, .. } if self.options.fatal.is_some() => {
                if self.storage.damaged_within(*offset, *len) {
                    Ok(Some(Verdict::PassHalted(error.to_string())))
                } else {
                    Err(Violation(format!(
                        "halted on corruption that was never injected: {error}"
                    )))
                }
            }
            _ => Err(Violation(format!(
                "replica halted within the fault model: {error}"
            ))),
        }
    }

    fn step(&mut self) -> Result<(), Violation> {
        self.tick += 1;
        if !self.settling {
            let crash = match self.replica.status() {
                Status::Opening => self.options.crash_recovering,
                _ => self.options.crash,
            };
            if self.prng.chance(crash) {
                self.crash();
            }
            if self.prng.chance(self.options.latent) {
                if let Some(sector) = self.storage.inject_latent() {
                    self.faults += 1;
                    self.trace.u64(0xfa).u64(sector);
                    tracing::debug!(tick = self.tick, sector, "fault: latent sector");
                }
            }
        }
        for c in 0..self.clients.len() {
            self.client_step(c)?;
        }
        for completion in self.storage.advance(self.tick) {
            self.deliver(completion);
            self.drain()?;
        }
        self.replica.tick();
        self.drain()
    }

    fn crash(&mut self) {
        self.crashes += 1;
        self.trace.u64(0xc4a5).u64(self.tick);
        tracing::debug!(tick = self.tick, status = ?self.replica.status(), pending = self.storage.pending(), "crash");
        self.storage.crash();
        self.model.restarted();
        self.replica = Replica::new(self.config.clone()).expect("valid config");
        self.replica.open(&mut self.storage);
    }

    fn deliver(&mut self, completion: Completion) {
        match completion {
            Completion::Read { id, result } => {
                self.trace.u64(id.0).u64(
                    result
                        .as_ref()
                        .map_or(1, |d| ziggy_core::checksum::checksum(d) as u64),
                );
                tracing::trace!(tick = self.tick, ?id, ok = result.is_ok(), "read complete");
                let result = result.as_deref().map_err(|e| *e);
                self.replica.on_read_complete(&mut self.storage, id, result);
            }
            Completion::Write { id, result } => {
                self.trace.u64(id.0);
                tracing::trace!(tick = self.tick, ?id, "write complete");
                self.replica
                    .on_write_complete(&mut self.storage, id, result);
            }
        }
    }

    fn client_step(&mut self, c: usize) -> Result<(), Violation> {
        let tick = self.tick;
        let client = &mut self.clients[c];
        if let Some(pending) = &mut client.pending {
            if tick >= pending.resend_at {
                pending.resend_at = tick + self.options.request_timeout;
                let (id, request, op) = (client.id, pending.request, pending.op.clone());
                tracing::debug!(tick, client = id, request, "retry");
                self.send(id, request, &op);
                return self.drain();
            }
            return Ok(());
        }
        if tick < client.next_action_at || self.ops >= self.options.requests && !self.settling {
            return Ok(());
        }
        if self.settling {
            return Ok(()); // no new requests while settling
        }
        client.next_action_at = tick + self.prng.range(0, self.options.think_max);
        let key = format!("k{}", self.prng.range(0, self.options.key_space - 1)).into_bytes();
        if self.prng.chance(self.options.reads) {
            return self.read(&key);
        }
        let client = &mut self.clients[c];
        let request = client.next_request;
        client.next_request += 1;
        let op = if self.prng.chance(self.options.deletes) {
            Op::Delete { key }
        } else {
            let value = format!("c{:x}-r{}", client.id, request).into_bytes();
            Op::Put { key, value }
        };
        let id = client.id;
        client.pending = Some(PendingRequest {
            request,
            op: op.clone(),
            resend_at: tick + self.options.request_timeout,
        });
        self.model.submitted(id, request, op.clone());
        self.send(id, request, &op);
        self.drain()
    }

    fn send(&mut self, client: u64, request: u64, op: &Op) {
        let (operation, body) = match op {
            Op::Put { key, value } => (KvStateMachine::PUT, KvStateMachine::put_body(key, value)),
            Op::Delete { key } => (KvStateMachine::DELETE, KvStateMachine::delete_body(key)),
        };
        self.trace.u64(0x5e4d).u64(client).u64(request);
        self.replica
            .submit(&mut self.storage, client, request, operation, &body);
    }

    fn read(&mut self, key: &[u8]) -> Result<(), Violation> {
        let Ok((state, index)) = self.replica.state() else {
            return Ok(());
        };
        let value = state.get(key).map(|v| v.to_vec());
        self.trace
            .u64(0x4ead)
            .u64(index)
            .field(value.as_deref().unwrap_or(b"-"));
        self.ops += 1;
        self.model.read(key, value.as_deref(), index)
    }

    fn drain(&mut self) -> Result<(), Violation> {
        let events: Vec<Event> = self.replica.drain_events().collect();
        let mut opened = false;
        for event in events {
            match event {
                Event::Applied {
                    index,
                    checksum,
                    client,
                    request,
                } => {
                    self.trace.u64(index).u64(checksum as u64);
                    tracing::debug!(tick = self.tick, index, client, request, "applied");
                    self.model.applied(index, checksum, client, request)?;
                }
                Event::Opened {
                    checkpoint,
                    head,
                    truncated,
                } => {
                    tracing::debug!(tick = self.tick, checkpoint, head, truncated, "opened");
                    opened = true;
                }
                Event::Checkpointed { index, sequence } => {
                    self.checkpoints += 1;
                    tracing::debug!(tick = self.tick, index, sequence, "checkpoint");
                }
                Event::Halted(error) => {
                    tracing::debug!(tick = self.tick, %error, "halted");
                    self.halted = Some(error);
                }
            }
        }
        if opened {
            let (state, applied) = self.replica.state().expect("opened means ready");
            self.model.recovered(applied, state.digest())?;
        }
        let replies: Vec<_> = self.replica.drain_replies().collect();
        for reply in replies {
            self.trace
                .u64(reply.client)
                .u64(reply.request)
                .u64(reply.index);
            let Some(c) = self.clients.iter().position(|c| c.id == reply.client) else {
                return Err(Violation(format!(
                    "reply to unknown client {}",
                    reply.client
                )));
            };
            match reply.result {
                Ok(bytes) => {
                    self.model
                        .replied(reply.client, reply.request, reply.index, &bytes)?;
                    let client = &mut self.clients[c];
                    if client
                        .pending
                        .as_ref()
                        .is_some_and(|p| p.request == reply.request)
                    {
                        client.pending = None;
                        self.ops += 1;
                    }
                }
                Err(RequestError::Busy | RequestError::NotReady | RequestError::Halted) => {
                    // Retried on the client's timer (backing off briefly).
                    let tick = self.tick;
                    if let Some(p) = self.clients[c]
                        .pending
                        .as_mut()
                        .filter(|p| p.request == reply.request)
                    {
                        p.resend_at = p.resend_at.min(tick + 5);
                    }
                }
                Err(error) => {
                    return Err(Violation(format!(
                        "client {} request {} refused: {error}",
                        reply.client, reply.request
                    )))
                }
            }
        }
        Ok(())
    }
}
