//! State sync: which blocks of a checkpoint a replica lacks, and taking them in as they arrive.
//!
//! A checkpoint is a Merkle tree: the manifest's root chain names level 0's tables, the chunk
//! chains and the free set's chain; a chunk names its tables; a table names its index and filter
//! blocks, and its index names its data blocks — every reference an `(address, checksum)`. A
//! [`Walk`] visits that tree in a replica's own grid, starting from the root the leader's
//! checkpoint names. A block that opens against its reference where the reference says it is *is*
//! that block, so it is kept without a fetch; any other is a [`Want`], which the replica fetches
//! from the leader and hands back to [`Walk::arrived`], which verifies it and writes it at the same
//! address (a block is sealed with its address: it can live nowhere else).
//!
//! The walk holds no progress of its own that a crash could lose: the grid is the progress, so a
//! walk started again after a crash finds every block that arrived and was synced, and wants only
//! the rest. It is synchronous and deterministic (B-tree maps only): the simulator replays it.

use super::grid::{self, BlockKind, BlockRef, BlockStore, FreeSet, GridError};
use super::manifest::{self, Chunk, Root};
use super::table::{self, TableMeta};
use super::tree::Error;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A block the walk lacks: where it goes, what it must be, and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub reference: BlockRef,
    pub kind: BlockKind,
}

/// What a walk saw, for the sync's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Blocks found whole in the local grid (no fetch).
    pub local: u64,
    /// Blocks wanted from the leader.
    pub wanted: u64,
    /// Wanted blocks that arrived, verified and were written.
    pub arrived: u64,
}

/// The most blocks one chain may have: a damaged or hostile link cannot make the walk loop.
const CHAIN_BLOCKS_MAX: u64 = 1 << 24;

/// What a chain's bytes are, once whole.
enum Role {
    Root,
    Chunk(Chunk),
    Free,
}

/// A chain being read block by block (each block's link names the next).
struct ChainWalk {
    next: Option<BlockRef>,
    role: Role,
    body: Vec<u8>,
    blocks: u64,
}

enum Task {
    Chain(ChainWalk),
    /// A table whose index and filter blocks are to be checked, then its data blocks.
    Table(TableMeta),
}

/// Walks one checkpoint's tree in a local grid; see the module documentation.
pub struct Walk {
    levels: usize,
    /// Work that can go on with local reads.
    tasks: VecDeque<Task>,
    /// Work waiting for the block at an address to arrive.
    parked: BTreeMap<u64, Vec<Task>>,
    /// Leaf blocks (data, filter) to check.
    leaves: VecDeque<Want>,
    /// Wanted and not yet arrived, by address.
    wanted: BTreeMap<u64, Want>,
    /// Arrived during this walk (read again when parked work resumes: not counted as local).
    arrived: BTreeSet<u64>,
    /// The block count the checkpoint's free set records (the grid must be at least this large).
    free_count: u64,
    scratch: Vec<u8>,
    stats: WalkStats,
}

impl Walk {
    /// A walk of the checkpoint whose manifest root is `root` (None: the empty state, nothing to
    /// fetch), in a tree of `levels` levels.
    pub fn new(root: Option<BlockRef>, levels: usize) -> Walk {
        let tasks = root
            .map(|r| {
                Task::Chain(ChainWalk {
                    next: Some(r),
                    role: Role::Root,
                    body: Vec::new(),
                    blocks: 0,
                })
            })
            .into_iter()
            .collect();
        Walk {
            levels,
            tasks,
            parked: BTreeMap::new(),
            leaves: VecDeque::new(),
            wanted: BTreeMap::new(),
            arrived: BTreeSet::new(),
            free_count: 0,
            scratch: Vec::new(),
            stats: WalkStats::default(),
        }
    }

    pub fn stats(&self) -> WalkStats {
        self.stats
    }

    /// The grid size the checkpoint needs (its free set's block count).
    pub fn free_count(&self) -> u64 {
        self.free_count
    }

    /// Whether every block of the checkpoint is in the local grid.
    pub fn is_done(&self) -> bool {
        self.tasks.is_empty()
            && self.leaves.is_empty()
            && self.parked.is_empty()
            && self.wanted.is_empty()
    }

    /// Goes on with local reads, appending up to `max` new wants to `out`; returns whether the
    /// walk is done. An error means the checkpoint's own metadata does not decode.
    pub fn poll(
        &mut self,
        store: &mut dyn BlockStore,
        out: &mut Vec<Want>,
        max: usize,
    ) -> Result<bool, Error> {
        let limit = out.len() + max;
        while out.len() < limit {
            if let Some(leaf) = self.leaves.pop_front() {
                if !self.wanted.contains_key(&leaf.reference.address) && !self.local(store, leaf) {
                    self.want(leaf, out);
                }
                continue;
            }
            match self.tasks.pop_front() {
                Some(Task::Chain(chain)) => self.step_chain(store, chain, out)?,
                Some(Task::Table(meta)) => self.step_table(store, meta, out)?,
                None => break,
            }
        }
        Ok(self.is_done())
    }

    /// A wanted block arrived (`bytes`: the block, possibly without its zero padding). Writes it
    /// at its address if it is the block wanted there; returns false (and writes nothing) if not.
    pub fn arrived(
        &mut self,
        store: &mut dyn BlockStore,
        want: Want,
        bytes: &[u8],
    ) -> Result<bool, Error> {
        let address = want.reference.address;
        let block_size = store.block_size();
        if self.wanted.get(&address) != Some(&want) || bytes.len() > block_size {
            return Ok(false);
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(bytes);
        self.scratch.resize(block_size, 0);
        if grid::open(&self.scratch, want.kind, want.reference).is_err() {
            return Ok(false);
        }
        let count = store.block_count();
        if address >= count {
            // By a quarter at least, as the free set grows it: a fresh replica's grid is filled
            // in address order, and one growth per block would cost a file extension each.
            let grown = (address + 1).max(count + count / 4);
            store.grow(grown).or_else(|_| store.grow(address + 1))?;
        }
        store
            .write_block(address, &self.scratch)
            .map_err(GridError::Write)?;
        self.wanted.remove(&address);
        self.arrived.insert(address);
        self.stats.arrived += 1;
        if let Some(tasks) = self.parked.remove(&address) {
            for task in tasks.into_iter().rev() {
                self.tasks.push_front(task);
            }
        }
        Ok(true)
    }

    /// Reads the block `want` names into `scratch`; whether it is that block.
    fn local(&mut self, store: &mut dyn BlockStore, want: Want) -> bool {
        let address = want.reference.address;
        if address >= store.block_count() {
            return false;
        }
        self.scratch.resize(store.block_size(), 0);
        let whole = store.read_block(address, &mut self.scratch).is_ok()
            && grid::open(&self.scratch, want.kind, want.reference).is_ok();
        self.stats.local += (whole && !self.arrived.contains(&address)) as u64;
        whole
    }

    fn want(&mut self, want: Want, out: &mut Vec<Want>) {
        let previous = self.wanted.insert(want.reference.address, want);
        debug_assert!(previous.is_none(), "a block is wanted once at a time");
        self.stats.wanted += 1;
        out.push(want);
    }

    /// Parks `task` until the block `want` names arrives (wanting it unless already wanted).
    fn park(&mut self, want: Want, task: Task, out: &mut Vec<Want>) {
        if !self.wanted.contains_key(&want.reference.address) {
            self.want(want, out);
        }
        let parked = self.parked.entry(want.reference.address).or_default();
        parked.push(task);
    }

    fn step_chain(
        &mut self,
        store: &mut dyn BlockStore,
        mut chain: ChainWalk,
        out: &mut Vec<Want>,
    ) -> Result<(), Error> {
        let Some(next) = chain.next else {
            return self.chain_done(chain);
        };
        let want = Want {
            reference: next,
            kind: BlockKind::Manifest,
        };
        if self.wanted.contains_key(&next.address) || !self.local(store, want) {
            self.park(want, Task::Chain(chain), out);
            return Ok(());
        }
        let payload = grid::open(&self.scratch, want.kind, next).expect("checked by local");
        let (link, part) =
            manifest::chain_link(payload).ok_or(Error::Manifest("short chain block"))?;
        chain.body.extend_from_slice(part);
        chain.next = link;
        chain.blocks += 1;
        if chain.blocks > CHAIN_BLOCKS_MAX {
            return Err(Error::Manifest("a manifest chain loops"));
        }
        self.tasks.push_front(Task::Chain(chain));
        Ok(())
    }

    /// A chain is whole: queue what it names.
    fn chain_done(&mut self, chain: ChainWalk) -> Result<(), Error> {
        match chain.role {
            Role::Root => {
                let root = Root::decode(&chain.body, self.levels)?;
                // The deepest levels first, level 0 last: the newest tables are the likeliest to
                // be compacted away before the sync ends (a retarget then no longer wants them).
                let chunks = root.chunks.into_iter().rev().flatten();
                let chains = chunks.map(|c| (c.head, Role::Chunk(c)));
                let free = std::iter::once((root.free.head, Role::Free));
                for (head, role) in free.chain(chains) {
                    self.tasks.push_back(Task::Chain(ChainWalk {
                        next: Some(head),
                        role,
                        body: Vec::new(),
                        blocks: 0,
                    }));
                }
                self.tasks.extend(root.level0.into_iter().map(Task::Table));
            }
            Role::Chunk(chunk) => {
                let tables = manifest::decode_tables(&chain.body, &chunk)?;
                self.tasks.extend(tables.into_iter().map(Task::Table));
            }
            Role::Free => {
                let free = FreeSet::decode(&chain.body).ok_or(Error::Manifest("free set"))?;
                self.free_count = free.count();
            }
        }
        Ok(())
    }

    fn step_table(
        &mut self,
        store: &mut dyn BlockStore,
        meta: TableMeta,
        out: &mut Vec<Want>,
    ) -> Result<(), Error> {
        // The index blocks first: the data blocks are known only from the index.
        for &reference in &meta.index {
            let want = Want {
                reference,
                kind: BlockKind::Index,
            };
            if self.wanted.contains_key(&reference.address) || !self.local(store, want) {
                self.park(want, Task::Table(meta), out);
                return Ok(());
            }
        }
        let bytes = match grid::read_blob(store, BlockKind::Index, &meta.index, &mut self.scratch) {
            Ok(bytes) => bytes,
            Err(GridError::Write(e)) => return Err(GridError::Write(e).into()),
            Err(_) => {
                // Damaged since it was checked (a latent fault): check again, and fetch it.
                self.tasks.push_front(Task::Table(meta));
                return Ok(());
            }
        };
        let index = table::decode_index(&bytes).ok_or(Error::Manifest("a table index"))?;
        if index.len() as u64 != meta.data_blocks {
            return Err(Error::Manifest("a table index differs from its table"));
        }
        let filter = meta.filter.iter().map(|&reference| Want {
            reference,
            kind: BlockKind::Filter,
        });
        let data = index.iter().map(|e| Want {
            reference: e.block,
            kind: BlockKind::Data,
        });
        self.leaves.extend(filter.chain(data));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::grid::MemoryStore;
    use crate::lsm::{Checkpoint, Engine, Options, Write};

    const BLOCK: usize = 4096;

    fn filled(keys: u64, round: u64) -> (Engine<MemoryStore>, Checkpoint) {
        let store = MemoryStore::new(BLOCK, 64, 1 << 16);
        let mut engine = Engine::open(store, Options::small(), None).unwrap();
        write(&mut engine, keys, round);
        let checkpoint = engine.checkpoint().unwrap();
        engine.checkpoint_durable();
        (engine, checkpoint)
    }

    fn write(engine: &mut Engine<MemoryStore>, keys: u64, round: u64) {
        for i in 0..keys {
            let key = format!("key{:06}", (i * 7919) % keys);
            let value = vec![(i + round) as u8; 40 + (i % 50) as usize];
            let sequence = engine.sequence() + 1;
            let write = Write {
                key: key.as_bytes(),
                value: Some(&value),
            };
            engine.apply(sequence, &[write]).unwrap();
        }
    }

    fn pairs(engine: &mut Engine<MemoryStore>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let sequence = engine.sequence();
        engine.scan(&[], None, sequence, usize::MAX, false).unwrap()
    }

    /// Serves every want of `walk` from `leader` (as the replica's protocol would) until the
    /// walk is done; returns how many blocks were fetched.
    fn sync(
        walk: &mut Walk,
        follower: &mut MemoryStore,
        leader: &mut MemoryStore,
        stop_after: Option<u64>,
    ) -> u64 {
        let mut fetched = 0;
        let mut wants = Vec::new();
        let mut block = vec![0; BLOCK];
        loop {
            wants.clear();
            let done = walk.poll(follower, &mut wants, 16).unwrap();
            if done {
                return fetched;
            }
            assert!(!wants.is_empty(), "a walk that is not done wants something");
            for want in wants.drain(..) {
                leader
                    .read_block(want.reference.address, &mut block)
                    .unwrap();
                assert!(walk.arrived(follower, want, &block).unwrap());
                fetched += 1;
                if stop_after == Some(fetched) {
                    return fetched;
                }
            }
        }
    }

    fn install(follower: MemoryStore, walk: &Walk, checkpoint: Checkpoint) -> Engine<MemoryStore> {
        let mut follower = follower;
        if follower.block_count() < walk.free_count() {
            follower.grow(walk.free_count()).unwrap();
        }
        Engine::open(follower, Options::small(), Some(checkpoint)).unwrap()
    }

    #[test]
    fn an_empty_grid_fetches_every_block_and_opens_the_leaders_state() {
        let (mut leader, checkpoint) = filled(2000, 0);
        let expected = pairs(&mut leader);
        let mut follower = MemoryStore::new(BLOCK, 8, 1 << 16);
        let mut walk = Walk::new(Some(checkpoint.manifest), Options::small().levels);
        let fetched = sync(&mut walk, &mut follower, leader.store_mut(), None);
        let stats = walk.stats();
        assert_eq!(stats.local, 0, "an empty grid holds nothing");
        assert_eq!((stats.wanted, stats.arrived), (fetched, fetched));
        let mut installed = install(follower, &walk, checkpoint);
        assert_eq!(pairs(&mut installed), expected);
        assert_eq!(installed.sequence(), leader.sequence());
        // The leader's grid holds every fetched block: the walk fetched exactly the tree.
        assert!(fetched > 50, "{fetched} blocks");
        assert!(fetched <= leader.blocks_in_use(), "{fetched} blocks");
    }

    #[test]
    fn a_copy_of_the_grid_fetches_nothing_and_damage_fetches_only_what_rotted() {
        let (mut leader, checkpoint) = filled(2000, 0);
        let copy = |leader: &mut Engine<MemoryStore>| {
            let count = leader.store().block_count();
            let mut store = MemoryStore::new(BLOCK, count, 1 << 16);
            let mut block = vec![0; BLOCK];
            for address in 0..count {
                leader.store_mut().read_block(address, &mut block).unwrap();
                store.write_block(address, &block).unwrap();
            }
            store.sync().unwrap();
            store
        };
        let levels = Options::small().levels;
        let mut whole = copy(&mut leader);
        let mut walk = Walk::new(Some(checkpoint.manifest), levels);
        assert_eq!(sync(&mut walk, &mut whole, leader.store_mut(), None), 0);
        assert!(walk.stats().local > 50);

        let mut damaged = copy(&mut leader);
        for address in [3, 17, 40, 41] {
            damaged.damage(address, 8 * 100 + 3);
        }
        let mut walk = Walk::new(Some(checkpoint.manifest), levels);
        let fetched = sync(&mut walk, &mut damaged, leader.store_mut(), None);
        assert!(fetched <= 4, "fetched {fetched} for 4 damaged blocks");
        let expected = pairs(&mut leader);
        assert_eq!(pairs(&mut install(damaged, &walk, checkpoint)), expected);
    }

    #[test]
    fn a_walk_resumes_after_a_crash_fetching_only_what_was_not_synced() {
        let (mut leader, checkpoint) = filled(3000, 1);
        let levels = Options::small().levels;
        let mut follower = MemoryStore::new(BLOCK, 8, 1 << 16);
        let mut walk = Walk::new(Some(checkpoint.manifest), levels);
        let first = sync(&mut walk, &mut follower, leader.store_mut(), Some(60));
        follower.sync().unwrap();
        let mut walk = Walk::new(Some(checkpoint.manifest), levels);
        sync(&mut walk, &mut follower, leader.store_mut(), Some(20));
        follower.crash(7); // the 20 unsynced blocks are lost or torn
        let mut walk = Walk::new(Some(checkpoint.manifest), levels);
        let rest = sync(&mut walk, &mut follower, leader.store_mut(), None);
        assert!(walk.stats().local >= first, "synced blocks are kept");
        let mut full = Walk::new(Some(checkpoint.manifest), levels);
        let total = sync(
            &mut full,
            &mut MemoryStore::new(BLOCK, 8, 1 << 16),
            leader.store_mut(),
            None,
        );
        assert!(rest <= total - first, "{rest} of {total} after {first}");
        let expected = pairs(&mut leader);
        assert_eq!(pairs(&mut install(follower, &walk, checkpoint)), expected);
    }

    #[test]
    fn a_later_checkpoint_of_the_same_leader_fetches_what_changed() {
        let (mut leader, first) = filled(3000, 0);
        let levels = Options::small().levels;
        let mut follower = MemoryStore::new(BLOCK, 8, 1 << 16);
        let mut walk = Walk::new(Some(first.manifest), levels);
        let all = sync(&mut walk, &mut follower, leader.store_mut(), None);
        follower.sync().unwrap();
        // A few more writes: a flush and maybe a compaction; most tables are unchanged.
        for i in 0..40u64 {
            let sequence = leader.sequence() + 1;
            let key = format!("new{i:04}");
            let write = Write {
                key: key.as_bytes(),
                value: Some(b"v"),
            };
            leader.apply(sequence, &[write]).unwrap();
        }
        let second = leader.checkpoint().unwrap();
        leader.checkpoint_durable();
        let mut walk = Walk::new(Some(second.manifest), levels);
        let delta = sync(&mut walk, &mut follower, leader.store_mut(), None);
        assert!(
            delta < all / 2,
            "{delta} of {all} blocks for a small change"
        );
        let expected = pairs(&mut leader);
        assert_eq!(pairs(&mut install(follower, &walk, second)), expected);
    }

    #[test]
    fn a_block_that_is_not_the_one_wanted_is_refused_unwritten() {
        let (mut leader, checkpoint) = filled(500, 0);
        let mut follower = MemoryStore::new(BLOCK, 8, 1 << 16);
        let mut walk = Walk::new(Some(checkpoint.manifest), Options::small().levels);
        let mut wants = Vec::new();
        walk.poll(&mut follower, &mut wants, 16).unwrap();
        let want = wants[0];
        let mut block = vec![0; BLOCK];
        let address = want.reference.address;
        leader.store_mut().read_block(address, &mut block).unwrap();
        let writes = follower.counters.writes;
        let mut flipped = block.clone();
        flipped[grid::HEADER_SIZE + 1] ^= 4;
        assert!(!walk.arrived(&mut follower, want, &flipped).unwrap());
        let wrong_kind = Want {
            kind: BlockKind::Data,
            ..want
        };
        assert!(!walk.arrived(&mut follower, wrong_kind, &block).unwrap());
        let elsewhere = Want {
            reference: BlockRef {
                address: address + 1,
                ..want.reference
            },
            ..want
        };
        assert!(!walk.arrived(&mut follower, elsewhere, &block).unwrap());
        assert_eq!(follower.counters.writes, writes, "nothing written");
        // Trimmed of its zero padding, the right block is taken.
        let size = u32::from_le_bytes(block[8..12].try_into().unwrap()) as usize;
        let trimmed = &block[..grid::HEADER_SIZE + size];
        assert!(walk.arrived(&mut follower, want, trimmed).unwrap());
        assert!(!walk.arrived(&mut follower, want, trimmed).unwrap(), "once");
    }

    #[test]
    fn the_empty_state_needs_nothing() {
        let mut walk = Walk::new(None, 3);
        let mut wants = Vec::new();
        let mut store = MemoryStore::new(BLOCK, 8, 64);
        assert!(walk.poll(&mut store, &mut wants, 16).unwrap());
        assert!(wants.is_empty());
    }
}
