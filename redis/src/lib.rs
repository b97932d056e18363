//! The Redis data model as a state machine of the core ([`RedisStateMachine`]).
//!
//! A request body is a *group*: commands (argument lists, the name first) that apply in order in
//! one log entry, so a group is atomic (`MULTI … EXEC`) and a pipeline's writes share an entry.
//! The reply is each command's reply, RESP3-encoded, one after the other; the server re-encodes
//! them for the connection's protocol.
//!
//! Besides the data commands, the server sends commands of its own, which clients may not send
//! ([`is_internal`]): WATCH's read and EXEC's check ([`watch_command`], [`check_command`]), and
//! the reaper of expired keys ([`expired_group`], [`reap_group`]).
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
pub use commands::reap::{
    decode_expired_reply, decode_reap_reply, decode_sweep_reply, expired_group, reap_group,
    sweep_group, Expired, Swept, SWEEP_MAX,
};
pub use commands::watch::{check_command, exec_aborted, watch_command, watched, Watched};
pub use commands::{all as commands, is_internal, lookup, parse_i64, unknown_command, CommandSpec};
pub use machine::RedisStateMachine;
