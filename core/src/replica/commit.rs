//! Applying committed entries, client sessions and their replies, checkpoints, superblock writes,
//! repairs of faulty entries.
//!
//! **Apply**: entries are applied in index order, up to the commit index but never past what this
//! replica holds durably (so an applied entry is always in its recovered log after a crash). A
//! request already applied for its client (a retry that reached the log twice) is skipped on every
//! replica alike. The leader replies to clients; followers apply silently.
//!
//! **Superblock writes** are serialized: one version in flight at a time, written in two halves
//! (copies `0..n/2`, then `n/2..n`), each durable before the next, so a torn write leaves at least
//! half the copies holding a whole version. A version carries Raft's term and vote and, when one is
//! ready, a checkpoint.
//!
//! **Checkpoints**: when the ring is nearly full, the applied state and client table are encoded,
//! written to the idle half of the grid, and made current by the next superblock version once the
//! blocks and the replies they refer to are durable.
//!
//! **State sync** (`sync.rs`) ends here: the checkpoint it installed is written as this
//! replica's own, whose superblock version clears the `state_sync` flag.

use super::{Error, Event, Replica, Role, Status};
use crate::checkpoint;
use crate::checksum::Checksum;
use crate::config::PlantedBug;
use crate::io::{IoId, IoKind, Storage};
use crate::marks::Mark;
use crate::replica::RequestError;
use crate::sessions::Sessions;
use crate::state_machine::StateMachine;
use crate::superblock::{Superblock, NO_VOTE};
use crate::wal::batch::{self, RequestId};
use crate::wal::header::{EntryHeader, Operation};

/// A superblock version being written.
pub(crate) struct SuperblockWrite {
    pub target: Superblock,
    /// The copies of the half in flight.
    pub pending: u32,
    pub second_half: bool,
}

/// The state of an in-progress checkpoint.
pub(crate) struct CheckpointProgress {
    pub index: u64,
    pub checksum: Checksum,
    pub term: u64,
    pub timestamp: u64,
    pub area: u8,
    pub size: u64,
    pub blob_checksum: Checksum,
    pub blocks_pending: u32,
    /// Whether the write of the client replies (one sector per slot) is still in flight.
    pub replies_pending: bool,
    /// Whether the blocks and replies are durable: the next superblock version carries it.
    pub ready: bool,
    /// Whether this checkpoint came from a peer (state transfer).
    pub installed: bool,
}

impl<S: StateMachine> Replica<S> {
    // ---------------------------------------------------------------------------------------
    // Apply

    pub(crate) fn apply_committed(&mut self) {
        let mut limit = self.commit.min(self.journal.durable());
        if let Some(pending) = self.journal.first_repair_pending() {
            limit = limit.min(pending - 1);
        }
        if let Some(hole) = self.journal.first_faulty() {
            limit = limit.min(hole - 1);
        }
        // Checkpoints fall on multiples of the interval, the same indexes on every replica:
        // apply stops at the next one until its checkpoint has started.
        let interval = self.checkpoint_interval();
        let taken = self
            .checkpoint
            .as_ref()
            .map_or(self.journal.checkpoint(), |c| c.index);
        limit = limit.min((taken / interval + 1) * interval);
        // The body is copied into a buffer sized at start, so applying does not allocate.
        let mut body = std::mem::take(&mut self.apply_scratch);
        // While a transferred checkpoint is installed, entries wait: the state it replaces is
        // not yet durable, and `Installed` must come before the entries applied on top of it.
        // Checked before every entry: applying one can lose the state (a rotten grid block),
        // and nothing may be applied after that until a checkpoint replaces the state (seed
        // 8001399 applied entry 150 after losing its state at 145).
        while self.applied < limit
            && self.status != Status::Halted
            && !(self.state_lost || self.installing())
        {
            let index = self.applied + 1;
            let (header, bytes) = self
                .journal
                .entry(index)
                .expect("committed entries are in the log");
            body.clear();
            body.extend_from_slice(bytes);
            self.apply(&header, &body);
        }
        self.apply_scratch = body;
    }

    fn apply(&mut self, header: &EntryHeader, body: &[u8]) {
        assert_eq!(
            header.index,
            self.applied + 1,
            "entries are applied in order, once"
        );
        self.applied = header.index;
        self.timestamp = self.timestamp.max(header.timestamp);
        let slots = self.layout.wal_slot_count;
        if header.index > slots && header.index % slots == 1 {
            self.marks.hit(Mark::WalWrap); // the first entry of a new lap of the ring
        }
        if header.operation != Operation::BATCH {
            assert_eq!(
                (header.operation, header.client),
                (Operation::NOOP, 0),
                "client requests are logged only in batch entries"
            );
            return self.push_applied(header, 0, 0, 1);
        }
        debug_assert!(
            batch::is_well_formed(body),
            "batch entries are built well-formed"
        );
        let count = batch::records(body).count() as u32;
        for (position, record) in batch::records(body).enumerate() {
            if self.status == Status::Halted || self.state_lost {
                return; // the state machine's storage failed
            }
            let request = EntryHeader {
                operation: record.operation,
                client: record.client,
                request: record.request,
                ..*header
            };
            self.push_applied(&request, record.session, position as u32, count);
            self.apply_request(&request, record.session, record.body);
        }
    }

    fn push_applied(&mut self, header: &EntryHeader, session: u64, position: u32, count: u32) {
        self.events.push(Event::Applied {
            index: header.index,
            position,
            count,
            checksum: header.checksum,
            client: header.client,
            session,
            request: header.request,
            timestamp: header.timestamp,
        });
    }

    /// Applies one request of a batch entry: a registration opens a session; a write applies
    /// exactly once per session and request number, and never for an evicted session. The
    /// leader replies.
    fn apply_request(&mut self, header: &EntryHeader, session: u64, body: &[u8]) {
        let id = RequestId {
            client: header.client,
            session,
            request: header.request,
        };
        let result = if header.operation == Operation::REGISTER {
            self.apply_register(header)
        } else {
            self.apply_write(header, id, body)
        };
        let Some((index, result)) = result else {
            return; // the state machine failed: no reply
        };
        if self.raft.role == Role::Leader {
            self.replies.push(crate::replica::Reply {
                client: header.client,
                request: header.request,
                index,
                result,
            });
        }
    }

    /// Opens the client's session (or finds the one it has); the reply's index is its number.
    fn apply_register(
        &mut self,
        header: &EntryHeader,
    ) -> Option<(u64, Result<Vec<u8>, RequestError>)> {
        let (session, evicted) = self.sessions.register(header.client, header.index);
        if evicted.is_some() {
            self.marks.hit(Mark::SessionEviction);
        }
        Some((session, Ok(Vec::new())))
    }

    fn apply_write(
        &mut self,
        header: &EntryHeader,
        id: RequestId,
        body: &[u8],
    ) -> Option<(u64, Result<Vec<u8>, RequestError>)> {
        let read_only = S::is_read_only(header.operation);
        let planted = self.config.planted_bug;
        let replay = planted == Some(PlantedBug::EvictedSessionReplay);
        let session = self.sessions.current(id.client, id.session);
        if !read_only && session.is_none() && !replay {
            // Evicted (or superseded) before this entry applied: on every replica alike, the
            // request is not applied; whether an earlier attempt of it was is unknown.
            self.marks.hit(Mark::EvictedRequestRefused);
            return Some((0, Err(RequestError::Evicted)));
        }
        let duplicate = !read_only
            && planted != Some(PlantedBug::ApplyTwice)
            && session.is_some_and(|s| s.request >= id.request);
        if duplicate {
            // The same request reached the log twice (retried across a leader change): every
            // replica skips it alike, and the client gets the first application's reply.
            let session = session.expect("checked above");
            if session.request > id.request {
                let latest = session.request;
                return Some((0, Err(RequestError::StaleRequest { latest })));
            }
            return Some((session.index, Ok(session.reply.clone())));
        }
        let mut out = std::mem::take(&mut self.reply_scratch);
        if let Err(e) = self.state.apply(header, body, &mut out) {
            self.reply_scratch = out;
            self.on_state_error(e);
            return None;
        }
        if !read_only {
            if replay && self.sessions.current(id.client, id.session).is_none() {
                // Planted bug: a request of an evicted session opens a session and applies.
                self.sessions
                    .register(id.client, id.session.min(header.index));
            }
            self.sessions
                .record(id.client, id.request, header.index, &out);
        }
        let reply = out.clone();
        self.reply_scratch = out;
        Some((header.index, Ok(reply)))
    }

    /// The journal made more entries durable: the follower owes an acknowledgement.
    pub(crate) fn on_durable_advanced(&mut self) {
        self.raft.append_reply_due = true;
    }

    // ---------------------------------------------------------------------------------------
    // Repairs

    pub(crate) fn flush_repairs<T: Storage>(&mut self, storage: &mut T) {
        while let Some((index, len)) = self.journal.next_repair_write() {
            let slot = self.layout.slot_of(index);
            let offset = self.layout.entry_offset(slot);
            let buffer = self.journal.slot_buffer(slot, len);
            storage.submit_write(IoId::new(IoKind::WalRepair, index), offset, buffer);
            self.repairs_in_flight += 1;
        }
    }

    pub(crate) fn on_repair_written(&mut self, index: u64) {
        self.repairs_in_flight -= 1;
        self.journal.on_repair_written(index);
    }

    // ---------------------------------------------------------------------------------------
    // Checkpoints

    /// Entries between two checkpoints: half the ring.
    pub(crate) fn checkpoint_interval(&self) -> u64 {
        self.layout.wal_slot_count / 2
    }

    /// Starts a checkpoint at each multiple of the interval, where every replica takes it: with
    /// the engine's deterministic checkpoints, replicas at one index then hold the same blocks,
    /// and a state sync fetches only what differs. Two escape hatches take one off the
    /// boundary (that replica's blocks then differ until it syncs): a candidate whose full ring
    /// leaves no slot for its no-op (`make_room_for_noop`), and a peer that lost its state
    /// asking for a checkpoint newer than this replica's.
    ///
    /// A full ring needs no checkpoint of its own otherwise. A leader appends entry `x` only
    /// while `x - commit <= uncommitted_max`, and says its commit index with it, so a follower
    /// whose ring is full knows a commit index past the next boundary (the ring holds an
    /// interval plus more than `uncommitted_max`): applying gets it there, and the boundary's
    /// checkpoint frees half the ring.
    pub(crate) fn maybe_checkpoint<T: Storage>(&mut self, storage: &mut T) {
        if self.status != Status::Ready
            || self.checkpoint.is_some()
            || self.installing()
            || self.state_lost
        {
            return;
        }
        let applied_since = self.applied - self.journal.checkpoint();
        let boundary = self.applied.is_multiple_of(self.checkpoint_interval());
        let wanted = std::mem::take(&mut self.checkpoint_wanted);
        if applied_since == 0 || !(boundary || wanted) {
            return;
        }
        if !boundary {
            self.marks.hit(Mark::CheckpointOffBoundary);
        }
        let mut blob = Vec::new();
        self.sessions.encode(&mut blob);
        if let Err(e) = self.state.checkpoint(&mut blob) {
            return self.on_state_error(e);
        }
        let mut replies = std::mem::take(&mut self.pending_replies);
        self.sessions
            .encode_replies(self.layout.reply_slot_size as usize, &mut replies);
        let index = self.applied;
        let header = self
            .journal
            .entry(index)
            .map(|(h, _)| h)
            .expect("applied entries are in the log");
        let progress = self.checkpoint_progress(
            index,
            header.checksum,
            header.term,
            self.timestamp,
            &blob,
            false,
        );
        self.start_checkpoint(storage, progress, blob, replies);
    }

    pub(crate) fn checkpoint_progress(
        &self,
        index: u64,
        checksum: Checksum,
        term: u64,
        timestamp: u64,
        blob: &[u8],
        installed: bool,
    ) -> CheckpointProgress {
        CheckpointProgress {
            index,
            checksum,
            term,
            timestamp,
            area: 1 - self.superblock.state_area,
            size: blob.len() as u64,
            blob_checksum: crate::checksum::checksum(blob),
            blocks_pending: 0,
            replies_pending: false,
            ready: false,
            installed,
        }
    }

    pub(crate) fn start_checkpoint<T: Storage>(
        &mut self,
        storage: &mut T,
        mut progress: CheckpointProgress,
        blob: Vec<u8>,
        replies: Vec<u8>,
    ) {
        let capacity = checkpoint::area_capacity(&self.layout);
        if blob.len() as u64 > capacity {
            return self.halt(Error::StateTooLarge {
                size: blob.len() as u64,
                capacity,
            });
        }
        let (first, _) = checkpoint::area_blocks(&self.layout, progress.area);
        let blocks = checkpoint::blocks_for(&self.layout, blob.len() as u64);
        for n in 0..blocks {
            let address = first + n;
            checkpoint::encode_block(
                &self.layout,
                &blob,
                n,
                address,
                progress.index,
                &mut self.block_scratch,
            );
            let offset = self.layout.grid_block_offset(address);
            storage.submit_write(
                IoId::new(IoKind::GridBlock, address),
                offset,
                &self.block_scratch,
            );
        }
        progress.blocks_pending = blocks as u32;
        assert_eq!(replies.len() as u64, self.layout.reply_area_size());
        // Sessions fill slots from the first: write the sectors up to the last one in use (the
        // table in the blob names the slots that matter; stale sectors beyond are never read).
        let sector = self.layout.reply_slot_size as usize;
        let used = self.sessions.last_slot().map_or(1, |last| last + 1) * sector;
        let offset = self.layout.reply_area_offset(progress.area);
        let id = IoId::new(IoKind::Reply, progress.area as u64);
        storage.submit_write(id, offset, &replies[..used]);
        progress.replies_pending = true;
        self.checkpoint = Some(progress);
        self.pending_blob = blob;
        self.pending_replies = replies;
        self.check_checkpoint_ready();
    }

    pub(crate) fn on_checkpoint_replies_written(&mut self) {
        let progress = self.checkpoint.as_mut().expect("checkpoint in progress");
        progress.replies_pending = false;
        self.check_checkpoint_ready();
    }

    pub(crate) fn on_checkpoint_block_written<T: Storage>(&mut self, _storage: &mut T) {
        let progress = self.checkpoint.as_mut().expect("checkpoint in progress");
        progress.blocks_pending -= 1;
        self.check_checkpoint_ready();
    }

    fn check_checkpoint_ready(&mut self) {
        let Some(progress) = &mut self.checkpoint else {
            return;
        };
        progress.ready = progress.blocks_pending == 0 && !progress.replies_pending;
    }

    // ---------------------------------------------------------------------------------------
    // Superblock writes

    /// Starts writing a new superblock version if Raft's state or a ready checkpoint is not yet
    /// durable and no version is in flight.
    pub(crate) fn maybe_write_superblock<T: Storage>(&mut self, storage: &mut T) {
        if self.superblock_write.is_some() || self.status != Status::Ready {
            return;
        }
        let vote = self.raft.voted_for.unwrap_or(NO_VOTE);
        let state_sync = self.state_sync_flag();
        let raft_dirty = self.superblock.term != self.raft.term
            || self.superblock.voted_for != vote
            || self.superblock.peers != self.raft.peers
            || self.superblock.state_sync != state_sync;
        // A synced checkpoint reset the log: the headers of the discarded suffix must be
        // cleared on disk before a superblock names the checkpoint, or a crash in between leaves
        // a whole entry of the old history after it, which recovery could only call faulty (seed
        // 841489344). Until then a crash returns to the old checkpoint, where that entry belongs.
        let clearing = self.journal.clearing_pending();
        let checkpoint_ready = self
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.ready && !(c.installed && clearing));
        if !raft_dirty && !checkpoint_ready {
            return;
        }
        let mut target = self.superblock.successor();
        target.term = self.raft.term;
        target.voted_for = vote;
        target.peers = self.raft.peers;
        target.state_sync = state_sync;
        if let Some(c) = self
            .checkpoint
            .as_ref()
            .filter(|c| c.ready && !(c.installed && clearing))
        {
            // The checkpoint that completes a sync clears the flag in the same version.
            target.state_sync &= !c.installed;
            target.checkpoint_index = c.index;
            target.checkpoint_checksum = c.checksum;
            target.checkpoint_term = c.term;
            target.checkpoint_timestamp = c.timestamp;
            target.state_area = c.area;
            target.state_size = c.size;
            target.state_checksum = c.blob_checksum;
        }
        self.superblock_write = Some(SuperblockWrite {
            target,
            pending: 0,
            second_half: false,
        });
        self.write_superblock_half(storage);
    }

    fn write_superblock_half<T: Storage>(&mut self, storage: &mut T) {
        let copies = self.layout.superblock_copies as u16;
        let write = self.superblock_write.as_mut().expect("a write in progress");
        let range = if write.second_half {
            copies / 2..copies
        } else {
            0..copies / 2
        };
        write.pending = range.len() as u32;
        let target = write.target;
        for copy in range {
            target.encode(copy, &mut self.sector_scratch);
            let offset = self.layout.superblock_copy_offset(copy as u64);
            storage.submit_write(
                IoId::new(IoKind::Superblock, copy as u64),
                offset,
                &self.sector_scratch,
            );
        }
    }

    pub(crate) fn on_superblock_written<T: Storage>(&mut self, storage: &mut T) {
        let write = self
            .superblock_write
            .as_mut()
            .expect("a superblock write in flight");
        write.pending -= 1;
        if write.pending > 0 {
            return;
        }
        if !write.second_half {
            write.second_half = true;
            return self.write_superblock_half(storage);
        }
        let done = self.superblock_write.take().unwrap();
        let previous = self.superblock;
        self.superblock = done.target;
        if done.target.checkpoint_index != previous.checkpoint_index
            || done.target.state_area != previous.state_area
        {
            self.finish_checkpoint();
        }
        self.on_superblock_durable();
    }

    fn finish_checkpoint(&mut self) {
        let progress = self
            .checkpoint
            .take()
            .expect("a checkpoint was being written");
        let sb = self.superblock;
        if !progress.installed {
            // (An installed checkpoint freed nothing: the state machine opened it as it is.)
            self.state.checkpoint_durable();
        }
        self.journal.set_checkpoint(
            sb.checkpoint_index,
            sb.checkpoint_checksum,
            sb.checkpoint_term,
        );
        self.checkpoint_blob = std::mem::take(&mut self.pending_blob);
        std::mem::swap(&mut self.checkpoint_replies, &mut self.pending_replies);
        self.marks.hit(Mark::Checkpoint);
        if progress.installed {
            self.sync_installed();
            self.events.push(Event::Installed {
                index: sb.checkpoint_index,
            });
        }
        self.events.push(Event::Checkpointed {
            index: sb.checkpoint_index,
            sequence: sb.sequence,
            state_checksum: sb.state_checksum,
            installed: progress.installed,
        });
    }

    /// A new superblock version is durable: speak in the durable term.
    fn on_superblock_durable(&mut self) {
        self.send_pending_vote();
        self.request_votes();
        self.send_inquiry();
        self.send_pending_answer();
    }

    // ---------------------------------------------------------------------------------------
    // Client replies of a checkpoint

    /// Fills in every session's reply from a checkpoint's reply sectors; `Err(slot)` names a
    /// sector that does not hold its session's reply.
    pub(crate) fn fill_replies(&mut self, image: &[u8]) -> Result<(), usize> {
        let sector = self.layout.reply_slot_size as usize;
        let table: Vec<(usize, u64, u64, u64)> = self
            .sessions
            .iter()
            .map(|(slot, s)| (slot, s.client, s.request, s.index))
            .collect();
        for (slot, client, request, index) in table {
            match image
                .get(slot * sector..(slot + 1) * sector)
                .and_then(Sessions::decode_reply)
            {
                Some(r) if (r.client, r.request, r.index) == (client, request, index) => {
                    self.sessions.set_reply(slot, &r.reply)
                }
                _ => return Err(slot),
            }
        }
        Ok(())
    }
}
