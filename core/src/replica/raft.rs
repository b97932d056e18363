//! Raft: elections with PreVote and CheckQuorum, pipelined replication, commit on quorum, log
//! repair through the hash chain — and the storage-fault rules beyond textbook Raft.
//!
//! - **Timers are ticks.** Election timeouts are drawn from `[t, 2t)` with the replica's seeded
//!   PRNG. A leader heartbeats every `heartbeat_ticks`, retransmitting whatever a follower has not
//!   acknowledged.
//! - **PreVote**: a follower whose timer fires first asks for pre-votes for `term + 1` without
//!   changing its term; only with a quorum does it campaign for real. A replica that heard from a
//!   leader within an election timeout (the leader's lease) refuses both pre-votes and votes, so a
//!   partitioned or flapping replica cannot depose a healthy leader.
//! - **CheckQuorum**: a leader that has not heard from a quorum within an election timeout steps
//!   down.
//! - **Durability before speech**: a vote is sent only once the superblock holds it; a follower
//!   acknowledges entries only once they are durable and its term is durable.
//! - **Log matching by hash chain**: an Append names the previous entry by index and checksum;
//!   each entry's parent checksum chains it to the one before, so a match at one index proves the
//!   whole prefix equal.
//! - **Faulty entries** (see `wal::recovery`): a replica whose log holds a hole does not
//!   campaign (a leader must serve every entry). It votes only while it knows its last entry's
//!   term — the up-to-date rule needs nothing else — so a head lost with its redundant header
//!   (row 12) silences it. The leader's copy fills a hole; one the leader's log contradicts is
//!   replaced (it was never committed). Without a leader, the replica asks its peers
//!   (`hole.rs`). A single replica cannot be repaired and halts on open instead.
//! - **Catch-up**: a follower behind the leader's checkpoint (the ring has wrapped past what it
//!   needs) takes the checkpoint itself, block by block (state sync, see `sync.rs`).

use super::{Event, Replica, Status};
use crate::config::PlantedBug;
use crate::io::Storage;
use crate::marks::Mark;
use crate::message::{Command, Header, OFFER_FROM_PEER};
use crate::state_machine::StateMachine;
use crate::wal::header::{EntryHeader, Operation, HEADER_SIZE};
use crate::wal::journal::AppendError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Progress {
    /// The next index to send.
    pub next: u64,
    /// The highest index known durable on the peer and equal to ours.
    pub matched: u64,
    /// The tick of the peer's latest reply (CheckQuorum).
    pub heard: u64,
    /// Whether the peer acknowledged anything in this term (until then `matched` is unknown).
    pub acked: bool,
}

pub(crate) struct Raft {
    pub role: Role,
    pub term: u64,
    pub voted_for: Option<u8>,
    pub leader: Option<u8>,
    /// Pre-votes or votes granted (bit per replica).
    pub votes: u64,
    pub election_deadline: u64,
    pub heartbeat_due: u64,
    pub quorum_check_due: u64,
    /// The tick this follower last heard from the leader of its term.
    pub leader_contact: Option<u64>,
    pub progress: Vec<Progress>,
    /// A granted vote to send once it is durable.
    pub vote_reply_pending: Option<u8>,
    /// Whether this candidate has sent its vote requests (it waits for its durable vote).
    pub votes_requested: bool,
    /// Follower: the highest index known to equal the current leader's log.
    pub match_bound: u64,
    /// Follower: owes the leader an acknowledgement.
    pub append_reply_due: bool,
    /// Leader: has committed an entry of its own term (and so knows the commit index).
    pub leader_ready: bool,
    /// The incarnations of the peers' data files as first heard (0: not yet), persisted in the
    /// superblock; and the last refused incarnation of each (to report a replacement once).
    pub peers: [u64; crate::superblock::REPLICAS_MAX],
    pub refused: [u64; crate::superblock::REPLICAS_MAX],
    /// ReadIndex. Leader: the sequence of its latest heartbeat round, and the highest round each
    /// peer acknowledged in this term. Follower: the highest round heard from the leader.
    pub round: u64,
    pub round_acked: Vec<u64>,
    pub round_wanted: bool,
    pub leader_round: u64,
    /// Candidate: the log heads the other replicas reported with their votes in this term
    /// (granted or not), for `make_room_for_noop`.
    pub heads: Vec<Option<u64>>,
    /// A hole inquiry under way (see `hole.rs`), and a peer's query to answer once durable.
    pub inquiry: Option<super::hole::Inquiry>,
    pub answer_pending: Option<super::hole::PendingAnswer>,
}

impl Raft {
    /// The term of the hole inquiry under way (0: none).
    fn inquiry_term(&self) -> u64 {
        self.inquiry.as_ref().map_or(0, super::hole::Inquiry::term)
    }

    pub fn new(count: u8) -> Raft {
        Raft {
            role: Role::Follower,
            term: 0,
            voted_for: None,
            leader: None,
            votes: 0,
            election_deadline: 0,
            heartbeat_due: 0,
            quorum_check_due: 0,
            leader_contact: None,
            progress: vec![Progress::default(); count as usize],
            vote_reply_pending: None,
            votes_requested: false,
            match_bound: 0,
            append_reply_due: false,
            leader_ready: false,
            peers: [0; crate::superblock::REPLICAS_MAX],
            refused: [0; crate::superblock::REPLICAS_MAX],
            round: 0,
            round_acked: vec![0; count as usize],
            heads: vec![None; count as usize],
            round_wanted: false,
            leader_round: 0,
            inquiry: None,
            answer_pending: None,
        }
    }
}

/// Whether only the leader of the header's term sends a message like this one.
fn from_leader(header: &Header) -> bool {
    match header.command {
        Command::Append => true,
        Command::SyncOffer => header.d & OFFER_FROM_PEER == 0,
        _ => false,
    }
}

fn bit(replica: u8) -> u64 {
    1 << replica
}

impl<S: StateMachine> Replica<S> {
    pub(crate) fn quorum(&self) -> u32 {
        self.count as u32 / 2 + 1
    }

    fn election_timeout(&mut self) -> u64 {
        let base = self.config.election_ticks;
        base + self.prng.below(base)
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.raft.election_deadline = self.ticks + self.election_timeout();
    }

    /// Whether this replica may campaign: its log is whole (a leader must serve every entry)
    /// and it is not installing a checkpoint.
    fn may_campaign(&self) -> bool {
        self.journal.first_faulty().is_none() && !self.installing()
    }

    /// Whether this replica may vote: it knows the term of its last entry. Raft's up-to-date
    /// rule needs only that (a committed entry this voter holds lies at or below its head, and
    /// a candidate at least as up to date holds it), so holes below the head do not matter; a
    /// head lost with its header does, because its term is unknown (see `hole.rs`).
    fn may_vote(&self) -> bool {
        if self.installing() {
            return false;
        }
        // Planted bug VoteDespiteFaulty: a lost head reads as term 0.
        self.config.planted_bug == Some(PlantedBug::VoteDespiteFaulty) || self.last_log_known()
    }

    fn last_log_known(&self) -> bool {
        let head = self.journal.head();
        self.journal.term_at(head).is_some() || self.journal.faulty_header(head).is_some()
    }

    fn lease_active(&self) -> bool {
        self.raft.role == Role::Leader
            || self
                .raft
                .leader_contact
                .is_some_and(|t| self.ticks < t + self.config.election_ticks)
    }

    /// The (index, term) of the last entry, for the up-to-date comparison (term 0 where a lost
    /// head hides it: such a replica neither votes nor campaigns, see `may_vote`).
    fn last_log(&self) -> (u64, u64) {
        let head = self.journal.head();
        let term = self
            .journal
            .term_at(head)
            .or_else(|| self.journal.faulty_header(head).map(|h| h.term));
        (head, term.unwrap_or(0))
    }

    fn up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let (index, term) = self.last_log();
        (last_term, last_index) >= (term, index)
    }

    pub(crate) fn peer_header(&self, command: Command, to: u8) -> Header {
        self.header(command, to)
    }

    fn header(&self, command: Command, to: u8) -> Header {
        let mut header = Header::new(self.cluster, self.raft.term, command, self.id, to);
        header.incarnation = self.superblock.incarnation;
        header
    }

    fn peers(&self) -> impl Iterator<Item = u8> + 'static {
        let (id, count) = (self.id, self.count);
        (0..count).filter(move |&r| r != id)
    }

    fn role_event(&mut self) {
        self.events.push(Event::Role {
            role: self.raft.role,
            term: self.raft.term,
            leader: self.raft.leader,
        });
    }

    /// Called once the replica is open.
    pub(crate) fn raft_start(&mut self) {
        self.raft.match_bound = self.commit;
        self.reset_election_timer();
        if self.count == 1 {
            self.start_pre_vote();
        }
    }

    pub(crate) fn raft_tick<T: Storage>(&mut self, storage: &mut T) {
        if self.raft.role == Role::Leader {
            if self.ticks >= self.raft.heartbeat_due {
                self.raft.heartbeat_due = self.ticks + self.config.heartbeat_ticks;
                self.replicate_all(true);
            }
            if self.ticks >= self.raft.quorum_check_due {
                self.raft.quorum_check_due = self.ticks + self.config.election_ticks;
                // Planted bug LocalReads models a leader that trusts its lease blindly.
                let trusting = self.config.planted_bug == Some(PlantedBug::LocalReads);
                if !trusting && !self.quorum_active() {
                    let term = self.raft.term;
                    self.become_follower(term, None);
                }
            }
        } else if self.ticks >= self.raft.election_deadline {
            self.start_pre_vote();
        }
        self.settle_inquiry(); // one that waited for writes in flight
        if self.state_lost && self.ticks >= self.raft.heartbeat_due {
            self.raft.heartbeat_due = self.ticks + self.config.heartbeat_ticks;
            self.request_state();
        }
        self.advance(storage);
    }

    /// CheckQuorum: whether a quorum (this leader included) was heard within an election timeout.
    fn quorum_active(&self) -> bool {
        let window = self.config.election_ticks;
        let heard = self
            .peers()
            .filter(|&p| self.raft.progress[p as usize].heard + window > self.ticks)
            .count();
        heard as u32 + 1 >= self.quorum()
    }

    /// Asks for a checkpoint to replace a lost state: the leader, or with no leader known, the
    /// peer serving the sync under way while it answers, else each peer in turn (a replica that
    /// lost its state may not campaign, so it cannot wait for a leader that needs its vote).
    fn request_state(&mut self) {
        if self.count == 1 {
            return; // a single replica halts instead (see `on_state_error`)
        }
        let source = match (self.raft.leader, &self.sync) {
            (Some(leader), _) => leader,
            (None, Some(sync)) if sync.target.heard + self.config.election_ticks > self.ticks => {
                sync.target.source
            }
            (None, _) => {
                let turn = self.ticks / self.config.election_ticks;
                let peers = self.count as u64 - 1;
                self.peers()
                    .nth((turn % peers) as usize)
                    .expect("a cluster")
            }
        };
        if source == self.id {
            return;
        }
        let mut header = self.header(Command::StateRequest, source);
        header.a = self.journal.checkpoint();
        self.send(header, &[]);
    }

    fn start_pre_vote(&mut self) {
        self.reset_election_timer();
        if self.state_lost || self.installing() {
            return; // a replica without a state waits for the leader
        }
        if !self.may_campaign() {
            return self.start_inquiry(); // no leader came to repair the holes: ask the peers
        }
        self.raft.role = Role::PreCandidate;
        self.raft.votes = bit(self.id);
        let (last_index, last_term) = self.last_log();
        for peer in self.peers() {
            let mut header = self.header(Command::PreVote, peer);
            header.term = self.raft.term + 1;
            header.a = last_index;
            header.b = last_term;
            self.send(header, &[]);
        }
        self.check_pre_votes();
    }

    fn check_pre_votes(&mut self) {
        if self.raft.role == Role::PreCandidate && self.raft.votes.count_ones() >= self.quorum() {
            self.become_candidate();
        }
    }

    fn become_candidate(&mut self) {
        self.raft.term += 1;
        // What this replica knew to equal a leader's log was of the old term: the next leader's
        // log may differ anywhere past the commit index (become_follower resets it only on a
        // higher term, and a candidate follows the winner of its own term).
        self.raft.match_bound = self.commit;
        self.raft.voted_for = Some(self.id);
        self.raft.role = Role::Candidate;
        self.raft.leader = None;
        self.raft.leader_contact = None;
        self.raft.votes = bit(self.id);
        self.raft.votes_requested = false;
        self.raft.heads.iter_mut().for_each(|h| *h = None);
        self.stats.elections += 1;
        self.reset_election_timer();
        self.role_event();
        // Vote requests go out once the term and the self-vote are durable (on_superblock_durable).
    }

    /// Sends the vote requests of a candidate whose vote for itself is durable.
    pub(crate) fn request_votes(&mut self) {
        if self.raft.role != Role::Candidate || self.raft.votes_requested {
            return;
        }
        if self.superblock.term != self.raft.term || self.superblock.voted_for != self.id {
            return;
        }
        self.raft.votes_requested = true;
        let (last_index, last_term) = self.last_log();
        for peer in self.peers() {
            let mut header = self.header(Command::Vote, peer);
            header.a = last_index;
            header.b = last_term;
            self.send(header, &[]);
        }
        self.check_votes();
    }

    fn check_votes(&mut self) {
        if self.raft.role == Role::Candidate
            && self.raft.votes_requested
            && self.raft.votes.count_ones() >= self.quorum()
            && self.make_room_for_noop()
        {
            self.become_leader();
        }
    }

    /// Whether the ring has a slot for the new term's no-op, making one if it can.
    ///
    /// A ring full of entries past the checkpoint leaves no slot for the no-op; without it no
    /// older entry commits (Raft §5.4.2), so no checkpoint frees a slot: a deadlock, reached by
    /// leaders that win and lose again before their no-op commits (each leaves one more) or by
    /// a crash while a slow checkpoint let the ring fill. Two ways out:
    ///
    /// - A single replica is its own quorum: every durable entry of its log is committed.
    /// - In a cluster, an entry beyond every head that `n - q + 1` of the *other* replicas
    ///   reported in this term is on no quorum (a quorum holding it has `q - 1` others besides
    ///   this replica, and they meet any `n - q + 1` of the `n - 1` others), so it is not
    ///   committed: the candidate discards such entries from its own log (as VSR's view change
    ///   drops the ops no quorum holds). Until enough heads are in, it waits for more replies.
    ///   (It asked for `q` reports until seed 14019693: in a cluster of two, one peer could never
    ///   make two, and a candidate restarted with a full ring and its commit index forgotten
    ///   waited forever.)
    fn make_room_for_noop(&mut self) -> bool {
        if self.journal.ring_free() > 0 {
            return true;
        }
        if self.count == 1 {
            // Commits the log; the checkpoint that follows frees the ring for a later election.
            if self.journal.durable() > self.commit {
                self.marks.hit(Mark::FullRingNoopSlot);
                self.commit = self.journal.durable();
            }
            return false;
        }
        let reported: Vec<u64> = self
            .peers()
            .filter_map(|p| self.raft.heads[p as usize])
            .collect();
        if (reported.len() as u32) < self.count as u32 - self.quorum() + 1 {
            return false;
        }
        let held = reported.into_iter().max().unwrap_or(0);
        let keep = held.max(self.commit).max(self.journal.checkpoint());
        if keep >= self.journal.head() {
            // Every entry may be committed, but this replica knows too little of the commit
            // index to reach the next boundary: a checkpoint where it stands frees the slots.
            self.checkpoint_wanted |= self.applied > self.journal.checkpoint();
            return false;
        }
        if self.journal.truncate(keep).is_err() {
            return false;
        }
        self.stats.truncated += 1;
        self.marks.hit(Mark::LogTruncation);
        self.marks.hit(Mark::FullRingNoopSlot);
        true
    }

    fn become_leader(&mut self) {
        self.raft.role = Role::Leader;
        self.marks.hit(Mark::ElectionWon);
        self.raft.leader = Some(self.id);
        self.raft.round = 0;
        self.raft.round_acked.iter_mut().for_each(|r| *r = 0);
        self.raft.round_wanted = false;
        debug_assert!(self.sync.is_none(), "a syncing replica does not campaign");
        self.raft.leader_ready = false;
        let next = self.journal.head() + 1;
        for progress in &mut self.raft.progress {
            *progress = Progress {
                next,
                matched: 0,
                heard: self.ticks,
                acked: false,
            };
        }
        self.raft.heartbeat_due = self.ticks;
        self.raft.quorum_check_due = self.ticks + self.config.election_ticks;
        self.role_event();
        // A no-op of the new term: committing it commits every earlier entry (Raft §5.4.2).
        self.timestamp = self.clock().max(self.timestamp + 1);
        let term = self.raft.term;
        if self
            .journal
            .append(Operation::NOOP, term, self.timestamp, 0, 0, &[])
            .is_err()
        {
            // The ring is full up to the checkpoint: the checkpoint frees it, then we retry.
            let term = self.raft.term;
            self.become_follower(term, None);
            return;
        }
        self.replicate_all(true);
    }

    pub(crate) fn become_follower(&mut self, term: u64, leader: Option<u8>) {
        let changed = term != self.raft.term
            || self.raft.role != Role::Follower
            || leader != self.raft.leader;
        if term > self.raft.term {
            self.raft.leader_round = 0;
            self.raft.term = term;
            self.raft.voted_for = None;
            self.raft.match_bound = self.commit;
            self.raft.leader_contact = None;
        }
        self.raft.role = Role::Follower;
        self.raft.leader = leader;
        self.reads.clear(); // pending reads need a leader: their clients retry
                            // Requests gathered for a batch were never logged: their clients retry elsewhere.
        self.queue.clear();
        self.queue_count = 0;
        self.queued.clear();
        self.raft.votes = 0;
        self.raft.leader_ready = false;
        self.raft.votes_requested = false;
        if term > self.raft.inquiry_term() {
            // An inquiry belongs to its term. A candidate's newer term (no leader to repair the
            // hole) asks it again in that term: dropping it let a candidate that can never lead
            // (its ring full of entries a peer may hold committed) starve every inquiry by
            // campaigning once per timeout (seed 9013456).
            let open = self.raft.inquiry.take().map(|inquiry| inquiry.index());
            if let Some(index) =
                open.filter(|&i| leader.is_none() && self.journal.first_faulty() == Some(i))
            {
                self.inquire(index);
            }
        }
        // Raft resets the election timer on a leader's message or a granted vote, not on a newer
        // term alone: a replica that refuses a candidate which can never win keeps its own
        // timeout, and with it the chance to lead or to ask about its hole (seed 9013456).
        if leader.is_some() {
            self.reset_election_timer();
        }
        if changed {
            self.role_event();
        }
    }

    /// Delivers a message from a peer. Damaged, misrouted or foreign messages are dropped and
    /// counted in `stats.messages_dropped`.
    pub fn on_message<T: Storage>(&mut self, storage: &mut T, bytes: &[u8]) {
        self.stats.messages_received += 1;
        let Ok((header, body)) = Header::decode(bytes, self.cluster, self.id) else {
            self.stats.messages_dropped += 1;
            return;
        };
        if self.status != Status::Ready || header.from >= self.count || header.from == self.id {
            self.stats.messages_dropped += 1;
            return;
        }
        if !self.accept_incarnation(&header) {
            self.stats.messages_dropped += 1;
            return;
        }
        if self.accept_term(&header) {
            match header.command {
                Command::PreVote => self.on_pre_vote(&header),
                Command::PreVoteReply => self.on_pre_vote_reply(&header),
                Command::Vote => self.on_vote(&header),
                Command::VoteReply => self.on_vote_reply(&header),
                Command::Append => self.on_append(&header, body),
                Command::AppendReply => self.on_append_reply(&header),
                Command::SyncOffer => {
                    if from_leader(&header) {
                        self.follow(header.from);
                    }
                    self.on_sync_offer(&header, body)
                }
                Command::StateRequest => self.on_state_request(&header),
                Command::BlockRequest => self.on_block_request(&header, body),
                Command::Block => self.on_block(&header, body),
                Command::HoleQuery => self.on_hole_query(&header),
                Command::HoleReport => self.on_hole_report(&header, body),
                Command::Request | Command::Reply => self.stats.messages_dropped += 1,
            }
        }
        self.advance(storage);
    }

    /// Refuses a peer whose data file was replaced: it cannot rejoin as if it still held the votes
    /// and entries it promised. A vote or an acknowledgement counts only once the sender's
    /// incarnation is durable here, so that a crash cannot make this replica forget whose
    /// promise it relied on.
    fn accept_incarnation(&mut self, header: &Header) -> bool {
        let from = header.from as usize;
        let known = self.raft.peers[from];
        if header.incarnation == 0 {
            return false; // every replica's data file has one: a malformed message
        }
        if known == 0 {
            self.raft.peers[from] = header.incarnation; // persisted by the next superblock write
        } else if known != header.incarnation {
            self.stats.refused_replaced += 1;
            if self.raft.refused[from] != header.incarnation {
                self.raft.refused[from] = header.incarnation;
                let found = header.incarnation;
                self.events.push(Event::PeerReplaced {
                    replica: header.from,
                    known,
                    found,
                });
            }
            return false;
        }
        let durable = self.superblock.peers[from] == header.incarnation;
        durable || !matches!(header.command, Command::VoteReply | Command::AppendReply)
    }

    /// Applies Raft's term rules; returns whether the message should be processed further.
    fn accept_term(&mut self, header: &Header) -> bool {
        match header.command {
            Command::PreVote | Command::PreVoteReply => return true,
            Command::Vote | Command::HoleQuery
                if header.term > self.raft.term && self.lease_active() =>
            {
                return false
            }
            _ => {}
        }
        if header.term > self.raft.term {
            let leader = from_leader(header).then_some(header.from);
            self.become_follower(header.term, leader);
        }
        if header.term < self.raft.term {
            if from_leader(header) {
                // Tell a deposed leader about the newer term.
                let mut reply = self.header(Command::AppendReply, header.from);
                reply.a = 0;
                reply.b = self.journal.head() + 1;
                self.send(reply, &[]);
            }
            return false;
        }
        true
    }

    fn on_pre_vote(&mut self, header: &Header) {
        let granted = header.term > self.raft.term
            && !self.lease_active()
            && self.up_to_date(header.a, header.b)
            && self.may_vote();
        let mut reply = self.header(Command::PreVoteReply, header.from);
        reply.term = header.term;
        reply.a = granted as u64;
        reply.b = self.raft.term; // a candidate behind in term learns it, and catches up
        self.send(reply, &[]);
    }

    fn on_pre_vote_reply(&mut self, header: &Header) {
        if header.a == 0 && header.b > self.raft.term {
            self.become_follower(header.b, None);
            return;
        }
        if self.raft.role == Role::PreCandidate
            && header.term == self.raft.term + 1
            && header.a == 1
        {
            self.raft.votes |= bit(header.from);
            self.check_pre_votes();
        }
    }

    fn on_vote(&mut self, header: &Header) {
        let free = self.raft.voted_for.is_none_or(|v| v == header.from);
        if free
            && self.raft.role == Role::Follower
            && self.up_to_date(header.a, header.b)
            && self.may_vote()
        {
            self.raft.voted_for = Some(header.from);
            self.raft.vote_reply_pending = Some(header.from);
            self.reset_election_timer();
            self.send_pending_vote(); // at once if already durable, else when it is
        } else {
            let mut reply = self.header(Command::VoteReply, header.from);
            reply.a = 0;
            reply.c = self.journal.head();
            self.send(reply, &[]);
        }
    }

    /// Sends a granted vote once the superblock holds it.
    pub(crate) fn send_pending_vote(&mut self) {
        let Some(candidate) = self.raft.vote_reply_pending else {
            return;
        };
        if self.raft.voted_for != Some(candidate) {
            self.raft.vote_reply_pending = None;
            return;
        }
        if self.superblock.term == self.raft.term && self.superblock.voted_for == candidate {
            self.raft.vote_reply_pending = None;
            let mut reply = self.header(Command::VoteReply, candidate);
            reply.a = 1;
            reply.c = self.journal.head();
            self.send(reply, &[]);
        }
    }

    fn on_vote_reply(&mut self, header: &Header) {
        if self.raft.role != Role::Candidate {
            return;
        }
        self.raft.heads[header.from as usize] = Some(header.c);
        if header.a == 1 {
            self.raft.votes |= bit(header.from);
        }
        self.check_votes();
    }

    /// A message from the leader of the current term: follow it, and reset the election timer.
    fn follow(&mut self, leader: u8) {
        if self.raft.role != Role::Follower || self.raft.leader != Some(leader) {
            let term = self.raft.term;
            self.become_follower(term, Some(leader));
        }
        self.raft.leader_contact = Some(self.ticks);
        self.reset_election_timer();
    }

    fn on_append(&mut self, header: &Header, body: &[u8]) {
        self.follow(header.from);
        self.raft.leader_round = self.raft.leader_round.max(header.d >> 32);
        if self.installing() {
            return; // installing a checkpoint: entries wait until it is durable
        }
        let (prev, prev_checksum, leader_commit) = (header.a, header.b as u32, header.c);
        let checkpoint = self.journal.checkpoint();
        let hole_before = self.journal.first_faulty().is_some_and(|hole| hole <= prev);
        if hole_before
            || (prev >= checkpoint && self.journal.checksum_at(prev) != Some(prev_checksum))
        {
            return self.reject_append(header.from, prev);
        }
        let last = self.append_entries(prev.max(checkpoint), body);
        self.raft.match_bound = self.raft.match_bound.max(last);
        let mut commit = leader_commit.min(self.raft.match_bound);
        if let Some(hole) = self.journal.first_faulty() {
            commit = commit.min(hole - 1);
        }
        self.commit = self.commit.max(commit);
        self.raft.append_reply_due = true;
    }

    /// Tells the leader where to resend from after a mismatch at `prev`.
    fn reject_append(&mut self, leader: u8, prev: u64) {
        let head = self.journal.head();
        let mut hint = if prev > head { head + 1 } else { prev };
        if let Some(hole) = self.journal.first_faulty() {
            hint = hint.min(hole);
        }
        let mut reply = self.header(Command::AppendReply, leader);
        reply.a = 0;
        reply.b = hint.max(self.journal.checkpoint() + 1);
        reply.c = self.raft.leader_round;
        self.send(reply, &[]);
    }

    /// Appends (or repairs, or skips as already held) the entries of an Append whose previous
    /// entry matched. Returns the last index now known to equal the leader's log.
    fn append_entries(&mut self, matched: u64, body: &[u8]) -> u64 {
        let mut last = matched;
        let mut rest = body;
        while rest.len() >= HEADER_SIZE {
            let Ok(entry) = EntryHeader::decode(rest) else {
                break;
            };
            let len = HEADER_SIZE + entry.size as usize;
            if len > rest.len() {
                break;
            }
            let (bytes, tail) = rest.split_at(len);
            rest = tail;
            let index = entry.index;
            if index <= last {
                continue; // at or before the checkpoint, or before the match: already equal
            }
            if index != last + 1 {
                break;
            }
            if index <= self.journal.head() {
                if self.journal.is_faulty(index) {
                    match self.journal.repair(bytes) {
                        Ok(_) => {
                            self.stats.repaired += 1;
                            self.marks.hit(Mark::EntryRepair);
                            self.events.push(Event::Repaired { index });
                            last = index;
                            continue;
                        }
                        // Our next entry chains to another version of this one: ours is not the
                        // leader's, so it was never committed. Replace it below.
                        Err(AppendError::OutOfChain) if index > self.commit => {}
                        Err(_) => break,
                    }
                } else if self.journal.checksum_at(index) == Some(entry.checksum) {
                    last = index;
                    continue;
                }
                assert!(
                    index > self.commit,
                    "the leader's log conflicts with committed entry {index}"
                );
                if self.journal.truncate(index - 1).is_err() {
                    break; // writes in flight: the leader resends
                }
                self.stats.truncated += 1;
                self.marks.hit(Mark::LogTruncation);
            }
            match self.journal.append_entry(bytes) {
                Ok(_) => last = index,
                Err(AppendError::PipelineFull | AppendError::RingFull) => break,
                Err(_) => break,
            }
        }
        last
    }

    /// Acknowledges the leader: what is durable here and equal to its log.
    pub(crate) fn send_append_reply(&mut self) {
        if !self.raft.append_reply_due || self.raft.role != Role::Follower || self.installing() {
            return;
        }
        let Some(leader) = self.raft.leader else {
            return;
        };
        if self.superblock.term != self.raft.term {
            return; // the term must be durable before this replica speaks in it
        }
        self.raft.append_reply_due = false;
        let mut matched = self.journal.durable().min(self.raft.match_bound);
        if let Some(pending) = self.journal.first_repair_pending() {
            matched = matched.min(pending - 1);
        }
        if let Some(hole) = self.journal.first_faulty() {
            matched = matched.min(hole - 1); // so the leader resends the hole
        }
        let mut reply = self.header(Command::AppendReply, leader);
        reply.a = 1;
        reply.b = matched.max(self.journal.checkpoint());
        reply.c = self.raft.leader_round;
        self.send(reply, &[]);
    }

    fn on_append_reply(&mut self, header: &Header) {
        if self.raft.role != Role::Leader {
            return;
        }
        let peer = header.from as usize;
        let head = self.journal.head();
        self.raft.round_acked[peer] = self.raft.round_acked[peer].max(header.c);
        let progress = &mut self.raft.progress[peer];
        progress.heard = self.ticks;
        if header.a == 1 {
            progress.acked = true;
            progress.matched = progress.matched.max(header.b.min(head));
            progress.next = progress.next.max(progress.matched + 1);
        } else {
            // The peer lacks entry `hint` — possibly one it held before (a faulty entry found
            // on restart), so what it matched may shrink. Commit never goes back: the entry
            // stays on the quorum that committed it, and this peer gets it again.
            let hint = header.b.max(1);
            progress.matched = progress.matched.min(hint - 1);
            progress.next = hint.min(progress.next).max(progress.matched + 1);
            self.replicate(header.from, false);
        }
    }

    /// Leader: the highest index durable on a quorum, if it is of this term, becomes committed.
    pub(crate) fn advance_commit(&mut self) {
        if self.raft.role != Role::Leader {
            return;
        }
        let mut matched: Vec<u64> = self
            .peers()
            .map(|p| self.raft.progress[p as usize].matched)
            .chain(std::iter::once(self.journal.durable()))
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let mut candidate = matched[self.quorum() as usize - 1];
        if self.config.planted_bug == Some(PlantedBug::CommitWithoutQuorum) {
            candidate = self.journal.durable();
        }
        if candidate > self.commit && self.journal.term_at(candidate) == Some(self.raft.term) {
            self.commit = candidate;
        }
        if self.journal.term_at(self.commit) == Some(self.raft.term) {
            self.raft.leader_ready = true;
        }
    }

    /// ReadIndex: the highest heartbeat round a quorum (this leader included) acknowledged in
    /// this term — every read that waited for it is known to be served by a real leader.
    pub(crate) fn quorum_round(&self) -> u64 {
        let mut acked: Vec<u64> = self
            .peers()
            .map(|p| self.raft.round_acked[p as usize])
            .chain(std::iter::once(self.raft.round))
            .collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        acked[self.quorum() as usize - 1]
    }

    /// Starts a heartbeat round for waiting reads, unless one is still unacknowledged.
    pub(crate) fn maybe_start_round(&mut self) {
        if self.raft.role != Role::Leader || !self.raft.round_wanted {
            return;
        }
        if self.quorum_round() < self.raft.round {
            return; // the round in flight will be followed by another when it completes
        }
        self.raft.round += 1;
        self.raft.round_wanted = false;
        self.replicate_all(true);
    }

    pub(crate) fn replicate_all(&mut self, heartbeat: bool) {
        if self.raft.role != Role::Leader {
            return;
        }
        for peer in self.peers() {
            self.replicate(peer, heartbeat);
        }
    }

    /// Sends a peer the entries it lacks (or, on a heartbeat, re-sends everything it has not
    /// acknowledged — covering lost messages).
    fn replicate(&mut self, peer: u8, heartbeat: bool) {
        let head = self.journal.head();
        let progress = &mut self.raft.progress[peer as usize];
        if heartbeat && progress.acked {
            progress.next = progress.matched + 1; // resend whatever was not acknowledged
        }
        let next = progress.next;
        if next <= self.journal.checkpoint() {
            if heartbeat {
                self.send_offer(peer);
            }
            return;
        }
        if !heartbeat && next > head {
            return;
        }
        let prev = next - 1;
        let prev_checksum = self
            .journal
            .checksum_at(prev)
            .expect("a leader's log is whole");
        let last = head.min(prev + self.config.append_max as u64);
        let mut body = std::mem::take(&mut self.body_scratch);
        body.clear();
        for index in prev + 1..=last {
            body.extend_from_slice(
                self.journal
                    .entry_bytes(index)
                    .expect("a leader's log is whole"),
            );
        }
        let mut header = self.header(Command::Append, peer);
        header.a = prev;
        header.b = prev_checksum as u64;
        header.c = self.commit;
        header.d = (last - prev) | (self.raft.round << 32);
        self.send(header, &body);
        self.body_scratch = body;
        self.raft.progress[peer as usize].next = last + 1;
    }
}
