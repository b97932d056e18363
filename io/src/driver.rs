//! A small synchronous driver: one [`Replica`] over one [`FileStorage`], on the calling thread.
//!
//! The replica never blocks; the driver is what waits. [`Driver::step`] makes the pending writes
//! durable with one `fdatasync` and delivers every completion, which lets the replica submit its
//! next IO; [`Driver::pump`] steps until nothing is pending. Requests submitted between two steps
//! share the next step's `fdatasync` (group commit).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ziggy_core::config::{ConfigError, Zone};
use ziggy_core::storage_contract::Completion;
use ziggy_core::superblock;
use ziggy_core::wal::batch::RequestId;
use ziggy_core::wal::header::Operation;
use ziggy_core::{
    Config, Error, Event, KvStateMachine, Layout, Replica, Reply, RequestError, StateMachine,
    Status,
};

use crate::db::FileGrid;
use crate::file_storage::{lock_data_file, FileStorage, StorageStats};

/// Why the driver could not open a data file or carry out a request.
#[derive(Debug)]
pub enum DriverError {
    /// The data file could not be opened or locked.
    Io { path: PathBuf, error: io::Error },
    /// The configuration is invalid.
    Config(ConfigError),
    /// The data file is shorter than the configuration's layout, though its superblock matches.
    Truncated {
        path: PathBuf,
        len: u64,
        expected: u64,
    },
    /// The replica stopped on an unrecoverable error (a corrupt or foreign file, a failed write).
    Halted(Error),
    /// The replica refused a request.
    Request(RequestError),
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            DriverError::Config(error) => write!(f, "{error}"),
            DriverError::Truncated {
                path,
                len,
                expected,
            } => write!(
                f,
                "{}: data file is {len} bytes but its layout needs {expected}: it was truncated",
                path.display()
            ),
            DriverError::Halted(error) => write!(f, "replica halted: {error}"),
            DriverError::Request(error) => write!(f, "request refused: {error}"),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DriverError::Io { error, .. } => Some(error),
            DriverError::Config(error) => Some(error),
            DriverError::Halted(error) => Some(error),
            DriverError::Truncated { .. } | DriverError::Request(_) => None,
        }
    }
}

/// One replica over one data file. See the module documentation.
pub struct ReplicaDriver<S: StateMachine> {
    replica: Replica<S>,
    storage: FileStorage,
    /// Replies not yet taken by [`Driver::take_replies`] or a convenience call.
    replies: Vec<Reply>,
    halted: Option<Error>,
    checkpoints: u64,
    started: Instant,
    /// The client id, session (0 until registered) and last request number of the convenience
    /// calls (`put`, `delete`).
    client: u64,
    session: u64,
    request: u64,
}

/// The driver of the key-value machine (the simulator's, `bench-wal`'s and the tests').
pub type Driver = ReplicaDriver<KvStateMachine>;

impl<S: StateMachine> ReplicaDriver<S> {
    /// Opens a formatted data file and recovers it: reads the superblock, the checkpoint and the
    /// WAL, and replays. Returns once the replica is ready, or with the error that halted it.
    ///
    /// The file is locked (`flock`), so that two processes never drive the same data file.
    pub fn open(path: &Path, config: &Config) -> Result<ReplicaDriver<S>, DriverError> {
        config.validate().map_err(DriverError::Config)?;
        let io_error = |error| DriverError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error)?;
        lock_data_file(&file).map_err(io_error)?;
        let layout = Layout::new(config);
        check_length(path, &file, config, &layout)?;
        // The LSM grid lives after the fixed zones and grows at the end of the file.
        let block_size = config.grid_block_size as u64;
        let grid_start = layout.total_size().next_multiple_of(block_size);
        let clone = file.try_clone().map_err(io_error)?;
        let grid = FileGrid::new(clone, grid_start, block_size as usize).map_err(io_error)?;
        let replica =
            Replica::new(config.clone(), seed(), Box::new(grid)).map_err(DriverError::Config)?;
        let storage =
            FileStorage::from_file(file, replica.layout().sector_size).map_err(io_error)?;
        let mut driver = ReplicaDriver {
            replica,
            storage,
            replies: Vec::new(),
            halted: None,
            checkpoints: 0,
            started: Instant::now(),
            client: fresh_client_id(),
            session: 0,
            request: 0,
        };
        driver.replica.open(&mut driver.storage);
        while driver.replica.status() == Status::Opening {
            assert!(
                driver.step() > 0,
                "the replica is opening but submitted no IO"
            );
        }
        // A single node is a cluster of one: it elects itself and commits a no-op of its term
        // (its durable term and vote are superblock writes) before it takes requests. A member
        // of a larger cluster needs its peers for that: its server feeds it their messages.
        let alone = driver.replica.replica_count() == 1;
        while alone && driver.halted.is_none() && !driver.replica.accepting_requests() {
            assert!(
                driver.step() > 0,
                "the replica is electing itself but submitted no IO"
            );
        }
        // Replaying the log as leader answers the requests it holds again: nobody waits for
        // those replies, and a caller reusing a (client, request) pair must not receive them.
        driver.replica.drain_replies().for_each(drop);
        match driver.halted.take() {
            Some(error) => Err(DriverError::Halted(error)),
            None => Ok(driver),
        }
    }

    pub fn replica(&self) -> &Replica<S> {
        &self.replica
    }

    /// The replica, for a server that feeds it (peers' messages, its clock base).
    pub fn replica_mut(&mut self) -> &mut Replica<S> {
        &mut self.replica
    }

    /// Asks for a checkpoint at the next chance (a backup's): see `Replica::checkpoint_soon`.
    pub fn checkpoint_soon(&mut self) {
        self.replica.checkpoint_soon(&mut self.storage);
    }

    pub fn storage_stats(&self) -> StorageStats {
        self.storage.stats()
    }

    /// The durations of the data file's `fdatasync`s so far.
    pub fn sync_latency(&self) -> &crate::metrics::Histogram {
        self.storage.sync_latency()
    }

    /// Checkpoints completed since the driver opened.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }

    /// The error that halted the replica, if it halted.
    pub fn halted(&self) -> Option<&Error> {
        self.halted.as_ref()
    }

    /// Whether submitted IO waits for the next [`Driver::step`].
    pub fn has_pending_io(&self) -> bool {
        self.storage.has_pending()
    }

    /// Submits a client request. Its reply arrives through [`Driver::take_replies`], at once if the
    /// replica refuses it, else once it is durable and applied (after a few steps).
    pub fn submit(&mut self, id: RequestId, operation: Operation, body: &[u8]) {
        self.advance_clock();
        self.replica.submit(&mut self.storage, id, operation, body);
    }

    /// Registers a session for `client` and returns its number, for the requests it submits.
    pub fn register(&mut self, client: u64) -> Result<u64, DriverError> {
        let id = RequestId {
            client,
            session: 0,
            request: 0,
        };
        let (session, _) = self.call(id, Operation::REGISTER, &[])?;
        Ok(session)
    }

    /// Delivers a message from a peer replica (one that fails its checks is dropped and counted).
    pub fn on_message(&mut self, bytes: &[u8]) {
        self.advance_clock();
        self.replica.on_message(&mut self.storage, bytes);
        self.drain_events();
    }

    /// Hands each message the replica wants sent to `send(peer, bytes)`.
    pub fn drain_messages(&mut self, send: impl FnMut(u8, &[u8])) {
        self.replica.drain_messages(send);
    }

    /// Moves the replies that have arrived into `out`.
    pub fn take_replies(&mut self, out: &mut Vec<Reply>) {
        out.append(&mut self.replies);
        out.extend(self.replica.drain_replies());
    }

    /// Makes the pending writes durable (one `fdatasync`) and delivers every pending completion.
    /// Returns how many completions were delivered (0: nothing was pending).
    pub fn step(&mut self) -> usize {
        let completions = self.flush();
        self.complete(completions)
    }

    /// The first half of [`Driver::step`]: makes the pending writes durable and returns the
    /// completions, without delivering them yet.
    ///
    /// Requests submitted before the completions are delivered join the replica's next WAL
    /// batch, which it submits as soon as the current one completes. A server that submits the
    /// requests that arrived during the `fdatasync` here saves them a whole extra round.
    pub fn flush(&mut self) -> Vec<Completion> {
        // Requests gathered while an entry write was in flight join this fdatasync.
        self.replica.prepare_flush(&mut self.storage);
        self.storage.flush()
    }

    /// The second half of [`Driver::step`]: delivers completions from [`Driver::flush`].
    /// Returns how many there were.
    pub fn complete(&mut self, completions: Vec<Completion>) -> usize {
        self.advance_clock();
        for completion in &completions {
            self.deliver(completion);
        }
        self.drain_events();
        completions.len()
    }

    /// Steps until no IO is pending.
    pub fn pump(&mut self) -> Result<(), DriverError> {
        while self.step() > 0 {}
        match &self.halted {
            Some(error) => Err(DriverError::Halted(error.clone())),
            None => Ok(()),
        }
    }

    fn deliver(&mut self, completion: &Completion) {
        let storage = &mut self.storage;
        match completion {
            Completion::Read { id, result } => {
                self.replica
                    .on_read_complete(storage, *id, result.as_deref().map_err(|e| *e))
            }
            Completion::Write { id, result } => {
                self.replica.on_write_complete(storage, *id, *result)
            }
        }
    }

    /// Keeps what the driver needs from the replica's events; the replica would otherwise
    /// accumulate one event per applied entry.
    fn drain_events(&mut self) {
        for event in self.replica.drain_events() {
            match event {
                Event::Halted(error) => self.halted = Some(error),
                Event::Checkpointed { .. } => self.checkpoints += 1,
                _ => {}
            }
        }
    }

    /// Feeds the replica the ticks that elapsed (its timestamps are derived from ticks).
    pub fn advance_clock(&mut self) {
        let tick_ns = self.replica.config().tick_ns as u128;
        let due = (self.started.elapsed().as_nanos() / tick_ns) as u64;
        while self.replica.ticks() < due {
            self.replica.tick(&mut self.storage);
        }
    }

    /// Submits one request and steps until its reply arrives. A `Busy` refusal (the ring is full
    /// until a checkpoint lands) is retried with the same request number once IO has progressed.
    pub fn execute(&mut self, operation: Operation, body: &[u8]) -> Result<Vec<u8>, DriverError> {
        if self.session == 0 {
            self.session = self.register(self.client)?;
        }
        self.request += 1;
        let id = RequestId {
            client: self.client,
            session: self.session,
            request: self.request,
        };
        self.call(id, operation, body).map(|(_, reply)| reply)
    }

    /// Submits one request, steps until its reply arrives, and returns the index it was applied
    /// at with the reply.
    pub fn call(
        &mut self,
        id: RequestId,
        operation: Operation,
        body: &[u8],
    ) -> Result<(u64, Vec<u8>), DriverError> {
        self.submit(id, operation, body);
        loop {
            match self.take_reply(id) {
                None => self.step_or_halted()?,
                Some(Reply {
                    result: Err(RequestError::Busy),
                    ..
                }) => {
                    // Retry once IO has progressed; with nothing pending, nothing would change.
                    if self.step() == 0 {
                        return Err(self.request_error(RequestError::Busy));
                    }
                    self.submit(id, operation, body);
                }
                Some(reply) => {
                    let index = reply.index;
                    return reply
                        .result
                        .map(|r| (index, r))
                        .map_err(|error| self.request_error(error));
                }
            }
        }
    }

    fn take_reply(&mut self, id: RequestId) -> Option<Reply> {
        self.replies.extend(self.replica.drain_replies());
        let at = self
            .replies
            .iter()
            .position(|r| r.client == id.client && r.request == id.request)?;
        Some(self.replies.remove(at))
    }

    /// Steps once; with nothing pending, a request waiting for a reply can only mean a halt.
    fn step_or_halted(&mut self) -> Result<(), DriverError> {
        if self.step() > 0 {
            return Ok(());
        }
        let error = self
            .halted
            .clone()
            .expect("a request waits, no IO is pending, yet no halt");
        Err(DriverError::Halted(error))
    }

    fn request_error(&self, error: RequestError) -> DriverError {
        match (&self.halted, error) {
            (Some(halted), RequestError::Halted) => DriverError::Halted(halted.clone()),
            (_, error) => DriverError::Request(error),
        }
    }
}

impl Driver {
    // Convenience calls: one request at a time, waiting for its reply.

    /// Stores `value` under `key`; returns once the put is durable and applied.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), DriverError> {
        self.execute(KvStateMachine::PUT, &KvStateMachine::put_body(key, value))
            .map(drop)
    }

    /// Deletes `key`; returns whether it existed, once the delete is durable and applied.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, DriverError> {
        let reply = self.execute(KvStateMachine::DELETE, &KvStateMachine::delete_body(key))?;
        Ok(reply == [1])
    }

    /// The value of `key` in the applied state (linearizable: only durable entries are applied).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, DriverError> {
        let (state, _) = self.replica.state().map_err(DriverError::Request)?;
        state
            .get(key)
            .map_err(|e| DriverError::Halted(ziggy_core::Error::State(e)))
    }
}

/// Refuses a file shorter than the layout before the replica reads past its end, with the error
/// the replica itself would give when the superblock explains why (not a data file, or one
/// formatted with another layout).
fn check_length(
    path: &Path,
    file: &File,
    config: &Config,
    layout: &Layout,
) -> Result<(), DriverError> {
    let io_error = |error| DriverError::Io {
        path: path.to_path_buf(),
        error,
    };
    let len = file.metadata().map_err(io_error)?.len();
    let expected = layout.total_size();
    if len >= expected {
        return Ok(());
    }
    let zone_size = layout.zone_size(Zone::Superblock);
    if len < zone_size {
        return Err(DriverError::Halted(Error::NoValidSuperblock));
    }
    let mut zone = vec![0u8; zone_size as usize];
    file.read_exact_at(&mut zone, layout.zone_start(Zone::Superblock))
        .map_err(io_error)?;
    let fingerprint = config.layout_fingerprint();
    match superblock::select(layout, &zone) {
        None => Err(DriverError::Halted(Error::NoValidSuperblock)),
        Some(s) if s.superblock.layout != fingerprint => {
            Err(DriverError::Halted(Error::LayoutMismatch {
                file: s.superblock.layout,
                config: fingerprint,
            }))
        }
        Some(_) => Err(DriverError::Truncated {
            path: path.to_path_buf(),
            len,
            expected,
        }),
    }
}

/// A client id for this process's convenience calls: sessions outlive a process, so request
/// numbers restarting at 1 under a reused id would be refused as stale.
fn fresh_client_id() -> u64 {
    crate::entropy::entropy().max(1)
}

/// The seed of the replica's election timeouts. The runtime may use the OS; the core never does.
fn seed() -> u64 {
    crate::entropy::entropy()
}
