//! The links between replicas: TCP connections carrying the core's checksummed messages back to
//! back (each message's header gives its length).
//!
//! Each replica dials every peer and only sends on that connection; it reads what its peers send
//! on the connections they dialed. A link that fails is dialed again with capped exponential
//! back-off, and what was queued for it meanwhile is dropped: Raft resends what matters, and
//! stale messages would only be refused. Nothing that arrives is trusted: the core checks every
//! message's checksums, cluster id, addressee and sender's incarnation, and a frame longer than
//! any message closes its connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc as channel;
use tokio::sync::watch;
use ziggy_core::message::MESSAGE_HEADER_SIZE;

use super::core_loop::{CoreMsg, CoreSender};

/// The longest message body a peer may send: an `Append` of `append_max` whole entries, or a
/// checkpoint offer (the client table and the state's bytes), with room to spare.
pub const FRAME_BODY_MAX: usize = 64 << 20;
/// Messages queued for one peer; beyond it they are dropped.
const QUEUE_MAX: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The sending ends of the links, one per peer (none for this replica itself).
#[derive(Clone)]
pub struct PeerLinks {
    links: Vec<Option<channel::Sender<Vec<u8>>>>,
}

impl PeerLinks {
    /// No peers: a single node.
    pub fn none() -> PeerLinks {
        PeerLinks { links: Vec::new() }
    }

    /// Queues a message for peer `to`; false when it was dropped (link down and queue full, or no
    /// such peer). Never blocks: the core thread calls it.
    pub fn send(&self, to: u8, bytes: &[u8]) -> bool {
        match self.links.get(to as usize) {
            Some(Some(link)) => link.try_send(bytes.to_vec()).is_ok(),
            _ => false,
        }
    }
}

/// Starts the links of replica `me`: accepts peers on `listener` (bound to its own address) and
/// dials the others. Frames that arrive go to the core as [`CoreMsg::Peer`].
pub fn start(
    me: u8,
    addresses: &[SocketAddr],
    listener: TcpListener,
    core: CoreSender,
    stopped: watch::Receiver<bool>,
) -> PeerLinks {
    tokio::spawn(accept(listener, core, stopped.clone()));
    let links = addresses
        .iter()
        .enumerate()
        .map(|(index, &address)| {
            (index != me as usize).then(|| {
                let (tx, rx) = channel::channel(QUEUE_MAX);
                tokio::spawn(dial(index as u8, address, rx, stopped.clone()));
                tx
            })
        })
        .collect();
    PeerLinks { links }
}

async fn accept(listener: TcpListener, core: CoreSender, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let core = core.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    if let Err(e) = receive(stream, core, stopped).await {
                        tracing::debug!(%peer, error = %e, "peer link closed");
                    }
                });
            }
        }
    }
}

/// Reads frames from one peer until it closes, errs or sends a frame too long to be a message.
async fn receive(
    mut stream: TcpStream,
    core: CoreSender,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        let frame = tokio::select! {
            _ = stopped.changed() => return Ok(()),
            frame = read_frame(&mut stream) => frame?,
        };
        if core.send(CoreMsg::Peer(frame)).is_err() {
            return Ok(()); // the core has stopped
        }
    }
}

/// One message: the header, then as many body bytes as the header says.
pub async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut frame = vec![0u8; MESSAGE_HEADER_SIZE];
    stream.read_exact(&mut frame).await?;
    let size = u32::from_le_bytes(frame[24..28].try_into().expect("4 bytes")) as usize;
    if size > FRAME_BODY_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a peer frame of {size} bytes is longer than any message"),
        ));
    }
    frame.resize(MESSAGE_HEADER_SIZE + size, 0);
    stream.read_exact(&mut frame[MESSAGE_HEADER_SIZE..]).await?;
    Ok(frame)
}

/// Keeps a connection to peer `index` and writes what is queued for it.
async fn dial(
    index: u8,
    address: SocketAddr,
    mut queue: channel::Receiver<Vec<u8>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let connected = tokio::select! {
            _ = stopped.changed() => return,
            connected = TcpStream::connect(address) => connected,
        };
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(peer = index, %address, error = %e, "cannot reach peer");
                while queue.try_recv().is_ok() {} // stale by the time the link is up
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tracing::info!(peer = index, %address, "connected to peer");
        backoff = BACKOFF_MIN;
        let mut batch = Vec::new();
        loop {
            let first = tokio::select! {
                _ = stopped.changed() => return,
                first = queue.recv() => first,
            };
            let Some(first) = first else { return };
            batch.clear();
            batch.extend_from_slice(&first);
            while let Ok(next) = queue.try_recv() {
                batch.extend_from_slice(&next);
                if batch.len() >= 1 << 20 {
                    break;
                }
            }
            let written = match stream.write_all(&batch).await {
                Ok(()) => stream.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::info!(peer = index, %address, error = %e, "peer link lost");
                break;
            }
        }
    }
}
