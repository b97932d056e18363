//! Simulated storage: one data file in memory, IO that completes out of order after a random
//! latency, and the fault model of DESIGN.md.
//!
//! - **Crash** ([`SimStorage::crash`]): every write not yet completed is lost, fully applied, or
//!   torn per sector (each sector keeps its old bytes, takes the new ones, or becomes garbage).
//!   Pending reads vanish.
//! - **Latent faults**: a sector marked faulty returns a read error or a bit-flipped copy on every
//!   read (so a retry does not fix it) until it is overwritten.
//!   The damage is one bit, several bits, a whole sector of garbage or a zeroed sector, fixed
//!   per sector.
//! - **Misdirected writes**: a write lands at another sector-aligned offset of the same zone; its
//!   intended location keeps its old bytes. **Misdirected reads** return another place of the
//!   same zone, once (a retry may read the right place).
//! - **Write errors**: a write fails (EIO or ENOSPC) and lands nowhere.
//! - **Stalls**: an IO now and then takes far longer than the rest (up to `stall_max` ticks).
//!
//! Where faults may strike is decided by [`FaultAtlas`]: the simulator keeps each run within what
//! the design promises to survive, or, in a "fatal" run, checks that damage beyond it is detected
//! and named rather than silently used. Every persistently damaged sector is remembered
//! ([`SimStorage::damaged`]) so that a replica's corruption report can be checked against the
//! truth.

use crate::prng::{Ppm, Prng};
use std::collections::BTreeSet;
use ziggy_core::embedded::EmbeddedStorage;
use ziggy_core::storage_contract::{Completion, ContractStorage};
use ziggy_core::{IoId, Layout, ReadError, Storage, WriteError, Zone};

/// Which zones may suffer which faults in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultAtlas {
    /// Zones that may hold latent (read) faults.
    pub latent: BTreeSet<Zone>,
    /// Zones whose writes may be misdirected.
    pub misdirect: BTreeSet<Zone>,
    /// Zones whose in-flight writes may tear at a crash.
    pub tear: BTreeSet<Zone>,
}

impl FaultAtlas {
    pub fn none() -> FaultAtlas {
        FaultAtlas {
            latent: BTreeSet::new(),
            misdirect: BTreeSet::new(),
            tear: BTreeSet::new(),
        }
    }
}

/// The fault probabilities of a run (drawn per seed: swarm testing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageFaults {
    pub atlas: FaultAtlas,
    /// Per sector of a write in flight at a crash: the chance that it tears.
    pub tear: Ppm,
    /// Per write: the chance that it is misdirected (within the atlas).
    pub misdirect: Ppm,
    /// Of latent faults: the chance that one reads as an error rather than as flipped bits.
    pub latent_error: Ppm,
    /// The most ticks an IO takes to complete.
    pub latency_max: u64,
    /// Per LSM grid block read: the chance that the block has rotted (a bit flipped for good).
    pub grid_rot: Ppm,
    /// Per read: the chance that it returns another place of its zone (within the atlas's
    /// misdirect zones).
    pub misdirect_read: Ppm,
    /// Per write: the chance that it fails with an error (EIO or ENOSPC) and lands nowhere.
    pub write_error: Ppm,
    /// Per IO: the chance that it stalls, completing after up to `stall_max` ticks.
    pub stall: Ppm,
    pub stall_max: u64,
}

impl StorageFaults {
    pub fn none() -> StorageFaults {
        StorageFaults {
            atlas: FaultAtlas::none(),
            tear: Ppm::NEVER,
            misdirect: Ppm::NEVER,
            latent_error: Ppm::NEVER,
            latency_max: 1,
            grid_rot: Ppm::NEVER,
            misdirect_read: Ppm::NEVER,
            write_error: Ppm::NEVER,
            stall: Ppm::NEVER,
            stall_max: 1,
        }
    }
}

#[derive(Clone, Debug)]
enum Pending {
    Read {
        id: IoId,
        offset: u64,
        len: usize,
    },
    Write {
        id: IoId,
        target: u64,
        data: Vec<u8>,
        /// An injected write error: the write lands nowhere and completes with it.
        error: Option<WriteError>,
        /// Whether the error was already reported at submission (see `take_write_error`).
        reported: bool,
    },
}

#[derive(Clone, Debug)]
struct InFlight {
    ready_at: u64,
    seq: u64,
    io: Pending,
}

/// Counters for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub reads: u64,
    pub writes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub torn_sectors: u64,
    pub lost_writes: u64,
    pub misdirected: u64,
    pub latent_injected: u64,
    pub latent_hits: u64,
    pub misdirected_reads: u64,
    /// Redundant-header sectors damaged (latent, or a misdirected write's source or target).
    pub header_faults: u64,
    pub write_errors: u64,
    pub stalls: u64,
}

pub struct SimStorage {
    layout: Layout,
    disk: Vec<u8>,
    in_flight: Vec<InFlight>,
    latent: BTreeSet<u64>,
    /// Whether latent damage may read as zeros in the WAL rings: not where both rings rot
    /// (fixed at creation: sectors damaged then stay damaged when the faults stop).
    wal_zeros: bool,
    damaged: BTreeSet<u64>,
    faults: StorageFaults,
    prng: Prng,
    now: u64,
    seq: u64,
    pub stats: StorageStats,
}

impl SimStorage {
    pub fn new(layout: Layout, faults: StorageFaults, prng: Prng) -> SimStorage {
        SimStorage {
            disk: vec![0; layout.total_size() as usize],
            layout,
            in_flight: Vec::new(),
            latent: BTreeSet::new(),
            wal_zeros: !(faults.atlas.latent.contains(&Zone::WalHeaders)
                && faults.atlas.latent.contains(&Zone::WalEntries)),
            damaged: BTreeSet::new(),
            faults,
            prng,
            now: 0,
            seq: 0,
            stats: StorageStats::default(),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Writes bytes straight to the durable image (formatting, test setup).
    pub fn write_durable(&mut self, offset: u64, data: &[u8]) {
        self.disk[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    }

    pub fn read_durable(&self, offset: u64, len: usize) -> &[u8] {
        &self.disk[offset as usize..offset as usize + len]
    }

    pub fn set_faults(&mut self, faults: StorageFaults) {
        self.faults = faults;
    }

    pub fn pending(&self) -> usize {
        self.in_flight.len()
    }

    /// Sectors that were ever persistently damaged by an injected fault.
    pub fn damaged(&self) -> &BTreeSet<u64> {
        &self.damaged
    }

    /// Whether any sector of `offset .. offset + len` was persistently damaged.
    pub fn damaged_within(&self, offset: u64, len: u64) -> bool {
        let sector = self.layout.sector_size;
        let first = offset / sector;
        let last = (offset + len).div_ceil(sector);
        self.damaged.range(first..last).next().is_some()
    }

    fn check_aligned(&self, offset: u64, len: u64) {
        let sector = self.layout.sector_size;
        assert_eq!(offset % sector, 0, "unaligned IO offset {offset}");
        assert_eq!(len % sector, 0, "unaligned IO length {len}");
        assert!(len > 0, "empty IO");
        assert!(
            offset + len <= self.layout.total_size(),
            "IO past the end of the data file"
        );
    }

    fn latency(&mut self) -> u64 {
        if self.prng.chance(self.faults.stall) {
            self.stats.stalls += 1;
            return self.prng.range(1, self.faults.stall_max.max(1));
        }
        self.prng.range(1, self.faults.latency_max.max(1))
    }

    /// Advances time and returns the IO completions now due, in completion order.
    pub fn advance(&mut self, now: u64) -> Vec<Completion> {
        self.now = now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut keep = Vec::with_capacity(self.in_flight.len());
        for io in self.in_flight.drain(..) {
            if io.ready_at <= now {
                due.push(io);
            } else {
                keep.push(io);
            }
        }
        self.in_flight = keep;
        due.sort_by_key(|io| (io.ready_at, io.seq));
        due.into_iter().map(|io| self.complete(io.io)).collect()
    }

    fn complete(&mut self, io: Pending) -> Completion {
        match io {
            Pending::Write {
                id,
                error: Some(error),
                ..
            } => Completion::Write {
                id,
                result: Err(error),
            },
            Pending::Write {
                id,
                target,
                data,
                error: None,
                ..
            } => {
                self.land(target, &data);
                Completion::Write { id, result: Ok(()) }
            }
            Pending::Read { id, offset, len } => {
                let from = self.misdirect_source(offset, len as u64);
                Completion::Read {
                    id,
                    result: self.read_now(from, len),
                }
            }
        }
    }

    /// Writes `data` to the disk image, clearing latent faults of the sectors it covers.
    fn land(&mut self, offset: u64, data: &[u8]) {
        self.disk[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        let sector = self.layout.sector_size;
        for s in offset / sector..(offset + data.len() as u64) / sector {
            self.latent.remove(&s);
        }
    }

    fn read_now(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, ReadError> {
        let mut data = self.disk[offset as usize..offset as usize + len].to_vec();
        let sector = self.layout.sector_size;
        let first = offset / sector;
        let last = (offset + len as u64) / sector;
        let hits: Vec<u64> = self.latent.range(first..last).copied().collect();
        for s in hits {
            self.stats.latent_hits += 1;
            // Whether the fault reads as an error or as flipped bits is fixed per sector, and
            // the flipped bit is derived from the sector number: retries see the same damage.
            let mut local = Prng::new(s ^ 0x001a_7e47);
            if local.chance(self.faults.latent_error) {
                return Err(ReadError::Io);
            }
            let start = ((s - first) * sector) as usize;
            let zone = self.layout.zone_of(s * sector).expect("inside the file").0;
            // Zeros read as "never written" in both WAL rings: beside rot of the other copy that
            // is damage no decision can see (the rings have no checksummed reserved headers
            // yet), so a replica whose headers and entries both rot never reads zeros there.
            let wal = matches!(zone, Zone::WalHeaders | Zone::WalEntries);
            let zeros = !wal || self.wal_zeros;
            corrupt_sector(&mut local, &mut data[start..start + sector as usize], zeros);
        }
        Ok(data)
    }

    /// A crash: every write in flight is lost, applied, or torn per sector; reads vanish.
    pub fn crash(&mut self) {
        let in_flight = std::mem::take(&mut self.in_flight);
        let sector = self.layout.sector_size as usize;
        for io in in_flight {
            let Pending::Write {
                target,
                data,
                error: None,
                ..
            } = io.io
            else {
                continue;
            };
            let zone = self.layout.zone_of(target).expect("inside the file").0;
            let may_tear = self.faults.atlas.tear.contains(&zone);
            let whole = self.prng.bool();
            for (k, chunk) in data.chunks(sector).enumerate() {
                let offset = target + (k * sector) as u64;
                if may_tear && self.prng.chance(self.faults.tear) {
                    self.stats.torn_sectors += 1;
                    // A redundant-header sector tears into its old or its new bytes, never
                    // garbage (sector-atomic writes, as TigerBeetle assumes): garbage there is
                    // damage, which recovery must not take for a torn write.
                    let shapes = if zone == Zone::WalHeaders { 1 } else { 2 };
                    match self.prng.range(0, shapes) {
                        0 => {}
                        1 => self.land(offset, chunk),
                        _ => {
                            let mut garbage = vec![0u8; sector];
                            self.prng.fill(&mut garbage);
                            self.land(offset, &garbage);
                        }
                    }
                } else if whole {
                    self.land(offset, chunk);
                } else {
                    self.stats.lost_writes += 1;
                }
            }
        }
    }

    /// A crash of the process alone (the embedded database's): the OS keeps every write it was
    /// handed, whole; reads in flight vanish.
    pub fn process_crash(&mut self) {
        for io in std::mem::take(&mut self.in_flight) {
            if let Pending::Write {
                target,
                data,
                error: None,
                ..
            } = io.io
            {
                self.land(target, &data);
            }
        }
    }

    /// Marks `sector` latently faulty (a fault the simulator aims, within the atlas).
    pub fn inject_latent_at(&mut self, sector: u64) {
        self.count_header_fault(sector);
        self.latent.insert(sector);
        self.damaged.insert(sector);
        self.stats.latent_injected += 1;
    }

    /// Marks a random sector of a random zone of the atlas as latently faulty. Returns the sector.
    pub fn inject_latent(&mut self) -> Option<u64> {
        let zones: Vec<Zone> = self.faults.atlas.latent.iter().copied().collect();
        if zones.is_empty() {
            return None;
        }
        let zone = zones[self.prng.index(zones.len())];
        let sector = self.layout.sector_size;
        let start = self.layout.zone_start(zone) / sector;
        let count = self.layout.zone_size(zone) / sector;
        let s = start + self.prng.range(0, count - 1);
        // At most one superblock copy may be faulty at a time: the fault model keeps the newest
        // version readable.
        if zone == Zone::Superblock && self.latent.range(start..start + count).next().is_some() {
            return None;
        }
        self.count_header_fault(s);
        self.latent.insert(s);
        self.damaged.insert(s);
        self.stats.latent_injected += 1;
        Some(s)
    }

    /// Where a read really reads: its own place, or (misdirected) another place of its zone,
    /// which the replica must take for damage there.
    fn misdirect_source(&mut self, offset: u64, len: u64) -> u64 {
        // Not the redundant headers: recovery reads them once, and a misread header beside a
        // torn entry is indistinguishable from rot of an acknowledged one (a single replica
        // would halt on a transient fault; a retry of the read is not built yet).
        let zone = self.layout.zone_of(offset).expect("inside the file").0;
        if zone == Zone::WalHeaders {
            return offset;
        }
        let chance = self.faults.misdirect_read;
        let Some(source) = self.elsewhere(offset, len, chance) else {
            return offset;
        };
        self.stats.misdirected_reads += 1;
        // What the replica read there is wrong, as if the sectors were damaged: a report naming
        // them is explained.
        self.mark_damaged(offset, len);
        source
    }

    fn misdirect_target(&mut self, offset: u64, len: u64) -> u64 {
        let Some(target) = self.elsewhere(offset, len, self.faults.misdirect) else {
            return offset;
        };
        self.stats.misdirected += 1;
        self.count_header_fault(offset / self.layout.sector_size);
        // Both the intended location (which keeps stale bytes) and the target are damaged.
        self.mark_damaged(offset, len);
        self.mark_damaged(target, len);
        target
    }

    /// With `chance`, and where the atlas lets IO of `offset`'s zone go astray: another
    /// sector-aligned place of the same zone for `len` bytes.
    fn elsewhere(&mut self, offset: u64, len: u64, chance: Ppm) -> Option<u64> {
        let zone = self.layout.zone_of(offset).expect("inside the file").0;
        if !self.faults.atlas.misdirect.contains(&zone) || !self.prng.chance(chance) {
            return None;
        }
        let sector = self.layout.sector_size;
        let size = self.layout.zone_size(zone);
        if len >= size {
            return None;
        }
        let place =
            self.layout.zone_start(zone) + self.prng.range(0, (size - len) / sector) * sector;
        (place != offset).then_some(place)
    }

    fn count_header_fault(&mut self, sector: u64) {
        let zone = self.layout.zone_of(sector * self.layout.sector_size);
        if zone.expect("inside the file").0 == Zone::WalHeaders {
            self.stats.header_faults += 1;
        }
    }

    /// From now on, no redundant-header sector is damaged (the fault budget is spent elsewhere).
    pub fn stop_header_faults(&mut self) {
        self.faults.atlas.latent.remove(&Zone::WalHeaders);
        self.faults.atlas.misdirect.remove(&Zone::WalHeaders);
    }

    fn mark_damaged(&mut self, offset: u64, len: u64) {
        let sector = self.layout.sector_size;
        self.damaged
            .extend((offset / sector)..(offset + len).div_ceil(sector));
    }
}

impl Storage for SimStorage {
    fn submit_read(&mut self, id: IoId, offset: u64, len: usize) {
        self.check_aligned(offset, len as u64);
        self.stats.reads += 1;
        self.stats.bytes_read += len as u64;
        self.seq += 1;
        let ready_at = self.now + self.latency();
        self.in_flight.push(InFlight {
            ready_at,
            seq: self.seq,
            io: Pending::Read { id, offset, len },
        });
    }

    fn submit_write(&mut self, id: IoId, offset: u64, data: &[u8]) {
        self.check_aligned(offset, data.len() as u64);
        self.stats.writes += 1;
        self.stats.bytes_written += data.len() as u64;
        self.seq += 1;
        let target = self.misdirect_target(offset, data.len() as u64);
        let error = self.prng.chance(self.faults.write_error).then(|| {
            self.stats.write_errors += 1;
            if self.prng.bool() {
                WriteError::Io
            } else {
                WriteError::NoSpace
            }
        });
        let ready_at = self.now + self.latency();
        self.in_flight.push(InFlight {
            ready_at,
            seq: self.seq,
            io: Pending::Write {
                id,
                target,
                data: data.to_vec(),
                error,
                reported: false,
            },
        });
    }
}

impl ContractStorage for SimStorage {
    fn complete_all(&mut self) -> Vec<Completion> {
        let far = self.now + self.faults.latency_max.max(self.faults.stall_max) + 1;
        self.advance(far)
    }
}

impl EmbeddedStorage for SimStorage {
    /// Completed writes are durable here already.
    fn barrier(&mut self) -> Result<(), WriteError> {
        Ok(())
    }

    /// A real file reports a failed `pwrite` at once: so does this, once per write.
    fn take_write_error(&mut self) -> Option<WriteError> {
        self.in_flight.iter_mut().find_map(|f| match &mut f.io {
            Pending::Write {
                error: Some(e),
                reported: reported @ false,
                ..
            } => {
                *reported = true;
                Some(*e)
            }
            _ => None,
        })
    }
}

/// A latent fault's damage to one sector, fixed by `local` (seeded from the sector): one bit,
/// a few bits, garbage or zeros.
fn corrupt_sector(local: &mut Prng, sector: &mut [u8], zeros: bool) {
    let bits = sector.len() as u64 * 8;
    let mut flip = |local: &mut Prng| {
        let bit = local.range(0, bits - 1);
        sector[(bit / 8) as usize] ^= 1 << (bit % 8);
    };
    match local.range(0, 99) {
        0..=49 => flip(local),
        50..=69 => {
            for _ in 0..local.range(2, 16) {
                flip(local);
            }
        }
        70..=84 => local.fill(sector),
        _ if zeros => sector.fill(0),
        _ => local.fill(sector),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ziggy_core::Config;

    fn storage(faults: StorageFaults) -> SimStorage {
        SimStorage::new(Layout::new(&Config::test()), faults, Prng::new(1))
    }

    #[test]
    fn passes_the_storage_contract() {
        let mut s = storage(StorageFaults::none());
        let size = s.layout().total_size();
        ziggy_core::storage_contract::check(&mut s, size, 512);
    }

    #[test]
    fn crash_tears_only_writes_in_flight() {
        let mut faults = StorageFaults::none();
        faults.atlas.tear.insert(Zone::WalEntries);
        faults.tear = Ppm::ALWAYS;
        let mut s = storage(faults);
        let offset = s.layout().zone_start(Zone::WalEntries);
        s.submit_write(IoId(1), offset, &[7u8; 512]);
        s.complete_all();
        s.submit_write(IoId(2), offset + 512, &[9u8; 512 * 8]);
        s.crash();
        assert_eq!(
            s.read_durable(offset, 512),
            &[7u8; 512][..],
            "completed write survives"
        );
        assert_eq!(s.pending(), 0);
        assert_eq!(s.stats.torn_sectors, 8);
    }

    #[test]
    fn latent_damage_takes_every_shape() {
        let mut shapes = BTreeSet::new();
        for seed in 0..200 {
            let mut sector = [0x5au8; 512];
            corrupt_sector(&mut Prng::new(seed), &mut sector, true);
            let flipped: u32 = sector.iter().map(|b| (b ^ 0x5a).count_ones()).sum();
            shapes.insert(match flipped {
                1 => "one bit",
                2..=16 => "a few bits",
                _ if sector == [0; 512] => "zeros",
                _ => "garbage",
            });
        }
        assert_eq!(shapes.len(), 4, "{shapes:?}");
    }

    #[test]
    fn failed_writes_land_nowhere_and_stalls_complete_late() {
        let mut faults = StorageFaults::none();
        faults.write_error = Ppm::ALWAYS;
        faults.stall = Ppm::ALWAYS;
        faults.stall_max = 1_000;
        let mut s = storage(faults);
        let offset = s.layout().zone_start(Zone::WalEntries);
        s.submit_write(IoId(1), offset, &[7u8; 512]);
        let completions = s.complete_all();
        assert!(matches!(
            completions[..],
            [Completion::Write { result: Err(_), .. }]
        ));
        assert_eq!(s.read_durable(offset, 512), &[0u8; 512][..]);
        assert_eq!((s.stats.write_errors, s.stats.stalls), (1, 1));
    }

    #[test]
    fn misdirected_reads_read_elsewhere_once() {
        let mut faults = StorageFaults::none();
        faults.atlas.misdirect.insert(Zone::WalEntries);
        faults.misdirect_read = Ppm::ALWAYS;
        let mut s = storage(faults);
        let offset = s.layout().zone_start(Zone::WalEntries);
        s.write_durable(offset, &[7u8; 512]);
        s.submit_read(IoId(1), offset, 512);
        let Completion::Read { result, .. } = s.complete_all().remove(0) else {
            panic!("a read")
        };
        assert_ne!(result.unwrap(), vec![7u8; 512]);
        assert!(
            s.damaged_within(offset, 512),
            "the misread place counts as damaged"
        );
        assert_eq!(
            s.read_durable(offset, 512),
            &[7u8; 512][..],
            "nothing changed"
        );
    }

    #[test]
    fn latent_faults_persist_until_overwritten() {
        let mut faults = StorageFaults::none();
        faults.atlas.latent.insert(Zone::WalHeaders);
        let mut s = storage(faults);
        let sector = s.inject_latent().unwrap();
        let offset = sector * 512;
        s.write_durable(offset, &[0x5a; 512]);
        let mut reads = Vec::new();
        for id in 0..2 {
            s.submit_read(IoId(id), offset, 512);
            match s.complete_all().remove(0) {
                Completion::Read {
                    result: Ok(data), ..
                } => reads.push(data),
                other => panic!("{other:?}"),
            }
        }
        assert_ne!(reads[0], vec![0x5a; 512], "the sector reads damaged");
        assert_eq!(reads[0], reads[1], "a retry sees the same damage");
        s.submit_write(IoId(5), offset, &[0u8; 512]);
        s.complete_all();
        s.submit_read(IoId(6), offset, 512);
        assert_eq!(
            s.complete_all()[0],
            Completion::Read {
                id: IoId(6),
                result: Ok(vec![0u8; 512])
            }
        );
        assert!(s.damaged_within(offset, 512));
    }
}

/// A replica's LSM grid in the simulator: the node keeps it across crashes, each replica
/// instance holds a handle. Writes are durable at the engine's `sync`; a crash loses or tears
/// (per 512-byte sector) the ones since. Under `rot`, a block read may find one bit flipped
/// for good (latent corruption), which the engine's checksums must catch.
#[derive(Clone)]
pub struct SimGrid(std::rc::Rc<std::cell::RefCell<GridDisk>>);

pub struct GridDisk {
    store: ziggy_core::lsm::MemoryStore,
    rot: Ppm,
    prng: Prng,
    /// Blocks rotted so far.
    pub rotted: u64,
}

impl SimGrid {
    pub fn new(block_size: usize, rot: Ppm, prng: Prng) -> SimGrid {
        let store = ziggy_core::lsm::MemoryStore::new(block_size, 64, 1 << 16);
        SimGrid(std::rc::Rc::new(std::cell::RefCell::new(GridDisk {
            store,
            rot,
            prng,
            rotted: 0,
        })))
    }

    /// A handle for a new replica instance.
    pub fn handle(&self) -> ziggy_core::state_machine::Grid {
        Box::new(self.clone())
    }

    /// Power loss: unsynced writes are lost or torn, as `seed` decides.
    pub fn crash(&self, seed: u64) {
        self.0.borrow_mut().store.crash(seed);
    }

    pub fn counters(&self) -> ziggy_core::lsm::grid::IoCounters {
        self.0.borrow().store.counters
    }

    pub fn rotted(&self) -> u64 {
        self.0.borrow().rotted
    }
}

impl ziggy_core::lsm::BlockStore for SimGrid {
    fn block_size(&self) -> usize {
        self.0.borrow().store.block_size()
    }

    fn block_count(&self) -> u64 {
        self.0.borrow().store.block_count()
    }

    fn grow(&mut self, count: u64) -> Result<(), ziggy_core::lsm::GridError> {
        self.0.borrow_mut().store.grow(count)
    }

    fn read_block(&mut self, address: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let disk = &mut *self.0.borrow_mut();
        if disk.prng.chance(disk.rot) {
            let bit = disk.prng.index(buf.len() * 8);
            disk.store.damage(address, bit);
            disk.rotted += 1;
        }
        disk.store.read_block(address, buf)
    }

    fn write_block(&mut self, address: u64, data: &[u8]) -> Result<(), ziggy_core::WriteError> {
        self.0.borrow_mut().store.write_block(address, data)
    }

    fn sync(&mut self) -> Result<(), ziggy_core::WriteError> {
        self.0.borrow_mut().store.sync()
    }
}
