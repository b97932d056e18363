//! Creating and opening an embedded database: the superblock, the checkpoint, WAL recovery with
//! the stage proof, replay, then the stage's unsealed writes logged again.
//!
//! Opening writes nothing until recovery has decided: a failed open (damage it reports) leaves
//! the file and the stage as they were. The stage is emptied last, once the WAL holds durably
//! everything it held, so a crash anywhere during an open loses nothing either (writes apply by
//! sequence, and the ones already applied are skipped).

use std::collections::VecDeque;

use super::{
    writes, Embedded, EmbeddedStorage, Error, Sizes, Stats, WalDamage, BLOB_LSM, EMBEDDED, TERM,
};
use crate::checkpoint;
use crate::config::{Config, Layout, Zone};
use crate::io::{IoId, IoKind, ReadError};
use crate::lsm::grid::BlockStore;
use crate::lsm::{self, Checkpoint, Engine};
use crate::storage_contract::Completion;
use crate::superblock::{self, Superblock};
use crate::wal::header::{EntryHeader, HEADER_SIZE};
use crate::wal::journal::Journal;
use crate::wal::recovery::{self, Decision, Recovery, RecoveryInput, SlotView};
use crate::wal::stage::{self, Stage, StageView, StageWriter};

/// What an open found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The WAL index the checkpoint covers, and the last index of the recovered log.
    pub checkpoint: u64,
    pub head: u64,
    /// Writes replayed from WAL entries after the checkpoint.
    pub replayed_writes: u64,
    /// Writes found only in the stage (never sealed before the process died), logged again.
    pub staged_writes: u64,
    /// WAL entries cut as a torn or stale tail (never acknowledged).
    pub truncated: u64,
    /// Whether the stage held a proof (the process died; the OS did not).
    pub stage_proof: bool,
}

/// Superblock copies at the file's start: the same place whatever the other sizes.
fn superblock_layout() -> Layout {
    Layout::new(&Config::embedded(4096, 4, 8192, lsm::Options::small()))
}

fn read<S: EmbeddedStorage>(storage: &mut S, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
    storage.submit_read(IoId::new(IoKind::RecoveryRead, 0), offset, len);
    let mut data = Err(ReadError::Io);
    for completion in storage.complete_all() {
        match completion {
            Completion::Read { result, .. } => data = result,
            Completion::Write { result: Err(e), .. } => return Err(Error::Write(e)),
            Completion::Write { .. } => {}
        }
    }
    data.map_err(|error| Error::Read { offset, error })
}

fn write_all<S: EmbeddedStorage>(storage: &mut S) -> Result<(), Error> {
    for completion in storage.complete_all() {
        if let Completion::Write { result: Err(e), .. } = completion {
            return Err(Error::Write(e));
        }
    }
    Ok(())
}

/// Writes the first superblock of a new embedded database (the file must already be as long as
/// the layout).
pub fn format<S: EmbeddedStorage>(
    storage: &mut S,
    sizes: Sizes,
    incarnation: u64,
) -> Result<(), Error> {
    let config = sizes.config(lsm::Options::small());
    config
        .validate()
        .map_err(|e| Error::NotEmbedded(e.to_string()))?;
    let layout = Layout::new(&config);
    let mut sb = Superblock::genesis(&config, incarnation, 0, 1, incarnation);
    sb.term = TERM;
    sb.embedded = sizes.encode();
    let mut sector = vec![0u8; layout.sector_size as usize];
    for copy in 0..layout.superblock_copies {
        sb.encode(copy as u16, &mut sector);
        let offset = layout.superblock_copy_offset(copy);
        storage.submit_write(IoId::new(IoKind::Superblock, copy), offset, &sector);
    }
    write_all(storage)
}

/// The sizes an embedded database was created with, and its incarnation, from its superblock.
pub fn read_sizes<S: EmbeddedStorage>(storage: &mut S) -> Result<(Sizes, u64), Error> {
    let layout = superblock_layout();
    let zone = read(storage, 0, layout.zone_size(Zone::Superblock) as usize)?;
    let sb = superblock::select(&layout, &zone)
        .ok_or(Error::NoSuperblock)?
        .superblock;
    let [grid_block_size, wal_slot_count, wal_entry_size] = sb.embedded;
    if grid_block_size == 0 {
        return Err(Error::NotEmbedded(
            "a replica's data file (serve it with `ziggy serve`)".into(),
        ));
    }
    let sizes = Sizes {
        grid_block_size,
        wal_slot_count,
        wal_entry_size,
    };
    Ok((sizes, sb.incarnation))
}

impl<S: EmbeddedStorage, G: BlockStore, T: Stage> Embedded<S, G, T> {
    /// Opens the database in `storage`, with its LSM grid in `grid` and unsynced writes in
    /// `stage` (blank for a new one). `sync_writes` makes every write durable before it returns.
    pub fn open(
        mut storage: S,
        grid: G,
        stage: T,
        sizes: Sizes,
        options: lsm::Options,
        sync_writes: bool,
    ) -> Result<(Self, OpenReport), Error> {
        let config = sizes.config(options.clone());
        config
            .validate()
            .map_err(|e| Error::NotEmbedded(e.to_string()))?;
        let layout = Layout::new(&config);
        let zone = read(
            &mut storage,
            layout.zone_start(Zone::Superblock),
            layout.zone_size(Zone::Superblock) as usize,
        )?;
        let sb = superblock::select(&layout, &zone)
            .ok_or(Error::NoSuperblock)?
            .superblock;
        if sb.layout != config.layout_fingerprint() || sb.embedded != sizes.encode() {
            return Err(Error::NotEmbedded(
                "its sizes differ from the ones it is opened with".into(),
            ));
        }
        let checkpoint = read_blob(&mut storage, &layout, &sb)?;
        let mut engine = Engine::open(grid, options, checkpoint)?;

        let area_size = config.entry_body_max();
        let view = stage::decode(stage.bytes(), area_size).map_err(Error::CorruptStage)?;
        if view.header.is_some_and(|h| h.incarnation != sb.incarnation) {
            return Err(Error::Corrupt(
                "the stage of unsynced writes belongs to another data file".into(),
            ));
        }
        let proof = view.header.and_then(|h| h.sealed);
        let headers = read(
            &mut storage,
            layout.zone_start(Zone::WalHeaders),
            layout.zone_size(Zone::WalHeaders) as usize,
        )?;
        let (entries, read_through) = read_log(&mut storage, &layout, &sb, &headers, proof)?;
        let input = RecoveryInput {
            layout: &layout,
            cluster: sb.cluster,
            checkpoint_index: sb.checkpoint_index,
            checkpoint_checksum: sb.checkpoint_checksum,
            headers: &headers,
            entries: &entries,
            proof,
            read_through,
        };
        let recovery = recovery::recover(&input);
        if !recovery.faulty.is_empty() {
            let stage_next = view.header.map(|h| h.next_seq);
            let sequence = engine.sequence();
            return Err(Error::CorruptWal(damage(
                &input, &recovery, sequence, stage_next,
            )));
        }

        let mut report = OpenReport {
            checkpoint: sb.checkpoint_index,
            head: recovery.head,
            truncated: (recovery.count(Decision::Torn) + recovery.count(Decision::Cut)) as u64,
            stage_proof: proof.is_some(),
            ..OpenReport::default()
        };
        let mut marks = VecDeque::new();
        for index in sb.checkpoint_index + 1..=recovery.head {
            let slot = recovery::slot_bytes(&layout, &entries, layout.slot_of(index));
            let header = EntryHeader::decode(slot).expect("recovered entries are intact");
            if header.operation != EMBEDDED {
                return Err(Error::NotEmbedded(format!(
                    "WAL entry {index} is not an embedded write"
                )));
            }
            let body = &slot[HEADER_SIZE..HEADER_SIZE + header.size as usize];
            report.replayed_writes += replay(&mut engine, &mut marks, index, body)?;
        }

        // The recovered log becomes provably durable (its entries may have been in the OS's
        // cache only), with a rebuilt headers ring, before anything new is written after it. An
        // empty log (a clean close) has no current header to rewrite.
        let mut rebuilt = vec![0u8; headers.len()];
        Journal::rebuild_headers(
            &layout,
            sb.cluster,
            sb.checkpoint_index,
            &recovery,
            &entries,
            &headers,
            &mut rebuilt,
        );
        if recovery.head > sb.checkpoint_index {
            storage.barrier().map_err(Error::Write)?;
            storage.submit_write(
                IoId::new(IoKind::WalHeaders, 0),
                layout.zone_start(Zone::WalHeaders),
                &rebuilt,
            );
            write_all(&mut storage)?;
        }
        let mut journal = Journal::new(&config, sb.cluster);
        let anchor = (
            sb.checkpoint_index,
            sb.checkpoint_checksum,
            sb.checkpoint_term,
        );
        journal.restore(anchor, &recovery, &entries, &rebuilt);
        drop(entries);

        // The stage's writes that never reached the WAL: logged again, durably, before the
        // stage is emptied.
        if let Some((first, last, body)) = unsealed(&view, stage.bytes(), engine.sequence())? {
            let body = body.to_vec();
            report.staged_writes = replay(&mut engine, &mut marks, journal.head() + 1, &body)?;
            journal
                .append(EMBEDDED, TERM, 0, first, last, &[&body])
                .expect("a stage's records fit one entry of an empty pipeline");
            super::make_durable(&mut journal, &mut storage)?;
        }
        let sealed = journal.entry(journal.head()).map(|(h, _)| h);
        let generation = view.header.map_or(1, |h| h.generation + 1);
        let next_seq = engine.sequence() + 1;
        let stage = StageWriter::reset(
            stage,
            sb.incarnation,
            area_size,
            next_seq,
            sealed,
            generation,
        );
        report.head = journal.head();

        let flushes = engine.stats().flushes;
        let mut db = Embedded {
            layout,
            storage,
            engine,
            journal,
            stage,
            superblock: sb,
            marks,
            flushes_checkpointed: flushes,
            poisoned: None,
            sync_writes,
            stats: Stats::default(),
            block: vec![0; config.grid_block_size as usize],
            sector: vec![0; config.sector_size as usize],
        };
        // A crash may leave the ring nearly full (a checkpoint that failed, the stage's entry
        // above): free it now, as a seal would, so the next seal always finds a slot.
        if db.journal.ring_free() < db.layout.wal_slot_count / 4 {
            db.checkpoint()?;
        }
        Ok((db, report))
    }
}

/// The entries zone as recovery needs it, read slot by slot from the checkpoint on: every entry
/// up to the durable bound (the highest current redundant header, or the stage proof), then on
/// while entries follow whole; the rest reads as zeros without a read. An open so costs what the
/// log holds, not the ring's size (the buffer's untouched pages are never allocated).
fn read_log<S: EmbeddedStorage>(
    storage: &mut S,
    layout: &Layout,
    sb: &Superblock,
    headers: &[u8],
    proof: Option<EntryHeader>,
) -> Result<(Vec<u8>, u64), Error> {
    let c = sb.checkpoint_index;
    let n = layout.wal_slot_count;
    let current =
        |h: &EntryHeader, index: u64| h.cluster == sb.cluster && h.index == index && !h.is_hole();
    let mut bound = proof
        .filter(|p| p.cluster == sb.cluster && p.index > c && p.index - c <= n)
        .map_or(c, |p| p.index);
    for index in c + 1..=c + n {
        let slot = layout.slot_of(index);
        let bytes = recovery::redundant_header_bytes(layout, headers, slot);
        if let Ok(h) = EntryHeader::decode(bytes) {
            if h.index == index && h.cluster == sb.cluster {
                bound = bound.max(index); // holes too: they prove the index durable
            }
        }
    }
    let zone = layout.zone_start(Zone::WalEntries);
    let mut entries = vec![0u8; layout.zone_size(Zone::WalEntries) as usize];
    let sector = layout.sector_size;
    let mut read_through = c + n;
    for index in c + 1..=c + n {
        let slot = layout.slot_of(index);
        let at = (slot * layout.wal_slot_size) as usize;
        let first = read(storage, zone + at as u64, sector as usize)?;
        let header = EntryHeader::decode(&first)
            .ok()
            .filter(|h| current(h, index));
        entries[at..at + first.len()].copy_from_slice(&first);
        match header {
            Some(h) => {
                let len = layout.sectors_for((HEADER_SIZE + h.size as usize) as u64);
                let len = len.min(layout.wal_slot_size);
                if len > sector {
                    let rest = read(storage, zone + at as u64 + sector, (len - sector) as usize)?;
                    entries[at + sector as usize..at + len as usize].copy_from_slice(&rest);
                }
            }
            None if index > bound => {
                read_through = index;
                break;
            }
            None => {}
        }
    }
    Ok((entries, read_through))
}

/// Applies the writes of one entry the engine does not hold yet; returns how many.
fn replay<G: BlockStore>(
    engine: &mut Engine<G>,
    marks: &mut VecDeque<(u64, u64)>,
    index: u64,
    body: &[u8],
) -> Result<u64, Error> {
    let records = stage::decode_records(body, 0).map_err(|c| {
        Error::Corrupt(format!(
            "WAL entry {index} verifies but its records do not: {}",
            c.what
        ))
    })?;
    let mut applied = 0;
    for record in records.records {
        if record.seq <= engine.sequence() {
            continue;
        }
        if record.seq != engine.sequence() + 1 {
            return Err(Error::Corrupt(format!(
                "WAL entry {index} holds write {} but write {} is missing",
                record.seq,
                engine.sequence() + 1
            )));
        }
        let writes = writes::decode(&body[record.payload.clone()]).ok_or_else(|| {
            Error::Corrupt(format!(
                "write {} in WAL entry {index} does not decode",
                record.seq
            ))
        })?;
        if engine.memtable_is_empty() {
            marks.push_back((record.seq, index));
        }
        engine.apply_replayed(record.seq, &writes)?;
        applied += 1;
    }
    Ok(applied)
}

/// The LSM checkpoint the superblock names (None for a new database).
fn read_blob<S: EmbeddedStorage>(
    storage: &mut S,
    layout: &Layout,
    sb: &Superblock,
) -> Result<Option<Checkpoint>, Error> {
    let blocks = checkpoint::blocks_for(layout, sb.state_size);
    if blocks == 0 {
        return Ok(None);
    }
    let (first, _) = checkpoint::area_blocks(layout, sb.state_area);
    let offset = layout.grid_block_offset(first);
    let data = read(storage, offset, (blocks * layout.grid_block_size) as usize)?;
    let mut blob = Vec::new();
    for (n, block) in data.chunks(layout.grid_block_size as usize).enumerate() {
        let payload = checkpoint::decode_block(block, first + n as u64, sb.checkpoint_index)
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "block {} of the checkpoint at WAL index {}",
                    first + n as u64,
                    sb.checkpoint_index
                ))
            })?;
        blob.extend_from_slice(payload);
    }
    if blob.len() as u64 != sb.state_size || crate::checksum::checksum(&blob) != sb.state_checksum {
        return Err(Error::Corrupt(
            "the checkpoint blob's checksum fails".into(),
        ));
    }
    match blob.split_first() {
        Some((&BLOB_LSM, rest)) => Checkpoint::decode(rest)
            .map(Some)
            .ok_or_else(|| Error::Corrupt("the LSM checkpoint does not decode".into())),
        _ => Err(Error::Corrupt(
            "the checkpoint blob is not an LSM checkpoint".into(),
        )),
    }
}

/// Names what faulty entries held: from whatever header of theirs survived (the ring's or the
/// proof), else from their neighbours' (the writes between the one before and the one after).
/// `sequence` is the checkpoint's last write, `stage_next` the stage's first.
fn damage(
    input: &RecoveryInput,
    recovery: &Recovery,
    sequence: u64,
    stage_next: Option<u64>,
) -> WalDamage {
    let layout = input.layout;
    let own = |index: u64| {
        let slot = layout.slot_of(index);
        EntryHeader::decode(recovery::redundant_header_bytes(
            layout,
            input.headers,
            slot,
        ))
        .ok()
        .filter(|h| h.index == index && !h.is_hole())
        .or(input.proof.filter(|p| p.index == index))
        .filter(|h| h.operation == EMBEDDED)
    };
    let entry = |index: u64| match recovery::entry_view(input, index) {
        SlotView::Current(h) if h.operation == EMBEDDED && !recovery.faulty.contains(&index) => {
            Some(h)
        }
        _ => own(index),
    };
    let writes = recovery
        .faulty
        .iter()
        .filter_map(|&i| match own(i) {
            Some(h) => Some(h.client..=h.request),
            None => {
                let before = match i - 1 == input.checkpoint_index {
                    true => Some(sequence),
                    false => entry(i - 1).map(|h| h.request),
                };
                let after = entry(i + 1)
                    .map(|h| h.client)
                    .or(stage_next.filter(|_| i == recovery.head));
                match (before, after) {
                    (Some(b), Some(a)) if b + 1 < a => Some(b + 1..=a - 1),
                    _ => None,
                }
            }
        })
        .collect();
    let first = recovery.faulty[0];
    WalDamage {
        entries: recovery.faulty.clone(),
        writes,
        head: recovery.head,
        offset: layout.entry_offset(layout.slot_of(first)),
    }
}

/// Records of the stage to log again: the first and last sequence, and their bytes.
type Unsealed<'a> = Option<(u64, u64, &'a [u8])>;

/// The stage's records the engine does not hold: they must follow it without a gap.
fn unsealed<'a>(view: &StageView, bytes: &'a [u8], sequence: u64) -> Result<Unsealed<'a>, Error> {
    let fresh: Vec<_> = view.records.iter().filter(|r| r.seq > sequence).collect();
    let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else {
        return Ok(None);
    };
    if first.seq != sequence + 1 {
        return Err(Error::Corrupt(format!(
            "the stage starts at write {} but the WAL ends at write {sequence}",
            first.seq
        )));
    }
    let start = first.payload.start - 16;
    let end = last.payload.start - 16 + stage::record_size(last.payload.len());
    Ok(Some((first.seq, last.seq, &bytes[start..end])))
}
