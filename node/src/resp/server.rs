//! Accepting clients: one task per connection, at most
//! `--resp-connections-max` at once, until shutdown.

use crate::client_tls::ClientStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use bytes::Bytes;

use super::connection::{self, stopped, End};
use super::Shared;
use crate::admission::{accept_within, Admitted};
use crate::state::NodeState;

/// How long shutdown waits for connections to finish the requests they
/// hold before the port is reported stopped.
const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// Serves RESP on `listener` until `shutdown` turns true; then stops
/// accepting, lets each connection finish the requests it has read, and
/// returns once all have closed (or after a grace period).
///
/// # Errors
///
/// The listener's IO error when its address cannot be read.
pub async fn serve(
    state: NodeState,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut shared = Shared::new(state, listener.local_addr()?);
    shared.tls = tls;
    let shared = Arc::new(shared);
    let refusal = Bytes::from_static(b"-ERR max number of clients reached\r\n");
    loop {
        let refused = || {
            shared.connections_rejected.fetch_add(1, Ordering::Relaxed);
        };
        let Admitted { stream, peer, permit } = tokio::select! {
            admitted = accept_within(&listener, &shared.permits, "resp", &refusal, refused) => admitted,
            () = stopped(&mut shutdown) => break,
        };
        shared.connections_total.fetch_add(1, Ordering::Relaxed);
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            let timeout = shared.state.config.header_timeout;
            let stream = match ClientStream::established(stream, shared.tls.as_ref(), timeout).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "RESP TLS handshake failed");
                    drop(permit);
                    return;
                }
            };
            match connection::run(&shared, stream, shutdown).await {
                End::Io(e) => tracing::debug!(%peer, error = %e, "RESP connection failed"),
                End::Protocol => tracing::debug!(%peer, "RESP client broke the protocol"),
                End::Timeout => tracing::debug!(%peer, "RESP client timed out"),
                End::Client | End::Shutdown => {}
            }
            drop(permit);
        });
    }
    // Every connection holds a permit until it ends: holding them all
    // means every connection has closed.
    let all = u32::try_from(shared.connections_max()).unwrap_or(u32::MAX);
    let drained =
        tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), shared.permits.acquire_many(all));
    if drained.await.is_err() {
        tracing::warn!("RESP connections still open after the shutdown grace period");
    }
    Ok(())
}
