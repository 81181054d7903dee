//! What the transport hands the application.

use std::net::SocketAddr;

use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::oneshot;

use crate::certs::CertIdentity;

/// One inbound event, from an authenticated cluster member. `from` is the peer's bound
/// gossip address (see the module docs for why the remote address is the peer's
/// identity).
#[derive(Debug)]
pub enum Inbound {
    /// A QUIC datagram: unreliable, unordered.
    Datagram {
        /// The sending peer.
        from: SocketAddr,
        /// Who its certificate says it is.
        peer: Arc<CertIdentity>,
        /// The payload.
        bytes: Bytes,
    },
    /// A frame from the peer's frame stream, in the order the peer queued them (within
    /// one connection).
    Frame {
        /// The sending peer.
        from: SocketAddr,
        /// Who its certificate says it is.
        peer: Arc<CertIdentity>,
        /// The payload.
        bytes: Bytes,
    },
    /// A request. Send the response on `respond`; dropping it resets the peer's request
    /// stream, and a response over `frame_bytes_max` is dropped the same way.
    Request {
        /// The requesting peer.
        from: SocketAddr,
        /// Who its certificate says it is.
        peer: Arc<CertIdentity>,
        /// The request payload.
        bytes: Bytes,
        /// Where the response goes.
        respond: oneshot::Sender<Bytes>,
    },
}
