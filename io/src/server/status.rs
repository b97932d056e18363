//! A snapshot of one replica for operators: what `INFO replication`, `/status`, `/health` and
//! `/metrics` show. The core thread takes it between two steps; nothing here decides anything.

use std::fmt::Write;

use ziggy_core::replica::Role;
use ziggy_core::StateMachine;

use crate::driver::ReplicaDriver;
use crate::file_storage::StorageStats;
use crate::metrics::Histogram;

#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    pub replica: u8,
    pub replica_count: u8,
    pub cluster: u64,
    /// "leader", "follower", "candidate" or "pre-candidate".
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<u8>,
    /// Whether requests sent to this replica are served now: it leads and has committed an entry
    /// of its term, or it follows a leader it can forward to.
    pub serving: bool,
    pub halted: bool,
    pub commit_index: u64,
    pub applied: u64,
    pub log_head: u64,
    pub checkpoint_index: u64,
    /// What the leader knows of each peer (empty on a follower).
    pub peers: Vec<PeerStatus>,
    pub elections: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub messages_dropped: u64,
    pub checkpoints: u64,
    pub storage: StorageStats,
    pub fsync: Histogram,
    /// Requests sent and not yet answered; write groups waiting for a lane.
    pub in_flight: usize,
    pub queued: usize,
    /// Expired keys the reaper deleted since this server started (while it led).
    pub reaped: u64,
    /// Log entries the reaper proposed (only when a look found something to reclaim).
    pub reaps: u64,
    /// Members of removed collections the reaper swept since this server started.
    pub swept: u64,
    /// Bytes the LSM's compaction owes (None while the state is being rebuilt).
    pub compaction_debt: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct PeerStatus {
    pub replica: u8,
    /// The peer's log is this many entries behind the leader's commit index (None: not heard
    /// from in this term).
    pub lag: Option<u64>,
    /// Milliseconds since the peer last answered.
    pub silent_ms: u64,
}

impl NodeStatus {
    pub fn of<S: StateMachine>(driver: &ReplicaDriver<S>) -> NodeStatus {
        let replica = driver.replica();
        let tick_ms = replica.config().tick_ns / 1_000_000;
        let stats = replica.stats;
        let role = replica.role();
        let leader = replica.leader();
        let leading = role == Role::Leader;
        NodeStatus {
            replica: replica.id(),
            replica_count: replica.replica_count(),
            cluster: replica.superblock().cluster,
            role: match role {
                Role::Leader => "leader",
                Role::Follower => "follower",
                Role::Candidate => "candidate",
                Role::PreCandidate => "pre-candidate",
            },
            term: replica.term(),
            leader,
            serving: replica.accepting_requests() || (!leading && leader.is_some()),
            halted: driver.halted().is_some(),
            commit_index: replica.commit_index(),
            applied: replica.applied(),
            log_head: replica.log_head(),
            checkpoint_index: replica.checkpoint_index(),
            peers: replica
                .peer_progress()
                .iter()
                .map(|p| PeerStatus {
                    replica: p.replica,
                    lag: p.matched.map(|m| replica.commit_index().saturating_sub(m)),
                    silent_ms: p.silent_ticks * tick_ms,
                })
                .collect(),
            elections: stats.elections,
            messages_sent: stats.messages_sent,
            messages_received: stats.messages_received,
            messages_dropped: stats.messages_dropped,
            checkpoints: driver.checkpoints(),
            storage: driver.storage_stats(),
            fsync: driver.sync_latency().clone(),
            in_flight: 0,
            queued: 0,
            reaped: 0,
            reaps: 0,
            swept: 0,
            compaction_debt: None,
        }
    }

    /// `/status`: one JSON object.
    pub fn to_json(&self) -> String {
        let leader = self.leader.map_or("null".to_string(), |l| l.to_string());
        let mut peers = String::new();
        for (i, p) in self.peers.iter().enumerate() {
            let lag = p.lag.map_or("null".to_string(), |l| l.to_string());
            let comma = if i > 0 { "," } else { "" };
            let _ = write!(
                peers,
                r#"{comma}{{"replica":{},"lag":{lag},"silent_ms":{}}}"#,
                p.replica, p.silent_ms
            );
        }
        format!(
            concat!(
                r#"{{"replica":{},"replica_count":{},"cluster":{},"role":"{}","term":{},"#,
                r#""leader":{},"serving":{},"halted":{},"commit_index":{},"applied":{},"#,
                r#""log_head":{},"checkpoint_index":{},"peers":[{}]}}"#
            ),
            self.replica,
            self.replica_count,
            self.cluster,
            self.role,
            self.term,
            leader,
            self.serving && !self.halted,
            self.halted,
            self.commit_index,
            self.applied,
            self.log_head,
            self.checkpoint_index,
            peers
        )
    }

    /// `INFO replication`'s lines (Redis's section, with the Raft words beside Redis's own).
    pub fn info_replication(&self) -> String {
        let redis_role = if self.role == "leader" {
            "master"
        } else {
            "slave"
        };
        let mut out = format!(
            "# Replication\r\nrole:{redis_role}\r\nraft_role:{}\r\nreplica:{}\r\nreplica_count:{}\r\n\
             term:{}\r\nleader:{}\r\ncommit_index:{}\r\napplied_index:{}\r\nlog_head:{}\r\n\
             checkpoint_index:{}\r\n",
            self.role,
            self.replica,
            self.replica_count,
            self.term,
            self.leader.map_or("none".to_string(), |l| l.to_string()),
            self.commit_index,
            self.applied,
            self.log_head,
            self.checkpoint_index,
        );
        for p in &self.peers {
            let lag = p.lag.map_or("unknown".to_string(), |l| l.to_string());
            let _ = write!(
                out,
                "peer{}:lag={lag},silent_ms={}\r\n",
                p.replica, p.silent_ms
            );
        }
        out
    }
}
