//! Accepting clients: one task per connection, at most
//! `--resp-connections-max` at once, until shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection::{self, stopped, End};
use super::Shared;
use crate::state::NodeState;

/// How long shutdown waits for connections to finish the requests they
/// hold before the port is reported stopped.
const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// How long to wait after a failed `accept` (out of file descriptors, say)
/// before the next: the error is logged once per attempt, not in a spin.
const ACCEPT_RETRY_MS: u64 = 50;

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
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(state, listener.local_addr()?));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut shutdown) => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "RESP accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        // Replies go out as soon as they are written: without this, Nagle
        // holds a small reply until the previous one is acknowledged.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            shared.connections_rejected.fetch_add(1, Ordering::Relaxed);
            // Refused here rather than made to wait, so the clients already
            // connected keep their service; Redis does the same.
            tokio::spawn(async move {
                let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
            });
            continue;
        };
        shared.connections_total.fetch_add(1, Ordering::Relaxed);
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
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
    let all = u32::try_from(shared.connections_max).unwrap_or(u32::MAX);
    let drained =
        tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), shared.permits.acquire_many(all));
    if drained.await.is_err() {
        tracing::warn!("RESP connections still open after the shutdown grace period");
    }
    Ok(())
}
