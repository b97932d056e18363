//! The journal: the WAL's write path and the state of the ring.
//!
//! Entries move through a pipeline, tracked by five indices (each <= the one before):
//!
//! ```text
//! head        last entry appended (encoded into a pipeline buffer)
//! submitted   last entry whose write was submitted
//! written     last entry whose write is durable
//! committed   last entry whose redundant header is durable: acknowledged and applied
//! checkpoint  last entry covered by the durable checkpoint; slots up to it may be reused
//! ```
//!
//! Group commit: while one batch of entry writes is in flight, new entries accumulate; when it
//! completes, the next batch (up to `batch_max` entries) goes out at once. Redundant headers are
//! written only for entries whose own write is durable — the rule the recovery decision table
//! (see [`super::recovery`]) relies on to tell a torn entry from a corrupt one. The header write of
//! one batch overlaps the entry write of the next, so in steady state each batch costs one device
//! flush.
//!
//! All buffers are allocated in [`Journal::new`]; appending and writing do not allocate.

use crate::checksum::Checksum;
use crate::config::{Config, Layout, PlantedBug, Zone};
use crate::io::{IoId, IoKind, Storage};
use crate::wal::header::{EntryHeader, Operation, HEADER_SIZE};
use crate::wal::recovery::{Decision, Recovery};

/// Why an entry could not be appended now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The pipeline is full: retry once writes complete.
    PipelineFull,
    /// The ring is full up to the checkpoint: retry once a checkpoint completes.
    RingFull,
    /// The body exceeds the largest entry.
    TooLarge,
}

pub struct Journal {
    layout: Layout,
    cluster: u64,
    batch_max: u64,
    bug: Option<PlantedBug>,
    /// Encoded entries `committed + 1 ..= head` live at `buffers[index % buffers.len()]`.
    buffers: Vec<Box<[u8]>>,
    /// The headers ring as it is (or is being made) durable on disk.
    headers: Box<[u8]>,
    checkpoint: u64,
    head: u64,
    head_checksum: Checksum,
    submitted: u64,
    written: u64,
    headers_submitted: u64,
    committed: u64,
    committed_checksum: Checksum,
    entry_writes_in_flight: u32,
    header_writes_in_flight: u32,
    /// The `written` index the header writes in flight will make committed.
    header_target: u64,
    header_write_seq: u64,
}

impl Journal {
    pub fn new(config: &Config, cluster: u64) -> Journal {
        let layout = Layout::new(config);
        let pipeline = 3 * config.batch_max as usize;
        Journal {
            layout,
            cluster,
            batch_max: config.batch_max as u64,
            bug: config.planted_bug,
            buffers: (0..pipeline)
                .map(|_| vec![0u8; layout.wal_slot_size as usize].into_boxed_slice())
                .collect(),
            headers: vec![0u8; layout.zone_size(Zone::WalHeaders) as usize].into_boxed_slice(),
            checkpoint: 0,
            head: 0,
            head_checksum: 0,
            submitted: 0,
            written: 0,
            headers_submitted: 0,
            committed: 0,
            committed_checksum: 0,
            entry_writes_in_flight: 0,
            header_writes_in_flight: 0,
            header_target: 0,
            header_write_seq: 0,
        }
    }

    /// Sets the ring's state after recovery: the log is `checkpoint + 1 ..= recovery.head`, all of
    /// it durable, and `headers` is the rebuilt headers ring (see [`Journal::rebuild_headers`]).
    pub fn restore(&mut self, checkpoint: u64, recovery: &Recovery, headers: &[u8]) {
        assert!(
            recovery.faulty.is_empty(),
            "a faulty log is repaired before it is restored"
        );
        let head_checksum = recovery.head_checksum.expect("intact log has a known head");
        self.checkpoint = checkpoint;
        self.head = recovery.head;
        self.submitted = recovery.head;
        self.written = recovery.head;
        self.headers_submitted = recovery.head;
        self.committed = recovery.head;
        self.head_checksum = head_checksum;
        self.committed_checksum = head_checksum;
        self.headers.copy_from_slice(headers);
    }

    /// The headers ring to write after recovery: the header of every entry in the log (so that
    /// recovered entries become provably durable before they are applied), zeros elsewhere.
    pub fn rebuild_headers(
        layout: &Layout,
        checkpoint: u64,
        recovery: &Recovery,
        entries: &[u8],
        out: &mut [u8],
    ) {
        out.fill(0);
        for index in checkpoint + 1..=recovery.head {
            let decision = recovery.decision(checkpoint, index);
            assert!(matches!(decision, Decision::Clean | Decision::FixHeader));
            let slot = layout.slot_of(index);
            let entry = super::recovery::slot_bytes(layout, entries, slot);
            let target = Self::header_range(layout, slot);
            out[target].copy_from_slice(&entry[..HEADER_SIZE]);
        }
    }

    fn header_range(layout: &Layout, slot: u64) -> std::ops::Range<usize> {
        let start = (layout.header_sector_of(slot) * layout.sector_size) as usize
            + (slot % layout.headers_per_sector) as usize * HEADER_SIZE;
        start..start + HEADER_SIZE
    }

    pub fn headers_image(&self) -> &[u8] {
        &self.headers
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    pub fn committed_checksum(&self) -> Checksum {
        self.committed_checksum
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// Whether every appended entry is committed and no write is in flight.
    pub fn is_idle(&self) -> bool {
        self.head == self.committed
            && self.entry_writes_in_flight == 0
            && self.header_writes_in_flight == 0
    }

    /// How many more entries fit in the ring before a checkpoint must free slots.
    pub fn ring_free(&self) -> u64 {
        self.layout.wal_slot_count - (self.head - self.checkpoint)
    }

    /// Records a durable checkpoint: slots up to `index` may be overwritten.
    pub fn set_checkpoint(&mut self, index: u64) {
        assert!(index >= self.checkpoint && index <= self.committed);
        self.checkpoint = index;
    }

    /// Encodes a new entry at `head + 1` into the pipeline. The body is the concatenation of
    /// `body_parts`. Nothing is written until [`Journal::flush`].
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        operation: Operation,
        term: u64,
        timestamp: u64,
        client: u64,
        request: u64,
        body_parts: &[&[u8]],
    ) -> Result<u64, AppendError> {
        let size: usize = body_parts.iter().map(|p| p.len()).sum();
        if HEADER_SIZE + size > self.layout.wal_slot_size as usize {
            return Err(AppendError::TooLarge);
        }
        if self.head - self.committed >= self.buffers.len() as u64 {
            return Err(AppendError::PipelineFull);
        }
        if self.ring_free() == 0 {
            return Err(AppendError::RingFull);
        }
        let index = self.head + 1;
        let buffer_count = self.buffers.len() as u64;
        let buffer = &mut self.buffers[(index % buffer_count) as usize];
        let mut at = HEADER_SIZE;
        for part in body_parts {
            buffer[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        let body = &buffer[HEADER_SIZE..at];
        let header = EntryHeader::new(
            operation,
            self.cluster,
            index,
            term,
            timestamp,
            client,
            request,
            self.head_checksum,
            body,
        );
        header.encode(&mut buffer[..HEADER_SIZE]);
        self.head = index;
        self.head_checksum = header.checksum;
        Ok(index)
    }

    /// An entry in the pipeline (appended, not yet overwritten by a later one).
    pub fn entry(&self, index: u64) -> (EntryHeader, &[u8]) {
        assert!(index <= self.head && self.head - index < self.buffers.len() as u64);
        let buffer = &self.buffers[(index % self.buffers.len() as u64) as usize];
        let header = EntryHeader::decode(buffer).expect("pipeline entries are valid");
        assert_eq!(header.index, index);
        (
            header,
            &buffer[HEADER_SIZE..HEADER_SIZE + header.size as usize],
        )
    }

    /// Whether an entry from `client` with `request` is appended but not yet committed.
    pub fn in_pipeline(&self, client: u64, request: u64) -> bool {
        (self.committed + 1..=self.head).any(|index| {
            let (header, _) = self.entry(index);
            header.client == client && header.request == request
        })
    }

    /// Submits whatever can be written now: the next batch of entries, and the redundant headers
    /// of entries already durable.
    pub fn flush<S: Storage>(&mut self, storage: &mut S) {
        if self.entry_writes_in_flight == 0 && self.head > self.submitted {
            let end = self.head.min(self.submitted + self.batch_max);
            for index in self.submitted + 1..=end {
                let buffer = &self.buffers[(index % self.buffers.len() as u64) as usize];
                let size = u32::from_le_bytes(buffer[64..68].try_into().unwrap()) as u64;
                let len = self.layout.sectors_for(HEADER_SIZE as u64 + size) as usize;
                let offset = self.layout.entry_offset(self.layout.slot_of(index));
                storage.submit_write(IoId::new(IoKind::WalEntry, index), offset, &buffer[..len]);
            }
            self.entry_writes_in_flight = (end - self.submitted) as u32;
            self.submitted = end;
            if self.bug == Some(PlantedBug::AckBeforeDurable) {
                self.mark_committed(end);
            }
        }
        if self.header_writes_in_flight == 0 && self.written > self.headers_submitted {
            self.submit_headers(storage);
        }
    }

    fn submit_headers<S: Storage>(&mut self, storage: &mut S) {
        let first = self.headers_submitted + 1;
        let last = self.written;
        for index in first..=last {
            let (header, _) = self.entry(index);
            let range = Self::header_range(&self.layout, self.layout.slot_of(index));
            header.encode(&mut self.headers[range]);
        }
        // The slots of first..=last form one or two contiguous runs (the ring may wrap).
        let slot_first = self.layout.slot_of(first);
        let slot_last = self.layout.slot_of(last);
        let runs: [(u64, u64); 2] = if slot_first <= slot_last {
            [(slot_first, slot_last), (1, 0)]
        } else {
            [(slot_first, self.layout.wal_slot_count - 1), (0, slot_last)]
        };
        let mut writes = 0;
        for (from, to) in runs.into_iter().filter(|(from, to)| from <= to) {
            let sector_from = self.layout.header_sector_of(from);
            let sector_to = self.layout.header_sector_of(to);
            let start = (sector_from * self.layout.sector_size) as usize;
            let end = ((sector_to + 1) * self.layout.sector_size) as usize;
            self.header_write_seq += 1;
            storage.submit_write(
                IoId::new(IoKind::WalHeaders, self.header_write_seq),
                self.layout.header_sector_offset(sector_from),
                &self.headers[start..end],
            );
            writes += 1;
        }
        self.header_writes_in_flight = writes;
        self.header_target = last;
        self.headers_submitted = last;
    }

    /// An entry write completed (is durable).
    pub fn on_entry_written(&mut self) {
        assert!(self.entry_writes_in_flight > 0);
        self.entry_writes_in_flight -= 1;
        if self.entry_writes_in_flight == 0 {
            self.written = self.submitted;
        }
    }

    /// A header write completed. Returns the new committed index when the batch is complete.
    pub fn on_headers_written(&mut self) -> Option<u64> {
        assert!(self.header_writes_in_flight > 0);
        self.header_writes_in_flight -= 1;
        if self.header_writes_in_flight > 0 {
            return None;
        }
        let target = self.header_target;
        if target > self.committed {
            self.mark_committed(target);
        }
        Some(self.committed)
    }

    fn mark_committed(&mut self, index: u64) {
        assert!(index <= self.head && index > self.committed);
        let (header, _) = self.entry(index);
        self.committed_checksum = header.checksum;
        self.committed = index;
    }
}
