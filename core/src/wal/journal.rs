//! The journal: the WAL's write path, and the replicated log it holds.
//!
//! Entries move through a pipeline, tracked by indices (each <= the one before):
//!
//! ```text
//! head        last entry appended (by this replica as leader, or received from the leader)
//! submitted   last entry whose write was submitted
//! written     last entry whose write is durable
//! durable     last entry whose redundant header is durable too: safe to acknowledge
//! checkpoint  last entry covered by the durable checkpoint; slots up to it may be reused
//! ```
//!
//! Group commit: the replica gathers requests that arrive while an entry write is in flight into
//! one batch entry (see `wal::batch`), appended at the driver's next flush; several entry writes
//! may be in flight, and their completions are tracked per entry. Redundant headers are
//! written only for entries whose own write is durable — the rule the recovery decision table
//! (see [`super::recovery`]) relies on to tell a torn entry from a corrupt one. The header write of
//! one batch overlaps the entry write of the next, so in steady state each batch costs one device
//! flush.
//!
//! The whole ring is mirrored in memory (`checkpoint + 1 ..= head`), so a leader can send any entry
//! a follower lacks without reading the disk. A follower's uncommitted suffix can be truncated when
//! it conflicts with the leader's log. Entries that recovery found *faulty* (durable once, now
//! unreadable) stay in the log as holes until the leader's copy replaces them.
//!
//! All buffers are allocated in [`Journal::new`]; appending and writing do not allocate.

use crate::checksum::Checksum;
use crate::config::{Config, Layout, PlantedBug, Zone};
use crate::io::{IoId, IoKind, Storage};
use crate::wal::header::{EntryHeader, HeaderError, Operation, HEADER_SIZE};
use crate::wal::recovery::{Decision, Recovery};
use std::collections::BTreeSet;

/// Why an entry could not be appended now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The pipeline is full: retry once writes complete.
    PipelineFull,
    /// The ring is full up to the checkpoint: retry once a checkpoint completes.
    RingFull,
    /// The body exceeds the largest entry.
    TooLarge,
    /// A received entry does not verify, or does not follow the head.
    Invalid(HeaderError),
    /// A received entry is not chained to the head (its parent differs, or the head is faulty).
    OutOfChain,
}

/// A truncation must wait: a write to a slot it would reuse is still in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritesInFlight;

pub struct Journal {
    layout: Layout,
    cluster: u64,
    pipeline_max: u64,
    bug: Option<PlantedBug>,
    /// Encoded entries `checkpoint + 1 ..= head` live in slot `index % slot_count` of one
    /// buffer (one zeroed allocation: the OS maps its pages as they are first written).
    ring: Box<[u8]>,
    /// The headers ring as it is (or is being made) durable on disk.
    headers: Box<[u8]>,
    /// Indices in the log whose content is unknown (faulty on recovery, awaiting repair).
    faulty: BTreeSet<u64>,
    /// Holes filled from the leader's copy whose write is not yet submitted, or in flight.
    repairs_unsubmitted: BTreeSet<u64>,
    repairs_in_flight: BTreeSet<u64>,
    /// Entries whose write completed ahead of an earlier one still in flight.
    entries_landed: BTreeSet<u64>,
    checkpoint: u64,
    checkpoint_checksum: Checksum,
    checkpoint_term: u64,
    head: u64,
    submitted: u64,
    written: u64,
    headers_submitted: u64,
    /// The slots `cleared_after + 1 ..= cleared_through` a truncation cleared in memory but not
    /// yet on disk (`cleared_through` 0: none). Their zeroed header sectors are written, and
    /// durable, before any entry is written again: otherwise recovery would find the discarded
    /// entries' headers, current by index, beside new entries, and report a false hole or bring a
    /// discarded suffix back.
    cleared_after: u64,
    cleared_through: u64,
    /// Whether the header write in flight is such a clearing (it makes nothing more durable).
    clearing: bool,
    durable: u64,
    entry_writes_in_flight: u32,
    header_writes_in_flight: u32,
    /// The `written` index the header writes in flight will make durable.
    header_target: u64,
    header_write_seq: u64,
}

impl Journal {
    pub fn new(config: &Config, cluster: u64) -> Journal {
        let layout = Layout::new(config);
        Journal {
            layout,
            cluster,
            pipeline_max: 3 * config.batch_max as u64,
            bug: config.planted_bug,
            ring: vec![0u8; (layout.wal_slot_count * layout.wal_slot_size) as usize]
                .into_boxed_slice(),
            headers: vec![0u8; layout.zone_size(Zone::WalHeaders) as usize].into_boxed_slice(),
            faulty: BTreeSet::new(),
            repairs_unsubmitted: BTreeSet::new(),
            repairs_in_flight: BTreeSet::new(),
            entries_landed: BTreeSet::new(),
            checkpoint: 0,
            checkpoint_checksum: 0,
            checkpoint_term: 0,
            head: 0,
            submitted: 0,
            written: 0,
            headers_submitted: 0,
            cleared_after: 0,
            cleared_through: 0,
            clearing: false,
            durable: 0,
            entry_writes_in_flight: 0,
            header_writes_in_flight: 0,
            header_target: 0,
            header_write_seq: 0,
        }
    }

    /// Sets the log after recovery: `checkpoint + 1 ..= recovery.head`, all of it durable, from
    /// the entries ring as read; faulty entries become holes. `headers` is the rebuilt headers ring
    /// (see [`Journal::rebuild_headers`]).
    pub fn restore(
        &mut self,
        checkpoint: (u64, Checksum, u64),
        recovery: &Recovery,
        entries: &[u8],
        headers: &[u8],
    ) {
        self.set_anchor(checkpoint);
        for index in checkpoint.0 + 1..=recovery.head {
            let slot = self.layout.slot_of(index);
            let source = super::recovery::slot_bytes(&self.layout, entries, slot);
            self.slot_mut(slot).copy_from_slice(source);
        }
        self.faulty = recovery.faulty.iter().copied().collect();
        self.head = recovery.head;
        self.submitted = recovery.head;
        self.written = recovery.head;
        self.headers_submitted = recovery.head;
        self.durable = recovery.head;
        self.headers.copy_from_slice(headers);
    }

    fn set_anchor(&mut self, (index, checksum, term): (u64, Checksum, u64)) {
        self.checkpoint = index;
        self.checkpoint_checksum = checksum;
        self.checkpoint_term = term;
    }

    /// The headers ring to write after recovery: the header of every intact entry of the log (so
    /// that recovered entries become provably durable before they are acknowledged), the surviving
    /// redundant header of a faulty one (a hole header where none survived), zeros elsewhere.
    pub fn rebuild_headers(
        layout: &Layout,
        cluster: u64,
        checkpoint: u64,
        recovery: &Recovery,
        entries: &[u8],
        read_headers: &[u8],
        out: &mut [u8],
    ) {
        out.fill(0);
        for index in checkpoint + 1..=recovery.head {
            let slot = layout.slot_of(index);
            let target = Self::header_range(layout, slot);
            match recovery.decision(checkpoint, index) {
                Decision::Clean | Decision::FixHeader => {
                    let entry = super::recovery::slot_bytes(layout, entries, slot);
                    out[target].copy_from_slice(&entry[..HEADER_SIZE]);
                }
                Decision::Faulty => {
                    let header = &read_headers[target.clone()];
                    if matches!(EntryHeader::decode(header), Ok(h) if h.index == index) {
                        out[target].copy_from_slice(header);
                    } else {
                        EntryHeader::hole(cluster, index).encode(&mut out[target]);
                    }
                }
                other => unreachable!("{other:?} inside the log"),
            }
        }
    }

    fn slot_range(layout: &Layout, slot: u64) -> std::ops::Range<usize> {
        let size = layout.wal_slot_size as usize;
        slot as usize * size..(slot as usize + 1) * size
    }

    fn slot(&self, slot: u64) -> &[u8] {
        &self.ring[Self::slot_range(&self.layout, slot)]
    }

    fn slot_mut(&mut self, slot: u64) -> &mut [u8] {
        &mut self.ring[Self::slot_range(&self.layout, slot)]
    }

    fn header_range(layout: &Layout, slot: u64) -> std::ops::Range<usize> {
        let start = (layout.header_sector_of(slot) * layout.sector_size) as usize
            + (slot % layout.headers_per_sector) as usize * HEADER_SIZE;
        start..start + HEADER_SIZE
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// The last entry durable on this replica (entry and redundant header).
    pub fn durable(&self) -> u64 {
        self.durable
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// The first faulty index, if any entry awaits repair.
    pub fn first_faulty(&self) -> Option<u64> {
        self.faulty.first().copied()
    }

    pub fn is_faulty(&self, index: u64) -> bool {
        self.faulty.contains(&index)
    }

    /// Whether headers a truncation (or a reset) cleared in memory are not yet cleared on disk.
    pub fn clearing_pending(&self) -> bool {
        self.cleared_through > 0 || self.clearing
    }

    pub fn writes_in_flight(&self) -> bool {
        self.entry_writes_in_flight > 0
            || self.header_writes_in_flight > 0
            || !self.repairs_in_flight.is_empty()
            || !self.repairs_unsubmitted.is_empty()
    }

    /// How many more entries fit in the ring before a checkpoint must free slots.
    pub fn ring_free(&self) -> u64 {
        self.layout.wal_slot_count - (self.head - self.checkpoint)
    }

    /// Records a durable checkpoint: slots up to `index` may be overwritten.
    pub fn set_checkpoint(&mut self, index: u64, checksum: Checksum, term: u64) {
        assert!(index >= self.checkpoint && index <= self.durable);
        assert!(
            self.faulty.range(..=index).next().is_none(),
            "checkpoint past a hole"
        );
        self.set_anchor((index, checksum, term));
    }

    /// Empties the log and anchors it at a checkpoint received from a peer (state transfer).
    pub fn reset(&mut self, checkpoint: (u64, Checksum, u64)) -> Result<(), WritesInFlight> {
        if self.writes_in_flight() {
            return Err(WritesInFlight);
        }
        self.clear_headers(checkpoint.0);
        self.set_anchor(checkpoint);
        self.faulty.clear();
        self.head = checkpoint.0;
        self.submitted = checkpoint.0;
        self.written = checkpoint.0;
        self.headers_submitted = checkpoint.0;
        self.durable = checkpoint.0;
        Ok(())
    }

    /// Anchors the log at a checkpoint received from a peer. Entries after it are kept when they
    /// continue its chain; otherwise (a divergent or missing suffix) the log is emptied.
    pub fn rebase(&mut self, checkpoint: (u64, Checksum, u64)) -> Result<(), WritesInFlight> {
        if self.writes_in_flight() {
            return Err(WritesInFlight);
        }
        let (index, checksum, _) = checkpoint;
        // Holes at or before the checkpoint are covered by it.
        let continues = index < self.head
            && self
                .entry(index + 1)
                .is_some_and(|(next, _)| next.parent == checksum);
        if !continues {
            return self.reset(checkpoint);
        }
        // Equal: a replica that lost its state installs the checkpoint its log starts from.
        assert!(
            index >= self.checkpoint,
            "a transferred checkpoint is not older"
        );
        self.set_anchor(checkpoint);
        self.repairs_unsubmitted.retain(|&i| i > index);
        self.faulty.retain(|&i| i > index);
        self.durable = self.durable.max(index);
        Ok(())
    }

    /// The header checksum of entry `index` (the checkpoint's for the anchor); None when the
    /// index is outside the log or faulty.
    pub fn checksum_at(&self, index: u64) -> Option<Checksum> {
        self.header_at(index)
            .map(|h| h.checksum)
            .or_else(|| (index == self.checkpoint).then_some(self.checkpoint_checksum))
    }

    /// The header a faulty entry is known by: its surviving redundant header (recovery kept it),
    /// if any. `None` for intact entries and for holes whose header was lost with them.
    pub fn faulty_header(&self, index: u64) -> Option<EntryHeader> {
        if !self.faulty.contains(&index) {
            return None;
        }
        let range = Self::header_range(&self.layout, self.layout.slot_of(index));
        EntryHeader::decode(&self.headers[range])
            .ok()
            .filter(|h| h.index == index && h.cluster == self.cluster && !h.is_hole())
    }

    /// The term of entry `index` (the checkpoint's for the anchor).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.header_at(index)
            .map(|h| h.term)
            .or_else(|| (index == self.checkpoint).then_some(self.checkpoint_term))
    }

    fn header_at(&self, index: u64) -> Option<EntryHeader> {
        self.entry_bytes(index)
            .map(|bytes| EntryHeader::decode(bytes).expect("log entries are valid"))
    }

    /// The whole encoded entry (header and body) at `index`, if it is in the log and intact.
    pub fn entry_bytes(&self, index: u64) -> Option<&[u8]> {
        if index <= self.checkpoint || index > self.head || self.faulty.contains(&index) {
            return None;
        }
        let bytes = self.slot(self.layout.slot_of(index));
        let size = u32::from_le_bytes(bytes[64..68].try_into().unwrap()) as usize;
        Some(&bytes[..HEADER_SIZE + size])
    }

    /// An intact entry of the log: its header and body.
    pub fn entry(&self, index: u64) -> Option<(EntryHeader, &[u8])> {
        let bytes = self.entry_bytes(index)?;
        let header = EntryHeader::decode(bytes).expect("log entries are valid");
        debug_assert_eq!(header.index, index);
        Some((header, &bytes[HEADER_SIZE..]))
    }

    /// Whether a request is in the log after `after` (in a batch entry: client requests are
    /// only ever logged in batches).
    pub fn contains_request(&self, after: u64, id: super::batch::RequestId) -> bool {
        (after.max(self.checkpoint) + 1..=self.head).any(|index| {
            self.entry(index).is_some_and(|(h, body)| {
                h.operation == Operation::BATCH && super::batch::records(body).any(|r| r.id() == id)
            })
        })
    }

    /// Whether an entry appended now would be written at once (nothing queued or in flight):
    /// otherwise a leader gathers requests into one batch entry.
    pub fn writes_now(&self) -> bool {
        self.entry_writes_in_flight == 0 && self.head == self.submitted
    }

    fn has_room(&self) -> Result<(), AppendError> {
        if self.head - self.durable >= self.pipeline_max {
            return Err(AppendError::PipelineFull);
        }
        if self.ring_free() == 0 {
            return Err(AppendError::RingFull);
        }
        Ok(())
    }

    /// Encodes a new entry at `head + 1`. The body is the concatenation of `body_parts`.
    /// Nothing is written until [`Journal::flush`].
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
        self.has_room()?;
        let parent = self.checksum_at(self.head).ok_or(AppendError::OutOfChain)?;
        let index = self.head + 1;
        let slot = self.layout.slot_of(index) as usize;
        let buffer = &mut self.ring[Self::slot_range(&self.layout, slot as u64)];
        let mut at = HEADER_SIZE;
        for part in body_parts {
            buffer[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        let header = EntryHeader::new(
            operation,
            self.cluster,
            index,
            term,
            timestamp,
            client,
            request,
            parent,
            &buffer[HEADER_SIZE..at],
        );
        header.encode(&mut buffer[..HEADER_SIZE]);
        self.head = index;
        Ok(index)
    }

    /// Appends an entry received whole from the leader, after verifying it and its place in the
    /// chain. The bytes are stored as they are: replicas' WALs are byte-identical.
    pub fn append_entry(&mut self, bytes: &[u8]) -> Result<u64, AppendError> {
        let header = EntryHeader::decode(bytes).map_err(AppendError::Invalid)?;
        let end = HEADER_SIZE + header.size as usize;
        if end > bytes.len() || end > self.layout.wal_slot_size as usize {
            return Err(AppendError::Invalid(HeaderError::Checksum));
        }
        if crate::checksum::checksum(&bytes[HEADER_SIZE..end]) != header.body_checksum {
            return Err(AppendError::Invalid(HeaderError::Checksum));
        }
        if header.cluster != self.cluster || header.index != self.head + 1 {
            return Err(AppendError::OutOfChain);
        }
        if self.checksum_at(self.head) != Some(header.parent) {
            return Err(AppendError::OutOfChain);
        }
        self.has_room()?;
        let slot = self.layout.slot_of(header.index) as usize;
        self.slot_mut(slot as u64)[..end].copy_from_slice(&bytes[..end]);
        self.head = header.index;
        Ok(header.index)
    }

    /// Discards the entries after `after` (an uncommitted suffix that conflicts with the
    /// leader's log, or holes awaiting the leader's copies).
    pub fn truncate(&mut self, after: u64) -> Result<(), WritesInFlight> {
        assert!(
            after >= self.checkpoint,
            "never truncate into the checkpoint"
        );
        if after >= self.head {
            return Ok(());
        }
        if self.writes_in_flight() {
            return Err(WritesInFlight);
        }
        self.clear_headers(after);
        self.faulty.retain(|&index| index <= after);
        self.repairs_unsubmitted.retain(|&index| index <= after);
        self.head = after;
        self.submitted = self.submitted.min(after);
        self.written = self.written.min(after);
        self.headers_submitted = self.headers_submitted.min(after);
        self.durable = self.durable.min(after);
        Ok(())
    }

    /// Forgets the redundant headers of the entries after `after`, in memory at once and on disk
    /// with the next header write (see `cleared_through`).
    fn clear_headers(&mut self, after: u64) {
        let end = self.head.min(after + self.layout.wal_slot_count);
        for index in after + 1..=end {
            let range = Self::header_range(&self.layout, self.layout.slot_of(index));
            self.headers[range].fill(0);
        }
        if end > after && self.bug != Some(PlantedBug::StaleTruncate) {
            self.cleared_after = if self.cleared_through == 0 {
                after
            } else {
                self.cleared_after.min(after)
            };
            self.cleared_through = self.cleared_through.max(end);
        }
    }

    /// Fills a hole with the leader's copy of the entry, verified against its neighbours in the
    /// hash chain. Its write is submitted separately ([`Journal::next_repair_write`]).
    pub fn repair(&mut self, bytes: &[u8]) -> Result<u64, AppendError> {
        let header = EntryHeader::decode(bytes).map_err(AppendError::Invalid)?;
        let index = header.index;
        let end = HEADER_SIZE + header.size as usize;
        if end > bytes.len()
            || end > self.layout.wal_slot_size as usize
            || crate::checksum::checksum(&bytes[HEADER_SIZE..end]) != header.body_checksum
        {
            return Err(AppendError::Invalid(HeaderError::Checksum));
        }
        if header.cluster != self.cluster || !self.faulty.contains(&index) {
            return Err(AppendError::OutOfChain);
        }
        if self
            .checksum_at(index - 1)
            .is_some_and(|parent| parent != header.parent)
        {
            return Err(AppendError::OutOfChain);
        }
        if self
            .entry(index + 1)
            .is_some_and(|(child, _)| child.parent != header.checksum)
        {
            return Err(AppendError::OutOfChain);
        }
        let slot = self.layout.slot_of(index) as usize;
        self.slot_mut(slot as u64)[..end].copy_from_slice(&bytes[..end]);
        self.faulty.remove(&index);
        self.repairs_unsubmitted.insert(index);
        Ok(index)
    }

    /// The next repaired entry to write: its index and the sector-rounded length to write from
    /// its slot buffer ([`Journal::slot_buffer`]).
    pub fn next_repair_write(&mut self) -> Option<(u64, usize)> {
        let index = self.repairs_unsubmitted.pop_first()?;
        self.repairs_in_flight.insert(index);
        let len = self
            .entry_bytes(index)
            .expect("a repaired entry is intact")
            .len();
        Some((index, self.layout.sectors_for(len as u64) as usize))
    }

    pub fn slot_buffer(&self, slot: u64, len: usize) -> &[u8] {
        &self.slot(slot)[..len]
    }

    pub fn on_repair_written(&mut self, index: u64) {
        assert!(
            self.repairs_in_flight.remove(&index),
            "repair {index} was in flight"
        );
    }

    /// The lowest repaired entry not yet durable.
    pub fn first_repair_pending(&self) -> Option<u64> {
        let a = self.repairs_unsubmitted.first().copied();
        let b = self.repairs_in_flight.first().copied();
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Submits whatever can be written now: the next batch of entries, and the redundant headers
    /// of entries already durable.
    pub fn flush<S: Storage>(&mut self, storage: &mut S) {
        // Entries are written as soon as they are appended — the replica decides when to append
        // (at once when idle, else gathered into a batch entry at the driver's next flush), so
        // several entry writes may be in flight; completion is tracked per entry.
        if self.cleared_through > 0 {
            // A truncation's cleared headers go to disk before anything else.
            if self.header_writes_in_flight == 0 {
                self.submit_clearing(storage);
            }
            return;
        }
        if self.clearing {
            return;
        }
        if self.head > self.submitted {
            let end = self.head;
            for index in self.submitted + 1..=end {
                let bytes = self
                    .entry_bytes(index)
                    .expect("unwritten entries are intact");
                let len = self.layout.sectors_for(bytes.len() as u64) as usize;
                let slot = self.layout.slot_of(index);
                let buffer = &self.slot(slot)[..len];
                storage.submit_write(
                    IoId::new(IoKind::WalEntry, index),
                    self.layout.entry_offset(slot),
                    buffer,
                );
            }
            self.entry_writes_in_flight += (end - self.submitted) as u32;
            self.submitted = end;
            if self.bug == Some(PlantedBug::AckBeforeDurable) {
                self.durable = self.durable.max(end);
            }
        }
        if self.header_writes_in_flight == 0 && self.written > self.headers_submitted {
            self.submit_headers(storage);
        }
    }

    fn submit_headers<S: Storage>(&mut self, storage: &mut S) {
        let first = self.headers_submitted + 1;
        let last = self.written;
        debug_assert_eq!(self.cleared_through, 0, "clearing goes first");
        for index in first..=last {
            let slot = self.layout.slot_of(index);
            let range = Self::header_range(&self.layout, slot);
            let (head, rest) = (
                &self.ring[Self::slot_range(&self.layout, slot)][..HEADER_SIZE],
                &mut self.headers[range],
            );
            rest.copy_from_slice(head);
        }
        self.write_header_slots(storage, first, last);
        self.header_target = last;
        self.headers_submitted = last;
    }

    /// Writes the zeroed header sectors of the slots a truncation cleared.
    fn submit_clearing<S: Storage>(&mut self, storage: &mut S) {
        let (after, through) = (self.cleared_after, self.cleared_through);
        self.cleared_through = 0;
        self.clearing = true;
        self.write_header_slots(storage, after + 1, through);
    }

    /// Writes the header sectors holding the slots of indices `first..=through`.
    fn write_header_slots<S: Storage>(&mut self, storage: &mut S, first: u64, through: u64) {
        assert!(first <= through && through - first < self.layout.wal_slot_count);
        // The slots of first..=through form one or two contiguous runs (the ring may wrap).
        let slot_first = self.layout.slot_of(first);
        let slot_last = self.layout.slot_of(through);
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
    }

    /// An entry write completed (is durable).
    /// The write of entry `index` completed (is durable). `written` advances over the contiguous
    /// durable prefix only: a redundant header never vouches for an entry with an earlier one
    /// still in flight.
    pub fn on_entry_written(&mut self, index: u64) {
        assert!(self.entry_writes_in_flight > 0);
        assert!(
            index > self.written && index <= self.submitted,
            "entry {index} was in flight"
        );
        self.entry_writes_in_flight -= 1;
        if index != self.written + 1 {
            self.entries_landed.insert(index); // out of order: rare, and only then allocates
            return;
        }
        self.written = index;
        while self.entries_landed.remove(&(self.written + 1)) {
            self.written += 1;
        }
    }

    /// A header write completed. Returns the new durable index when the batch is complete.
    pub fn on_headers_written(&mut self) -> Option<u64> {
        assert!(self.header_writes_in_flight > 0);
        self.header_writes_in_flight -= 1;
        if self.header_writes_in_flight > 0 {
            return None;
        }
        if std::mem::take(&mut self.clearing) {
            return None; // the clearing is durable: entries may be written again
        }
        // A truncation may have cut below the target while the write was in flight; it cannot,
        // since truncation waits for writes, but stay within the log regardless.
        self.durable = self.durable.max(self.header_target.min(self.head));
        Some(self.durable)
    }
}
