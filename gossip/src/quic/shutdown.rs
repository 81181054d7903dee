//! Shutdown signal shared by every task the transport spawns.
//!
//! One [`watch`] channel: the transport flips it once, on `close()` or when its last
//! handle is dropped, and every task has a [`ShutdownRx`] in each of its `select!`s.
//! A dropped sender counts as shutdown too, so no task can outlive the transport by
//! waiting on a signal that will never come.

use tokio::sync::watch;

/// Sending side, held by the transport.
#[derive(Debug)]
pub(crate) struct ShutdownTx(watch::Sender<bool>);

/// Receiving side, one clone per task.
#[derive(Clone, Debug)]
pub(crate) struct ShutdownRx(watch::Receiver<bool>);

pub(crate) fn channel() -> (ShutdownTx, ShutdownRx) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTx(tx), ShutdownRx(rx))
}

impl ShutdownTx {
    /// Signals shutdown; idempotent.
    pub(crate) fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Whether shutdown was signalled.
    pub(crate) fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    pub(crate) fn subscribe(&self) -> ShutdownRx {
        ShutdownRx(self.0.subscribe())
    }
}

impl ShutdownRx {
    /// Completes once shutdown is signalled (at once if it already was). Cancel-safe.
    pub(crate) async fn wait(&mut self) {
        // Err means the sender is gone, which is shutdown as well.
        let _ = self.0.wait_for(|&down| down).await;
    }
}
