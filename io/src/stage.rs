//! [`ShmStage`]: the embedded database's stage (see `ziggy_core::wal::stage`) in shared memory.
//!
//! The object lives on tmpfs (`/dev/shm`), so it survives the process and vanishes with the OS,
//! which is what an unsynced write promises. Its pages are allocated when it is opened
//! (`posix_fallocate`), and tmpfs does no IO, so a store into the mapping never faults with
//! SIGBUS (the data file itself is never mapped). Where `/dev/shm` is missing, the object is a
//! file beside the database (`<db>.stage`): it then outlives a reboot too, which the stage's
//! proof tolerates (a proof names entries that recovery finds, or reports as damaged).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, Ordering};

use ziggy_core::wal::stage::Stage;

/// A stage object mapped into memory.
pub struct ShmStage {
    path: PathBuf,
    ptr: *mut u8,
    len: usize,
    _file: File,
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread moves the owner.
unsafe impl Send for ShmStage {}

/// Where the stage of the data file `file` (at `path`) with `incarnation` lives: named by the
/// file's device and inode, so a copy or a replaced file never meets another file's stage.
pub fn stage_path(path: &Path, file: &File, incarnation: u64) -> io::Result<PathBuf> {
    let meta = file.metadata()?;
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return Ok(shm.join(format!(
            "ziggydb.{:x}.{:x}.{incarnation:x}",
            meta.dev(),
            meta.ino()
        )));
    }
    let mut name = path.as_os_str().to_owned();
    name.push(".stage");
    Ok(PathBuf::from(name))
}

impl ShmStage {
    /// Opens (or creates, zeroed) the stage object at `path`, of exactly `len` bytes.
    pub fn open(path: &Path, len: usize) -> io::Result<ShmStage> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        let current = file.metadata()?.len();
        if current != 0 && current != len as u64 {
            return Err(io::Error::other(format!(
                "the stage {} is {current} bytes, not {len}: it belongs to another database",
                path.display()
            )));
        }
        file.set_len(len as u64)?;
        // SAFETY: posix_fallocate only reads the descriptor, which `file` keeps open.
        let result = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
        if result != 0 && result != libc::EOPNOTSUPP && result != libc::EINVAL {
            return Err(io::Error::from_raw_os_error(result));
        }
        // SAFETY: a fresh shared mapping of `len` bytes of an open file; unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ShmStage {
            path: path.to_path_buf(),
            ptr: ptr as *mut u8,
            len,
            _file: file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the object (after a clean close: the data file holds everything).
    pub fn remove(self) -> io::Result<()> {
        let path = self.path.clone();
        drop(self);
        std::fs::remove_file(path)
    }
}

impl Drop for ShmStage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, not used after this.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

impl Stage for ShmStage {
    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes, valid while `self` lives; only `self` writes it.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= self.len);
        compiler_fence(Ordering::SeqCst);
        // SAFETY: in bounds (asserted); `data` is not inside the mapping's written range.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) };
        compiler_fence(Ordering::SeqCst);
    }

    fn zero(&mut self, offset: usize, len: usize) {
        assert!(offset + len <= self.len);
        compiler_fence(Ordering::SeqCst);
        // SAFETY: in bounds (asserted).
        unsafe { std::ptr::write_bytes(self.ptr.add(offset), 0, len) };
        compiler_fence(Ordering::SeqCst);
    }

    fn store_u32(&mut self, offset: usize, word: u32) {
        assert!(offset + 4 <= self.len && offset.is_multiple_of(4));
        compiler_fence(Ordering::SeqCst);
        // SAFETY: in bounds and aligned (asserted; the mapping is page-aligned).
        unsafe { std::ptr::write_volatile(self.ptr.add(offset) as *mut u32, word.to_le()) };
        compiler_fence(Ordering::SeqCst);
    }

    fn store_u64(&mut self, offset: usize, word: u64) {
        assert!(offset + 8 <= self.len && offset.is_multiple_of(8));
        compiler_fence(Ordering::SeqCst);
        // SAFETY: in bounds and aligned (asserted; the mapping is page-aligned).
        unsafe { std::ptr::write_volatile(self.ptr.add(offset) as *mut u64, word.to_le()) };
        compiler_fence(Ordering::SeqCst);
    }
}
