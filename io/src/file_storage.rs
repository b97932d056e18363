//! [`FileStorage`]: the core's [`Storage`] over one real data file.
//!
//! Reads and writes go to the file at once (`pread`/`pwrite`), but their completions are held
//! back until [`FileStorage::flush`]. A flush calls `fdatasync` once if any write is pending and
//! only then hands out the completions. That is what the storage contract asks ("a write is
//! durable when its completion is delivered") and what makes group commit cheap: every write
//! submitted before a flush becomes durable with that flush's single `fdatasync`.
//!
//! Failures never panic: they come back as completions carrying a [`WriteError`] or
//! [`ReadError`], and the core decides what they mean. Misaligned or out-of-file IO, on the other
//! hand, is a bug in the core and is asserted.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use ziggy_core::embedded::EmbeddedStorage;
use ziggy_core::storage_contract::{Completion, ContractStorage};
use ziggy_core::{IoId, ReadError, Storage, WriteError};

/// Counters of the IO a [`FileStorage`] did, for benchmarks and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// `fdatasync` calls made by [`FileStorage::flush`].
    pub syncs: u64,
    /// Time spent in `fdatasync`, in nanoseconds.
    pub sync_nanos: u64,
    /// Time spent in `pwrite` (copying into the page cache), in nanoseconds.
    pub write_nanos: u64,
    pub writes: u64,
    pub bytes_written: u64,
    pub reads: u64,
    pub bytes_read: u64,
}

/// A data file as the core's storage. See the module documentation.
pub struct FileStorage {
    file: File,
    size: u64,
    sector_size: u64,
    /// Completions of submitted IO, in submission order, not yet delivered.
    pending: Vec<Completion>,
    /// Whether `pending` holds a write, so that a flush of reads alone skips the `fdatasync`.
    write_pending: bool,
    /// The first failed `pwrite` not yet reported through [`EmbeddedStorage::take_write_error`].
    write_error: Option<WriteError>,
    /// Fault injection for tests: `fdatasync`s left before every later one fails with EIO.
    syncs_until_failure: Option<u64>,
    stats: StorageStats,
    /// Each `fdatasync`'s duration.
    sync_latency: crate::metrics::Histogram,
}

impl FileStorage {
    /// Opens an existing data file for reading and writing.
    pub fn open(path: &Path, sector_size: u64) -> io::Result<FileStorage> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        FileStorage::from_file(file, sector_size)
    }

    /// Wraps an open file. Its current length bounds every IO.
    pub fn from_file(file: File, sector_size: u64) -> io::Result<FileStorage> {
        assert!(
            sector_size.is_power_of_two(),
            "sector size {sector_size} is not a power of two"
        );
        let size = file.metadata()?.len();
        Ok(FileStorage {
            file,
            size,
            sector_size,
            pending: Vec::new(),
            write_pending: false,
            write_error: None,
            syncs_until_failure: None,
            stats: StorageStats::default(),
            sync_latency: Default::default(),
        })
    }

    /// The length of the file, in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether any submitted IO still waits for [`FileStorage::flush`] to complete it.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The durations of the `fdatasync`s so far.
    pub fn sync_latency(&self) -> &crate::metrics::Histogram {
        &self.sync_latency
    }

    pub fn stats(&self) -> StorageStats {
        self.stats
    }

    /// Makes every pending write durable with one `fdatasync` (none if only reads are pending),
    /// then returns the completions of all pending IO in submission order.
    ///
    /// If the `fdatasync` fails, every pending write fails with it: after a failed flush the
    /// kernel may have dropped the dirty pages, so none of them can be called durable.
    pub fn flush(&mut self) -> Vec<Completion> {
        if self.write_pending {
            self.write_pending = false;
            self.stats.syncs += 1;
            let start = Instant::now();
            let result = self.sync_data();
            let nanos = start.elapsed().as_nanos() as u64;
            self.stats.sync_nanos += nanos;
            self.sync_latency.record(nanos);
            if let Err(error) = result {
                self.fail_pending_writes(write_error(&error));
            }
        }
        std::mem::take(&mut self.pending)
    }

    /// Fault injection for tests: after `n` more `fdatasync`s, every one fails with EIO (as a
    /// device that went away would).
    #[doc(hidden)]
    pub fn fail_syncs_after(&mut self, n: u64) {
        self.syncs_until_failure = Some(n);
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if let Some(left) = &mut self.syncs_until_failure {
            if *left == 0 {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            *left -= 1;
        }
        self.file.sync_data()
    }

    fn fail_pending_writes(&mut self, error: WriteError) {
        for completion in &mut self.pending {
            if let Completion::Write {
                result: result @ Ok(()),
                ..
            } = completion
            {
                *result = Err(error);
            }
        }
    }

    /// Asserts that an IO is sector-aligned and inside the file: the core computes every offset
    /// from the layout, so a violation is a bug there, not bad input.
    fn check_range(&self, offset: u64, len: usize) {
        let len = len as u64;
        assert!(len > 0, "empty IO at offset {offset}");
        assert_eq!(
            offset % self.sector_size,
            0,
            "offset {offset} is not sector-aligned"
        );
        assert_eq!(
            len % self.sector_size,
            0,
            "length {len} is not a whole number of sectors"
        );
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.size),
            "IO at {offset} (+{len}) ends past the end of the file ({} bytes)",
            self.size
        );
    }
}

impl Storage for FileStorage {
    fn submit_read(&mut self, id: IoId, offset: u64, len: usize) {
        self.check_range(offset, len);
        let mut data = vec![0u8; len];
        let result = self
            .file
            .read_exact_at(&mut data, offset)
            .map(|()| data)
            .map_err(|_| ReadError::Io);
        self.stats.reads += 1;
        self.stats.bytes_read += len as u64;
        self.pending.push(Completion::Read { id, result });
    }

    fn submit_write(&mut self, id: IoId, offset: u64, data: &[u8]) {
        self.check_range(offset, data.len());
        let start = Instant::now();
        let result = self
            .file
            .write_all_at(data, offset)
            .map_err(|error| write_error(&error));
        self.stats.write_nanos += start.elapsed().as_nanos() as u64;
        self.stats.writes += 1;
        self.stats.bytes_written += data.len() as u64;
        self.write_pending = true;
        if let Err(e) = result {
            self.write_error.get_or_insert(e);
        }
        self.pending.push(Completion::Write { id, result });
    }
}

impl ContractStorage for FileStorage {
    fn complete_all(&mut self) -> Vec<Completion> {
        self.flush()
    }
}

impl EmbeddedStorage for FileStorage {
    fn barrier(&mut self) -> Result<(), WriteError> {
        self.stats.syncs += 1;
        self.sync_data().map_err(|e| write_error(&e))
    }

    fn take_write_error(&mut self) -> Option<WriteError> {
        self.write_error.take()
    }

    fn discard(&mut self, offset: u64, len: u64) {
        // SAFETY: fallocate only reads the descriptor, which `self.file` keeps open.
        unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            );
        }
    }
}

/// Classifies an OS error for the core: a full device, a quota or a file-size limit (`EFBIG`,
/// `ulimit -f`) is reported as no space, because it points at the setup rather than at failing
/// hardware; the file cannot grow, and nothing already written is in doubt.
pub fn write_error(error: &io::Error) -> WriteError {
    match error.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => WriteError::NoSpace,
        _ => WriteError::Io,
    }
}

/// Takes an exclusive, non-blocking `flock` on a data file, so that two processes never drive
/// (or format) the same data file. The lock lasts as long as the file stays open.
pub fn lock_data_file(file: &File) -> io::Result<()> {
    // A process forked meanwhile by another thread of this one holds a copy of every descriptor,
    // and with it the lock of one just closed, until its exec closes them: a moment, so a lock
    // held is asked for again a few times before the file is called in use.
    let mut tries = 0;
    loop {
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error);
        }
        tries += 1;
        if tries == LOCK_TRIES {
            return Err(io::Error::new(
                error.kind(),
                "the data file is in use by another process",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// How often a held lock is asked for, 10 ms apart, before the data file is called in use.
const LOCK_TRIES: u32 = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_device_and_quota_are_no_space_everything_else_is_io() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(write_error(&os(libc::ENOSPC)), WriteError::NoSpace);
        assert_eq!(write_error(&os(libc::EDQUOT)), WriteError::NoSpace);
        assert_eq!(write_error(&os(libc::EFBIG)), WriteError::NoSpace);
        assert_eq!(write_error(&os(libc::EIO)), WriteError::Io);
        assert_eq!(write_error(&io::Error::other("no errno")), WriteError::Io);
    }
}
