//! State sync: a follower behind the leader's checkpoint, or one whose state was lost, takes the
//! leader's checkpoint block by block.
//!
//! - **Offer.** On each heartbeat to a peer behind its checkpoint (and in answer to a
//!   `StateRequest`) the leader sends a `SyncOffer`: the checkpoint's index, checksum, term and
//!   timestamp, and its blob (the client table and the state machine's bytes, which name the
//!   LSM's manifest root). Small: the state itself never travels whole.
//! - **Persist.** A follower that takes an offer marks its state lost and writes a superblock
//!   with `state_sync` set before it writes any block: from then on its grid may not hold its own
//!   checkpoint, so a restart must not restore it (it syncs again instead).
//! - **Fetch.** The state machine walks the offered checkpoint's tree in the local grid
//!   (`lsm::sync`): a block already there (it opens against its reference) is kept, the rest is
//!   requested with `BlockRequest`, at most [`WINDOW`] blocks in flight, each request sent again
//!   only when unanswered for [`TIMEOUT_HEARTBEATS`] heartbeats, never on a heartbeat or an
//!   offer. The leader serves blocks only in answer to requests, so the follower's window bounds
//!   the leader's output too. The reply area travels the same way, in parts.
//! - **Retarget.** A newer offer (the leader checkpointed again, or a new leader) restarts the walk
//!   at its root; blocks already fetched that the new checkpoint shares are found locally.
//! - **Install.** With every block and reply part in place the state machine opens the
//!   checkpoint, the journal is rebased on it, and it is written as this replica's own
//!   checkpoint, whose superblock clears `state_sync`.

use super::{Error, Replica, Role};
use crate::checkpoint;
use crate::checksum::{checksum, Checksum};
use crate::config::PlantedBug;
use crate::io::Storage;
use crate::lsm::grid::{BlockKind, BlockRef};
use crate::lsm::sync::Want;
use crate::marks::Mark;
use crate::message::{Command, Header, OFFER_FROM_PEER};
use crate::sessions::Sessions;
use crate::state_machine::{StateError, StateMachine};
use std::collections::{BTreeMap, VecDeque};

/// Blocks requested and not yet answered, at most: well under a link's queue, leaving room for
/// the appends that share it.
pub(crate) const WINDOW: usize = 32;
/// Blocks named in one request.
const REQUEST_BLOCKS: usize = 8;
/// Heartbeats a request may go unanswered before it is sent again.
const TIMEOUT_HEARTBEATS: u64 = 4;
/// The kind of a request for a part of the checkpoint's reply area (not a grid block).
const REPLIES: u8 = 0xF0;
/// Bytes of one request record: address, checksum, kind.
const RECORD: usize = 13;

/// One thing a sync asks the leader for: a grid block, or a part of the reply area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ask {
    kind: u8,
    address: u64,
    checksum: Checksum,
}

impl Ask {
    fn block(want: Want) -> Ask {
        Ask {
            kind: want.kind as u8,
            address: want.reference.address,
            checksum: want.reference.checksum,
        }
    }

    fn want(self) -> Option<Want> {
        Some(Want {
            reference: BlockRef {
                address: self.address,
                checksum: self.checksum,
            },
            kind: BlockKind::from_u8(self.kind)?,
        })
    }

    fn key(self) -> (u8, u64) {
        (self.kind, self.address)
    }
}

/// A request on its way.
#[derive(Clone, Copy, Debug)]
struct Inflight {
    ask: Ask,
    /// The tick it was last sent.
    sent: u64,
    /// Whether the current walk wants it (a request of an earlier target is kept in flight
    /// after a retarget: the new walk may want the same block, and then takes the answer).
    wanted: bool,
}

/// The checkpoint a sync takes in, as the leader offered it.
pub(crate) struct Target {
    pub index: u64,
    pub checksum: Checksum,
    pub term: u64,
    pub timestamp: u64,
    pub blob: Vec<u8>,
    pub blob_checksum: Checksum,
    /// Where the state machine's bytes start in `blob` (after the client table).
    pub state_at: usize,
    /// The replica serving it: the leader, or a peer while no leader is known.
    pub source: u8,
    /// The tick the source last answered (an offer or a block).
    pub heard: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncPhase {
    /// Waiting for the superblock with `state_sync` set to be durable.
    Persisting,
    Fetching,
    /// Installed; being written as this replica's own checkpoint.
    Finishing,
}

pub(crate) struct Sync {
    pub target: Target,
    pub phase: SyncPhase,
    /// Asked and not yet answered, by (kind, address).
    inflight: BTreeMap<(u8, u64), Inflight>,
    /// Wanted, not yet asked.
    queued: VecDeque<Ask>,
    /// The reply area being assembled, and which of its parts arrived.
    replies: Vec<u8>,
    parts: Vec<bool>,
    /// Every block of the target is in the local grid.
    walked: bool,
    /// The leader no longer holds a block of the target: wait for its next offer.
    stale: bool,
}

impl Sync {
    fn complete(&self) -> bool {
        self.walked && self.inflight.is_empty() && self.parts.iter().all(|&p| p)
    }
}

impl<S: StateMachine> Replica<S> {
    /// Whether a synced checkpoint is being written as this replica's own (entries and votes
    /// wait for it: the state it replaces is not yet durable).
    pub(crate) fn installing(&self) -> bool {
        self.sync
            .as_ref()
            .is_some_and(|s| s.phase == SyncPhase::Finishing)
    }

    /// What the next superblock records in `state_sync`: set from the start of a sync until the
    /// checkpoint that completes it.
    pub(crate) fn state_sync_flag(&self) -> bool {
        if self.config.planted_bug == Some(PlantedBug::SyncWithoutFlag) {
            return false;
        }
        self.superblock.state_sync || self.sync.is_some()
    }

    fn reply_part_size(&self) -> usize {
        self.config.wal_entry_size_max as usize
    }

    // ---------------------------------------------------------------------------------------
    // Serving: the leader, or any replica with a state while the asker knows no leader

    /// Whether this replica's durable checkpoint is whole in its grid, and so may be served.
    pub(crate) fn may_serve(&self) -> bool {
        // A replica whose state was just lost (a rotten block while serving) may no longer hold
        // its checkpoint whole: a leader steps down, a follower stops serving.
        !self.state_lost && !self.checkpoint_blob.is_empty()
    }

    /// Offers a lagging peer the latest checkpoint: the leader on heartbeats and state requests,
    /// any other replica only in answer to a state request (see `request_state`).
    pub(crate) fn send_offer(&mut self, peer: u8) {
        if !self.may_serve() {
            return;
        }
        let sb = self.superblock;
        let mut header = self.peer_header(Command::SyncOffer, peer);
        header.a = sb.checkpoint_index;
        header.b = sb.checkpoint_checksum as u64 | (sb.checkpoint_term << 32);
        header.c = sb.checkpoint_timestamp;
        header.d = sb.state_checksum as u64;
        if self.raft.role != Role::Leader {
            header.d |= OFFER_FROM_PEER;
        }
        let blob = std::mem::take(&mut self.checkpoint_blob);
        self.send(header, &blob);
        self.checkpoint_blob = blob;
        self.stats.sync_offers += 1;
    }

    /// The peer lost its state; its log starts after its checkpoint `a`, so only a checkpoint
    /// at or after it helps. Any replica with a state answers: a checkpoint holds only committed
    /// entries, the same on every replica, and without one from a peer two replicas whose states
    /// were lost could never elect the third, whose log is shorter (seed 12009043).
    pub(crate) fn on_state_request(&mut self, header: &Header) {
        if self.state_lost {
            return;
        }
        if self.may_serve() && self.superblock.checkpoint_index >= header.a {
            self.send_offer(header.from);
        } else if self.applied >= header.a {
            self.checkpoint_wanted = true;
        }
    }

    /// Serves the blocks a syncing peer asks for, each in its own message.
    pub(crate) fn on_block_request(&mut self, header: &Header, body: &[u8]) {
        if self.state_lost {
            return;
        }
        if !body.len().is_multiple_of(RECORD) || body.len() / RECORD > REQUEST_BLOCKS {
            self.stats.messages_dropped += 1;
            return;
        }
        let sb = self.superblock;
        let own = header.a == sb.checkpoint_index && header.b == sb.state_checksum as u64;
        let mut out = std::mem::take(&mut self.serve_scratch);
        for record in body.chunks_exact(RECORD) {
            let ask = Ask {
                address: u64::from_le_bytes(record[0..8].try_into().unwrap()),
                checksum: u32::from_le_bytes(record[8..12].try_into().unwrap()),
                kind: record[12],
            };
            let found = self.serve(ask, own, &mut out);
            if !found && own && ask.kind != REPLIES {
                // A block of this leader's own durable checkpoint is unreadable: nothing frees
                // those blocks before a newer checkpoint is durable, so the grid is damaged.
                self.serve_scratch = out;
                let why = format!("block {} of the checkpoint is damaged", ask.address);
                return self.on_state_error(StateError::Storage(why));
            }
            let mut reply = self.peer_header(Command::Block, header.from);
            reply.a = sb.checkpoint_index;
            reply.b = ask.address;
            reply.c = ask.checksum as u64;
            reply.d = ask.kind as u64 | (found as u64) << 8;
            self.send(reply, if found { &out } else { &[] });
            self.stats.sync_blocks_served += found as u64;
        }
        self.serve_scratch = out;
    }

    fn serve(&mut self, ask: Ask, own: bool, out: &mut Vec<u8>) -> bool {
        out.clear();
        if ask.kind != REPLIES {
            return ask
                .want()
                .is_some_and(|want| self.state.serve_block(want, out));
        }
        let part = self.reply_part_size();
        let Ok(at) = usize::try_from(ask.address.saturating_mul(part as u64)) else {
            return false;
        };
        let area = &self.checkpoint_replies;
        if !own || at >= area.len() {
            return false;
        }
        out.extend_from_slice(&area[at..(at + part).min(area.len())]);
        true
    }

    // ---------------------------------------------------------------------------------------
    // Follower

    pub(crate) fn on_sync_offer(&mut self, header: &Header, body: &[u8]) {
        let blob_checksum = header.d as u32;
        if header.d & OFFER_FROM_PEER == 0 {
            self.raft.leader_contact = Some(self.ticks);
        } else if self.raft.leader.is_some() || !self.state_lost {
            return; // a peer's offer answers a replica that lost its state and knows no leader
        }
        let index = header.a;
        let entry_checksum = header.b as u32;
        let hole_before = self
            .journal
            .first_faulty()
            .is_some_and(|hole| hole <= index);
        let lost = self.state_lost;
        if !lost && !hole_before && self.journal.checksum_at(index) == Some(entry_checksum) {
            // This replica holds the checkpoint's entry itself: by the hash chain its log equals
            // the leader's up to there. Say so, and the leader resumes sending entries.
            self.raft.match_bound = self.raft.match_bound.max(index);
            self.raft.append_reply_due = true;
            return;
        }
        if let Some(sync) = &mut self.sync {
            let same = sync.target.index == index && sync.target.blob_checksum == blob_checksum;
            let keep = sync.phase == SyncPhase::Finishing
                || (same && !sync.stale)
                || (sync.target.source == header.from && index < sync.target.index);
            if keep {
                sync.target.source = header.from;
                sync.target.heard = self.ticks;
                return;
            }
        }
        let behind = if lost {
            index < self.journal.checkpoint()
        } else {
            index <= self.applied.max(self.journal.checkpoint())
        };
        if behind {
            self.raft.append_reply_due = true;
            return;
        }
        let capacity = checkpoint::area_capacity(&self.layout);
        if body.len() as u64 > capacity || checksum(body) != blob_checksum {
            self.stats.messages_dropped += 1;
            return;
        }
        let clients_max = self.config.clients_max as usize;
        let Some((_, rest)) = Sessions::decode(clients_max, self.reply_max(), body) else {
            self.stats.messages_dropped += 1;
            return;
        };
        let target = Target {
            index,
            checksum: entry_checksum,
            term: header.b >> 32,
            timestamp: header.c,
            blob: body.to_vec(),
            blob_checksum,
            state_at: body.len() - rest.len(),
            source: header.from,
            heard: self.ticks,
        };
        if header.d & OFFER_FROM_PEER != 0 {
            self.marks.hit(Mark::StateSyncFromPeer);
        }
        self.start_sync(target);
    }

    fn start_sync(&mut self, target: Target) {
        if let Err(e) = self.state.sync_begin(&target.blob[target.state_at..]) {
            self.stats.messages_dropped += 1;
            return debug_assert!(matches!(e, StateError::Decode(_)), "{e}");
        }
        let mut inflight = BTreeMap::new();
        if let Some(previous) = self.sync.take() {
            self.stats.sync_retargets += 1;
            self.marks.hit(Mark::StateSyncRetarget);
            let blocks = previous
                .inflight
                .into_iter()
                .filter(|(k, _)| k.0 != REPLIES);
            inflight = blocks
                .map(|(k, i)| (k, Inflight { wanted: false, ..i }))
                .collect();
        }
        // From here the state is unusable: the sync writes over the grid under it.
        self.state_lost = true;
        let area = self.layout.reply_area_size() as usize;
        let parts = area.div_ceil(self.reply_part_size());
        let queued = (0..parts as u64)
            .map(|part| Ask {
                kind: REPLIES,
                address: part,
                checksum: 0,
            })
            .collect();
        self.sync = Some(Sync {
            target,
            phase: SyncPhase::Persisting,
            inflight,
            queued,
            replies: vec![0; area],
            parts: vec![false; parts],
            walked: false,
            stale: false,
        });
    }

    pub(crate) fn on_block(&mut self, header: &Header, body: &[u8]) {
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        let ask = Ask {
            kind: header.d as u8,
            address: header.b,
            checksum: header.c as u32,
        };
        if header.from == sync.target.source {
            sync.target.heard = self.ticks;
        }
        let expected = sync.inflight.get(&ask.key()).copied();
        if sync.phase != SyncPhase::Fetching || expected.is_none_or(|i| i.ask != ask) {
            self.stats.sync_duplicates += 1;
            return; // answered already
        }
        if expected.is_some_and(|i| !i.wanted) {
            sync.inflight.remove(&ask.key());
            self.stats.sync_duplicates += 1;
            return; // asked for an earlier target, and the current one does not want it
        }
        if header.d >> 8 & 1 == 0 {
            // The leader no longer holds it (a newer checkpoint freed it): its next offer names
            // a target it can serve. What else is in flight may still arrive and be of use.
            sync.stale = true;
            sync.inflight.remove(&ask.key());
            sync.queued.clear();
            return;
        }
        let taken = if ask.kind == REPLIES {
            self.take_reply_part(header.a, ask.address, body)
        } else {
            let want = ask.want().expect("a block kind: asked for by the walk");
            match self.state.sync_block(want, body) {
                Ok(taken) => taken,
                Err(e) => return self.halt(Error::State(e)),
            }
        };
        let sync = self.sync.as_mut().expect("checked above");
        if taken {
            sync.inflight.remove(&ask.key());
            self.stats.sync_blocks_fetched += (ask.kind != REPLIES) as u64;
        }
    }

    fn take_reply_part(&mut self, index: u64, part: u64, body: &[u8]) -> bool {
        let size = self.reply_part_size();
        let sync = self.sync.as_mut().expect("a sync in progress");
        let at = part as usize * size;
        let len = size.min(sync.replies.len() - at);
        if index != sync.target.index || body.len() != len {
            return false;
        }
        sync.replies[at..at + len].copy_from_slice(body);
        sync.parts[part as usize] = true;
        true
    }

    /// Moves the sync on: persists its start, walks, asks for what is missing, re-asks what went
    /// unanswered, and installs once everything is in place.
    pub(crate) fn advance_sync<T: Storage>(&mut self, storage: &mut T) {
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        match sync.phase {
            SyncPhase::Finishing => return,
            SyncPhase::Persisting
                if self.config.planted_bug == Some(PlantedBug::SyncWithoutFlag) =>
            {
                sync.phase = SyncPhase::Fetching
            }
            SyncPhase::Persisting if !self.superblock.state_sync => return,
            SyncPhase::Persisting => sync.phase = SyncPhase::Fetching,
            SyncPhase::Fetching => {}
        }
        if sync.stale {
            return;
        }
        let room = WINDOW.saturating_sub(sync.queued.len() + sync.inflight.len());
        if room > 0 && !sync.walked {
            let mut wants = Vec::new();
            match self.state.sync_poll(&mut wants, room) {
                Ok(done) => {
                    let sync = self.sync.as_mut().expect("checked above");
                    sync.walked = done;
                    for ask in wants.into_iter().map(Ask::block) {
                        match sync.inflight.get_mut(&ask.key()) {
                            // Asked for an earlier target: the answer is on its way.
                            Some(i) if i.ask == ask => i.wanted = true,
                            _ => sync.queued.push_back(ask),
                        }
                    }
                }
                Err(e) => return self.halt(Error::State(e)),
            }
        }
        self.send_block_requests();
        if self.sync.as_ref().is_some_and(Sync::complete) {
            self.finish_sync(storage);
        }
    }

    /// Asks for what went unanswered too long, then for queued wants while the window has room.
    fn send_block_requests(&mut self) {
        let sync = self.sync.as_mut().expect("a sync in progress");
        let timeout = TIMEOUT_HEARTBEATS * self.config.heartbeat_ticks;
        let ticks = self.ticks;
        // Unanswered too long: ask again, unless only an earlier target wanted it.
        sync.inflight
            .retain(|_, i| i.wanted || i.sent + timeout > ticks);
        let mut asks: Vec<Ask> = Vec::new();
        for i in sync.inflight.values_mut() {
            if i.sent + timeout <= ticks {
                i.sent = ticks;
                asks.push(i.ask);
            }
        }
        self.stats.sync_retransmits += asks.len() as u64;
        while sync.inflight.len() < WINDOW {
            let Some(ask) = sync.queued.pop_front() else {
                break;
            };
            let sent = Inflight {
                ask,
                sent: ticks,
                wanted: true,
            };
            // An earlier target's request for another block at this address may be in flight:
            // its answer will not match, and is dropped.
            let previous = sync.inflight.insert(ask.key(), sent);
            assert!(
                previous.is_none_or(|p| !p.wanted),
                "a block is asked for once at a time"
            );
            asks.push(ask);
        }
        debug_assert!(sync.inflight.len() <= WINDOW);
        let (source, index, blob) = (
            sync.target.source,
            sync.target.index,
            sync.target.blob_checksum,
        );
        let mut body = std::mem::take(&mut self.body_scratch);
        for group in asks.chunks(REQUEST_BLOCKS) {
            body.clear();
            for ask in group {
                body.extend_from_slice(&ask.address.to_le_bytes());
                body.extend_from_slice(&ask.checksum.to_le_bytes());
                body.push(ask.kind);
            }
            let mut header = self.peer_header(Command::BlockRequest, source);
            header.a = index;
            header.b = blob as u64;
            self.send(header, &body);
        }
        self.body_scratch = body;
    }

    /// Every block and reply part is in place: open the checkpoint, rebase the log on it, and
    /// write it as this replica's own.
    fn finish_sync<T: Storage>(&mut self, storage: &mut T) {
        if self.journal.writes_in_flight() || self.repairs_in_flight > 0 {
            return;
        }
        if self.checkpoint.is_some() || self.superblock_write.is_some() {
            return;
        }
        if self
            .sync
            .as_ref()
            .is_some_and(|s| s.target.index < self.journal.checkpoint())
        {
            // A checkpoint of its own, in flight when the state was lost, became durable past
            // the target while the sync ran. Installing the older one would move the ring's
            // start back behind slots it may already reuse, and the log would lose entries it
            // holds durably, committed ones among them (seed 1012821877). Drop it: the state
            // requests that follow ask for a checkpoint at or after its own.
            self.sync = None;
            self.stats.sync_retargets += 1;
            self.marks.hit(Mark::SyncOlderThanCheckpoint);
            return;
        }
        let mut sync = self.sync.take().expect("a complete sync");
        let clients_max = self.config.clients_max as usize;
        let (sessions, _) = Sessions::decode(clients_max, self.reply_max(), &sync.target.blob)
            .expect("checked when offered");
        let previous = std::mem::replace(&mut self.sessions, sessions);
        if self.fill_replies(&sync.replies).is_err() {
            // The parts came from another checkpoint of the same index: start over.
            self.sessions = previous;
            return;
        }
        let stats = self.state.sync_stats();
        if let Err(e) = self
            .state
            .sync_finish(&sync.target.blob[sync.target.state_at..])
        {
            // Reading the synced tree back failed (a block rotted since it was verified): the
            // next offer starts again, and the walk fetches what is missing.
            let _ = self.state.restore(&[]);
            self.sessions = previous;
            return debug_assert!(!matches!(e, StateError::Decode(_)), "{e}");
        }
        self.stats.sync_blocks_local += stats.local;
        let target = &sync.target;
        // Entries this replica holds beyond the checkpoint may count toward a commit quorum:
        // keep them if they continue the checkpoint's chain (only a divergent suffix, which
        // cannot be committed, is dropped).
        let anchor = (target.index, target.checksum, target.term);
        self.journal.rebase(anchor).expect("no writes in flight");
        self.applied = target.index;
        self.commit = self.commit.max(target.index);
        self.raft.match_bound = target.index;
        self.timestamp = self.timestamp.max(target.timestamp);
        let progress = self.checkpoint_progress(
            target.index,
            target.checksum,
            target.term,
            target.timestamp,
            &target.blob,
            true,
        );
        let blob = std::mem::take(&mut sync.target.blob);
        let replies = std::mem::take(&mut sync.replies);
        sync.phase = SyncPhase::Finishing;
        self.sync = Some(sync);
        self.start_checkpoint(storage, progress, blob, replies);
    }

    /// The checkpoint that completes a sync is durable.
    pub(crate) fn sync_installed(&mut self) {
        let sync = self.sync.take();
        debug_assert!(sync.is_some_and(|s| s.phase == SyncPhase::Finishing));
        self.stats.syncs += 1;
        self.marks.hit(Mark::StateSync);
        self.state_lost = false;
        self.raft.append_reply_due = true;
    }
}
