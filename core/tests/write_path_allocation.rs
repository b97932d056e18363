//! The WAL write path allocates nothing: appending, group-committing and completing entries use
//! only the buffers the journal allocated at start. Counted with a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use ziggy_core::wal::header::Operation;
use ziggy_core::wal::journal::Journal;
use ziggy_core::{Config, IoId, IoKind, Storage};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Storage that records submissions in buffers sized up front.
struct Recorder {
    ids: Vec<IoId>,
    bytes: usize,
}

impl Storage for Recorder {
    fn submit_read(&mut self, _: IoId, _: u64, _: usize) {
        unreachable!("the write path does not read")
    }

    fn submit_write(&mut self, id: IoId, _: u64, data: &[u8]) {
        assert!(
            self.ids.len() < self.ids.capacity(),
            "recorder sized too small"
        );
        self.ids.push(id);
        self.bytes += data.len();
    }
}

#[test]
fn appending_and_committing_does_not_allocate() {
    let config = Config::test();
    let mut journal = Journal::new(&config, 1);
    let mut storage = Recorder {
        ids: Vec::with_capacity(4096),
        bytes: 0,
    };
    let body = [7u8; 100];
    let mut completions = Vec::with_capacity(64);

    COUNTING.store(true, Ordering::SeqCst);
    let mut request = 0;
    // Ten batches; completing entry and header writes in the order the journal expects.
    for _ in 0..10 {
        for _ in 0..config.batch_max {
            request += 1;
            journal
                .append(Operation(20), 1, request, 9, request, &[&body])
                .unwrap();
        }
        journal.flush(&mut storage);
        completions.clear();
        completions.append(&mut storage.ids);
        for id in completions.drain(..) {
            match id.kind() {
                Some(IoKind::WalEntry) => journal.on_entry_written(id.n()),
                Some(IoKind::WalHeaders) => {
                    journal.on_headers_written();
                }
                other => unreachable!("{other:?}"),
            }
        }
        journal.flush(&mut storage); // submits the headers of the batch just written
        completions.append(&mut storage.ids);
        for _ in completions.drain(..) {
            journal.on_headers_written();
        }
        let durable = journal.durable();
        let checksum = journal.checksum_at(durable).unwrap();
        journal.set_checkpoint(durable, checksum, 1);
    }
    COUNTING.store(false, Ordering::SeqCst);

    assert_eq!(journal.durable(), request, "every entry durable");
    assert!(storage.bytes > 0);
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "the write path allocated"
    );
}
