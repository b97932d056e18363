//! The superblock: the root of a replica's durable state, and the atomic switch point for
//! checkpoints.
//!
//! The data file holds several copies, one per sector, each checksummed and sequenced. A new
//! version is written copy by copy, each durable before the next, so a crash tears at most one copy
//! and every other copy holds either the new or the previous version. Opening picks the valid copy
//! with the highest sequence. Each version records the checksum of its predecessor (a hash chain),
//! and each copy records which copy it is, so a copy misdirected to another copy's sector is
//! rejected.

use crate::checksum::{checksum, Checksum};
use crate::config::{Config, Layout};

pub const MAGIC: u64 = u64::from_le_bytes(*b"ZIGGYDB\x01");
pub const VERSION: u16 = 2;
/// Bytes of a copy that carry data; the rest of the sector is zero.
pub const ENCODED_SIZE: usize = 192;
/// The most replicas a cluster may have (the peer table's size).
pub const REPLICAS_MAX: usize = 8;
/// `voted_for` when no vote was cast in the current term.
pub const NO_VOTE: u8 = 0xFF;

/// One version of the superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Increases by one with every version written.
    pub sequence: u64,
    /// The checksum of the previous version (0 for the first).
    pub parent: Checksum,
    /// Chosen at format time; every entry carries it, so a foreign data file is detected.
    pub cluster: u64,
    /// This replica's index in the cluster, and the cluster's size.
    pub replica: u8,
    pub replica_count: u8,
    /// Raft's durable state: the current term and the vote cast in it (`NO_VOTE` for none).
    pub term: u64,
    pub voted_for: u8,
    /// Chosen at random when this data file was formatted: a replaced data file is a new
    /// incarnation, and peers that knew the old one refuse it.
    pub incarnation: u64,
    /// The incarnations of the other replicas, as first heard from them (0: not yet heard).
    pub peers: [u64; REPLICAS_MAX],
    /// The layout fingerprint of the configuration that formatted the file.
    pub layout: u64,
    /// The WAL index the checkpoint covers (0: none yet).
    pub checkpoint_index: u64,
    /// The header checksum of entry `checkpoint_index` (the WAL hash chain's anchor).
    pub checkpoint_checksum: Checksum,
    pub checkpoint_term: u64,
    pub checkpoint_timestamp: u64,
    /// Which half of the grid holds the checkpointed state (0 or 1).
    pub state_area: u8,
    /// The size and checksum of the checkpointed state, spread over grid blocks.
    pub state_size: u64,
    pub state_checksum: Checksum,
    /// A state sync began: the grid may no longer hold the checkpoint's state (the sync writes
    /// the leader's blocks over it), so opening must not restore it. Only the checkpoint that
    /// completes the sync clears it.
    pub state_sync: bool,
    /// An embedded database's sizes (grid block size, WAL slot count, WAL entry size), which its
    /// open needs before it can compute the layout; zeros in a replica's data file.
    pub embedded: [u32; 3],
}

/// Why a copy does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuperblockError {
    Blank,
    Checksum,
    Magic,
    Version,
    /// The copy sits in another copy's sector (a misdirected write).
    WrongCopy,
}

impl Superblock {
    /// The first version, written by `format`.
    pub fn genesis(
        config: &Config,
        cluster: u64,
        replica: u8,
        replica_count: u8,
        incarnation: u64,
    ) -> Superblock {
        assert!(
            (replica_count as usize) <= REPLICAS_MAX,
            "at most {REPLICAS_MAX} replicas"
        );
        assert!(incarnation != 0, "incarnation 0 means unknown");
        assert!(replica < replica_count, "replica index within the cluster");
        Superblock {
            sequence: 1,
            parent: 0,
            cluster,
            replica,
            replica_count,
            term: 0,
            voted_for: NO_VOTE,
            incarnation,
            peers: [0; REPLICAS_MAX],
            layout: config.layout_fingerprint(),
            checkpoint_index: 0,
            checkpoint_checksum: 0,
            checkpoint_term: 0,
            checkpoint_timestamp: 0,
            state_area: 0,
            state_size: 0,
            state_checksum: checksum(&[]),
            state_sync: false,
            embedded: [0; 3],
        }
    }

    /// The version that follows this one.
    pub fn successor(&self) -> Superblock {
        Superblock {
            sequence: self.sequence + 1,
            parent: self.checksum(),
            ..*self
        }
    }

    /// The checksum of this version (the same in every copy).
    pub fn checksum(&self) -> Checksum {
        let mut bytes = [0u8; ENCODED_SIZE];
        self.encode_fields(&mut bytes, 0);
        checksum(&bytes[4..])
    }

    fn encode_fields(&self, out: &mut [u8], copy: u16) {
        out[8..16].copy_from_slice(&MAGIC.to_le_bytes());
        out[16..18].copy_from_slice(&VERSION.to_le_bytes());
        out[18..20].copy_from_slice(&copy.to_le_bytes());
        out[20] = self.replica;
        out[21] = self.state_area;
        out[22] = self.state_sync as u8;
        out[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        out[32..36].copy_from_slice(&self.parent.to_le_bytes());
        out[36..40].copy_from_slice(&self.checkpoint_checksum.to_le_bytes());
        out[40..48].copy_from_slice(&self.cluster.to_le_bytes());
        out[48..56].copy_from_slice(&self.layout.to_le_bytes());
        out[56..64].copy_from_slice(&self.checkpoint_index.to_le_bytes());
        out[64..72].copy_from_slice(&self.checkpoint_term.to_le_bytes());
        out[72..80].copy_from_slice(&self.checkpoint_timestamp.to_le_bytes());
        out[80..88].copy_from_slice(&self.state_size.to_le_bytes());
        out[88..92].copy_from_slice(&self.state_checksum.to_le_bytes());
        out[92] = self.replica_count;
        out[93] = self.voted_for;
        out[96..104].copy_from_slice(&self.term.to_le_bytes());
        out[104..112].copy_from_slice(&self.incarnation.to_le_bytes());
        for (i, peer) in self.peers.iter().enumerate() {
            out[112 + i * 8..120 + i * 8].copy_from_slice(&peer.to_le_bytes());
        }
        for (i, size) in self.embedded.iter().enumerate() {
            out[176 + i * 4..180 + i * 4].copy_from_slice(&size.to_le_bytes());
        }
    }

    /// Encodes copy number `copy` into a whole sector.
    pub fn encode(&self, copy: u16, sector: &mut [u8]) {
        assert!(sector.len() >= ENCODED_SIZE);
        sector.fill(0);
        self.encode_fields(sector, copy);
        let sum = checksum(&sector[4..ENCODED_SIZE]);
        sector[0..4].copy_from_slice(&sum.to_le_bytes());
    }

    /// Decodes and verifies copy number `copy`. Never panics, whatever the bytes.
    pub fn decode(copy: u16, sector: &[u8]) -> Result<Superblock, SuperblockError> {
        if sector.len() < ENCODED_SIZE {
            return Err(SuperblockError::Checksum);
        }
        if sector.iter().all(|&b| b == 0) {
            return Err(SuperblockError::Blank);
        }
        let u16_at = |at: usize| u16::from_le_bytes(sector[at..at + 2].try_into().unwrap());
        let u32_at = |at: usize| u32::from_le_bytes(sector[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(sector[at..at + 8].try_into().unwrap());
        let tail_clear = sector[ENCODED_SIZE..].iter().all(|&b| b == 0);
        if u32_at(0) != checksum(&sector[4..ENCODED_SIZE]) || !tail_clear {
            return Err(SuperblockError::Checksum);
        }
        if u64_at(8) != MAGIC {
            return Err(SuperblockError::Magic);
        }
        if u16_at(16) != VERSION {
            return Err(SuperblockError::Version);
        }
        if u16_at(18) != copy {
            return Err(SuperblockError::WrongCopy);
        }
        if sector[92] == 0 || sector[20] >= sector[92] || sector[22] > 1 {
            return Err(SuperblockError::Checksum);
        }
        Ok(Superblock {
            replica: sector[20],
            replica_count: sector[92],
            voted_for: sector[93],
            term: u64_at(96),
            incarnation: u64_at(104),
            peers: std::array::from_fn(|i| u64_at(112 + i * 8)),
            state_area: sector[21] & 1,
            sequence: u64_at(24),
            parent: u32_at(32),
            checkpoint_checksum: u32_at(36),
            cluster: u64_at(40),
            layout: u64_at(48),
            checkpoint_index: u64_at(56),
            checkpoint_term: u64_at(64),
            checkpoint_timestamp: u64_at(72),
            state_size: u64_at(80),
            state_checksum: u32_at(88),
            state_sync: sector[22] == 1,
            embedded: std::array::from_fn(|i| u32_at(176 + i * 4)),
        })
    }
}

/// What opening found in the superblock zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub superblock: Superblock,
    /// The copies that did not hold the chosen version (invalid or older).
    pub stale_copies: Vec<u16>,
}

/// Picks the newest valid copy from the whole superblock zone.
pub fn select(layout: &Layout, zone: &[u8]) -> Option<Selection> {
    let size = layout.superblock_copy_size as usize;
    let copies: Vec<Option<Superblock>> = (0..layout.superblock_copies as usize)
        .map(|c| Superblock::decode(c as u16, &zone[c * size..(c + 1) * size]).ok())
        .collect();
    let newest = copies.iter().flatten().max_by_key(|s| s.sequence)?;
    let stale_copies = copies
        .iter()
        .enumerate()
        .filter(|(_, c)| c.as_ref() != Some(newest))
        .map(|(i, _)| i as u16)
        .collect();
    Some(Selection {
        superblock: *newest,
        stale_copies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone_with(layout: &Layout, versions: &[Option<Superblock>]) -> Vec<u8> {
        let size = layout.superblock_copy_size as usize;
        let mut zone = vec![0u8; size * versions.len()];
        for (c, v) in versions.iter().enumerate() {
            if let Some(v) = v {
                v.encode(c as u16, &mut zone[c * size..(c + 1) * size]);
            }
        }
        zone
    }

    #[test]
    fn round_trip() {
        let config = Config::test();
        let sb = Superblock::genesis(&config, 77, 0, 1, 9).successor();
        let mut sector = vec![0u8; 512];
        sb.encode(2, &mut sector);
        assert_eq!(Superblock::decode(2, &sector), Ok(sb));
        assert_eq!(
            Superblock::decode(1, &sector),
            Err(SuperblockError::WrongCopy)
        );
        // The state-sync flag survives successors; a copy from before the flag reads it clear.
        let synced = Superblock {
            state_sync: true,
            ..sb
        }
        .successor();
        synced.encode(0, &mut sector);
        assert_eq!(sector[22], 1);
        assert_eq!(Superblock::decode(0, &sector), Ok(synced));
        sb.encode(0, &mut sector);
        assert_eq!(sector[22], 0);
        assert!(!Superblock::decode(0, &sector).unwrap().state_sync);
    }

    #[test]
    fn newest_valid_copy_wins_and_a_torn_copy_loses_nothing() {
        let config = Config::test();
        let layout = Layout::new(&config);
        let old = Superblock::genesis(&config, 1, 0, 1, 9);
        let new = old.successor();
        // Copy 0 written, copy 1 torn mid-write, copies 2 and 3 still old.
        let mut zone = zone_with(&layout, &[Some(new), Some(new), Some(old), Some(old)]);
        zone[512 + 40] ^= 0xff;
        let selection = select(&layout, &zone).unwrap();
        assert_eq!(selection.superblock, new);
        assert_eq!(selection.stale_copies, vec![1, 2, 3]);
        // The new version torn in its only copy: the previous version survives.
        let mut zone = zone_with(&layout, &[Some(new), Some(old), Some(old), Some(old)]);
        zone[7] ^= 1;
        assert_eq!(select(&layout, &zone).unwrap().superblock, old);
    }

    #[test]
    fn all_copies_bad_is_none() {
        let layout = Layout::new(&Config::test());
        assert_eq!(select(&layout, &vec![0u8; 512 * 4]), None);
        assert_eq!(select(&layout, &vec![0xabu8; 512 * 4]), None);
    }

    #[test]
    fn misdirected_copy_is_rejected() {
        let config = Config::test();
        let layout = Layout::new(&config);
        let old = Superblock::genesis(&config, 1, 0, 1, 9);
        let new = old.successor();
        let mut zone = zone_with(&layout, &[Some(old), Some(old), Some(old), Some(old)]);
        // Copy 0 of the new version lands in copy 3's sector.
        let mut sector = vec![0u8; 512];
        new.encode(0, &mut sector);
        zone[3 * 512..4 * 512].copy_from_slice(&sector);
        assert_eq!(select(&layout, &zone).unwrap().superblock, old);
    }
}
