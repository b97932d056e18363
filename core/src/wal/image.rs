//! In-memory images of the two WAL rings, written exactly as the journal writes them: for tests,
//! property tests, the fuzzer and offline tools.

use crate::checksum::Checksum;
use crate::config::{Config, Layout, Zone};
use crate::wal::header::{EntryHeader, Operation, HEADER_SIZE};
use crate::wal::recovery::{self, Recovery, RecoveryInput};

pub struct RingImage {
    pub layout: Layout,
    pub cluster: u64,
    pub checkpoint_index: u64,
    pub checkpoint_checksum: Checksum,
    pub headers: Vec<u8>,
    pub entries: Vec<u8>,
    /// Every entry appended, in order.
    pub appended: Vec<EntryHeader>,
    /// The embedded database's stage proof (see `wal::stage`).
    pub proof: Option<EntryHeader>,
}

impl RingImage {
    pub fn new(
        config: &Config,
        cluster: u64,
        checkpoint_index: u64,
        checkpoint_checksum: Checksum,
    ) -> RingImage {
        let layout = Layout::new(config);
        RingImage {
            layout,
            cluster,
            checkpoint_index,
            checkpoint_checksum,
            headers: vec![0; layout.zone_size(Zone::WalHeaders) as usize],
            entries: vec![0; layout.zone_size(Zone::WalEntries) as usize],
            appended: Vec::new(),
            proof: None,
        }
    }

    /// The index the next append gets.
    pub fn next_index(&self) -> u64 {
        self.checkpoint_index + self.appended.len() as u64 + 1
    }

    /// Builds the next entry of the chain without writing it anywhere.
    pub fn make(&self, term: u64, body: &[u8]) -> EntryHeader {
        let parent = self
            .appended
            .last()
            .map_or(self.checkpoint_checksum, |h| h.checksum);
        let index = self.next_index();
        EntryHeader::new(
            Operation(20),
            self.cluster,
            index,
            term,
            index * 10,
            7,
            index,
            parent,
            body,
        )
    }

    /// Appends an entry whose write and redundant header write both completed (acknowledged).
    pub fn append(&mut self, body: &[u8]) -> EntryHeader {
        let header = self.append_entry_only(body);
        self.write_header(&header);
        header
    }

    /// Appends an entry whose write completed but whose redundant header was not yet written.
    pub fn append_entry_only(&mut self, body: &[u8]) -> EntryHeader {
        let header = self.make(1, body);
        self.write_entry(&header, body);
        self.appended.push(header);
        header
    }

    /// Writes an entry (header + body) into its slot.
    pub fn write_entry(&mut self, header: &EntryHeader, body: &[u8]) {
        let slot = self.layout.slot_of(header.index);
        let range = self.entry_range(slot);
        let target = &mut self.entries[range];
        target.fill(0);
        header.encode(&mut target[..HEADER_SIZE]);
        target[HEADER_SIZE..HEADER_SIZE + body.len()].copy_from_slice(body);
    }

    /// Writes a redundant header into the headers ring.
    pub fn write_header(&mut self, header: &EntryHeader) {
        let slot = self.layout.slot_of(header.index);
        let range = self.header_range(slot);
        header.encode(&mut self.headers[range]);
    }

    pub fn entry_range(&self, slot: u64) -> std::ops::Range<usize> {
        let start = (slot * self.layout.wal_slot_size) as usize;
        start..start + self.layout.wal_slot_size as usize
    }

    pub fn header_range(&self, slot: u64) -> std::ops::Range<usize> {
        let start = (self.layout.header_sector_of(slot) * self.layout.sector_size) as usize
            + (slot % self.layout.headers_per_sector) as usize * HEADER_SIZE;
        start..start + HEADER_SIZE
    }

    /// The bytes of the entry slot of `index`.
    pub fn entry_bytes_mut(&mut self, index: u64) -> &mut [u8] {
        let range = self.entry_range(self.layout.slot_of(index));
        &mut self.entries[range]
    }

    /// The bytes of the redundant header of `index`.
    pub fn header_bytes_mut(&mut self, index: u64) -> &mut [u8] {
        let range = self.header_range(self.layout.slot_of(index));
        &mut self.headers[range]
    }

    pub fn input(&self) -> RecoveryInput<'_> {
        RecoveryInput {
            layout: &self.layout,
            cluster: self.cluster,
            checkpoint_index: self.checkpoint_index,
            checkpoint_checksum: self.checkpoint_checksum,
            headers: &self.headers,
            entries: &self.entries,
            proof: self.proof,
            read_through: u64::MAX,
        }
    }

    pub fn recover(&self) -> Recovery {
        recovery::recover(&self.input())
    }
}
