//! The stage: where the embedded database keeps the writes of its open WAL entry.
//!
//! An embedded write must survive `kill -9` once the call returns, without a syscall per write.
//! The writes of the entry being filled go to a small memory object the OS keeps when the process
//! dies and drops when the OS does (a POSIX shared-memory object on tmpfs in `ziggy-io`): exactly
//! the promise of an unsynced write. When the entry is full (or at a sync point) it is *sealed*:
//! its records become the body of one [`Operation::EMBEDDED`](super::header::Operation) WAL entry,
//! written with one `pwrite`.
//!
//! # Layout
//!
//! Two header copies of [`HEADER_COPY_SIZE`] bytes, then two record areas of `area_size` bytes.
//! The header names the *active* area, the next sequence the active area starts from, and the
//! header of the last sealed entry: recovery takes that header as one more redundant header
//! (the stage proof), because every entry up to it was written whole before the process died.
//! The proof vanishes with the OS, as the unsynced entries may.
//!
//! # Records
//!
//! `[len u32][!len u32][seq u64][payload][pad to 4][trailer u32]`, aligned to 8. The length word
//! is stored first, as one aligned 8-byte store, so a crash leaves all of it or nothing of the
//! record; the trailer, a checksum of everything before it with the top and bottom bits set, is
//! stored last (program order is all a process crash can tear at). So a record is either whole, or *torn* (trailer zero: never
//! acknowledged), or *corrupt* (any other mismatch: the bytes changed after the write, which is
//! reported, never dropped). A sealed entry's body is the area's records as they were.
//!
//! # Sealing
//!
//! 1. The entry is written (a crash here: the records are still in the active area).
//! 2. The inactive area is zeroed (its records were sealed into an earlier, proven entry).
//! 3. The header copy of the next generation is written: the zeroed area becomes the active one.
//!    A crash tears at most that copy; the older copy then names an area whose records were
//!    sealed, and the new area is still all zeros, which tells a torn switch from damage.

use crate::checksum::checksum;
use crate::wal::header::{EntryHeader, HEADER_SIZE};

pub const HEADER_COPY_SIZE: usize = 512;
const MAGIC: u32 = u32::from_le_bytes(*b"ZSTG");
const VERSION: u16 = 1;
/// Length word, then the sequence.
const RECORD_HEADER: usize = 16;
const TRAILER: usize = 4;

/// Memory that outlives the process but not the OS. Writes land in program order as far as a
/// crash of the process can tell.
pub trait Stage {
    /// The whole object.
    fn bytes(&self) -> &[u8];
    /// Copies `data` to `offset` (in any byte order).
    fn write(&mut self, offset: usize, data: &[u8]);
    /// Zeroes `len` bytes at `offset`.
    fn zero(&mut self, offset: usize, len: usize);
    /// Stores one aligned word at `offset` with one store, after every earlier write: a crash
    /// never leaves part of it, nor it without what came before.
    fn store_u32(&mut self, offset: usize, word: u32);
    /// As [`Stage::store_u32`], eight bytes.
    fn store_u64(&mut self, offset: usize, word: u64);
}

/// A stage in the heap: for tests and the simulator (which keeps it across a process crash and
/// zeroes it on a machine crash).
#[derive(Clone, Debug)]
pub struct MemStage(pub Vec<u8>);

impl MemStage {
    pub fn new(area_size: usize) -> MemStage {
        MemStage(vec![0; object_size(area_size)])
    }
}

impl Stage for MemStage {
    fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        self.0[offset..offset + data.len()].copy_from_slice(data);
    }

    fn zero(&mut self, offset: usize, len: usize) {
        self.0[offset..offset + len].fill(0);
    }

    fn store_u32(&mut self, offset: usize, word: u32) {
        self.0[offset..offset + 4].copy_from_slice(&word.to_le_bytes());
    }

    fn store_u64(&mut self, offset: usize, word: u64) {
        self.0[offset..offset + 8].copy_from_slice(&word.to_le_bytes());
    }
}

/// The size of a stage object whose areas hold `area_size` bytes of records each.
pub fn object_size(area_size: usize) -> usize {
    2 * HEADER_COPY_SIZE + 2 * area_size
}

/// The area size of a stage object of `len` bytes (the inverse of [`object_size`]).
pub fn area_size_of(len: usize) -> usize {
    len.saturating_sub(2 * HEADER_COPY_SIZE) / 2
}

/// The bytes a record of `payload_len` bytes takes in an area.
pub fn record_size(payload_len: usize) -> usize {
    (RECORD_HEADER + payload_len.div_ceil(4) * 4 + TRAILER).div_ceil(8) * 8
}

fn trailer_of(bytes: &[u8]) -> u32 {
    // Never zero, and no single bit flip makes it zero.
    checksum(bytes) | 0x8000_0001
}

/// What the stage's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageHeader {
    pub generation: u64,
    /// The area records are appended to (0 or 1).
    pub active: u8,
    /// The sequence of the first record the active area may hold.
    pub next_seq: u64,
    /// The data file's incarnation: a stage of another file is never merged.
    pub incarnation: u64,
    pub area_size: u32,
    /// The last sealed entry: every entry up to it was written whole.
    pub sealed: Option<EntryHeader>,
}

impl StageHeader {
    pub fn encode(&self, out: &mut [u8]) {
        assert_eq!(out.len(), HEADER_COPY_SIZE);
        out.fill(0);
        out[4..8].copy_from_slice(&MAGIC.to_le_bytes());
        out[8..10].copy_from_slice(&VERSION.to_le_bytes());
        out[10] = self.active;
        out[11] = self.sealed.is_some() as u8;
        out[16..24].copy_from_slice(&self.generation.to_le_bytes());
        out[24..32].copy_from_slice(&self.next_seq.to_le_bytes());
        out[32..40].copy_from_slice(&self.incarnation.to_le_bytes());
        out[40..44].copy_from_slice(&self.area_size.to_le_bytes());
        if let Some(sealed) = &self.sealed {
            sealed.encode(&mut out[64..64 + HEADER_SIZE]);
        }
        let sum = checksum(&out[4..]);
        out[0..4].copy_from_slice(&sum.to_le_bytes());
    }

    /// None for a blank or damaged copy. Never panics.
    pub fn decode(bytes: &[u8]) -> Option<StageHeader> {
        let bytes = bytes.get(..HEADER_COPY_SIZE)?;
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        if u32_at(0) != checksum(&bytes[4..]) || u32_at(4) != MAGIC {
            return None;
        }
        if u16::from_le_bytes([bytes[8], bytes[9]]) != VERSION || bytes[10] > 1 || bytes[11] > 1 {
            return None;
        }
        let sealed = match bytes[11] {
            1 => Some(EntryHeader::decode(&bytes[64..64 + HEADER_SIZE]).ok()?),
            _ => None,
        };
        Some(StageHeader {
            generation: u64_at(16),
            active: bytes[10],
            next_seq: u64_at(24),
            incarnation: u64_at(32),
            area_size: u32_at(40),
            sealed,
        })
    }
}

/// Damage found in a stage: bytes that changed after they were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageCorrupt {
    /// Byte offset in the stage object.
    pub offset: usize,
    /// The record's sequence, when its framing could still be read.
    pub seq: Option<u64>,
    pub what: &'static str,
}

/// One whole record: its sequence and where its payload lies in the bytes it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: std::ops::Range<usize>,
}

/// The records of an area (or an entry body), in order, and where they end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Records {
    pub records: Vec<Record>,
    /// The end of the last whole record.
    pub tail: usize,
    /// A record was begun but never committed (a crash during the write).
    pub torn: bool,
}

/// Walks the records of `area`. `base` is the area's offset in the stage (for error offsets).
/// Never panics.
pub fn decode_records(area: &[u8], base: usize) -> Result<Records, StageCorrupt> {
    let mut at = 0;
    let mut records = Vec::new();
    let corrupt = |offset: usize, seq: Option<u64>, what| StageCorrupt {
        offset: base + offset,
        seq,
        what,
    };
    while at + RECORD_HEADER + TRAILER <= area.len() {
        let word = u64::from_le_bytes(area[at..at + 8].try_into().unwrap());
        if word == 0 {
            break;
        }
        let (len, check) = (word as u32, (word >> 32) as u32);
        if check != !len {
            return Err(corrupt(at, None, "a record's length word is damaged"));
        }
        let size = record_size(len as usize);
        if size > area.len() - at {
            return Err(corrupt(at, None, "a record runs past the end of its area"));
        }
        let seq = u64::from_le_bytes(area[at + 8..at + 16].try_into().unwrap());
        let trailer_at = at + RECORD_HEADER + (len as usize).div_ceil(4) * 4;
        let trailer = u32::from_le_bytes(area[trailer_at..trailer_at + 4].try_into().unwrap());
        if trailer == 0 {
            // Begun, never committed. Nothing can follow it.
            if area[trailer_at..].iter().any(|&b| b != 0) {
                return Err(corrupt(at, Some(seq), "bytes follow an uncommitted record"));
            }
            return Ok(Records {
                records,
                tail: at,
                torn: true,
            });
        }
        let end = at + RECORD_HEADER + len as usize;
        if trailer != trailer_of(&area[at..end]) {
            return Err(corrupt(
                at,
                Some(seq),
                "a committed record's checksum fails",
            ));
        }
        records.push(Record {
            seq,
            payload: at + RECORD_HEADER..end,
        });
        at += size;
    }
    if area[at..].iter().any(|&b| b != 0) {
        return Err(corrupt(at, None, "bytes follow the last record"));
    }
    Ok(Records {
        records,
        tail: at,
        torn: false,
    })
}

/// What a stage held when it was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageView {
    /// None: a blank (new) stage.
    pub header: Option<StageHeader>,
    /// The active area's whole records, payload ranges relative to the stage object.
    pub records: Vec<Record>,
}

/// Reads a stage object written by [`StageWriter`]. Never panics.
pub fn decode(bytes: &[u8], area_size: usize) -> Result<StageView, StageCorrupt> {
    if bytes.len() != object_size(area_size) {
        return Err(StageCorrupt {
            offset: 0,
            seq: None,
            what: "the stage has the wrong size",
        });
    }
    let copies = [
        &bytes[..HEADER_COPY_SIZE],
        &bytes[HEADER_COPY_SIZE..2 * HEADER_COPY_SIZE],
    ];
    let decoded = copies.map(StageHeader::decode);
    let Some(header) = decoded
        .iter()
        .flatten()
        .max_by_key(|h| h.generation)
        .copied()
    else {
        if bytes.iter().all(|&b| b == 0) {
            return Ok(StageView {
                header: None,
                records: Vec::new(),
            });
        }
        return Err(StageCorrupt {
            offset: 0,
            seq: None,
            what: "both stage header copies are damaged",
        });
    };
    if header.area_size as usize != area_size {
        return Err(StageCorrupt {
            offset: 0,
            seq: None,
            what: "the stage header names another area size",
        });
    }
    let area_at = |n: u8| 2 * HEADER_COPY_SIZE + n as usize * area_size;
    // The other copy is the previous generation's, or the next one's torn by a crash during the
    // switch (its area then still all zeros). Only a damaged next generation leaves records newer
    // than this header in the other area: those must not be dropped.
    let other = (header.generation as usize + 1) % 2;
    if decoded[other].is_none() && copies[other].iter().any(|&b| b != 0) {
        let next_area = area_at(1 - header.active);
        let word = u64::from_le_bytes(bytes[next_area..next_area + 8].try_into().unwrap());
        let seq = u64::from_le_bytes(bytes[next_area + 8..next_area + 16].try_into().unwrap());
        if word != 0 && seq >= header.next_seq {
            return Err(StageCorrupt {
                offset: other * HEADER_COPY_SIZE,
                seq: Some(seq),
                what: "a stage header copy is damaged and its records were in use",
            });
        }
    }
    let base = area_at(header.active);
    let mut area = decode_records(&bytes[base..base + area_size], base)?;
    for (n, record) in area.records.iter_mut().enumerate() {
        if record.seq != header.next_seq + n as u64 {
            return Err(StageCorrupt {
                offset: record.payload.start - RECORD_HEADER,
                seq: Some(record.seq),
                what: "a record's sequence does not follow the one before it",
            });
        }
        record.payload = base + record.payload.start..base + record.payload.end;
    }
    Ok(StageView {
        header: Some(header),
        records: area.records,
    })
}

/// Appends records to a stage and switches areas when the entry they form is sealed.
pub struct StageWriter<T: Stage> {
    stage: T,
    header: StageHeader,
    /// Where the next record of the active area goes.
    tail: usize,
    /// Records in the active area.
    staged: u64,
    scratch: Vec<u8>,
}

impl<T: Stage> StageWriter<T> {
    /// Starts a new generation over `stage`: both areas emptied, the active one starting at
    /// `next_seq`. Called once the data file holds everything the stage held.
    pub fn reset(
        mut stage: T,
        incarnation: u64,
        area_size: usize,
        next_seq: u64,
        sealed: Option<EntryHeader>,
        generation: u64,
    ) -> StageWriter<T> {
        assert_eq!(stage.bytes().len(), object_size(area_size));
        let header = StageHeader {
            generation,
            active: 0,
            next_seq,
            incarnation,
            area_size: area_size as u32,
            sealed,
        };
        stage.zero(2 * HEADER_COPY_SIZE, 2 * area_size);
        let mut writer = StageWriter {
            stage,
            header,
            tail: 0,
            staged: 0,
            scratch: Vec::new(),
        };
        writer.write_header();
        writer
    }

    pub fn header(&self) -> &StageHeader {
        &self.header
    }

    fn area_start(&self, area: u8) -> usize {
        2 * HEADER_COPY_SIZE + area as usize * self.header.area_size as usize
    }

    /// Whether a record of `payload_len` bytes fits in the active area.
    pub fn fits(&self, payload_len: usize) -> bool {
        self.tail + record_size(payload_len) <= self.header.area_size as usize
    }

    pub fn is_empty(&self) -> bool {
        self.tail == 0
    }

    /// The active area's records: the body of the entry they will be sealed into.
    pub fn body(&self) -> &[u8] {
        let start = self.area_start(self.header.active);
        &self.stage.bytes()[start..start + self.tail]
    }

    /// The sequence the next record must carry.
    pub fn next_seq(&self) -> u64 {
        self.header.next_seq + self.staged
    }

    /// Stages one record. The caller checked [`StageWriter::fits`].
    pub fn append(&mut self, seq: u64, payload: &[u8]) {
        let size = record_size(payload.len());
        assert!(
            self.fits(payload.len()),
            "the caller seals a full area first"
        );
        let len = u32::try_from(payload.len()).expect("a record fits an area");
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&(len as u64 | ((!len as u64) << 32)).to_le_bytes());
        self.scratch.extend_from_slice(&seq.to_le_bytes());
        self.scratch.extend_from_slice(payload);
        let trailer = trailer_of(&self.scratch);
        self.scratch
            .resize(RECORD_HEADER + payload.len().div_ceil(4) * 4, 0);
        let at = self.area_start(self.header.active) + self.tail;
        let word = u64::from_le_bytes(self.scratch[..8].try_into().unwrap());
        self.stage.store_u64(at, word);
        self.stage.write(at + 8, &self.scratch[8..]);
        self.stage.store_u32(at + self.scratch.len(), trailer);
        self.tail += size;
        self.staged += 1;
    }

    /// The active area was sealed into `entry` (written): switch to the other area.
    pub fn sealed(&mut self, entry: EntryHeader, next_seq: u64) {
        let next = 1 - self.header.active;
        let start = self.area_start(next);
        self.stage.zero(start, self.header.area_size as usize);
        self.header = StageHeader {
            generation: self.header.generation + 1,
            active: next,
            next_seq,
            sealed: Some(entry),
            ..self.header
        };
        self.tail = 0;
        self.staged = 0;
        self.write_header();
    }

    fn write_header(&mut self) {
        let mut copy = [0u8; HEADER_COPY_SIZE];
        self.header.encode(&mut copy);
        let at = (self.header.generation % 2) as usize * HEADER_COPY_SIZE;
        self.stage.write(at, &copy);
    }

    pub fn stage(&self) -> &T {
        &self.stage
    }

    pub fn into_stage(self) -> T {
        self.stage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::header::Operation;

    const AREA: usize = 1024;

    fn payload(seq: u64) -> Vec<u8> {
        (0..(seq as usize * 7) % 61)
            .map(|i| (seq as u8) ^ i as u8)
            .collect()
    }

    fn writer_with(records: u64) -> StageWriter<MemStage> {
        let mut w = StageWriter::reset(MemStage::new(AREA), 9, AREA, 1, None, 1);
        for seq in 1..=records {
            w.append(seq, &payload(seq));
        }
        w
    }

    fn payloads(bytes: &[u8], view: &StageView) -> Vec<(u64, Vec<u8>)> {
        view.records
            .iter()
            .map(|r| (r.seq, bytes[r.payload.clone()].to_vec()))
            .collect()
    }

    fn expected(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range.map(|s| (s, payload(s))).collect()
    }

    fn entry(index: u64) -> EntryHeader {
        EntryHeader::new(Operation(5), 1, index, 1, 0, 0, 0, 0, b"body")
    }

    #[test]
    fn records_round_trip_and_a_new_stage_is_blank() {
        let blank = MemStage::new(AREA);
        let view = decode(&blank.0, AREA).unwrap();
        assert_eq!(view.header, None);
        let w = writer_with(12);
        let bytes = &w.stage().0;
        let view = decode(bytes, AREA).unwrap();
        assert_eq!(payloads(bytes, &view), expected(1..=12));
        assert_eq!(w.next_seq(), 13);
        // The body is the records as an entry carries them: it decodes alone.
        let body = decode_records(w.body(), 0).unwrap();
        assert_eq!(body.records.len(), 12);
        assert_eq!(body.tail, w.body().len());
    }

    #[test]
    fn a_record_interrupted_at_any_byte_is_torn_and_loses_nothing_before_it() {
        let mut whole = writer_with(5);
        let before = whole.stage().0.clone();
        let start = 2 * HEADER_COPY_SIZE + whole.body().len();
        let trailer_at = start + RECORD_HEADER + payload(6).len().div_ceil(4) * 4;
        whole.append(6, &payload(6));
        let after = whole.stage().0.clone();
        let changed: Vec<usize> = (start + 8..trailer_at)
            .filter(|&i| before[i] != after[i])
            .collect();
        // The length word lands first and whole, then any part of the rest, then the trailer.
        let view = decode(&before, AREA).unwrap();
        assert_eq!(payloads(&before, &view), expected(1..=5));
        for cut in 0..=changed.len() {
            let mut bytes = before.clone();
            bytes[start..start + 8].copy_from_slice(&after[start..start + 8]);
            for &i in &changed[..cut] {
                bytes[i] = after[i];
            }
            let view = decode(&bytes, AREA).unwrap();
            assert_eq!(payloads(&bytes, &view), expected(1..=5), "cut at {cut}");
        }
        let view = decode(&after, AREA).unwrap();
        assert_eq!(payloads(&after, &view), expected(1..=6));
    }

    #[test]
    fn any_bit_flip_in_a_committed_record_is_reported_or_harmless() {
        let w = writer_with(6);
        let good = w.stage().0.clone();
        let base = 2 * HEADER_COPY_SIZE;
        let used = w.body().len();
        let mut reported = 0;
        for byte in base..base + used {
            for bit in 0..8 {
                let mut bytes = good.clone();
                bytes[byte] ^= 1 << bit;
                match decode(&bytes, AREA) {
                    Err(_) => reported += 1,
                    Ok(view) => assert_eq!(
                        payloads(&bytes, &view),
                        expected(1..=6),
                        "a flip at {byte}.{bit} changed what was read without a word"
                    ),
                }
            }
        }
        assert!(
            reported > used * 7,
            "almost every flip is reported ({reported})"
        );
    }

    #[test]
    fn sealing_switches_areas_and_a_torn_switch_keeps_the_old_header() {
        let mut w = writer_with(4);
        w.sealed(entry(3), 5);
        w.append(5, &payload(5));
        let bytes = w.stage().0.clone();
        let view = decode(&bytes, AREA).unwrap();
        assert_eq!(view.header.unwrap().sealed, Some(entry(3)));
        assert_eq!(payloads(&bytes, &view), expected(5..=5));

        // A crash while writing the next generation's header (after its area was zeroed).
        let mut w = writer_with(4);
        let next_area = 2 * HEADER_COPY_SIZE + AREA;
        let mut torn = w.stage().0.clone();
        torn[..HEADER_COPY_SIZE / 2].fill(0xAB); // copy 0 belongs to generation 2
        w = StageWriter {
            stage: MemStage(torn),
            ..w
        };
        let bytes = &w.stage().0;
        assert!(bytes[next_area..next_area + AREA].iter().all(|&b| b == 0));
        let view = decode(bytes, AREA).unwrap();
        assert_eq!(view.header.unwrap().generation, 1);
        assert_eq!(payloads(bytes, &view), expected(1..=4));
    }

    #[test]
    fn a_damaged_current_header_with_newer_records_is_reported() {
        let mut w = writer_with(4);
        w.sealed(entry(3), 5);
        w.append(5, &payload(5));
        let mut bytes = w.stage().0.clone();
        // Generation 2 lives in copy 0: rot it. Copy 1 (generation 1) names the old area, and
        // record 5 in the other area must not be dropped silently.
        bytes[40] ^= 0x10;
        let error = decode(&bytes, AREA).unwrap_err();
        assert_eq!(error.seq, Some(5));
        // Rot in the previous generation's copy is harmless.
        let mut bytes = w.stage().0.clone();
        bytes[HEADER_COPY_SIZE + 40] ^= 0x10;
        let view = decode(&bytes, AREA).unwrap();
        assert_eq!(payloads(&bytes, &view), expected(5..=5));
    }

    #[test]
    fn garbage_never_panics() {
        let mut prng = crate::prng::Prng::new(7);
        for _ in 0..2000 {
            let mut bytes = writer_with(prng.below(12)).stage().0.clone();
            for _ in 0..1 + prng.below(8) {
                let at = prng.below(bytes.len() as u64) as usize;
                bytes[at] = prng.below(256) as u8;
            }
            let _ = decode(&bytes, AREA);
        }
    }
}
