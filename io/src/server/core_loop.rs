//! The thread that owns the core: one replica over its data file, fed groups of commands from the
//! connections through one channel. No lock is held across the core.
//!
//! Connections' groups go out on *lanes*: a small pool of client sessions, each with one request
//! in flight (so thousands of connections never evict one another). Reads go out without a
//! session and are answered by the replica's ReadIndex path. Groups that arrive while an
//! `fdatasync` runs join the next entry: that is the group commit.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use ziggy_core::wal::batch::RequestId;
use ziggy_core::wal::header::Operation;
use ziggy_core::RequestError;
use ziggy_redis::{encode_group, RedisStateMachine};

use crate::driver::{DriverError, ReplicaDriver};

/// What a connection gets back for a group: the replies (RESP3, one per command) or why the
/// group could not be carried out.
pub type GroupResult = Result<Vec<u8>, String>;

pub enum CoreMsg {
    Group {
        commands: Vec<Vec<Vec<u8>>>,
        reply: oneshot::Sender<GroupResult>,
    },
    /// Finish what is in flight, then stop.
    Shutdown,
}

/// Client sessions the server keeps for its connections' writes.
pub const LANES: usize = 32;

/// How long the loop waits for input while requests refused as busy wait to be retried.
const RETRY_WAIT: Duration = Duration::from_micros(200);

struct Lane {
    client: u64,
    session: u64,
    request: u64,
    busy: bool,
}

/// A group submitted and not yet answered.
struct Waiting {
    operation: Operation,
    body: Vec<u8>,
    lane: Option<usize>,
    reply: oneshot::Sender<GroupResult>,
}

pub struct CoreLoop {
    driver: ReplicaDriver<RedisStateMachine>,
    lanes: Vec<Lane>,
    /// Write groups waiting for a free lane.
    queued: VecDeque<(Operation, Vec<u8>, oneshot::Sender<GroupResult>)>,
    /// Submitted, by (client, request).
    waiting: BTreeMap<(u64, u64), Waiting>,
    /// Refused as busy: submitted again once IO has progressed.
    retry: Vec<(u64, u64)>,
    reads_client: u64,
    reads_request: u64,
    shutting_down: bool,
}

fn client_id(n: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    (nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (std::process::id() as u64) << 32) | 1
}

impl CoreLoop {
    /// Takes over an open driver: starts its clock at the Unix time and registers the lanes.
    pub fn new(mut driver: ReplicaDriver<RedisStateMachine>) -> Result<CoreLoop, DriverError> {
        let tick_ns = driver.replica().config().tick_ns;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let base = now.saturating_sub(driver.replica().ticks() * tick_ns);
        driver.replica_mut().set_clock_base(base);
        let mut lanes = Vec::with_capacity(LANES);
        for n in 0..LANES as u64 {
            let client = client_id(n);
            let session = driver.register(client)?;
            lanes.push(Lane {
                client,
                session,
                request: 0,
                busy: false,
            });
        }
        Ok(CoreLoop {
            driver,
            lanes,
            queued: VecDeque::new(),
            waiting: BTreeMap::new(),
            retry: Vec::new(),
            reads_client: client_id(u64::MAX),
            reads_request: 0,
            shutting_down: false,
        })
    }

    /// Runs until shut down (or every sender is gone) and nothing is in flight.
    pub fn run(mut self, inbox: Receiver<CoreMsg>) -> Result<(), DriverError> {
        let tick = Duration::from_nanos(self.driver.replica().config().tick_ns);
        loop {
            if !self.driver.has_pending_io() {
                // A request refused as busy is retried soon, not a whole tick later.
                let wait = if self.retry.is_empty() {
                    tick
                } else {
                    RETRY_WAIT
                };
                match inbox.recv_timeout(wait) {
                    Ok(msg) => self.take(msg),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => self.shutting_down = true,
                }
            }
            while let Ok(msg) = inbox.try_recv() {
                self.take(msg);
            }
            self.driver.advance_clock();
            // Groups that arrive during the fdatasync are submitted before its completions are
            // delivered: they join the entry the replica writes next.
            let completions = self.driver.flush();
            while let Ok(msg) = inbox.try_recv() {
                self.take(msg);
            }
            self.driver.complete(completions);
            self.route_replies();
            if let Some(error) = self.driver.halted() {
                let error = error.clone();
                self.fail_all(&format!("ERR the replica halted: {error}"));
                return Err(DriverError::Halted(error));
            }
            if self.shutting_down && self.waiting.is_empty() && self.queued.is_empty() {
                return self.driver.pump();
            }
        }
    }

    fn take(&mut self, msg: CoreMsg) {
        match msg {
            CoreMsg::Shutdown => self.shutting_down = true,
            CoreMsg::Group { commands, reply } => {
                let operation = if RedisStateMachine::reads_only(&commands) {
                    RedisStateMachine::READ
                } else {
                    RedisStateMachine::WRITE
                };
                let mut body = Vec::new();
                encode_group(&commands, &mut body);
                if operation == RedisStateMachine::READ {
                    self.reads_request += 1;
                    let key = (self.reads_client, self.reads_request);
                    self.submit(key, 0, operation, body, None, reply);
                } else {
                    self.queued.push_back((operation, body, reply));
                    self.start_queued();
                }
            }
        }
    }

    /// Puts queued write groups on free lanes.
    fn start_queued(&mut self) {
        while let Some(lane) = self.lanes.iter().position(|l| !l.busy) {
            let Some((operation, body, reply)) = self.queued.pop_front() else {
                return;
            };
            let l = &mut self.lanes[lane];
            l.busy = true;
            l.request += 1;
            let (key, session) = ((l.client, l.request), l.session);
            self.submit(key, session, operation, body, Some(lane), reply);
        }
    }

    fn submit(
        &mut self,
        key: (u64, u64),
        session: u64,
        operation: Operation,
        body: Vec<u8>,
        lane: Option<usize>,
        reply: oneshot::Sender<GroupResult>,
    ) {
        let id = RequestId {
            client: key.0,
            session,
            request: key.1,
        };
        self.driver.submit(id, operation, &body);
        self.waiting.insert(
            key,
            Waiting {
                operation,
                body,
                lane,
                reply,
            },
        );
    }

    fn route_replies(&mut self) {
        for (client, request) in std::mem::take(&mut self.retry) {
            if let Some(w) = self.waiting.get(&(client, request)) {
                let session = w.lane.map_or(0, |l| self.lanes[l].session);
                let id = RequestId {
                    client,
                    session,
                    request,
                };
                let (operation, body) = (w.operation, w.body.clone());
                self.driver.submit(id, operation, &body);
            }
        }
        let mut replies = Vec::new();
        self.driver.take_replies(&mut replies);
        for reply in replies {
            let key = (reply.client, reply.request);
            match reply.result {
                Err(RequestError::Busy) if self.waiting.contains_key(&key) => self.retry.push(key),
                Err(RequestError::Evicted) => self.evicted(key),
                result => {
                    let Some(waiting) = self.waiting.remove(&key) else {
                        continue; // a reply to an earlier process's request
                    };
                    if let Some(lane) = waiting.lane {
                        self.lanes[lane].busy = false;
                    }
                    let answer = result.map_err(|e| format!("ERR {e}"));
                    let _ = waiting.reply.send(answer);
                }
            }
        }
        self.start_queued();
    }

    /// A lane's session was evicted: the group was not applied, so it goes out again on the
    /// lane's new session.
    fn evicted(&mut self, key: (u64, u64)) {
        let Some(waiting) = self.waiting.remove(&key) else {
            return;
        };
        let Some(lane) = waiting.lane else {
            let _ = waiting.reply.send(Err("ERR evicted".into()));
            return;
        };
        let client = client_id(lane as u64);
        match self.driver.register(client) {
            Ok(session) => {
                self.lanes[lane] = Lane {
                    client,
                    session,
                    request: 0,
                    busy: false,
                };
                self.queued
                    .push_front((waiting.operation, waiting.body, waiting.reply));
            }
            Err(e) => {
                let _ = waiting.reply.send(Err(format!("ERR {e}")));
            }
        }
    }

    fn fail_all(&mut self, why: &str) {
        for (_, w) in std::mem::take(&mut self.waiting) {
            let _ = w.reply.send(Err(why.to_string()));
        }
        for (_, _, reply) in self.queued.drain(..) {
            let _ = reply.send(Err(why.to_string()));
        }
    }
}
