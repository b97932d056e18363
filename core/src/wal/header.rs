//! The header of a WAL entry: 128 bytes, little-endian, checksummed.
//!
//! The same header is stored twice: at the start of the entry's slot in the entries ring (followed
//! by the body), and in the redundant headers ring. Layout:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | header checksum (crc32c of bytes 4..128) |
//! | 4 | 4 | body checksum (crc32c of the body) |
//! | 8 | 4 | parent: the header checksum of entry `index - 1` (the hash chain) |
//! | 12 | 1 | operation |
//! | 13 | 3 | reserved, zero |
//! | 16 | 8 | cluster id |
//! | 24 | 8 | index (the log position, from 1) |
//! | 32 | 8 | term |
//! | 40 | 8 | timestamp (ns, assigned by the leader) |
//! | 48 | 8 | client id |
//! | 56 | 8 | request number |
//! | 64 | 4 | body size |
//! | 68 | 60 | reserved, zero |

use crate::checksum::{checksum, Checksum};

pub const HEADER_SIZE: usize = 128;

/// What an entry asks the state machine to do; the body's encoding depends on it. Values below
/// [`Operation::STATE_MACHINE_FIRST`] belong to the replica; the rest are the state machine's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Operation(pub u8);

impl Operation {
    /// Does nothing (used to fill or to commit a term).
    pub const NOOP: Operation = Operation(1);
    /// Many client requests in one entry (see `wal::batch`).
    pub const BATCH: Operation = Operation(2);
    /// A client opens a session (request number 0; see `sessions`). Only inside batch entries.
    pub const REGISTER: Operation = Operation(3);
    /// Stands in the redundant headers ring for a faulty entry whose own header was lost (see
    /// [`EntryHeader::hole`]); never in the entries ring.
    pub const HOLE: Operation = Operation(4);
    /// The first operation number a state machine may define.
    pub const STATE_MACHINE_FIRST: u8 = 16;

    pub fn is_valid(self) -> bool {
        self.0 != 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryHeader {
    pub checksum: Checksum,
    pub body_checksum: Checksum,
    pub parent: Checksum,
    pub operation: Operation,
    pub cluster: u64,
    pub index: u64,
    pub term: u64,
    pub timestamp: u64,
    pub client: u64,
    pub request: u64,
    pub size: u32,
}

/// Why bytes do not decode to a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// All zeros: the slot was never written.
    Blank,
    /// The checksum does not match (torn, corrupt, or garbage).
    Checksum,
    /// The checksum matches but a field is impossible (unknown operation, reserved bytes set).
    Invalid,
}

impl EntryHeader {
    /// Builds a header and seals its checksums over `body`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        operation: Operation,
        cluster: u64,
        index: u64,
        term: u64,
        timestamp: u64,
        client: u64,
        request: u64,
        parent: Checksum,
        body: &[u8],
    ) -> EntryHeader {
        assert!(index > 0, "index 0 is the root, never an entry");
        let mut header = EntryHeader {
            checksum: 0,
            body_checksum: checksum(body),
            parent,
            operation,
            cluster,
            index,
            term,
            timestamp,
            client,
            request,
            size: u32::try_from(body.len()).expect("body fits u32"),
        };
        let mut bytes = [0u8; HEADER_SIZE];
        header.encode(&mut bytes);
        header.checksum = checksum(&bytes[4..]);
        header
    }

    /// The redundant header recovery writes for a faulty entry whose own header is lost: it proves
    /// the index durable and names no content (term 0, so that the repaired entry replaces it as
    /// one of a newer term). Without it, the rebuilt headers would hold zeros there, and a crash
    /// before the repair would read the pair as a torn write and cut a durable entry.
    pub fn hole(cluster: u64, index: u64) -> EntryHeader {
        EntryHeader::new(Operation::HOLE, cluster, index, 0, 0, 0, 0, 0, &[])
    }

    pub fn is_hole(&self) -> bool {
        self.operation == Operation::HOLE
    }

    /// Writes the header into `out` (exactly [`HEADER_SIZE`] bytes).
    pub fn encode(&self, out: &mut [u8]) {
        assert_eq!(out.len(), HEADER_SIZE);
        out.fill(0);
        out[4..8].copy_from_slice(&self.body_checksum.to_le_bytes());
        out[8..12].copy_from_slice(&self.parent.to_le_bytes());
        out[12] = self.operation.0;
        out[16..24].copy_from_slice(&self.cluster.to_le_bytes());
        out[24..32].copy_from_slice(&self.index.to_le_bytes());
        out[32..40].copy_from_slice(&self.term.to_le_bytes());
        out[40..48].copy_from_slice(&self.timestamp.to_le_bytes());
        out[48..56].copy_from_slice(&self.client.to_le_bytes());
        out[56..64].copy_from_slice(&self.request.to_le_bytes());
        out[64..68].copy_from_slice(&self.size.to_le_bytes());
        let sum = checksum(&out[4..]);
        out[0..4].copy_from_slice(&sum.to_le_bytes());
        debug_assert!(self.checksum == 0 || self.checksum == sum);
    }

    /// Decodes and verifies a header. Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<EntryHeader, HeaderError> {
        if bytes.len() < HEADER_SIZE {
            return Err(HeaderError::Checksum);
        }
        let bytes = &bytes[..HEADER_SIZE];
        if bytes.iter().all(|&b| b == 0) {
            return Err(HeaderError::Blank);
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        if u32_at(0) != checksum(&bytes[4..]) {
            return Err(HeaderError::Checksum);
        }
        let reserved_clear = bytes[13..16].iter().chain(&bytes[68..]).all(|&b| b == 0);
        let operation = Operation(bytes[12]);
        let index = u64_at(24);
        if !reserved_clear || index == 0 || !operation.is_valid() {
            return Err(HeaderError::Invalid);
        }
        Ok(EntryHeader {
            checksum: u32_at(0),
            body_checksum: u32_at(4),
            parent: u32_at(8),
            operation,
            cluster: u64_at(16),
            index,
            term: u64_at(32),
            timestamp: u64_at(40),
            client: u64_at(48),
            request: u64_at(56),
            size: u32_at(64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EntryHeader {
        EntryHeader::new(Operation(20), 7, 42, 3, 1_000, 99, 5, 0xdead_beef, b"body")
    }

    #[test]
    fn round_trips() {
        let header = sample();
        let mut bytes = [0u8; HEADER_SIZE];
        header.encode(&mut bytes);
        assert_eq!(EntryHeader::decode(&bytes), Ok(header));
    }

    #[test]
    fn blank_and_flipped_bits_are_told_apart() {
        assert_eq!(
            EntryHeader::decode(&[0u8; HEADER_SIZE]),
            Err(HeaderError::Blank)
        );
        let mut bytes = [0u8; HEADER_SIZE];
        sample().encode(&mut bytes);
        for bit in 0..HEADER_SIZE * 8 {
            let mut copy = bytes;
            copy[bit / 8] ^= 1 << (bit % 8);
            assert!(
                EntryHeader::decode(&copy).is_err(),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        assert!(EntryHeader::decode(&[1, 2, 3]).is_err());
    }
}
