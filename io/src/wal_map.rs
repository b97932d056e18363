//! The embedded database's WAL ring, memory-mapped: appending a record is a copy into the page
//! cache, with no system call. The kernel owns the dirty pages, so a record survives a crash of
//! the process at once, and `fdatasync` on the file (which writes back shared mappings too) makes
//! it survive a crash of the machine.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

pub struct WalMap {
    ptr: *mut u8,
    len: usize,
}

impl WalMap {
    /// Maps `len` bytes of `file` from `offset` (page-aligned, already allocated in the file).
    pub fn new(file: &File, offset: u64, len: usize) -> io::Result<WalMap> {
        assert!(offset.is_multiple_of(4096) && len > 0);
        // SAFETY: a fresh shared mapping of a range the file holds; the pointer is checked and
        // owned by the returned value, which unmaps it on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(WalMap {
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes, valid until drop; `&self` keeps writers out.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

// SAFETY: the mapping is owned by one `WalMap` and reached only through it, like a `Vec<u8>`.
unsafe impl Send for WalMap {}

impl Drop for WalMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no reference outlives `self`.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}
