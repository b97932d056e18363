//! Property tests mirroring the fuzz targets (`fuzz/fuzz_targets/`), so the same properties run in
//! `cargo test`: recovery of a damaged WAL tail keeps every acknowledged entry and invents none;
//! decoders never panic on arbitrary bytes.

use proptest::prelude::*;
use ziggy_core::superblock::{self, Superblock};
use ziggy_core::wal::damage::{self, Damage, Scenario};
use ziggy_core::wal::header::EntryHeader;
use ziggy_core::wal::recovery::{recover, RecoveryInput};
use ziggy_core::{Config, Layout, Zone};

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), any::<u8>(), any::<u8>()).prop_map(
            |(entry, sector, mode, fill)| Damage::TearInFlight {
                entry,
                sector,
                mode,
                fill
            }
        ),
        (any::<u16>(), any::<u16>(), any::<u8>())
            .prop_map(|(entry, byte, bit)| Damage::FlipAcknowledged { entry, byte, bit }),
        (any::<u16>(), any::<u8>())
            .prop_map(|(sector, fill)| Damage::SmashHeaderSector { sector, fill }),
    ]
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (
        0u64..200,
        0u16..40,
        0u16..10,
        proptest::collection::vec(0u16..1200, 1..6),
        any::<bool>(),
        proptest::collection::vec(damage_strategy(), 0..12),
    )
        .prop_map(
            |(checkpoint_index, acknowledged, in_flight, body_sizes, damage_headers, damage)| {
                Scenario {
                    checkpoint_index,
                    acknowledged,
                    in_flight,
                    body_sizes,
                    damage_headers,
                    damage,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn damaged_tail_keeps_acknowledged_entries_and_invents_none(scenario in scenario_strategy()) {
        if let Err(violation) = damage::run(&scenario) {
            return Err(TestCaseError::fail(format!("{violation}: {scenario:?}")));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn recovery_never_panics_on_arbitrary_rings(
        seed in any::<u64>(),
        checkpoint_index in 0u64..1000,
        density in 0u8..4,
    ) {
        let layout = Layout::new(&Config::test());
        let mut headers = vec![0u8; layout.zone_size(Zone::WalHeaders) as usize];
        let mut entries = vec![0u8; layout.zone_size(Zone::WalEntries) as usize];
        let mut x = seed | 1;
        for b in headers.iter_mut().chain(entries.iter_mut()) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            if (x & 3) < density as u64 { *b = x as u8; }
        }
        let recovery = recover(&RecoveryInput {
            layout: &layout, cluster: 1, checkpoint_index, checkpoint_checksum: 0,
            headers: &headers, entries: &entries,
            // A stage proof anywhere, even past the ring: recovery never panics on it.
            proof: (seed % 3 == 0).then(|| EntryHeader::new(
                ziggy_core::wal::header::Operation(5), 1, checkpoint_index + 1 + seed % 80,
                1, 0, 0, 0, 0, b"",
            )),
            read_through: u64::MAX,
        });
        prop_assert!(recovery.head >= checkpoint_index);
        prop_assert_eq!(recovery.decisions.len() as u64, layout.wal_slot_count);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), copy in 0u16..4) {
        let _ = EntryHeader::decode(&bytes);
        let _ = Superblock::decode(copy, &bytes);
        let _ = ziggy_core::sessions::Sessions::decode_reply(&bytes);
        let _ = ziggy_core::checkpoint::decode_block(&bytes, 3, 4);
        let layout = Layout::new(&Config::test());
        let mut zone = bytes.clone();
        zone.resize(layout.zone_size(Zone::Superblock) as usize, 0);
        let _ = superblock::select(&layout, &zone);
    }
}
