//! The replica over a real data file: format, write, reopen, and refuse files it must not open.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use ziggy_core::{Config, Error, Layout, Zone};
use ziggy_io::driver::{Driver, DriverError};
use ziggy_io::format::format;

fn formatted(dir: &Path, config: &Config) -> PathBuf {
    let path = dir.join("replica.data");
    format(&path, config, 7, false).unwrap();
    path
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// Each key's value differs in length and content, so a value read under the wrong key shows.
fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-")
        .repeat(1 + i as usize % 9)
        .into_bytes()
}

fn deleted(i: u32) -> bool {
    i % 5 == 3
}

fn assert_contents(driver: &mut Driver, keys: u32) {
    for i in 0..keys {
        let expected = (!deleted(i)).then(|| value(i));
        assert_eq!(driver.get(&key(i)).unwrap(), expected, "key {i}");
    }
}

fn open_error(path: &Path, config: &Config) -> DriverError {
    match Driver::open(path, config) {
        Ok(_) => panic!("{} opened with {config:?}", path.display()),
        Err(error) => error,
    }
}

#[test]
fn writes_survive_reopen_across_ring_wraps_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::test();
    let path = formatted(dir.path(), &config);
    let keys = 200; // far more than the 32 WAL slots: the ring wraps, checkpoints must happen
    {
        let mut driver = Driver::open(&path, &config).unwrap();
        for i in 0..keys {
            driver.put(&key(i), &value(i)).unwrap();
        }
        for i in (0..keys).filter(|&i| deleted(i)) {
            assert!(driver.delete(&key(i)).unwrap(), "key {i} existed");
        }
        assert!(!driver.delete(b"never-written").unwrap());
        assert_contents(&mut driver, keys);
        assert!(
            driver.checkpoints() >= 5,
            "only {} checkpoints",
            driver.checkpoints()
        );
        assert!(driver.replica().applied() > config.wal_slot_count as u64 * 6);
    }
    let mut driver = Driver::open(&path, &config).unwrap();
    assert!(
        driver.replica().checkpoint_index() > 0,
        "recovery started from a checkpoint"
    );
    assert_contents(&mut driver, keys);

    // The reopened replica keeps accepting writes, and they survive a second reopen.
    driver.put(b"after-reopen", b"yes").unwrap();
    drop(driver);
    let mut driver = Driver::open(&path, &config).unwrap();
    assert_eq!(driver.get(b"after-reopen").unwrap(), Some(b"yes".to_vec()));
    assert_contents(&mut driver, keys);
}

#[test]
fn a_file_of_garbage_is_not_a_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::test();
    let path = dir.path().join("garbage");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let garbage: Vec<u8> = (0..Layout::new(&config).total_size())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&path, garbage).unwrap();
    let error = open_error(&path, &config);
    assert!(
        matches!(error, DriverError::Halted(Error::NoValidSuperblock)),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not a ZiggyDB data file"),
        "{error}"
    );
}

#[test]
fn a_file_formatted_with_another_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let formatted_with = Config::test();
    let path = formatted(dir.path(), &formatted_with);
    // One layout smaller than the file (the replica reads the superblock and refuses) and one
    // larger (refused before the replica could read past the end).
    let smaller = Config {
        clients_max: 4,
        ..Config::test()
    };
    let larger = Config {
        wal_slot_count: 64,
        ..Config::test()
    };
    for config in [smaller, larger] {
        let error = open_error(&path, &config);
        let expected = Error::LayoutMismatch {
            file: formatted_with.layout_fingerprint(),
            config: config.layout_fingerprint(),
        };
        assert!(
            matches!(&error, DriverError::Halted(e) if *e == expected),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .contains("does not match the configuration's layout"));
    }
    // Settings outside the layout do not matter.
    Driver::open(
        &path,
        &Config {
            batch_max: 2,
            ..Config::test()
        },
    )
    .unwrap();
}

#[test]
fn one_damaged_superblock_copy_is_survived_all_of_them_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::test();
    let path = formatted(dir.path(), &config);
    let layout = Layout::new(&config);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let sector = vec![0xAB; layout.sector_size as usize];
    file.write_all_at(&sector, layout.superblock_copy_offset(0))
        .unwrap();
    Driver::open(&path, &config)
        .unwrap()
        .put(b"k", b"v")
        .unwrap();
    for copy in 0..layout.superblock_copies {
        file.write_all_at(&sector, layout.superblock_copy_offset(copy))
            .unwrap();
    }
    let error = open_error(&path, &config);
    assert!(
        matches!(error, DriverError::Halted(Error::NoValidSuperblock)),
        "{error:?}"
    );
}

#[test]
fn a_truncated_file_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::test();
    let path = formatted(dir.path(), &config);
    let layout = Layout::new(&config);
    let len = layout.zone_start(Zone::Grid);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len)
        .unwrap();
    let error = open_error(&path, &config);
    assert!(
        matches!(error, DriverError::Truncated { len: l, expected, .. } if l == len && expected == layout.total_size()),
        "{error:?}"
    );
}

#[test]
fn format_allocates_every_block_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::test();
    let path = formatted(dir.path(), &config);
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(metadata.len(), Layout::new(&config).total_size());
    assert!(
        metadata.blocks() * 512 >= metadata.len(),
        "the file is sparse"
    );

    let error = format(&path, &config, 7, false).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(error.to_string().contains("--force"), "{error}");

    // With force, the old contents are gone.
    Driver::open(&path, &config)
        .unwrap()
        .put(b"old", b"data")
        .unwrap();
    format(&path, &config, 7, true).unwrap();
    assert_eq!(
        Driver::open(&path, &config).unwrap().get(b"old").unwrap(),
        None
    );
}

#[test]
fn a_data_file_is_driven_by_one_driver_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::test();
    let path = formatted(dir.path(), &config);
    let mut first = Driver::open(&path, &config).unwrap();
    first.put(b"k", b"v").unwrap();
    let error = open_error(&path, &config);
    assert!(
        error.to_string().contains("in use by another process"),
        "{error}"
    );

    // Not even a forced format touches a file in use.
    let error = format(&path, &config, 7, true).unwrap_err();
    assert!(
        error.to_string().contains("in use by another process"),
        "{error}"
    );
    drop(first);
    assert_eq!(
        Driver::open(&path, &config).unwrap().get(b"k").unwrap(),
        Some(b"v".to_vec())
    );
}
