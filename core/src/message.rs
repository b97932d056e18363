//! The wire format between replicas, and between clients and replicas.
//!
//! Every message is a 64-byte checksummed header followed by a checksummed body. A message that
//! fails either checksum, is truncated, names another cluster or is addressed to another node is
//! dropped by the receiver and counted — never applied.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | header checksum (crc32c of bytes 4..72) |
//! | 4 | 4 | body checksum |
//! | 8 | 8 | cluster |
//! | 16 | 8 | term |
//! | 24 | 4 | body size |
//! | 28 | 1 | command |
//! | 29 | 1 | from (replica index, or 0xFF for a client) |
//! | 30 | 1 | to |
//! | 31 | 1 | reserved, zero |
//! | 32 | 8 × 4 | a, b, c, d: the command's fields |
//! | 64 | 8 | the sender's incarnation (its data file's; 0 for a client) |

use crate::checksum::checksum;

pub const MESSAGE_HEADER_SIZE: usize = 72;
/// The `from`/`to` of a client.
pub const CLIENT: u8 = 0xFF;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Command {
    /// a = last index, b = last term. `term` is the term the sender would campaign in.
    PreVote = 1,
    /// a = granted (0/1), b = the responder's current term. `term` echoes the request's.
    PreVoteReply = 2,
    /// a = last index, b = last term.
    Vote = 3,
    /// a = granted (0/1), c = the voter's log head (an upper bound on what it holds in this
    /// term; a candidate with a full ring uses it to find entries no quorum holds).
    VoteReply = 4,
    /// a = previous index, b = previous entry's checksum, c = leader commit, d = entry count.
    /// Body: the entries, each a whole encoded WAL entry (header + body), back to back.
    Append = 5,
    /// a = success (0/1), b = the sender's durable match index on success, or on failure the
    /// index from which the leader should resend.
    AppendReply = 6,
    /// a = client, b = request number, c = operation, d = session. Body: the request body.
    Request = 7,
    /// a = client, b = request number, c = index applied at, d = status (see `ReplyStatus`).
    /// Body: the reply (or, for `NotLeader`, nothing; `term`'s low byte is unused).
    Reply = 8,
    /// a = the checkpoint index the sender has (asks for a newer checkpoint).
    StateRequest = 9,
    // 10 was `StateChunk`, the whole-state transfer that state sync replaced.
    /// Leader to a peer behind its checkpoint, or any replica with a state to one that lost its
    /// own and knows no leader: a = checkpoint index, b = checkpoint checksum (low 32 bits) and
    /// term (high 32 bits), c = checkpoint timestamp, d = the blob's checksum (low 32 bits) and
    /// [`OFFER_FROM_PEER`] when the sender is not (known to be) the leader. Body: the checkpoint
    /// blob (client table, then the state machine's bytes).
    SyncOffer = 11,
    /// A syncing replica asks for blocks of the checkpoint it syncs to: a = its index, b = its
    /// blob checksum. Body: up to a few (address u64, checksum u32, kind u8) records.
    BlockRequest = 12,
    /// Leader: a = its checkpoint index, b = address, c = checksum, d = kind | found << 8.
    /// Body: the block without its zero padding (empty when not found).
    Block = 13,
    /// A replica with a hole in its log (see `replica::hole`), in a term it began for the
    /// inquiry: a = the hole's index, b = the checksum of the entry before it.
    HoleQuery = 14,
    /// a = the queried index, b = the answer (see `replica::hole::Answer`). Body: for
    /// `Present`, the responder's whole encoded entry at that index.
    HoleReport = 15,
}

/// The flag in a `SyncOffer`'s `d` of an offer made by a replica that is not the leader: it
/// neither names a leader nor resets the receiver's election timer.
pub const OFFER_FROM_PEER: u64 = 1 << 32;

impl Command {
    pub fn from_u8(value: u8) -> Option<Command> {
        Some(match value {
            1 => Command::PreVote,
            2 => Command::PreVoteReply,
            3 => Command::Vote,
            4 => Command::VoteReply,
            5 => Command::Append,
            6 => Command::AppendReply,
            7 => Command::Request,
            8 => Command::Reply,
            9 => Command::StateRequest,
            11 => Command::SyncOffer,
            12 => Command::BlockRequest,
            13 => Command::Block,
            14 => Command::HoleQuery,
            15 => Command::HoleReport,
            _ => return None,
        })
    }
}

/// The status of a [`Command::Reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplyStatus {
    Ok = 0,
    /// Not the leader: `a` of the header... see [`Header::leader_hint`].
    NotLeader = 1,
    Busy = 2,
    Invalid = 3,
    Stale = 4,
    NotReady = 5,
    Halted = 6,
    /// The client's session was evicted: the request was not applied.
    Evicted = 7,
}

impl ReplyStatus {
    pub fn from_u64(value: u64) -> Option<ReplyStatus> {
        Some(match value {
            0 => ReplyStatus::Ok,
            1 => ReplyStatus::NotLeader,
            2 => ReplyStatus::Busy,
            3 => ReplyStatus::Invalid,
            4 => ReplyStatus::Stale,
            5 => ReplyStatus::NotReady,
            6 => ReplyStatus::Halted,
            7 => ReplyStatus::Evicted,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub cluster: u64,
    pub term: u64,
    pub command: Command,
    pub from: u8,
    pub to: u8,
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub d: u64,
    /// The sender's data-file incarnation (see `Superblock::incarnation`).
    pub incarnation: u64,
}

/// Why bytes were not accepted as a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    Truncated,
    HeaderChecksum,
    BodyChecksum,
    UnknownCommand,
    WrongCluster,
    Misrouted,
}

impl Header {
    pub fn new(cluster: u64, term: u64, command: Command, from: u8, to: u8) -> Header {
        Header {
            cluster,
            term,
            command,
            from,
            to,
            a: 0,
            b: 0,
            c: 0,
            d: 0,
            incarnation: 0,
        }
    }

    /// Encodes header and body into `out` (cleared first).
    pub fn encode(&self, body: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.resize(MESSAGE_HEADER_SIZE, 0);
        out[4..8].copy_from_slice(&checksum(body).to_le_bytes());
        out[8..16].copy_from_slice(&self.cluster.to_le_bytes());
        out[16..24].copy_from_slice(&self.term.to_le_bytes());
        out[24..28].copy_from_slice(&(body.len() as u32).to_le_bytes());
        out[28] = self.command as u8;
        out[29] = self.from;
        out[30] = self.to;
        for (i, field) in [self.a, self.b, self.c, self.d, self.incarnation]
            .iter()
            .enumerate()
        {
            out[32 + i * 8..40 + i * 8].copy_from_slice(&field.to_le_bytes());
        }
        let sum = checksum(&out[4..MESSAGE_HEADER_SIZE]);
        out[0..4].copy_from_slice(&sum.to_le_bytes());
        out.extend_from_slice(body);
    }

    /// Decodes and verifies a message for node `to` of `cluster`. Never panics.
    pub fn decode(bytes: &[u8], cluster: u64, to: u8) -> Result<(Header, &[u8]), MessageError> {
        if bytes.len() < MESSAGE_HEADER_SIZE {
            return Err(MessageError::Truncated);
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        if u32_at(0) != checksum(&bytes[4..MESSAGE_HEADER_SIZE]) || bytes[31] != 0 {
            return Err(MessageError::HeaderChecksum);
        }
        let size = u32_at(24) as usize;
        let body = bytes
            .get(MESSAGE_HEADER_SIZE..)
            .ok_or(MessageError::Truncated)?;
        if body.len() != size {
            return Err(MessageError::Truncated);
        }
        if checksum(body) != u32_at(4) {
            return Err(MessageError::BodyChecksum);
        }
        let command = Command::from_u8(bytes[28]).ok_or(MessageError::UnknownCommand)?;
        if u64_at(8) != cluster {
            return Err(MessageError::WrongCluster);
        }
        if bytes[30] != to {
            return Err(MessageError::Misrouted);
        }
        Ok((
            Header {
                cluster,
                term: u64_at(16),
                command,
                from: bytes[29],
                to,
                a: u64_at(32),
                b: u64_at(40),
                c: u64_at(48),
                d: u64_at(56),
                incarnation: u64_at(64),
            },
            body,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_kind_of_damage_is_rejected() {
        let mut header = Header::new(9, 3, Command::Append, 1, 2);
        header.a = 10;
        header.d = 2;
        let mut bytes = Vec::new();
        header.encode(b"entries", &mut bytes);
        let (back, body) = Header::decode(&bytes, 9, 2).unwrap();
        assert_eq!((back, body), (header, &b"entries"[..]));
        assert_eq!(
            Header::decode(&bytes, 8, 2),
            Err(MessageError::WrongCluster)
        );
        assert_eq!(Header::decode(&bytes, 9, 1), Err(MessageError::Misrouted));
        assert_eq!(
            Header::decode(&bytes[..bytes.len() - 1], 9, 2),
            Err(MessageError::Truncated)
        );
        assert_eq!(
            Header::decode(&bytes[..10], 9, 2),
            Err(MessageError::Truncated)
        );
        let retired = Header::new(9, 3, Command::Append, 1, 2);
        let mut old = Vec::new();
        retired.encode(b"", &mut old);
        old[28] = 10; // StateChunk, retired (the checksum is fixed up below)
        let sum = checksum(&old[4..MESSAGE_HEADER_SIZE]);
        old[0..4].copy_from_slice(&sum.to_le_bytes());
        assert!(Header::decode(&old, 9, 2).is_err(), "a retired command");
        for command in [
            Command::SyncOffer,
            Command::BlockRequest,
            Command::Block,
            Command::HoleQuery,
            Command::HoleReport,
        ] {
            assert_eq!(Command::from_u8(command as u8), Some(command));
        }
        for at in 0..bytes.len() {
            let mut copy = bytes.clone();
            copy[at] ^= 0x40;
            assert!(
                Header::decode(&copy, 9, 2).is_err(),
                "flip at {at} accepted"
            );
        }
    }
}
