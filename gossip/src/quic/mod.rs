//! The quinn transport: one QUIC endpoint per node, mutual TLS against the cluster CA,
//! three ways to send.
//!
//! - [`QuicTransport::send_datagram`]: unreliable, unordered, one QUIC datagram.
//! - [`QuicTransport::send_frame`]: reliable, ordered frames on one long-lived
//!   unidirectional stream per peer, from a bounded per-peer queue.
//! - [`QuicTransport::request`]: one request and one response on a fresh bidirectional
//!   stream, with a time-out.
//!
//! What arrives is handed to the application as [`Inbound`] events on one bounded channel.
//!
//! # Peers are addresses
//!
//! Each node binds one specific UDP address (for example `127.0.0.2:7946`) and uses that
//! one socket both to accept connections and to dial out. So the remote address of any
//! connection, whichever side dialled, *is* the peer's bound gossip address, and peers are
//! identified by [`SocketAddr`](std::net::SocketAddr) in both directions. Binding a wildcard address
//! (`0.0.0.0`, `[::]`) would break that (replies could leave from another address) and is
//! refused with [`QuicError::UnspecifiedBind`]; connection migration is disabled for the
//! same reason. The certificate proves membership of the cluster, not which member: every
//! node's certificate names `geocache.cluster`.
//!
//! # Connections
//!
//! At most one connection per peer is used for sending: the newest one set up, in either
//! direction. When a peer dials us first, its connection is used to send to it too, so a
//! pair normally shares one connection. If both dial at the same moment each side may
//! send on a different one of the two; both are served until they close.
//!
//! # Bounds
//!
//! Every queue has a limit in [`QuicConfig`]: frames and datagrams per peer, inbound
//! events, frame size, handshakes in progress, requests per connection, reconnect attempts
//! and backoff. Nothing a peer sends is allocated past `frame_bytes_max` or reaches a
//! panic.
//!
//! # Shutdown
//!
//! [`QuicTransport::close`], or dropping the last handle, closes the endpoint and every
//! connection, and ends every task the transport spawned.
//!
//! # Layout
//!
//! - `config.rs`: [`QuicConfig`], every knob and its default.
//! - `tls.rs`: [`ClusterTls`], the rustls server and client configurations.
//! - `transport.rs`: [`QuicTransport`], the peer map, dialling, the accept loop.
//! - `peer.rs`: the per-peer sender task (frame stream, reconnect with backoff).
//! - `connection.rs`: serving one connection (datagrams, frame streams, requests).
//! - `frame.rs`: length-prefixed frames on streams.
//! - `inbound.rs`: [`Inbound`], what the application receives.
//! - `stats.rs`: [`QuicStats`], drop and refusal counters.
//! - `error.rs`: [`QuicError`], [`SendError`], [`RequestError`].
//! - `shutdown.rs`: the shutdown signal every task listens to.

mod config;
mod connection;
mod error;
mod frame;
mod inbound;
mod peer;
mod shutdown;
mod stats;
mod tls;
mod transport;

pub use config::{
    QuicConfig, CONNECT_ATTEMPTS_MAX_DEFAULT, CONNECT_BACKOFF_MS_INITIAL, CONNECT_BACKOFF_MS_MAX_DEFAULT,
    FRAME_BYTES_MAX_DEFAULT, HANDSHAKES_CONCURRENT_MAX_DEFAULT, IDLE_TIMEOUT_MS_DEFAULT,
    INBOUND_QUEUE_MAX_DEFAULT, KEEP_ALIVE_MS_DEFAULT, PEER_QUEUE_DATAGRAMS_MAX_DEFAULT,
    PEER_QUEUE_FRAMES_MAX_DEFAULT, QUEUED_BYTES_MAX_DEFAULT, REQUESTS_CONCURRENT_MAX_DEFAULT,
};
pub use error::{QuicError, RequestError, SendError};
pub use inbound::Inbound;
pub use stats::QuicStats;
pub use tls::{ClusterTls, ALPN};
pub use transport::{QuicTransport, DATAGRAM_QUEUED_BYTES_MAX};

use quinn::VarInt;

/// Connection close code when the transport shuts down.
const CLOSE_CODE_SHUTDOWN: u32 = 0;
/// Stream error code: a frame's length prefix is over `frame_bytes_max`.
const STREAM_CODE_FRAME_TOO_LARGE: VarInt = VarInt::from_u32(1);
/// Stream error code: no response will come (no handler, or it dropped the request).
const STREAM_CODE_NO_RESPONSE: VarInt = VarInt::from_u32(2);
