//! The replica: one node's deterministic, single-threaded state machine over a data file.
//!
//! It owns the journal, the state machine, the client sessions and the checkpoint, and moves
//! through these phases:
//!
//! ```text
//! Opening: read superblock -> read checkpoint -> read client replies, WAL headers, WAL entries
//!          -> decide the log (wal::recovery) -> rewrite the headers ring -> replay -> Ready
//! Ready:   request -> WAL append -> durable -> commit -> apply -> reply (+ reply zone write)
//!          ring nearly full -> checkpoint (grid blocks, then superblock copies) -> ring wraps
//! Halted:  an unrecoverable error (named, with the corrupt region); nothing more is done
//! ```
//!
//! The replica never blocks: every method submits IO and returns. Its driver delivers
//! completions, requests and ticks; replies and events come out of [`Replica::drain_replies`]
//! and [`Replica::drain_events`].

use crate::checkpoint;
use crate::checksum::{checksum, Checksum};
use crate::config::{Config, ConfigError, Layout, Zone};
use crate::digest::Digest;
use crate::io::{IoId, IoKind, ReadError, Storage, WriteError};
use crate::sessions::{Sessions, REPLY_HEADER_SIZE};
use crate::state_machine::{InvalidRequest, StateMachine};
use crate::superblock::{self, Superblock};
use crate::wal::header::{EntryHeader, Operation, HEADER_SIZE};
use crate::wal::journal::{AppendError, Journal};
use crate::wal::recovery::{self, Recovery, RecoveryInput};

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
    WriteFailed {
        offset_kind: IoKind,
        error: WriteError,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NoValidSuperblock => {
                write!(
                    f,
                    "no valid superblock copy: not a ZiggyDB data file, or all copies are corrupt"
                )
            }
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
                 a single replica has no peer to repair it from",
                zone.name()
            ),
            Error::StateTooLarge { size, capacity } => write!(
                f,
                "state of {size} bytes exceeds the checkpoint capacity of {capacity} bytes"
            ),
            Error::WriteFailed { offset_kind, error } => {
                write!(f, "a {offset_kind:?} write failed: {error:?}")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Why a request was refused. The request was not applied (except `Duplicate`-style answers,
/// which come back as a normal reply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The replica is still opening: retry later.
    NotReady,
    /// The replica stopped on an unrecoverable error.
    Halted,
    /// The pipeline or the ring is full: retry later.
    Busy,
    /// The request is malformed or exceeds a limit.
    Invalid(InvalidRequest),
    /// Request numbers start at 1.
    ZeroRequestNumber,
    /// A newer request from this client was already applied; this one's reply is gone.
    StaleRequest { latest: u64 },
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::NotReady => write!(f, "replica is opening; retry"),
            RequestError::Halted => write!(f, "replica halted on an unrecoverable error"),
            RequestError::Busy => write!(f, "replica is busy; retry"),
            RequestError::Invalid(why) => write!(f, "invalid request: {why}"),
            RequestError::ZeroRequestNumber => write!(f, "request numbers start at 1"),
            RequestError::StaleRequest { latest } => {
                write!(
                    f,
                    "stale request: request {latest} of this client was already applied"
                )
            }
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
    /// Recovery finished: the log was `checkpoint + 1 ..= head`, replayed.
    Opened {
        checkpoint: u64,
        head: u64,
        truncated: u64,
    },
    /// An entry was applied to the state machine (during replay too).
    Applied {
        index: u64,
        checksum: Checksum,
        client: u64,
        request: u64,
    },
    /// A checkpoint became durable; the ring may wrap past it.
    Checkpointed { index: u64, sequence: u64 },
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

/// Recovery reads, by buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Buffer {
    Superblock = 0,
    State = 1,
    Replies = 2,
    Headers = 3,
    Entries = 4,
}

impl Buffer {
    const ALL: [Buffer; 5] = [
        Buffer::Superblock,
        Buffer::State,
        Buffer::Replies,
        Buffer::Headers,
        Buffer::Entries,
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    ReadSuperblock,
    /// Rewriting copies that do not hold the chosen version, one at a time, before anything
    /// else: otherwise a torn write of the next version could leave an older version newest,
    /// whose grid area and WAL slots may already have been reused.
    RepairSuperblock,
    ReadState,
    ReadRings,
    WriteHeaders,
    /// Recovery is over.
    Done,
}

/// Bytes that stand in for a sector the device could not read: they fail every checksum.
const UNREADABLE: u8 = 0xEE;

/// The state of an in-progress checkpoint.
struct CheckpointProgress {
    superblock: Superblock,
    /// Sessions (slot, index) whose reply must be durable before the superblock switch.
    replies_needed: Vec<(usize, u64)>,
    blocks_pending: u32,
    /// The superblock copy being written, once the blocks and replies are durable.
    copy: Option<u16>,
}

/// Per client slot: the reply zone write state.
#[derive(Clone, Copy, Debug, Default)]
struct ReplyWrite {
    in_flight: Option<u64>,
    dirty: bool,
    durable_index: u64,
}

pub struct Replica<S: StateMachine> {
    config: Config,
    layout: Layout,
    status: Status,
    phase: Phase,
    superblock: Superblock,
    journal: Journal,
    state: S,
    sessions: Sessions,
    applied: u64,
    ticks: u64,
    timestamp: u64,
    term: u64,
    replies: Vec<Reply>,
    events: Vec<Event>,
    reply_scratch: Vec<u8>,
    apply_scratch: Vec<u8>,
    sector_scratch: Vec<u8>,
    block_scratch: Vec<u8>,
    blob: Vec<u8>,
    reply_writes: Vec<ReplyWrite>,
    checkpoint: Option<CheckpointProgress>,
    recovery_buffers: [Vec<u8>; 5],
    recovery_pending: u32,
    recovery: Option<Recovery>,
    superblock_repairs: Vec<u16>,
}

impl<S: StateMachine> Replica<S> {
    /// Allocates every buffer the replica will use. Call [`Replica::open`] next.
    pub fn new(config: Config) -> Result<Replica<S>, ConfigError> {
        config.validate()?;
        let layout = Layout::new(&config);
        let reply_max = layout.reply_slot_size as usize - REPLY_HEADER_SIZE;
        Ok(Replica {
            journal: Journal::new(&config, 0),
            state: S::new(&config),
            sessions: Sessions::new(config.clients_max as usize, reply_max),
            superblock: Superblock::genesis(&config, 0, 0),
            status: Status::Closed,
            phase: Phase::ReadSuperblock,
            applied: 0,
            ticks: 0,
            timestamp: 0,
            term: 1,
            replies: Vec::with_capacity(config.batch_max as usize * 4),
            events: Vec::with_capacity(config.batch_max as usize * 4),
            reply_scratch: Vec::with_capacity(reply_max),
            apply_scratch: Vec::with_capacity(config.wal_entry_size_max as usize),
            sector_scratch: vec![0; layout.sector_size as usize],
            block_scratch: vec![0; layout.grid_block_size as usize],
            blob: Vec::new(),
            reply_writes: vec![ReplyWrite::default(); config.clients_max as usize],
            checkpoint: None,
            recovery_buffers: Default::default(),
            recovery_pending: 0,
            recovery: None,
            superblock_repairs: Vec::new(),
            layout,
            config,
        })
    }

    /// The initial contents of a data file: every copy of the genesis superblock, as
    /// `(offset, bytes)` writes. Everything else in the file must read as zeros.
    pub fn format(config: &Config, cluster: u64, replica: u8) -> Vec<(u64, Vec<u8>)> {
        let layout = Layout::new(config);
        let genesis = Superblock::genesis(config, cluster, replica);
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

    pub fn applied(&self) -> u64 {
        self.applied
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

    /// The applied state, for reads: linearizable on a single replica, because only durable,
    /// committed entries are ever applied.
    pub fn state(&self) -> Result<(&S, u64), RequestError> {
        match self.status {
            Status::Ready => Ok((&self.state, self.applied)),
            Status::Halted => Err(RequestError::Halted),
            _ => Err(RequestError::NotReady),
        }
    }

    /// A digest of the applied state and the client sessions.
    pub fn digest(&self) -> u64 {
        let mut digest = Digest::new();
        digest.u64(self.applied).u64(self.state.digest());
        self.sessions.digest(&mut digest);
        digest.finish()
    }

    pub fn drain_replies(&mut self) -> std::vec::Drain<'_, Reply> {
        self.replies.drain(..)
    }

    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// Advances the replica's clock by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
    }

    fn halt(&mut self, error: Error) {
        if self.status != Status::Halted {
            self.status = Status::Halted;
            self.events.push(Event::Halted(error));
        }
    }

    // ---------------------------------------------------------------------------------------
    // Opening and recovery

    /// Starts opening the data file: reads the superblock, the checkpoint and the WAL, then
    /// replays. Progress continues in the completion callbacks; `status()` becomes `Ready`.
    pub fn open<T: Storage>(&mut self, storage: &mut T) {
        assert_eq!(self.status, Status::Closed, "open is called once");
        self.status = Status::Opening;
        self.phase = Phase::ReadSuperblock;
        self.read_zone(storage, Buffer::Superblock, Zone::Superblock);
    }

    fn read_zone<T: Storage>(&mut self, storage: &mut T, buffer: Buffer, zone: Zone) {
        let start = self.layout.zone_start(zone);
        let len = self.layout.zone_size(zone);
        self.read_into(storage, buffer, start, len);
    }

    fn read_into<T: Storage>(&mut self, storage: &mut T, buffer: Buffer, offset: u64, len: u64) {
        let target = &mut self.recovery_buffers[buffer as usize];
        target.clear();
        target.resize(len as usize, 0);
        self.recovery_pending += 1;
        // n: buffer (8 bits) | 0 (a whole read) or sector + 1 (a retry, sector by sector).
        storage.submit_read(
            IoId::new(IoKind::RecoveryRead, (buffer as u64) << 48),
            offset,
            len as usize,
        );
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
        let buffer = Buffer::ALL[(id.n() >> 48) as usize];
        let sector_plus_one = id.n() & ((1 << 48) - 1);
        let sector_size = self.layout.sector_size as usize;
        let target = &mut self.recovery_buffers[buffer as usize];
        match (result, sector_plus_one) {
            (Ok(data), 0) => target.copy_from_slice(data),
            (Ok(data), s) => {
                let at = (s as usize - 1) * sector_size;
                target[at..at + sector_size].copy_from_slice(data);
            }
            (Err(ReadError::Io), 0) => {
                // Retry sector by sector, so one bad sector does not hide the whole zone.
                let sectors = target.len() / sector_size;
                let base = self.read_base(buffer);
                for s in 0..sectors as u64 {
                    self.recovery_pending += 1;
                    let n = ((buffer as u64) << 48) | (s + 1);
                    storage.submit_read(
                        IoId::new(IoKind::RecoveryRead, n),
                        base + s * sector_size as u64,
                        sector_size,
                    );
                }
            }
            (Err(ReadError::Io), s) => {
                let at = (s as usize - 1) * sector_size;
                target[at..at + sector_size].fill(UNREADABLE);
            }
        }
        self.recovery_pending -= 1;
        if self.recovery_pending == 0 {
            self.advance_recovery(storage);
        }
    }

    /// The file offset a recovery buffer was read from.
    fn read_base(&self, buffer: Buffer) -> u64 {
        match buffer {
            Buffer::Superblock => self.layout.zone_start(Zone::Superblock),
            Buffer::State => {
                let (first, _) = checkpoint::area_blocks(&self.layout, self.superblock.state_area);
                self.layout.grid_block_offset(first)
            }
            Buffer::Replies => self.layout.zone_start(Zone::ClientReplies),
            Buffer::Headers => self.layout.zone_start(Zone::WalHeaders),
            Buffer::Entries => self.layout.zone_start(Zone::WalEntries),
        }
    }

    fn advance_recovery<T: Storage>(&mut self, storage: &mut T) {
        match self.phase {
            Phase::ReadSuperblock => self.on_superblock_read(storage),
            Phase::ReadState => self.on_state_read(storage),
            Phase::ReadRings => self.on_rings_read(storage),
            Phase::RepairSuperblock | Phase::WriteHeaders | Phase::Done => {
                unreachable!("writes complete through on_write_complete")
            }
        }
    }

    fn on_superblock_read<T: Storage>(&mut self, storage: &mut T) {
        let Some(selection) = superblock::select(&self.layout, &self.recovery_buffers[0]) else {
            return self.halt(Error::NoValidSuperblock);
        };
        let sb = selection.superblock;
        if sb.layout != self.config.layout_fingerprint() {
            return self.halt(Error::LayoutMismatch {
                file: sb.layout,
                config: self.config.layout_fingerprint(),
            });
        }
        self.superblock = sb;
        self.journal = Journal::new(&self.config, sb.cluster);
        self.superblock_repairs = selection.stale_copies;
        self.superblock_repairs.reverse();
        self.repair_superblock(storage);
    }

    /// Writes the next stale superblock copy, or moves on to reading the checkpoint.
    fn repair_superblock<T: Storage>(&mut self, storage: &mut T) {
        if let Some(copy) = self.superblock_repairs.pop() {
            self.phase = Phase::RepairSuperblock;
            self.superblock.encode(copy, &mut self.sector_scratch);
            let offset = self.layout.superblock_copy_offset(copy as u64);
            let id = IoId::new(IoKind::Superblock, copy as u64);
            storage.submit_write(id, offset, &self.sector_scratch);
            return;
        }
        let sb = self.superblock;
        self.phase = Phase::ReadState;
        let blocks = checkpoint::blocks_for(&self.layout, sb.state_size);
        if blocks == 0 {
            self.recovery_buffers[Buffer::State as usize].clear();
            return self.on_state_read(storage);
        }
        let (first, _) = checkpoint::area_blocks(&self.layout, sb.state_area);
        let offset = self.layout.grid_block_offset(first);
        self.read_into(
            storage,
            Buffer::State,
            offset,
            blocks * self.layout.grid_block_size,
        );
    }

    fn on_state_read<T: Storage>(&mut self, storage: &mut T) {
        let sb = self.superblock;
        let (first, _) = checkpoint::area_blocks(&self.layout, sb.state_area);
        let block_size = self.layout.grid_block_size as usize;
        let mut blob = Vec::with_capacity(sb.state_size as usize);
        let data = std::mem::take(&mut self.recovery_buffers[Buffer::State as usize]);
        for (n, block) in data.chunks(block_size).enumerate() {
            let address = first + n as u64;
            match checkpoint::decode_block(block, address, sb.sequence) {
                Some(payload) => blob.extend_from_slice(payload),
                None => {
                    return self.halt(Error::Corrupt {
                        zone: Zone::Grid,
                        offset: self.layout.grid_block_offset(address),
                        len: block_size as u64,
                        what: format!("checkpoint block {address} of sequence {}", sb.sequence),
                    })
                }
            }
        }
        let corrupt_blob = |what: &str| Error::Corrupt {
            zone: Zone::Grid,
            offset: self.layout.grid_block_offset(first),
            len: data.len() as u64,
            what: what.to_string(),
        };
        if blob.len() as u64 != sb.state_size || checksum(&blob) != sb.state_checksum {
            return self.halt(corrupt_blob("checkpoint blob checksum"));
        }
        if sb.state_size > 0 {
            let clients_max = self.config.clients_max as usize;
            let reply_max = self.layout.reply_slot_size as usize - REPLY_HEADER_SIZE;
            let Some((sessions, rest)) = Sessions::decode(clients_max, reply_max, &blob) else {
                return self.halt(corrupt_blob("checkpoint client table does not decode"));
            };
            let Ok(state) = S::decode_snapshot(&self.config, rest) else {
                return self.halt(corrupt_blob("checkpoint state does not decode"));
            };
            self.sessions = sessions;
            self.state = state;
        }
        self.applied = sb.checkpoint_index;
        self.timestamp = sb.checkpoint_timestamp;
        self.phase = Phase::ReadRings;
        self.read_zone(storage, Buffer::Replies, Zone::ClientReplies);
        self.read_zone(storage, Buffer::Headers, Zone::WalHeaders);
        self.read_zone(storage, Buffer::Entries, Zone::WalEntries);
    }

    fn on_rings_read<T: Storage>(&mut self, storage: &mut T) {
        let sb = self.superblock;
        let result = recovery::recover(&RecoveryInput {
            layout: &self.layout,
            cluster: sb.cluster,
            checkpoint_index: sb.checkpoint_index,
            checkpoint_checksum: sb.checkpoint_checksum,
            headers: &self.recovery_buffers[Buffer::Headers as usize],
            entries: &self.recovery_buffers[Buffer::Entries as usize],
        });
        if let Some(&index) = result.faulty.first() {
            let slot = self.layout.slot_of(index);
            return self.halt(Error::Corrupt {
                zone: Zone::WalEntries,
                offset: self.layout.entry_offset(slot),
                len: self.layout.wal_slot_size,
                what: format!(
                    "WAL entries {:?} were durable but are unreadable",
                    result.faulty
                ),
            });
        }
        // Rewrite the headers ring so every entry of the recovered log is provably durable
        // before it is applied.
        let mut headers = std::mem::take(&mut self.recovery_buffers[Buffer::Headers as usize]);
        Journal::rebuild_headers(
            &self.layout,
            sb.checkpoint_index,
            &result,
            &self.recovery_buffers[Buffer::Entries as usize],
            &mut headers,
        );
        self.journal.restore(sb.checkpoint_index, &result, &headers);
        self.recovery = Some(result);
        self.phase = Phase::WriteHeaders;
        storage.submit_write(
            IoId::new(IoKind::WalHeaders, 0),
            self.layout.zone_start(Zone::WalHeaders),
            &headers,
        );
    }

    fn on_recovery_headers_written<T: Storage>(&mut self, storage: &mut T) {
        let recovery = self.recovery.take().expect("recovery in progress");
        let sb = self.superblock;
        let entries = std::mem::take(&mut self.recovery_buffers[Buffer::Entries as usize]);
        for index in sb.checkpoint_index + 1..=recovery.head {
            let slot = self.layout.slot_of(index);
            let bytes = recovery::slot_bytes(&self.layout, &entries, slot);
            let header = EntryHeader::decode(bytes).expect("recovered entries are valid");
            let body = &bytes[HEADER_SIZE..HEADER_SIZE + header.size as usize];
            self.apply(storage, &header, body, false);
        }
        if let Err(error) = self.restore_replies(sb.checkpoint_index) {
            return self.halt(error);
        }
        for buffer in &mut self.recovery_buffers {
            *buffer = Vec::new();
        }
        self.events.push(Event::Opened {
            checkpoint: sb.checkpoint_index,
            head: recovery.head,
            truncated: recovery.count(recovery::Decision::Torn) as u64
                + recovery.count(recovery::Decision::Cut) as u64,
        });
        self.status = Status::Ready;
        self.maybe_checkpoint(storage);
    }

    /// Loads the replies of sessions whose last request was applied before the checkpoint (the
    /// others were regenerated by replay) from the client-replies zone.
    fn restore_replies(&mut self, checkpoint_index: u64) -> Result<(), Error> {
        let sector = self.layout.reply_slot_size as usize;
        let zone = &self.recovery_buffers[Buffer::Replies as usize];
        let needed: Vec<(usize, u64, u64, u64)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.index <= checkpoint_index)
            .map(|(slot, s)| (slot, s.client, s.request, s.index))
            .collect();
        for (slot, client, request, index) in needed {
            let bytes = &zone[slot * sector..(slot + 1) * sector];
            match Sessions::decode_reply(bytes) {
                Some(r) if r.client == client && r.request == request && r.index == index => {
                    self.sessions.set_reply(slot, &r.reply);
                    self.reply_writes[slot].durable_index = index;
                }
                _ => {
                    return Err(Error::Corrupt {
                        zone: Zone::ClientReplies,
                        offset: self.layout.reply_offset(slot as u64),
                        len: sector as u64,
                        what: format!("reply of client {client} request {request}"),
                    })
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Requests

    /// Submits a client request. The reply arrives in [`Replica::drain_replies`] once the request
    /// is durable and applied (or at once, if refused or a retry of an applied request).
    pub fn submit<T: Storage>(
        &mut self,
        storage: &mut T,
        client: u64,
        request: u64,
        operation: Operation,
        body: &[u8],
    ) {
        let refuse = |error: RequestError| Reply {
            client,
            request,
            index: 0,
            result: Err(error),
        };
        match self.status {
            Status::Ready => {}
            Status::Halted => return self.replies.push(refuse(RequestError::Halted)),
            _ => return self.replies.push(refuse(RequestError::NotReady)),
        }
        if request == 0 {
            return self.replies.push(refuse(RequestError::ZeroRequestNumber));
        }
        if let Err(why) = self.state.validate(operation, body) {
            return self.replies.push(refuse(RequestError::Invalid(why)));
        }
        if let Some((_, session)) = self.sessions.find(client) {
            if request < session.request {
                let latest = session.request;
                return self
                    .replies
                    .push(refuse(RequestError::StaleRequest { latest }));
            }
            if request == session.request {
                let reply = Reply {
                    client,
                    request,
                    index: session.index,
                    result: Ok(session.reply.clone()),
                };
                return self.replies.push(reply);
            }
        }
        if self.journal.in_pipeline(client, request) {
            return; // a retry of a request on its way: its reply comes when it commits
        }
        self.timestamp = (self.ticks * self.config.tick_ns).max(self.timestamp + 1);
        match self.journal.append(
            operation,
            self.term,
            self.timestamp,
            client,
            request,
            &[body],
        ) {
            Ok(_) => self.journal.flush(storage),
            Err(AppendError::PipelineFull | AppendError::RingFull) => {
                self.replies.push(refuse(RequestError::Busy))
            }
            Err(AppendError::TooLarge) => {
                self.replies
                    .push(refuse(RequestError::Invalid(InvalidRequest::Malformed(
                        "entry exceeds wal_entry_size_max",
                    ))))
            }
        }
        self.apply_committed(storage);
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
            return self.halt(Error::WriteFailed {
                offset_kind: kind,
                error,
            });
        }
        if self.status == Status::Halted {
            return;
        }
        match kind {
            IoKind::WalEntry => {
                self.journal.on_entry_written();
                self.journal.flush(storage);
            }
            IoKind::WalHeaders if self.phase == Phase::WriteHeaders => {
                self.phase = Phase::Done;
                self.on_recovery_headers_written(storage);
            }
            IoKind::WalHeaders => {
                self.journal.on_headers_written();
                self.apply_committed(storage);
                self.journal.flush(storage);
            }
            IoKind::Reply => self.on_reply_written(storage, id.n() as usize),
            IoKind::GridBlock => self.on_checkpoint_block_written(storage),
            IoKind::Superblock if self.phase == Phase::RepairSuperblock => {
                self.repair_superblock(storage)
            }
            IoKind::Superblock => self.on_superblock_written(storage),
            IoKind::RecoveryRead => unreachable!("reads complete through on_read_complete"),
        }
        self.maybe_checkpoint(storage);
    }

    fn apply_committed<T: Storage>(&mut self, storage: &mut T) {
        // The body is copied into a buffer sized at start, so applying does not allocate.
        let mut body = std::mem::take(&mut self.apply_scratch);
        while self.applied < self.journal.committed() {
            let index = self.applied + 1;
            let (header, bytes) = self.journal.entry(index);
            body.clear();
            body.extend_from_slice(bytes);
            self.apply(storage, &header, &body, true);
        }
        self.apply_scratch = body;
    }

    fn apply<T: Storage>(
        &mut self,
        storage: &mut T,
        header: &EntryHeader,
        body: &[u8],
        reply: bool,
    ) {
        assert_eq!(
            header.index,
            self.applied + 1,
            "entries are applied in order, once"
        );
        let mut out = std::mem::take(&mut self.reply_scratch);
        self.state.apply(header, body, &mut out);
        self.applied = header.index;
        self.events.push(Event::Applied {
            index: header.index,
            checksum: header.checksum,
            client: header.client,
            request: header.request,
        });
        if header.client != 0 {
            let slot = self
                .sessions
                .record(header.client, header.request, header.index, &out);
            self.write_reply(storage, slot);
            if reply {
                self.replies.push(Reply {
                    client: header.client,
                    request: header.request,
                    index: header.index,
                    result: Ok(out.clone()),
                });
            }
        }
        self.reply_scratch = out;
    }

    fn write_reply<T: Storage>(&mut self, storage: &mut T, slot: usize) {
        let state = &mut self.reply_writes[slot];
        if state.in_flight.is_some() {
            state.dirty = true; // one write per sector at a time: resubmit when it lands
            return;
        }
        let index = self.sessions.get(slot).map_or(0, |s| s.index);
        state.in_flight = Some(index);
        state.dirty = false;
        self.sessions.encode_reply(slot, &mut self.sector_scratch);
        let offset = self.layout.reply_offset(slot as u64);
        storage.submit_write(
            IoId::new(IoKind::Reply, slot as u64),
            offset,
            &self.sector_scratch,
        );
    }

    fn on_reply_written<T: Storage>(&mut self, storage: &mut T, slot: usize) {
        let state = &mut self.reply_writes[slot];
        state.durable_index = state.in_flight.take().expect("a reply write was in flight");
        if state.dirty {
            self.write_reply(storage, slot);
        }
        self.advance_checkpoint(storage);
    }

    // ---------------------------------------------------------------------------------------
    // Checkpoints

    /// Starts a checkpoint when the ring is nearly full.
    fn maybe_checkpoint<T: Storage>(&mut self, storage: &mut T) {
        if self.status != Status::Ready || self.checkpoint.is_some() {
            return;
        }
        let used = self.applied - self.journal.checkpoint();
        let threshold = self.layout.wal_slot_count - 2 * self.config.batch_max as u64;
        if used < threshold {
            return;
        }
        assert_eq!(self.applied, self.journal.committed());
        self.blob.clear();
        self.sessions.encode(&mut self.blob);
        self.state.encode_snapshot(&mut self.blob);
        let capacity = checkpoint::area_capacity(&self.layout);
        if self.blob.len() as u64 > capacity {
            let size = self.blob.len() as u64;
            return self.halt(Error::StateTooLarge { size, capacity });
        }
        let mut next = self.superblock.successor();
        next.checkpoint_index = self.applied;
        next.checkpoint_checksum = self.journal.committed_checksum();
        next.checkpoint_term = self.term;
        next.checkpoint_timestamp = self.timestamp;
        next.state_area = 1 - self.superblock.state_area;
        next.state_size = self.blob.len() as u64;
        next.state_checksum = checksum(&self.blob);
        let replies_needed = self
            .sessions
            .iter()
            .map(|(slot, s)| (slot, s.index))
            .collect();
        let (first, _) = checkpoint::area_blocks(&self.layout, next.state_area);
        let blocks = checkpoint::blocks_for(&self.layout, self.blob.len() as u64);
        for n in 0..blocks {
            let address = first + n;
            checkpoint::encode_block(
                &self.layout,
                &self.blob,
                n,
                address,
                next.sequence,
                &mut self.block_scratch,
            );
            let offset = self.layout.grid_block_offset(address);
            storage.submit_write(
                IoId::new(IoKind::GridBlock, address),
                offset,
                &self.block_scratch,
            );
        }
        self.checkpoint = Some(CheckpointProgress {
            superblock: next,
            replies_needed,
            blocks_pending: blocks as u32,
            copy: None,
        });
        self.advance_checkpoint(storage);
    }

    fn on_checkpoint_block_written<T: Storage>(&mut self, storage: &mut T) {
        let progress = self.checkpoint.as_mut().expect("checkpoint in progress");
        progress.blocks_pending -= 1;
        self.advance_checkpoint(storage);
    }

    fn on_superblock_written<T: Storage>(&mut self, storage: &mut T) {
        let progress = self.checkpoint.as_mut().expect("checkpoint in progress");
        let copy = progress.copy.expect("a copy was being written");
        if (copy as u64) + 1 < self.layout.superblock_copies {
            progress.copy = Some(copy + 1);
            self.write_superblock_copy(storage);
            return;
        }
        let done = self.checkpoint.take().unwrap();
        self.superblock = done.superblock;
        self.journal
            .set_checkpoint(done.superblock.checkpoint_index);
        self.events.push(Event::Checkpointed {
            index: done.superblock.checkpoint_index,
            sequence: done.superblock.sequence,
        });
    }

    /// Moves to the superblock switch once the blocks and the needed replies are durable.
    fn advance_checkpoint<T: Storage>(&mut self, storage: &mut T) {
        let Some(progress) = &mut self.checkpoint else {
            return;
        };
        if progress.copy.is_some() || progress.blocks_pending > 0 {
            return;
        }
        let replies_durable = progress
            .replies_needed
            .iter()
            .all(|&(slot, index)| self.reply_writes[slot].durable_index >= index);
        if replies_durable {
            progress.copy = Some(0);
            self.write_superblock_copy(storage);
        }
    }

    fn write_superblock_copy<T: Storage>(&mut self, storage: &mut T) {
        let progress = self.checkpoint.as_ref().expect("checkpoint in progress");
        let copy = progress.copy.expect("copy chosen");
        progress.superblock.encode(copy, &mut self.sector_scratch);
        let offset = self.layout.superblock_copy_offset(copy as u64);
        storage.submit_write(
            IoId::new(IoKind::Superblock, copy as u64),
            offset,
            &self.sector_scratch,
        );
    }
}
