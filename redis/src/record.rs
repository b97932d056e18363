//! A key's stored record: `[kind u8][expires_at u64 LE][modified u64 LE][payload]`.
//!
//! - `expires_at` is a Unix time in milliseconds, 0 for none.
//! - `modified` is the log index of the entry that last wrote the record: what `WATCH`
//!   remembers and `EXEC` compares (see `commands/watch.rs`).
//!
//! A string's payload is its value. A collection's is `[id u64 LE][len u64 LE]`, and a list's
//! `[id][len][head i64 LE]` (the position of its first element): its members live under their
//! own LSM keys, named by `id` (see `keyspace.rs`), so that touching one member never rewrites
//! the collection.

use ziggy_core::state_machine::StateError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Bytes; counters are strings holding a decimal integer or float, as in Redis.
    String = 1,
    /// Fields and their values.
    Hash = 2,
    /// Members without values.
    Set = 3,
    /// Elements at consecutive positions.
    List = 4,
    /// Members with scores, ordered by score.
    ZSet = 5,
    /// A JSON document, kept as its compact text (checked on every write).
    Json = 6,
}

impl Kind {
    /// The name `TYPE` answers.
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Hash => "hash",
            Kind::Set => "set",
            Kind::List => "list",
            Kind::ZSet => "zset",
            Kind::Json => "ReJSON-RL",
        }
    }

    /// What `OBJECT ENCODING` answers: how ZiggyDB keeps it (one LSM key per member for
    /// collections, whatever their size).
    pub fn encoding(self) -> &'static str {
        match self {
            Kind::String => "raw",
            Kind::Hash => "hashtable",
            Kind::Set => "hashtable",
            Kind::List => "linkedlist",
            Kind::ZSet => "skiplist",
            Kind::Json => "raw",
        }
    }

    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::String),
            2 => Some(Kind::Hash),
            3 => Some(Kind::Set),
            4 => Some(Kind::List),
            5 => Some(Kind::ZSet),
            6 => Some(Kind::Json),
            _ => None,
        }
    }
}

/// A collection's payload: which members are its own, and how many it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collection {
    /// Names its members' LSM keys; unique across the keyspace's history (see
    /// `Keyspace::new_id`).
    pub id: u64,
    pub len: u64,
    /// A list's first position (elements sit at `head..head + len`); 0 for the others.
    pub head: i64,
}

impl Kind {
    /// The bytes of a collection's payload.
    fn payload_len(self) -> usize {
        match self {
            Kind::String | Kind::Json => 0,
            Kind::Hash | Kind::Set | Kind::ZSet => 16,
            Kind::List => 24,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    /// Unix milliseconds after which the key is gone; 0: never.
    pub expires_at: u64,
    /// The log index of the entry that wrote this record (as decoded; writes stamp their own).
    pub modified: u64,
    pub payload: Vec<u8>,
}

/// The bytes before the payload.
pub const HEADER: usize = 17;

impl Record {
    pub fn string(payload: Vec<u8>, expires_at: u64) -> Record {
        Record {
            kind: Kind::String,
            expires_at,
            modified: 0,
            payload,
        }
    }

    pub fn collection(kind: Kind, collection: Collection, expires_at: u64) -> Record {
        assert!(!matches!(kind, Kind::String | Kind::Json));
        let mut payload = Vec::with_capacity(24);
        payload.extend_from_slice(&collection.id.to_le_bytes());
        payload.extend_from_slice(&collection.len.to_le_bytes());
        if kind == Kind::List {
            payload.extend_from_slice(&collection.head.to_le_bytes());
        } else {
            assert_eq!(collection.head, 0);
        }
        Record {
            kind,
            expires_at,
            modified: 0,
            payload,
        }
    }

    /// A collection's id and length; None for a string.
    pub fn as_collection(&self) -> Option<Collection> {
        if matches!(self.kind, Kind::String | Kind::Json) {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(self.payload[at..at + 8].try_into().unwrap());
        Some(Collection {
            id: u64_at(0),
            len: u64_at(8),
            head: match self.kind {
                Kind::List => u64_at(16) as i64,
                _ => 0,
            },
        })
    }

    /// Whether the key is gone at `now` (Unix milliseconds).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }

    /// The stored bytes, stamped with `modified`: the index of the entry writing them.
    pub fn encode(&self, modified: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.expires_at.to_le_bytes());
        out.extend_from_slice(&modified.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes a stored record. The grid's checksums vouch for the bytes, so a record that does
    /// not decode is a bug or a format this build does not know: the replica halts on it.
    pub fn decode(bytes: Vec<u8>) -> Result<Record, StateError> {
        if bytes.len() < HEADER {
            return Err(StateError::Decode("a record shorter than its header"));
        }
        let kind =
            Kind::from_byte(bytes[0]).ok_or(StateError::Decode("a record of an unknown kind"))?;
        let sized = matches!(kind, Kind::String | Kind::Json);
        if !sized && bytes.len() != HEADER + kind.payload_len() {
            return Err(StateError::Decode(
                "a collection's record of the wrong size",
            ));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let (expires_at, modified) = (u64_at(1), u64_at(9));
        let mut payload = bytes;
        payload.drain(..HEADER);
        Ok(Record {
            kind,
            expires_at,
            modified,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_expire() {
        let record = Record::string(b"v".to_vec(), 1_000);
        let stamped = Record::decode(record.encode(7)).unwrap();
        assert_eq!(
            stamped,
            Record {
                modified: 7,
                ..record.clone()
            }
        );
        assert!(!record.expired(999));
        assert!(record.expired(1_000));
        assert!(!Record::string(vec![], 0).expired(u64::MAX));
        assert!(Record::decode(vec![1, 2]).is_err());
        assert!(Record::decode(vec![9; 20]).is_err());
        let set = Record::collection(
            Kind::Set,
            Collection {
                id: 9,
                len: 3,
                head: 0,
            },
            0,
        );
        let decoded = Record::decode(set.encode(1)).unwrap();
        assert_eq!(
            decoded.as_collection(),
            Some(Collection {
                id: 9,
                len: 3,
                head: 0,
            })
        );
        assert_eq!(decoded.kind, Kind::Set);
        assert!(
            Record::decode(vec![2; 20]).is_err(),
            "a hash's payload is 16 bytes"
        );
        assert!(
            Record::decode(vec![1; 16]).is_err(),
            "shorter than its header"
        );
    }
}
