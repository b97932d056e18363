//! `ziggy backup` and `ziggy restore`.
//!
//! A backup is a data file: one replica's, alone in a cluster of its own, at a checkpoint the
//! node took after the backup began (so it holds every write acknowledged before then), with an
//! empty log after it. It is taken from a live node, which keeps serving:
//!
//! 1. `ZIGGY.BACKUP CHECKPOINT` asks the node for a checkpoint soon and learns the index it has
//!    applied; `ZIGGY.BACKUP POINT` is polled until the node's durable checkpoint reaches it.
//! 2. The checkpoint's LSM tree is walked in the new file's grid as a syncing follower walks it
//!    (`lsm::sync`): every block the file lacks is fetched with `ZIGGY.BACKUP BLOCKS`, verified
//!    against its reference and written at its address.
//! 3. A block the node no longer holds (a newer checkpoint freed and reused it) moves the
//!    backup on to the node's newest checkpoint; the blocks the two share are kept.
//! 4. The state is opened from the file (every manifest block read back), then the superblock
//!    and the checkpoint's blob are written ([`Replica::format_at`]), and the file is made
//!    durable and renamed into place: a backup is either whole or absent.
//!
//! `ziggy restore FILE --to PATH` verifies every checksum of the backup (`inspect --verify`) and
//! copies it to a new data file that `ziggy serve --data PATH` opens.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::db::FileGrid;
use crate::server::backup::{encode_want, BLOCKS_MAX};
use crate::transfer::{Client, TransferError};
use ziggy_core::lsm::sync::Want;
use ziggy_core::replica::BackupPoint;
use ziggy_core::state_machine::StateMachine;
use ziggy_core::{Config, Layout, Replica};
use ziggy_redis::RedisStateMachine;
use ziggy_resp::Reply;

/// Why a backup or a restore stopped (nothing is left at the destination).
#[derive(Debug)]
pub enum BackupError {
    Io(std::io::Error),
    /// The node answered an error, or something this tool does not understand.
    Node(String),
    /// The node's data file has another layout than the configuration given.
    Layout,
    /// The destination exists (a backup or a restore never overwrites).
    Exists(PathBuf),
    /// The backup file is damaged: each bad block or sector, named.
    Damaged(Vec<String>),
    /// Writing or reading the new file's state failed.
    State(String),
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::Io(e) => write!(f, "{e}"),
            BackupError::Node(why) => write!(f, "the node answered: {why}"),
            BackupError::Layout => f.write_str(
                "the node's data file has another layout than this preset: pass the --preset \
                 the node was formatted with",
            ),
            BackupError::Exists(path) => {
                write!(f, "{} exists: choose a new file", path.display())
            }
            BackupError::Damaged(lines) => {
                write!(f, "the backup is damaged: {}", lines.join("; "))
            }
            BackupError::State(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for BackupError {}

impl From<std::io::Error> for BackupError {
    fn from(e: std::io::Error) -> Self {
        BackupError::Io(e)
    }
}

impl From<TransferError> for BackupError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Io(e) => BackupError::Io(e),
            other => BackupError::Node(other.to_string()),
        }
    }
}

fn state_error(e: impl std::fmt::Display) -> BackupError {
    BackupError::State(format!("the backup's state: {e}"))
}

type Result<T> = std::result::Result<T, BackupError>;

/// What a backup took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupSummary {
    /// The checkpoint it holds: the last log index applied in it.
    pub index: u64,
    /// Blocks fetched from the node, and blocks it already had from an earlier checkpoint.
    pub fetched: u64,
    pub bytes: u64,
    /// Times a newer checkpoint replaced the one being copied.
    pub retargets: u64,
}

/// How a backup paces itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupOptions {
    /// Blocks one request asks for (at most `server::backup::BLOCKS_MAX`).
    pub blocks_per_request: usize,
    /// A pause after each request, to bound the load a backup puts on a busy node.
    pub pause: Duration,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            blocks_per_request: BLOCKS_MAX,
            pause: Duration::ZERO,
        }
    }
}

/// How long a backup waits for the node's checkpoint.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(60);
/// Newer checkpoints a backup follows before it gives up. The node holds the blocks of the
/// checkpoint being copied (`ZIGGY.BACKUP CHECKPOINT`), so a backup moves on only when that
/// hold ended: the node restarted, or took the backup for dead (`server::backup::LEASE`).
const RETARGETS_MAX: u64 = 10;

/// Backs up the node at `addr` into the new file `to`; `progress` hears the running figures.
pub fn backup(
    addr: &str,
    to: &Path,
    config: &Config,
    options: BackupOptions,
    mut progress: impl FnMut(&BackupSummary),
) -> Result<BackupSummary> {
    if to.exists() {
        return Err(BackupError::Exists(to.to_path_buf()));
    }
    let mut client = Client::connect(addr)?;
    let partial = partial_path(to);
    let result = take(&mut client, &partial, to, config, options, &mut progress);
    // Whatever happened, the node may let the held blocks go (its lease would, later).
    let _ = client.command(&[b"ZIGGY.BACKUP", b"DONE"]);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The backup's steps, into `partial`, renamed to `to` once whole.
fn take(
    client: &mut Client,
    partial: &Path,
    to: &Path,
    config: &Config,
    options: BackupOptions,
    progress: &mut impl FnMut(&BackupSummary),
) -> Result<BackupSummary> {
    let mut point = wait_for_checkpoint(client, config)?;
    let layout = Layout::new(config);
    let file = crate::format::allocate(partial, layout.total_size(), true)?;
    let mut copy = Copy {
        client,
        config,
        options,
        progress,
    };
    let summary = copy.state(&file, &mut point)?;
    seal(&file, partial, to, config, &point, summary)
}

/// Asks for a checkpoint and waits until the node's durable one covers what it had applied.
fn wait_for_checkpoint(client: &mut Client, config: &Config) -> Result<BackupPoint> {
    let applied = match client.command(&[b"ZIGGY.BACKUP", b"CHECKPOINT"])? {
        Reply::Integer(n) if n >= 0 => n as u64,
        other => return Err(BackupError::Node(format!("{other:?}"))),
    };
    let started = Instant::now();
    loop {
        match point_of(client, config) {
            Ok(point) if point.index >= applied => return Ok(point),
            Ok(_) | Err(BackupError::Node(_)) if started.elapsed() < CHECKPOINT_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(point) => {
                return Err(BackupError::Node(format!(
                    "its checkpoint stayed at {} (below {applied}) for {CHECKPOINT_WAIT:?}",
                    point.index
                )))
            }
            Err(e) => return Err(e),
        }
    }
}

/// The node's latest durable checkpoint.
fn point_of(client: &mut Client, config: &Config) -> Result<BackupPoint> {
    let Reply::Array(items) = client.command(&[b"ZIGGY.BACKUP", b"POINT"])? else {
        return Err(BackupError::Node("POINT answered no array".into()));
    };
    let int = |reply: &Reply| match reply {
        Reply::Integer(n) => Ok(*n as u64),
        other => Err(BackupError::Node(format!("POINT answered {other:?}"))),
    };
    let [index, checksum, term, timestamp, Reply::Bulk(state), layout] = &items[..] else {
        return Err(BackupError::Node(format!("POINT answered {items:?}")));
    };
    if int(layout)? != config.layout_fingerprint() {
        return Err(BackupError::Layout);
    }
    Ok(BackupPoint {
        index: int(index)?,
        checksum: int(checksum)? as u32,
        term: int(term)?,
        timestamp: int(timestamp)?,
        state: state.clone(),
    })
}

/// A backup's copy of the checkpoint's blocks.
struct Copy<'a, P: FnMut(&BackupSummary)> {
    client: &'a mut Client,
    config: &'a Config,
    options: BackupOptions,
    progress: &'a mut P,
}

impl<P: FnMut(&BackupSummary)> Copy<'_, P> {
    /// Walks the checkpoint's tree in the file's grid, fetching what it lacks; follows the node
    /// to a newer checkpoint when one it was copying is gone. Ends with the state opened from
    /// the file.
    fn state(&mut self, file: &File, point: &mut BackupPoint) -> Result<BackupSummary> {
        let layout = Layout::new(self.config);
        let block_size = self.config.grid_block_size as u64;
        let grid_start = layout.total_size().next_multiple_of(block_size);
        let grid = FileGrid::new(file.try_clone()?, grid_start, block_size as usize)?;
        let mut machine = RedisStateMachine::new(self.config, Box::new(grid));
        machine.sync_begin(&point.state).map_err(state_error)?;
        let mut summary = BackupSummary::default();
        let mut shown = Instant::now();
        let mut wants = Vec::new();
        let per_request = self.options.blocks_per_request.clamp(1, BLOCKS_MAX);
        loop {
            wants.clear();
            let done = machine
                .sync_poll(&mut wants, per_request)
                .map_err(state_error)?;
            if wants.is_empty() {
                assert!(done, "every want is answered before the next poll");
                break;
            }
            if !self.fetch(&mut machine, &wants, &mut summary)? {
                let newer = point_of(self.client, self.config)?;
                if newer.index == point.index || summary.retargets == RETARGETS_MAX {
                    return Err(BackupError::Node(format!(
                        "a block of its checkpoint at {} is unreadable",
                        point.index
                    )));
                }
                *point = newer;
                summary.retargets += 1;
                machine.sync_begin(&point.state).map_err(state_error)?;
            }
            std::thread::sleep(self.options.pause);
            if shown.elapsed() >= Duration::from_secs(1) {
                shown = Instant::now();
                (self.progress)(&summary);
            }
        }
        machine.sync_finish(&point.state).map_err(state_error)?;
        summary.index = point.index;
        Ok(summary)
    }

    /// Fetches `wants` and hands each block to the walk; false if the node lacks one of them.
    fn fetch(
        &mut self,
        machine: &mut RedisStateMachine,
        wants: &[Want],
        summary: &mut BackupSummary,
    ) -> Result<bool> {
        let mut command: Vec<Vec<u8>> = vec![b"ZIGGY.BACKUP".to_vec(), b"BLOCKS".to_vec()];
        command.extend(wants.iter().map(encode_want));
        let mut replies = self.client.pipeline(&[command])?;
        let Reply::Array(blocks) = replies.remove(0) else {
            return Err(BackupError::Node("BLOCKS answered no array".into()));
        };
        if blocks.len() != wants.len() {
            return Err(BackupError::Node("BLOCKS answered the wrong count".into()));
        }
        let mut whole = true;
        for (&want, block) in wants.iter().zip(blocks) {
            let Reply::Bulk(bytes) = block else {
                whole = false;
                continue;
            };
            if machine.sync_block(want, &bytes).map_err(state_error)? {
                summary.fetched += 1;
                summary.bytes += bytes.len() as u64;
            } else {
                whole = false;
            }
        }
        Ok(whole)
    }
}

/// Writes the superblock and the checkpoint's blob, makes the file durable and moves it into
/// place.
fn seal(
    file: &File,
    partial: &Path,
    to: &Path,
    config: &Config,
    point: &BackupPoint,
    summary: BackupSummary,
) -> Result<BackupSummary> {
    let cluster = crate::entropy::entropy() | 1;
    let incarnation = crate::entropy::entropy() | 1;
    let writes = Replica::<RedisStateMachine>::format_at(config, cluster, incarnation, point)
        .map_err(state_error)?;
    for (offset, bytes) in writes {
        file.write_all_at(&bytes, offset)?;
    }
    file.sync_all()?;
    publish(partial, to)?;
    Ok(summary)
}

/// What a restore made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreSummary {
    pub bytes: u64,
}

/// Verifies the backup `from` and copies it to the new data file `to`.
pub fn restore(from: &Path, to: &Path, progress: impl FnMut(f64)) -> Result<RestoreSummary> {
    if to.exists() {
        return Err(BackupError::Exists(to.to_path_buf()));
    }
    let found = crate::inspect::inspect(from, true, progress)
        .map_err(|e| BackupError::State(format!("{}: {e}", from.display())))?;
    if !found.damage.is_empty() {
        return Err(BackupError::Damaged(found.damage));
    }
    let partial = partial_path(to);
    let copied = std::fs::copy(from, &partial).and_then(|bytes| {
        File::open(&partial)?.sync_all()?;
        Ok(bytes)
    });
    let bytes = match copied.and_then(|bytes| publish(&partial, to).map(|()| bytes)) {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    Ok(RestoreSummary { bytes })
}

/// `to` with `.partial` appended: where a file is built before it is renamed into place.
fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Renames the finished file into place, durably.
fn publish(partial: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(partial, to)?;
    crate::format::sync_parent_directory(to)
}
