//! The transport handle, its shared state (one entry per peer), dialling and the accept
//! loop.
//!
//! State shared by every task lives in [`Inner`]:
//!
//! - `peers`: per peer address, the connection used for sending to it (the newest one
//!   set up, in either direction) and the queues of its sender task while one runs. An
//!   entry goes away when it has neither.
//! - `tasks`: every spawned task, in one `JoinSet`, so `close()` can wait for them and
//!   dropping the transport aborts them.
//!
//! Lock order: `peers` before `tasks`; no lock is held across an `.await`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, SendDatagramError, VarInt};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, warn, Instrument};

use super::config::QuicConfig;
use super::error::{QuicError, RequestError, SendError};
use super::frame::{self, FrameReadError};
use super::inbound::Inbound;
use super::peer::{self, SenderQueues};
use super::shutdown::{self, ShutdownRx, ShutdownTx};
use super::stats::{Counters, QuicStats};
use super::{connection, CLOSE_CODE_SHUTDOWN};
use crate::certs::CLUSTER_SERVER_NAME;

/// Largest datagram accepted for queueing while a peer is not connected yet, in bytes (the
/// UDP payload limit). Once connected, the connection's own, smaller, limit applies; a
/// queued datagram over it is dropped and counted.
pub const DATAGRAM_QUEUED_BYTES_MAX: usize = 65_527;

/// Inbound unidirectional streams a peer may have open at once on one connection. A peer
/// uses one (its frame stream); a few more let a replacement stream open while the old
/// one winds down.
const UNI_STREAMS_CONCURRENT_MAX: u32 = 4;

/// How long [`QuicTransport::close`] waits for tasks, then for connections to close
/// cleanly, before giving up on each.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The limits tasks need, copied out of [`QuicConfig`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) frame_bytes_max: usize,
    pub(crate) peer_queue_frames_max: usize,
    pub(crate) peer_queue_datagrams_max: usize,
    pub(crate) connect_backoff_ms_max: u64,
    pub(crate) connect_attempts_max: u32,
    /// Longest handshake: the idle time-out.
    pub(crate) connect_timeout: Duration,
}

/// What the transport knows about one peer.
#[derive(Default)]
struct PeerSlot {
    /// The connection used to send to this peer: the newest one set up, whichever side
    /// dialled. Older ones are still served until they close.
    conn: Option<Connection>,
    /// Queues of this peer's sender task, while it runs.
    sender: Option<SenderQueues>,
}

/// State shared by the handles and every task.
pub(crate) struct Inner {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) local_addr: SocketAddr,
    pub(crate) limits: Limits,
    /// One permit per byte of frames that may still be queued, all peers together.
    pub(crate) queued_bytes: Arc<Semaphore>,
    pub(crate) stats: Counters,
    peers: Mutex<BTreeMap<SocketAddr, PeerSlot>>,
    /// One lock per peer being dialled, so concurrent senders share one handshake.
    dial_locks: Mutex<BTreeMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>,
    /// Taken on shutdown, so the application's receiver ends once the tasks have.
    inbound: Mutex<Option<mpsc::Sender<Inbound>>>,
    shutdown: ShutdownTx,
    /// `None` once shut down: nothing new is spawned.
    tasks: Mutex<Option<JoinSet<()>>>,
    runtime: tokio::runtime::Handle,
    span: tracing::Span,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves the maps consistent (every update
    // is a single insert or remove), so a poisoned lock is still safe to use.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// Spawns `task` on the transport's runtime, tracked for `close()`; dropped unstarted
    /// after shutdown.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        let Some(set) = tasks.as_mut() else { return };
        // Reap finished tasks so the set holds live ones only.
        while let Some(done) = set.try_join_next() {
            if let Err(e) = done {
                if e.is_panic() {
                    tracing::error!(parent: &self.span, error = %e, "transport task panicked");
                }
            }
        }
        set.spawn_on(task.instrument(self.span.clone()), &self.runtime);
    }

    pub(crate) fn shutdown_rx(&self) -> ShutdownRx {
        self.shutdown.subscribe()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.is_triggered()
    }

    pub(crate) fn inbound(&self) -> Option<mpsc::Sender<Inbound>> {
        lock(&self.inbound).clone()
    }

    /// The live connection used for sending to `peer`, if any.
    pub(crate) fn sending_connection(&self, peer: SocketAddr) -> Option<Connection> {
        lock(&self.peers)
            .get(&peer)
            .and_then(|slot| slot.conn.clone())
            .filter(|conn| conn.close_reason().is_none())
    }

    /// Takes an established connection (either direction) into use: it becomes the one
    /// for sending to its peer, and a task serves what the peer sends on it.
    pub(crate) fn adopt(self: &Arc<Self>, conn: Connection) {
        let peer = conn.remote_address();
        {
            let mut peers = lock(&self.peers);
            if self.is_shut_down() {
                conn.close(VarInt::from_u32(CLOSE_CODE_SHUTDOWN), b"shutdown");
                return;
            }
            let slot = peers.entry(peer).or_default();
            if let Some(old) = slot.conn.replace(conn.clone()) {
                if old.close_reason().is_none() {
                    debug!(parent: &self.span, %peer, "newer connection takes over sending; older one still served");
                }
            }
        }
        self.spawn(connection::serve(self.clone(), conn, self.shutdown_rx()));
    }

    /// Forgets `conn` as the sending connection of its peer, unless a newer one replaced
    /// it already.
    pub(crate) fn connection_ended(&self, peer: SocketAddr, stable_id: usize) {
        let mut peers = lock(&self.peers);
        if let Some(slot) = peers.get_mut(&peer) {
            if slot.conn.as_ref().is_some_and(|c| c.stable_id() == stable_id) {
                slot.conn = None;
            }
            if slot.conn.is_none() && slot.sender.is_none() {
                peers.remove(&peer);
            }
        }
    }

    /// The live connection to `peer`, dialling it if there is none. Concurrent callers
    /// for one peer share one handshake. A handshake is bounded by the idle time-out.
    pub(crate) async fn connect(self: &Arc<Self>, peer: SocketAddr) -> Result<Connection, String> {
        if let Some(conn) = self.sending_connection(peer) {
            return Ok(conn);
        }
        let dial_lock = {
            let mut locks = lock(&self.dial_locks);
            // Drop the locks nobody holds any more; what is left is bounded by the dials
            // in progress.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(peer).or_default().clone()
        };
        let _dialling = dial_lock.lock().await;
        if let Some(conn) = self.sending_connection(peer) {
            return Ok(conn);
        }
        if self.is_shut_down() {
            return Err("transport closed".to_owned());
        }
        let connecting = self.endpoint.connect(peer, CLUSTER_SERVER_NAME).map_err(|e| e.to_string())?;
        // QUIC stretches its idle time-out to three probe time-outs, about three seconds
        // before any round trip was measured; bound the handshake to what was configured.
        let conn = tokio::time::timeout(self.limits.connect_timeout, connecting)
            .await
            .map_err(|_| format!("handshake timed out after {} ms", self.limits.connect_timeout.as_millis()))?
            .map_err(|e| e.to_string())?;
        debug!(parent: &self.span, %peer, "connected");
        self.adopt(conn.clone());
        Ok(conn)
    }

    /// Queues a frame for `to`, starting its sender task if none runs.
    fn enqueue(self: &Arc<Self>, to: SocketAddr, item: peer::Outgoing) -> Result<(), SendError> {
        let mut peers = lock(&self.peers);
        if self.is_shut_down() {
            return Err(SendError::Closed);
        }
        let slot = peers.entry(to).or_default();
        let queues = match &slot.sender {
            Some(queues) => queues,
            None => {
                let (queues, task) = peer::start(self.clone(), to, self.shutdown_rx());
                self.spawn(task);
                slot.sender.insert(queues)
            }
        };
        queues.push(to, item, &self.queued_bytes)
    }

    /// Ends `peer`'s sender if it has nothing queued; returns whether it did. Checked under
    /// the `peers` lock, which every push holds, so nothing can be queued in between.
    pub(crate) fn retire_sender_if_idle(&self, peer: SocketAddr, idle: impl FnOnce() -> bool) -> bool {
        let mut peers = lock(&self.peers);
        if !idle() {
            return false;
        }
        Self::remove_sender(&mut peers, peer);
        true
    }

    /// Ends `peer`'s sender unconditionally (it gave up); what it had queued is dropped.
    pub(crate) fn retire_sender(&self, peer: SocketAddr) {
        Self::remove_sender(&mut lock(&self.peers), peer);
    }

    fn remove_sender(peers: &mut BTreeMap<SocketAddr, PeerSlot>, peer: SocketAddr) {
        if let Some(slot) = peers.get_mut(&peer) {
            slot.sender = None;
            if slot.conn.is_none() {
                peers.remove(&peer);
            }
        }
    }

    /// Sends a queued datagram on `conn`, counting it if it cannot go.
    pub(crate) fn flush_datagram(&self, conn: &Connection, peer: SocketAddr, bytes: Bytes) {
        let len = bytes.len();
        if let Err(e) = conn.send_datagram(bytes) {
            Counters::add(&self.stats.outbound_datagrams_dropped_total, 1);
            debug!(parent: &self.span, %peer, bytes = len, error = %e, "dropping queued datagram");
        }
    }

    /// Signals every task, closes the endpoint and every connection, and forgets all
    /// peers. Idempotent.
    fn shut_down(&self) {
        self.shutdown.trigger();
        self.endpoint.close(VarInt::from_u32(CLOSE_CODE_SHUTDOWN), b"shutdown");
        let peers = std::mem::take(&mut *lock(&self.peers));
        drop(peers);
        lock(&self.inbound).take();
    }

    fn take_tasks(&self) -> Option<JoinSet<()>> {
        lock(&self.tasks).take()
    }
}

/// Shuts the transport down when the last [`QuicTransport`] handle goes. Tasks hold
/// [`Inner`] but never this, so they cannot keep the transport alive.
struct DropGuard(Arc<Inner>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.shut_down();
        // Dropping the set aborts whatever is still running.
        drop(self.0.take_tasks());
    }
}

/// A node's QUIC endpoint, both server and client, on one UDP address.
///
/// Cloning is cheap and every clone drives the same endpoint. The transport closes when
/// [`close`](Self::close) is called or the last clone is dropped; either way every task it
/// spawned ends.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use geocache_gossip::{certs::Ca, quic::{ClusterTls, Inbound, QuicConfig, QuicTransport}};
///
/// let ca = Ca::generate("demo CA")?;
/// let tls = ClusterTls::from_node_cert(&ca.issue("node-1")?)?;
/// let (transport, mut inbound) = QuicTransport::bind(QuicConfig::new("127.0.0.2:7946".parse()?, tls)).await?;
/// transport.send_frame("127.0.0.3:7946".parse()?, bytes::Bytes::from_static(b"hello"))?;
/// while let Some(event) = inbound.recv().await {
///     if let Inbound::Request { respond, .. } = event {
///         let _ = respond.send(bytes::Bytes::from_static(b"pong"));
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct QuicTransport {
    inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport").field("local_addr", &self.inner.local_addr).finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// Binds the endpoint and starts accepting connections. Inbound events arrive on the
    /// returned receiver, bounded by `inbound_queue_max`: when it is full, inbound
    /// datagrams are dropped (and counted in [`stats`](Self::stats)) while frame and
    /// request reads wait, pushing back on the peers. The receiver ends after the
    /// transport closes.
    pub async fn bind(config: QuicConfig) -> Result<(QuicTransport, mpsc::Receiver<Inbound>), QuicError> {
        config.validate()?;
        let mut transport = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms))
            .map_err(|_| QuicError::InvalidConfig { field: "idle_timeout_ms", reason: "too large" })?;
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(
                (config.keep_alive_ms > 0).then(|| Duration::from_millis(config.keep_alive_ms)),
            )
            .max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS_CONCURRENT_MAX))
            .max_concurrent_bidi_streams(VarInt::from_u32(config.requests_concurrent_max));
        let transport = Arc::new(transport);

        let mut server = quinn::ServerConfig::with_crypto(config.tls.server.clone());
        server
            .transport_config(transport.clone())
            // The remote address is the peer's identity: it must not change under a
            // connection.
            .migration(false)
            .max_incoming(config.handshakes_concurrent_max);
        let mut client = quinn::ClientConfig::new(config.tls.client.clone());
        client.transport_config(transport);

        let mut endpoint = quinn::Endpoint::server(server, config.bind)
            .map_err(|source| QuicError::Bind { addr: config.bind, source })?;
        endpoint.set_default_client_config(client);
        let local_addr =
            endpoint.local_addr().map_err(|source| QuicError::Bind { addr: config.bind, source })?;

        let runtime = tokio::runtime::Handle::try_current().map_err(|e| QuicError::Bind {
            addr: config.bind,
            source: std::io::Error::other(format!("no tokio runtime: {e}")),
        })?;
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue_max);
        let (shutdown, shutdown_rx) = shutdown::channel();
        let span = tracing::debug_span!("quic", node = %local_addr);
        let inner = Arc::new(Inner {
            endpoint,
            local_addr,
            limits: Limits {
                frame_bytes_max: config.frame_bytes_max,
                peer_queue_frames_max: config.peer_queue_frames_max,
                peer_queue_datagrams_max: config.peer_queue_datagrams_max,
                connect_backoff_ms_max: config.connect_backoff_ms_max,
                connect_attempts_max: config.connect_attempts_max,
                connect_timeout: Duration::from_millis(config.idle_timeout_ms),
            },
            queued_bytes: Arc::new(Semaphore::new(config.queued_bytes_max)),
            stats: Counters::default(),
            peers: Mutex::new(BTreeMap::new()),
            dial_locks: Mutex::new(BTreeMap::new()),
            inbound: Mutex::new(Some(inbound_tx)),
            shutdown,
            tasks: Mutex::new(Some(JoinSet::new())),
            runtime,
            span,
        });
        let handshakes = Arc::new(Semaphore::new(config.handshakes_concurrent_max));
        inner.spawn(accept_loop(inner.clone(), shutdown_rx, handshakes));
        debug!(parent: &inner.span, "listening");
        let guard = Arc::new(DropGuard(inner.clone()));
        Ok((QuicTransport { inner, _guard: guard }, inbound_rx))
    }

    /// The bound address: this node's identity for its peers.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Sends an unreliable, unordered datagram, on the peer's connection. Never blocks.
    ///
    /// With a connection up, the datagram goes straight to QUIC (which drops the oldest
    /// unsent datagrams if its buffer is full); `TooLarge` if it is over the connection's
    /// current limit ([`max_datagram_bytes`](Self::max_datagram_bytes)). Without one, it is
    /// queued (up to `peer_queue_datagrams_max`, else `QueueFull`) while the connection is
    /// set up in the background, and dropped then if it does not fit.
    pub fn send_datagram(&self, to: SocketAddr, bytes: Bytes) -> Result<(), SendError> {
        self.check_destination(to)?;
        if let Some(conn) = self.inner.sending_connection(to) {
            let len = bytes.len();
            match conn.send_datagram(bytes.clone()) {
                Ok(()) => return Ok(()),
                Err(SendDatagramError::TooLarge) => {
                    let max = conn.max_datagram_size().unwrap_or(0);
                    return Err(SendError::TooLarge { bytes: len, max });
                }
                Err(SendDatagramError::UnsupportedByPeer | SendDatagramError::Disabled) => {
                    return Err(SendError::DatagramsUnsupported { to });
                }
                // Lost since we looked: queue it for the reconnecting sender.
                Err(SendDatagramError::ConnectionLost(_)) => {}
            }
        }
        if bytes.len() > DATAGRAM_QUEUED_BYTES_MAX {
            return Err(SendError::TooLarge { bytes: bytes.len(), max: DATAGRAM_QUEUED_BYTES_MAX });
        }
        self.inner.enqueue(to, peer::Outgoing::Datagram(bytes))
    }

    /// Queues a frame for the peer's frame stream: reliable and in order, while one
    /// connection lasts. Never blocks.
    ///
    /// Frames go on one long-lived unidirectional stream per peer, each as a `u32`
    /// big-endian length and the bytes, written by a per-peer task from a queue of
    /// `peer_queue_frames_max` frames (`QueueFull` when full: the caller falls back on
    /// anti-entropy). If the connection breaks the task reconnects with exponential backoff
    /// and opens a new stream: queued frames are kept, frames already handed to the old
    /// connection may be lost. After `connect_attempts_max` failures in a row the task
    /// drops its queue and ends; the next send starts over.
    pub fn send_frame(&self, to: SocketAddr, bytes: Bytes) -> Result<(), SendError> {
        self.check_destination(to)?;
        let max = self.inner.limits.frame_bytes_max;
        if bytes.len() > max {
            return Err(SendError::TooLarge { bytes: bytes.len(), max });
        }
        self.inner.enqueue(to, peer::Outgoing::Frame(bytes))
    }

    /// Sends one request on a fresh bidirectional stream and waits for its response, all
    /// within `timeout` (connecting included). Both are frames bounded by
    /// `frame_bytes_max`.
    pub async fn request(
        &self,
        to: SocketAddr,
        bytes: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        if to == self.inner.local_addr {
            return Err(RequestError::ToSelf { to });
        }
        if self.inner.is_shut_down() {
            return Err(RequestError::Closed);
        }
        let max = self.inner.limits.frame_bytes_max;
        if bytes.len() > max {
            return Err(RequestError::TooLarge { bytes: bytes.len(), max });
        }
        let exchange = async {
            let conn = self.inner.connect(to).await.map_err(|reason| RequestError::Connect { to, reason })?;
            let stream_err = |e: &dyn std::fmt::Display| RequestError::Stream { to, reason: e.to_string() };
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| stream_err(&e))?;
            frame::write_frame(&mut send, &bytes).await.map_err(|e| stream_err(&e))?;
            // Already finished or reset only if the connection failed; the read reports it.
            let _ = send.finish();
            match frame::read_frame(&mut recv, max).await {
                Ok(Some(response)) => Ok(response),
                Ok(None) => Err(stream_err(&"stream ended without a response")),
                Err(FrameReadError::TooLarge { len, max }) => {
                    Counters::add(&self.inner.stats.inbound_frames_refused_total, 1);
                    Err(RequestError::ResponseTooLarge { to, bytes: len, max })
                }
                Err(e) => Err(stream_err(&e)),
            }
        };
        let mut shutdown = self.inner.shutdown_rx();
        tokio::select! {
            _ = shutdown.wait() => Err(RequestError::Closed),
            result = tokio::time::timeout(timeout, exchange) => result
                .unwrap_or(Err(RequestError::Timeout { to, timeout_ms: timeout.as_millis() })),
        }
    }

    /// Bytes the peers' frame queues can still take (of `queued_bytes_max`): what a
    /// driver lets its state machines emit before the queues drain.
    pub fn queued_bytes_free(&self) -> usize {
        self.inner.queued_bytes.available_permits()
    }

    /// Smoothed round-trip time of the connection to `to`, if one is up.
    pub fn rtt(&self, to: SocketAddr) -> Option<Duration> {
        self.inner.sending_connection(to).map(|conn| conn.rtt())
    }

    /// Largest datagram the connection to `to` takes now, if one is up and the peer
    /// accepts datagrams. It can grow as the path MTU is discovered.
    pub fn max_datagram_bytes(&self, to: SocketAddr) -> Option<usize> {
        self.inner.sending_connection(to).and_then(|conn| conn.max_datagram_size())
    }

    /// Peers with a live connection now, sorted.
    pub fn connected_peers(&self) -> Vec<SocketAddr> {
        lock(&self.inner.peers)
            .iter()
            .filter(|(_, slot)| slot.conn.as_ref().is_some_and(|c| c.close_reason().is_none()))
            .map(|(addr, _)| *addr)
            .collect()
    }

    /// What was dropped or refused so far.
    pub fn stats(&self) -> QuicStats {
        self.inner.stats.snapshot()
    }

    /// Closes every connection and the endpoint, and waits (up to a second each) for the
    /// transport's tasks to end and for peers to be told; tasks still running then are
    /// aborted. Queued frames are dropped. Later sends return `Closed`.
    pub async fn close(&self) {
        self.inner.shut_down();
        if let Some(mut tasks) = self.inner.take_tasks() {
            let drained =
                tokio::time::timeout(CLOSE_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
            if drained.is_err() {
                warn!(parent: &self.inner.span, tasks = tasks.len(), "tasks still running after close grace; aborting them");
            }
            tasks.shutdown().await;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, self.inner.endpoint.wait_idle()).await;
        debug!(parent: &self.inner.span, "closed");
    }

    fn check_destination(&self, to: SocketAddr) -> Result<(), SendError> {
        if to == self.inner.local_addr {
            return Err(SendError::ToSelf { to });
        }
        if self.inner.is_shut_down() {
            return Err(SendError::Closed);
        }
        Ok(())
    }
}

/// Accepts incoming connection attempts, each handshake in its own task, at most
/// `handshakes_concurrent_max` at once.
async fn accept_loop(inner: Arc<Inner>, mut shutdown: ShutdownRx, handshakes: Arc<Semaphore>) {
    loop {
        let incoming = tokio::select! {
            _ = shutdown.wait() => return,
            incoming = inner.endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            Counters::add(&inner.stats.handshakes_failed_total, 1);
            warn!(peer = %incoming.remote_address(), "too many handshakes in progress; refusing");
            incoming.refuse();
            continue;
        };
        let task_inner = inner.clone();
        let task_shutdown = shutdown.clone();
        inner.spawn(async move {
            handshake(task_inner, incoming, task_shutdown).await;
            drop(permit);
        });
    }
}

/// Completes one inbound handshake; a peer whose certificate does not chain to the
/// cluster CA fails here and is never seen by the application.
async fn handshake(inner: Arc<Inner>, incoming: quinn::Incoming, mut shutdown: ShutdownRx) {
    let peer = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            Counters::add(&inner.stats.handshakes_failed_total, 1);
            debug!(%peer, error = %e, "incoming connection failed before the handshake");
            return;
        }
    };
    let result = tokio::select! {
        _ = shutdown.wait() => return,
        result = connecting => result,
    };
    match result {
        Ok(conn) => {
            debug!(%peer, "accepted connection");
            inner.adopt(conn);
        }
        Err(e) => {
            Counters::add(&inner.stats.handshakes_failed_total, 1);
            warn!(%peer, error = %e, "refused peer: handshake failed");
        }
    }
}
