//! Hole inquiries: how a replica settles a hole in its log when no leader comes to repair it.
//!
//! A faulty entry whose redundant header was lost with it (decision-table row 12) may be an
//! acknowledged entry that rotted or a write that a crash tore before it was ever durable; the
//! replica cannot tell which, nor what term the entry had. While its log holds such a hole it
//! does not campaign, and if the hole is its head it cannot vote either (see `Raft::may_vote`).
//! With a bare quorum left that can stall the cluster: nobody wins an election, so no leader
//! repairs the hole. The way out asks the cluster, as VSR's view change counts nacks:
//!
//! 1. The replica with the hole begins a new term `T` of its own (without voting in it) and,
//!    once `T` is durable, asks every peer what it holds at the hole's index `i` that chains to
//!    the replica's entry `i - 1`.
//! 2. A peer answers only once `T` is durable on it, so it never again accepts an entry from a
//!    leader of an older term: the answers cannot be overtaken by a late commit that relied on
//!    the asker's own (old) acknowledgement. Peers under a live leader's lease ignore the query.
//! 3. If the asker's entry `e` at `i` was committed, it is on a quorum `Q`; `Q` minus the asker
//!    meets every set of `n - q + 1` other replicas. So once that many peers have answered
//!    conclusively, either one of them holds `e`, or `e` was not committed:
//!    - all say *absent* (nothing at `i`, or an entry with another parent): `e` was not
//!      committed, and the asker cuts its log before `i`;
//!    - all who hold an entry there hold the same one, `c`: `e` is `c` or was not committed,
//!      so the asker takes `c` (verified against its neighbours in the hash chain; if its own
//!      `i + 1` does not chain to `c`, `e` was not `c`, so not committed: it cuts instead);
//!    - two versions: it cannot tell, and waits for a leader or its next inquiry.
//!
//! A peer whose own entry at `i` is faulty, or lies inside its checkpoint, answers *unknown*,
//! which does not count.
//!
//! `n - q + 1` answers are what it takes, and no fewer can be safe: with a bare quorum left in
//! a cluster of three or more, the missing replicas may hold the only copies of a committed `e`,
//! and the inquiry rightly never settles (that is more faults than the cluster tolerates). Where
//! it matters is a two-replica cluster, whose every election needs both votes (one answer
//! suffices), and any cluster with more than a bare quorum alive, where it also cuts holes that
//! a leader could not repair because it never had the entry.

use super::raft::Role;
use super::Replica;
use crate::checksum::Checksum;
use crate::marks::Mark;
use crate::message::{Command, Header};
use crate::state_machine::StateMachine;
use crate::wal::header::{EntryHeader, HEADER_SIZE};
use crate::wal::journal::AppendError;
use std::collections::BTreeMap;

/// What a peer holds at a queried index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Answer {
    /// Its entry there is faulty, or inside its checkpoint: it cannot say.
    Unknown = 0,
    /// No entry there that chains to the asker's previous entry.
    Absent = 1,
    /// An intact entry that chains to it (in the body).
    Present = 2,
}

/// An inquiry under way about one hole.
pub(crate) struct Inquiry {
    /// The term the asker began for it.
    term: u64,
    index: u64,
    parent: Checksum,
    sent: bool,
    /// The conclusive answers, by peer: `None` absent, `Some(entry)` present.
    answers: BTreeMap<u8, Option<Vec<u8>>>,
}

/// A query to answer once the asker's term is durable here.
#[derive(Clone, Copy)]
pub(crate) struct PendingAnswer {
    to: u8,
    term: u64,
    index: u64,
    parent: Checksum,
}

impl Inquiry {
    pub(crate) fn term(&self) -> u64 {
        self.term
    }

    pub(crate) fn index(&self) -> u64 {
        self.index
    }
}

impl<S: StateMachine> Replica<S> {
    /// Election timeout of a replica that may not campaign because of a hole: begins a term of
    /// its own and asks the peers about the first hole.
    pub(crate) fn start_inquiry(&mut self) {
        let Some(index) = self.journal.first_faulty() else {
            return;
        };
        if self.count == 1 || self.installing() || self.state_lost {
            return;
        }
        let term = self.raft.term + 1;
        self.become_follower(term, None);
        self.inquire(index);
    }

    /// Opens an inquiry about hole `index` in the current term, and asks once it is durable.
    pub(crate) fn inquire(&mut self, index: u64) {
        let parent = self
            .journal
            .checksum_at(index - 1)
            .expect("the entry before the first hole is intact or the checkpoint");
        self.raft.inquiry = Some(Inquiry {
            term: self.raft.term,
            index,
            parent,
            sent: false,
            answers: BTreeMap::new(),
        });
        self.send_inquiry();
    }

    /// Sends the queries once the inquiry's term is durable.
    pub(crate) fn send_inquiry(&mut self) {
        let durable = self.superblock.term;
        let Some(inquiry) = self.raft.inquiry.as_mut() else {
            return;
        };
        if inquiry.sent || durable != inquiry.term || self.raft.term != inquiry.term {
            return;
        }
        inquiry.sent = true;
        let (index, parent) = (inquiry.index, inquiry.parent);
        let me = self.id;
        for peer in (0..self.count).filter(|&p| p != me) {
            let mut header = self.peer_header(Command::HoleQuery, peer);
            header.a = index;
            header.b = parent as u64;
            self.send(header, &[]);
        }
    }

    pub(crate) fn on_hole_query(&mut self, header: &Header) {
        // As a granted vote does: the asker's inquiry gets its election timeout to settle
        // before this replica campaigns over it.
        self.reset_election_timer();
        self.raft.answer_pending = Some(PendingAnswer {
            to: header.from,
            term: header.term,
            index: header.a,
            parent: header.b as Checksum,
        });
        self.send_pending_answer();
    }

    /// Answers a query once its term is durable here (and if this replica is still in it).
    pub(crate) fn send_pending_answer(&mut self) {
        let Some(pending) = self.raft.answer_pending else {
            return;
        };
        if pending.term != self.raft.term {
            self.raft.answer_pending = None;
            return;
        }
        if self.superblock.term != pending.term {
            return;
        }
        self.raft.answer_pending = None;
        let (answer, body) = self.answer(pending.index, pending.parent);
        let mut reply = self.peer_header(Command::HoleReport, pending.to);
        reply.a = pending.index;
        reply.b = answer as u64;
        let body = body.map(<[u8]>::to_vec).unwrap_or_default();
        self.send(reply, &body);
    }

    fn answer(&self, index: u64, parent: Checksum) -> (Answer, Option<&[u8]>) {
        if index <= self.journal.checkpoint() || self.journal.is_faulty(index) {
            return (Answer::Unknown, None);
        }
        if self.installing() || self.state_lost {
            return (Answer::Unknown, None);
        }
        match self.journal.entry_bytes(index) {
            None => (Answer::Absent, None), // beyond the head
            Some(bytes) => {
                let entry = EntryHeader::decode(bytes).expect("log entries are valid");
                if entry.parent == parent {
                    (Answer::Present, Some(bytes))
                } else {
                    (Answer::Absent, None)
                }
            }
        }
    }

    pub(crate) fn on_hole_report(&mut self, header: &Header, body: &[u8]) {
        let term = self.raft.term;
        let Some(inquiry) = self.raft.inquiry.as_mut() else {
            return;
        };
        if header.term != inquiry.term || term != inquiry.term || header.a != inquiry.index {
            return;
        }
        let answer = match header.b {
            1 => None,
            2 if Self::chains(body, inquiry.index, inquiry.parent) => Some(body.to_vec()),
            _ => return, // unknown, or a malformed answer: it does not count
        };
        inquiry.answers.insert(header.from, answer);
        self.settle_inquiry();
    }

    /// Whether an answer's body is a whole entry at `index` that chains to `parent`.
    fn chains(body: &[u8], index: u64, parent: Checksum) -> bool {
        let Ok(header) = EntryHeader::decode(body) else {
            return false;
        };
        let end = HEADER_SIZE + header.size as usize;
        header.index == index
            && header.parent == parent
            && body.len() == end
            && crate::checksum::checksum(&body[HEADER_SIZE..]) == header.body_checksum
    }

    /// Decides once enough peers have answered conclusively (see the module comment).
    pub(crate) fn settle_inquiry(&mut self) {
        let needed = (self.count as u32 - self.quorum() + 1) as usize;
        let Some(inquiry) = self.raft.inquiry.as_ref() else {
            return;
        };
        if inquiry.answers.len() < needed || self.raft.role != Role::Follower {
            return;
        }
        let index = inquiry.index;
        if self.journal.first_faulty() != Some(index) {
            self.raft.inquiry = None; // a leader repaired it (or a truncation took it) meanwhile
            return;
        }
        let mut versions: BTreeMap<Checksum, &[u8]> = BTreeMap::new();
        for entry in inquiry.answers.values().flatten() {
            let header = EntryHeader::decode(entry).expect("checked on arrival");
            versions.insert(header.checksum, entry);
        }
        let found = match versions.len() {
            0 => None,
            1 => versions.into_values().next().map(<[u8]>::to_vec),
            _ => {
                self.raft.inquiry = None; // two versions: a leader must decide
                return;
            }
        };
        if self.journal.writes_in_flight() {
            return; // retried on the next tick
        }
        self.raft.inquiry = None;
        let cut = match found {
            None => true,
            Some(entry) => match self.journal.repair(&entry) {
                Ok(_) => {
                    self.stats.repaired += 1;
                    self.marks.hit(Mark::HoleInquiryRepair);
                    self.events.push(super::Event::Repaired { index });
                    false
                }
                // Our next entry chains to another version: ours was not this one, so it was
                // not committed either.
                Err(AppendError::OutOfChain) => true,
                Err(_) => return, // not a version we can take: a leader must decide
            },
        };
        if cut {
            self.cut_hole(index);
        }
        // The next hole, in the same term: the peers' answers stay valid in it.
        if let Some(next) = self.journal.first_faulty() {
            self.inquire(next);
        }
    }

    fn cut_hole(&mut self, index: u64) {
        assert!(index > self.commit, "a hole above the commit index");
        self.journal
            .truncate(index - 1)
            .expect("no writes in flight");
        self.stats.truncated += 1;
        self.marks.hit(Mark::HoleInquiryCut);
    }
}
