//! The storage every state machine of the core shares: an LSM engine in the grid, its
//! checkpoints, and the walk that takes in a peer's checkpoint (state sync).
//!
//! A checkpoint is the tree's manifest, so its cost follows what changed, not the data's size.
//! The engine is deterministic (`Engine::make_deterministic`): replicas that applied the same log
//! hold the same blocks at each checkpoint, and a state sync fetches only what differs.

use super::{Grid, StateError};
use crate::config::Config;
use crate::lsm::sync::{Walk, WalkStats, Want};
use crate::lsm::tree::KeyValue;
use crate::lsm::{self, BlockStore, Engine, Write};

pub struct LsmState {
    engine: Engine<Grid>,
    /// A peer's checkpoint being taken in (state sync).
    sync: Option<Walk>,
    /// The digest of the live pairs, kept as writes change them (`track_digest`): a reference
    /// state checked after every write (the simulator's) cannot afford a walk each time.
    tracked: Option<u64>,
}

/// The bytes naming a checkpoint: a marker, then the LSM checkpoint (or nothing when empty).
const CHECKPOINT_EMPTY: u8 = 0;
const CHECKPOINT_LSM: u8 = 1;

/// The LSM checkpoint a state machine's checkpoint bytes name (None: the empty state).
fn decode_checkpoint(bytes: &[u8]) -> Result<Option<lsm::Checkpoint>, StateError> {
    match bytes.split_first() {
        None | Some((&CHECKPOINT_EMPTY, [])) => Ok(None),
        Some((&CHECKPOINT_LSM, rest)) if rest.len() == lsm::Checkpoint::ENCODED_SIZE => {
            let checkpoint =
                lsm::Checkpoint::decode(rest).ok_or(StateError::Decode("checkpoint"))?;
            Ok(Some(checkpoint))
        }
        _ => Err(StateError::Decode("unknown checkpoint form")),
    }
}

impl LsmState {
    /// An empty state over `grid`.
    pub fn new(config: &Config, grid: Grid) -> LsmState {
        let mut engine =
            Engine::open(grid, config.lsm.clone(), None).expect("an empty engine opens");
        // Replicas at one checkpoint index hold the same blocks: a state sync fetches only
        // what differs.
        engine
            .make_deterministic()
            .expect("an empty engine has no manifest to read");
        if config.planted_bug == Some(crate::config::PlantedBug::FreeOnDurable) {
            engine.plant_free_on_durable();
        }
        LsmState {
            engine,
            sync: None,
            tracked: None,
        }
    }

    pub fn engine(&mut self) -> &mut Engine<Grid> {
        &mut self.engine
    }

    /// The current value of `key`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.engine.get(key)?)
    }

    /// Applies writes at the engine's next sequence, as one atomic batch.
    pub fn write(&mut self, writes: &[Write]) -> Result<(), StateError> {
        self.track(writes)?;
        let sequence = self.engine.sequence() + 1;
        self.engine.apply(sequence, writes)?;
        Ok(())
    }

    /// Up to `limit` live pairs from `start` on, in key order, at the current sequence.
    pub fn scan(&mut self, start: &[u8], limit: usize) -> Result<Vec<KeyValue>, StateError> {
        self.range(start, None, limit, false)
    }

    /// Up to `limit` live pairs with keys in `[start, end)` (no `end`: to the last key), in key
    /// order or, `reverse`, from the end down, at the current sequence.
    pub fn range(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, StateError> {
        let sequence = self.engine.sequence();
        Ok(self.engine.scan(start, end, sequence, limit, reverse)?)
    }

    /// Every live pair at the current sequence.
    pub fn all_pairs(&mut self) -> Result<Vec<KeyValue>, StateError> {
        let sequence = self.engine.sequence();
        Ok(self.engine.scan(&[], None, sequence, usize::MAX, false)?)
    }

    pub fn marks(&self, marks: &mut crate::marks::Marks) {
        use crate::marks::Mark;
        let stats = self.engine.stats();
        marks.hit_n(Mark::MemtableFlush, stats.flushes);
        for (level, n) in stats.compactions_into.iter().enumerate() {
            marks.hit_n(Mark::compaction_into(level + 1), *n);
        }
    }

    pub fn checkpoint(&mut self, out: &mut Vec<u8>) -> Result<(), StateError> {
        assert!(self.sync.is_none(), "no checkpoint of a state being synced");
        let checkpoint = self.engine.checkpoint()?;
        out.push(CHECKPOINT_LSM);
        out.extend_from_slice(&checkpoint.encode());
        Ok(())
    }

    pub fn checkpoint_durable(&mut self) {
        self.engine.checkpoint_durable();
    }

    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.sync = None;
        self.tracked = None; // another state: walk it again when asked
        let checkpoint = decode_checkpoint(bytes)?;
        self.engine.reopen(checkpoint)?;
        Ok(())
    }

    pub fn sync_begin(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let checkpoint = decode_checkpoint(bytes)?;
        let levels = self.engine.options().levels;
        self.sync = Some(Walk::new(checkpoint.map(|c| c.manifest), levels));
        Ok(())
    }

    pub fn sync_poll(&mut self, wants: &mut Vec<Want>, max: usize) -> Result<bool, StateError> {
        let walk = self.sync.as_mut().expect("a sync in progress");
        Ok(walk.poll(self.engine.store_mut(), wants, max)?)
    }

    pub fn sync_block(&mut self, want: Want, bytes: &[u8]) -> Result<bool, StateError> {
        let walk = self.sync.as_mut().expect("a sync in progress");
        Ok(walk.arrived(self.engine.store_mut(), want, bytes)?)
    }

    pub fn sync_stats(&self) -> WalkStats {
        self.sync.as_ref().map(Walk::stats).unwrap_or_default()
    }

    pub fn sync_finish(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let walk = self.sync.take().expect("a sync in progress");
        assert!(walk.is_done(), "a sync finishes with every block in place");
        let store = self.engine.store_mut();
        if store.block_count() < walk.free_count() {
            store.grow(walk.free_count()).map_err(lsm::Error::from)?;
        }
        store
            .sync()
            .map_err(|e| lsm::Error::from(lsm::GridError::Write(e)))?;
        self.restore(bytes)
    }

    pub fn serve_block(&mut self, want: Want, out: &mut Vec<u8>) -> bool {
        let store = self.engine.store_mut();
        let address = want.reference.address;
        if address >= store.block_count() {
            return false;
        }
        out.resize(store.block_size(), 0);
        if store.read_block(address, out).is_err() {
            return false;
        }
        match lsm::grid::open(out, want.kind, want.reference) {
            Ok(payload) => {
                let len = lsm::grid::HEADER_SIZE + payload.len();
                out.truncate(len);
                true
            }
            Err(_) => false,
        }
    }

    pub fn digest(&mut self) -> Result<u64, StateError> {
        if let Some(sum) = self.tracked {
            return Ok(sum);
        }
        let pairs = self.all_pairs()?;
        let pairs = pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        Ok(crate::digest::pairs_digest(pairs))
    }
}

impl LsmState {
    /// From here on, keeps the digest up to date on every write (a point read per key written),
    /// so that [`LsmState::digest`] costs nothing. For a reference state, not a replica's.
    pub fn track_digest(&mut self) -> Result<(), StateError> {
        self.tracked = None;
        self.tracked = Some(self.digest()?);
        Ok(())
    }

    /// Moves the tracked digest over `writes`, which are about to apply (the last write to a key
    /// wins, as in the engine).
    fn track(&mut self, writes: &[Write]) -> Result<(), StateError> {
        let Some(mut sum) = self.tracked else {
            return Ok(());
        };
        let mut after = std::collections::BTreeMap::new();
        for write in writes {
            after.insert(write.key, write.value);
        }
        for (key, value) in after {
            if let Some(old) = self.engine.get(key)? {
                sum = sum.wrapping_sub(crate::digest::pair_hash(key, &old));
            }
            if let Some(value) = value {
                sum = sum.wrapping_add(crate::digest::pair_hash(key, value));
            }
        }
        self.tracked = Some(sum);
        Ok(())
    }
}

/// The storage half of [`StateMachine`](crate::state_machine::StateMachine) for a state machine
/// whose [`LsmState`] is the field `$field`: checkpoints, restore, state sync, digest, marks.
#[macro_export]
macro_rules! lsm_storage_methods {
    ($field:ident) => {
        fn checkpoint(
            &mut self,
            out: &mut Vec<u8>,
        ) -> Result<(), $crate::state_machine::StateError> {
            self.$field.checkpoint(out)
        }

        fn checkpoint_durable(&mut self) {
            self.$field.checkpoint_durable()
        }

        fn restore(&mut self, bytes: &[u8]) -> Result<(), $crate::state_machine::StateError> {
            self.$field.restore(bytes)
        }

        fn sync_begin(&mut self, bytes: &[u8]) -> Result<(), $crate::state_machine::StateError> {
            self.$field.sync_begin(bytes)
        }

        fn sync_poll(
            &mut self,
            wants: &mut Vec<$crate::lsm::sync::Want>,
            max: usize,
        ) -> Result<bool, $crate::state_machine::StateError> {
            self.$field.sync_poll(wants, max)
        }

        fn sync_block(
            &mut self,
            want: $crate::lsm::sync::Want,
            bytes: &[u8],
        ) -> Result<bool, $crate::state_machine::StateError> {
            self.$field.sync_block(want, bytes)
        }

        fn sync_stats(&self) -> $crate::lsm::sync::WalkStats {
            self.$field.sync_stats()
        }

        fn sync_finish(&mut self, bytes: &[u8]) -> Result<(), $crate::state_machine::StateError> {
            self.$field.sync_finish(bytes)
        }

        fn serve_block(&mut self, want: $crate::lsm::sync::Want, out: &mut Vec<u8>) -> bool {
            self.$field.serve_block(want, out)
        }

        fn digest(&mut self) -> Result<u64, $crate::state_machine::StateError> {
            self.$field.digest()
        }

        fn marks(&self, marks: &mut $crate::marks::Marks) {
            self.$field.marks(marks)
        }
    };
}
