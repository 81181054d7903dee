//! A node from its config: the store, the router, and serving until a
//! shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::http::{router, AppState};
use crate::metrics::Metrics;
use crate::store::{Store, StoreConfig};

/// Builds the shared state of a node from its config, on the system clock.
pub fn state(config: Config) -> AppState {
    let store = Store::new(
        StoreConfig {
            node: geocache_crdt::NodeId(config.node_id),
            max_memory_bytes: config.max_memory.as_u64(),
            eviction: config.eviction,
            tombstone_ttl_ms: config.tombstone_ttl.as_millis() as u64,
            max_clock_skew_ms: config.max_clock_skew.as_millis() as u64,
        },
        Arc::new(SystemClock),
    );
    let metrics = Metrics::new(store.stats());
    AppState {
        store: Arc::new(store),
        config: Arc::new(config),
        metrics: Arc::new(metrics),
        started: Instant::now(),
    }
}

/// Serves HTTP on `listener` until `shutdown` resolves, then finishes the
/// requests in flight.
///
/// # Errors
///
/// The listener's IO error.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
