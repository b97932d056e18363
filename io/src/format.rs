//! `ziggy format`: creates a data file, fully allocated, holding the genesis superblock.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use ziggy_core::{Config, KvStateMachine, Layout, Replica};

use crate::file_storage::lock_data_file;

/// The size of the zero-filled writes that allocate the file.
const ZERO_CHUNK: usize = 1 << 20;

/// Creates the data file at `path` for `config`, for cluster `cluster` (replica 0 of 1).
///
/// Refuses to touch an existing file unless `force` is set. Every byte of the file is written
/// (zeros), never left sparse: overwriting allocated blocks in place needs no metadata update at
/// each `fdatasync`, which doubles the durable write rate. The superblock is written last, after
/// the zeros are durable, so that a format interrupted by a crash leaves a file that refuses to
/// open (no valid superblock) rather than one that opens over garbage.
pub fn format(path: &Path, config: &Config, cluster: u64, force: bool) -> io::Result<()> {
    format_member(path, config, Member::single(cluster), force)
}

/// Which replica of which cluster a data file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub cluster: u64,
    pub replica: u8,
    pub replica_count: u8,
}

impl Member {
    /// The only replica of a cluster of one.
    pub fn single(cluster: u64) -> Member {
        Member {
            cluster,
            replica: 0,
            replica_count: 1,
        }
    }
}

/// [`format`] for one replica of a cluster. Each replica is formatted on its own host: it
/// knows only its own incarnation and learns its peers' on first contact.
pub fn format_member(path: &Path, config: &Config, member: Member, force: bool) -> io::Result<()> {
    config
        .validate()
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let count = member.replica_count as usize;
    if member.replica >= member.replica_count || count > ziggy_core::superblock::REPLICAS_MAX {
        let why = format!(
            "replica {} of a cluster of {count}: the index must be below the count, and a \
             cluster has at most {} replicas",
            member.replica,
            ziggy_core::superblock::REPLICAS_MAX
        );
        return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    }
    let layout = Layout::new(config);
    let file = allocate(path, layout.total_size(), force)?;
    let context = |error: io::Error| annotate(error, &format!("formatting {}", path.display()));
    let mut members = vec![0; member.replica_count as usize];
    members[member.replica as usize] = incarnation();
    let genesis =
        Replica::<KvStateMachine>::format(config, member.cluster, member.replica, &members);
    for (offset, bytes) in genesis {
        file.write_all_at(&bytes, offset).map_err(context)?;
    }
    file.sync_all().map_err(context)?;
    sync_parent_directory(path).map_err(context)
}

/// Creates a file of `size` zero bytes, every block allocated (written, not sparse), and makes
/// the zeros durable. Refuses an existing file unless `force` is set.
pub fn allocate(path: &Path, size: u64, force: bool) -> io::Result<File> {
    let file = create(path, force)?;
    let context = |error: io::Error| annotate(error, &format!("allocating {}", path.display()));
    fill_with_zeros(&file, size).map_err(context)?;
    file.sync_data().map_err(context)?;
    Ok(file)
}

/// Creates (or, with `force`, truncates) the file, with an error that names it. A file in use
/// by a running replica is never truncated: the lock is taken first.
fn create(path: &Path, force: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if force {
        options.create(true);
    } else {
        options.create_new(true);
    }
    let file = options.open(path).map_err(|error| match error.kind() {
        io::ErrorKind::AlreadyExists => io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already exists; refusing to overwrite it (pass --force to replace it and lose its data)",
                path.display()
            ),
        ),
        _ => annotate(error, &format!("creating {}", path.display())),
    })?;
    let context = |error: io::Error| annotate(error, &format!("formatting {}", path.display()));
    lock_data_file(&file).map_err(context)?;
    file.set_len(0).map_err(context)?;
    Ok(file)
}

/// Writes `size` zero bytes from the start of the (empty) file.
fn fill_with_zeros(mut file: &File, size: u64) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut left = size;
    while left > 0 {
        let n = left.min(ZERO_CHUNK as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Makes the file's directory entry durable: without it, a crash can lose a freshly created file.
pub fn sync_parent_directory(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Prefixes an error's message with what was being done, keeping its kind.
pub(crate) fn annotate(error: io::Error, doing: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{doing}: {error}"))
}

/// A random, non-zero incarnation for a new data file. (Two formats of one replica must merely
/// differ.)
fn incarnation() -> u64 {
    crate::entropy::entropy() | 1
}
