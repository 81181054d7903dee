//! Every knob of the transport, with its default.

use std::net::SocketAddr;

use super::{ClusterTls, QuicError};

/// Default [`QuicConfig::frame_bytes_max`]: 16 MiB.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// Default [`QuicConfig::peer_queue_frames_max`].
pub const PEER_QUEUE_FRAMES_MAX_DEFAULT: usize = 4096;
/// Default [`QuicConfig::queued_bytes_max`]: 64 MiB.
pub const QUEUED_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
/// Default [`QuicConfig::peer_queue_datagrams_max`].
pub const PEER_QUEUE_DATAGRAMS_MAX_DEFAULT: usize = 256;
/// Default [`QuicConfig::inbound_queue_max`].
pub const INBOUND_QUEUE_MAX_DEFAULT: usize = 8192;
/// Default [`QuicConfig::idle_timeout_ms`].
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default [`QuicConfig::keep_alive_ms`].
pub const KEEP_ALIVE_MS_DEFAULT: u64 = 2_000;
/// Default [`QuicConfig::connect_backoff_ms_max`].
pub const CONNECT_BACKOFF_MS_MAX_DEFAULT: u64 = 5_000;
/// First reconnect delay, in milliseconds; doubles up to [`QuicConfig::connect_backoff_ms_max`].
pub const CONNECT_BACKOFF_MS_INITIAL: u64 = 100;
/// Default [`QuicConfig::connect_attempts_max`].
pub const CONNECT_ATTEMPTS_MAX_DEFAULT: u32 = 8;
/// Default [`QuicConfig::handshakes_concurrent_max`].
pub const HANDSHAKES_CONCURRENT_MAX_DEFAULT: usize = 64;
/// Default [`QuicConfig::requests_concurrent_max`].
pub const REQUESTS_CONCURRENT_MAX_DEFAULT: u32 = 64;

/// Configuration of a [`QuicTransport`](super::QuicTransport). [`QuicConfig::new`] sets
/// every limit to its documented default; change fields before calling
/// [`QuicTransport::bind`](super::QuicTransport::bind), which checks them.
///
/// ```
/// # use geocache_gossip::{certs::Ca, quic::{ClusterTls, QuicConfig}};
/// # let tls = ClusterTls::from_node_cert(&Ca::generate("ca")?.issue("n1")?)?;
/// let mut config = QuicConfig::new("127.0.0.2:7946".parse()?, tls);
/// config.peer_queue_frames_max = 1024;
/// assert_eq!(config.frame_bytes_max, 16 * 1024 * 1024);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct QuicConfig {
    /// The one UDP address this node listens on and sends from; peers know the node by it.
    /// Must be a specific address (not `0.0.0.0` or `[::]`); port 0 picks a free port.
    pub bind: SocketAddr,
    /// This node's TLS identity in the cluster.
    pub tls: ClusterTls,
    /// Largest frame, request or response, in bytes, both ways (at most `u32::MAX`).
    /// Larger outbound ones are refused by the send call; a larger inbound length prefix
    /// stops that stream without reading or allocating the frame. Default 16 MiB.
    pub frame_bytes_max: usize,
    /// Frames queued per peer for sending, waiting for a connection or for flow control.
    /// When full, [`send_frame`](super::QuicTransport::send_frame) returns `QueueFull`.
    /// Default 4096.
    pub peer_queue_frames_max: usize,
    /// Bytes of frames queued for sending, all peers together: what the queues may hold
    /// in memory whatever the frame count. When a frame would pass it,
    /// [`send_frame`](super::QuicTransport::send_frame) returns `QueueFull`, and anti-entropy
    /// repairs what it carried. At least `frame_bytes_max`. Default 64 MiB.
    pub queued_bytes_max: usize,
    /// Datagrams queued per peer while its connection is being set up (once connected,
    /// datagrams go straight to QUIC, which drops the oldest when its buffer is full).
    /// Default 256.
    pub peer_queue_datagrams_max: usize,
    /// Inbound events buffered for the application. When full, inbound datagrams are
    /// dropped (and counted), while frame and request reads wait, which pushes back on
    /// the sending peers through QUIC flow control. Default 8192.
    pub inbound_queue_max: usize,
    /// A connection with no packet from the peer for this long is closed; also the
    /// time-out of one connection attempt. Default 10 000 ms.
    pub idle_timeout_ms: u64,
    /// Interval of keep-alive pings on idle connections; 0 disables them. Must be below
    /// `idle_timeout_ms`. Default 2 000 ms.
    pub keep_alive_ms: u64,
    /// Longest delay between connection attempts to one peer; delays start at
    /// [`CONNECT_BACKOFF_MS_INITIAL`] and double. Default 5 000 ms.
    pub connect_backoff_ms_max: u64,
    /// Consecutive failed attempts (failed handshakes, or connections lost within a second
    /// of being set up) after which a peer's sender gives up and drops what it had queued;
    /// the next send starts over. Default 8.
    pub connect_attempts_max: u32,
    /// Inbound handshakes in progress at once; attempts beyond it are refused at once.
    /// Default 64.
    pub handshakes_concurrent_max: usize,
    /// Requests a peer may have in progress at once on one connection (QUIC bidirectional
    /// stream credit); more wait in the requester. Default 64.
    pub requests_concurrent_max: u32,
}

impl QuicConfig {
    /// A configuration binding `bind` with every limit at its default.
    pub fn new(bind: SocketAddr, tls: ClusterTls) -> Self {
        QuicConfig {
            bind,
            tls,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            peer_queue_frames_max: PEER_QUEUE_FRAMES_MAX_DEFAULT,
            queued_bytes_max: QUEUED_BYTES_MAX_DEFAULT,
            peer_queue_datagrams_max: PEER_QUEUE_DATAGRAMS_MAX_DEFAULT,
            inbound_queue_max: INBOUND_QUEUE_MAX_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            keep_alive_ms: KEEP_ALIVE_MS_DEFAULT,
            connect_backoff_ms_max: CONNECT_BACKOFF_MS_MAX_DEFAULT,
            connect_attempts_max: CONNECT_ATTEMPTS_MAX_DEFAULT,
            handshakes_concurrent_max: HANDSHAKES_CONCURRENT_MAX_DEFAULT,
            requests_concurrent_max: REQUESTS_CONCURRENT_MAX_DEFAULT,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), QuicError> {
        let invalid = |field, reason| Err(QuicError::InvalidConfig { field, reason });
        if self.bind.ip().is_unspecified() {
            return Err(QuicError::UnspecifiedBind { addr: self.bind });
        }
        if self.frame_bytes_max == 0 || u32::try_from(self.frame_bytes_max).is_err() {
            return invalid("frame_bytes_max", "must be between 1 and u32::MAX");
        }
        if self.queued_bytes_max < self.frame_bytes_max
            || self.queued_bytes_max > tokio::sync::Semaphore::MAX_PERMITS
        {
            return invalid("queued_bytes_max", "must be at least frame_bytes_max");
        }
        for (field, value) in [
            ("peer_queue_frames_max", self.peer_queue_frames_max),
            ("peer_queue_datagrams_max", self.peer_queue_datagrams_max),
            ("inbound_queue_max", self.inbound_queue_max),
            ("handshakes_concurrent_max", self.handshakes_concurrent_max),
        ] {
            if value == 0 {
                return invalid(field, "must be at least 1");
            }
        }
        if self.idle_timeout_ms == 0 {
            return invalid("idle_timeout_ms", "must be at least 1");
        }
        if self.keep_alive_ms >= self.idle_timeout_ms {
            return invalid("keep_alive_ms", "must be below idle_timeout_ms (0 disables keep-alives)");
        }
        if self.connect_backoff_ms_max == 0 {
            return invalid("connect_backoff_ms_max", "must be at least 1");
        }
        if self.connect_attempts_max == 0 {
            return invalid("connect_attempts_max", "must be at least 1");
        }
        if self.requests_concurrent_max == 0 {
            return invalid("requests_concurrent_max", "must be at least 1");
        }
        Ok(())
    }
}
