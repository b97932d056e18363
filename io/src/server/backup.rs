//! The node's half of `ziggy backup`: `ZIGGY.BACKUP`, a connection command the core answers
//! from the replica itself (not through the log), in three forms:
//!
//! - `ZIGGY.BACKUP CHECKPOINT`: holds every block checkpoints stop referencing from reuse
//!   (`Engine::hold_frees`), so that the checkpoint the backup copies stays whole however long
//!   the copy takes, and asks for a checkpoint soon; answers the index applied now, so that the
//!   backup waits for a checkpoint holding every write acknowledged before it began.
//! - `ZIGGY.BACKUP POINT`: the latest durable checkpoint: `[index, checksum, term, timestamp,
//!   state, layout]` (the state machine's checkpoint bytes, the configuration's layout
//!   fingerprint), or an error while there is none.
//! - `ZIGGY.BACKUP BLOCKS want...`: each want 13 bytes (address u64 LE, checksum u32 LE, kind);
//!   answers a block per want, or a nil where the grid no longer holds it as referenced (a
//!   newer checkpoint freed and reused it: the backup moves on to that one).
//! - `ZIGGY.BACKUP DONE`: lets the held blocks go. A backup silent for [`LEASE`] is taken for
//!   dead and its hold ends too (the grid grows while a hold lasts).

use crate::driver::ReplicaDriver;
use std::time::{Duration, Instant};
use ziggy_core::lsm::grid::{BlockKind, BlockRef};
use ziggy_core::lsm::sync::Want;
use ziggy_redis::RedisStateMachine;
use ziggy_resp::Reply;

/// The bytes of one want on the wire.
pub const WANT_SIZE: usize = 13;
/// The most blocks one `BLOCKS` asks for.
pub const BLOCKS_MAX: usize = 64;

/// How long a hold outlives the last question of its backup.
pub const LEASE: Duration = Duration::from_secs(30);

/// A parsed `ZIGGY.BACKUP`.
#[derive(Debug)]
pub enum BackupAsk {
    Checkpoint,
    Point,
    Blocks(Vec<Want>),
    Done,
}

impl BackupAsk {
    /// Parses the arguments after the command's name.
    pub fn parse(args: &[Vec<u8>]) -> Result<BackupAsk, Reply> {
        let wrong = || Reply::error("ERR ZIGGY.BACKUP CHECKPOINT | POINT | BLOCKS want... | DONE");
        let sub = args.first().ok_or_else(wrong)?.to_ascii_uppercase();
        match sub.as_slice() {
            b"CHECKPOINT" if args.len() == 1 => Ok(BackupAsk::Checkpoint),
            b"POINT" if args.len() == 1 => Ok(BackupAsk::Point),
            b"DONE" if args.len() == 1 => Ok(BackupAsk::Done),
            b"BLOCKS" if (2..=BLOCKS_MAX + 1).contains(&args.len()) => args[1..]
                .iter()
                .map(|bytes| decode_want(bytes))
                .collect::<Option<Vec<_>>>()
                .map(BackupAsk::Blocks)
                .ok_or_else(|| Reply::error("ERR a want is 13 bytes of a known block kind")),
            _ => Err(wrong()),
        }
    }
}

pub fn encode_want(want: &Want) -> Vec<u8> {
    let mut out = Vec::with_capacity(WANT_SIZE);
    out.extend_from_slice(&want.reference.address.to_le_bytes());
    out.extend_from_slice(&want.reference.checksum.to_le_bytes());
    out.push(want.kind as u8);
    out
}

fn decode_want(bytes: &[u8]) -> Option<Want> {
    let bytes: &[u8; WANT_SIZE] = bytes.try_into().ok()?;
    Some(Want {
        reference: BlockRef {
            address: u64::from_le_bytes(bytes[0..8].try_into().unwrap()),
            checksum: u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        },
        kind: BlockKind::from_u8(bytes[12])?,
    })
}

/// The node's side of backups in progress: the hold on freed blocks and when a backup last
/// asked something.
#[derive(Debug, Default)]
pub struct Backups {
    heard: Option<Instant>,
}

impl Backups {
    /// Answers `ask` from the replica.
    pub fn answer(
        &mut self,
        driver: &mut ReplicaDriver<RedisStateMachine>,
        ask: BackupAsk,
    ) -> Reply {
        if matches!(ask, BackupAsk::Done) {
            self.release(driver);
            return Reply::ok();
        }
        if matches!(ask, BackupAsk::Checkpoint) {
            let Ok((state, _)) = driver.replica_mut().state() else {
                return Reply::error("ERR the replica is not ready: no state to back up");
            };
            state.lsm().engine().hold_frees();
        }
        if self.heard.is_some() || matches!(ask, BackupAsk::Checkpoint) {
            self.heard = Some(Instant::now());
        }
        answer(driver, ask)
    }

    /// Ends the hold of a backup that stopped asking.
    pub fn expire(&mut self, driver: &mut ReplicaDriver<RedisStateMachine>) {
        if self.heard.is_some_and(|heard| heard.elapsed() > LEASE) {
            tracing::warn!("a backup went silent: its hold on freed blocks ends");
            self.release(driver);
        }
    }

    fn release(&mut self, driver: &mut ReplicaDriver<RedisStateMachine>) {
        self.heard = None;
        if let Ok((state, _)) = driver.replica_mut().state() {
            state.lsm().engine().release_held();
        }
    }
}

fn answer(driver: &mut ReplicaDriver<RedisStateMachine>, ask: BackupAsk) -> Reply {
    match ask {
        BackupAsk::Done => unreachable!("answered by Backups::answer"),
        BackupAsk::Checkpoint => {
            driver.checkpoint_soon();
            Reply::Integer(driver.replica().applied() as i64)
        }
        BackupAsk::Point => match driver.replica().backup_point() {
            Some(point) => Reply::Array(vec![
                Reply::Integer(point.index as i64),
                Reply::Integer(point.checksum as i64),
                Reply::Integer(point.term as i64),
                Reply::Integer(point.timestamp as i64),
                Reply::Bulk(point.state),
                Reply::Integer(driver.replica().config().layout_fingerprint() as i64),
            ]),
            None => Reply::error("ERR no durable checkpoint to back up yet"),
        },
        BackupAsk::Blocks(wants) => {
            let mut out = Vec::new();
            let blocks = wants.into_iter().map(|want| {
                if driver.replica_mut().backup_block(want, &mut out) {
                    Reply::Bulk(out.clone())
                } else {
                    Reply::Nil
                }
            });
            Reply::Array(blocks.collect())
        }
    }
}
