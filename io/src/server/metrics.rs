//! The server's own counters, shared by the connection tasks: connections, and each command's
//! latency from the moment it was parsed to the moment its reply was written out.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;

use crate::metrics::Histogram;

/// Commands the connection answers itself (the data commands come from `ziggy_redis`).
const CONNECTION_COMMANDS: &[&str] = &[
    "auth", "client", "command", "config", "discard", "echo", "exec", "hello", "info", "multi",
    "ping", "quit", "select", "unwatch", "watch",
];

/// Where commands no table names are counted.
const UNKNOWN: &str = "unknown";

pub struct Metrics {
    pub connections: AtomicU64,
    pub accepted: AtomicU64,
    /// Lookups of a key by `GET`, `GETEX`, `GETDEL` and each key of `MGET` that found it, and
    /// that did not.
    pub keyspace_hits: AtomicU64,
    pub keyspace_misses: AtomicU64,
    /// By lowercase command name; fixed at start, so recording takes no lock.
    commands: BTreeMap<&'static str, Histogram>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let names = ziggy_redis::commands()
            .iter()
            .map(|c| c.name)
            .chain(CONNECTION_COMMANDS.iter().copied())
            .chain([UNKNOWN]);
        Metrics {
            connections: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            keyspace_hits: AtomicU64::new(0),
            keyspace_misses: AtomicU64::new(0),
            commands: names.map(|n| (n, Histogram::default())).collect(),
        }
    }
}

impl Metrics {
    /// Records one command's latency; `name` in any case.
    pub fn record(&self, name: &[u8], nanos: u64) {
        self.record_as(self.key(name), nanos);
    }

    /// Records one command's latency under a [`Metrics::key`].
    pub fn record_as(&self, key: &'static str, nanos: u64) {
        self.commands[key].record(nanos);
    }

    /// The name `name` (any case) is counted under.
    pub fn key(&self, name: &[u8]) -> &'static str {
        let mut lower = [0u8; 24];
        let known = name.len() <= lower.len() && {
            lower[..name.len()].copy_from_slice(name);
            lower[..name.len()].make_ascii_lowercase();
            true
        };
        std::str::from_utf8(&lower[..name.len().min(lower.len())])
            .ok()
            .filter(|_| known)
            .and_then(|n| self.commands.get_key_value(n))
            .map_or(UNKNOWN, |(k, _)| k)
    }

    pub fn commands_processed(&self) -> u64 {
        self.commands.values().map(Histogram::count).sum()
    }

    /// `ziggy_commands_total` and `ziggy_command_seconds` for every command used so far.
    pub fn write_commands(&self, out: &mut String) {
        out.push_str(
            "# HELP ziggy_command_seconds Latency of each command, parsed to answered.\n\
             # TYPE ziggy_command_seconds histogram\n",
        );
        for (name, histogram) in self.commands.iter().filter(|(_, h)| h.count() > 0) {
            let labels = format!("cmd=\"{name}\"");
            histogram.write_prometheus("ziggy_command_seconds", "", &labels, out);
        }
        out.push_str(
            "# HELP ziggy_commands_total Commands answered.\n# TYPE ziggy_commands_total counter\n",
        );
        for (name, histogram) in self.commands.iter().filter(|(_, h)| h.count() > 0) {
            let _ = writeln!(
                out,
                "ziggy_commands_total{{cmd=\"{name}\"}} {}",
                histogram.count()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_counted_by_lowercase_name_and_strangers_as_unknown() {
        let metrics = Metrics::default();
        metrics.record(b"GET", 1_000);
        metrics.record(b"get", 1_000);
        metrics.record(b"Ping", 1_000);
        metrics.record(b"NOSUCHCOMMAND", 1_000);
        metrics.record(&[0xFF; 40], 1_000);
        let mut out = String::new();
        metrics.write_commands(&mut out);
        assert!(
            out.contains("ziggy_commands_total{cmd=\"get\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("ziggy_commands_total{cmd=\"ping\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("ziggy_commands_total{cmd=\"unknown\"} 2\n"),
            "{out}"
        );
        assert!(!out.contains("cmd=\"set\""), "unused commands are left out");
    }
}
