//! One simulation run: a cluster of 1–5 replicas over simulated disks and a simulated network,
//! simulated clients, faults, and the checkers, all driven by one seed.
//!
//! Phases:
//! 1. **Faults**: clients issue requests while replicas crash and restart (also mid-recovery),
//!    disks tear, rot and misdirect, the network drops, delays, duplicates, reorders and
//!    partitions, and replica clocks drift.
//! 2. **Settle**: every fault stops, the network heals and every replica restarts; all
//!    outstanding requests must be answered, and all replicas must converge on the same state,
//!    within tick bounds.
//! 3. **Liveness** (`--liveness`): the heal comes at a random point; afterwards every client's
//!    next request must commit within [`LIVENESS_TICKS`].
//!
//! At the end the clients' history must be linearizable.

use std::collections::{BTreeMap, BTreeSet};

use crate::linearizability::{self, Budget};
use crate::model::{Model, Violation};
use crate::network::{NetworkOptions, SimNetwork};
use crate::prng::{Ppm, Prng};
use crate::storage::{FaultAtlas, SimGrid, SimStorage, StorageFaults};
use crate::witness;
use crate::workload::{Machine, Workload};
use ziggy_core::client::ClientError;
use ziggy_core::digest::Digest;
use ziggy_core::marks::Marks;
use ziggy_core::message::{Command, Header, ReplyStatus, CLIENT};
use ziggy_core::replica::Role;
use ziggy_core::state_machine::StateMachine;
use ziggy_core::storage_contract::Completion;
use ziggy_core::{Config, Error, Event, Layout, PlantedBug, Replica, Status, Zone};

/// Everything a run does, drawn from its seed (swarm testing: each seed its own mix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub seed: u64,
    pub replicas: u8,
    pub clients: u8,
    pub key_space: u64,
    /// The longest value a write pads to (values are unique, so at least their name's length).
    pub value_size: u64,
    /// Client operations to complete before the settle phase.
    pub requests: u64,
    /// Per tick, per replica: the chance that it crashes; while it recovers; that a crashed
    /// replica restarts.
    pub crash: Ppm,
    pub crash_recovering: Ppm,
    pub restart: Ppm,
    /// Per tick: the chance that a latent sector fault is injected into some replica.
    pub latent: Ppm,
    /// Of client operations: the shares of reads, deletes and compare-and-sets.
    pub reads: Ppm,
    pub deletes: Ppm,
    pub cas: Ppm,
    /// Ticks a client waits for a reply before retrying (at another replica).
    pub request_timeout: u64,
    pub think_max: u64,
    /// Per replica, the storage faults it may suffer.
    pub storage: Vec<StorageFaults>,
    pub network: NetworkOptions,
    /// Per replica: the chance per tick that its clock misses a tick (drift).
    pub drift: Vec<Ppm>,
    /// Single replica only: a zone where damage beyond the fault model strikes; the replica may
    /// halt, and must then name a region that really was damaged.
    pub fatal: Option<Zone>,
    pub liveness: bool,
    pub planted_bug: Option<PlantedBug>,
    /// Per tick: the chance that a replica's data file is replaced by a freshly formatted one (a
    /// disk swap, a wiped and reformatted node). Peers must refuse it; it stays out for good, so
    /// at most `replaceable` replicas (a minority, with the rotting ones) are replaced.
    pub replace: Ppm,
    pub replaceable: u8,
    /// Per tick, per client with a request in flight: the chance that it gives up on it (no
    /// reply ever; it goes on as a new client, as a restarted application would).
    pub give_up: Ppm,
    /// Per tick, per replica: the chance that its process freezes for up to `pause_max` ticks,
    /// then resumes with its clock jumped by the ticks it missed.
    pub pause: Ppm,
    pub pause_max: u64,
    /// Scripted: replica `.0` is down from the `.1`th completed client operation until the
    /// `.2`th (a follower that falls behind the leader's checkpoints, for state-sync tests).
    pub down: Option<(u8, u64, u64)>,
    /// Per crash of a replica whose entries and headers may rot: the chance that both copies of
    /// its last durable entry rot (`rot_last_durable_slot`).
    pub colocated: Ppm,
    /// Writes go to new keys, each past every key before it (an append-only workload, as a
    /// log or a time series writes), instead of keys drawn from `key_space`.
    pub appending: bool,
    /// The replicas' configuration instead of `Config::test()` (benchmarks at other sizes).
    pub config: Option<Config>,
    /// Liveness mode: the heal comes no earlier than this many operations.
    pub heal_from: u64,
    /// The fault phase's tick budget: a run that has not finished its requests by then settles.
    pub fault_ticks: u64,
    /// A calm fill: no fault of any kind until this many operations have completed (a large
    /// state built at full speed, then faults on it). The fault budget counts from then.
    pub calm_until: u64,
    /// The state machine the clients run (not drawn: a seed replays with the machine it was
    /// found on).
    pub machine: Machine,
}

impl Options {
    pub fn from_seed(seed: u64) -> Options {
        let mut prng = Prng::new(seed);
        let replicas = [1, 1, 2, 3, 3, 3, 4, 5, 5][prng.index(9)];
        Options::for_cluster(seed, replicas, &mut prng)
    }

    /// A seed's options with the cluster size fixed (the rest still drawn from the seed).
    pub fn with_replicas(seed: u64, replicas: u8) -> Options {
        let mut prng = Prng::new(seed);
        let _ = prng.index(9);
        Options::for_cluster(seed, replicas, &mut prng)
    }

    /// A seed's options for hunting a planted bug: the seed's swarm, steered to where the bug
    /// lives (a bug that needs rotten WAL entries gets a rotting replica, and so on), so that a
    /// few hundred seeds show whether the checkers catch it.
    pub fn for_bug(seed: u64, bug: PlantedBug) -> Options {
        let mut options = match bug {
            PlantedBug::VoteDespiteFaulty
            | PlantedBug::LocalReads
            | PlantedBug::StaleTruncate
            | PlantedBug::TornAnywhere => Options::with_replicas(seed, 3),
            _ => Options::from_seed(seed),
        };
        options.planted_bug = Some(bug);
        match bug {
            PlantedBug::VoteDespiteFaulty => {
                // Replica 0 rots in its WAL entries, often, and restarts often to notice (and
                // it is the only one that rots).
                if let Some(r) = (0..options.storage.len())
                    .find(|&r| options.storage[r].atlas.latent.contains(&Zone::WalEntries))
                {
                    options.storage.swap(0, r);
                }
                let mut prng = Prng::new(seed ^ 0xb06);
                options.storage[0] = storage_faults(&mut prng, None, true);
                options.storage[0]
                    .atlas
                    .latent
                    .retain(|z| *z == Zone::WalEntries);
                options.latent = Ppm(20_000);
                options.crash = Ppm(2_000);
            }
            PlantedBug::LocalReads => {
                // Long partitions: a new leader commits while the old one still answers.
                options.network.partition = Ppm(5_000);
                options.network.heal = Ppm(500);
                options.reads = Ppm(500_000);
                // Slow clocks: a deposed leader notices late that it lost its quorum.
                let mut prng = Prng::new(seed ^ 0xd41f7);
                options.drift = (0..3).map(|_| Ppm(prng.range(0, 700_000) as u32)).collect();
            }
            PlantedBug::TornAnywhere => {
                // Replica 0 rots in its entries and headers, and both copies of its last durable
                // entry rot at most crashes.
                if let Some(r) = (0..options.storage.len())
                    .find(|&r| options.storage[r].atlas.latent.contains(&Zone::WalEntries))
                {
                    options.storage.swap(0, r);
                }
                let mut prng = Prng::new(seed ^ 0x7042);
                options.storage[0] = storage_faults(&mut prng, None, true);
                let atlas = &mut options.storage[0].atlas;
                atlas.latent.insert(Zone::WalHeaders);
                // As `storage_faults` keeps it where both rings rot: no misdirected WAL writes.
                atlas.misdirect.remove(&Zone::WalHeaders);
                atlas.misdirect.remove(&Zone::WalEntries);
                options.colocated = Ppm::percent(80);
                options.crash = Ppm(2_000);
            }
            PlantedBug::StaleTruncate => {
                // Leaders change often (so followers truncate), and replicas crash soon after.
                options.network.partition = Ppm(5_000);
                options.network.heal = Ppm(2_000);
                options.crash = Ppm(2_000);
            }
            _ => {}
        }
        options
    }

    /// A fault-free cluster of `replicas` (for benchmarks): perfect disks and network, no
    /// crashes, no drift; IO latency and network delay stay as the seed draws them.
    pub fn fault_free(seed: u64, replicas: u8) -> Options {
        let mut options = Options::with_replicas(seed, replicas);
        options.fatal = None;
        options.crash = Ppm::NEVER;
        options.crash_recovering = Ppm::NEVER;
        options.latent = Ppm::NEVER;
        for storage in &mut options.storage {
            let latency = storage.latency_max;
            *storage = StorageFaults::none();
            storage.latency_max = latency;
        }
        let delay = options.network.delay_mean;
        options.network = NetworkOptions::perfect();
        options.network.delay_mean = delay;
        options.drift = vec![Ppm::NEVER; replicas as usize];
        options
    }

    /// A fault-free cluster of 3 writing 256-byte values over `keys` keys, whose replica 2 is
    /// down from the `down.0`th to the `down.1`th operation (state-sync tests and bench).
    pub fn lagging(seed: u64, keys: u64, requests: u64, down: (u64, u64)) -> Options {
        let mut options = Options::fault_free(seed, 3);
        options.key_space = keys;
        options.value_size = Config::test().value_size_max as u64;
        options.requests = requests;
        options.reads = Ppm::NEVER;
        options.deletes = Ppm::NEVER;
        options.replace = Ppm::NEVER;
        options.give_up = Ppm::NEVER;
        options.pause = Ppm::NEVER;
        options.down = Some((2, down.0, down.1));
        options
    }

    fn for_cluster(seed: u64, replicas: u8, prng: &mut Prng) -> Options {
        let config = Config::test();
        let fatal = (replicas == 1 && prng.chance(Ppm::percent(10)))
            .then(|| [Zone::WalEntries, Zone::Grid, Zone::ClientReplies][prng.index(3)]);
        // At most a minority of replicas may rot (so a quorum keeps every committed entry).
        let faulty_max = (replicas as u64 - 1) / 2;
        let faulty = prng.range(0, faulty_max);
        let replaceable = (faulty_max - faulty) as u8;
        let replace = if replicas >= 3 && prng.chance(Ppm::percent(30)) {
            Ppm(prng.range(0, 300) as u32)
        } else {
            Ppm::NEVER
        };
        let storage = (0..replicas)
            .map(|r| storage_faults(prng, fatal, replicas > 1 && (r as u64) < faulty))
            .collect();
        // A third of the seeds go past the session table (up to 4x `clients_max`), where
        // registrations evict sessions; the rest stay within it, where sessions live long.
        let clients_max = config.clients_max as u64;
        let clients = if prng.chance(Ppm::percent(33)) {
            prng.range(clients_max + 1, 4 * clients_max)
        } else {
            prng.range(1, clients_max)
        } as u8;
        let network = NetworkOptions {
            drop: Ppm(prng.range(0, 100_000) as u32),
            duplicate: Ppm(prng.range(0, 50_000) as u32),
            delay_min: 1,
            delay_mean: prng.range(1, 10),
            queue_max: 256,
            partition: Ppm(prng.range(0, 5_000) as u32),
            heal: Ppm(prng.range(2_000, 50_000) as u32),
            one_way: Ppm(prng.range(0, 500_000) as u32),
            ..NetworkOptions::perfect() // the wider knobs: drawn by `Options::widened`
        };
        Options {
            seed,
            replicas,
            clients,
            // Log-uniform from 1 to 100,000 keys: many seeds contend on a few keys, some spread
            // over more keys than a memtable holds (the LSM grows levels).
            key_space: 10f64.powf(prng.range(0, 5_000) as f64 / 1_000.0) as u64,
            value_size: [0, 16, 64, config.value_size_max as u64][prng.index(4)],
            requests: prng.range(50, 1_500),
            crash: Ppm(prng.range(0, 600) as u32),
            crash_recovering: Ppm(prng.range(0, 100_000) as u32),
            restart: Ppm(prng.range(2_000, 100_000) as u32),
            latent: Ppm(prng.range(0, 3_000) as u32),
            reads: Ppm(prng.range(0, 400_000) as u32),
            deletes: Ppm(prng.range(0, 200_000) as u32),
            cas: Ppm(prng.range(0, 300_000) as u32),
            request_timeout: prng.range(100, 400),
            think_max: prng.range(0, 20),
            storage,
            network,
            drift: (0..replicas)
                .map(|_| Ppm(prng.range(0, 100_000) as u32))
                .collect(),
            fatal,
            liveness: false,
            planted_bug: None,
            replace,
            replaceable,
            give_up: Ppm::NEVER,
            pause: Ppm::NEVER,
            pause_max: 1,
            down: None,
            colocated: Ppm::NEVER,
            appending: false,
            machine: Machine::Kv,
            config: None,
            heal_from: 0,
            fault_ticks: FAULT_PHASE_TICKS,
            calm_until: 0,
        }
        .widened(&config)
    }

    /// The wider fault model: write errors, misdirected reads, stalls, delay spikes, corrupted
    /// packets, clients cut off from replicas, clients that give up, process pauses, faulty
    /// replicas anywhere, long seeds. Drawn from a stream of its own, so that the other knobs
    /// of a seed keep the values they had before these existed. Each knob is off in about half
    /// the seeds, so that every fault is also seen alone.
    fn widened(mut self, config: &Config) -> Options {
        let mut prng = Prng::new(self.seed ^ 0x0077_1de5_eed5);
        let maybe = |prng: &mut Prng, max: u64| {
            if prng.bool() {
                Ppm(prng.range(0, max) as u32)
            } else {
                Ppm::NEVER
            }
        };
        let election = config.election_ticks;
        // The faulty replicas anywhere in the cluster, not always the lowest ids.
        for i in (1..self.storage.len()).rev() {
            let j = prng.index(i + 1);
            self.storage.swap(i, j);
        }
        for storage in &mut self.storage {
            storage.misdirect_read = maybe(&mut prng, 20_000);
            storage.write_error = maybe(&mut prng, 1_000);
            storage.stall = maybe(&mut prng, 5_000);
            storage.stall_max = prng.range(election, 10 * election);
        }
        self.network.spike = maybe(&mut prng, 20_000);
        self.network.spike_max = prng.range(election, 5 * election);
        self.network.corrupt = maybe(&mut prng, 20_000);
        self.network.client_cut = maybe(&mut prng, 5_000);
        self.give_up = maybe(&mut prng, 2_000);
        self.pause = maybe(&mut prng, 300);
        self.pause_max = prng.range(election, 10 * election);
        self.colocated = maybe(&mut prng, 300_000);
        self
    }

    /// Makes this a long seed (100,000 requests: the LSM grows levels, compacts and checkpoints
    /// under faults) when the seed falls in a share of `percent` percent. `vopr --long-share`.
    ///
    /// Off by default until state sync goes by blocks (issue 10 defect 4): a replica that falls
    /// behind the leader's checkpoint in a long seed cannot catch up yet (docs/testing.md).
    pub fn long_share(mut self, percent: u32) -> Options {
        if Prng::new(self.seed ^ 0x0001_0465_eed5).chance(Ppm::percent(percent)) {
            self.requests = 100_000;
        }
        self
    }
}

/// The storage faults of one replica. A `faulty` replica may rot in its WAL entries, grid and
/// client replies (keeping its redundant headers whole); the others only tear, and rot only in
/// redundant structures.
fn storage_faults(prng: &mut Prng, fatal: Option<Zone>, faulty: bool) -> StorageFaults {
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
    let rotting: Vec<Zone> = match (fatal, faulty) {
        (Some(zone), _) => vec![zone],
        (None, true) => vec![Zone::WalEntries],
        (None, false) => vec![],
    };
    for zone in rotting {
        atlas.latent.insert(zone);
        atlas.misdirect.insert(zone);
        if zone == Zone::WalEntries {
            // Headers may rot beside entries (decision-table row 12). A write that never lands
            // (misdirected) leaves its slot's old bytes, which look intact, so beside rot of the
            // other copy it would pass for a torn write or an empty slot: where headers rot, no
            // WAL write is misdirected.
            atlas.misdirect.remove(&Zone::WalHeaders);
            if atlas.latent.contains(&Zone::WalHeaders) {
                atlas.misdirect.remove(&Zone::WalEntries);
            }
        }
    }
    StorageFaults {
        atlas,
        tear: Ppm(prng.range(0, 1_000_000) as u32),
        misdirect: Ppm(prng.range(0, 20_000) as u32),
        latent_error: Ppm(prng.range(0, 1_000_000) as u32),
        latency_max: prng.range(1, 12),
        // The LSM grid rots on faulty cluster members (repaired by a checkpoint from the
        // leader) and when it is the single replica's fatal zone (reported, then halted).
        grid_rot: if (faulty || fatal == Some(Zone::Grid)) && prng.bool() {
            Ppm(prng.range(1, 3_000) as u32)
        } else {
            Ppm::NEVER
        },
        // Drawn by `Options::widened`.
        misdirect_read: Ppm::NEVER,
        write_error: Ppm::NEVER,
        stall: Ppm::NEVER,
        stall_max: 1,
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// A replica halted on damage the run injected beyond the fault model, and named it.
    PassHalted(String),
    /// A checker found a violated invariant.
    Correctness(String),
    /// A bound on progress was exceeded after the faults stopped.
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
    pub replicas: u8,
    pub ops: u64,
    pub crashes: u64,
    pub faults: u64,
    pub ticks: u64,
    pub checkpoints: u64,
    pub elections: u64,
    pub checks: u64,
    /// Liveness mode: the most ticks a post-heal request took to commit.
    pub liveness_ticks: u64,
    /// Data files replaced, and messages the other replicas refused from them.
    pub replaced: u8,
    pub refused_replaced: u64,
    /// Coverage marks of every replica in every incarnation, and requests answered "evicted".
    pub marks: Marks,
    pub evicted: u64,
    /// How often each fault of the wider model struck (to show a batch reaches them).
    pub wider: WiderFaults,
    /// State sync's counters, over every replica and incarnation.
    pub sync: SyncCounters,
    /// Checkpoints a replica took of its own state at an index another replica had checkpointed
    /// before, and of those, the ones whose blob differs because one of the two had taken a
    /// checkpoint off the interval's boundary (an escape hatch: its blocks differ until it
    /// syncs). Any other difference fails the seed.
    pub checkpoints_compared: u64,
    pub checkpoints_differing: u64,
    pub trace_hash: u64,
    /// What the workload's requests reached (`Workload::counters`).
    pub workload: Vec<(&'static str, u64)>,
}

/// State sync's counters (`replica::Stats`), summed over replicas and their incarnations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounters {
    pub syncs: u64,
    pub offers: u64,
    pub served: u64,
    pub fetched: u64,
    pub local: u64,
    pub retransmits: u64,
    pub retargets: u64,
    pub duplicates: u64,
}

impl SyncCounters {
    fn add(&mut self, stats: &ziggy_core::replica::Stats) {
        self.syncs += stats.syncs;
        self.offers += stats.sync_offers;
        self.served += stats.sync_blocks_served;
        self.fetched += stats.sync_blocks_fetched;
        self.local += stats.sync_blocks_local;
        self.retransmits += stats.sync_retransmits;
        self.retargets += stats.sync_retargets;
        self.duplicates += stats.sync_duplicates;
    }
}

/// Counts of the wider fault model's faults in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WiderFaults {
    /// Replicas stopped by a failed write (then restarted), and the write errors injected.
    pub write_failures: u64,
    pub write_errors: u64,
    pub misdirected_reads: u64,
    pub stalls: u64,
    pub delay_spikes: u64,
    pub corrupted_packets: u64,
    pub client_cuts: u64,
    /// Requests clients gave up on, and process pauses.
    pub given_up: u64,
    pub pauses: u64,
}

struct Pending<O> {
    request: u64,
    op: O,
    /// The index of this operation in the history (`None`: not a register operation).
    history: Option<usize>,
}

/// A simulated client: the core's client library (numbering, redirects, retries, timeouts) plus
/// what the checkers need to know about its operation in flight.
struct Client<O> {
    id: u64,
    /// The ids this client had before an eviction made it start over with a new one (late
    /// replies to them still arrive).
    retired: Vec<u64>,
    node: u8,
    library: ziggy_core::client::Client,
    /// The requests it issued under its current id (the library numbers them 1, 2, 3, ...).
    issued: u64,
    pending: Option<Pending<O>>,
    next_action_at: u64,
}

struct Node<M: StateMachine> {
    storage: SimStorage,
    /// The LSM grid of the replica's state (kept across crashes, like the data file).
    grid: SimGrid,
    replica: Replica<M>,
    up: bool,
    halted: Option<Error>,
    /// Its data file was replaced: peers must never let it back in.
    replaced: bool,
    /// Its data file's incarnation.
    incarnation: u64,
    /// It took a checkpoint off the interval's boundary (and has not installed one from a peer
    /// on the common path since): its checkpoints may differ from the others' at one index.
    diverged: bool,
    /// A frozen process: the tick it froze at and the tick it resumes at, and the packets that
    /// reached it meanwhile (its socket buffers).
    paused: Option<(u64, u64)>,
    inbox: Vec<(u8, Vec<u8>)>,
    /// The last index durable on this replica when it last crashed while ready: recovery must
    /// bring back at least that much (`Event::Opened`).
    durable_at_crash: Option<u64>,
    /// It finished opening since its last restart (it may have acknowledged entries since).
    opened: bool,
}

/// Ticks the settle phase may take to answer every outstanding request and converge.
pub const SETTLE_TICKS: u64 = 30_000;
/// Liveness mode: ticks a request issued after the heal may take to commit.
pub const LIVENESS_TICKS: u64 = 3_000;
/// The most search states per key the linearizability check may spend before the seed fails.
const LINEARIZABILITY_BUDGET_MAX: u64 = 1 << 26;
/// Ticks the fault phase may take, at most (then the faults stop regardless).
const FAULT_PHASE_TICKS: u64 = 200_000;

pub struct Simulation<W: Workload> {
    options: Options,
    workload: W,
    config: Config,
    prng: Prng,
    nodes: Vec<Node<W::Machine>>,
    network: SimNetwork,
    clients: Vec<Client<W::Op>>,
    history: Vec<linearizability::Operation>,
    /// Each history operation's request number (its client's 1st, 2nd, ... request).
    history_requests: Vec<u64>,
    model: Model<W::Reference>,
    trace: Digest,
    tick: u64,
    ops: u64,
    crashes: u64,
    faults: u64,
    checkpoints: u64,
    /// Requests answered "evicted" (their clients started over under new ids).
    evicted: u64,
    /// Counts of the wider model's faults the simulation itself injects.
    wider: WiderFaults,
    /// The marks of replica incarnations that ended (a restart makes a new `Replica`).
    marks: Marks,
    sync: SyncCounters,
    /// The blob checksum of the first own checkpoint taken at each index by a replica on the
    /// common path (see `Node::diverged`), and the comparisons.
    checkpoint_blobs: BTreeMap<u64, ziggy_core::checksum::Checksum>,
    /// Checkpoints taken by replicas off the common path (exempt): a replica that opens one of
    /// these synced it from them.
    diverged_blobs: BTreeSet<(u64, ziggy_core::checksum::Checksum)>,
    checkpoints_compared: u64,
    checkpoints_differing: u64,
    settling: bool,
    /// The calm fill is under way (`Options::calm_until`): nothing injected yet.
    calm: bool,
    scratch: Vec<u8>,
    cluster: u64,
    layout: Layout,
}

impl<W: Workload> Simulation<W> {
    pub fn new(options: Options) -> Simulation<W> {
        let mut prng = Prng::new(options.seed ^ 0x0005_eed0_fa11);
        let mut config = options.config.clone().unwrap_or_else(Config::test);
        config.planted_bug = options.planted_bug;
        let layout = Layout::new(&config);
        let cluster = prng.next_u64();
        // The cluster's member table: every data file's incarnation, given to every replica.
        let members: Vec<u64> = (0..options.replicas).map(|_| prng.next_u64() | 1).collect();
        let nodes = (0..options.replicas)
            .map(|r| {
                let mut storage =
                    SimStorage::new(layout, options.storage[r as usize].clone(), prng.fork());
                let incarnation = members[r as usize];
                for (offset, bytes) in Replica::<W::Machine>::format(&config, cluster, r, &members)
                {
                    storage.write_durable(offset, &bytes);
                }
                let grid = SimGrid::new(
                    config.grid_block_size as usize,
                    options.storage[r as usize].grid_rot,
                    prng.fork(),
                );
                let replica = Replica::new(config.clone(), prng.next_u64(), grid.handle())
                    .expect("test config is valid");
                Node {
                    storage,
                    grid,
                    replica,
                    up: true,
                    halted: None,
                    replaced: false,
                    diverged: false,
                    incarnation,
                    paused: None,
                    inbox: Vec::new(),
                    durable_at_crash: None,
                    opened: false,
                }
            })
            .collect();
        let clients: Vec<Client<W::Op>> = (0..options.clients)
            .map(|c| {
                let id = prng.next_u64() | 1;
                let first = prng.range(0, options.replicas as u64 - 1) as u8;
                let library = ziggy_core::client::Client::new(
                    id,
                    options.replicas,
                    first,
                    options.request_timeout,
                );
                Client {
                    id,
                    retired: Vec::new(),
                    node: options.replicas + c,
                    library,
                    issued: 0,
                    pending: None,
                    next_action_at: 0,
                }
            })
            .collect();
        let (workload, reference) = W::new(&options, &config);
        let mut model = Model::new(config.clients_max as usize, reference);
        for client in &clients {
            model.client(client.id);
        }
        let network = SimNetwork::new(
            options.replicas,
            options.clients,
            options.network.clone(),
            prng.fork(),
        );
        Simulation {
            options,
            workload,
            config,
            prng,
            nodes,
            network,
            clients,
            history: Vec::new(),
            history_requests: Vec::new(),
            model,
            trace: Digest::new(),
            tick: 0,
            ops: 0,
            crashes: 0,
            faults: 0,
            checkpoints: 0,
            evicted: 0,
            wider: WiderFaults::default(),
            sync: SyncCounters::default(),
            checkpoint_blobs: BTreeMap::new(),
            diverged_blobs: BTreeSet::new(),
            checkpoints_compared: 0,
            checkpoints_differing: 0,
            marks: Marks::default(),
            settling: false,
            calm: false,
            scratch: Vec::new(),
            cluster,
            layout,
        }
    }

    /// Runs to the end and returns the outcome. Panics (a crash of the core) propagate.
    pub fn run(mut self) -> Outcome {
        tracing::info!(options = ?self.options, "start");
        for node in &mut self.nodes {
            node.replica.open(&mut node.storage);
        }
        if self.options.calm_until > 0 {
            self.begin_calm();
        }
        let mut liveness_ticks = 0;
        let verdict = match self.run_phases(&mut liveness_ticks) {
            // A run that halted as expected still answered what it answered before the halt:
            // those answers must be linearizable (requests in flight count as indeterminate).
            Ok(Verdict::PassHalted(why)) => match self.check_linearizable() {
                Ok(()) => Verdict::PassHalted(why),
                Err(violation) => Verdict::Correctness(violation.0),
            },
            Ok(verdict) => verdict,
            Err(violation) => Verdict::Correctness(violation.0),
        };
        let elections = self.nodes.iter().map(|n| n.replica.stats.elections).sum();
        tracing::info!(
            ?verdict,
            ops = self.ops,
            crashes = self.crashes,
            faults = self.faults,
            checkpoints = self.checkpoints,
            elections,
            ticks = self.tick,
            checks = self.model.checks,
            network = ?self.network.stats,
            "end"
        );
        let mut marks = self.marks;
        let mut sync = self.sync;
        for node in &self.nodes {
            marks.add(&node.replica.marks());
            sync.add(&node.replica.stats);
        }
        let storage_faults: u64 = self
            .nodes
            .iter()
            .map(|n| n.storage.stats.misdirected + n.storage.stats.torn_sectors)
            .sum();
        Outcome {
            verdict,
            replicas: self.options.replicas,
            ops: self.ops,
            crashes: self.crashes,
            faults: self.faults
                + storage_faults
                + self.network.stats.dropped
                + self.network.stats.partitions,
            ticks: self.tick,
            checkpoints: self.checkpoints,
            elections,
            checks: self.model.checks,
            liveness_ticks,
            replaced: self.nodes.iter().filter(|n| n.replaced).count() as u8,
            refused_replaced: self
                .nodes
                .iter()
                .map(|n| n.replica.stats.refused_replaced)
                .sum(),
            marks,
            evicted: self.evicted,
            wider: self.wider_faults(),
            sync,
            checkpoints_compared: self.checkpoints_compared,
            checkpoints_differing: self.checkpoints_differing,
            trace_hash: self.trace.finish(),
            workload: self.workload.counters(),
        }
    }

    /// Compares a replica's own checkpoint with the first one taken at the same index.
    /// Replicas that applied one log take block-identical checkpoints at each multiple of the
    /// interval (`Engine::make_deterministic`): a state sync between them fetches only what
    /// differs. A replica that took one off the boundary is exempt until it installs a
    /// checkpoint of the common path.
    fn compare_checkpoint(
        &mut self,
        r: usize,
        index: u64,
        state_checksum: ziggy_core::checksum::Checksum,
        installed: bool,
    ) -> Result<(), Violation> {
        let first = self.checkpoint_blobs.get(&index).copied();
        if installed {
            self.nodes[r].diverged = first != Some(state_checksum);
            return Ok(());
        }
        let interval = self.layout.wal_slot_count / 2;
        if !index.is_multiple_of(interval) {
            self.nodes[r].diverged = true;
        }
        if self.nodes[r].diverged {
            self.diverged_blobs.insert((index, state_checksum));
        }
        let Some(first) = first else {
            if !self.nodes[r].diverged {
                self.checkpoint_blobs.insert(index, state_checksum);
            }
            return Ok(());
        };
        self.checkpoints_compared += 1;
        if first == state_checksum {
            return Ok(());
        }
        self.checkpoints_differing += 1;
        if self.nodes[r].diverged {
            return Ok(());
        }
        Err(Violation(format!(
            "replica {r}'s checkpoint at {index} differs from another replica's \
             ({state_checksum:x} vs {first:x}): their blocks differ, so a sync between them \
             fetches everything"
        )))
    }

    /// The checkpoint a replica opened: the common path's (it is back on it), one an exempt
    /// replica took (it synced from that replica, and is exempt too), or else its own, whose
    /// event may have died with the process: compared as taken.
    fn compare_opened(
        &mut self,
        r: usize,
        index: u64,
        state_checksum: ziggy_core::checksum::Checksum,
    ) -> Result<(), Violation> {
        if self.checkpoint_blobs.get(&index) == Some(&state_checksum) {
            self.nodes[r].diverged = false;
            return Ok(());
        }
        if self.diverged_blobs.contains(&(index, state_checksum)) {
            self.nodes[r].diverged = true;
            return Ok(());
        }
        self.compare_checkpoint(r, index, state_checksum, false)
    }

    fn wider_faults(&self) -> WiderFaults {
        let mut wider = self.wider;
        for node in &self.nodes {
            let stats = &node.storage.stats;
            wider.write_errors += stats.write_errors;
            wider.misdirected_reads += stats.misdirected_reads;
            wider.stalls += stats.stalls;
        }
        let network = &self.network.stats;
        wider.delay_spikes = network.spikes;
        wider.corrupted_packets = network.corrupted;
        wider.client_cuts = network.client_cuts;
        wider
    }

    /// Measures leader failover: `trials` times, crash the leader (it stays down) and count the
    /// ticks until another replica leads and takes requests; then restart it. No other faults
    /// should be configured. Returns the ticks of each trial.
    pub fn failover_ticks(mut self, trials: usize) -> Result<Vec<u64>, String> {
        for node in &mut self.nodes {
            node.replica.open(&mut node.storage);
        }
        self.settling = true; // no injected faults, no client requests
        let leading = |s: &Simulation<W>| {
            s.nodes
                .iter()
                .position(|n| n.up && n.replica.accepting_requests())
        };
        let mut results = Vec::with_capacity(trials);
        for _ in 0..trials {
            let deadline = self.tick + 20_000;
            let leader = loop {
                if let Some(l) = leading(&self) {
                    break l;
                }
                if self.tick > deadline {
                    return Err("no leader within 20,000 ticks".into());
                }
                self.step().map_err(|v| v.0)?;
            };
            self.nodes[leader].storage.crash();
            self.nodes[leader].up = false;
            self.network.forget(leader as u8);
            let crashed_at = self.tick;
            loop {
                self.step().map_err(|v| v.0)?;
                if leading(&self).is_some_and(|l| l != leader) {
                    break;
                }
                if self.tick > crashed_at + 20_000 {
                    return Err("no new leader within 20,000 ticks".into());
                }
            }
            results.push(self.tick - crashed_at);
            self.restart(leader);
        }
        Ok(results)
    }

    fn run_phases(&mut self, liveness_ticks: &mut u64) -> Result<Verdict, Violation> {
        // With --liveness, the heal comes at a random point of the run.
        let heal_after = if self.options.liveness {
            let from = self.options.heal_from.min(self.options.requests);
            self.prng.range(from, self.options.requests)
        } else {
            self.options.requests
        };
        // Faults may be harsh enough to slow progress to a crawl: that is allowed (a stall counts
        // as a bug only once the faults stop), so the fault phase is a budget, not a bound.
        let mut fault_deadline = self.options.fault_ticks;
        while self.ops < heal_after && (self.calm || self.tick < fault_deadline) {
            if self.calm && self.ops >= self.options.calm_until {
                self.end_calm();
                fault_deadline = self.tick + self.options.fault_ticks;
            }
            self.step()?;
            if let Some(verdict) = self.halt_verdict()? {
                return Ok(verdict);
            }
        }
        self.settle();
        if let Some(verdict) =
            self.run_until("settle: outstanding requests", SETTLE_TICKS, |s| {
                s.clients.iter().all(|c| c.pending.is_none())
            })?
        {
            return Ok(verdict);
        }
        if self.options.liveness {
            let started = self.tick;
            self.issue_round();
            if let Some(verdict) =
                self.run_until("liveness: requests after the heal", LIVENESS_TICKS, |s| {
                    s.clients.iter().all(|c| c.pending.is_none())
                })?
            {
                return Ok(verdict);
            }
            *liveness_ticks = self.tick - started;
        }
        if let Some(verdict) =
            self.run_until("settle: replicas converge", SETTLE_TICKS, Self::converged)?
        {
            return Ok(verdict);
        }
        self.check_convergence()?;
        self.check_linearizable()?;
        Ok(self
            .halted_note()
            .map_or(Verdict::Pass, Verdict::PassHalted))
    }

    /// Steps until `done`, or reports a liveness failure after `bound` ticks.
    fn run_until(
        &mut self,
        what: &str,
        bound: u64,
        done: fn(&Simulation<W>) -> bool,
    ) -> Result<Option<Verdict>, Violation> {
        let deadline = self.tick + bound;
        while !done(self) {
            if self.tick > deadline {
                let state: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        format!(
                            "{}:{:?}/{:?} t{} applied {} commit {} head {} ({}) [{:?}]",
                            n.replica.id(),
                            n.replica.status(),
                            n.replica.role(),
                            n.replica.term(),
                            n.replica.applied(),
                            n.replica.commit_index(),
                            n.replica.log_head(),
                            n.replica.liveness_report(),
                            n.replica.stats
                        )
                    })
                    .collect();
                let stuck: Vec<String> = self
                    .clients
                    .iter()
                    .filter_map(|c| {
                        c.pending.as_ref().map(|p| {
                            format!(
                                "client {:x} request {} {:?} -> {}",
                                c.id,
                                p.request,
                                p.op,
                                c.library.leader()
                            )
                        })
                    })
                    .collect();
                return Ok(Some(Verdict::Liveness(format!(
                    "{what}: not done within {bound} ticks [{}] stuck: [{}]",
                    state.join("; "),
                    stuck.join("; ")
                ))));
            }
            self.step()?;
            if let Some(verdict) = self.halt_verdict()? {
                return Ok(Some(verdict));
            }
        }
        Ok(None)
    }

    fn live_nodes(&self) -> impl Iterator<Item = &Node<W::Machine>> {
        self.nodes
            .iter()
            .filter(|n| n.halted.is_none() && !n.replaced)
    }

    fn converged(&self) -> bool {
        let target = self.model.committed();
        self.live_nodes().all(|n| {
            n.replica.status() == Status::Ready
                && n.replica.applied() == target
                && !n.replica.state_lost()
        })
    }

    fn check_convergence(&mut self) -> Result<(), Violation> {
        for r in 0..self.nodes.len() {
            if self.nodes[r].replaced {
                continue; // it may have learned entries passively; never as a voter (on_event)
            }
            if self.nodes[r].halted.is_some() {
                continue;
            }
            if self.nodes[r].replica.state_lost() {
                return Err(Violation(format!(
                    "replica {r} lost its state to grid damage and never got a checkpoint back"
                )));
            }
            let Ok((digest, applied)) = self.nodes[r].replica.state_digest() else {
                continue; // halted on a storage failure; reported through its event
            };
            self.model.state_matches(r as u8, applied, digest)?;
        }
        Ok(())
    }

    /// An undecided check fails the seed: the budget grows (up to 2^26 states per key, a few
    /// GiB at worst) until the search decides, else the seed is reported.
    fn check_linearizable(&mut self) -> Result<(), Violation> {
        // The log's order is a candidate linearization: when it fits, no search is needed.
        if witness::fits(&self.history, &self.witness_places()) {
            return Ok(());
        }
        tracing::warn!("the log order is no linearization: searching");
        let mut budget = Budget::default();
        loop {
            match linearizability::check(&self.history, budget) {
                linearizability::Verdict::NotLinearizable { explanation, .. } => {
                    return Err(Violation(format!(
                        "history not linearizable: {explanation}"
                    )))
                }
                linearizability::Verdict::Linearizable => return Ok(()),
                linearizability::Verdict::Unknown { reason, key } => {
                    if budget.max_states_per_key >= LINEARIZABILITY_BUDGET_MAX {
                        return Err(Violation(format!(
                            "linearizability undecided for key {:?} within {} states: {reason}",
                            String::from_utf8_lossy(&key),
                            budget.max_states_per_key
                        )));
                    }
                    tracing::warn!(%reason, "linearizability unknown: growing the budget");
                    budget.max_states_per_key *= 4;
                }
            }
        }
    }

    /// Where each operation of the history took effect in the log (`None`: reads, and writes
    /// that never did).
    fn witness_places(&self) -> Vec<Option<witness::Place>> {
        self.history
            .iter()
            .zip(&self.history_requests)
            .map(|(op, &request)| self.model.effective_at(op.client, request))
            .collect()
    }

    fn halted_note(&self) -> Option<String> {
        self.nodes.iter().find_map(|n| {
            n.halted
                .as_ref()
                .map(|e| format!("replica {}: {e}", n.replica.id()))
        })
    }

    /// The calm fill: storage without faults (its latency stays), a healed network.
    fn begin_calm(&mut self) {
        self.calm = true;
        self.network.heal();
        for r in 0..self.nodes.len() {
            let mut faults = StorageFaults::none();
            faults.latency_max = self.options.storage[r].latency_max;
            self.nodes[r].storage.set_faults(faults);
        }
    }

    /// The calm fill is over: every fault the seed drew starts now.
    fn end_calm(&mut self) {
        tracing::info!(
            tick = self.tick,
            ops = self.ops,
            "calm fill over: faults on"
        );
        self.calm = false;
        self.network.resume_faults();
        for r in 0..self.nodes.len() {
            let faults = self.options.storage[r].clone();
            self.nodes[r].storage.set_faults(faults);
        }
    }

    /// Whether faults are injected now: not during a calm fill, not once settling.
    fn faulting(&self) -> bool {
        !self.settling && !self.calm
    }

    /// Stops every fault: heal the network, no more crashes or rot, restart every replica.
    fn settle(&mut self) {
        tracing::info!(tick = self.tick, "settle: faults off");
        self.settling = true;
        self.network.heal();
        for r in 0..self.nodes.len() {
            let mut faults = StorageFaults::none();
            faults.latency_max = self.options.storage[r].latency_max;
            self.nodes[r].storage.set_faults(faults);
            if !self.nodes[r].up && self.nodes[r].halted.is_none() {
                self.restart(r);
            }
        }
    }

    /// Whether the redundant-header sector of the WAL entry at `offset` was damaged.
    fn entry_header_damaged(&self, node: &Node<W::Machine>, offset: u64) -> bool {
        let layout = &self.layout;
        match layout.zone_of(offset) {
            Some((Zone::WalEntries, within)) => {
                let slot = within / layout.wal_slot_size;
                let sector = layout.header_sector_offset(layout.header_sector_of(slot));
                node.storage.damaged_within(sector, layout.sector_size)
            }
            _ => false,
        }
    }

    /// A halt is acceptable only beyond the fault model, naming damage that was injected.
    fn halt_verdict(&mut self) -> Result<Option<Verdict>, Violation> {
        for node in &self.nodes {
            let Some(error) = &node.halted else { continue };
            let explained = match error {
                Error::Corrupt { offset, len, .. } => node.storage.damaged_within(*offset, *len),
                Error::State(_) => node.grid.rotted() > 0,
                _ => false,
            };
            // A torn entry whose redundant header was damaged (rot, or a misdirected write
            // landing there) reads as a durable entry lost with its header (decision-table row
            // 12): a single replica cannot tell, so it halts, naming the entry.
            let header_damaged = match error {
                Error::Corrupt { offset, .. } => self.entry_header_damaged(node, *offset),
                _ => false,
            };
            let explained = explained || header_damaged;
            let allowed = self.options.fatal.is_some()
                || header_damaged
                || self.options.storage[node.replica.id() as usize]
                    .atlas
                    .latent
                    .contains(&Zone::WalEntries);
            if !explained || !allowed {
                return Err(Violation(format!(
                    "replica {} halted within the fault model: {error}",
                    node.replica.id()
                )));
            }
            if self.options.replicas == 1 {
                return Ok(Some(Verdict::PassHalted(error.to_string())));
            }
        }
        Ok(None)
    }

    fn step(&mut self) -> Result<(), Violation> {
        self.tick += 1;
        if self.faulting() {
            self.inject_faults();
        }
        for c in 0..self.clients.len() {
            self.client_step(c)?;
        }
        for r in 0..self.nodes.len() {
            self.resume_if_due(r)?;
        }
        for r in 0..self.nodes.len() {
            if !self.nodes[r].up || self.nodes[r].paused.is_some() {
                continue;
            }
            // The simulated disk has no flush moment: offer one every tick.
            let node = &mut self.nodes[r];
            node.replica.prepare_flush(&mut node.storage);
            self.enforce_fault_budget();
            let completions = self.nodes[r].storage.advance(self.tick);
            let crashes = self.crashes;
            for completion in completions {
                self.deliver_io(r, completion);
                self.drain(r)?;
                if self.crashes != crashes {
                    break; // a failed write stopped the process: the rest died with it
                }
            }
        }
        self.network.tick();
        for packet in self.network.deliver(self.tick) {
            self.trace
                .u64(packet.from as u64)
                .u64(packet.to as u64)
                .u64(packet.data.len() as u64);
            if packet.to < self.options.replicas {
                let r = packet.to as usize;
                if self.nodes[r].up && self.nodes[r].paused.is_some() {
                    self.nodes[r].inbox.push((packet.from, packet.data));
                } else if self.nodes[r].up {
                    self.deliver_packet(r, packet.from, &packet.data);
                    self.drain(r)?;
                }
            } else {
                self.client_receive(packet.to, &packet.data)?;
            }
        }
        for r in 0..self.nodes.len() {
            if !self.nodes[r].up || self.nodes[r].paused.is_some() {
                continue;
            }
            let drift = self.options.drift[r];
            if self.settling || !self.prng.chance(drift) {
                let node = &mut self.nodes[r];
                node.replica.tick(&mut node.storage);
                self.drain(r)?;
            }
        }
        Ok(())
    }

    /// A paused replica whose pause is over resumes: its clock jumps by every tick it missed
    /// (its timeouts fire at once), then it reads what reached its sockets meanwhile.
    fn resume_if_due(&mut self, r: usize) -> Result<(), Violation> {
        let Some((from, until)) = self.nodes[r].paused else {
            return Ok(());
        };
        if self.tick < until && !self.settling {
            return Ok(());
        }
        tracing::debug!(
            tick = self.tick,
            replica = r,
            paused = self.tick - from,
            "resume"
        );
        self.nodes[r].paused = None;
        for _ in from..self.tick {
            let node = &mut self.nodes[r];
            node.replica.tick(&mut node.storage);
        }
        self.drain(r)?;
        for (from, data) in std::mem::take(&mut self.nodes[r].inbox) {
            self.deliver_packet(r, from, &data);
            self.drain(r)?;
        }
        Ok(())
    }

    fn inject_faults(&mut self) {
        for r in 0..self.nodes.len() {
            if self.nodes[r].halted.is_some() {
                continue;
            }
            if self.nodes[r].up
                && self.nodes[r].paused.is_none()
                && self.prng.chance(self.options.pause)
            {
                let until = self.tick + self.prng.range(1, self.options.pause_max);
                self.trace.u64(0x9a05e).u64(r as u64).u64(until);
                tracing::debug!(tick = self.tick, replica = r, until, "pause");
                self.wider.pauses += 1;
                self.nodes[r].paused = Some((self.tick, until));
            }
            if let Some((replica, from, to)) = self.options.down.filter(|d| d.0 as usize == r) {
                let down = (from..to).contains(&self.ops);
                if down && self.nodes[r].up {
                    self.crash(r);
                } else if !down && !self.nodes[r].up {
                    self.restart(replica as usize);
                }
                continue;
            }
            if self.nodes[r].up {
                let crash = match self.nodes[r].replica.status() {
                    Status::Opening => self.options.crash_recovering,
                    _ => self.options.crash,
                };
                if self.prng.chance(crash) {
                    self.crash(r);
                }
            } else if self.prng.chance(self.options.restart) {
                self.restart(r);
            }
        }
        if self.prng.chance(self.options.replace) {
            self.replace_data_file();
        }
        if self.prng.chance(self.options.latent) {
            let rotting: Vec<usize> = (0..self.nodes.len())
                .filter(|&r| !self.options.storage[r].atlas.latent.is_empty())
                .collect();
            if rotting.is_empty() {
                return;
            }
            let r = rotting[self.prng.index(rotting.len())];
            if let Some(sector) = self.nodes[r].storage.inject_latent() {
                self.enforce_fault_budget();
                self.faults += 1;
                self.trace.u64(0xfa).u64(r as u64).u64(sector);
                tracing::debug!(
                    tick = self.tick,
                    replica = r,
                    sector,
                    "fault: latent sector"
                );
            }
        }
    }

    /// Swaps a replica's data file for a freshly formatted one (same cluster, same replica index,
    /// a new incarnation) and restarts it.
    fn replace_data_file(&mut self) {
        // Budgeted replicas stay a minority, so a quorum remains whole.
        let replaced = self.nodes.iter().filter(|n| n.replaced).count() as u8;
        if replaced >= self.options.replaceable {
            return;
        }
        let full = self.budgeted().count() >= self.minority();
        // Never a rotting replica (the fault budget counts them apart), never twice; one already
        // in the budget when it is spent. At any moment, even before the replica ever spoke:
        // every peer knows its data file from the member table given at formation.
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&r| !self.nodes[r].replaced && self.nodes[r].halted.is_none())
            .filter(|&r| !self.rotting(r))
            .filter(|&r| !full || self.budgeted().any(|b| b == r))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let r = candidates[self.prng.index(candidates.len())];
        self.faults += 1;
        self.trace.u64(0x5a4e).u64(r as u64);
        tracing::debug!(tick = self.tick, replica = r, "fault: data file replaced");
        self.crash(r);
        let mut storage = SimStorage::new(
            self.layout,
            self.options.storage[r].clone(),
            self.prng.fork(),
        );
        // Formatted again as an operator would: the member table, with a new own incarnation.
        let incarnation = self.prng.next_u64() | 1;
        let mut members: Vec<u64> = self.nodes.iter().map(|n| n.incarnation).collect();
        members[r] = incarnation;
        for (offset, bytes) in
            Replica::<W::Machine>::format(&self.config, self.cluster, r as u8, &members)
        {
            storage.write_durable(offset, &bytes);
        }
        self.nodes[r].storage = storage;
        self.nodes[r].grid = SimGrid::new(
            self.config.grid_block_size as usize,
            self.options.storage[r].grid_rot,
            self.prng.fork(),
        );
        self.nodes[r].replaced = true;
        self.nodes[r].diverged = false;
        self.nodes[r].durable_at_crash = None; // a fresh data file holds nothing
        self.nodes[r].incarnation = incarnation;
        if !self.nodes[r].up {
            self.restart(r);
        }
        self.enforce_fault_budget();
    }

    fn minority(&self) -> usize {
        (self.options.replicas as usize - 1) / 2
    }

    fn rotting(&self, r: usize) -> bool {
        self.options.storage[r]
            .atlas
            .latent
            .contains(&Zone::WalEntries)
    }

    /// The replicas that count against the fault budget: replaced, rotting in their WAL
    /// entries, or with a damaged redundant header.
    fn budgeted(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&r| {
            let node = &self.nodes[r];
            node.replaced || self.rotting(r) || node.storage.stats.header_faults > 0
        })
    }

    /// A damaged redundant header beside an entry a crash tore is a hole (decision-table row
    /// 12) that only an inquiry of `n - q + 1` peers settles; replaced peers never answer, and
    /// rotting ones may hold the same hole. So header damage counts against the budget, and
    /// once it is spent no other replica's headers are damaged. Seen: two of five replaced and a
    /// third unable to vote for a torn head beside a misdirected header write (seed 12009637);
    /// a rotting replica and another's torn head with a damaged header at the same index, in a
    /// cluster of three (vote-despite-faulty profile, seed 4). Called after every turn of a
    /// replica, so that no two replicas overspend it in one tick. Clusters of one or two have no
    /// budget (a fault there is fatal or repaired locally) and keep every fault.
    fn enforce_fault_budget(&mut self) {
        let minority = self.minority();
        if minority == 0 || self.budgeted().count() < minority {
            return;
        }
        let budgeted: Vec<usize> = self.budgeted().collect();
        for r in (0..self.nodes.len()).filter(|r| !budgeted.contains(r)) {
            self.nodes[r].storage.stop_header_faults();
        }
    }

    fn crash(&mut self, r: usize) {
        self.crashes += 1;
        self.trace.u64(0xc4a5).u64(r as u64).u64(self.tick);
        let node = &mut self.nodes[r];
        tracing::debug!(tick = self.tick, replica = r, status = ?node.replica.status(), pending = node.storage.pending(), "crash");
        // Ready, or stopped by a failed write (which landed nowhere) after it had opened; while
        // opening — halted there too, by a failed write of recovery's own (its rebuilt headers,
        // whose entries it counts durable before the write lands) — what the last crash left
        // stands. Seed 4046346616: halted mid-open with 1029..=1031 counted, their headers never
        // rewritten, then 1031's only copy rotted; cutting it was right.
        let ran = match node.replica.status() {
            Status::Ready => true,
            Status::Halted => node.opened,
            _ => false,
        };
        if ran {
            node.durable_at_crash = Some(node.replica.durable_index());
        }
        node.storage.crash();
        node.grid.crash(self.prng.next_u64());
        node.up = false;
        node.paused = None;
        node.inbox.clear();
        self.rot_last_durable_slot(r);
        self.network.forget(r as u8);
        // A single replica restarts at once; a cluster member may stay down a while.
        if self.options.replicas == 1 {
            self.restart(r);
        }
    }

    /// Co-located damage (decision-table row 12): on a replica whose WAL entries and headers may
    /// rot, sometimes rot both copies of its last durable entry at a crash — the redundant
    /// header's sector and the entry — which lowers the durable bound below an acknowledged entry.
    fn rot_last_durable_slot(&mut self, r: usize) {
        let latent = &self.options.storage[r].atlas.latent;
        if !latent.contains(&Zone::WalEntries)
            || !latent.contains(&Zone::WalHeaders)
            || !self.prng.chance(self.options.colocated)
        {
            return;
        }
        let Some(durable) = self.nodes[r].durable_at_crash.filter(|&d| d > 0) else {
            return;
        };
        let layout = self.layout;
        let sector = layout.sector_size;
        let slot = layout.slot_of(durable);
        let header = layout.zone_start(Zone::WalHeaders) / sector + layout.header_sector_of(slot);
        let entry = (layout.zone_start(Zone::WalEntries) + slot * layout.wal_slot_size) / sector;
        self.nodes[r].storage.inject_latent_at(header);
        self.nodes[r].storage.inject_latent_at(entry);
        self.faults += 2;
        self.trace.u64(0xc010).u64(r as u64).u64(durable);
        tracing::debug!(
            tick = self.tick,
            replica = r,
            durable,
            "fault: header and entry rot"
        );
    }

    fn restart(&mut self, r: usize) {
        let seed = self.prng.next_u64();
        let node = &mut self.nodes[r];
        tracing::debug!(tick = self.tick, replica = r, "restart");
        self.marks.add(&node.replica.marks());
        self.sync.add(&node.replica.stats);
        node.replica =
            Replica::new(self.config.clone(), seed, node.grid.handle()).expect("valid config");
        node.up = true;
        node.opened = false;
        node.replica.open(&mut node.storage);
    }

    fn deliver_io(&mut self, r: usize, completion: Completion) {
        let node = &mut self.nodes[r];
        match completion {
            Completion::Read { id, result } => {
                self.trace.u64(id.0).u64(
                    result
                        .as_ref()
                        .map_or(1, |d| ziggy_core::checksum::checksum(d) as u64),
                );
                let result = result.as_deref().map_err(|e| *e);
                node.replica.on_read_complete(&mut node.storage, id, result);
            }
            Completion::Write { id, result } => {
                self.trace.u64(id.0);
                node.replica
                    .on_write_complete(&mut node.storage, id, result);
            }
        }
    }

    fn deliver_packet(&mut self, r: usize, from: u8, data: &[u8]) {
        if from < self.options.replicas {
            if tracing::enabled!(tracing::Level::DEBUG) {
                if let Ok((h, body)) = Header::decode(data, self.cluster, r as u8) {
                    tracing::debug!(
                        tick = self.tick, from, to = r, command = ?h.command, term = h.term,
                        a = h.a, b = h.b, c = h.c, d = h.d, bytes = body.len(), "message"
                    );
                }
            }
            let node = &mut self.nodes[r];
            node.replica.on_message(&mut node.storage, data);
            return;
        }
        // A client request.
        let Some((id, operation, body)) = ziggy_core::client::decode_request(data) else {
            return;
        };
        tracing::trace!(tick = self.tick, replica = r, ?id, "request");
        let node = &mut self.nodes[r];
        node.replica.submit(&mut node.storage, id, operation, body);
    }

    /// Collects what replica `r` produced: events (checked), peer messages (sent), replies
    /// (sent to clients).
    fn drain(&mut self, r: usize) -> Result<(), Violation> {
        self.enforce_fault_budget();
        let events: Vec<Event> = self.nodes[r].replica.drain_events().collect();
        for event in events {
            self.on_event(r, event)?;
        }
        let tick = self.tick;
        let network = &mut self.network;
        self.nodes[r]
            .replica
            .drain_messages(|to, bytes| network.send(tick, r as u8, to, bytes));
        let replies: Vec<_> = self.nodes[r].replica.drain_replies().collect();
        for reply in replies {
            let of = |c: &&Client<W::Op>| c.id == reply.client || c.retired.contains(&reply.client);
            let Some(client) = self.clients.iter().find(of) else {
                return Err(Violation(format!(
                    "reply to unknown client {}",
                    reply.client
                )));
            };
            ziggy_core::client::encode_reply(&reply, r as u8, &mut self.scratch);
            self.network
                .send(self.tick, r as u8, client.node, &self.scratch);
        }
        Ok(())
    }

    fn on_event(&mut self, r: usize, event: Event) -> Result<(), Violation> {
        let replica = r as u8;
        match event {
            Event::Applied {
                index,
                position,
                count,
                checksum,
                client,
                session,
                request,
                timestamp,
            } => {
                self.trace
                    .u64(index)
                    .u64(position as u64)
                    .u64(checksum as u64);
                tracing::debug!(
                    tick = self.tick,
                    replica,
                    index,
                    position,
                    client,
                    request,
                    "applied"
                );
                self.model.applied(
                    replica, index, position, count, checksum, client, session, request, timestamp,
                )?;
            }
            Event::Opened {
                checkpoint,
                head,
                truncated,
                faulty,
            } => {
                tracing::debug!(
                    tick = self.tick,
                    replica,
                    checkpoint,
                    head,
                    truncated,
                    faulty,
                    "opened"
                );
                // An entry is faulty only where a fault damaged the WAL (a stale redundant header
                // left by a truncation would otherwise pass for one: planted bug stale-truncate).
                let wal_damaged = [Zone::WalEntries, Zone::WalHeaders].iter().any(|&zone| {
                    let layout = &self.layout;
                    self.nodes[r]
                        .storage
                        .damaged_within(layout.zone_start(zone), layout.zone_size(zone))
                });
                // Recovery never drops a durable entry: it keeps a damaged one as faulty.
                // (Checked once per crash: a later truncation by a new leader may lower it.)
                self.nodes[r].opened = true;
                if let Some(durable) = self.nodes[r].durable_at_crash.take().filter(|&d| head < d) {
                    return Err(Violation(format!(
                        "replica {replica} recovered its log up to {head}, but {durable} was \
                         durable when it crashed: recovery dropped durable entries"
                    )));
                }
                if faulty > 0 && !wal_damaged {
                    return Err(Violation(format!(
                        "replica {replica} recovered {faulty} faulty WAL entries, but no fault \
                         ever damaged its WAL"
                    )));
                }
                // A replica whose grid is damaged opens without its state and awaits the leader's.
                if let Ok((digest, applied)) = self.nodes[r].replica.state_digest() {
                    self.model.opened(replica, applied, digest)?;
                }
                // The checkpoint it opens may be one a state sync made durable just before the
                // crash, whose `Checkpointed` event died with the process (seed 418364896): its
                // blocks are the ones the replica now builds on, so it is compared as installed.
                let checksum = self.nodes[r].replica.superblock().state_checksum;
                if checkpoint > 0 {
                    self.compare_opened(r, checkpoint, checksum)?;
                }
            }
            Event::Installed { index } => {
                tracing::debug!(
                    tick = self.tick,
                    replica,
                    index,
                    "installed checkpoint from the leader"
                );
                // Entries may already be applied on top within the same step: the state is then
                // checked at convergence; the applied sequence restarts after the checkpoint.
                // (Reading the digest may itself find a rotted block and lose the state again.)
                match self.nodes[r].replica.state_digest() {
                    Ok((digest, applied)) if applied == index => {
                        self.model.opened(replica, applied, digest)?
                    }
                    _ => self.model.restarted_at(replica, index),
                }
            }
            Event::Checkpointed {
                index,
                sequence,
                state_checksum,
                installed,
            } => {
                self.checkpoints += 1;
                tracing::debug!(
                    tick = self.tick,
                    replica,
                    index,
                    sequence,
                    state_checksum,
                    installed,
                    "checkpoint"
                );
                self.compare_checkpoint(r, index, state_checksum, installed)?;
            }
            Event::Role { role, term, leader }
                if self.nodes[r].replaced && role == Role::Leader =>
            {
                return Err(Violation(format!(
                    "replica {replica} came back with a replaced data file and was elected \
                     leader of term {term} ({leader:?}): its peers counted its votes"
                )));
            }
            Event::Role { role, term, leader } => {
                self.trace.u64(0x401e).u64(term);
                tracing::debug!(tick = self.tick, replica, ?role, term, ?leader, "role");
            }
            Event::Repaired { index } => {
                tracing::debug!(tick = self.tick, replica, index, "repaired")
            }
            Event::PeerReplaced {
                replica: peer,
                known,
                found,
            } => {
                tracing::debug!(
                    tick = self.tick,
                    replica,
                    peer,
                    known,
                    found,
                    "refused a replaced peer"
                );
                if !self.nodes[peer as usize].replaced {
                    return Err(Violation(format!(
                        "replica {replica} refused peer {peer}, whose data file was never replaced"
                    )));
                }
            }
            Event::StateLost { error } => {
                tracing::debug!(tick = self.tick, replica, %error, "state lost");
                if self.options.storage[r].grid_rot == Ppm::NEVER {
                    return Err(Violation(format!(
                        "replica {replica} lost its state without grid damage: {error}"
                    )));
                }
            }
            Event::Halted(Error::WriteFailed { kind, error })
                if self.nodes[r].storage.stats.write_errors > 0 =>
            {
                // The stated reaction to a failed write: the replica stops (fail-stop, as
                // TigerBeetle panics), and its operator restarts it; it then recovers from what
                // is durable. The simulator treats it as a crash of the process.
                tracing::debug!(
                    tick = self.tick,
                    replica,
                    ?kind,
                    ?error,
                    "write failed: stop"
                );
                self.wider.write_failures += 1;
                self.crash(r);
                if self.settling && !self.nodes[r].up {
                    self.restart(r); // a write submitted before the faults stopped failed after
                }
            }
            Event::Halted(error) => {
                tracing::debug!(tick = self.tick, replica, %error, "halted");
                self.nodes[r].halted = Some(error);
            }
        }
        Ok(())
    }

    fn client_step(&mut self, c: usize) -> Result<(), Violation> {
        self.clients[c].library.tick();
        self.send_client_messages(c);
        let tick = self.tick;
        if self.clients[c].pending.is_some()
            && self.faulting()
            && self.prng.chance(self.options.give_up)
        {
            self.give_up(c);
        }
        let client = &self.clients[c];
        if client.pending.is_some() || self.settling || tick < client.next_action_at {
            return Ok(());
        }
        if self.ops >= self.options.requests {
            return Ok(());
        }
        self.issue(c);
        Ok(())
    }

    fn send_client_messages(&mut self, c: usize) {
        let (tick, node) = (self.tick, self.clients[c].node);
        let network = &mut self.network;
        let trace = &mut self.trace;
        self.clients[c].library.drain_messages(|to, bytes| {
            trace.u64(0x5e4d).u64(node as u64).u64(to as u64);
            network.send(tick, node, to, bytes);
        });
    }

    /// Liveness mode: every client issues one more request after the heal.
    fn issue_round(&mut self) {
        for c in 0..self.clients.len() {
            if self.clients[c].pending.is_none() {
                self.issue(c);
            }
        }
    }

    fn issue(&mut self, c: usize) {
        let target = self.workload.target(&mut self.prng);
        let client = &mut self.clients[c];
        client.next_action_at = self.tick + self.prng.range(0, self.options.think_max);
        client.issued += 1;
        let (id, request) = (client.id, client.issued);
        let op = self.workload.draw(&mut self.prng, target, id, request);
        let (operation, body) = W::encode(&op);
        let history = W::input(&op).map(|input| {
            self.history.push(linearizability::Operation {
                client: id,
                input,
                call: self.tick,
                ret: None,
                output: None,
            });
            self.history_requests.push(request);
            self.history.len() - 1
        });
        self.model.submitted(id, request, op.clone());
        let numbered = self.clients[c].library.request(operation, &body);
        assert_eq!(
            numbered,
            Ok(request),
            "the library numbers requests 1, 2, 3, ... (an evicted client is replaced at once)"
        );
        self.clients[c].pending = Some(Pending {
            request,
            op,
            history,
        });
        self.send_client_messages(c);
    }

    fn client_receive(&mut self, node: u8, data: &[u8]) -> Result<(), Violation> {
        let c = self
            .clients
            .iter()
            .position(|c| c.node == node)
            .expect("a client node");
        // Every successful reply is checked, also a late duplicate the library will ignore.
        if let Ok((header, body)) = Header::decode(data, 0, CLIENT) {
            if header.command == Command::Reply
                && ReplyStatus::from_u64(header.d & 0xFF) == Some(ReplyStatus::Ok)
            {
                self.model.replied(header.a, header.b, header.c, body)?;
            }
        }
        let Some(reply) = self.clients[c].library.on_message(data) else {
            return Ok(());
        };
        tracing::trace!(
            tick = self.tick,
            client = self.clients[c].id,
            request = reply.request,
            from = reply.from,
            "reply"
        );
        let Some(pending) = self.clients[c].pending.take() else {
            return Err(Violation("a reply without a request in flight".into()));
        };
        assert_eq!(
            pending.request, reply.request,
            "the library answers the request in flight"
        );
        match reply.result {
            Ok(body) => {
                if let Some(at) = pending.history {
                    let op = &mut self.history[at];
                    op.ret = Some(self.tick);
                    op.output = Some(W::output(&pending.op, &body));
                }
                self.workload.replied(&pending.op, &body);
                self.ops += 1;
                Ok(())
            }
            Err(ClientError::Evicted) => {
                // The outcome stays unknown (the operation never returns), and the client goes
                // on under a new id, as an application would.
                self.evicted += 1;
                self.replace_client(c);
                Ok(())
            }
            Err(error) => Err(Violation(format!(
                "client {} request {} refused: {error:?}",
                self.clients[c].id, reply.request
            ))),
        }
    }

    /// Client `c` gives up on its request: it never learns the outcome (the history keeps the
    /// operation open: it may take effect at any time after its call, or never), and goes on
    /// as a new client.
    fn give_up(&mut self, c: usize) {
        let pending = self.clients[c].pending.take().expect("a request in flight");
        self.wider.given_up += 1;
        self.trace
            .u64(0x9e7)
            .u64(self.clients[c].id)
            .u64(pending.request);
        tracing::debug!(
            tick = self.tick,
            client = self.clients[c].id,
            request = pending.request,
            "give up"
        );
        self.replace_client(c);
    }

    /// Gives client `c` a new id and a new library (a new session), keeping its network node.
    fn replace_client(&mut self, c: usize) {
        let id = self.prng.next_u64() | 1;
        let first = self.prng.range(0, self.options.replicas as u64 - 1) as u8;
        let client = &mut self.clients[c];
        client.retired.push(client.id);
        client.id = id;
        client.library = ziggy_core::client::Client::new(
            id,
            self.options.replicas,
            first,
            self.options.request_timeout,
        );
        client.issued = 0;
        self.model.client(id);
    }
}
