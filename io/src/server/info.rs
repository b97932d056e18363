//! `INFO`: Redis's sections, filled from the replica's status and the server's counters.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::metrics::Metrics;
use super::status::NodeStatus;

/// The sections in the order `INFO` (no argument, `default`, `all`) lists them.
const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "keyspace",
];

/// Which sections `INFO args…` asks for, lowercase (all for none, `default`, `all`,
/// `everything`); unknown names are left out, as Redis does.
pub fn wanted(args: &[Vec<u8>]) -> Vec<&'static str> {
    let asked: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = asked.is_empty()
        || asked
            .iter()
            .any(|a| matches!(a.as_str(), "default" | "all" | "everything"));
    SECTIONS
        .iter()
        .copied()
        .filter(|s| all || asked.iter().any(|a| a == s))
        .collect()
}

/// What the sections show.
pub struct Facts<'a> {
    pub status: &'a NodeStatus,
    pub metrics: &'a Metrics,
    /// DBSIZE, when it could be read (the cluster may have no leader).
    pub keys: Option<u64>,
}

pub fn render(sections: &[&str], facts: &Facts) -> String {
    let mut out = String::new();
    for (i, section) in sections.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        match *section {
            "server" => server(&mut out),
            "clients" => clients(&mut out, facts.metrics),
            "memory" => memory(&mut out),
            "persistence" => persistence(&mut out, facts.status),
            "stats" => stats(&mut out, facts),
            "replication" => out.push_str(&facts.status.info_replication()),
            "keyspace" => keyspace(&mut out, facts.keys),
            _ => unreachable!("only known sections are wanted"),
        }
    }
    out
}

fn server(out: &mut String) {
    let _ = write!(
        out,
        "# Server\r\nredis_version:7.0.0\r\nziggydb_version:{}\r\nredis_mode:standalone\r\n\
         os:{}\r\narch_bits:64\r\nprocess_id:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::process::id()
    );
}

fn clients(out: &mut String, metrics: &Metrics) {
    let _ = write!(
        out,
        "# Clients\r\nconnected_clients:{}\r\n",
        metrics.connections.load(Ordering::Relaxed)
    );
}

fn memory(out: &mut String) {
    let rss = resident_bytes().unwrap_or(0);
    let _ = write!(
        out,
        "# Memory\r\nused_memory:{rss}\r\nused_memory_rss:{rss}\r\nused_memory_human:{:.2}M\r\n",
        rss as f64 / (1 << 20) as f64
    );
}

/// The process's resident set, from `/proc/self/statm` (Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn persistence(out: &mut String, status: &NodeStatus) {
    let storage = &status.storage;
    let fsync_ms = storage.sync_nanos as f64 / 1e6 / storage.syncs.max(1) as f64;
    let _ = write!(
        out,
        "# Persistence\r\nloading:0\r\n\
         durability:every acknowledged write is fdatasync'd on a quorum\r\n\
         wal_fsyncs:{}\r\nwal_fsync_avg_ms:{fsync_ms:.3}\r\nbytes_written:{}\r\n\
         checkpoints:{}\r\ncheckpoint_index:{}\r\ncompaction_debt_bytes:{}\r\n",
        storage.syncs,
        storage.bytes_written,
        status.checkpoints,
        status.checkpoint_index,
        status.compaction_debt.unwrap_or(0)
    );
}

fn stats(out: &mut String, facts: &Facts) {
    let m = facts.metrics;
    let _ = write!(
        out,
        "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
         keyspace_hits:{}\r\nkeyspace_misses:{}\r\nexpired_keys:{}\r\nelections:{}\r\nmessages_sent:{}\r\n\
         messages_received:{}\r\nmessages_dropped:{}\r\n",
        m.accepted.load(Ordering::Relaxed),
        m.commands_processed(),
        m.keyspace_hits.load(Ordering::Relaxed),
        m.keyspace_misses.load(Ordering::Relaxed),
        facts.status.reaped,
        facts.status.elections,
        facts.status.messages_sent,
        facts.status.messages_received,
        facts.status.messages_dropped,
    );
}

fn keyspace(out: &mut String, keys: Option<u64>) {
    out.push_str("# Keyspace\r\n");
    if let Some(keys) = keys.filter(|&k| k > 0) {
        let _ = write!(out, "db0:keys={keys},expires=0,avg_ttl=0\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_chosen_as_redis_chooses_them() {
        assert_eq!(wanted(&[]).len(), SECTIONS.len());
        assert_eq!(wanted(&[b"ALL".to_vec()]).len(), SECTIONS.len());
        assert_eq!(wanted(&[b"Replication".to_vec()]), ["replication"]);
        assert_eq!(
            wanted(&[b"keyspace".to_vec(), b"server".to_vec(), b"nosuch".to_vec()]),
            ["server", "keyspace"]
        );
        assert!(wanted(&[b"nosuch".to_vec()]).is_empty());
    }

    #[test]
    fn every_section_renders_under_its_header() {
        let status = NodeStatus {
            role: "leader",
            ..NodeStatus::default()
        };
        let metrics = Metrics::default();
        let facts = Facts {
            status: &status,
            metrics: &metrics,
            keys: Some(3),
        };
        let text = render(&wanted(&[]), &facts);
        for header in [
            "# Server",
            "# Clients",
            "# Memory",
            "# Persistence",
            "# Stats",
            "# Replication",
            "# Keyspace",
        ] {
            assert!(text.contains(header), "{header} missing from {text}");
        }
        assert!(text.contains("role:master\r\n"));
        assert!(text.contains("db0:keys=3,"));
    }
}
