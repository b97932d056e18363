//! A damaged-WAL scenario and the properties recovery must keep, shared by the `wal_recovery`
//! fuzz target and the property tests (so both check exactly the same thing).
//!
//! A scenario writes a valid log — `acknowledged` entries whose entry and redundant header are
//! durable, then `in_flight` entries whose entry write may have been interrupted — and then damages
//! it within the fault model:
//!
//! - the in-flight tail may be torn, truncated or overwritten with anything, sector by sector;
//! - at most one of the two copies of acknowledged state may be damaged: either the headers ring
//!   (each acknowledged entry is still whole in the entries ring) or acknowledged entries (their
//!   redundant headers are still whole). Damage to both copies of one entry is beyond what a
//!   single copy of a log can survive.
//!
//! Properties: recovery never panics; every entry it keeps was really written at that index; no
//! acknowledged entry is dropped (each is kept intact or reported faulty for repair); an
//! acknowledged entry whose own copy is intact is never reported faulty; an unacknowledged entry
//! is reported faulty only where both of its copies are invalid (decision-table row 12: a torn
//! write beside a damaged header sector, which no decision can tell from lost acknowledged data).

use crate::config::Config;
use crate::wal::header::{EntryHeader, HEADER_SIZE};
use crate::wal::image::RingImage;
use crate::wal::recovery::{self, Decision, Recovery, SlotView};

/// One act of damage. Fields are taken modulo what they address, so any values are valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Tear sector `sector` of in-flight entry `entry`: 0 zeros, 1 garbage from `fill`, 2 the
    /// whole rest of the entry zeroed (a truncated write).
    TearInFlight {
        entry: u16,
        sector: u16,
        mode: u8,
        fill: u8,
    },
    /// Flip bit `bit` of byte `byte` of acknowledged entry `entry` (or of its redundant header,
    /// if the scenario damages headers).
    FlipAcknowledged { entry: u16, byte: u16, bit: u8 },
    /// Overwrite the whole header sector `sector` with `fill` (headers scenarios only).
    SmashHeaderSector { sector: u16, fill: u8 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    pub checkpoint_index: u64,
    pub acknowledged: u16,
    pub in_flight: u16,
    /// Body sizes, cycled over the entries.
    pub body_sizes: Vec<u16>,
    /// Whether acknowledged damage hits the headers ring (true) or the entries (false).
    pub damage_headers: bool,
    pub damage: Vec<Damage>,
}

/// Runs a scenario and checks the properties. `Err` describes a violation.
pub fn run(scenario: &Scenario) -> Result<Recovery, String> {
    let config = Config::test();
    let slots = config.wal_slot_count as u64;
    let in_flight = (scenario.in_flight as u64).min(2 * config.batch_max as u64);
    let acknowledged = (scenario.acknowledged as u64).min(slots - in_flight);
    let cp = scenario.checkpoint_index % 1_000_000;
    let mut image = RingImage::new(&config, 0xC1, cp, (cp as u32).wrapping_mul(2_654_435_761));
    let body_max = config.entry_body_max();
    let sizes = if scenario.body_sizes.is_empty() {
        vec![8]
    } else {
        scenario.body_sizes.clone()
    };
    let mut bodies = Vec::new();
    for k in 0..acknowledged + in_flight {
        let size = sizes[k as usize % sizes.len()] as usize % (body_max + 1);
        let body: Vec<u8> = (0..size).map(|i| (i as u64 * 31 + k) as u8).collect();
        if k < acknowledged {
            image.append(&body);
        } else {
            image.append_entry_only(&body);
        }
        bodies.push(body);
    }
    let mut damaged_acknowledged = std::collections::BTreeSet::new();
    for damage in &scenario.damage {
        apply(
            &mut image,
            scenario.damage_headers,
            acknowledged,
            in_flight,
            *damage,
            &mut damaged_acknowledged,
        );
    }
    let recovery = image.recover();
    check(
        &image,
        &recovery,
        acknowledged,
        scenario.damage_headers,
        &damaged_acknowledged,
    )?;
    Ok(recovery)
}

fn apply(
    image: &mut RingImage,
    damage_headers: bool,
    acknowledged: u64,
    in_flight: u64,
    damage: Damage,
    damaged: &mut std::collections::BTreeSet<u64>,
) {
    let sector = image.layout.sector_size as usize;
    let first = image.checkpoint_index + 1;
    match damage {
        Damage::TearInFlight {
            entry,
            sector: s,
            mode,
            fill,
        } if in_flight > 0 => {
            let index = first + acknowledged + entry as u64 % in_flight;
            let bytes = image.entry_bytes_mut(index);
            let s = s as usize % (bytes.len() / sector);
            let range = s * sector..(s + 1) * sector;
            match mode % 3 {
                0 => bytes[range].fill(0),
                1 => bytes[range]
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b = fill ^ i as u8),
                _ => bytes[s * sector..].fill(0),
            }
        }
        Damage::FlipAcknowledged { entry, byte, bit } if acknowledged > 0 => {
            let index = first + entry as u64 % acknowledged;
            let bytes = if damage_headers {
                image.header_bytes_mut(index)
            } else {
                // Flip within the header and body, where a flip is meaningful.
                image.entry_bytes_mut(index)
            };
            let used = if damage_headers {
                HEADER_SIZE
            } else {
                let size = u32::from_le_bytes(bytes[64..68].try_into().unwrap()) as usize;
                (HEADER_SIZE + size).min(bytes.len()) // an earlier flip may have changed size
            };
            bytes[byte as usize % used] ^= 1 << (bit % 8);
            damaged.insert(index);
        }
        Damage::SmashHeaderSector { sector: s, fill } if damage_headers => {
            let count = image.headers.len() / sector;
            let s = s as usize % count;
            image.headers[s * sector..(s + 1) * sector].fill(fill);
        }
        _ => {}
    }
}

/// Whether both copies of entry `index` are invalid (decision-table row 12).
fn row_12(image: &RingImage, index: u64) -> bool {
    let input = image.input();
    (
        recovery::header_view(&input, index),
        recovery::entry_view(&input, index),
    ) == (SlotView::Invalid, SlotView::Invalid)
}

fn check(
    image: &RingImage,
    recovery: &Recovery,
    acknowledged: u64,
    damage_headers: bool,
    damaged: &std::collections::BTreeSet<u64>,
) -> Result<(), String> {
    let cp = image.checkpoint_index;
    let last_acknowledged = cp + acknowledged;
    if recovery.head < last_acknowledged {
        return Err(format!(
            "head {} dropped acknowledged entries up to {last_acknowledged}",
            recovery.head
        ));
    }
    for index in cp + 1..=recovery.head {
        let decision = recovery.decision(cp, index);
        let written = image.appended.get((index - cp - 1) as usize);
        match decision {
            Decision::Clean | Decision::FixHeader => {
                let slot = image.layout.slot_of(index);
                let bytes = &image.entries[image.entry_range(slot)];
                let kept = EntryHeader::decode(bytes)
                    .map_err(|e| format!("kept entry {index} does not decode: {e:?}"))?;
                if written.map(|w| w.checksum) != Some(kept.checksum) {
                    return Err(format!(
                        "recovery kept entry {index}, which was never written"
                    ));
                }
            }
            Decision::Faulty if row_12(image, index) => {
                // Both copies invalid: a torn write beside a damaged header sector reads the
                // same as rot of an acknowledged entry, so it must be kept (and repaired, or
                // reported on a single replica), never cut.
            }
            Decision::Faulty => {
                if index > last_acknowledged {
                    return Err(format!("unacknowledged entry {index} reported faulty"));
                }
                if damage_headers || !damaged.contains(&index) {
                    return Err(format!(
                        "entry {index} reported faulty, but its own copy is intact"
                    ));
                }
            }
            other => return Err(format!("index {index} inside the log decided {other:?}")),
        }
    }
    Ok(())
}
