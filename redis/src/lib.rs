//! The Redis data model as a state machine of the core ([`RedisStateMachine`]).
//!
//! A request body is a *group*: commands (argument lists, the name first) that apply in order in
//! one log entry, so a group is atomic (`MULTI … EXEC`) and a pipeline's writes share an entry.
//! The reply is each command's reply, RESP3-encoded, one after the other; the server re-encodes
//! them for the connection's protocol.
//!
//! Everything here is a function of the log: time is the entry's timestamp (the leader's clock
//! when it appended the entry), never a replica's own clock, so every replica expires the same
//! keys at the same index.

mod body;
mod commands;
mod keyspace;
mod machine;
mod record;

pub use body::{decode_group, encode_group, GroupError};
pub use commands::{all as commands, lookup, CommandSpec};
pub use machine::RedisStateMachine;
