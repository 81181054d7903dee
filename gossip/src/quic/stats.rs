//! Counters of what the transport dropped or refused.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the transport's counters, all monotonic since `bind`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuicStats {
    /// Inbound datagrams dropped because the application's inbound queue was full.
    pub inbound_datagrams_dropped_total: u64,
    /// Outbound datagrams queued for a peer and then dropped: too large for the connection
    /// once it was up, connection lost, or the peer's sender gave up.
    pub outbound_datagrams_dropped_total: u64,
    /// Queued frames dropped: the peer's sender gave up connecting, or the peer stopped
    /// the stream at that frame.
    pub outbound_frames_dropped_total: u64,
    /// Inbound frames, requests or responses refused for a length prefix over
    /// `frame_bytes_max`.
    pub inbound_frames_refused_total: u64,
    /// Inbound handshakes that failed (certificate from another CA, wrong ALPN, time-out)
    /// or were refused because too many were in progress.
    pub handshakes_failed_total: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) inbound_datagrams_dropped_total: AtomicU64,
    pub(crate) outbound_datagrams_dropped_total: AtomicU64,
    pub(crate) outbound_frames_dropped_total: AtomicU64,
    pub(crate) inbound_frames_refused_total: AtomicU64,
    pub(crate) handshakes_failed_total: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> QuicStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QuicStats {
            inbound_datagrams_dropped_total: get(&self.inbound_datagrams_dropped_total),
            outbound_datagrams_dropped_total: get(&self.outbound_datagrams_dropped_total),
            outbound_frames_dropped_total: get(&self.outbound_frames_dropped_total),
            inbound_frames_refused_total: get(&self.inbound_frames_refused_total),
            handshakes_failed_total: get(&self.handshakes_failed_total),
        }
    }
}
