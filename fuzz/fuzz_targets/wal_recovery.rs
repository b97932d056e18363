//! Corrupts, truncates and tears the tail of a valid WAL and checks that recovery never panics,
//! never returns an entry that was not written, and keeps every acknowledged entry (see
//! `ziggy_core::wal::damage` for the exact properties; `cargo test` runs the same ones through
//! proptest).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ziggy_core::wal::damage::{run, Damage, Scenario};

#[derive(Arbitrary, Debug)]
enum FuzzDamage {
    Tear { entry: u16, sector: u16, mode: u8, fill: u8 },
    Flip { entry: u16, byte: u16, bit: u8 },
    Smash { sector: u16, fill: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    checkpoint_index: u32,
    acknowledged: u8,
    in_flight: u8,
    body_sizes: Vec<u16>,
    damage_headers: bool,
    damage: Vec<FuzzDamage>,
}

fuzz_target!(|input: Input| {
    let scenario = Scenario {
        checkpoint_index: input.checkpoint_index as u64,
        acknowledged: input.acknowledged as u16,
        in_flight: input.in_flight as u16,
        body_sizes: input.body_sizes.into_iter().take(16).collect(),
        damage_headers: input.damage_headers,
        damage: input
            .damage
            .into_iter()
            .take(64)
            .map(|d| match d {
                FuzzDamage::Tear { entry, sector, mode, fill } => Damage::TearInFlight { entry, sector, mode, fill },
                FuzzDamage::Flip { entry, byte, bit } => Damage::FlipAcknowledged { entry, byte, bit },
                FuzzDamage::Smash { sector, fill } => Damage::SmashHeaderSector { sector, fill },
            })
            .collect(),
    };
    if let Err(violation) = run(&scenario) {
        panic!("{violation}: {scenario:?}");
    }
});
