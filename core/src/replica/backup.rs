//! Backups of a live replica: the durable checkpoint a backup copies (its place in the log and
//! the state machine's bytes, which name the LSM tree's blocks), the blocks themselves, and the
//! first writes of a data file that starts at such a checkpoint, which is what a backup is.
//!
//! A backup walks the checkpoint's tree as a syncing follower does (`lsm::sync`), fetching each
//! block by its reference. The replica keeps serving and checkpointing meanwhile; a block a
//! newer checkpoint freed and reused no longer opens against its reference, and the backup moves
//! on to the newer checkpoint, keeping every block the two share.

use super::Replica;
use crate::checkpoint;
use crate::checksum::{checksum, Checksum};
use crate::config::{Config, Layout};
use crate::io::Storage;
use crate::lsm::sync::Want;
use crate::sessions::Sessions;
use crate::state_machine::StateMachine;
use crate::superblock::Superblock;

/// A durable checkpoint, as a backup takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPoint {
    /// The last entry the checkpoint covers, and that entry's checksum, term and timestamp (the
    /// anchor the log continues from).
    pub index: u64,
    pub checksum: Checksum,
    pub term: u64,
    pub timestamp: u64,
    /// The state machine's checkpoint bytes.
    pub state: Vec<u8>,
}

/// Why a data file cannot start at a backup's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupError {
    /// The state machine's bytes do not fit in a checkpoint area of this configuration.
    StateTooLarge { size: u64, capacity: u64 },
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::StateTooLarge { size, capacity } => write!(
                f,
                "the checkpoint's bytes ({size}) exceed a checkpoint area ({capacity})"
            ),
        }
    }
}

impl std::error::Error for BackupError {}

impl<S: StateMachine> Replica<S> {
    /// The latest durable checkpoint, if this replica holds one whole in its grid.
    pub fn backup_point(&self) -> Option<BackupPoint> {
        if !self.may_serve() {
            return None;
        }
        let sb = &self.superblock;
        let clients_max = self.config.clients_max as usize;
        let (_, state) = Sessions::decode(clients_max, self.reply_max(), &self.checkpoint_blob)
            .expect("the durable checkpoint's blob decodes");
        Some(BackupPoint {
            index: sb.checkpoint_index,
            checksum: sb.checkpoint_checksum,
            term: sb.checkpoint_term,
            timestamp: sb.checkpoint_timestamp,
            state: state.to_vec(),
        })
    }

    /// Asks for a checkpoint at the next chance, off the interval's boundary if need be (a backup
    /// that must hold every write acknowledged before it began). Its blocks then differ from
    /// the peers' until the next state sync, as any checkpoint off the boundary does.
    pub fn checkpoint_soon<T: Storage>(&mut self, storage: &mut T) {
        self.checkpoint_wanted = true;
        self.advance(storage);
    }

    /// Copies block `want` of the state into `out` (header and payload), if the grid still
    /// holds it as referenced.
    pub fn backup_block(&mut self, want: Want, out: &mut Vec<u8>) -> bool {
        out.clear();
        !self.state_lost && self.state.serve_block(want, out)
    }

    /// The first writes of a single replica's data file that starts at checkpoint `point`
    /// (the superblock copies and the checkpoint's blob, with no client sessions), as
    /// `(offset, bytes)`. The caller writes the LSM blocks the state names at their addresses
    /// in the grid; everything else must read as zeros (an empty log after the checkpoint).
    pub fn format_at(
        config: &Config,
        cluster: u64,
        incarnation: u64,
        point: &BackupPoint,
    ) -> Result<Vec<(u64, Vec<u8>)>, BackupError> {
        let layout = Layout::new(config);
        let reply_max = layout.reply_slot_size as usize - crate::sessions::REPLY_HEADER_SIZE;
        let mut blob = Vec::new();
        Sessions::new(config.clients_max as usize, reply_max).encode(&mut blob);
        blob.extend_from_slice(&point.state);
        let capacity = checkpoint::area_capacity(&layout);
        if blob.len() as u64 > capacity {
            let size = blob.len() as u64;
            return Err(BackupError::StateTooLarge { size, capacity });
        }
        let mut sb = Superblock::genesis(config, cluster, 0, 1, incarnation);
        sb.peers[0] = incarnation;
        sb.term = point.term;
        sb.checkpoint_index = point.index;
        sb.checkpoint_checksum = point.checksum;
        sb.checkpoint_term = point.term;
        sb.checkpoint_timestamp = point.timestamp;
        sb.state_area = 0;
        sb.state_size = blob.len() as u64;
        sb.state_checksum = checksum(&blob);
        let mut writes: Vec<(u64, Vec<u8>)> = (0..layout.superblock_copies)
            .map(|copy| {
                let mut sector = vec![0u8; layout.sector_size as usize];
                sb.encode(copy as u16, &mut sector);
                (layout.superblock_copy_offset(copy), sector)
            })
            .collect();
        let (first, _) = checkpoint::area_blocks(&layout, 0);
        for n in 0..checkpoint::blocks_for(&layout, blob.len() as u64) {
            let mut block = vec![0u8; layout.grid_block_size as usize];
            checkpoint::encode_block(&layout, &blob, n, first + n, point.index, &mut block);
            writes.push((layout.grid_block_offset(first + n), block));
        }
        Ok(writes)
    }
}
