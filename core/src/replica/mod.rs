//! The replica: one node of a Raft cluster, a deterministic, single-threaded state machine over
//! one data file. A single node is a cluster of one and runs through exactly the same code.
//!
//! ```text
//! Opening: read superblock -> repair stale copies -> read checkpoint -> read client replies and
//!          both WAL rings -> decide the log (wal::recovery) -> rewrite the headers ring -> Ready
//! Ready:   follower / pre-candidate / candidate / leader (see raft.rs)
//!          leader: request -> WAL append -> replicate -> durable on a quorum -> commit -> apply
//!          -> reply; ring nearly full -> checkpoint (grid blocks, then superblock) -> ring wraps
//! Halted:  an unrecoverable error, named with the corrupt region; nothing more is done
//! ```
//!
//! The replica never blocks. Its driver delivers storage completions, peer messages, client
//! requests and ticks; replies, events and outgoing messages come out of [`Replica::drain_replies`],
//! [`Replica::drain_events`] and [`Replica::drain_messages`].
//!
//! - `open`: recovery.
//! - `raft`: elections (PreVote, CheckQuorum), replication, commit, log repair.
//! - `commit`: applying, client sessions and replies, checkpoints, superblock writes.
//! - `sync`: state sync — a follower behind the leader's checkpoint fetches its blocks.

mod backup;
mod commit;
mod hole;
mod open;
mod raft;
mod sync;

use crate::checksum::Checksum;
use crate::config::{Config, ConfigError, Layout, Zone};
use crate::digest::Digest;
use crate::io::{IoId, IoKind, ReadError, Storage, WriteError};
use crate::marks::{Mark, Marks};
use crate::message::Header;
use crate::sessions::{Sessions, REPLY_HEADER_SIZE};
use crate::state_machine::{Grid, InvalidRequest, StateError, StateMachine};
use crate::superblock::Superblock;
use crate::wal::batch::RequestId;
use crate::wal::header::Operation;
use crate::wal::journal::Journal;
use crate::wal::recovery::Recovery;

pub use backup::{BackupError, BackupPoint};
pub use raft::Role;

/// Why the replica stopped. Corruption names the region, so that an operator (or the simulator)
/// can tell exactly what was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No superblock copy is valid: not a ZiggyDB data file, or every copy is damaged.
    NoValidSuperblock,
    /// The data file was formatted with a different layout configuration.
    LayoutMismatch { file: u64, config: u64 },
    /// A durable structure failed its checksum and no redundant copy exists.
    Corrupt {
        zone: Zone,
        offset: u64,
        len: u64,
        what: String,
    },
    /// The state does not fit in half of the grid (the LSM engine lifts this limit).
    StateTooLarge { size: u64, capacity: u64 },
    /// A write failed; after a failed flush the file's state is unknown, so the replica stops.
    WriteFailed { kind: IoKind, error: WriteError },
    /// The state machine's storage (the LSM grid) failed or returned damaged data.
    State(crate::state_machine::StateError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NoValidSuperblock => write!(
                f,
                "no valid superblock copy: not a ZiggyDB data file, or all copies are corrupt"
            ),
            Error::LayoutMismatch { file, config } => write!(
                f,
                "data file layout {file:#x} does not match the configuration's layout {config:#x}"
            ),
            Error::Corrupt {
                zone,
                offset,
                len,
                what,
            } => write!(
                f,
                "unrecoverable corruption in zone {} at offset {offset} (+{len} bytes): {what}; \
                 no peer holds a copy to repair it from",
                zone.name()
            ),
            Error::StateTooLarge { size, capacity } => write!(
                f,
                "state of {size} bytes exceeds the checkpoint capacity of {capacity} bytes"
            ),
            Error::WriteFailed { kind, error } => write!(f, "a {kind:?} write failed: {error}"),
            Error::State(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

/// Why a request was refused. A refused request was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The replica is still opening: retry later.
    NotReady,
    /// The replica stopped on an unrecoverable error.
    Halted,
    /// Not the leader: retry at the leader, if one is known.
    NotLeader { leader: Option<u8> },
    /// The pipeline or the ring is full: retry later.
    Busy,
    /// The request is malformed or exceeds a limit.
    Invalid(InvalidRequest),
    /// Request numbers start at 1.
    ZeroRequestNumber,
    /// A newer request from this client was already applied; this one's reply is gone.
    StaleRequest { latest: u64 },
    /// The client's session was evicted (more clients than `clients_max` registered after it):
    /// this request was not applied, nor will any later one of this session be. Whether an
    /// earlier attempt of it took effect is unknown; the client must register anew.
    Evicted,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::NotReady => write!(f, "replica is opening; retry"),
            RequestError::Halted => write!(f, "replica halted on an unrecoverable error"),
            RequestError::NotLeader { leader: Some(l) } => {
                write!(f, "not the leader; try replica {l}")
            }
            RequestError::NotLeader { leader: None } => {
                write!(f, "not the leader; no leader known")
            }
            RequestError::Busy => write!(f, "replica is busy; retry"),
            RequestError::Invalid(why) => write!(f, "invalid request: {why}"),
            RequestError::ZeroRequestNumber => write!(f, "request numbers start at 1"),
            RequestError::StaleRequest { latest } => {
                write!(
                    f,
                    "stale request: request {latest} of this client was already applied"
                )
            }
            RequestError::Evicted => write!(
                f,
                "client session evicted: the request was not applied; register a new session"
            ),
        }
    }
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub client: u64,
    pub request: u64,
    /// The log index at which the request was applied (0 when refused).
    pub index: u64,
    pub result: Result<Vec<u8>, RequestError>,
}

/// Things the replica did, for drivers, tracing and the simulator's checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Recovery finished: the log was `checkpoint + 1 ..= head`; `faulty` entries await repair.
    Opened {
        checkpoint: u64,
        head: u64,
        truncated: u64,
        faulty: u64,
    },
    /// A request was applied to the state machine: request `position` of the `count` in entry
    /// `index` (a batch entry holds several; a no-op is one request of client 0). Applied means
    /// decided in log order: a registration, a duplicate or a request of an evicted session
    /// changes no state.
    Applied {
        index: u64,
        position: u32,
        count: u32,
        checksum: Checksum,
        client: u64,
        session: u64,
        request: u64,
        /// The entry's timestamp (what expiry in the state machine reads).
        timestamp: u64,
    },
    /// A checkpoint became durable; the ring may wrap past it.
    Checkpointed {
        index: u64,
        sequence: u64,
        /// The checksum of the checkpoint's blob (client table and the state's manifest root):
        /// equal on two replicas only if their checkpoints at `index` are equal block for block.
        state_checksum: Checksum,
        /// Whether it came from the leader (state sync) rather than from this replica's own state.
        installed: bool,
    },
    /// A checkpoint synced from the leader was installed (state sync).
    Installed { index: u64 },
    /// The replica's role or term changed.
    Role {
        role: Role,
        term: u64,
        leader: Option<u8>,
    },
    /// A faulty WAL entry was repaired from the leader's copy.
    Repaired { index: u64 },
    /// A peer came back with a different data file (a new incarnation): its messages are refused,
    /// so it cannot rejoin as if it still held what it had promised.
    PeerReplaced { replica: u8, known: u64, found: u64 },
    /// The state machine's storage failed; the replica awaits a checkpoint from the leader.
    StateLost { error: String },
    /// The replica stopped.
    Halted(Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Created, `open` not called yet.
    Closed,
    Opening,
    Ready,
    Halted,
}

/// A read waiting for ReadIndex (see `Replica::serve_reads`).
pub(crate) struct PendingRead {
    id: RequestId,
    operation: Operation,
    body: Vec<u8>,
    /// The commit index when the read arrived: it must be applied before the read is served.
    index: u64,
    /// The heartbeat round a quorum must acknowledge (begun after the read arrived).
    round: u64,
}

/// A message for a peer, encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: u8,
    pub bytes: Vec<u8>,
}

/// A leader's view of one peer (see [`Replica::peer_progress`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    pub replica: u8,
    /// The highest index known durable on the peer and equal to the leader's; None until the
    /// peer has answered in this term.
    pub matched: Option<u64>,
    /// Ticks since the peer last answered.
    pub silent_ticks: u64,
}

/// Counters for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages_received: u64,
    pub messages_dropped: u64,
    pub messages_sent: u64,
    pub elections: u64,
    pub truncated: u64,
    pub repaired: u64,
    /// State sync, leader side: offers sent, blocks served.
    pub sync_offers: u64,
    pub sync_blocks_served: u64,
    /// State sync, follower side: syncs completed; blocks fetched, and found in the local grid
    /// (by the walks of completed syncs); requests sent again after a timeout; restarts at a
    /// newer target; answers that arrived for nothing in flight.
    pub syncs: u64,
    pub sync_blocks_fetched: u64,
    pub sync_blocks_local: u64,
    pub sync_retransmits: u64,
    pub sync_retargets: u64,
    pub sync_duplicates: u64,
    /// Messages refused because their sender's data file was replaced.
    pub refused_replaced: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    ReadSuperblock,
    /// Rewriting copies that do not hold the chosen version before anything else: otherwise a
    /// torn write of the next version could leave an older version newest, whose grid area and
    /// WAL slots may already have been reused.
    RepairSuperblock,
    ReadState,
    ReadRings,
    WriteHeaders,
    Done,
}

pub struct Replica<S: StateMachine> {
    pub(crate) config: Config,
    pub(crate) layout: Layout,
    pub(crate) status: Status,
    pub(crate) phase: Phase,
    pub(crate) id: u8,
    pub(crate) count: u8,
    pub(crate) cluster: u64,
    /// The durable superblock.
    pub(crate) superblock: Superblock,
    pub(crate) superblock_write: Option<commit::SuperblockWrite>,
    pub(crate) journal: Journal,
    pub(crate) state: S,
    pub(crate) sessions: Sessions,
    pub(crate) applied: u64,
    pub(crate) commit: u64,
    pub(crate) ticks: u64,
    /// Where the clock starts (nanoseconds): 0 in the simulator, the Unix time at start in a
    /// server, so that entry timestamps are wall-clock times (expiry deadlines are).
    clock_base: u64,
    pub(crate) timestamp: u64,
    pub(crate) raft: raft::Raft,
    pub(crate) prng: crate::prng::Prng,
    pub(crate) replies: Vec<Reply>,
    pub(crate) events: Vec<Event>,
    pub(crate) outbox: Vec<Outgoing>,
    pub(crate) pool: Vec<Vec<u8>>,
    pub(crate) body_scratch: Vec<u8>,
    /// Requests gathered while an entry write is in flight, as batch records (see `wal::batch`).
    pub(crate) queue: Vec<u8>,
    pub(crate) queue_count: u32,
    /// The requests in `queue`, so a retry is found without rescanning it.
    pub(crate) queued: std::collections::BTreeSet<RequestId>,
    /// Whether the driver announces its flushes ([`Replica::prepare_flush`]): then every request
    /// between two flushes goes into one entry; otherwise a request on an idle journal is
    /// appended at once.
    pub(crate) flush_points: bool,
    /// Reads waiting for ReadIndex: a confirmed heartbeat round and the commit index applied.
    pub(crate) reads: std::collections::VecDeque<PendingRead>,
    pub(crate) reply_scratch: Vec<u8>,
    pub(crate) apply_scratch: Vec<u8>,
    pub(crate) sector_scratch: Vec<u8>,
    pub(crate) block_scratch: Vec<u8>,
    /// A block being served to a syncing peer.
    pub(crate) serve_scratch: Vec<u8>,
    /// The durable checkpoint's client replies, one sector per slot (served in state sync).
    pub(crate) checkpoint_replies: Vec<u8>,
    /// The replies of the checkpoint being written.
    pub(crate) pending_replies: Vec<u8>,
    pub(crate) checkpoint: Option<commit::CheckpointProgress>,
    /// The latest durable checkpoint's blob, kept to send to lagging peers.
    pub(crate) checkpoint_blob: Vec<u8>,
    /// The blob of the checkpoint being written.
    pub(crate) pending_blob: Vec<u8>,
    /// The state machine's storage failed (a damaged grid block): the state is gone until a
    /// checkpoint from the leader replaces it. The log is intact, so the replica keeps voting
    /// and acknowledging, but it neither applies nor campaigns.
    pub(crate) state_lost: bool,
    /// A peer that lost its state asked for a checkpoint newer than the last one.
    pub(crate) checkpoint_wanted: bool,
    /// The leader's checkpoint being taken in block by block (see `sync.rs`).
    pub(crate) sync: Option<sync::Sync>,
    pub(crate) recovery_buffers: [Vec<u8>; 5],
    pub(crate) recovery_pending: u32,
    pub(crate) recovery: Option<Recovery>,
    pub(crate) superblock_repairs: Vec<u16>,
    pub(crate) repairs_in_flight: u32,
    pub stats: Stats,
    /// Coverage marks of this replica's own decisions (see [`Replica::marks`]).
    pub(crate) marks: Marks,
}

impl<S: StateMachine> Replica<S> {
    /// Allocates every buffer the replica will use. `seed` drives its randomized timeouts. Call
    /// [`Replica::open`] next.
    /// A replica over `grid`, the block storage of its state machine (the LSM tree).
    pub fn new(config: Config, seed: u64, grid: Grid) -> Result<Replica<S>, ConfigError> {
        config.validate()?;
        let layout = Layout::new(&config);
        let reply_max = layout.reply_slot_size as usize - REPLY_HEADER_SIZE;
        let message_max = crate::message::MESSAGE_HEADER_SIZE
            + config.append_max as usize * config.wal_entry_size_max as usize;
        Ok(Replica {
            journal: Journal::new(&config, 0),
            state: S::new(&config, grid),
            sessions: Sessions::new(config.clients_max as usize, reply_max),
            superblock: Superblock::genesis(&config, 0, 0, 1, 1),
            superblock_write: None,
            status: Status::Closed,
            phase: Phase::ReadSuperblock,
            id: 0,
            count: 1,
            cluster: 0,
            applied: 0,
            commit: 0,
            ticks: 0,
            clock_base: 0,
            timestamp: 0,
            raft: raft::Raft::new(1),
            prng: crate::prng::Prng::new(seed),
            replies: Vec::with_capacity(config.batch_max as usize * 4),
            events: Vec::with_capacity(config.batch_max as usize * 4),
            outbox: Vec::with_capacity(64),
            pool: (0..16).map(|_| Vec::with_capacity(message_max)).collect(),
            body_scratch: Vec::with_capacity(message_max),
            queue: Vec::with_capacity(config.wal_entry_size_max as usize),
            queue_count: 0,
            queued: std::collections::BTreeSet::new(),
            flush_points: false,
            reads: std::collections::VecDeque::new(),
            reply_scratch: Vec::with_capacity(reply_max.max(config.value_size_max as usize + 8)),
            apply_scratch: Vec::with_capacity(config.wal_entry_size_max as usize),
            sector_scratch: vec![0; layout.sector_size as usize],
            block_scratch: vec![0; layout.grid_block_size as usize],
            checkpoint_replies: Vec::new(),
            pending_replies: Vec::new(),
            checkpoint: None,
            checkpoint_blob: Vec::new(),
            pending_blob: Vec::new(),
            state_lost: false,
            checkpoint_wanted: false,
            sync: None,
            serve_scratch: Vec::new(),
            recovery_buffers: Default::default(),
            recovery_pending: 0,
            recovery: None,
            superblock_repairs: Vec::new(),
            repairs_in_flight: 0,
            stats: Stats::default(),
            marks: Marks::default(),
            layout,
            config,
        })
    }

    /// The initial contents of replica `replica`'s data file in a cluster of `replica_count`:
    /// every copy of the genesis superblock, as `(offset, bytes)` writes. Everything else in the
    /// file must read as zeros.
    ///
    /// `members` holds every replica's data-file incarnation (random, non-zero), chosen when the
    /// cluster is formed and given to every replica, so that from its first moment each replica
    /// knows its peers' data files and refuses a replaced one (see `raft::accept_incarnation`).
    /// `members[replica]` is this data file's own; a replica formatted alone may leave the others
    /// zero, to be learned on first contact.
    pub fn format(
        config: &Config,
        cluster: u64,
        replica: u8,
        members: &[u64],
    ) -> Vec<(u64, Vec<u8>)> {
        let layout = Layout::new(config);
        let replica_count = members.len() as u8;
        let incarnation = members[replica as usize];
        let mut genesis = Superblock::genesis(config, cluster, replica, replica_count, incarnation);
        genesis.peers[..members.len()].copy_from_slice(members);
        (0..layout.superblock_copies)
            .map(|copy| {
                let mut sector = vec![0u8; layout.sector_size as usize];
                genesis.encode(copy as u16, &mut sector);
                (layout.superblock_copy_offset(copy), sector)
            })
            .collect()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// This replica's index, and the cluster's size (known once opened).
    pub fn id(&self) -> u8 {
        self.id
    }

    pub fn replica_count(&self) -> u8 {
        self.count
    }

    pub fn role(&self) -> Role {
        self.raft.role
    }

    pub fn term(&self) -> u64 {
        self.raft.term
    }

    pub fn leader(&self) -> Option<u8> {
        self.raft.leader
    }

    /// Whether requests submitted now are taken: this replica leads, and has committed an entry of
    /// its term. A single node gets there by itself right after opening.
    pub fn accepting_requests(&self) -> bool {
        self.status == Status::Ready && self.raft.role == Role::Leader && self.raft.leader_ready
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn commit_index(&self) -> u64 {
        self.commit
    }

    /// A one-line account of what this replica waits for, for liveness failure reports.
    pub fn liveness_report(&self) -> String {
        format!(
            "leader {:?} voted {:?} deadline {:+} first_faulty {:?} state_lost {} installing {} inquiry {:?} superblock t{}",
            self.raft.leader,
            self.raft.voted_for,
            self.raft.election_deadline as i64 - self.ticks as i64,
            self.journal.first_faulty(),
            self.state_lost,
            self.installing(),
            self.raft.inquiry.as_ref().map(|i| (i.term(), i.index())),
            self.superblock.term,
        )
    }

    pub fn log_head(&self) -> u64 {
        self.journal.head()
    }

    /// What this replica, if it leads, knows of each peer's log (empty otherwise): for operators,
    /// never for decisions.
    pub fn peer_progress(&self) -> Vec<PeerProgress> {
        if self.raft.role != Role::Leader {
            return Vec::new();
        }
        (0..self.count)
            .filter(|&peer| peer != self.id)
            .map(|peer| {
                let progress = &self.raft.progress[peer as usize];
                PeerProgress {
                    replica: peer,
                    matched: progress.acked.then_some(progress.matched),
                    silent_ticks: self.ticks.saturating_sub(progress.heard),
                }
            })
            .collect()
    }

    /// The last index durable here (entries and redundant headers, or the durable checkpoint):
    /// recovery must bring back at least that much. While a checkpoint from the leader installs,
    /// the journal already counts the new anchor, which is not durable until its superblock is:
    /// then only the durable checkpoint is certain.
    pub fn durable_index(&self) -> u64 {
        if self.installing() {
            return self.superblock.checkpoint_index;
        }
        self.journal.durable()
    }

    pub fn checkpoint_index(&self) -> u64 {
        self.superblock.checkpoint_index
    }

    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The applied state. Reads of it are linearizable only through the log (submit a read
    /// operation); this accessor is for tests, tools and a single embedded node.
    pub fn state(&mut self) -> Result<(&mut S, u64), RequestError> {
        match self.status {
            Status::Ready => Ok((&mut self.state, self.applied)),
            Status::Halted => Err(RequestError::Halted),
            _ => Err(RequestError::NotReady),
        }
    }

    /// The digest of the applied state and how far it is applied (an error when the state's
    /// storage failed: see [`Replica::state_lost`]).
    pub fn state_digest(&mut self) -> Result<(u64, u64), RequestError> {
        if self.state_lost {
            return Err(RequestError::NotReady);
        }
        let (state, applied) = self.state()?;
        match state.digest() {
            Ok(digest) => Ok((digest, applied)),
            Err(e) => {
                self.on_state_error(e);
                Err(RequestError::NotReady)
            }
        }
    }

    /// A digest of the applied state and the client sessions: equal on replicas that applied
    /// the same log.
    pub fn digest(&mut self) -> u64 {
        let state = self.state.digest().unwrap_or(0);
        let mut digest = Digest::new();
        digest.u64(self.applied).u64(state);
        self.sessions.digest(&mut digest);
        digest.finish()
    }

    pub fn drain_replies(&mut self) -> std::vec::Drain<'_, Reply> {
        self.replies.drain(..)
    }

    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// Hands each outgoing peer message to `send`, then returns its buffer to the pool.
    pub fn drain_messages(&mut self, mut send: impl FnMut(u8, &[u8])) {
        let mut outbox = std::mem::take(&mut self.outbox);
        for message in outbox.drain(..) {
            send(message.to, &message.bytes);
            self.pool.push(message.bytes);
        }
        self.outbox = outbox;
    }

    /// How often each coverage mark was hit since this replica was created: its own, and its
    /// state machine's (flushes, compactions).
    pub fn marks(&self) -> Marks {
        let mut marks = self.marks;
        self.state.marks(&mut marks);
        marks
    }

    /// Whether the state was lost to a storage failure and awaits a checkpoint from the leader.
    pub fn state_lost(&self) -> bool {
        self.state_lost
    }

    /// The state machine failed. A single replica halts (nothing holds another copy); a cluster
    /// member drops its state and asks the leader for a checkpoint (the log stays whole).
    pub(crate) fn on_state_error(&mut self, error: StateError) {
        if self.count == 1 || matches!(error, StateError::Decode(_)) {
            return self.halt(Error::State(error));
        }
        if self.state_lost {
            return;
        }
        self.state_lost = true;
        self.marks.hit(Mark::StateLost);
        self.events.push(Event::StateLost {
            error: error.to_string(),
        });
        // Whatever restore finds, the state is rebuilt from the leader's checkpoint.
        let _ = self.state.restore(&[]);
        self.sessions = Sessions::new(self.config.clients_max as usize, self.reply_max());
        if self.raft.role != Role::Follower {
            let term = self.raft.term;
            self.become_follower(term, None);
        }
    }

    pub(crate) fn halt(&mut self, error: Error) {
        if self.status != Status::Halted {
            self.status = Status::Halted;
            self.events.push(Event::Halted(error));
        }
    }

    /// Encodes a message to a peer into a pooled buffer.
    pub(crate) fn send(&mut self, header: Header, body: &[u8]) {
        debug_assert!(header.to < self.count && header.to != self.id);
        let mut bytes = self.pool.pop().unwrap_or_default();
        header.encode(body, &mut bytes);
        self.stats.messages_sent += 1;
        self.outbox.push(Outgoing {
            to: header.to,
            bytes,
        });
    }

    /// Advances the replica's clock by one tick: elections, heartbeats, CheckQuorum.
    pub fn tick<T: Storage>(&mut self, storage: &mut T) {
        self.ticks += 1;
        if self.status == Status::Ready {
            self.raft_tick(storage);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Client requests

    /// Submits a client request. The reply arrives in [`Replica::drain_replies`] once the request
    /// is committed and applied — or at once, if refused, or a retry of an applied request.
    ///
    /// A client registers first ([`Operation::REGISTER`], request 0, session 0, empty body): the
    /// reply's index is its session number, which every later request carries in `id.session`.
    pub fn submit<T: Storage>(
        &mut self,
        storage: &mut T,
        id: RequestId,
        operation: Operation,
        body: &[u8],
    ) {
        if let Err(error) = self.admit(id, operation, body) {
            return self.refuse(id, error);
        }
        let read_only = S::is_read_only(operation);
        if operation == Operation::REGISTER {
            if let Some((_, session)) = self.sessions.find(id.client) {
                let index = session.session;
                return self.replies.push(Reply {
                    client: id.client,
                    request: 0,
                    index,
                    result: Ok(Vec::new()),
                });
            }
        } else if !read_only && self.answered_from_session(id) {
            return;
        }
        if !read_only {
            let duplicate_check =
                self.config.planted_bug != Some(crate::config::PlantedBug::ApplyTwice);
            let pending =
                self.queued.contains(&id) || self.journal.contains_request(self.applied, id);
            if duplicate_check && pending {
                return; // a retry of a request in the log: its reply comes when it applies
            }
        }
        if read_only && self.config.planted_bug == Some(crate::config::PlantedBug::LocalReads) {
            // Planted bug: answer reads from local state, without the log or a lease.
            return self.answer_locally(id, operation, body);
        }
        if read_only {
            // ReadIndex: no log entry; served once a heartbeat round begun after this read is
            // acknowledged by a quorum (this replica still leads) and the commit index it saw
            // is applied.
            self.reads.push_back(PendingRead {
                id,
                operation,
                body: body.to_vec(),
                index: self.commit,
                round: self.raft.round + 1,
            });
            self.raft.round_wanted = true;
        } else {
            self.enqueue(id, operation, body);
        }
        self.advance(storage);
    }

    /// Answers a write from its client's session when the session settles it: a retry of the
    /// last applied request gets its reply again, an older one is stale, and a request of an
    /// evicted session is refused. False when the request must go to the log.
    fn answered_from_session(&mut self, id: RequestId) -> bool {
        let Some(session) = self.sessions.current(id.client, id.session) else {
            // Only a session registered at or before `applied` is known here: a later one may be
            // in a committed entry this replica has not applied yet (applying decides then).
            let replay =
                self.config.planted_bug == Some(crate::config::PlantedBug::EvictedSessionReplay);
            if id.session <= self.applied && !replay {
                self.marks.hit(Mark::EvictedRequestRefused);
                self.refuse(id, RequestError::Evicted);
                return true;
            }
            return false;
        };
        let result = match id.request.cmp(&session.request) {
            std::cmp::Ordering::Greater => return false,
            std::cmp::Ordering::Less => Err(RequestError::StaleRequest {
                latest: session.request,
            }),
            std::cmp::Ordering::Equal => Ok(session.reply.clone()),
        };
        let index = if result.is_ok() { session.index } else { 0 };
        self.replies.push(Reply {
            client: id.client,
            request: id.request,
            index,
            result,
        });
        true
    }

    fn refuse(&mut self, id: RequestId, error: RequestError) {
        self.replies.push(Reply {
            client: id.client,
            request: id.request,
            index: 0,
            result: Err(error),
        });
    }

    /// Answers the reads whose leadership round and index are confirmed.
    fn serve_reads(&mut self) {
        if self.raft.role != Role::Leader {
            return;
        }
        let confirmed = self.quorum_round();
        while let Some(read) = self.reads.front() {
            if read.round > confirmed || read.index > self.applied {
                break;
            }
            let read = self.reads.pop_front().expect("checked above");
            let mut out = std::mem::take(&mut self.reply_scratch);
            let now = self.read_timestamp();
            if let Err(e) = self.state.query(read.operation, &read.body, now, &mut out) {
                self.reply_scratch = out;
                return self.on_state_error(e);
            }
            // Index 0: served outside the log (at the state of `read.index` or later).
            let reply = Reply {
                client: read.id.client,
                request: read.id.request,
                index: 0,
                result: Ok(out.clone()),
            };
            self.replies.push(reply);
            self.reply_scratch = out;
        }
    }

    /// Queues a request for the next batch entry, and appends that entry at once when the
    /// journal is idle (the lowest latency); otherwise the requests that arrive meanwhile join
    /// it, to be written as one entry.
    fn enqueue(&mut self, id: RequestId, operation: Operation, body: &[u8]) {
        let record = crate::wal::batch::RECORD_HEADER_SIZE + body.len();
        let body_max = self.config.entry_body_max();
        if record > body_max {
            let why = InvalidRequest::Malformed("entry exceeds wal_entry_size_max");
            return self.refuse(id, RequestError::Invalid(why));
        }
        if self.queue.len() + record > body_max && !self.seal_queue() {
            return self.refuse(id, RequestError::Busy);
        }
        crate::wal::batch::push(&mut self.queue, id, operation, body);
        self.queue_count += 1;
        self.queued.insert(id);
        if !self.flush_points && self.journal.writes_now() {
            self.seal_queue();
        }
    }

    /// Appends the queued requests as one batch entry. False when the journal has no room yet.
    pub(crate) fn seal_queue(&mut self) -> bool {
        if self.queue_count == 0 {
            return true;
        }
        self.timestamp = self.clock().max(self.timestamp + 1);
        let term = self.raft.term;
        let queue = std::mem::take(&mut self.queue);
        let result = self
            .journal
            .append(Operation::BATCH, term, self.timestamp, 0, 0, &[&queue]);
        self.queue = queue;
        if result.is_err() {
            return false;
        }
        self.queue.clear();
        self.queue_count = 0;
        self.queued.clear();
        self.replicate_all(false);
        true
    }

    fn admit(&self, id: RequestId, operation: Operation, body: &[u8]) -> Result<(), RequestError> {
        match self.status {
            Status::Ready => {}
            Status::Halted => return Err(RequestError::Halted),
            _ => return Err(RequestError::NotReady),
        }
        if self.raft.role != Role::Leader || self.installing() {
            return Err(RequestError::NotLeader {
                leader: self.raft.leader.filter(|&l| l != self.id),
            });
        }
        if self.journal.head() - self.commit >= self.uncommitted_max() {
            return Err(RequestError::Busy); // bound the uncommitted tail (see maybe_checkpoint)
        }
        if !self.raft.leader_ready {
            return Err(RequestError::Busy); // not yet committed an entry of its own term
        }
        let malformed = |why| Err(RequestError::Invalid(InvalidRequest::Malformed(why)));
        if operation == Operation::REGISTER {
            if id.client == 0 || id.request != 0 || id.session != 0 || !body.is_empty() {
                return malformed("a registration is request 0 of session 0, with no body");
            }
            return Ok(());
        }
        if operation.0 < Operation::STATE_MACHINE_FIRST {
            return malformed("operation reserved for the replica");
        }
        if id.request == 0 {
            return Err(RequestError::ZeroRequestNumber);
        }
        if id.session == 0 && !S::is_read_only(operation) {
            return malformed("no session: register before the first write");
        }
        self.state
            .validate(operation, body)
            .map_err(RequestError::Invalid)
    }

    /// Starts the replica's clock at `ns` (a server: the Unix time now). Timestamps stay
    /// monotonic whatever the base: each is above the last one appended or applied.
    pub fn set_clock_base(&mut self, ns: u64) {
        self.clock_base = ns;
    }

    /// The replica's clock: its ticks so far, from the clock base (nanoseconds).
    pub(crate) fn clock(&self) -> u64 {
        self.clock_base + self.ticks * self.config.tick_ns
    }

    /// A read's time: the clock, never below an entry already appended or applied.
    fn read_timestamp(&self) -> u64 {
        self.clock().max(self.timestamp)
    }

    /// The most entries a leader keeps beyond the commit index.
    pub(crate) fn uncommitted_max(&self) -> u64 {
        2 * self.config.batch_max as u64
    }

    fn answer_locally(&mut self, id: RequestId, operation: Operation, body: &[u8]) {
        let mut out = std::mem::take(&mut self.reply_scratch);
        let now = self.read_timestamp();
        if let Err(e) = self.state.query(operation, body, now, &mut out) {
            self.reply_scratch = out;
            return self.on_state_error(e);
        }
        self.replies.push(Reply {
            client: id.client,
            request: id.request,
            index: 0, // served outside the log
            result: Ok(out.clone()),
        });
        self.reply_scratch = out;
    }

    // ---------------------------------------------------------------------------------------
    // Completions

    /// The driver is about to make every submitted write durable (one `fdatasync`): requests
    /// gathered for a batch entry are appended now, so they ride this flush instead of waiting for
    /// the entry write in flight. Drivers without such a moment may call it on every tick.
    pub fn prepare_flush<T: Storage>(&mut self, storage: &mut T) {
        self.flush_points = true;
        if self.status == Status::Ready && self.raft.role == Role::Leader && self.seal_queue() {
            self.journal.flush(storage);
        }
    }

    /// Delivers the completion of a read.
    pub fn on_read_complete<T: Storage>(
        &mut self,
        storage: &mut T,
        id: IoId,
        result: Result<&[u8], ReadError>,
    ) {
        assert_eq!(id.kind(), Some(IoKind::RecoveryRead), "only recovery reads");
        if self.status != Status::Opening {
            return;
        }
        self.on_recovery_read(storage, id, result);
    }

    /// Delivers the completion of a write.
    pub fn on_write_complete<T: Storage>(
        &mut self,
        storage: &mut T,
        id: IoId,
        result: Result<(), WriteError>,
    ) {
        let kind = id.kind().expect("the core's own tag");
        if let Err(error) = result {
            return self.halt(Error::WriteFailed { kind, error });
        }
        if self.status == Status::Halted {
            return;
        }
        match kind {
            IoKind::WalEntry => {
                self.journal.on_entry_written(id.n());
                self.journal.flush(storage);
            }
            IoKind::WalHeaders if self.phase == Phase::WriteHeaders => {
                self.phase = Phase::Done;
                self.on_recovery_headers_written(storage);
            }
            IoKind::WalHeaders => {
                self.journal.on_headers_written();
                self.journal.flush(storage);
                self.on_durable_advanced();
            }
            IoKind::WalRepair => self.on_repair_written(id.n()),
            IoKind::Reply => self.on_checkpoint_replies_written(),
            IoKind::GridBlock => self.on_checkpoint_block_written(storage),
            IoKind::Superblock if self.phase == Phase::RepairSuperblock => {
                self.repair_superblock(storage)
            }
            IoKind::Superblock => self.on_superblock_written(storage),
            IoKind::RecoveryRead => unreachable!("reads complete through on_read_complete"),
        }
        self.advance(storage);
    }

    /// After any event: commit what a quorum holds, apply, checkpoint, persist.
    pub(crate) fn advance<T: Storage>(&mut self, storage: &mut T) {
        if self.status != Status::Ready {
            return;
        }
        let idle = self.journal.writes_now() && !self.flush_points;
        if self.raft.role == Role::Leader && self.queue_count > 0 && idle {
            self.seal_queue();
        }
        self.advance_commit();
        self.apply_committed();
        self.maybe_start_round();
        self.serve_reads();
        self.advance_sync(storage);
        self.send_append_reply();
        self.maybe_checkpoint(storage);
        self.maybe_write_superblock(storage);
        self.journal.flush(storage);
        self.flush_repairs(storage);
    }
}
