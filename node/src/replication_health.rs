//! Whether replication still runs. The replication task owns the protocol
//! state; if it panics, a node that kept acknowledging writes would lose
//! every one of them for the other regions in silence. So the panic is
//! recorded here, logged, counted (`geocache_replication_failures_total`),
//! and from then on `/healthz` and `/readyz` answer 503 (so the
//! orchestrator restarts the node) and writes are refused with 503 rather
//! than acknowledged.

use std::sync::{Arc, OnceLock};
use tokio::task::JoinHandle;

use prometheus_client::metrics::counter::Counter;

/// Set once, when replication stopped for good.
#[derive(Clone, Debug, Default)]
pub struct ReplicationHealth(Arc<OnceLock<String>>);

impl ReplicationHealth {
    /// Healthy.
    pub fn new() -> ReplicationHealth {
        ReplicationHealth::default()
    }

    /// Why replication stopped, once it did.
    pub fn failure(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    /// Records that replication stopped; the first reason is kept.
    pub fn fail(&self, why: String) {
        let _ = self.0.set(why);
    }

    /// Watches the replication task: a panic marks replication failed. A
    /// task that returns (shutdown) is not a failure.
    pub fn supervise(&self, task: JoinHandle<()>, failures: Counter) {
        let health = self.clone();
        tokio::spawn(async move {
            let Err(error) = task.await else { return };
            if !error.is_panic() {
                return;
            }
            let payload = error.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            tracing::error!(reason = %message, "replication stopped: the node answers not ready and refuses writes until it is restarted");
            failures.inc();
            health.fail(format!("replication stopped: {message}"));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_marks_replication_failed_and_a_finished_one_does_not() {
        let failures = Counter::default();
        let health = ReplicationHealth::new();
        health.supervise(tokio::spawn(async {}), failures.clone());
        tokio::task::yield_now().await;
        assert_eq!(health.failure(), None);
        health.supervise(tokio::spawn(async { panic!("the core broke") }), failures.clone());
        for _ in 0..1_000 {
            if health.failure().is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(health.failure(), Some("replication stopped: the core broke"));
        assert_eq!(failures.get(), 1);
    }
}
