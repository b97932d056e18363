//! One test per row of the WAL recovery decision table (see `ziggy_core::wal::recovery`), plus the
//! whole-log properties that follow from it.

use ziggy_core::wal::header::{EntryHeader, Operation};
use ziggy_core::wal::image::RingImage;
use ziggy_core::wal::recovery::Decision;
use ziggy_core::Config;

fn ring(acknowledged: u64) -> RingImage {
    let mut image = RingImage::new(&Config::test(), 42, 0, 0);
    for i in 0..acknowledged {
        image.append(format!("body {i}").as_bytes());
    }
    image
}

fn decision(image: &RingImage, index: u64) -> Decision {
    image.recover().decision(image.checkpoint_index, index)
}

fn flip(bytes: &mut [u8], at: usize) {
    bytes[at] ^= 0x10;
}

#[test]
fn row_1_clean() {
    let image = ring(5);
    let recovery = image.recover();
    assert_eq!(recovery.head, 5);
    assert_eq!(recovery.durable_bound, 5);
    for index in 1..=5 {
        assert_eq!(decision(&image, index), Decision::Clean);
    }
    assert_eq!(decision(&image, 6), Decision::Empty);
    assert!(recovery.faulty.is_empty());
    assert_eq!(recovery.head_checksum, Some(image.appended[4].checksum));
}

#[test]
fn row_2_fix_header_when_the_header_is_missing_stale_or_corrupt() {
    // Missing: the entry is durable, its header write never happened.
    let mut image = ring(3);
    image.append_entry_only(b"unacknowledged but whole");
    assert_eq!(decision(&image, 4), Decision::FixHeader);
    assert_eq!(image.recover().head, 4);
    // Corrupt header over an intact entry.
    let mut image = ring(4);
    flip(image.header_bytes_mut(2), 30);
    assert_eq!(decision(&image, 2), Decision::FixHeader);
    assert_eq!(image.recover().head, 4);
    // Misdirected: another slot's header sits where slot 3's should be.
    let mut image = ring(4);
    let other = image.appended[0];
    let mut bytes = [0u8; 128];
    other.encode(&mut bytes);
    image.header_bytes_mut(3).copy_from_slice(&bytes);
    assert_eq!(decision(&image, 3), Decision::FixHeader);
}

#[test]
fn row_3_fix_header_when_the_entry_was_replaced_in_a_newer_term() {
    let mut image = ring(3);
    let old = image.appended.pop().unwrap();
    // Entry 3 rewritten in term 2 after its term-1 header was written.
    let newer = image.make(2, b"term two");
    image.write_entry(&newer, b"term two");
    image.appended.push(newer);
    assert_ne!(old.checksum, newer.checksum);
    assert_eq!(decision(&image, 3), Decision::FixHeader);
}

#[test]
fn row_4_faulty_when_header_and_entry_disagree_and_the_header_is_not_older() {
    let mut image = ring(3);
    let current = image.appended[2];
    let forged = EntryHeader::new(
        current.operation,
        42,
        3,
        2,
        0,
        7,
        3,
        current.parent,
        b"other",
    );
    image.write_header(&forged); // the header claims a term-2 entry; the slot holds term 1
    assert_eq!(decision(&image, 3), Decision::Faulty);
    assert_eq!(image.recover().faulty, vec![3]);
}

#[test]
fn row_5_faulty_when_the_header_proves_a_durable_entry_that_is_gone() {
    // Corrupt body.
    let mut image = ring(4);
    flip(image.entry_bytes_mut(2), 130); // inside the body
    assert_eq!(decision(&image, 2), Decision::Faulty);
    // Blank (a lost write).
    let mut image = ring(4);
    image.entry_bytes_mut(4).fill(0);
    assert_eq!(
        decision(&image, 4),
        Decision::Faulty,
        "the last acknowledged entry is never truncated"
    );
    let recovery = image.recover();
    assert_eq!((recovery.head, recovery.faulty.clone()), (4, vec![4]));
    // Misdirected: entry 1's write landed in entry 3's slot (a valid entry, wrong place).
    let mut image = ring(4);
    let misplaced = image.entry_bytes_mut(1).to_vec();
    image.entry_bytes_mut(3).copy_from_slice(&misplaced);
    assert_eq!(decision(&image, 3), Decision::Faulty);
    assert_eq!(decision(&image, 1), Decision::Clean);
}

#[test]
fn row_6_faulty_when_a_later_header_proves_durability() {
    let mut image = ring(5);
    flip(image.entry_bytes_mut(2), 20);
    flip(image.header_bytes_mut(2), 20);
    assert_eq!(decision(&image, 2), Decision::Faulty);
    let recovery = image.recover();
    assert_eq!(recovery.faulty, vec![2]);
    assert_eq!(
        recovery.head, 5,
        "never truncated past a corrupt durable entry"
    );
}

#[test]
fn row_7_torn_beyond_the_durable_bound() {
    let mut image = ring(3);
    image.append_entry_only(b"in flight at the crash");
    flip(image.entry_bytes_mut(4), 140);
    assert_eq!(decision(&image, 4), Decision::Torn);
    let recovery = image.recover();
    assert_eq!(recovery.head, 3);
    assert!(recovery.faulty.is_empty());
}

#[test]
fn row_8_empty_beyond_the_durable_bound() {
    let image = ring(2);
    assert_eq!(decision(&image, 3), Decision::Empty);
    // A stale entry of an older lap is as good as empty.
    let mut old = RingImage::new(&Config::test(), 42, 0, 0);
    for _ in 0..40 {
        old.append(b"old lap");
    }
    let mut image = RingImage::new(&Config::test(), 42, 40, old.appended[39].checksum);
    image.entries.copy_from_slice(&old.entries);
    image.headers.copy_from_slice(&old.headers);
    let recovery = image.recover();
    assert_eq!(recovery.head, 40);
    assert_eq!(recovery.decision(40, 41), Decision::Empty);
    assert!(recovery.faulty.is_empty());
}

#[test]
fn row_9_faulty_when_a_durable_entry_is_out_of_chain() {
    let mut image = ring(2);
    // Entry 3 durable (header written) but chained to a parent that is not entry 2.
    let bad = EntryHeader::new(Operation(20), 42, 3, 1, 0, 7, 3, 0xbad, b"wrong parent");
    image.write_entry(&bad, b"wrong parent");
    image.write_header(&bad);
    image.appended.push(bad);
    assert_eq!(decision(&image, 3), Decision::Faulty);
}

#[test]
fn row_10_cut_when_an_undurable_entry_is_out_of_chain() {
    let mut image = ring(2);
    let bad = EntryHeader::new(Operation(20), 42, 3, 1, 0, 7, 3, 0xbad, b"leftover");
    image.write_entry(&bad, b"leftover");
    assert_eq!(decision(&image, 3), Decision::Cut);
    assert_eq!(image.recover().head, 2);
}

#[test]
fn row_11_cut_after_the_end_of_the_log() {
    let mut image = ring(3);
    image.append_entry_only(b"four");
    image.append_entry_only(b"five");
    image.append_entry_only(b"six");
    flip(image.entry_bytes_mut(4), 129); // torn in the middle of the in-flight batch
    let recovery = image.recover();
    assert_eq!(recovery.decision(0, 4), Decision::Torn);
    assert_eq!(recovery.decision(0, 5), Decision::Cut);
    assert_eq!(recovery.decision(0, 6), Decision::Cut);
    assert_eq!(recovery.head, 3);
}

#[test]
fn row_12_faulty_when_both_copies_of_the_last_acknowledged_entry_rot() {
    // Entries 1..=5 acknowledged. Rot strikes the header of 5 (so the bound drops to 4) and
    // entry 5 itself: the pair must not pass for a torn write.
    let mut image = ring(5);
    flip(image.header_bytes_mut(5), 40);
    flip(image.entry_bytes_mut(5), 40);
    let recovery = image.recover();
    assert_eq!(recovery.durable_bound, 4);
    assert_eq!(recovery.decision(0, 5), Decision::Faulty);
    assert_eq!(recovery.faulty, vec![5]);
    assert_eq!(recovery.head, 5, "never truncated");
    assert_eq!(recovery.head_checksum, None, "its checksum is unknown");
}

#[test]
fn row_12_with_a_whole_rotten_header_sector_keeps_every_acknowledged_entry() {
    // Config::test holds 4 headers per 512-byte sector: slots 4..=7 share one. Garbage over the
    // whole sector hides the headers of 4..=7; entry 7 rots too. 4..=6 are intact (header fix),
    // 7 is faulty: nothing acknowledged is cut.
    let mut image = ring(7);
    let range = image.header_range(4);
    let sector = range.start / 512 * 512;
    for (k, byte) in image.headers[sector..sector + 512].iter_mut().enumerate() {
        *byte = (k as u8).wrapping_mul(37).wrapping_add(11);
    }
    flip(image.entry_bytes_mut(7), 40);
    let recovery = image.recover();
    assert_eq!(recovery.durable_bound, 3);
    for index in 4..=6 {
        assert_eq!(recovery.decision(0, index), Decision::FixHeader);
    }
    assert_eq!(recovery.decision(0, 7), Decision::Faulty);
    assert_eq!(recovery.head, 7);
}

#[test]
fn a_hole_header_keeps_a_faulty_entry_durable_through_a_second_crash() {
    let mut image = ring(5);
    flip(image.header_bytes_mut(5), 40);
    flip(image.entry_bytes_mut(5), 40);
    let first = image.recover();
    // Recovery rewrites the headers ring: entry 5's header is lost, so a hole stands in for it.
    let mut rebuilt = vec![0u8; image.headers.len()];
    ziggy_core::wal::journal::Journal::rebuild_headers(
        &image.layout,
        42,
        0,
        &first,
        &image.entries,
        &image.headers,
        &mut rebuilt,
    );
    image.headers.copy_from_slice(&rebuilt);
    let second = image.recover();
    assert_eq!(second.durable_bound, 5, "the hole proves index 5 durable");
    assert_eq!(second.decision(0, 5), Decision::Faulty);
    assert_eq!(second.head, 5);
    // The leader's copy, written over the rotten entry, replaces the hole (row 3).
    let repaired = image.appended[4];
    image.write_entry(&repaired, b"body 4");
    let third = image.recover();
    assert_eq!(third.decision(0, 5), Decision::FixHeader);
    assert!(third.faulty.is_empty());
}

#[test]
fn hole_headers_never_pass_for_entries() {
    let mut image = ring(2);
    let hole = EntryHeader::hole(42, 3);
    let mut bytes = [0u8; 128];
    hole.encode(&mut bytes);
    image.entry_bytes_mut(3)[..128].copy_from_slice(&bytes);
    assert_eq!(
        decision(&image, 3),
        Decision::Torn,
        "an invalid entry, not a header"
    );
}

#[test]
fn foreign_cluster_entries_are_not_ours() {
    let mut image = ring(3);
    image.cluster = 43;
    let recovery = image.recover();
    assert_eq!(
        recovery.count(Decision::Clean) + recovery.count(Decision::FixHeader),
        0,
        "another cluster's entries are never taken as this log"
    );
    // Both copies of each are invalid for this cluster: damage (row 12), reported, not cut.
    assert_eq!(recovery.faulty, vec![1, 2, 3]);
}

#[test]
fn wrapped_ring_recovers_across_the_seam() {
    let config = Config::test();
    let mut image = RingImage::new(&config, 42, 0, 0);
    for _ in 0..30 {
        image.append(b"first lap");
    }
    // Checkpoint at 25, then write 25 more entries: the ring wraps.
    let cp = image.appended[24];
    let mut next = RingImage::new(&config, 42, 25, cp.checksum);
    next.entries.copy_from_slice(&image.entries);
    next.headers.copy_from_slice(&image.headers);
    next.appended = image.appended[25..].to_vec();
    for _ in 0..25 {
        next.append(b"second lap");
    }
    let recovery = next.recover();
    assert_eq!(recovery.head, 55);
    assert!(recovery.faulty.is_empty());
    assert_eq!(recovery.count(Decision::Clean), 30);
}

/// The embedded database's unsynced entries: written whole, no redundant header, and the stage
/// proof naming the last one. A flip below or at the proof is faulty (it was acknowledged), above
/// it a torn tail; a different entry at the proof's index is faulty (row 4).
#[test]
fn stage_proof_makes_unsynced_entries_up_to_it_durable() {
    let build = || {
        let mut image = ring(2);
        for i in 3..=6 {
            image.append_entry_only(format!("unsynced {i}").as_bytes());
        }
        image.proof = Some(image.appended[4]); // entry 5
        image
    };
    let image = build();
    let recovery = image.recover();
    assert_eq!(recovery.durable_bound, 5);
    assert_eq!(recovery.head, 6);
    assert_eq!(decision(&image, 5), Decision::Clean);
    assert_eq!(decision(&image, 6), Decision::FixHeader);

    for index in [3, 5] {
        let mut image = build();
        flip(image.entry_bytes_mut(index), 130);
        let recovery = image.recover();
        assert_eq!(
            recovery.faulty,
            vec![index],
            "entry {index} was acknowledged"
        );
        assert_eq!(recovery.head, 6);
    }
    let mut image = build();
    flip(image.entry_bytes_mut(6), 130);
    assert_eq!(decision(&image, 6), Decision::Torn);
    assert_eq!(image.recover().head, 5);

    // Without the proof (an OS crash took the stage) the same flip is a torn tail.
    let mut image = build();
    image.proof = None;
    flip(image.entry_bytes_mut(5), 130);
    assert_eq!(decision(&image, 5), Decision::Torn);
    assert_eq!(image.recover().head, 4);

    // A different entry at the proof's index.
    let mut image = build();
    let other = image.make(1, b"another history");
    image.proof = Some(EntryHeader { index: 5, ..other });
    let recovery = image.recover();
    assert_eq!(recovery.decision(0, 5), Decision::Faulty);

    // A proof from another cluster, or from before the checkpoint, proves nothing.
    let mut image = build();
    image.proof = Some(EntryHeader {
        cluster: 7,
        ..image.appended[4]
    });
    flip(image.entry_bytes_mut(5), 130);
    assert_eq!(image.recover().durable_bound, 2);
}
