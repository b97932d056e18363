//! The Redis protocol as ZiggyDB speaks it: [`request`] parses what clients send (multibulk
//! arrays and inline lines, with Redis's limits and error words), [`reply`] encodes answers in
//! RESP2 or RESP3. Pure functions over bytes: no IO, so the fuzzers and the deterministic
//! simulator drive them as the server does.

pub mod reply;
pub mod request;

pub use reply::{parse_reply, shared_len, Protocol, Reply, ReplyError};
pub use request::{parse, Limits, ProtocolError, Request};
