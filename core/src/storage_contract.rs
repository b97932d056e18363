//! The storage contract, as an executable check that every [`Storage`] implementation must pass:
//! the simulator's (with faults off) and the real file-backed one run the same function.

use crate::io::{IoId, ReadError, Storage, WriteError};

/// A completion, as a driver delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    Read {
        id: IoId,
        result: Result<Vec<u8>, ReadError>,
    },
    Write {
        id: IoId,
        result: Result<(), WriteError>,
    },
}

/// A storage whose pending IO can be completed on demand (by a test).
pub trait ContractStorage: Storage {
    /// Completes every submitted IO and returns the completions, in delivery order.
    fn complete_all(&mut self) -> Vec<Completion>;
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

fn read_back<S: ContractStorage>(storage: &mut S, id: u64, offset: u64, len: usize) -> Vec<u8> {
    storage.submit_read(IoId(id), offset, len);
    let completions = storage.complete_all();
    assert_eq!(completions.len(), 1, "one read, one completion");
    match &completions[0] {
        Completion::Read {
            id: got,
            result: Ok(data),
        } => {
            assert_eq!(*got, IoId(id), "the completion carries the submitted id");
            assert_eq!(
                data.len(),
                len,
                "a read returns exactly the length asked for"
            );
            data.clone()
        }
        other => panic!("expected a successful read, got {other:?}"),
    }
}

/// Runs the contract against a zeroed storage of `size` bytes with sectors of `sector` bytes.
pub fn check<S: ContractStorage>(storage: &mut S, size: u64, sector: u64) {
    assert!(size >= 16 * sector);
    let s = sector as usize;

    // Never-written sectors read as zeros.
    assert!(
        read_back(storage, 1, 0, 4 * s).iter().all(|&b| b == 0),
        "fresh storage reads zero"
    );

    // A completed write is read back exactly; its neighbours are untouched.
    let data = pattern(1, 2 * s);
    storage.submit_write(IoId(2), sector, &data);
    let done = storage.complete_all();
    assert_eq!(
        done,
        vec![Completion::Write {
            id: IoId(2),
            result: Ok(())
        }]
    );
    let back = read_back(storage, 3, 0, 4 * s);
    assert!(back[..s].iter().all(|&b| b == 0));
    assert_eq!(&back[s..3 * s], &data[..]);
    assert!(back[3 * s..].iter().all(|&b| b == 0));

    // The data is copied at submission: changing the buffer afterwards changes nothing.
    let mut buffer = pattern(2, s);
    storage.submit_write(IoId(4), 8 * sector, &buffer);
    let expected = buffer.clone();
    buffer.fill(0xFF);
    storage.complete_all();
    assert_eq!(read_back(storage, 5, 8 * sector, s), expected);

    // Many writes in flight: each completes exactly once, and all land.
    let mut ids = Vec::new();
    for i in 0..6u64 {
        storage.submit_write(IoId(100 + i), (9 + i) * sector, &pattern(10 + i, s));
        ids.push(IoId(100 + i));
    }
    let mut completed: Vec<IoId> = storage
        .complete_all()
        .into_iter()
        .map(|c| match c {
            Completion::Write { id, result: Ok(()) } => id,
            other => panic!("unexpected completion {other:?}"),
        })
        .collect();
    completed.sort();
    assert_eq!(completed, ids, "every write completes exactly once");
    for i in 0..6u64 {
        assert_eq!(
            read_back(storage, 200 + i, (9 + i) * sector, s),
            pattern(10 + i, s)
        );
    }

    // Overwrites replace; the last sector of the storage is addressable.
    storage.submit_write(IoId(300), sector, &pattern(99, s));
    storage.submit_write(IoId(301), size - sector, &pattern(98, s));
    storage.complete_all();
    assert_eq!(read_back(storage, 302, sector, s), pattern(99, s));
    assert_eq!(read_back(storage, 303, size - sector, s), pattern(98, s));

    // Nothing completes twice.
    assert!(
        storage.complete_all().is_empty(),
        "no completion is delivered twice"
    );
}
