//! Cursors: one ordered stream of entries from one layer of the tree (the memtable, the frozen
//! memtable, or a run of non-overlapping tables), filled a chunk or a block at a time, forward or
//! backward, bounded by `[start, end)`.
//!
//! A cursor owns only its position and a buffer; the engine fills it (`Engine::refill`), so the
//! same cursors serve scans (through the block cache) and compactions (around it).

use super::entries::{Entries, EntryRef};

/// How many memtable entries one refill copies.
pub const MEMORY_CHUNK: usize = 128;

#[derive(Clone, Debug)]
pub enum Source {
    Memtable {
        /// The last entry handed out, to continue after.
        after: Option<super::memtable::VersionKey>,
    },
    Frozen {
        /// Forward: the next index; backward: one past the next index.
        next: usize,
        /// The other bound of the range (exclusive end forward, inclusive start backward).
        limit: usize,
    },
    Tables {
        /// Table ids in key order.
        ids: Vec<u64>,
        /// The current table (index into `ids`).
        table: usize,
        /// The next block to read in it; None before the cursor has positioned itself.
        block: Option<usize>,
        /// The restart point in `block` the next chunk starts at (forward reads through the
        /// cache decode a block a few restart intervals at a time).
        restart: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Cursor {
    pub source: Source,
    pub reverse: bool,
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    pub buffer: Entries,
    pub at: usize,
    pub done: bool,
    /// Read through the block cache (scans) or around it (compactions).
    pub cached: bool,
}

impl Cursor {
    pub fn new(source: Source, start: &[u8], end: Option<&[u8]>, reverse: bool) -> Cursor {
        Cursor {
            source,
            reverse,
            start: start.to_vec(),
            end: end.map(|e| e.to_vec()),
            buffer: Entries::new(),
            at: 0,
            done: false,
            cached: true,
        }
    }

    pub fn head(&self) -> Option<EntryRef<'_>> {
        (self.at < self.buffer.len()).then(|| self.buffer.get(self.at))
    }

    pub fn needs_refill(&self) -> bool {
        self.at == self.buffer.len() && !self.done
    }

    /// Moves past the head entry (the caller has copied what it needs).
    pub fn advance(&mut self) {
        assert!(self.at < self.buffer.len(), "a head to move past");
        self.at += 1;
    }

    /// Takes the buffer to refill it in place (keeping its capacity); give it back with `load`.
    pub fn take_buffer(&mut self) -> Entries {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        buffer
    }

    /// Installs `entries` (already in iteration order) as the buffer.
    pub fn load(&mut self, entries: Entries) {
        self.buffer = entries;
        self.at = 0;
    }
}

/// Keeps (in place) the versions of one key that some reader can still see, newest first.
///
/// `versions` is sorted newest first; `snapshots` ascending. A version is visible to snapshot `s`
/// when it is the newest with sequence ≤ `s`; the newest version is visible to every future read.
/// (Dropping a tombstone that ends up oldest, when nothing below holds the key, is the caller's.)
pub fn collect_garbage(versions: &mut Entries, snapshots: &[u64]) {
    let mut newer = u64::MAX; // the sequence of the previous (newer) version
    let mut first = true;
    versions.retain(|version| {
        // Some snapshot s with version.sequence <= s < newer sees this version.
        let from = snapshots.partition_point(|&s| s < version.sequence);
        let seen = snapshots.get(from).is_some_and(|&s| s < newer);
        newer = version.sequence;
        std::mem::take(&mut first) || seen
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::lsm::memtable::Entry;

    fn version(sequence: u64, value: Option<&str>) -> Entry {
        Entry {
            key: b"k".to_vec(),
            sequence,
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    fn sequences(kept: &[Entry]) -> Vec<u64> {
        kept.iter().map(|e| e.sequence).collect()
    }

    /// The tree's full rule: GC, then drop an oldest tombstone at the bottom.
    fn collect(versions: Vec<Entry>, snapshots: &[u64], bottom: bool) -> Vec<Entry> {
        let mut flat = Entries::new();
        versions.iter().for_each(|v| flat.push(EntryRef::of(v)));
        collect_garbage(&mut flat, snapshots);
        if bottom && flat.last().is_some_and(|v| v.value.is_none()) {
            flat.pop();
        }
        flat.to_vec()
    }

    #[test]
    fn garbage_collection_keeps_what_snapshots_see() {
        let versions = || {
            vec![
                version(9, Some("9")),
                version(7, None),
                version(5, Some("5")),
                version(2, Some("2")),
            ]
        };
        assert_eq!(sequences(&collect(versions(), &[], false)), [9]);
        assert_eq!(sequences(&collect(versions(), &[6], false)), [9, 5]);
        assert_eq!(sequences(&collect(versions(), &[7, 8], false)), [9, 7]);
        assert_eq!(
            sequences(&collect(versions(), &[7], true)),
            [9],
            "tombstone last"
        );
        assert_eq!(sequences(&collect(versions(), &[1], false)), [9]);
        assert_eq!(
            sequences(&collect(versions(), &[2, 5, 9], false)),
            [9, 5, 2]
        );
        let deleted = vec![version(4, None), version(3, Some("3"))];
        assert!(collect(deleted.clone(), &[], true).is_empty());
        assert_eq!(sequences(&collect(deleted.clone(), &[], false)), [4]);
        assert_eq!(sequences(&collect(deleted, &[3], true)), [4, 3]);
    }
}
