//! WAL recovery: classify every slot of the ring after a crash, and decide what the log is.
//!
//! # Why two rings
//!
//! Each entry is written twice: whole (header + body) into its slot of the entries ring, and its
//! header alone into the redundant headers ring. The write protocol fixes their order:
//!
//! 1. the entries of a batch are written, and become durable;
//! 2. only then are their redundant headers written; when those are durable the batch is
//!    acknowledged and applied.
//!
//! So a valid redundant header for index `i` proves that entry `i` — and, since batches are written
//! in order, every entry before it — was durable. Call the highest such index the **durable bound**
//! (at least the checkpoint's index). An entry at or below the bound that cannot be read intact is
//! *corrupt*: it was durable, maybe acknowledged, and must be repaired, never dropped. An entry
//! above the bound that cannot be read intact may be *torn*: its write may have been interrupted by
//! a crash, so it cannot have been acknowledged, and it is truncated.
//!
//! # The slot of an index
//!
//! After a checkpoint at index `c`, the ring can only hold entries `c+1 ..= c+N` (N slots): the ring
//! never wraps past an entry that the durable checkpoint does not cover. So every slot `s` has one
//! *expected index*: the `i` in `c+1 ..= c+N` with `i mod N == s`. What a ring holds at a slot is
//! then one of:
//!
//! - **current**: valid (both checksums), this cluster, the expected index;
//! - **stale**: valid but an older lap (index <= c): left over, no longer needed;
//! - **blank**: never written (all zeros);
//! - **invalid**: a checksum fails (torn, bit rot, garbage), or the index cannot belong to this slot
//!   (a misdirected write), or another cluster's entry.
//!
//! # The decision table
//!
//! For each index `i` from `c+1` up, with H the redundant header and E the entry:
//!
//! | row | H | E | i vs bound | decision |
//! |---|---|---|---|---|
//! | 1 | current | current, same checksum | any | **Clean** |
//! | 2 | stale, blank or invalid | current | any | **FixHeader**: keep E, rewrite H (the header write was interrupted or H decayed) |
//! | 3 | current | current, different checksum, E's term higher | any | **FixHeader**: E replaced the entry after H was written (log truncation in a new term) |
//! | 4 | current | current, different checksum, E's term not higher | any | **Faulty**: H proves another entry was durable here |
//! | 5 | current | stale, blank or invalid | any | **Faulty**: the durable entry was lost (corruption, lost or misdirected write) |
//! | 6 | not current | not current | `i <= bound` | **Faulty**: a later header proves it was durable |
//! | 7 | stale or blank (intact) | invalid | `i > bound` | **Torn**: an interrupted write, never acknowledged: truncated |
//! | 8 | not current | stale or blank | `i > bound` | **Empty**: never written: the log ends before it |
//! | 9 | any | current, but its parent is not the checksum of entry `i-1` | `i <= bound` | **Faulty**: out of chain |
//! | 10 | any | current, but out of chain | `i > bound` | **Cut**: a different history's leftover: truncated |
//! | 11 | any | current or invalid | after the first Torn, Empty or Cut | **Cut**: the log must be contiguous (a torn entry is cut only at the head slot) |
//! | 12 | invalid | invalid | `i > bound` | **Faulty**: both copies damaged. A crash tears a header sector into its old or new bytes, never garbage, so an invalid header is damage, and the bound it would have raised is unknown: the entry may have been acknowledged (TigerBeetle: header corrupt + prepare corrupt = repair) |
//!
//! A faulty entry whose header is not current gets a *hole* header in the rebuilt headers ring
//! ([`EntryHeader::hole`]): it keeps the index durable (row 5 after a second crash, not row 7),
//! names no checksum (the chain continues unknown), and a repaired entry replaces it (row 3).
//!
//! The embedded database adds one input, its *stage proof* (see [`super::stage`]): the header of
//! the last entry it wrote whole, kept where a process crash cannot reach it. It is read as the
//! current redundant header of its index (where the ring holds none), so every row reads as
//! written: an entry up to it that cannot be read is faulty, never torn.
//!
//! The log is `c+1 ..= head`, where head is the index before the first Torn, Empty or Cut.
//! Faulty entries lie within the log: the replica keeps their slots, never votes or acknowledges as
//! if it held them, and repairs them from a peer; a single replica cannot, and refuses to start with
//! an error that names them ([`Recovery::faulty`]).

use crate::checksum::{checksum, Checksum};
use crate::config::{Layout, PlantedBug};
use crate::wal::header::{EntryHeader, HeaderError, HEADER_SIZE};

/// What recovery decided for one index of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Rows 1: entry and redundant header agree.
    Clean,
    /// Rows 2, 3: the entry is intact; its redundant header must be rewritten.
    FixHeader,
    /// Rows 4, 5, 6, 9: durable but unreadable or wrong: repair from a peer.
    Faulty,
    /// Row 7: an interrupted write beyond the durable bound: truncated.
    Torn,
    /// Row 8: never written: the log ends before it.
    Empty,
    /// Rows 10, 11: an intact entry that cannot be part of the log: truncated.
    Cut,
}

impl Decision {
    /// Whether the index belongs to the recovered log (intact or to be repaired).
    pub fn in_log(self) -> bool {
        matches!(
            self,
            Decision::Clean | Decision::FixHeader | Decision::Faulty
        )
    }
}

/// What a ring holds at a slot, relative to the slot's expected index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotView {
    Current(EntryHeader),
    Stale,
    Blank,
    Invalid,
}

/// The inputs of recovery: the checkpoint from the superblock and the two rings as read.
pub struct RecoveryInput<'a> {
    pub layout: &'a Layout,
    pub cluster: u64,
    /// The index covered by the durable checkpoint (0 for a fresh data file).
    pub checkpoint_index: u64,
    /// The header checksum of entry `checkpoint_index` (the chain's anchor).
    pub checkpoint_checksum: Checksum,
    /// The whole headers ring zone.
    pub headers: &'a [u8],
    /// The whole entries ring zone.
    pub entries: &'a [u8],
    /// The embedded database's stage proof: the header of the last entry it wrote whole before
    /// the process died (see [`super::stage`]). Read as one more current redundant header.
    pub proof: Option<EntryHeader>,
    /// Entries after this index were not read (they read as blank, and are not touched):
    /// `u64::MAX` for a whole ring read.
    pub read_through: u64,
}

/// The outcome of recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The last index of the recovered log (the checkpoint's index if the log is empty).
    pub head: u64,
    /// The header checksum of entry `head` (known even when `head` is faulty but its header is not).
    pub head_checksum: Option<Checksum>,
    /// The durable bound: every index up to it was durable before the crash.
    pub durable_bound: u64,
    /// One decision per index, for `checkpoint_index + 1 ..= checkpoint_index + N`.
    pub decisions: Vec<Decision>,
    /// Indices inside the log that cannot be read intact and need repair.
    pub faulty: Vec<u64>,
}

impl Recovery {
    pub fn decision(&self, checkpoint_index: u64, index: u64) -> Decision {
        self.decisions[(index - checkpoint_index - 1) as usize]
    }

    pub fn count(&self, decision: Decision) -> usize {
        self.decisions.iter().filter(|d| **d == decision).count()
    }
}

/// The expected index of every slot, in index order: `c+1 ..= c+N`.
fn expected_indices(layout: &Layout, checkpoint_index: u64) -> impl Iterator<Item = u64> {
    (1..=layout.wal_slot_count).map(move |k| checkpoint_index + k)
}

/// Reads the redundant header of `slot` from the headers ring.
pub fn redundant_header_bytes<'a>(layout: &Layout, headers: &'a [u8], slot: u64) -> &'a [u8] {
    let sector = layout.header_sector_of(slot);
    let within = (slot % layout.headers_per_sector) as usize * HEADER_SIZE;
    let start = (sector * layout.sector_size) as usize + within;
    &headers[start..start + HEADER_SIZE]
}

/// The bytes of `slot` in the entries ring.
pub fn slot_bytes<'a>(layout: &Layout, entries: &'a [u8], slot: u64) -> &'a [u8] {
    let start = (slot * layout.wal_slot_size) as usize;
    &entries[start..start + layout.wal_slot_size as usize]
}

/// Classifies a decoded header against the index its slot should hold.
fn view_of(
    decoded: Result<EntryHeader, HeaderError>,
    input: &RecoveryInput,
    expected: u64,
) -> SlotView {
    let n = input.layout.wal_slot_count;
    match decoded {
        Err(HeaderError::Blank) => SlotView::Blank,
        Err(_) => SlotView::Invalid,
        Ok(h) if h.cluster != input.cluster || h.index % n != expected % n => SlotView::Invalid,
        Ok(h) if h.index == expected => SlotView::Current(h),
        Ok(h) if h.index <= input.checkpoint_index => SlotView::Stale,
        Ok(_) => SlotView::Invalid, // a future lap cannot exist: misdirected or forged
    }
}

/// Classifies the entry in a slot: its header and its body must both verify.
pub fn entry_view(input: &RecoveryInput, expected: u64) -> SlotView {
    if expected > input.read_through {
        return SlotView::Blank;
    }
    let slot = input.layout.slot_of(expected);
    let bytes = slot_bytes(input.layout, input.entries, slot);
    let decoded = EntryHeader::decode(bytes).and_then(|h| {
        let end = HEADER_SIZE + h.size as usize;
        if h.is_hole() {
            Err(HeaderError::Invalid) // hole headers live in the headers ring only
        } else if end > bytes.len() || checksum(&bytes[HEADER_SIZE..end]) != h.body_checksum {
            Err(HeaderError::Checksum)
        } else {
            Ok(h)
        }
    });
    view_of(decoded, input, expected)
}

/// Classifies the redundant header of the slot of `expected`.
pub fn header_view(input: &RecoveryInput, expected: u64) -> SlotView {
    let slot = input.layout.slot_of(expected);
    let bytes = redundant_header_bytes(input.layout, input.headers, slot);
    view_of(EntryHeader::decode(bytes), input, expected)
}

/// Runs the decision table over the whole ring. Never panics, whatever the bytes.
pub fn recover(input: &RecoveryInput) -> Recovery {
    recover_with(input, None)
}

/// [`recover`], with a planted bug for the simulator (`TornAnywhere`: row 12 decided as row 7).
pub fn recover_with(input: &RecoveryInput, bug: Option<PlantedBug>) -> Recovery {
    let layout = input.layout;
    assert_eq!(
        input.headers.len() as u64,
        layout.zone_size(crate::Zone::WalHeaders)
    );
    assert_eq!(
        input.entries.len() as u64,
        layout.zone_size(crate::Zone::WalEntries)
    );

    let proof = input.proof.filter(|p| {
        p.cluster == input.cluster
            && p.index > input.checkpoint_index
            && p.index - input.checkpoint_index <= layout.wal_slot_count
    });
    let views: Vec<(SlotView, SlotView)> = expected_indices(layout, input.checkpoint_index)
        .map(|i| {
            let h = match (header_view(input, i), proof) {
                (SlotView::Current(h), _) => SlotView::Current(h),
                (_, Some(p)) if p.index == i => SlotView::Current(p),
                (h, _) => h,
            };
            (h, entry_view(input, i))
        })
        .collect();

    let durable_bound = views
        .iter()
        .filter_map(|(h, _)| match h {
            SlotView::Current(h) => Some(h.index),
            _ => None,
        })
        .max()
        .unwrap_or(input.checkpoint_index)
        .max(input.checkpoint_index);

    let mut decisions = Vec::with_capacity(views.len());
    let mut faulty = Vec::new();
    let mut ended = false;
    // The checksum the next entry's parent must equal; None when a faulty entry hides it.
    let mut chain: Option<Checksum> = Some(input.checkpoint_checksum);
    let mut head = input.checkpoint_index;
    let mut head_checksum = Some(input.checkpoint_checksum);

    for (k, (h, e)) in views.iter().enumerate() {
        let index = input.checkpoint_index + 1 + k as u64;
        let durable = index <= durable_bound;
        let decision = if ended {
            // Row 11 (and anything after the end of the log): a torn entry is cut only at the
            // head slot, so what lies beyond is a leftover.
            match e {
                SlotView::Current(_) | SlotView::Invalid => Decision::Cut,
                _ => Decision::Empty,
            }
        } else {
            match decide(*h, *e, durable, chain) {
                Decision::Faulty
                    if bug == Some(PlantedBug::TornAnywhere)
                        && !durable
                        && (*h, *e) == (SlotView::Invalid, SlotView::Invalid) =>
                {
                    Decision::Torn
                }
                decision => decision,
            }
        };
        match decision {
            Decision::Clean | Decision::FixHeader => {
                let SlotView::Current(entry) = e else {
                    unreachable!()
                };
                chain = Some(entry.checksum);
                head = index;
                head_checksum = chain;
            }
            Decision::Faulty => {
                faulty.push(index);
                chain = match h {
                    SlotView::Current(h) if !h.is_hole() => Some(h.checksum),
                    _ => None,
                };
                head = index;
                head_checksum = chain;
            }
            Decision::Torn | Decision::Empty | Decision::Cut => ended = true,
        }
        decisions.push(decision);
    }
    debug_assert!(head >= durable_bound, "every durable index is in the log");
    Recovery {
        head,
        head_checksum,
        durable_bound,
        decisions,
        faulty,
    }
}

/// One row of the table for a single index (rows 1-10; row 11 is applied by the caller).
pub fn decide(h: SlotView, e: SlotView, durable: bool, chain: Option<Checksum>) -> Decision {
    use SlotView::*;
    match (h, e) {
        (_, Current(entry)) if chain.is_some_and(|c| c != entry.parent) => {
            if durable {
                Decision::Faulty // row 9
            } else {
                Decision::Cut // row 10
            }
        }
        (Current(header), Current(entry)) if header.checksum == entry.checksum => Decision::Clean,
        (Current(header), Current(entry)) if entry.term > header.term => Decision::FixHeader,
        (Current(_), Current(_)) => Decision::Faulty, // row 4
        (_, Current(_)) => Decision::FixHeader,       // row 2
        (Current(_), _) => Decision::Faulty,          // row 5
        (_, _) if durable => Decision::Faulty,        // row 6
        (Invalid, Invalid) => Decision::Faulty,       // row 12
        (_, Invalid) => Decision::Torn,               // row 7
        (_, Stale | Blank) => Decision::Empty,        // row 8
    }
}
