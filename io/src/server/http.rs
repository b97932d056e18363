//! The operators' HTTP port: `/health` (200 when this replica serves), `/status` (JSON) and
//! `/metrics` (Prometheus text). A minimal HTTP/1.1 responder: one GET per connection, closed
//! after the answer; nothing here touches the data.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use super::core_loop::{CoreMsg, CoreSender};
use super::metrics::Metrics;
use super::status::NodeStatus;

/// The longest request head read (a GET line and a few headers).
const REQUEST_MAX: usize = 8 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the HTTP port until `stopped`.
pub async fn serve(
    listener: TcpListener,
    core: CoreSender,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (core, metrics) = (core.clone(), metrics.clone());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, core, metrics)).await;
                });
            }
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    core: CoreSender,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_MAX {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, kind, body) = if method != b"GET" {
        (405, "text/plain", "only GET\n".to_string())
    } else {
        route(path, &core, &metrics).await
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

async fn route(path: &[u8], core: &CoreSender, metrics: &Metrics) -> (u16, &'static str, String) {
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    if !matches!(path, b"/health" | b"/status" | b"/metrics") {
        return (
            404,
            "text/plain",
            "try /health, /status or /metrics\n".into(),
        );
    }
    let Some(status) = node_status(core).await else {
        return (503, "text/plain", "the core has stopped\n".into());
    };
    match path {
        b"/health" if status.serving && !status.halted => (200, "text/plain", "ok\n".into()),
        b"/health" if status.halted => (503, "text/plain", "halted\n".into()),
        b"/health" => (503, "text/plain", "no leader known\n".into()),
        b"/status" => (200, "application/json", status.to_json() + "\n"),
        _ => (
            200,
            "text/plain; version=0.0.4",
            prometheus(&status, metrics),
        ),
    }
}

/// Asks the core thread for its status (None if it has stopped).
pub async fn node_status(core: &CoreSender) -> Option<NodeStatus> {
    let (tx, rx) = oneshot::channel();
    core.send(CoreMsg::Status(tx)).ok()?;
    rx.await.ok()
}

/// `/metrics`: the replica's state and counters, then the server's.
fn prometheus(status: &NodeStatus, metrics: &Metrics) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP ziggy_{name} {help}\n# TYPE ziggy_{name} gauge\nziggy_{name} {value}\n"
        );
    };
    gauge("term", "The replica's Raft term.", status.term);
    gauge(
        "leader",
        "1 if this replica leads.",
        (status.role == "leader") as u64,
    );
    gauge(
        "serving",
        "1 if requests sent here are served now.",
        status.serving as u64,
    );
    gauge(
        "commit_index",
        "The highest index known committed.",
        status.commit_index,
    );
    gauge(
        "applied_index",
        "The highest index applied to the state.",
        status.applied,
    );
    gauge("log_head", "The highest index in the log.", status.log_head);
    gauge(
        "checkpoint_index",
        "The durable checkpoint's index.",
        status.checkpoint_index,
    );
    gauge(
        "requests_in_flight",
        "Requests sent and not yet answered.",
        status.in_flight as u64,
    );
    gauge(
        "write_groups_queued",
        "Write groups waiting for a lane.",
        status.queued as u64,
    );
    if let Some(debt) = status.compaction_debt {
        gauge(
            "compaction_debt_bytes",
            "Bytes the LSM's compaction owes.",
            debt,
        );
    }
    gauge(
        "connections",
        "Client connections open now.",
        metrics.connections.load(Ordering::Relaxed),
    );
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP ziggy_{name} {help}\n# TYPE ziggy_{name} counter\nziggy_{name} {value}\n"
        );
    };
    counter(
        "elections_total",
        "Elections this replica began.",
        status.elections,
    );
    counter(
        "messages_sent_total",
        "Messages sent to peers.",
        status.messages_sent,
    );
    counter(
        "messages_received_total",
        "Messages from peers.",
        status.messages_received,
    );
    counter(
        "messages_dropped_total",
        "Messages from peers refused (checksum, cluster, addressee, incarnation).",
        status.messages_dropped,
    );
    counter(
        "checkpoints_total",
        "Checkpoints completed.",
        status.checkpoints,
    );
    counter(
        "expired_keys_reaped_total",
        "Expired keys the reaper deleted while this replica led.",
        status.reaped,
    );
    counter(
        "reaper_entries_total",
        "Log entries the reaper proposed: only when a look found something to reclaim.",
        status.reaps,
    );
    counter(
        "collection_members_swept_total",
        "Members of removed collections the reaper deleted while this replica led.",
        status.swept,
    );
    counter(
        "storage_bytes_written_total",
        "Bytes written to the data file.",
        status.storage.bytes_written,
    );
    counter(
        "storage_writes_total",
        "Writes to the data file.",
        status.storage.writes,
    );
    counter(
        "connections_total",
        "Client connections accepted.",
        metrics.accepted.load(Ordering::Relaxed),
    );
    out.push_str(
        "# HELP ziggy_peer_lag_entries How far each peer's log is behind the commit index (leader only).\n\
         # TYPE ziggy_peer_lag_entries gauge\n",
    );
    for peer in &status.peers {
        if let Some(lag) = peer.lag {
            let _ = writeln!(
                out,
                "ziggy_peer_lag_entries{{peer=\"{}\"}} {lag}",
                peer.replica
            );
        }
    }
    status.fsync.write_prometheus(
        "ziggy_wal_fsync_seconds",
        "Time in fdatasync, per call.",
        "",
        &mut out,
    );
    metrics.write_commands(&mut out);
    out
}
