//! A key's stored record: `[kind u8][expires_at u64 LE][payload]`. `expires_at` is a Unix time
//! in milliseconds, 0 for none. Lists, sets, hashes and the rest (issue 12) are new kinds.

use ziggy_core::state_machine::StateError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Bytes; counters are strings holding a decimal integer or float, as in Redis.
    String = 1,
}

impl Kind {
    /// The name `TYPE` answers.
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    /// Unix milliseconds after which the key is gone; 0: never.
    pub expires_at: u64,
    pub payload: Vec<u8>,
}

const HEADER: usize = 9;

impl Record {
    pub fn string(payload: Vec<u8>, expires_at: u64) -> Record {
        Record {
            kind: Kind::String,
            expires_at,
            payload,
        }
    }

    /// Whether the key is gone at `now` (Unix milliseconds).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.expires_at.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes a stored record. The grid's checksums vouch for the bytes, so a record that does
    /// not decode is a bug or a format this build does not know: the replica halts on it.
    pub fn decode(bytes: Vec<u8>) -> Result<Record, StateError> {
        if bytes.len() < HEADER {
            return Err(StateError::Decode("a record shorter than its header"));
        }
        let kind = match bytes[0] {
            1 => Kind::String,
            _ => return Err(StateError::Decode("a record of an unknown kind")),
        };
        let expires_at = u64::from_le_bytes(bytes[1..HEADER].try_into().expect("8 bytes"));
        let mut payload = bytes;
        payload.drain(..HEADER);
        Ok(Record {
            kind,
            expires_at,
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
        assert_eq!(Record::decode(record.encode()).unwrap(), record);
        assert!(!record.expired(999));
        assert!(record.expired(1_000));
        assert!(!Record::string(vec![], 0).expired(u64::MAX));
        assert!(Record::decode(vec![1, 2]).is_err());
        assert!(Record::decode(vec![9; 12]).is_err());
    }
}
