//! The grid as the LSM sees it: fixed-size blocks addressed by number, each sealed in a
//! checksummed envelope, and the free set that hands them out.
//!
//! A parent always names a child block by `(address, checksum)` ([`BlockRef`]): a read verifies
//! the envelope's own checksum, that the envelope names the address it was read from (a misdirected
//! write) and that its checksum is the one the parent expects (a stale block left by an older
//! table). Any mismatch is [`GridError::Corrupt`], never wrong data.
//!
//! Envelope (`HEADER_SIZE` bytes, then the payload, then zero padding):
//!
//! ```text
//! checksum (u32, crc32c of bytes 4 .. HEADER_SIZE + size) | kind (u8) | 3 reserved
//! | size (u32) | reserved (u32) | address (u64) | reserved (u64)
//! ```

use crate::checksum::{checksum, Checksum};
use crate::io::{ReadError, WriteError};

pub const HEADER_SIZE: usize = 32;

/// What a block holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockKind {
    Data = 1,
    Index = 2,
    Filter = 3,
    Manifest = 4,
}

impl BlockKind {
    pub fn from_u8(byte: u8) -> Option<BlockKind> {
        Some(match byte {
            1 => BlockKind::Data,
            2 => BlockKind::Index,
            3 => BlockKind::Filter,
            4 => BlockKind::Manifest,
            _ => return None,
        })
    }
}

/// A parent's reference to a child block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockRef {
    pub address: u64,
    pub checksum: Checksum,
}

impl BlockRef {
    pub const ENCODED_SIZE: usize = 12;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.address.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
    }

    pub fn decode(bytes: &[u8]) -> Option<BlockRef> {
        Some(BlockRef {
            address: u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?),
            checksum: u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?),
        })
    }
}

/// Why a block could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GridError {
    /// The device could not read the block.
    Io { address: u64 },
    /// The block failed verification: damaged, misdirected or stale.
    Corrupt { address: u64, kind: BlockKind },
    /// A write or sync failed; the engine must not continue.
    Write(WriteError),
    /// The grid has no free block left and cannot grow.
    Full,
}

impl std::fmt::Display for GridError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GridError::Io { address } => write!(f, "grid block {address}: read error"),
            GridError::Corrupt { address, kind } => write!(
                f,
                "grid block {address} ({kind:?}): checksum mismatch (damaged, misdirected or stale)"
            ),
            GridError::Write(e) => write!(f, "grid write failed: {e}"),
            GridError::Full => write!(f, "grid is full: no free block"),
        }
    }
}

/// The most a grid grows by at once: space allocated ahead of the data is space amplification.
const MAX_GROWTH: u64 = 16 << 20;

/// Block-addressed storage under the LSM. Reads return the most recent write; writes are durable
/// only after `sync` returns. Implemented in memory (tests, the simulator) and on a file (ziggy-io).
pub trait BlockStore {
    fn block_size(&self) -> usize;
    /// How many blocks exist now.
    fn block_count(&self) -> u64;
    /// Grows the store to `count` blocks; a fixed-size store returns `Err(GridError::Full)`.
    fn grow(&mut self, count: u64) -> Result<(), GridError>;
    fn read_block(&mut self, address: u64, buf: &mut [u8]) -> Result<(), ReadError>;
    fn write_block(&mut self, address: u64, data: &[u8]) -> Result<(), WriteError>;
    fn sync(&mut self) -> Result<(), WriteError>;
    /// The blocks of these runs (first address, count) no longer hold anything: a store may
    /// give their space back (a file punches holes). They are not read again before rewritten.
    fn discard(&mut self, _runs: &[(u64, u64)]) {}
}

impl<T: BlockStore + ?Sized> BlockStore for Box<T> {
    fn block_size(&self) -> usize {
        (**self).block_size()
    }
    fn block_count(&self) -> u64 {
        (**self).block_count()
    }
    fn grow(&mut self, count: u64) -> Result<(), GridError> {
        (**self).grow(count)
    }
    fn read_block(&mut self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        (**self).read_block(address, buf)
    }
    fn write_block(&mut self, address: u64, data: &[u8]) -> Result<(), WriteError> {
        (**self).write_block(address, data)
    }
    fn sync(&mut self) -> Result<(), WriteError> {
        (**self).sync()
    }
    fn discard(&mut self, runs: &[(u64, u64)]) {
        (**self).discard(runs)
    }
}

/// The payload one block holds.
pub fn payload_size(block_size: usize) -> usize {
    block_size - HEADER_SIZE
}

/// Seals `payload` into `block` (block-sized) for `address`; returns the reference to it.
pub fn seal(block: &mut [u8], kind: BlockKind, address: u64, payload: &[u8]) -> BlockRef {
    assert!(payload.len() <= block.len() - HEADER_SIZE, "payload fits");
    block.fill(0);
    block[4] = kind as u8;
    block[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    block[16..24].copy_from_slice(&address.to_le_bytes());
    block[HEADER_SIZE..HEADER_SIZE + payload.len()].copy_from_slice(payload);
    let sum = checksum(&block[4..HEADER_SIZE + payload.len()]);
    block[0..4].copy_from_slice(&sum.to_le_bytes());
    BlockRef {
        address,
        checksum: sum,
    }
}

/// Verifies `block` against its reference and returns its payload.
pub fn open(block: &[u8], kind: BlockKind, reference: BlockRef) -> Result<&[u8], GridError> {
    let corrupt = GridError::Corrupt {
        address: reference.address,
        kind,
    };
    if block.len() < HEADER_SIZE {
        return Err(corrupt);
    }
    let size = u32::from_le_bytes(block[8..12].try_into().unwrap()) as usize;
    if size > block.len() - HEADER_SIZE {
        return Err(corrupt);
    }
    let stored = u32::from_le_bytes(block[0..4].try_into().unwrap());
    let address = u64::from_le_bytes(block[16..24].try_into().unwrap());
    let ok = stored == reference.checksum
        && address == reference.address
        && BlockKind::from_u8(block[4]) == Some(kind)
        && checksum(&block[4..HEADER_SIZE + size]) == stored;
    if !ok {
        return Err(corrupt);
    }
    Ok(&block[HEADER_SIZE..HEADER_SIZE + size])
}

/// Reads and verifies one block into `buf`; returns the payload's length.
pub fn read_verified(
    store: &mut dyn BlockStore,
    kind: BlockKind,
    reference: BlockRef,
    buf: &mut Vec<u8>,
) -> Result<usize, GridError> {
    buf.resize(store.block_size(), 0);
    store
        .read_block(reference.address, buf)
        .map_err(|_| GridError::Io {
            address: reference.address,
        })?;
    let len = open(buf, kind, reference)?.len();
    Ok(len)
}

/// Writes `bytes` over as many blocks as they need (allocated from `free`); returns their refs.
pub fn write_blob(
    store: &mut dyn BlockStore,
    free: &mut FreeSet,
    kind: BlockKind,
    bytes: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<Vec<BlockRef>, GridError> {
    let payload = payload_size(store.block_size());
    scratch.resize(store.block_size(), 0);
    let mut refs = Vec::with_capacity(bytes.len().div_ceil(payload).max(1));
    for chunk in bytes.chunks(payload) {
        let address = free.acquire(store)?;
        let reference = seal(scratch, kind, address, chunk);
        store
            .write_block(address, scratch)
            .map_err(GridError::Write)?;
        refs.push(reference);
    }
    Ok(refs)
}

/// Reads back a blob written by [`write_blob`].
pub fn read_blob(
    store: &mut dyn BlockStore,
    kind: BlockKind,
    refs: &[BlockRef],
    scratch: &mut Vec<u8>,
) -> Result<Vec<u8>, GridError> {
    let mut out = Vec::with_capacity(refs.len() * payload_size(store.block_size()));
    for &reference in refs {
        let len = read_verified(store, kind, reference, scratch)?;
        out.extend_from_slice(&scratch[HEADER_SIZE..HEADER_SIZE + len]);
    }
    Ok(out)
}

/// Which blocks are in use. Blocks a compaction releases stay acquired until the checkpoint that
/// no longer references them is durable ([`FreeSet::release`], [`FreeSet::checkpoint_durable`]):
/// until then the previous checkpoint, the one a crash returns to, still points at them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreeSet {
    /// One bit per block; set = acquired.
    bits: Vec<u64>,
    count: u64,
    acquired: u64,
    /// Released since the last checkpoint was written: free in the next checkpoint's view.
    released: Vec<u64>,
    /// Released before the checkpoint now being made durable: free once it is.
    staged: Vec<u64>,
    /// Where the search for a free block resumes (all blocks below it were acquired).
    cursor: u64,
}

impl FreeSet {
    pub fn new(count: u64) -> FreeSet {
        FreeSet {
            bits: vec![0; count.div_ceil(64) as usize],
            count,
            ..FreeSet::default()
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn acquired(&self) -> u64 {
        self.acquired
    }

    pub fn is_acquired(&self, address: u64) -> bool {
        address < self.count && self.bits[(address / 64) as usize] & (1 << (address % 64)) != 0
    }

    /// Blocks released but not yet reusable.
    pub fn pending(&self) -> usize {
        self.released.len() + self.staged.len()
    }

    /// Extends the set to `count` blocks (the new ones free).
    pub fn grow_to(&mut self, count: u64) {
        assert!(count >= self.count);
        self.count = count;
        self.bits.resize(count.div_ceil(64) as usize, 0);
    }

    /// The lowest free block, acquired; grows the store by a quarter (at most `MAX_GROWTH`
    /// bytes, at least 64 blocks) when none is left.
    pub fn acquire(&mut self, store: &mut dyn BlockStore) -> Result<u64, GridError> {
        if self.acquired == self.count {
            let most = (MAX_GROWTH / store.block_size() as u64).max(64);
            let grown = self.count + (self.count / 4).clamp(64, most);
            // Near a fixed limit, take what is left one block at a time.
            store.grow(grown).or_else(|_| store.grow(self.count + 1))?;
            self.grow_to(store.block_count());
        }
        let mut word = (self.cursor / 64) as usize;
        while self.bits[word] == u64::MAX {
            word += 1;
        }
        let address = word as u64 * 64 + (!self.bits[word]).trailing_zeros() as u64;
        assert!(address < self.count, "a free block exists below count");
        self.bits[word] |= 1 << (address % 64);
        self.acquired += 1;
        self.cursor = address;
        Ok(address)
    }

    /// Frees a block that no checkpoint references (written since the last checkpoint).
    pub fn free_now(&mut self, address: u64) {
        assert!(self.is_acquired(address), "freeing block {address} twice");
        self.bits[(address / 64) as usize] &= !(1 << (address % 64));
        self.acquired -= 1;
        self.cursor = self.cursor.min(address);
    }

    /// Releases a block the last durable checkpoint may reference: reusable only after the next
    /// checkpoint is durable.
    pub fn release(&mut self, address: u64) {
        assert!(self.is_acquired(address), "releasing free block {address}");
        self.released.push(address);
    }

    /// The free set as the checkpoint being written must record it: released blocks and
    /// `unreferenced` (blocks written for work the checkpoint does not include) are free there.
    /// With `staged`, the released blocks are listed after the bits, so that a reopen holds them
    /// until the next checkpoint starts, as a replica that never stopped does (see
    /// `Engine::make_deterministic`). Returns how many blocks the bits record as acquired.
    ///
    /// The recorded count ends at the highest acquired block, not at the grid's size: the grid
    /// grows by its own history (a replica that restarted may have grown it further), and the
    /// encoding must be the same on every replica that holds the same blocks.
    pub fn encode_for_checkpoint(
        &self,
        unreferenced: &[u64],
        staged: bool,
        out: &mut Vec<u8>,
    ) -> u64 {
        let count = self.encoded_count();
        let mut bits = self.bits[..count.div_ceil(64) as usize].to_vec();
        for &address in self.released.iter().chain(unreferenced) {
            bits[(address / 64) as usize] &= !(1 << (address % 64));
        }
        out.extend_from_slice(&count.to_le_bytes());
        let mut acquired = 0;
        for word in bits {
            acquired += u64::from(word.count_ones());
            out.extend_from_slice(&word.to_le_bytes());
        }
        if staged {
            out.extend_from_slice(&(self.released.len() as u64).to_le_bytes());
            for &address in &self.released {
                out.extend_from_slice(&address.to_le_bytes());
            }
        }
        acquired
    }

    /// One past the highest acquired block (released and unreferenced ones are still acquired).
    fn encoded_count(&self) -> u64 {
        let Some(word) = self.bits.iter().rposition(|&w| w != 0) else {
            return 0;
        };
        word as u64 * 64 + 64 - u64::from(self.bits[word].leading_zeros())
    }

    /// The size `encode_for_checkpoint` writes now.
    pub fn encoded_size(&self, staged: bool) -> usize {
        let list = if staged {
            8 + 8 * self.released.len()
        } else {
            0
        };
        8 + 8 * self.encoded_count().div_ceil(64) as usize + list
    }

    /// Called once the checkpoint has been written (before it is durable).
    pub fn checkpoint_written(&mut self) {
        assert!(self.staged.is_empty(), "one checkpoint at a time");
        self.staged = std::mem::take(&mut self.released);
    }

    /// Takes the blocks the durable checkpoint no longer references without freeing them (a
    /// backup holds them: they stay acquired until `free_now`).
    pub fn take_staged(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.staged)
    }

    /// Blocks released before the last checkpoint written, waiting to be freed.
    pub fn staged(&self) -> u64 {
        self.staged.len() as u64
    }

    /// The checkpoint is durable: the blocks it no longer references are free (returned).
    pub fn checkpoint_durable(&mut self) -> Vec<u64> {
        let freed = std::mem::take(&mut self.staged);
        for &address in &freed {
            self.free_now(address);
        }
        freed
    }

    /// Runs (first address, count) of free blocks covering every address of `freed` (sorted):
    /// runs are joined across gaps of free blocks, so that compaction's scattered releases cost
    /// a few large discards instead of one per fragment.
    pub fn free_runs(&self, freed: &[u64]) -> Vec<(u64, u64)> {
        /// Free blocks scanned to join two runs, at most.
        const MAX_GAP: u64 = 1024;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &address in freed {
            assert!(!self.is_acquired(address), "a discarded block is free");
            if let Some((start, count)) = runs.last_mut() {
                let end = *start + *count;
                assert!(address >= end, "freed addresses are sorted and distinct");
                let gap_free =
                    address - end <= MAX_GAP && (end..address).all(|a| !self.is_acquired(a));
                if gap_free {
                    *count = address + 1 - *start;
                    continue;
                }
            }
            runs.push((address, 1));
        }
        runs
    }

    /// Decodes an encoded free set; blocks listed as staged come back acquired, to be freed by
    /// the next [`FreeSet::checkpoint_durable`].
    pub fn decode(bytes: &[u8]) -> Option<FreeSet> {
        let count = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
        let words = count.div_ceil(64) as usize;
        let end = 8 + words.checked_mul(8)?;
        let body = bytes.get(8..end)?;
        let mut bits: Vec<u64> = body
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if count % 64 != 0 && bits.last().is_some_and(|w| w >> (count % 64) != 0) {
            return None;
        }
        let mut staged = Vec::new();
        if let Some(list) = bytes.get(end..).filter(|rest| !rest.is_empty()) {
            let n = u64::from_le_bytes(list.get(0..8)?.try_into().ok()?);
            let len = usize::try_from(n).ok()?.checked_mul(8)?.checked_add(8)?;
            let addresses = list.get(8..len)?;
            for chunk in addresses.chunks_exact(8) {
                let address = u64::from_le_bytes(chunk.try_into().unwrap());
                let (word, bit) = ((address / 64) as usize, 1 << (address % 64));
                if address >= count || bits[word] & bit != 0 {
                    return None; // staged blocks are free in the recorded bits, and in range
                }
                bits[word] |= bit;
                staged.push(address);
            }
        }
        let acquired = bits.iter().map(|w| w.count_ones() as u64).sum();
        Some(FreeSet {
            bits,
            count,
            acquired,
            staged,
            ..FreeSet::default()
        })
    }
}

/// Counts of the IO a store served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    pub reads: u64,
    pub writes: u64,
    pub syncs: u64,
}

/// A store in memory with crash semantics: a write is durable once a `sync` follows it; `crash`
/// loses or tears (per sector of 512 bytes, chosen by `seed`) every write not yet synced.
#[derive(Clone)]
pub struct MemoryStore {
    block_size: usize,
    durable: Vec<Vec<u8>>,
    /// Writes since the last sync: the block's new bytes, by address (latest wins).
    pending: std::collections::BTreeMap<u64, Vec<u8>>,
    max_blocks: u64,
    pub counters: IoCounters,
    /// Power fails when this many writes have been issued: later writes and syncs are lost.
    pub power_fails_at_write: Option<u64>,
}

impl MemoryStore {
    pub fn new(block_size: usize, blocks: u64, max_blocks: u64) -> MemoryStore {
        assert!(block_size > HEADER_SIZE && block_size.is_multiple_of(512));
        MemoryStore {
            block_size,
            durable: vec![vec![0; block_size]; blocks as usize],
            pending: Default::default(),
            max_blocks,
            counters: IoCounters::default(),
            power_fails_at_write: None,
        }
    }

    /// Simulates a power loss: each unsynced sector keeps its old bytes, takes the new, or
    /// (rarely) turns to garbage, as `seed` decides.
    pub fn crash(&mut self, seed: u64) {
        self.power_fails_at_write = None;
        let mut prng = crate::prng::Prng::new(seed);
        for (address, new) in std::mem::take(&mut self.pending) {
            let old = &mut self.durable[address as usize];
            for (o, n) in old.chunks_mut(512).zip(new.chunks(512)) {
                match prng.below(8) {
                    0..=3 => {}
                    4..=6 => o.copy_from_slice(n),
                    _ => o.iter_mut().for_each(|b| *b = prng.below(256) as u8),
                }
            }
        }
    }

    /// False once the power has failed (see `power_fails_at_write`).
    pub fn powered(&self) -> bool {
        self.power_fails_at_write
            .is_none_or(|n| self.counters.writes <= n)
    }

    /// Flips one bit of a block as it now reads (an unsynced write's copy if there is one),
    /// without syncing anything: latent corruption.
    pub fn damage(&mut self, address: u64, bit: usize) {
        let block = match self.pending.get_mut(&address) {
            Some(block) => block,
            None => &mut self.durable[address as usize],
        };
        let at = bit / 8 % block.len();
        block[at] ^= 1 << (bit % 8);
    }

    /// Flips one bit of a durable block (a latent corruption).
    pub fn corrupt(&mut self, address: u64, bit: usize) {
        self.sync().unwrap();
        let block = &mut self.durable[address as usize];
        let at = bit / 8 % block.len();
        block[at] ^= 1 << (bit % 8);
    }
}

impl BlockStore for MemoryStore {
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn block_count(&self) -> u64 {
        self.durable.len() as u64
    }

    fn grow(&mut self, count: u64) -> Result<(), GridError> {
        if count > self.max_blocks {
            return Err(GridError::Full);
        }
        self.durable
            .resize(count as usize, vec![0; self.block_size]);
        Ok(())
    }

    fn read_block(&mut self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.counters.reads += 1;
        let block = match self.pending.get(&address) {
            Some(block) => block,
            None => self.durable.get(address as usize).ok_or(ReadError::Io)?,
        };
        buf.copy_from_slice(block);
        Ok(())
    }

    fn write_block(&mut self, address: u64, data: &[u8]) -> Result<(), WriteError> {
        assert_eq!(data.len(), self.block_size);
        assert!(address < self.block_count(), "write inside the store");
        self.counters.writes += 1;
        if !self.powered() {
            return Ok(());
        }
        self.pending.insert(address, data.to_vec());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WriteError> {
        self.counters.syncs += 1;
        if !self.powered() {
            return Ok(());
        }
        for (address, data) in std::mem::take(&mut self.pending) {
            self.durable[address as usize] = data;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_runs_join_fragments_across_free_gaps_only() {
        let mut store = MemoryStore::new(512, 64, 64);
        let mut free = FreeSet::new(64);
        for _ in 0..20 {
            free.acquire(&mut store).unwrap();
        }
        // 0..20 acquired; free 3, 5, 6 and 12 (4 stays in use), and 18.
        for a in [3, 5, 6, 12, 18] {
            free.free_now(a);
        }
        assert_eq!(
            free.free_runs(&[3, 5, 6]),
            vec![(3, 1), (5, 2)],
            "4 is in use"
        );
        free.free_now(4);
        assert_eq!(free.free_runs(&[3, 6, 12]), vec![(3, 4), (12, 1)]);
        for a in 7..12 {
            free.free_now(a);
        }
        assert_eq!(free.free_runs(&[3, 12, 18]), vec![(3, 10), (18, 1)]);
        assert_eq!(free.free_runs(&[]), vec![]);
    }

    #[test]
    fn envelope_detects_damage_misdirection_and_staleness() {
        let mut block = vec![0u8; 512];
        let reference = seal(&mut block, BlockKind::Data, 7, b"payload");
        assert_eq!(
            open(&block, BlockKind::Data, reference).unwrap(),
            b"payload"
        );
        assert!(open(&block, BlockKind::Index, reference).is_err(), "kind");
        let moved = BlockRef {
            address: 8,
            ..reference
        };
        assert!(open(&block, BlockKind::Data, moved).is_err(), "misdirected");
        let mut newer = vec![0u8; 512];
        seal(&mut newer, BlockKind::Data, 7, b"other");
        assert!(open(&newer, BlockKind::Data, reference).is_err(), "stale");
        for bit in 0..(HEADER_SIZE + 7) * 8 {
            let mut damaged = block.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                open(&damaged, BlockKind::Data, reference).is_err(),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn blocks_of_one_size_at_one_address_have_distinct_checksums() {
        // Regression: data blocks once ended with their own crc32c, which made every envelope
        // checksum of one (address, kind, size) equal, so a stale block passed as current.
        let data = |entries: &[(&[u8], u64)]| {
            let mut builder = crate::lsm::block::BlockBuilder::new();
            for (key, sequence) in entries {
                builder.add(key, *sequence, crate::lsm::block::Kind::Value, b"v");
            }
            let mut bytes = Vec::new();
            builder.finish(&mut bytes);
            let mut block = vec![0u8; 512];
            seal(&mut block, BlockKind::Data, 11, &bytes)
        };
        let a = data(&[(b"key/16", 37), (b"key/17", 38)]);
        let b = data(&[(b"key/16", 37), (b"key/18", 38)]);
        assert_ne!(a.checksum, b.checksum);
    }

    #[test]
    fn released_blocks_wait_for_the_durable_checkpoint() {
        let mut store = MemoryStore::new(512, 64, 64);
        let mut free = FreeSet::new(64);
        let a = free.acquire(&mut store).unwrap();
        let b = free.acquire(&mut store).unwrap();
        assert_eq!((a, b), (0, 1));
        free.release(a);
        assert_eq!(
            free.acquire(&mut store).unwrap(),
            2,
            "not reused before checkpoint"
        );
        let mut encoded = Vec::new();
        let acquired = free.encode_for_checkpoint(&[2], false, &mut encoded);
        let recorded = FreeSet::decode(&encoded).unwrap();
        assert_eq!(acquired, 1);
        assert_eq!(recorded.acquired(), acquired);
        assert!(!recorded.is_acquired(0) && recorded.is_acquired(1) && !recorded.is_acquired(2));
        free.checkpoint_written();
        assert_eq!(
            free.acquire(&mut store).unwrap(),
            3,
            "still not before durable"
        );
        free.checkpoint_durable();
        assert_eq!(free.acquire(&mut store).unwrap(), 0, "reused after");
    }

    #[test]
    fn staged_blocks_survive_a_reopen_until_the_next_checkpoint() {
        let mut store = MemoryStore::new(512, 64, 256);
        let mut free = FreeSet::new(200);
        for _ in 0..70 {
            free.acquire(&mut store).unwrap();
        }
        free.release(3);
        free.release(65);
        let mut encoded = Vec::new();
        let acquired = free.encode_for_checkpoint(&[], true, &mut encoded);
        assert_eq!(
            acquired, 68,
            "released blocks are free in the checkpoint's view"
        );
        assert_eq!(encoded.len(), free.encoded_size(true));
        let mut reopened = FreeSet::decode(&encoded).unwrap();
        assert_eq!(
            reopened.count(),
            70,
            "the count ends at the highest acquired block"
        );
        assert_eq!(reopened.staged(), 2);
        assert!(
            reopened.is_acquired(3) && reopened.is_acquired(65),
            "held until freed"
        );
        reopened.grow_to(200);
        assert_eq!(reopened.acquire(&mut store).unwrap(), 70, "not reused yet");
        reopened.checkpoint_durable();
        assert_eq!(
            reopened.acquire(&mut store).unwrap(),
            3,
            "freed by the next checkpoint"
        );
        // A staged block the bits record as acquired, or out of range, is malformed.
        let mut bad = encoded.clone();
        let n = bad.len();
        bad[n - 8..].copy_from_slice(&64u64.to_le_bytes());
        assert!(FreeSet::decode(&bad).is_none());
        bad[n - 8..].copy_from_slice(&700u64.to_le_bytes());
        assert!(FreeSet::decode(&bad).is_none());
    }

    #[test]
    fn free_set_grows_the_store_and_refuses_past_its_limit() {
        let mut store = MemoryStore::new(512, 64, 200);
        let mut free = FreeSet::new(64);
        for expected in 0..200 {
            assert_eq!(free.acquire(&mut store).unwrap(), expected);
        }
        assert_eq!(free.acquire(&mut store), Err(GridError::Full));
    }

    #[test]
    fn blobs_round_trip_over_blocks() {
        let mut store = MemoryStore::new(512, 4, 1000);
        let mut free = FreeSet::new(4);
        let mut scratch = Vec::new();
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let refs = write_blob(
            &mut store,
            &mut free,
            BlockKind::Filter,
            &bytes,
            &mut scratch,
        )
        .unwrap();
        assert_eq!(refs.len(), 5000usize.div_ceil(480));
        let back = read_blob(&mut store, BlockKind::Filter, &refs, &mut scratch).unwrap();
        assert_eq!(back, bytes);
    }
}
