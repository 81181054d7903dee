//! Serving what a peer sends on one established connection, whichever side dialled.
//!
//! One task per connection reads datagrams and accepts streams; each stream gets its own
//! task (their number is bounded by the stream credit the transport grants):
//!
//! - unidirectional stream: the peer's frame stream, read frame by frame;
//! - bidirectional stream: one request frame in, one response frame out.
//!
//! Nothing a peer sends can panic or allocate past `frame_bytes_max`: an oversized length
//! prefix stops that stream (and only that stream) with [`STREAM_CODE_FRAME_TOO_LARGE`].

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use rustls::pki_types::CertificateDer;

use super::frame::{self, FrameReadError};
use super::inbound::Inbound;
use super::shutdown::ShutdownRx;
use super::stats::Counters;
use super::transport::Inner;
use super::{STREAM_CODE_FRAME_TOO_LARGE, STREAM_CODE_NO_RESPONSE};
use crate::certs::CertIdentity;

/// Serves `conn` until it closes or the transport shuts down.
pub(crate) async fn serve(inner: Arc<Inner>, conn: Connection, mut shutdown: ShutdownRx) {
    let peer = conn.remote_address();
    // Mutual TLS has checked the chain; this reads who the chain says the
    // peer is, which everything it sends is then checked against.
    let Some(identity) = peer_identity(&conn) else {
        warn!(%peer, "a peer certificate that names no node; closing");
        conn.close(VarInt::from_u32(CLOSE_CODE_NO_IDENTITY), b"certificate names no node");
        inner.connection_ended(peer, conn.stable_id());
        return;
    };
    if let Some(inbound) = inner.inbound() {
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                datagram = conn.read_datagram() => match datagram {
                    Ok(bytes) => match inbound.try_send(Inbound::Datagram { from: peer, peer: identity.clone(), bytes }) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            Counters::add(&inner.stats.inbound_datagrams_dropped_total, 1);
                        }
                        // The application stopped listening; keep the connection for sending.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    },
                    Err(reason) => {
                        debug!(%peer, %reason, "connection ended");
                        break;
                    }
                },
                stream = conn.accept_uni() => match stream {
                    Ok(recv) => inner.spawn(read_frames(
                        peer,
                        identity.clone(),
                        recv,
                        inbound.clone(),
                        inner.clone(),
                        shutdown.clone(),
                    )),
                    Err(reason) => {
                        debug!(%peer, %reason, "connection ended");
                        break;
                    }
                },
                stream = conn.accept_bi() => match stream {
                    Ok((send, recv)) => inner.spawn(serve_request(
                        peer,
                        identity.clone(),
                        send,
                        recv,
                        inbound.clone(),
                        inner.clone(),
                        shutdown.clone(),
                    )),
                    Err(reason) => {
                        debug!(%peer, %reason, "connection ended");
                        break;
                    }
                },
            }
        }
    }
    inner.connection_ended(peer, conn.stable_id());
}

/// Reads the peer's frame stream until it ends, handing each frame to the application
/// (waiting for room: that is the backpressure).
async fn read_frames(
    peer: SocketAddr,
    identity: Arc<CertIdentity>,
    mut recv: RecvStream,
    inbound: mpsc::Sender<Inbound>,
    inner: Arc<Inner>,
    mut shutdown: ShutdownRx,
) {
    let frame_bytes_max = inner.limits.frame_bytes_max;
    loop {
        let read = tokio::select! {
            _ = shutdown.wait() => return,
            read = frame::read_frame(&mut recv, frame_bytes_max) => read,
        };
        let bytes = match read {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => {
                refuse_or_log(&inner, peer, &mut recv, &e, "frame stream");
                return;
            }
        };
        let delivered = tokio::select! {
            _ = shutdown.wait() => return,
            delivered = inbound.send(Inbound::Frame { from: peer, peer: identity.clone(), bytes }) => delivered,
        };
        if delivered.is_err() {
            // Nobody listens any more: tell the peer to stop sending on this stream.
            let _ = recv.stop(STREAM_CODE_NO_RESPONSE);
            return;
        }
    }
}

/// One request/response exchange on a bidirectional stream.
async fn serve_request(
    peer: SocketAddr,
    identity: Arc<CertIdentity>,
    mut send: SendStream,
    mut recv: RecvStream,
    inbound: mpsc::Sender<Inbound>,
    inner: Arc<Inner>,
    mut shutdown: ShutdownRx,
) {
    let frame_bytes_max = inner.limits.frame_bytes_max;
    let read = tokio::select! {
        _ = shutdown.wait() => return,
        read = frame::read_frame(&mut recv, frame_bytes_max) => read,
    };
    let request = match read {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            let _ = send.reset(STREAM_CODE_NO_RESPONSE);
            return;
        }
        Err(e) => {
            refuse_or_log(&inner, peer, &mut recv, &e, "request");
            let _ = send.reset(error_code(&e));
            return;
        }
    };
    let (respond, response) = oneshot::channel::<Bytes>();
    let delivered = tokio::select! {
        _ = shutdown.wait() => return,
        delivered = inbound.send(Inbound::Request { from: peer, peer: identity, bytes: request, respond }) => delivered,
    };
    if delivered.is_err() {
        let _ = send.reset(STREAM_CODE_NO_RESPONSE);
        return;
    }
    let response = tokio::select! {
        _ = shutdown.wait() => return,
        // The requester gave up (time-out) and stopped the stream: nobody to answer.
        _ = send.stopped() => {
            debug!(%peer, "requester went away before the response");
            return;
        }
        response = response => response,
    };
    let Ok(response) = response else {
        debug!(%peer, "application dropped the request without responding");
        let _ = send.reset(STREAM_CODE_NO_RESPONSE);
        return;
    };
    if response.len() > frame_bytes_max {
        warn!(%peer, bytes = response.len(), max = frame_bytes_max, "response over frame_bytes_max; resetting the request");
        let _ = send.reset(STREAM_CODE_FRAME_TOO_LARGE);
        return;
    }
    let written = tokio::select! {
        _ = shutdown.wait() => return,
        written = frame::write_frame(&mut send, &response) => written,
    };
    match written {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(e) => debug!(%peer, error = %e, "writing the response failed"),
    }
}

/// Stops `recv` if the peer announced an oversized frame (and says so loudly); anything
/// else is a broken stream or connection, logged quietly.
fn refuse_or_log(inner: &Inner, peer: SocketAddr, recv: &mut RecvStream, e: &FrameReadError, what: &str) {
    match e {
        FrameReadError::TooLarge { len, max } => {
            Counters::add(&inner.stats.inbound_frames_refused_total, 1);
            warn!(%peer, len, max, "{what}: frame over frame_bytes_max; stopping the stream");
            let _ = recv.stop(STREAM_CODE_FRAME_TOO_LARGE);
        }
        e => debug!(%peer, error = %e, "{what} ended"),
    }
}

/// Close code for a peer whose certificate names no node.
const CLOSE_CODE_NO_IDENTITY: u32 = 0x4e49;

/// The name (and region) in the peer's certificate.
fn peer_identity(conn: &Connection) -> Option<Arc<CertIdentity>> {
    let chain = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let leaf = chain.first()?;
    CertIdentity::of_der(leaf).ok().map(Arc::new)
}

fn error_code(e: &FrameReadError) -> VarInt {
    match e {
        FrameReadError::TooLarge { .. } => STREAM_CODE_FRAME_TOO_LARGE,
        _ => STREAM_CODE_NO_RESPONSE,
    }
}
