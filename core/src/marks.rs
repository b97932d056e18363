//! Coverage marks: named events the core counts, so that a batch of simulations can show which
//! of the branches that matter its seeds reached. A checker sees only what the workload and the
//! faults reach; a mark no seed hits is a blind spot (`vopr --count N` prints, per mark, how many
//! seeds hit it, and `sim/tests/coverage.rs` fails when a fixed batch leaves one unhit).
//!
//! Counting is an array increment: cheap enough to stay on in production, where the same counts
//! serve operators.

/// A named event. Names are stable: docs and tests refer to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mark {
    /// A replica won an election.
    ElectionWon,
    /// A follower truncated a log suffix that conflicted with its leader's.
    LogTruncation,
    /// A faulty WAL entry was repaired from the leader's copy.
    EntryRepair,
    /// Recovery found an entry intact (decision-table rows, see `wal::recovery`).
    RecoveryClean,
    /// Recovery cut a torn entry at the head slot (never acknowledged).
    RecoveryTornHeadCut,
    /// Recovery kept an entry as faulty, awaiting repair (durable but unreadable).
    RecoveryFaulty,
    /// Recovery found an entry whose redundant header was damaged or stale, and rewrote it.
    RecoveryHeaderRepair,
    /// Recovery found a whole stale lap of the ring past the head (cut).
    RecoveryStaleCut,
    /// Stale superblock copies were rewritten on open.
    SuperblockRepair,
    /// A registration evicted the least recently used client session.
    SessionEviction,
    /// A request of an evicted session was refused (not applied).
    EvictedRequestRefused,
    /// A checkpoint became durable.
    Checkpoint,
    /// The WAL ring wrapped (an entry reused a slot of an older lap).
    WalWrap,
    /// A lagging or state-lost replica installed a checkpoint from the leader.
    StateSync,
    /// A state sync restarted at a newer checkpoint (the leader checkpointed again, or changed).
    StateSyncRetarget,
    /// A replica that lost its state and knew no leader took a peer's checkpoint offer.
    StateSyncFromPeer,
    /// A checkpoint off the interval's boundary (a ring nearly full, or a peer's request).
    CheckpointOffBoundary,
    /// A replica opened with a state sync under way (its grid no longer holds its checkpoint).
    StateSyncResume,
    /// The state machine's storage failed and the replica dropped its state for the leader's.
    StateLost,
    /// The LSM flushed a memtable into level 0.
    MemtableFlush,
    /// The LSM compacted tables into level 1, 2, 3 or deeper.
    CompactionLevel1,
    CompactionLevel2,
    CompactionLevel3Plus,
    /// A candidate found its WAL ring full, with no slot for its no-op, and made one: a single
    /// replica committed its durable log, a cluster member discarded entries no quorum holds.
    FullRingNoopSlot,
    /// A replica with a hole and no leader asked its peers (`replica::hole`): a quorum's
    /// answers let it fill the hole with their one version of the entry, or cut it.
    HoleInquiryRepair,
    HoleInquiryCut,
    /// A finished state sync was dropped: the replica's own checkpoint, in flight when its state
    /// was lost, became durable past the sync's target meanwhile (seed 1012821877).
    SyncOlderThanCheckpoint,
}

impl Mark {
    pub const ALL: [Mark; 27] = [
        Mark::ElectionWon,
        Mark::LogTruncation,
        Mark::EntryRepair,
        Mark::RecoveryClean,
        Mark::RecoveryTornHeadCut,
        Mark::RecoveryFaulty,
        Mark::RecoveryHeaderRepair,
        Mark::RecoveryStaleCut,
        Mark::SuperblockRepair,
        Mark::SessionEviction,
        Mark::EvictedRequestRefused,
        Mark::Checkpoint,
        Mark::WalWrap,
        Mark::StateSync,
        Mark::StateSyncRetarget,
        Mark::StateSyncFromPeer,
        Mark::CheckpointOffBoundary,
        Mark::StateSyncResume,
        Mark::StateLost,
        Mark::MemtableFlush,
        Mark::CompactionLevel1,
        Mark::CompactionLevel2,
        Mark::CompactionLevel3Plus,
        Mark::FullRingNoopSlot,
        Mark::HoleInquiryRepair,
        Mark::HoleInquiryCut,
        Mark::SyncOlderThanCheckpoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mark::ElectionWon => "election_won",
            Mark::LogTruncation => "log_truncation",
            Mark::EntryRepair => "entry_repair",
            Mark::RecoveryClean => "recovery_clean",
            Mark::RecoveryTornHeadCut => "recovery_torn_head_cut",
            Mark::RecoveryFaulty => "recovery_faulty",
            Mark::RecoveryHeaderRepair => "recovery_header_repair",
            Mark::RecoveryStaleCut => "recovery_stale_cut",
            Mark::SuperblockRepair => "superblock_repair",
            Mark::SessionEviction => "session_eviction",
            Mark::EvictedRequestRefused => "evicted_request_refused",
            Mark::Checkpoint => "checkpoint",
            Mark::WalWrap => "wal_wrap",
            Mark::StateSync => "state_sync",
            Mark::StateSyncRetarget => "state_sync_retarget",
            Mark::StateSyncFromPeer => "state_sync_from_peer",
            Mark::CheckpointOffBoundary => "checkpoint_off_boundary",
            Mark::StateSyncResume => "state_sync_resume",
            Mark::StateLost => "state_lost",
            Mark::MemtableFlush => "memtable_flush",
            Mark::CompactionLevel1 => "compaction_level_1",
            Mark::CompactionLevel2 => "compaction_level_2",
            Mark::CompactionLevel3Plus => "compaction_level_3_plus",
            Mark::FullRingNoopSlot => "full_ring_noop_slot",
            Mark::HoleInquiryRepair => "hole_inquiry_repair",
            Mark::HoleInquiryCut => "hole_inquiry_cut",
            Mark::SyncOlderThanCheckpoint => "sync_older_than_checkpoint",
        }
    }

    /// The compaction mark of an output level (1 or deeper).
    pub fn compaction_into(level: usize) -> Mark {
        assert!(level >= 1, "level 0 is filled by flushes");
        match level {
            1 => Mark::CompactionLevel1,
            2 => Mark::CompactionLevel2,
            _ => Mark::CompactionLevel3Plus,
        }
    }
}

/// How often each mark was hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks([u64; Mark::ALL.len()]);

impl Marks {
    pub fn hit(&mut self, mark: Mark) {
        self.hit_n(mark, 1);
    }

    pub fn hit_n(&mut self, mark: Mark, n: u64) {
        self.0[mark as usize] += n;
    }

    pub fn count(&self, mark: Mark) -> u64 {
        self.0[mark as usize]
    }

    pub fn add(&mut self, other: &Marks) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }

    /// Every mark with its count, in [`Mark::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Mark, u64)> + '_ {
        Mark::ALL.iter().map(|&mark| (mark, self.count(mark)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mark_has_its_own_slot_and_name() {
        for (i, mark) in Mark::ALL.iter().enumerate() {
            assert_eq!(*mark as usize, i, "ALL is in declaration order");
        }
        let mut names: Vec<_> = Mark::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Mark::ALL.len());
        let mut marks = Marks::default();
        marks.hit(Mark::WalWrap);
        marks.hit_n(Mark::compaction_into(7), 2);
        let mut total = Marks::default();
        total.add(&marks);
        total.add(&marks);
        assert_eq!(total.count(Mark::WalWrap), 2);
        assert_eq!(total.count(Mark::CompactionLevel3Plus), 4);
        assert_eq!(total.iter().filter(|(_, n)| *n > 0).count(), 2);
    }
}
