//! Accepting TCP clients within a bound, for the HTTP and RESP ports
//! alike: each admitted connection holds a permit while it is open; one
//! more is answered at once with the port's refusal and closed, so the
//! clients already connected keep their service (Redis does the same).

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long to wait after a failed `accept` (out of file descriptors, say)
/// before the next: the error is logged once per attempt, not in a spin.
const ACCEPT_RETRY_MS: u64 = 50;

/// A client let in, with its permit.
pub struct Admitted {
    /// The connection, with `TCP_NODELAY` on.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Held while the connection is open.
    pub permit: OwnedSemaphorePermit,
}

/// The next client that fits within `permits`. Clients beyond them get
/// `refusal` and are closed, and `on_refused` counts each. Cancel-safe:
/// nothing is accepted and then lost when the future is dropped.
pub async fn accept_within(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    port: &'static str,
    refusal: &Bytes,
    mut on_refused: impl FnMut(),
) -> Admitted {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(port, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        // Replies go out as soon as they are written: without this, Nagle
        // holds a small reply until the previous one is acknowledged.
        let _ = stream.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => return Admitted { stream, peer, permit },
            Err(_) => {
                on_refused();
                let refusal = refusal.clone();
                tokio::spawn(async move {
                    let _ = stream.write_all(&refusal).await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}
