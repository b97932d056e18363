//! The thread that owns the core: one replica over its data file, fed groups of commands from the
//! connections and messages from the peers through one channel. No lock is held across the core.
//!
//! Connections' groups go out on *lanes*: a small pool of client sessions, each with one request
//! in flight (so thousands of connections never evict one another). Reads go out without a
//! session and are answered by the leader's ReadIndex path. Groups that arrive while an
//! `fdatasync` runs join the next entry: that is the group commit.
//!
//! Every request goes to the leader: the local replica when it leads, else over the peer links
//! ([`super::forward`]). A request that gets no answer is sent again — when the replica learns of
//! a new leader, or after a timeout — with the same number, so the cluster applies it once.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use ziggy_core::message::Command;
use ziggy_core::replica::Role;
use ziggy_core::wal::batch::RequestId;
use ziggy_core::wal::header::Operation;
use ziggy_redis::{encode_group, RedisStateMachine};

use super::forward::{self, client_id, origin, Answer, Route};
use super::peers::PeerLinks;
use super::status::NodeStatus;
use crate::driver::{DriverError, ReplicaDriver};

/// What a connection gets back for a group: the replies (RESP3, one per command) or why the
/// group could not be carried out.
pub type GroupResult = Result<Vec<u8>, String>;

pub enum CoreMsg {
    /// A group of commands, encoded by the connection (`ziggy_redis::encode_group`): the
    /// connections' tasks do that work beside one another, the core's thread does not.
    Group {
        body: Vec<u8>,
        /// Every command only reads: it goes out without a session, through ReadIndex.
        reads: bool,
        reply: oneshot::Sender<GroupResult>,
    },
    /// A frame from a peer replica: a message for the replica, a request forwarded to it, or the
    /// answer to one this replica forwarded.
    Peer(Vec<u8>),
    /// The replica's state, for operators.
    Status(oneshot::Sender<NodeStatus>),
    /// A backup's question (`ZIGGY.BACKUP`), answered from the replica.
    Backup(super::backup::BackupAsk, oneshot::Sender<ziggy_resp::Reply>),
    /// Finish what is in flight, then stop.
    Shutdown,
}

/// Client sessions the server keeps for its connections' writes (fewer when the configuration
/// has fewer session slots per replica: lanes must never evict one another).
/// 64: redis-benchmark's 50 clients all find a lane, so all their writes share one fdatasync.
pub const LANES: usize = 64;

/// How long the loop waits for input while requests refused as busy wait to be retried.
const RETRY_WAIT: Duration = Duration::from_micros(200);

/// How long a shutdown waits for requests in flight (a cluster may have no leader).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Expiry entries one look of the reaper returns: it bounds one read on the leader and the
/// reap (one log entry) that follows it.
const REAP_SCAN: u32 = 256;

/// The leader's reaper of expired keys and removed collections' members. It looks for them
/// with reads (no log entry) and proposes logged reaps and sweeps of what a look found, so that
/// every replica deletes the same keys at the same index (reads already hide them; this
/// reclaims their space). A keyspace with nothing to reclaim costs reads only, never a write.
#[derive(Default)]
struct Reaper {
    /// Where the pass resumes.
    cursor: Vec<u8>,
    /// The step in flight.
    answer: Option<(oneshot::Receiver<GroupResult>, Step)>,
    /// Writes the last look asked for, proposed one at a time.
    pending: VecDeque<Step>,
    /// The last look listed as many removed collections as it may: look again at once.
    look_again: bool,
    /// The tick the next pass may start at.
    next_pass: u64,
    /// Ticks between the starts of two passes; within a pass, each step follows the last
    /// one's answer at once.
    pass_ticks: u64,
    /// Expired keys reaped since the server started.
    reaped: u64,
    /// Members of removed collections swept since the server started.
    swept: u64,
    /// Log entries the reaper proposed (reaps and sweeps).
    reaps: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Look,
    /// Expiry entries to reap.
    Reap(Vec<Vec<u8>>),
    /// A removed collection's id, and where its sweep resumes.
    Sweep(u64, Vec<u8>),
}

struct Lane {
    client: u64,
    /// 0 while its registration is in flight.
    session: u64,
    request: u64,
    busy: bool,
}

/// A request sent and not yet answered: a group, or a lane's registration.
struct Waiting {
    operation: Operation,
    body: Vec<u8>,
    session: u64,
    lane: Option<usize>,
    /// None for a lane's registration.
    reply: Option<oneshot::Sender<GroupResult>>,
    /// The replica it was last sent to, and the tick to send it again at if still unanswered.
    target: u8,
    resend_at: u64,
    /// A replica that answered "not the leader" named this one.
    hint: Option<u8>,
}

pub struct CoreLoop {
    driver: ReplicaDriver<RedisStateMachine>,
    peers: PeerLinks,
    me: u8,
    cluster: u64,
    lanes: Vec<Lane>,
    /// Write groups waiting for a free lane.
    queued: VecDeque<(Operation, Vec<u8>, oneshot::Sender<GroupResult>)>,
    /// Sent, by (client, request).
    waiting: BTreeMap<(u64, u64), Waiting>,
    /// Refused as busy by the local replica: submitted again once IO has progressed.
    retry: Vec<(u64, u64)>,
    reads_client: u64,
    reads_request: u64,
    /// The leader the replica knew at the last look: when it changes, everything unanswered
    /// goes to the new one at once.
    leader_seen: Option<u8>,
    /// The tick of the last look for unanswered requests due again.
    resend_tick: u64,
    shutting_down: Option<Instant>,
    reaper: Reaper,
    backups: super::backup::Backups,
    frame: Vec<u8>,
}

/// The sending end of the core's inbox: connections, peer links and the HTTP port hold one.
pub type CoreSender = UnboundedSender<CoreMsg>;

/// A random number for client ids: sessions outlive the process, so ids must not repeat.
fn random() -> u64 {
    crate::entropy::entropy()
}

impl CoreLoop {
    /// Takes over an open driver: starts its clock at the Unix time and registers the lanes
    /// (through the leader, once there is one). While it leads, it reaps expired keys in a pass
    /// over the keyspace every `reap_every`.
    pub fn new(
        mut driver: ReplicaDriver<RedisStateMachine>,
        peers: PeerLinks,
        reap_every: Duration,
    ) -> Result<CoreLoop, DriverError> {
        let config = driver.replica().config().clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let base = now.saturating_sub(driver.replica().ticks() * config.tick_ns);
        driver.replica_mut().set_clock_base(base);
        let me = driver.replica().id();
        let count = driver.replica().replica_count() as usize;
        let lanes = (config.clients_max as usize / count).clamp(1, LANES);
        let seed = random();
        let mut core = CoreLoop {
            cluster: driver.replica().superblock().cluster,
            driver,
            peers,
            me,
            lanes: Vec::with_capacity(lanes),
            queued: VecDeque::new(),
            waiting: BTreeMap::new(),
            retry: Vec::new(),
            reads_client: client_id(me, u64::MAX, seed),
            reads_request: 0,
            leader_seen: None,
            resend_tick: 0,
            shutting_down: None,
            reaper: Reaper {
                pass_ticks: (reap_every.as_nanos() as u64 / config.tick_ns).max(1),
                ..Reaper::default()
            },
            backups: Default::default(),
            frame: Vec::new(),
        };
        for n in 0..lanes {
            core.lanes.push(Lane {
                client: client_id(me, n as u64, seed),
                session: 0,
                request: 0,
                busy: true,
            });
            core.register(n);
        }
        core.send_messages();
        Ok(core)
    }

    /// Runs until shut down (or every sender is gone) and nothing is in flight.
    ///
    /// The storage calls block (`fdatasync`), so in the real server this runs on a thread of its
    /// own, on a current-thread runtime, where blocking holds up nothing else.
    pub async fn run(mut self, mut inbox: UnboundedReceiver<CoreMsg>) -> Result<(), DriverError> {
        let tick = Duration::from_nanos(self.driver.replica().config().tick_ns);
        loop {
            if !self.driver.has_pending_io() {
                // A request refused as busy is retried soon, not a whole tick later.
                let wait = if self.retry.is_empty() {
                    tick
                } else {
                    RETRY_WAIT
                };
                match tokio::time::timeout(wait, inbox.recv()).await {
                    Ok(Some(msg)) => self.take(msg),
                    Ok(None) => self.shut_down(),
                    Err(_) => {} // the wait is over: time for a tick
                }
            }
            self.take_waiting(&mut inbox);
            self.driver.advance_clock();
            // Groups that arrive during the fdatasync are submitted before its completions are
            // delivered: they join the entry the replica writes next.
            let completions = self.driver.flush();
            self.take_waiting(&mut inbox);
            self.driver.complete(completions);
            self.route_replies();
            self.reap();
            self.backups.expire(&mut self.driver);
            self.resend_unanswered();
            self.send_messages();
            if let Some(error) = self.driver.halted() {
                let error = error.clone();
                self.fail_all(&format!("ERR the replica halted: {error}"));
                return Err(DriverError::Halted(error));
            }
            if let Some(since) = self.shutting_down {
                let idle =
                    self.queued.is_empty() && self.waiting.values().all(|w| w.reply.is_none());
                if idle || since.elapsed() > SHUTDOWN_GRACE {
                    self.fail_all("ERR the server is shutting down");
                    return self.driver.pump();
                }
            }
            // Let the other tasks of a shared runtime (madsim's) run between two steps.
            #[cfg(madsim)]
            tokio::task::yield_now().await;
        }
    }

    /// Takes every message already in the inbox.
    fn take_waiting(&mut self, inbox: &mut UnboundedReceiver<CoreMsg>) {
        loop {
            match inbox.try_recv() {
                Ok(msg) => self.take(msg),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => return self.shut_down(),
            }
        }
    }

    fn shut_down(&mut self) {
        self.shutting_down.get_or_insert_with(Instant::now);
    }

    fn take(&mut self, msg: CoreMsg) {
        match msg {
            CoreMsg::Shutdown => self.shut_down(),
            CoreMsg::Peer(bytes) => self.on_peer_frame(&bytes),
            CoreMsg::Backup(ask, reply) => {
                let _ = reply.send(self.backups.answer(&mut self.driver, ask));
            }
            CoreMsg::Status(reply) => {
                let mut status = NodeStatus::of(&self.driver);
                status.in_flight = self.waiting.len();
                status.queued = self.queued.len();
                status.reaped = self.reaper.reaped;
                status.reaps = self.reaper.reaps;
                status.swept = self.reaper.swept;
                status.compaction_debt = self
                    .driver
                    .replica_mut()
                    .state()
                    .ok()
                    .map(|(state, _)| state.lsm().engine().compaction_debt());
                let _ = reply.send(status);
            }
            CoreMsg::Group { body, reads, reply } => {
                if reads {
                    self.reads_request += 1;
                    let key = (self.reads_client, self.reads_request);
                    self.start(key, 0, RedisStateMachine::READ, body, None, Some(reply));
                } else {
                    self.queued
                        .push_back((RedisStateMachine::WRITE, body, reply));
                    self.start_queued();
                }
            }
        }
    }

    /// Takes the answer of the reaper's step in flight, then starts its next step when this
    /// replica leads: a write the last look asked for, else a look when one is due.
    fn reap(&mut self) {
        if self.reaper_answer().is_err() {
            return; // a step is still in flight
        }
        let replica = self.driver.replica();
        let pass_due = !self.reaper.cursor.is_empty()
            || self.reaper.look_again
            || replica.ticks() >= self.reaper.next_pass;
        if !replica.accepting_requests() || self.shutting_down.is_some() {
            return;
        }
        let (group, step) = match self.reaper.pending.pop_front() {
            Some(Step::Reap(entries)) => (ziggy_redis::reap_group(&entries), Step::Reap(entries)),
            Some(Step::Sweep(id, cursor)) => (
                ziggy_redis::sweep_group(id, &cursor),
                Step::Sweep(id, cursor),
            ),
            Some(Step::Look) | None if pass_due => (
                ziggy_redis::expired_group(REAP_SCAN, &self.reaper.cursor),
                Step::Look,
            ),
            Some(Step::Look) | None => return,
        };
        let (tx, rx) = oneshot::channel();
        let mut body = Vec::new();
        encode_group(&group, &mut body);
        if step == Step::Look {
            self.reads_request += 1;
            let key = (self.reads_client, self.reads_request);
            self.start(key, 0, RedisStateMachine::READ, body, None, Some(tx));
        } else {
            self.reaper.reaps += 1;
            self.queued.push_back((RedisStateMachine::WRITE, body, tx));
            self.start_queued();
        }
        self.reaper.answer = Some((rx, step));
    }

    /// Takes the answer of the reaper's step, if one was in flight; Err while it still is.
    fn reaper_answer(&mut self) -> Result<(), ()> {
        let Some((answer, step)) = &mut self.reaper.answer else {
            return Ok(());
        };
        let result = match answer.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => return Err(()),
            Err(oneshot::error::TryRecvError::Closed) => Err("dropped".to_string()),
            Ok(result) => result,
        };
        let step = step.clone();
        self.reaper.answer = None;
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(why) => {
                tracing::debug!(%why, ?step, "a reaper step failed; the next look finds its work again");
                self.reaper.pending.clear();
                return Ok(());
            }
        };
        match step {
            Step::Look => {
                match ziggy_redis::decode_expired_reply(&bytes) {
                    Some(found) => {
                        self.reaper.cursor = found.cursor;
                        // A full list of removed collections: more may follow it.
                        self.reaper.look_again = found.dead.len() == REAP_SCAN as usize;
                        if !found.entries.is_empty() {
                            self.reaper.pending.push_back(Step::Reap(found.entries));
                        }
                        let sweeps = found.dead.into_iter().map(|id| Step::Sweep(id, Vec::new()));
                        self.reaper.pending.extend(sweeps);
                    }
                    None => {
                        tracing::warn!("a look for expired keys answered something else");
                        self.reaper.cursor.clear();
                    }
                }
                if self.reaper.cursor.is_empty() && !self.reaper.look_again {
                    self.reaper.next_pass = self.driver.replica().ticks() + self.reaper.pass_ticks;
                }
            }
            Step::Reap(_) => match ziggy_redis::decode_reap_reply(&bytes) {
                Some(deleted) => self.reaper.reaped += deleted,
                None => tracing::warn!("a reap answered something else"),
            },
            Step::Sweep(id, _) => match ziggy_redis::decode_sweep_reply(&bytes) {
                Some(swept) => {
                    self.reaper.swept += swept.deleted;
                    if !swept.cursor.is_empty() {
                        self.reaper
                            .pending
                            .push_front(Step::Sweep(id, swept.cursor)); // more remain
                    }
                }
                None => tracing::warn!("a sweep answered something else"),
            },
        }
        Ok(())
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
            self.start(key, session, operation, body, Some(lane), Some(reply));
        }
    }

    /// Sends lane `n`'s registration; the lane is busy until it is answered.
    fn register(&mut self, n: usize) {
        let key = (self.lanes[n].client, 0);
        self.start(key, 0, Operation::REGISTER, Vec::new(), Some(n), None);
    }

    fn start(
        &mut self,
        key: (u64, u64),
        session: u64,
        operation: Operation,
        body: Vec<u8>,
        lane: Option<usize>,
        reply: Option<oneshot::Sender<GroupResult>>,
    ) {
        let waiting = Waiting {
            operation,
            body,
            session,
            lane,
            reply,
            target: self.me,
            resend_at: 0,
            hint: None,
        };
        self.waiting.insert(key, waiting);
        self.send(key);
    }

    /// The replica a request should go to: this one if it leads, else the leader it knows, else
    /// the one a refusal named.
    fn target(&self, hint: Option<u8>) -> u8 {
        let replica = self.driver.replica();
        if replica.role() == Role::Leader {
            return self.me;
        }
        replica.leader().or(hint).unwrap_or(self.me)
    }

    /// Sends (or sends again) the request waiting under `key`, to the leader.
    fn send(&mut self, key: (u64, u64)) {
        let now = self.driver.replica().ticks();
        let timeout = self.driver.replica().config().election_ticks;
        let Some(hint) = self.waiting.get(&key).map(|w| w.hint) else {
            return;
        };
        let target = self.target(hint);
        let w = &self.waiting[&key];
        let id = RequestId {
            client: key.0,
            session: w.session,
            request: key.1,
        };
        if target == self.me {
            self.driver.submit(id, w.operation, &w.body);
        } else {
            let route = Route {
                cluster: self.cluster,
                from: self.me,
                to: target,
            };
            forward::encode_request(&route, id, w.operation, &w.body, &mut self.frame);
            self.peers.send(target, &self.frame);
        }
        if let Some(w) = self.waiting.get_mut(&key) {
            w.target = target;
            w.resend_at = now + timeout;
        }
    }

    /// Sends again what is due: everything, when the replica has learned of a new leader; else
    /// what timed out or was told to try again.
    fn resend_unanswered(&mut self) {
        let leader = self.driver.replica().leader();
        let now = self.driver.replica().ticks();
        let changed = leader != self.leader_seen;
        if !changed && now == self.resend_tick {
            return;
        }
        if changed {
            let term = self.driver.replica().term();
            match leader {
                Some(l) => tracing::info!(leader = l, term, me = self.me, "leader known"),
                None => tracing::info!(term, me = self.me, "no leader known"),
            }
        }
        self.leader_seen = leader;
        self.resend_tick = now;
        let due: Vec<(u64, u64)> = self
            .waiting
            .iter()
            .filter(|(_, w)| {
                (changed && leader.is_some_and(|l| l != w.target)) || w.resend_at <= now
            })
            .map(|(&key, _)| key)
            .collect();
        for key in due {
            self.send(key);
        }
    }

    fn on_peer_frame(&mut self, bytes: &[u8]) {
        match forward::command(bytes) {
            Some(Command::Request) => {
                let Some((id, operation, body)) =
                    forward::decode_request(bytes, self.cluster, self.me)
                else {
                    return;
                };
                if origin(id.client).is_some_and(|o| o != self.me) {
                    self.driver.submit(id, operation, body);
                }
            }
            Some(Command::Reply) => {
                if let Some((client, request, answer)) =
                    forward::decode_reply(bytes, self.cluster, self.me)
                {
                    self.answer((client, request), answer, false);
                }
            }
            _ => self.driver.on_message(bytes),
        }
    }

    /// Hands the replica's outgoing messages to the peer links.
    fn send_messages(&mut self) {
        let peers = &self.peers;
        self.driver.drain_messages(|to, bytes| {
            peers.send(to, bytes);
        });
    }

    /// Delivers the local replica's replies: to this replica's waiting requests, or back to the
    /// replica that forwarded the request.
    fn route_replies(&mut self) {
        for key in std::mem::take(&mut self.retry) {
            if self.waiting.contains_key(&key) {
                self.send(key);
            }
        }
        let mut replies = Vec::new();
        self.driver.take_replies(&mut replies);
        for reply in replies {
            let answer = Answer::from_reply(reply.index, reply.result);
            match origin(reply.client) {
                Some(o) if o == self.me => self.answer((reply.client, reply.request), answer, true),
                Some(o) => {
                    let route = Route {
                        cluster: self.cluster,
                        from: self.me,
                        to: o,
                    };
                    forward::encode_reply(
                        &route,
                        reply.client,
                        reply.request,
                        &answer,
                        &mut self.frame,
                    );
                    self.peers.send(o, &self.frame);
                }
                None => {} // not a server's client: nobody waits for it
            }
        }
        self.start_queued();
    }

    /// What to do with the answer to a request of this replica's (`local`: from this replica).
    fn answer(&mut self, key: (u64, u64), answer: Answer, local: bool) {
        let now = self.driver.replica().ticks();
        let Some(w) = self.waiting.get_mut(&key) else {
            return; // answered already (a resend's second answer), or an earlier process's
        };
        match answer {
            Answer::Busy if local => self.retry.push(key),
            Answer::Busy => w.resend_at = now + 1,
            Answer::NotLeader(hint) => {
                w.hint = hint;
                w.resend_at = now + 1;
            }
            Answer::Evicted => self.evicted(key),
            Answer::Done { index, reply } => {
                let w = self.waiting.remove(&key).expect("looked up above");
                self.finish(w, index, Ok(reply));
            }
            Answer::Failed(why) => {
                let w = self.waiting.remove(&key).expect("looked up above");
                self.finish(w, 0, Err(format!("ERR {why}")));
            }
        }
    }

    /// A request is answered: a registration gives its lane a session, a group's reply goes to
    /// its connection.
    fn finish(&mut self, w: Waiting, index: u64, result: GroupResult) {
        let lane = w.lane.map(|n| &mut self.lanes[n]);
        match (w.reply, lane) {
            (None, Some(lane)) if result.is_ok() => {
                assert!(index > 0, "a session is the index of its registration");
                lane.session = index;
                lane.busy = false;
            }
            (None, Some(_)) => {
                let n = w.lane.expect("matched above");
                tracing::warn!(lane = n, error = ?result.err(), "lane registration refused; retrying");
                self.register(n);
            }
            (Some(reply), lane) => {
                if let Some(lane) = lane {
                    lane.busy = false;
                }
                let _ = reply.send(result);
            }
            (None, None) => unreachable!("only lanes register"),
        }
        self.start_queued();
    }

    /// A lane's session was evicted: the group was not applied, so it goes out again once the
    /// lane has a new session.
    fn evicted(&mut self, key: (u64, u64)) {
        let Some(w) = self.waiting.remove(&key) else {
            return;
        };
        let Some(n) = w.lane else {
            if let Some(reply) = w.reply {
                let _ = reply.send(Err("ERR evicted".into()));
            }
            return;
        };
        let client = client_id(self.me, n as u64, random());
        self.lanes[n] = Lane {
            client,
            session: 0,
            request: 0,
            busy: true,
        };
        if let Some(reply) = w.reply {
            self.queued.push_front((w.operation, w.body, reply));
        }
        self.register(n);
    }

    fn fail_all(&mut self, why: &str) {
        for (_, w) in std::mem::take(&mut self.waiting) {
            if let Some(reply) = w.reply {
                let _ = reply.send(Err(why.to_string()));
            }
        }
        for (_, _, reply) in self.queued.drain(..) {
            let _ = reply.send(Err(why.to_string()));
        }
    }
}
