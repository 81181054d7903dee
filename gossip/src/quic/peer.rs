//! The per-peer sender: one task per peer with something to send, owning that peer's
//! frame stream.
//!
//! The task gets a connection (the live one, or dials), then writes queued frames on one
//! unidirectional stream, in queue order, and flushes datagrams queued while there was no
//! connection. Keeping a single stream per connection is what makes frames arrive in
//! order: the receiver reads each stream on its own, so two streams would race.
//!
//! Lifecycle, all bounded:
//! - connection lost with nothing queued: the task ends (the next send starts a new one);
//! - connection lost with frames queued: reconnect, after an exponential backoff from
//!   [`CONNECT_BACKOFF_MS_INITIAL`] to `connect_backoff_ms_max` if the last connection did
//!   not last [`CONNECTION_HEALTHY`];
//! - `connect_attempts_max` failures in a row: drop the queue, count it, end;
//! - shutdown: end at once.
//!
//! The frame taken off the queue is kept until it is written, so a broken connection
//! loses only what was already handed to QUIC. If the peer stops the stream (it refused
//! a frame, e.g. over its own `frame_bytes_max`), the frames written since are lost, and
//! the frame being written is retried once on a new stream: the refused frame is usually
//! one already handed over, but a frame stopped twice is the culprit and is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, SendStream, WriteError};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::config::CONNECT_BACKOFF_MS_INITIAL;
use super::error::SendError;
use super::frame::{self, FrameWriteError};
use super::shutdown::ShutdownRx;
use super::stats::Counters;
use super::transport::Inner;

/// A connection that lasted at least this long counts as a success: the failure count
/// and the backoff start over.
const CONNECTION_HEALTHY: Duration = Duration::from_secs(1);

/// Something to send to a peer.
pub(crate) enum Outgoing {
    Frame(Bytes),
    Datagram(Bytes),
}

/// A frame waiting to be written, with its share of the transport's queued-bytes budget,
/// given back when the frame is dropped (written, or lost with its queue).
struct QueuedFrame {
    bytes: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// The sending side of one peer's queues, held in the transport's peer map.
pub(crate) struct SenderQueues {
    frames: mpsc::Sender<QueuedFrame>,
    datagrams: mpsc::Sender<Bytes>,
}

impl SenderQueues {
    /// Queues `item` without waiting. A frame takes its length from `budget` (the bytes
    /// all peers' queues may still hold) and is refused when it does not fit.
    pub(crate) fn push(
        &self,
        to: SocketAddr,
        item: Outgoing,
        budget: &Arc<Semaphore>,
    ) -> Result<(), SendError> {
        fn refused<T>(e: mpsc::error::TrySendError<T>, to: SocketAddr) -> SendError {
            match e {
                mpsc::error::TrySendError::Full(_) => SendError::QueueFull { to },
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            }
        }
        match item {
            Outgoing::Frame(bytes) => {
                let len = u32::try_from(bytes.len()).map_err(|_| SendError::QueueFull { to })?;
                let permit =
                    budget.clone().try_acquire_many_owned(len).map_err(|_| SendError::QueueFull { to })?;
                self.frames.try_send(QueuedFrame { bytes, _budget: permit }).map_err(|e| refused(e, to))
            }
            Outgoing::Datagram(bytes) => self.datagrams.try_send(bytes).map_err(|e| refused(e, to)),
        }
    }
}

/// Makes `peer`'s queues and the task draining them; the caller spawns the task.
pub(crate) fn start(
    inner: Arc<Inner>,
    peer: SocketAddr,
    shutdown: ShutdownRx,
) -> (SenderQueues, impl std::future::Future<Output = ()> + Send + 'static) {
    let (frames_tx, frames) = mpsc::channel(inner.limits.peer_queue_frames_max);
    let (datagrams_tx, datagrams) = mpsc::channel(inner.limits.peer_queue_datagrams_max);
    let sender = PeerSender { inner, peer, frames, datagrams, pending: None, shutdown };
    (SenderQueues { frames: frames_tx, datagrams: datagrams_tx }, sender.run())
}

/// How a connection's use ended.
enum Ended {
    Shutdown,
    ConnectionLost,
}

struct PeerSender {
    inner: Arc<Inner>,
    peer: SocketAddr,
    frames: mpsc::Receiver<QueuedFrame>,
    datagrams: mpsc::Receiver<Bytes>,
    /// Taken off the queue, not yet written.
    pending: Option<QueuedFrame>,
    shutdown: ShutdownRx,
}

impl PeerSender {
    async fn run(mut self) {
        let peer = self.peer;
        let mut backoff = Backoff::new(self.inner.limits.connect_backoff_ms_max);
        let mut failures: u32 = 0;
        loop {
            if failures > 0 {
                let delay = backoff.next_delay();
                debug!(%peer, failures, delay_ms = delay.as_millis(), "waiting before reconnecting");
                tokio::select! {
                    _ = self.shutdown.wait() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            let dialled = tokio::select! {
                _ = self.shutdown.wait() => return,
                dialled = self.inner.connect(peer) => dialled,
            };
            let conn = match dialled {
                Ok(conn) => conn,
                Err(reason) => {
                    failures += 1;
                    debug!(%peer, %reason, failures, "connecting failed");
                    if failures >= self.inner.limits.connect_attempts_max {
                        self.give_up(&reason);
                        return;
                    }
                    continue;
                }
            };
            let up_since = Instant::now();
            match self.drive(conn).await {
                Ended::Shutdown => return,
                Ended::ConnectionLost => {
                    if up_since.elapsed() >= CONNECTION_HEALTHY {
                        failures = 0;
                        backoff.reset();
                    } else {
                        failures += 1;
                        if failures >= self.inner.limits.connect_attempts_max {
                            self.give_up("connections keep failing right after they are set up");
                            return;
                        }
                    }
                    let idle =
                        || self.pending.is_none() && self.frames.is_empty() && self.datagrams.is_empty();
                    if self.inner.retire_sender_if_idle(peer, idle) {
                        debug!(%peer, "connection gone and nothing queued; sender ends");
                        return;
                    }
                }
            }
        }
    }

    /// Drops everything queued and leaves the peer map.
    fn give_up(&mut self, reason: &str) {
        self.inner.retire_sender(self.peer);
        // No new items can arrive now: the queues' senders left with the map entry.
        let frames = self.frames.len() + usize::from(self.pending.take().is_some());
        let datagrams = self.datagrams.len();
        let stats = &self.inner.stats;
        Counters::add(&stats.outbound_frames_dropped_total, frames as u64);
        Counters::add(&stats.outbound_datagrams_dropped_total, datagrams as u64);
        warn!(peer = %self.peer, %reason, frames, datagrams, "giving up on peer; dropping what was queued for it");
    }

    /// Sends on `conn` (or a newer connection that replaces it) until it is lost.
    async fn drive(&mut self, mut conn: Connection) -> Ended {
        let peer = self.peer;
        let mut stream: Option<SendStream> = None;
        // Whether the pending frame was already stopped once.
        let mut pending_stopped = false;
        loop {
            if self.pending.is_none() {
                tokio::select! {
                    biased;
                    _ = self.shutdown.wait() => return Ended::Shutdown,
                    reason = conn.closed() => {
                        debug!(%peer, %reason, "connection closed");
                        return Ended::ConnectionLost;
                    }
                    Some(bytes) = self.datagrams.recv() => {
                        self.inner.flush_datagram(&conn, peer, bytes);
                        continue;
                    }
                    frame = self.frames.recv() => match frame {
                        Some(bytes) => self.pending = Some(bytes),
                        // The map entry is gone: the transport is shutting down.
                        None => return Ended::Shutdown,
                    },
                }
            }
            // A newer connection (the peer dialled us, or someone redialled) takes over.
            match self.inner.sending_connection(peer) {
                Some(newer) if newer.stable_id() != conn.stable_id() => {
                    if let Some(mut old) = stream.take() {
                        let _ = old.finish();
                    }
                    debug!(%peer, "moving the frame stream to a newer connection");
                    conn = newer;
                }
                Some(_) => {}
                None if conn.close_reason().is_some() => return Ended::ConnectionLost,
                None => {}
            }
            let Some(bytes) = self.pending.as_ref().map(|f| f.bytes.clone()) else { continue };
            let send = match &mut stream {
                Some(send) => send,
                None => {
                    let opened = tokio::select! {
                        _ = self.shutdown.wait() => return Ended::Shutdown,
                        opened = conn.open_uni() => opened,
                    };
                    match opened {
                        Ok(send) => stream.insert(send),
                        Err(e) => {
                            debug!(%peer, error = %e, "opening the frame stream failed");
                            return Ended::ConnectionLost;
                        }
                    }
                }
            };
            let written = tokio::select! {
                _ = self.shutdown.wait() => return Ended::Shutdown,
                written = frame::write_frame(send, &bytes) => written,
            };
            match written {
                Ok(()) => {
                    self.pending = None;
                    pending_stopped = false;
                }
                Err(FrameWriteError::Write(WriteError::Stopped(code))) if pending_stopped => {
                    Counters::add(&self.inner.stats.outbound_frames_dropped_total, 1);
                    warn!(%peer, %code, bytes = bytes.len(), "peer refused this frame twice; dropping it");
                    self.pending = None;
                    pending_stopped = false;
                    stream = None;
                }
                Err(FrameWriteError::Write(WriteError::Stopped(code))) => {
                    warn!(%peer, %code, "peer stopped the frame stream; frames in flight on it are lost, opening a new one");
                    pending_stopped = true;
                    stream = None;
                }
                Err(e) => {
                    debug!(%peer, error = %e, "writing a frame failed");
                    return Ended::ConnectionLost;
                }
            }
        }
    }
}

/// Exponential backoff from [`CONNECT_BACKOFF_MS_INITIAL`] to a maximum.
struct Backoff {
    next_ms: u64,
    max_ms: u64,
}

impl Backoff {
    fn new(max_ms: u64) -> Self {
        Backoff { next_ms: CONNECT_BACKOFF_MS_INITIAL.min(max_ms), max_ms }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next_ms;
        self.next_ms = delay.saturating_mul(2).min(self.max_ms);
        Duration::from_millis(delay)
    }

    fn reset(&mut self) {
        self.next_ms = CONNECT_BACKOFF_MS_INITIAL.min(self.max_ms);
    }
}
