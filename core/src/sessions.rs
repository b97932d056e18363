//! Client sessions: the last request number and reply of each client, for exactly-once retries.
//!
//! A client first *registers*: a logged request (number 0, [`Operation::REGISTER`]) whose entry's
//! index becomes its session number. It then numbers its requests 1, 2, 3, ..., sends each with
//! its session number, and retries a request with the same number until it gets a reply. The
//! session answers a retry of the last applied request with the stored reply instead of applying
//! it again.
//!
//! The table has `clients_max` slots. Registering into a full table evicts the session used least
//! recently (lowest index, then lowest client id: the same victim on every replica). A request
//! whose session is not in the table — evicted, or replaced by a later registration of the same
//! client id — is never applied: the client is told it was evicted. Without this, a retry of an
//! applied request from an evicted client would find no record of it and be applied again (the
//! reason TigerBeetle registers sessions).
//!
//! [`Operation::REGISTER`]: crate::wal::header::Operation::REGISTER
//!
//! The table (without replies) is part of each checkpoint's blob; the replies are written with the
//! checkpoint, one sector per slot, into the half of the client-replies zone paired with the
//! checkpoint's half of the grid — so a retry is answered after a crash even once the WAL entry
//! that produced the reply has been checkpointed away, and a checkpoint's replies are as atomic as
//! its state. Reply sector layout:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | checksum (crc32c of bytes 4 .. 32 + size) |
//! | 4 | 2 | reply size |
//! | 8 | 8 | client |
//! | 16 | 8 | request |
//! | 24 | 8 | index of the entry that produced the reply |
//! | 32 | size | reply |

use crate::checksum::checksum;
use crate::state_machine::Reader;

pub const REPLY_HEADER_SIZE: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub client: u64,
    /// The index of the entry that registered it.
    pub session: u64,
    /// The last applied request number (0 right after registering).
    pub request: u64,
    /// The log index at which it was applied.
    pub index: u64,
    pub reply: Vec<u8>,
}

pub struct Sessions {
    slots: Vec<Option<Session>>,
    /// Client id to slot (a B-tree: ordered, deterministic, no per-request scan of the table).
    index: std::collections::BTreeMap<u64, usize>,
    reply_max: usize,
}

impl Sessions {
    pub fn new(clients_max: usize, reply_max: usize) -> Sessions {
        Sessions {
            slots: vec![None; clients_max],
            index: std::collections::BTreeMap::new(),
            reply_max,
        }
    }

    pub fn find(&self, client: u64) -> Option<(usize, &Session)> {
        let slot = *self.index.get(&client)?;
        let session = self.slots[slot].as_ref().expect("indexed slots are in use");
        debug_assert_eq!(session.client, client);
        Some((slot, session))
    }

    /// The highest slot in use, if any (checkpoints write reply sectors up to it).
    pub fn last_slot(&self) -> Option<usize> {
        self.slots.iter().rposition(|s| s.is_some())
    }

    pub fn get(&self, slot: usize) -> Option<&Session> {
        self.slots[slot].as_ref()
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Session)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| s.as_ref().map(|s| (slot, s)))
    }

    /// The session of `client` if it is `session` (a request of any other session is from an
    /// evicted or superseded registration, and must not be applied).
    pub fn current(&self, client: u64, session: u64) -> Option<&Session> {
        self.find(client)
            .map(|(_, s)| s)
            .filter(|s| s.session == session)
    }

    /// Opens a session for `client`, registered by the entry at `index`; a client that has one
    /// keeps it (a retried registration). Returns the session number and the client evicted to
    /// make room, if any.
    pub fn register(&mut self, client: u64, index: u64) -> (u64, Option<u64>) {
        assert!(client != 0, "client 0 is reserved");
        if let Some((_, session)) = self.find(client) {
            return (session.session, None);
        }
        let (slot, evicted) = self.free_or_evict();
        self.index.insert(client, slot);
        self.slots[slot] = Some(Session {
            client,
            session: index,
            request: 0,
            index,
            reply: Vec::new(),
        });
        (index, evicted)
    }

    /// Records the reply of an applied request of a registered client; returns the slot written.
    pub fn record(&mut self, client: u64, request: u64, index: u64, reply: &[u8]) -> usize {
        assert!(
            reply.len() <= self.reply_max,
            "reply exceeds the reply slot"
        );
        let (slot, session) = self.find(client).expect("a registered client");
        assert!(
            session.request < request,
            "request applied twice: client {client}"
        );
        assert!(session.index <= index, "sessions are used in log order");
        let session = self.slots[slot].as_mut().expect("indexed slots are in use");
        session.request = request;
        session.index = index;
        session.reply.clear();
        session.reply.extend_from_slice(reply);
        slot
    }

    /// A free slot, or the slot of the least recently used session, evicted.
    fn free_or_evict(&mut self) -> (usize, Option<u64>) {
        if let Some(free) = self.slots.iter().position(|s| s.is_none()) {
            return (free, None);
        }
        let (victim, _) = self
            .iter()
            .min_by_key(|(_, s)| (s.index, s.client))
            .expect("table is full, so not empty");
        let evicted = self.slots[victim].take().expect("in use");
        self.index.remove(&evicted.client);
        (victim, Some(evicted.client))
    }

    /// Encodes slot `slot`'s reply sector into `sector`.
    pub fn encode_reply(&self, slot: usize, sector: &mut [u8]) {
        sector.fill(0);
        let Some(session) = &self.slots[slot] else {
            return;
        };
        let size = session.reply.len();
        sector[4..6].copy_from_slice(&(size as u16).to_le_bytes());
        sector[8..16].copy_from_slice(&session.client.to_le_bytes());
        sector[16..24].copy_from_slice(&session.request.to_le_bytes());
        sector[24..32].copy_from_slice(&session.index.to_le_bytes());
        sector[32..32 + size].copy_from_slice(&session.reply);
        let sum = checksum(&sector[4..32 + size]);
        sector[0..4].copy_from_slice(&sum.to_le_bytes());
    }

    /// Encodes every slot's reply sector into `out` (one sector per slot; empty slots zero).
    pub fn encode_replies(&self, sector_size: usize, out: &mut Vec<u8>) {
        out.clear();
        out.resize(self.slots.len() * sector_size, 0);
        for (slot, sector) in out.chunks_mut(sector_size).enumerate() {
            self.encode_reply(slot, sector);
        }
    }

    /// Decodes a reply sector; None when blank or corrupt. Never panics.
    pub fn decode_reply(sector: &[u8]) -> Option<Session> {
        let mut r = Reader(sector);
        let sum = r.u32()?;
        let size = r.u16()? as usize;
        let end = REPLY_HEADER_SIZE.checked_add(size)?;
        let tail_clear = sector.get(end..)?.iter().all(|&b| b == 0);
        if end > sector.len() || sum != checksum(&sector[4..end]) || !tail_clear {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(sector[at..at + 8].try_into().unwrap());
        Some(Session {
            client: u64_at(8),
            session: 0, // kept in the table, not in the reply sector
            request: u64_at(16),
            index: u64_at(24),
            reply: sector[REPLY_HEADER_SIZE..end].to_vec(),
        })
    }

    /// Appends the table (without replies, which live in the client-replies zone) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let sessions: Vec<_> = self.iter().collect();
        out.extend_from_slice(&(sessions.len() as u32).to_le_bytes());
        for (slot, s) in sessions {
            out.extend_from_slice(&(slot as u32).to_le_bytes());
            out.extend_from_slice(&s.client.to_le_bytes());
            out.extend_from_slice(&s.session.to_le_bytes());
            out.extend_from_slice(&s.request.to_le_bytes());
            out.extend_from_slice(&s.index.to_le_bytes());
        }
    }

    /// Decodes a table written by [`Sessions::encode`]; replies start empty and are filled in from
    /// the client-replies zone. Returns the table and the bytes after it.
    pub fn decode(clients_max: usize, reply_max: usize, bytes: &[u8]) -> Option<(Sessions, &[u8])> {
        let mut r = Reader(bytes);
        let count = r.u32()? as usize;
        let mut sessions = Sessions::new(clients_max, reply_max);
        for _ in 0..count {
            let slot = r.u32()? as usize;
            let client = r.u64()?;
            let session = r.u64()?;
            let request = r.u64()?;
            let index = r.u64()?;
            if slot >= clients_max || sessions.slots[slot].is_some() || session > index {
                return None;
            }
            if sessions.index.insert(client, slot).is_some() {
                return None; // one client in two slots
            }
            sessions.slots[slot] = Some(Session {
                client,
                session,
                request,
                index,
                reply: Vec::new(),
            });
        }
        Some((sessions, r.0))
    }

    /// Fills in the reply of `slot` from its decoded reply sector.
    pub fn set_reply(&mut self, slot: usize, reply: &[u8]) {
        let session = self.slots[slot].as_mut().expect("slot in use");
        session.reply.clear();
        session.reply.extend_from_slice(reply);
    }

    pub fn digest(&self, digest: &mut crate::digest::Digest) {
        for (slot, s) in self.iter() {
            digest
                .u64(slot as u64)
                .u64(s.client)
                .u64(s.session)
                .u64(s.request)
                .u64(s.index)
                .field(&s.reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_records_and_evicts_the_least_recent() {
        let mut sessions = Sessions::new(2, 64);
        assert_eq!(sessions.register(10, 1), (1, None));
        assert_eq!(sessions.register(20, 2), (2, None));
        assert_eq!(
            sessions.register(10, 3),
            (1, None),
            "a retried registration"
        );
        sessions.record(10, 1, 4, b"a1");
        assert_eq!(sessions.current(10, 1).unwrap().reply, b"a1");
        assert!(sessions.current(10, 3).is_none(), "another session number");
        // Full: client 30 evicts client 20 (last used at index 2; client 10 at 4).
        assert_eq!(sessions.register(30, 5), (5, Some(20)));
        assert!(sessions.find(20).is_none());
        // Client 20 registering again gets a new session: its old one stays gone.
        assert_eq!(sessions.register(20, 6), (6, Some(10)));
        assert!(sessions.current(20, 2).is_none());
        assert!(sessions.current(20, 6).is_some());
    }

    #[test]
    fn eviction_ties_go_to_the_lowest_client_id() {
        let mut sessions = Sessions::new(2, 64);
        sessions.register(20, 1);
        sessions.register(10, 1); // one batch entry registered both
        assert_eq!(sessions.register(30, 2), (2, Some(10)));
    }

    #[test]
    #[should_panic(expected = "applied twice")]
    fn applying_a_request_twice_is_an_invariant_violation() {
        let mut sessions = Sessions::new(2, 64);
        sessions.register(10, 1);
        sessions.record(10, 1, 2, b"");
        sessions.record(10, 1, 3, b"");
    }

    #[test]
    #[should_panic(expected = "a registered client")]
    fn recording_without_a_session_is_an_invariant_violation() {
        let mut sessions = Sessions::new(2, 64);
        sessions.record(10, 1, 1, b"");
    }

    #[test]
    fn reply_sector_and_table_round_trip() {
        let mut sessions = Sessions::new(4, 64);
        sessions.register(10, 2);
        sessions.record(10, 7, 5, b"reply");
        let mut sector = vec![0u8; 512];
        sessions.encode_reply(0, &mut sector);
        let decoded = Sessions::decode_reply(&sector).unwrap();
        let expected = Session {
            session: 0,
            ..sessions.find(10).unwrap().1.clone()
        };
        assert_eq!(decoded, expected);
        for at in [0, 5, 9, 17, 25, 34, 40] {
            let mut copy = sector.clone();
            copy[at] ^= 1;
            assert_eq!(
                Sessions::decode_reply(&copy),
                None,
                "flip at {at} went unnoticed"
            );
        }
        assert_eq!(Sessions::decode_reply(&[0u8; 512]), None);

        let mut table = Vec::new();
        sessions.encode(&mut table);
        table.extend_from_slice(b"rest");
        let (back, rest) = Sessions::decode(4, 64, &table).unwrap();
        assert_eq!(rest, b"rest");
        let session = back.find(10).unwrap().1;
        assert_eq!((session.session, session.index), (2, 5));
        assert!(Sessions::decode(4, 64, &table[..7]).is_none());
    }
}
