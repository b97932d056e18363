//! `ziggy serve`: the core in a real runtime, speaking the Redis protocol.
//!
//! One OS thread owns the core ([`core_loop`]): the replica, its data file, the client sessions.
//! Tokio drives the sockets; each connection ([`connection`]) parses requests and sends groups
//! of commands to the core over a channel. Replicas of a cluster talk over TCP ([`peers`]), and
//! a replica that does not lead forwards its connections' requests to the one that does
//! ([`forward`]). The design and its stages: `docs/design/server-plan.md`.

pub mod backup;
pub mod connection;
pub mod core_loop;
pub mod forward;
pub mod http;
pub mod info;
pub mod metrics;
pub mod peers;
pub mod status;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use ziggy_core::Config;
use ziggy_redis::RedisStateMachine;
use ziggy_resp::Limits;

use crate::driver::{DriverError, ReplicaDriver};
use crate::format::{format_member, Member};
use connection::Connection;
use core_loop::{CoreLoop, CoreMsg, CoreSender};
use metrics::Metrics;
use peers::PeerLinks;
use tokio::sync::mpsc::UnboundedReceiver;

/// The port `ziggy serve` listens on unless told otherwise (Redis's is 6379).
pub const DEFAULT_PORT: u16 = 7379;

#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The data file; formatted on first start.
    pub data: PathBuf,
    pub bind: IpAddr,
    pub port: u16,
    pub config: Config,
    pub limits: Limits,
    /// This replica's place in a cluster; None: a single node.
    pub cluster: Option<ClusterOptions>,
    /// The operators' HTTP port (`/health`, `/status`, `/metrics`) on `bind`; None: none.
    pub http_port: Option<u16>,
    /// The password clients must give with `AUTH` before anything else; None: none.
    pub requirepass: Option<String>,
    /// How often the leader starts a pass of its reaper over the keyspace, deleting expired
    /// keys (reads hide them at once; this reclaims their space).
    pub reap_every: Duration,
}

/// A replica of a cluster: the same `id` and `addresses` on every replica, each its own
/// `replica` index.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The cluster's id (any number but 0): messages of another cluster are refused.
    pub id: u64,
    /// This replica's index in `addresses`.
    pub replica: u8,
    /// Where each replica listens for its peers, in replica order.
    pub addresses: Vec<SocketAddr>,
}

impl ClusterOptions {
    fn member(&self) -> Member {
        Member {
            cluster: self.id,
            replica: self.replica,
            replica_count: self.addresses.len() as u8,
        }
    }

    fn check(&self) -> Result<(), ServeError> {
        let count = self.addresses.len();
        if self.id == 0 {
            return Err(ServeError::Cluster("the cluster id must not be 0".into()));
        }
        if !(2..=ziggy_core::superblock::REPLICAS_MAX).contains(&count) {
            return Err(ServeError::Cluster(format!(
                "a cluster has 2 to {} replicas; --addresses names {count}",
                ziggy_core::superblock::REPLICAS_MAX
            )));
        }
        if self.replica as usize >= count {
            return Err(ServeError::Cluster(format!(
                "replica {} is not one of the {count} in --addresses (indexes start at 0)",
                self.replica
            )));
        }
        Ok(())
    }
}

impl ServeOptions {
    pub fn new(data: PathBuf) -> ServeOptions {
        ServeOptions {
            data,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            config: Config::production(),
            limits: Limits::default(),
            cluster: None,
            http_port: None,
            requirepass: None,
            reap_every: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
pub enum ServeError {
    Open(DriverError),
    Format(std::io::Error),
    Bind(SocketAddr, std::io::Error),
    Runtime(std::io::Error),
    /// The core stopped on an unrecoverable error.
    Core(DriverError),
    /// The cluster options are wrong, or do not match the data file.
    Cluster(String),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Open(e) => write!(f, "cannot open the data file: {e}"),
            ServeError::Format(e) => write!(f, "cannot format the data file: {e}"),
            ServeError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServeError::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
            ServeError::Core(e) => write!(f, "the core stopped: {e}"),
            ServeError::Cluster(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// Opens the data file, formatting it first if it does not exist, and checks that it belongs
/// where the options say.
fn open_or_format(
    path: &Path,
    config: &Config,
    cluster: Option<&ClusterOptions>,
) -> Result<ReplicaDriver<RedisStateMachine>, ServeError> {
    if !path.exists() {
        tracing::info!(path = %path.display(), "formatting a new data file");
        let member = cluster.map_or_else(|| Member::single(fresh_cluster_id()), |c| c.member());
        format_member(path, config, member, false).map_err(ServeError::Format)?;
    }
    let driver = ReplicaDriver::open(path, config).map_err(ServeError::Open)?;
    let superblock = driver.replica().superblock();
    let found = Member {
        cluster: superblock.cluster,
        replica: superblock.replica,
        replica_count: superblock.replica_count,
    };
    let mismatch = match cluster {
        Some(c) if c.member() != found => Some(c.member()),
        None if found.replica_count != 1 => Some(Member::single(found.cluster)),
        _ => None,
    };
    if let Some(wanted) = mismatch {
        return Err(ServeError::Cluster(format!(
            "{} holds replica {} of {} of cluster {}, not replica {} of {} of cluster {}",
            path.display(),
            found.replica,
            found.replica_count,
            found.cluster,
            wanted.replica,
            wanted.replica_count,
            wanted.cluster
        )));
    }
    Ok(driver)
}

/// A fresh cluster id for a single node's new data file.
fn fresh_cluster_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    nanos ^ ((std::process::id() as u64) << 40) | 1
}

/// A running server: where it listens, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// Where the HTTP port listens, if it does.
    pub http: Option<SocketAddr>,
    core: CoreSender,
    core_thread: CoreHandle,
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// Where the core runs: a thread of its own, or, in a madsim build, a task of the simulated node
/// (madsim allows no threads).
#[cfg(not(madsim))]
type CoreHandle = std::thread::JoinHandle<Result<(), DriverError>>;
#[cfg(madsim)]
type CoreHandle = tokio::task::JoinHandle<Result<(), DriverError>>;

/// What the core needs to open the data file and run.
struct CoreStart {
    data: PathBuf,
    config: Config,
    cluster: Option<ClusterOptions>,
    reap_every: Duration,
    peers: PeerLinks,
    inbox: UnboundedReceiver<CoreMsg>,
    /// Told once the core takes requests, or why it cannot.
    ready: tokio::sync::oneshot::Sender<Result<(), ServeError>>,
}

impl CoreStart {
    async fn run(self) -> Result<(), DriverError> {
        let opened =
            open_or_format(&self.data, &self.config, self.cluster.as_ref()).and_then(|driver| {
                CoreLoop::new(driver, self.peers, self.reap_every).map_err(ServeError::Open)
            });
        match opened {
            Ok(core) => {
                let _ = self.ready.send(Ok(()));
                core.run(self.inbox).await
            }
            Err(e) => {
                let _ = self.ready.send(Err(e));
                Ok(())
            }
        }
    }

    /// The core thread, on a current-thread runtime of its own: its `fdatasync`s block nothing
    /// but the core.
    #[cfg(not(madsim))]
    fn spawn(self) -> Result<CoreHandle, ServeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(ServeError::Runtime)?;
        std::thread::Builder::new()
            .name("ziggy-core".into())
            .spawn(move || runtime.block_on(self.run()))
            .map_err(ServeError::Runtime)
    }

    #[cfg(madsim)]
    fn spawn(self) -> Result<CoreHandle, ServeError> {
        Ok(tokio::task::spawn_local(self.run()))
    }
}

impl Running {
    /// Stops taking connections, lets the core finish what is in flight, and waits for it.
    #[cfg(not(madsim))]
    pub fn stop(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        let _ = self.core.send(CoreMsg::Shutdown);
        drop(self.core);
        match self.core_thread.join() {
            Ok(result) => result.map_err(ServeError::Core),
            Err(_) => Err(ServeError::Core(DriverError::Io {
                path: PathBuf::new(),
                error: std::io::Error::other("the core thread panicked"),
            })),
        }
    }

    /// Stops taking connections, lets the core finish what is in flight, and waits for it.
    #[cfg(madsim)]
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        let _ = self.core.send(CoreMsg::Shutdown);
        drop(self.core);
        match self.core_thread.await {
            Ok(result) => result.map_err(ServeError::Core),
            Err(_) => Err(ServeError::Core(DriverError::Io {
                path: PathBuf::new(),
                error: std::io::Error::other("the core task panicked"),
            })),
        }
    }
}

/// Opens the data file, starts the core thread and listens, on the current tokio runtime.
pub async fn start(options: ServeOptions) -> Result<Running, ServeError> {
    if let Some(cluster) = &options.cluster {
        cluster.check()?;
    }
    let addr = SocketAddr::new(options.bind, options.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Bind(addr, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(addr, e))?;
    // The core is built where it runs (the grid is not `Send`), and reports when it is ready to
    // take requests.
    let (tx, inbox) = tokio::sync::mpsc::unbounded_channel();
    let (shutdown, stopped) = tokio::sync::watch::channel(false);
    let peers = match &options.cluster {
        None => PeerLinks::none(),
        Some(cluster) => {
            let address = cluster.addresses[cluster.replica as usize];
            let listener = TcpListener::bind(address)
                .await
                .map_err(|e| ServeError::Bind(address, e))?;
            tracing::info!(%address, replica = cluster.replica, "listening for peers");
            peers::start(
                cluster.replica,
                &cluster.addresses,
                listener,
                tx.clone(),
                stopped.clone(),
            )
        }
    };
    let (ready, is_ready) = tokio::sync::oneshot::channel::<Result<(), ServeError>>();
    let core_thread = CoreStart {
        data: options.data.clone(),
        config: options.config.clone(),
        cluster: options.cluster.clone(),
        reap_every: options.reap_every,
        peers,
        inbox,
        ready,
    }
    .spawn()?;
    match is_ready.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(ServeError::Runtime(std::io::Error::other(
                "the core stopped while opening",
            )));
        }
    }
    let metrics = Arc::new(Metrics::default());
    let http = match options.http_port {
        None => None,
        Some(port) => {
            let address = SocketAddr::new(options.bind, port);
            let listener = TcpListener::bind(address)
                .await
                .map_err(|e| ServeError::Bind(address, e))?;
            let address = listener
                .local_addr()
                .map_err(|e| ServeError::Bind(address, e))?;
            tokio::spawn(http::serve(
                listener,
                tx.clone(),
                metrics.clone(),
                stopped.clone(),
            ));
            tracing::info!(%address, "HTTP: /health /status /metrics");
            Some(address)
        }
    };
    let mut stopped = stopped;
    let ids = Arc::new(AtomicU64::new(1));
    let accept_metrics = metrics.clone();
    let accept_core = tx.clone();
    let limits = options.limits;
    let requirepass: Option<Arc<str>> = options.requirepass.as_deref().map(Arc::from);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let metrics = accept_metrics.clone();
                    let connection = Connection::new(
                        id,
                        accept_core.clone(),
                        limits,
                        requirepass.clone(),
                        metrics.clone(),
                    );
                    metrics.accepted.fetch_add(1, Ordering::Relaxed);
                    metrics.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        if let Err(e) = connection.serve(stream).await {
                            tracing::debug!(%peer, error = %e, "connection closed");
                        }
                        metrics.connections.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            }
        }
    });
    tracing::info!(%addr, data = %options.data.display(), "ziggy serve: listening");
    Ok(Running {
        addr,
        http,
        core: tx,
        core_thread,
        shutdown,
    })
}

/// `ziggy serve`: runs until SIGINT or SIGTERM, then closes cleanly.
#[cfg(not(madsim))]
pub fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async {
        let running = start(options).await?;
        wait_for_signal().await;
        tracing::info!("ziggy serve: shutting down");
        running.stop()
    })
}

/// A madsim build runs servers inside a simulation only (`start`), never as a process.
#[cfg(madsim)]
pub fn serve(_options: ServeOptions) -> Result<(), ServeError> {
    Err(ServeError::Runtime(std::io::Error::other(
        "this is a simulation build (--cfg madsim): it cannot serve",
    )))
}

#[cfg(not(madsim))]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
