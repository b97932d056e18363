//! Opening a replica: recovery from the data file.
//!
//! Reads the superblock (repairing stale copies first), the checkpoint, the client replies and both
//! WAL rings; decides the log with the recovery decision table; rewrites the headers ring so that
//! every recovered entry is provably durable; then becomes Ready at the checkpoint. Entries after
//! the checkpoint are applied once the cluster says they are committed (a single node elects
//! itself at once and commits them).
//!
//! Faulty entries (durable once, unreadable now) become holes in the log that the leader's copies
//! fill. A single replica has no peer to repair from: it halts with an error naming them.

use super::{Error, Event, Phase, Replica, Status};
use crate::checkpoint;
use crate::checksum::checksum;
use crate::config::Zone;
use crate::io::{IoId, IoKind, ReadError, Storage};
use crate::marks::Mark;
use crate::sessions::{Sessions, REPLY_HEADER_SIZE};
use crate::state_machine::{StateError, StateMachine};
use crate::superblock;
use crate::wal::journal::Journal;
use crate::wal::recovery::{self, Decision, Recovery, RecoveryInput};

/// Recovery reads, by buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Buffer {
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

/// Bytes that stand in for a sector the device could not read: they fail every checksum.
const UNREADABLE: u8 = 0xEE;

impl<S: StateMachine> Replica<S> {
    /// Starts opening the data file. Progress continues in the completion callbacks;
    /// `status()` becomes `Ready` (or `Halted`, with an `Event::Halted` naming why).
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
        // n: buffer << 48 | 0 for a whole read, or sector + 1 for a sector-by-sector retry.
        storage.submit_read(
            IoId::new(IoKind::RecoveryRead, (buffer as u64) << 48),
            offset,
            len as usize,
        );
    }

    pub(crate) fn on_recovery_read<T: Storage>(
        &mut self,
        storage: &mut T,
        id: IoId,
        result: Result<&[u8], ReadError>,
    ) {
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
            match self.phase {
                Phase::ReadSuperblock => self.on_superblock_read(storage),
                Phase::ReadState => self.on_state_read(storage),
                Phase::ReadRings => self.on_rings_read(storage),
                other => unreachable!("no reads in phase {other:?}"),
            }
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
            Buffer::Replies => self.layout.reply_area_offset(self.superblock.state_area),
            Buffer::Headers => self.layout.zone_start(Zone::WalHeaders),
            Buffer::Entries => self.layout.zone_start(Zone::WalEntries),
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
        self.id = sb.replica;
        self.count = sb.replica_count;
        self.cluster = sb.cluster;
        self.raft = super::raft::Raft::new(sb.replica_count);
        self.raft.term = sb.term;
        self.raft.voted_for = (sb.voted_for != superblock::NO_VOTE).then_some(sb.voted_for);
        self.raft.peers = sb.peers;
        self.journal = Journal::new(&self.config, sb.cluster);
        self.superblock_repairs = selection.stale_copies;
        if !self.superblock_repairs.is_empty() {
            self.marks.hit(Mark::SuperblockRepair);
        }
        self.superblock_repairs.reverse();
        self.repair_superblock(storage);
    }

    /// Writes the next stale superblock copy, or moves on to reading the checkpoint.
    pub(crate) fn repair_superblock<T: Storage>(&mut self, storage: &mut T) {
        if let Some(copy) = self.superblock_repairs.pop() {
            self.phase = Phase::RepairSuperblock;
            self.superblock.encode(copy, &mut self.sector_scratch);
            let offset = self.layout.superblock_copy_offset(copy as u64);
            storage.submit_write(
                IoId::new(IoKind::Superblock, copy as u64),
                offset,
                &self.sector_scratch,
            );
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
            match checkpoint::decode_block(block, address, sb.checkpoint_index) {
                Some(payload) => blob.extend_from_slice(payload),
                None => {
                    return self.halt(Error::Corrupt {
                        zone: Zone::Grid,
                        offset: self.layout.grid_block_offset(address),
                        len: block_size as u64,
                        what: format!(
                            "block {address} of the checkpoint at {}",
                            sb.checkpoint_index
                        ),
                    })
                }
            }
        }
        if blob.len() as u64 != sb.state_size || checksum(&blob) != sb.state_checksum {
            return self.halt(self.corrupt_blob(first, data.len(), "checkpoint blob checksum"));
        }
        if sb.state_sync {
            // A state sync was under way: the grid may hold part of the leader's checkpoint over
            // this one's. Open without a state; the leader's next offer resumes the sync (the
            // blocks that arrived and were synced are found in the grid).
            self.marks.hit(Mark::StateSyncResume);
            self.sessions = Sessions::new(self.config.clients_max as usize, self.reply_max());
            if let Err(e) = self.state.restore(&[]) {
                return self.halt(Error::State(e));
            }
            self.state_lost = true;
        } else {
            match self.load_blob(&blob) {
                Ok(()) => {}
                Err(StateError::Decode(what)) => {
                    return self.halt(self.corrupt_blob(first, data.len(), what))
                }
                Err(e) => self.on_state_error(e),
            }
        }
        self.checkpoint_blob = blob;
        self.applied = sb.checkpoint_index;
        self.commit = sb.checkpoint_index;
        self.timestamp = sb.checkpoint_timestamp;
        self.phase = Phase::ReadRings;
        let replies = self.layout.reply_area_offset(sb.state_area);
        self.read_into(
            storage,
            Buffer::Replies,
            replies,
            self.layout.reply_area_size(),
        );
        self.read_zone(storage, Buffer::Headers, Zone::WalHeaders);
        self.read_zone(storage, Buffer::Entries, Zone::WalEntries);
    }

    fn corrupt_blob(&self, first: u64, len: usize, what: &str) -> Error {
        Error::Corrupt {
            zone: Zone::Grid,
            offset: self.layout.grid_block_offset(first),
            len: len as u64,
            what: what.to_string(),
        }
    }

    /// Loads a checkpoint blob (client table, then state) into the replica.
    pub(crate) fn load_blob(&mut self, blob: &[u8]) -> Result<(), StateError> {
        if blob.is_empty() {
            self.sessions = Sessions::new(self.config.clients_max as usize, self.reply_max());
            return self.state.restore(&[]);
        }
        let clients_max = self.config.clients_max as usize;
        let (sessions, rest) = Sessions::decode(clients_max, self.reply_max(), blob).ok_or(
            StateError::Decode("checkpoint client table does not decode"),
        )?;
        self.state.restore(rest)?;
        self.sessions = sessions;
        Ok(())
    }

    /// Counts the recovery decisions taken, one mark per row group of the decision table.
    fn mark_recovery(&mut self, result: &Recovery) {
        for decision in &result.decisions {
            let mark = match decision {
                Decision::Clean => Mark::RecoveryClean,
                Decision::FixHeader => Mark::RecoveryHeaderRepair,
                Decision::Faulty => Mark::RecoveryFaulty,
                Decision::Torn => Mark::RecoveryTornHeadCut,
                Decision::Cut => Mark::RecoveryStaleCut,
                Decision::Empty => continue,
            };
            self.marks.hit(mark);
        }
    }

    pub(crate) fn reply_max(&self) -> usize {
        self.layout.reply_slot_size as usize - REPLY_HEADER_SIZE
    }

    fn on_rings_read<T: Storage>(&mut self, storage: &mut T) {
        let sb = self.superblock;
        let input = RecoveryInput {
            layout: &self.layout,
            cluster: sb.cluster,
            checkpoint_index: sb.checkpoint_index,
            checkpoint_checksum: sb.checkpoint_checksum,
            headers: &self.recovery_buffers[Buffer::Headers as usize],
            entries: &self.recovery_buffers[Buffer::Entries as usize],
            proof: None,
            read_through: u64::MAX,
        };
        let result = recovery::recover_with(&input, self.config.planted_bug);
        self.mark_recovery(&result);
        if let (Some(&index), 1) = (result.faulty.first(), self.count) {
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
        // Rewrite the headers ring so every intact entry of the recovered log is provably
        // durable before this replica acknowledges it to anyone.
        let mut headers = vec![0u8; self.layout.zone_size(Zone::WalHeaders) as usize];
        Journal::rebuild_headers(
            &self.layout,
            sb.cluster,
            sb.checkpoint_index,
            &result,
            &self.recovery_buffers[Buffer::Entries as usize],
            &self.recovery_buffers[Buffer::Headers as usize],
            &mut headers,
        );
        let anchor = (
            sb.checkpoint_index,
            sb.checkpoint_checksum,
            sb.checkpoint_term,
        );
        self.journal.restore(
            anchor,
            &result,
            &self.recovery_buffers[Buffer::Entries as usize],
            &headers,
        );
        let replies = std::mem::take(&mut self.recovery_buffers[Buffer::Replies as usize]);
        if let Err(slot) = self.fill_replies(&replies) {
            return self.halt(Error::Corrupt {
                zone: Zone::ClientReplies,
                offset: self.layout.reply_offset(sb.state_area, slot as u64),
                len: self.layout.reply_slot_size,
                what: format!(
                    "client reply of slot {slot} in the checkpoint at {}",
                    sb.checkpoint_index
                ),
            });
        }
        self.checkpoint_replies = replies;
        self.recovery = Some(result);
        self.phase = Phase::WriteHeaders;
        storage.submit_write(
            IoId::new(IoKind::WalHeaders, 0),
            self.layout.zone_start(Zone::WalHeaders),
            &headers,
        );
    }

    pub(crate) fn on_recovery_headers_written<T: Storage>(&mut self, storage: &mut T) {
        let recovery = self.recovery.take().expect("recovery in progress");
        for buffer in &mut self.recovery_buffers {
            *buffer = Vec::new();
        }
        let truncated = recovery.count(Decision::Torn) + recovery.count(Decision::Cut);
        self.events.push(Event::Opened {
            checkpoint: self.superblock.checkpoint_index,
            head: recovery.head,
            truncated: truncated as u64,
            faulty: recovery.faulty.len() as u64,
        });
        self.status = Status::Ready;
        self.raft_start();
        self.advance(storage);
    }
}
