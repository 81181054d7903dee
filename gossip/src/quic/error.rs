//! The transport's errors: setting up ([`QuicError`]), queueing a send ([`SendError`]) and
//! a request/response exchange ([`RequestError`]).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Setting up TLS or binding the endpoint failed. Nothing is left running.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The bind address is `0.0.0.0` or `[::]`. Peers are identified by the address their
    /// packets come from, which must be the one address this node binds; a wildcard bind
    /// would answer from whichever address the kernel picks.
    #[error("refusing to bind {addr}: bind one specific address, since peers are identified by it")]
    UnspecifiedBind {
        /// The address given.
        addr: SocketAddr,
    },
    /// The UDP socket could not be bound.
    #[error("binding UDP {addr}: {source}")]
    Bind {
        /// The address given.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A [`QuicConfig`](super::QuicConfig) field is out of range.
    #[error("invalid QUIC config: {field} {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key is not valid PEM of the expected kind.
    #[error("{what}: {reason}")]
    InvalidPem {
        /// Which input: a path, or "node certificate", "CA certificate", "node key".
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA certificate cannot be used as a trust anchor.
    #[error("CA certificate unusable as trust root: {0}")]
    InvalidCa(#[source] rustls::Error),
    /// This node's own certificate does not verify against the cluster CA as a server for
    /// `geocache.cluster` and as a client (wrong CA, missing name or usage, expired); peers
    /// would refuse it.
    #[error("node certificate rejected by the cluster CA: {0}")]
    CertificateRejected(#[source] rustls::Error),
    /// rustls refused the configuration (for example a key that does not match the
    /// certificate).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("TLS client verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The server certificate verifier could not be built.
    #[error("TLS server verifier: {0}")]
    ServerVerifier(#[source] rustls::server::VerifierBuilderError),
    /// The crypto provider lacks the cipher suite QUIC needs for its initial packets.
    #[error("QUIC TLS: {0}")]
    NoInitialCipherSuite(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// A datagram or frame could not be queued. Nothing was queued or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Larger than the limit: `frame_bytes_max` for frames and requests, the connection's
    /// current datagram size for datagrams.
    #[error("{bytes} bytes is over the {max} byte limit")]
    TooLarge {
        /// Size of what was given.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The peer's queue is full (its connection is down or slow), or all queues together
    /// hold `queued_bytes_max`; the caller should rely on
    /// anti-entropy instead.
    #[error("send queue for {to} is full")]
    QueueFull {
        /// The peer.
        to: SocketAddr,
    },
    /// The destination is this node's own address.
    #[error("{to} is this node's own address")]
    ToSelf {
        /// The address.
        to: SocketAddr,
    },
    /// The peer does not accept QUIC datagrams.
    #[error("{to} does not accept datagrams")]
    DatagramsUnsupported {
        /// The peer.
        to: SocketAddr,
    },
    /// The transport is closed.
    #[error("transport closed")]
    Closed,
}

/// A request got no response. Whether the peer saw the request is unknown unless noted.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request is over `frame_bytes_max`; nothing was sent.
    #[error("request of {bytes} bytes is over the {max} byte limit")]
    TooLarge {
        /// Size of the request.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The destination is this node's own address; nothing was sent.
    #[error("{to} is this node's own address")]
    ToSelf {
        /// The address.
        to: SocketAddr,
    },
    /// No response within the time-out.
    #[error("no response from {to} within {timeout_ms} ms")]
    Timeout {
        /// The peer.
        to: SocketAddr,
        /// The time-out.
        timeout_ms: u128,
    },
    /// Could not connect to the peer; nothing was sent.
    #[error("connecting to {to}: {reason}")]
    Connect {
        /// The peer.
        to: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection or stream failed, or the peer reset the stream (no handler, or a
    /// response too large for it).
    #[error("request to {to} failed: {reason}")]
    Stream {
        /// The peer.
        to: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The response is over `frame_bytes_max`; it was not read.
    #[error("response from {to} of {bytes} bytes is over the {max} byte limit")]
    ResponseTooLarge {
        /// The peer.
        to: SocketAddr,
        /// Size announced.
        bytes: u64,
        /// The limit.
        max: usize,
    },
    /// The transport is closed.
    #[error("transport closed")]
    Closed,
}
