//! `FileStorage` against the storage contract every `Storage` must pass, plus what is specific to
//! a real file: completions wait for the flush, one `fdatasync` per flush, errors as completions.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use ziggy_core::storage_contract::{check, Completion};
use ziggy_core::{IoId, ReadError, Storage, WriteError};
use ziggy_io::file_storage::FileStorage;
use ziggy_io::format::allocate;

const SECTOR: u64 = 4096;
const SIZE: u64 = 64 * SECTOR;

fn zeroed_storage(dir: &Path, sector: u64) -> FileStorage {
    let path = dir.join("data");
    allocate(&path, SIZE, false).unwrap();
    FileStorage::open(&path, sector).unwrap()
}

#[test]
fn file_storage_meets_the_storage_contract() {
    for sector in [512, SECTOR] {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = zeroed_storage(dir.path(), sector);
        assert_eq!(storage.size(), SIZE);
        check(&mut storage, SIZE, sector);
    }
}

#[test]
fn completions_wait_for_the_flush_and_share_one_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = zeroed_storage(dir.path(), SECTOR);
    for i in 0..10u64 {
        storage.submit_write(IoId(i), i * SECTOR, &[i as u8 + 1; SECTOR as usize]);
    }
    assert!(storage.has_pending(), "no completion before the flush");
    let syncs = storage.stats().syncs;
    let done = storage.flush();
    assert_eq!(
        storage.stats().syncs,
        syncs + 1,
        "ten writes, one fdatasync"
    );
    let ids: Vec<IoId> = done
        .iter()
        .map(|c| match c {
            Completion::Write { id, result: Ok(()) } => *id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        ids,
        (0..10).map(IoId).collect::<Vec<_>>(),
        "in submission order"
    );
    assert!(!storage.has_pending());

    // The bytes are in the file, as any other reader sees it.
    let mut sector = [0u8; SECTOR as usize];
    File::open(dir.path().join("data"))
        .unwrap()
        .read_exact_at(&mut sector, 3 * SECTOR)
        .unwrap();
    assert!(sector.iter().all(|&b| b == 4));
}

#[test]
fn a_flush_of_reads_alone_does_not_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = zeroed_storage(dir.path(), SECTOR);
    storage.submit_read(IoId(1), 0, SECTOR as usize);
    storage.submit_read(IoId(2), SECTOR, SECTOR as usize);
    assert_eq!(storage.flush().len(), 2);
    assert_eq!(storage.stats().syncs, 0);
    assert!(
        storage.flush().is_empty(),
        "nothing pending: nothing delivered, no sync"
    );
    assert_eq!(storage.stats().syncs, 0);
}

#[test]
fn a_failed_write_completes_with_an_error_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    allocate(&path, SIZE, false).unwrap();
    let read_only = File::open(&path).unwrap();
    let mut storage = FileStorage::from_file(read_only, SECTOR).unwrap();
    storage.submit_write(IoId(7), 0, &[1; SECTOR as usize]);
    let done = storage.flush();
    assert_eq!(
        done,
        vec![Completion::Write {
            id: IoId(7),
            result: Err(WriteError::Io)
        }]
    );
}

#[test]
fn a_failed_read_completes_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = zeroed_storage(dir.path(), SECTOR);
    // Another process shrinks the file under the storage: the read comes back short.
    OpenOptions::new()
        .write(true)
        .open(dir.path().join("data"))
        .unwrap()
        .set_len(SECTOR)
        .unwrap();
    storage.submit_read(IoId(9), 2 * SECTOR, SECTOR as usize);
    assert_eq!(
        storage.flush(),
        vec![Completion::Read {
            id: IoId(9),
            result: Err(ReadError::Io)
        }]
    );
}

#[test]
#[should_panic(expected = "not sector-aligned")]
fn misaligned_io_is_a_bug_in_the_core() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = zeroed_storage(dir.path(), SECTOR);
    storage.submit_write(IoId(1), 100, &[0; SECTOR as usize]);
}

#[test]
#[should_panic(expected = "past the end of the file")]
fn io_past_the_end_is_a_bug_in_the_core() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = zeroed_storage(dir.path(), SECTOR);
    storage.submit_read(IoId(1), SIZE, SECTOR as usize);
}
