//! One configuration struct sizes everything: the zones of the data file, the journal ring, the
//! client table and every buffer the core allocates at start.
//!
//! Two presets exist: [`Config::test`] keeps the ring tiny (so that the simulator wraps the WAL and
//! checkpoints constantly) and [`Config::production`] sizes for a real disk. A [`Layout`] is derived
//! from a config: the byte offset and size of each zone of the data file.

use crate::sessions::REPLY_HEADER_SIZE;
use crate::wal::header::HEADER_SIZE;

/// Sizes and limits of one replica. Every buffer is derived from these at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The unit of atomicity and alignment of storage IO, in bytes (a power of two, >= 512).
    pub sector_size: u32,
    /// How many copies of the superblock the data file keeps (>= 2).
    pub superblock_copies: u32,
    /// How many entries the WAL ring holds (>= 2 * `batch_max`).
    pub wal_slot_count: u32,
    /// The largest WAL entry, header included, in bytes (a multiple of `sector_size`).
    pub wal_entry_size_max: u32,
    /// How many client sessions the replica keeps (the oldest is evicted beyond this).
    pub clients_max: u32,
    /// The longest reply a session keeps for a retry of its last request (a write's reply).
    /// Each session's slot holds it with a 32-byte header, rounded up to whole sectors.
    pub reply_size_max: u32,
    /// The size of one grid block in bytes (a multiple of `sector_size`).
    pub grid_block_size: u32,
    /// How many blocks the grid holds.
    pub grid_block_count: u32,
    /// The most entries written by one group commit.
    pub batch_max: u32,
    /// The longest key, in bytes.
    pub key_size_max: u32,
    /// The longest value, in bytes.
    pub value_size_max: u32,
    /// The base election timeout in ticks (each timeout is drawn from `[t, 2t)`); also the
    /// leader's lease: followers ignore campaigns while they heard from a leader this recently.
    pub election_ticks: u64,
    /// How often a leader sends heartbeats (and retransmits), in ticks.
    pub heartbeat_ticks: u64,
    /// The most entries one Append message carries.
    pub append_max: u32,
    /// Ticks per second of the clock that drives the replica (timestamps are derived from ticks).
    pub tick_ns: u64,
    /// The LSM tree that holds the state (its blocks are `grid_block_size` bytes).
    pub lsm: crate::lsm::Options,
    /// A bug planted on purpose, to prove that the simulator's checkers can fail. Never set it
    /// outside of tests.
    pub planted_bug: Option<PlantedBug>,
}

/// Bugs that can be switched on to show that the simulator catches them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Acknowledge a write as durable as soon as it is submitted, before it is.
    AckBeforeDurable,
    /// Commit an entry once the leader alone holds it, without a quorum.
    CommitWithoutQuorum,
    /// Vote (and campaign) despite a faulty entry in the log, as if the log were whole.
    VoteDespiteFaulty,
    /// Skip the duplicate checks of client sessions: a retried request may be applied twice.
    ApplyTwice,
    /// Answer reads from the local state without the log, trusting leadership without
    /// CheckQuorum: a deposed leader serves stale reads.
    LocalReads,
    /// No eviction check: a request whose session was evicted opens a new session and applies
    /// (a retry of an applied request from an evicted client is applied twice).
    EvictedSessionReplay,
    /// Truncation clears the discarded entries' redundant headers in memory only: after a
    /// crash, recovery finds them on disk and brings a discarded suffix back.
    StaleTruncate,
    /// State sync writes the leader's blocks without first making the `state_sync` superblock
    /// flag durable: a crash mid-sync restores the old checkpoint over a half-overwritten grid.
    SyncWithoutFlag,
    /// Recovery reads a rotten redundant header beside a rotten entry (above the durable bound)
    /// as a torn write, and cuts the entry: an acknowledged entry is lost (decision-table row 12
    /// decided as row 7).
    TornAnywhere,
    /// The LSM frees what a checkpoint released once the checkpoint is durable (a moment of IO
    /// timing) instead of when the next one starts: replicas at one checkpoint index hold
    /// different blocks, and a state sync fetches everything.
    FreeOnDurable,
}

impl PlantedBug {
    pub const NAMES: [&'static str; 10] = [
        "ack-before-durable",
        "commit-without-quorum",
        "vote-despite-faulty",
        "apply-twice",
        "local-reads",
        "evicted-session-replay",
        "stale-truncate",
        "sync-without-flag",
        "torn-anywhere",
        "free-on-durable",
    ];

    pub fn parse(name: &str) -> Option<PlantedBug> {
        match name {
            "ack-before-durable" => Some(PlantedBug::AckBeforeDurable),
            "commit-without-quorum" => Some(PlantedBug::CommitWithoutQuorum),
            "vote-despite-faulty" => Some(PlantedBug::VoteDespiteFaulty),
            "apply-twice" => Some(PlantedBug::ApplyTwice),
            "local-reads" => Some(PlantedBug::LocalReads),
            "evicted-session-replay" => Some(PlantedBug::EvictedSessionReplay),
            "stale-truncate" => Some(PlantedBug::StaleTruncate),
            "sync-without-flag" => Some(PlantedBug::SyncWithoutFlag),
            "torn-anywhere" => Some(PlantedBug::TornAnywhere),
            "free-on-durable" => Some(PlantedBug::FreeOnDurable),
            _ => None,
        }
    }
}

/// A configuration that cannot work, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Tiny sizes for the simulator: a few dozen WAL slots so that the ring wraps constantly.
    pub fn test() -> Config {
        Config {
            sector_size: 512,
            superblock_copies: 4,
            wal_slot_count: 32,
            wal_entry_size_max: 1024,
            clients_max: 8,
            reply_size_max: 512 - 32,
            grid_block_size: 4096,
            grid_block_count: 64,
            batch_max: 4,
            key_size_max: 64,
            value_size_max: 256,
            election_ticks: 100,
            heartbeat_ticks: 10,
            append_max: 8,
            tick_ns: 10_000_000,
            lsm: crate::lsm::Options::small(),
            planted_bug: None,
        }
    }

    /// Sizes for a real disk.
    pub fn production() -> Config {
        Config {
            sector_size: 4096,
            superblock_copies: 4,
            wal_slot_count: 1024,
            wal_entry_size_max: 64 * 1024,
            // A server's lanes keep sessions few (64 per replica); each keeps a reply as large
            // as a value, so that a write answering with one (`GETDEL`) can be retried.
            clients_max: 256,
            reply_size_max: 64 * 1024 - 32,
            grid_block_size: 64 * 1024,
            grid_block_count: 4096,
            batch_max: 128,
            key_size_max: 1024,
            value_size_max: 60 * 1024,
            election_ticks: 100,
            heartbeat_ticks: 10,
            append_max: 64,
            tick_ns: 10_000_000,
            lsm: crate::lsm::Options {
                cache_blocks: 1024,
                ..crate::lsm::Options::production()
            },
            planted_bug: None,
        }
    }

    /// An embedded database's configuration: one process, no clients or peers; grid blocks of
    /// `grid_block_size` (four of them in the layout's grid zone for the checkpoint, the LSM
    /// grid grows after the layout), a WAL of `wal_slot_count` entries of `wal_entry_size` bytes.
    pub fn embedded(
        grid_block_size: u32,
        wal_slot_count: u32,
        wal_entry_size: u32,
        lsm: crate::lsm::Options,
    ) -> Config {
        let entry_max = crate::lsm::table::max_entry_size(grid_block_size as usize) as u32;
        let body_max = wal_entry_size.saturating_sub(HEADER_SIZE as u32 + 8);
        let key_size_max = (entry_max / 2).min(1024);
        Config {
            sector_size: 4096,
            superblock_copies: 4,
            wal_slot_count,
            wal_entry_size_max: wal_entry_size,
            clients_max: 1,
            reply_size_max: 4096 - 32,
            grid_block_size,
            grid_block_count: 4,
            // The pipeline (3 * batch_max) may hold three quarters of the ring unsynced.
            batch_max: (wal_slot_count / 4).max(1),
            key_size_max,
            value_size_max: entry_max.min(body_max).saturating_sub(key_size_max),
            election_ticks: 100,
            heartbeat_ticks: 10,
            append_max: 1,
            tick_ns: 10_000_000,
            lsm,
            planted_bug: None,
        }
    }

    /// Checks every relation the core relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |why: &str| Err(ConfigError(why.to_string()));
        if !self.sector_size.is_power_of_two() || self.sector_size < 512 {
            return fail("sector_size must be a power of two >= 512");
        }
        if self.superblock_copies < 2 || self.superblock_copies > 8 {
            return fail("superblock_copies must be between 2 and 8");
        }
        if self.batch_max == 0 {
            return fail("batch_max must be > 0");
        }
        if self.wal_slot_count < 4 * self.batch_max {
            return fail("wal_slot_count must be >= 4 * batch_max");
        }
        if !self.wal_entry_size_max.is_multiple_of(self.sector_size) {
            return fail("wal_entry_size_max must be a multiple of sector_size");
        }
        if !self.grid_block_size.is_multiple_of(self.sector_size) {
            return fail("grid_block_size must be a multiple of sector_size");
        }
        if self.grid_block_count < 4 || !self.grid_block_count.is_multiple_of(2) {
            return fail("grid_block_count must be even and >= 4");
        }
        if self.reply_size_max == 0 {
            return fail("reply_size_max must be > 0");
        }
        if self.clients_max == 0 {
            return fail("clients_max must be > 0");
        }
        if self.key_size_max == 0 || self.key_size_max > u16::MAX as u32 {
            return fail("key_size_max must be in 1..=65535");
        }
        let body_max = self.key_size_max as u64 + self.value_size_max as u64 + 8;
        if HEADER_SIZE as u64 + body_max > self.wal_entry_size_max as u64 {
            return fail("wal_entry_size_max must hold a header plus the largest key and value");
        }
        let entry_max = crate::lsm::table::max_entry_size(self.grid_block_size as usize);
        if self.key_size_max as usize + self.value_size_max as usize > entry_max {
            return fail("a grid block must hold the largest key plus the largest value");
        }
        if self.heartbeat_ticks == 0 || self.election_ticks < 2 * self.heartbeat_ticks {
            return fail("election_ticks must be >= 2 * heartbeat_ticks > 0");
        }
        if self.append_max == 0 {
            return fail("append_max must be > 0");
        }
        if self.tick_ns == 0 {
            return fail("tick_ns must be > 0");
        }
        Ok(())
    }

    /// The largest body (the bytes after the entry header) of a WAL entry.
    pub fn entry_body_max(&self) -> usize {
        self.wal_entry_size_max as usize - HEADER_SIZE
    }

    /// A fingerprint of everything that determines the on-disk layout, stored in the superblock so
    /// that a data file is never opened with a configuration that would misread it.
    pub fn layout_fingerprint(&self) -> u64 {
        let mut fields = vec![
            2, // the client-replies zone holds two halves
            self.sector_size as u64,
            self.superblock_copies as u64,
            self.wal_slot_count as u64,
            self.wal_entry_size_max as u64,
            self.clients_max as u64,
            self.grid_block_size as u64,
            self.grid_block_count as u64,
        ];
        // Reply slots of one sector were the only size before `reply_size_max`: files formatted
        // then (embedded databases among them) keep their fingerprint and still open.
        let reply_slot = Layout::new(self).reply_slot_size;
        if reply_slot != self.sector_size as u64 {
            fields.push(reply_slot);
        }
        let mut bytes = vec![0u8; 64.max(fields.len() * 8)];
        for (i, f) in fields.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&f.to_le_bytes());
        }
        let low = crate::checksum::checksum(&bytes) as u64;
        let high = crate::checksum::checksum_seeded(0x5a5a_5a5a, &bytes) as u64;
        (high << 32) | low
    }
}

/// The zones of the data file, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Zone {
    Superblock,
    WalHeaders,
    WalEntries,
    ClientReplies,
    Grid,
}

impl Zone {
    pub const ALL: [Zone; 5] = [
        Zone::Superblock,
        Zone::WalHeaders,
        Zone::WalEntries,
        Zone::ClientReplies,
        Zone::Grid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Zone::Superblock => "superblock",
            Zone::WalHeaders => "wal_headers",
            Zone::WalEntries => "wal_entries",
            Zone::ClientReplies => "client_replies",
            Zone::Grid => "grid",
        }
    }
}

/// Byte offsets and sizes of the zones of a data file, derived from a [`Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub sector_size: u64,
    pub superblock_copy_size: u64,
    pub superblock_copies: u64,
    pub wal_slot_count: u64,
    pub wal_slot_size: u64,
    pub headers_per_sector: u64,
    pub reply_slot_size: u64,
    pub clients_max: u64,
    pub grid_block_size: u64,
    pub grid_block_count: u64,
    starts: [u64; 5],
    sizes: [u64; 5],
}

impl Layout {
    pub fn new(config: &Config) -> Layout {
        let sector = config.sector_size as u64;
        let round = |n: u64| n.div_ceil(sector) * sector;
        let superblock_copy_size = sector;
        let headers_per_sector = sector / HEADER_SIZE as u64;
        let wal_slot_count = config.wal_slot_count as u64;
        let reply_slot_size = round(config.reply_size_max as u64 + REPLY_HEADER_SIZE as u64);
        let sizes = [
            superblock_copy_size * config.superblock_copies as u64,
            round(wal_slot_count.div_ceil(headers_per_sector) * sector),
            wal_slot_count * config.wal_entry_size_max as u64,
            // Two halves, paired with the grid's: a checkpoint's replies live beside its state.
            2 * reply_slot_size * config.clients_max as u64,
            config.grid_block_size as u64 * config.grid_block_count as u64,
        ];
        let mut starts = [0u64; 5];
        let mut offset = 0;
        for (i, size) in sizes.iter().enumerate() {
            starts[i] = offset;
            offset += size;
        }
        Layout {
            sector_size: sector,
            superblock_copy_size,
            superblock_copies: config.superblock_copies as u64,
            wal_slot_count,
            wal_slot_size: config.wal_entry_size_max as u64,
            headers_per_sector,
            reply_slot_size,
            clients_max: config.clients_max as u64,
            grid_block_size: config.grid_block_size as u64,
            grid_block_count: config.grid_block_count as u64,
            starts,
            sizes,
        }
    }

    pub fn zone_start(&self, zone: Zone) -> u64 {
        self.starts[zone as usize]
    }

    pub fn zone_size(&self, zone: Zone) -> u64 {
        self.sizes[zone as usize]
    }

    /// The total size of the data file.
    pub fn total_size(&self) -> u64 {
        self.starts[4] + self.sizes[4]
    }

    /// Which zone holds a byte offset, and the offset within it.
    pub fn zone_of(&self, offset: u64) -> Option<(Zone, u64)> {
        Zone::ALL.iter().find_map(|&zone| {
            let start = self.zone_start(zone);
            (offset >= start && offset < start + self.zone_size(zone))
                .then(|| (zone, offset - start))
        })
    }

    pub fn superblock_copy_offset(&self, copy: u64) -> u64 {
        assert!(copy < self.superblock_copies);
        self.zone_start(Zone::Superblock) + copy * self.superblock_copy_size
    }

    /// The slot of the ring that holds WAL entry `index`.
    pub fn slot_of(&self, index: u64) -> u64 {
        index % self.wal_slot_count
    }

    pub fn entry_offset(&self, slot: u64) -> u64 {
        assert!(slot < self.wal_slot_count);
        self.zone_start(Zone::WalEntries) + slot * self.wal_slot_size
    }

    /// The sector of the header ring that holds the redundant header of `slot`.
    pub fn header_sector_of(&self, slot: u64) -> u64 {
        assert!(slot < self.wal_slot_count);
        slot / self.headers_per_sector
    }

    pub fn header_sector_offset(&self, sector: u64) -> u64 {
        self.zone_start(Zone::WalHeaders) + sector * self.sector_size
    }

    pub fn header_sector_count(&self) -> u64 {
        self.zone_size(Zone::WalHeaders) / self.sector_size
    }

    /// The reply sector of client slot `client_slot` in half `area` of the client-replies zone.
    pub fn reply_offset(&self, area: u8, client_slot: u64) -> u64 {
        assert!(client_slot < self.clients_max && area < 2);
        self.reply_area_offset(area) + client_slot * self.reply_slot_size
    }

    /// The start of half `area` of the client-replies zone.
    pub fn reply_area_offset(&self, area: u8) -> u64 {
        self.zone_start(Zone::ClientReplies) + area as u64 * self.clients_max * self.reply_slot_size
    }

    /// The size of one half of the client-replies zone.
    pub fn reply_area_size(&self) -> u64 {
        self.clients_max * self.reply_slot_size
    }

    pub fn grid_block_offset(&self, address: u64) -> u64 {
        assert!(address < self.grid_block_count);
        self.zone_start(Zone::Grid) + address * self.grid_block_size
    }

    /// Rounds a byte count up to whole sectors.
    pub fn sectors_for(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.sector_size) * self.sector_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        Config::test().validate().unwrap();
        Config::production().validate().unwrap();
    }

    #[test]
    fn zones_are_contiguous_and_sector_aligned() {
        for config in [Config::test(), Config::production()] {
            let layout = Layout::new(&config);
            let mut expected = 0;
            for zone in Zone::ALL {
                assert_eq!(layout.zone_start(zone), expected);
                assert_eq!(layout.zone_start(zone) % layout.sector_size, 0);
                assert!(layout.zone_size(zone) > 0);
                expected += layout.zone_size(zone);
            }
            assert_eq!(layout.total_size(), expected);
            let last = layout.total_size() - 1;
            assert_eq!(layout.zone_of(last).unwrap().0, Zone::Grid);
            assert_eq!(layout.zone_of(layout.total_size()), None);
        }
    }

    #[test]
    fn invalid_configs_are_rejected_with_a_reason() {
        let mut config = Config::test();
        config.sector_size = 1000;
        assert!(config.validate().unwrap_err().0.contains("sector_size"));
        let mut config = Config::test();
        config.value_size_max = 1 << 20;
        assert!(config
            .validate()
            .unwrap_err()
            .0
            .contains("wal_entry_size_max"));
        let mut config = Config::test();
        config.wal_slot_count = 8;
        assert!(config.validate().is_err());
    }

    #[test]
    fn fingerprint_changes_with_layout() {
        let a = Config::test();
        let mut b = Config::test();
        b.wal_slot_count = 64;
        assert_ne!(a.layout_fingerprint(), b.layout_fingerprint());
        let mut c = Config::test();
        c.batch_max = 8; // not a layout field
        assert_eq!(a.layout_fingerprint(), c.layout_fingerprint());
    }

    #[test]
    fn reply_slots_of_one_sector_keep_the_fingerprint_of_older_files() {
        // The test config's fingerprint before `reply_size_max` existed (one-sector slots): a
        // file formatted by 59102e4 opens with this code.
        assert_eq!(Config::test().layout_fingerprint(), 0x302e_dca8_b53c_b655);
        let mut smaller = Config::test();
        smaller.reply_size_max = 100; // still one sector per slot: the same layout
        assert_eq!(
            smaller.layout_fingerprint(),
            Config::test().layout_fingerprint()
        );
        let mut larger = Config::test();
        larger.reply_size_max = 4096;
        assert_ne!(
            larger.layout_fingerprint(),
            Config::test().layout_fingerprint()
        );
        assert!(
            Layout::new(&larger).reply_slot_size > Layout::new(&Config::test()).reply_slot_size
        );
    }
}
