//! How long other nodes' writes take to arrive here: for each origin, the
//! time from the write (its HLC reading at the origin) to its apply here,
//! over the last few seconds. The status page shows it per region pair.
//!
//! The figure is a difference of two hosts' clocks, so it carries their
//! offset (at most `--max-clock-skew` once the skew check holds); on one
//! host, as in `geocache demo`, it is exact. A write that waited out a
//! partition and arrived by anti-entropy counts with its whole wait: that
//! is how late it was.

use std::collections::HashMap;

use geocache_crdt::{Delta, NodeId};

/// Samples kept per origin: enough for a stable median at thousands of
/// writes per second, small enough that a node of 1,000 origins spends
/// ~1 MiB on it.
const SAMPLES_PER_ORIGIN: usize = 64;
/// Origins followed at once; past this the one heard from least recently
/// is forgotten (every restart makes a new origin).
pub const ORIGINS_MAX: usize = 1_024;
/// Samples older than this are not reported: the lag now, not an hour ago.
pub const WINDOW_MS: u64 = 10_000;

/// The recent lag of one origin's writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LagSummary {
    /// The median, ms.
    pub p50_ms: u64,
    /// The largest, ms.
    pub max_ms: u64,
    /// How many writes the figures come from.
    pub samples: usize,
}

#[derive(Debug)]
struct OriginSamples {
    /// `(applied at, lag)`, unix ms, as a ring.
    ring: Vec<(u64, u64)>,
    next: usize,
    last_at_ms: u64,
}

/// The recorder; owned by the replication driver, which applies every
/// remote write.
#[derive(Debug, Default)]
pub struct ReplicationLag {
    origins: HashMap<NodeId, OriginSamples>,
}

impl ReplicationLag {
    /// Nothing recorded.
    pub fn new() -> ReplicationLag {
        ReplicationLag::default()
    }

    /// `delta` was applied at `now_ms` (unix ms). Only the write's own
    /// stamp says when it was made: a delta whose register's newest write
    /// is another (a merged document, a counter) is not a sample.
    pub fn record(&mut self, delta: &Delta, now_ms: u64) {
        let Some(meta) = delta.meta() else { return };
        if meta.dot.origin != delta.origin || meta.dot.seq != delta.seq {
            return;
        }
        self.record_sample(delta.origin, meta.stamp.hlc.ms(), now_ms);
    }

    /// A write by `origin` made at `written_ms` arrived at `now_ms`. A
    /// write from ahead of this clock is a lag of zero.
    pub fn record_sample(&mut self, origin: NodeId, written_ms: u64, now_ms: u64) {
        if !self.origins.contains_key(&origin) && self.origins.len() >= ORIGINS_MAX {
            let stalest = self.origins.iter().min_by_key(|(_, s)| s.last_at_ms).map(|(n, _)| *n);
            if let Some(n) = stalest {
                self.origins.remove(&n);
            }
        }
        let samples = self.origins.entry(origin).or_insert_with(|| OriginSamples {
            ring: Vec::with_capacity(SAMPLES_PER_ORIGIN),
            next: 0,
            last_at_ms: now_ms,
        });
        let sample = (now_ms, now_ms.saturating_sub(written_ms));
        if samples.ring.len() < SAMPLES_PER_ORIGIN {
            samples.ring.push(sample);
        } else {
            samples.ring[samples.next] = sample;
        }
        samples.next = (samples.next + 1) % SAMPLES_PER_ORIGIN;
        samples.last_at_ms = now_ms;
    }

    /// `origin`'s lag over the last [`WINDOW_MS`] before `now_ms`; `None`
    /// when none of its writes arrived in that time.
    pub fn summary(&self, origin: NodeId, now_ms: u64) -> Option<LagSummary> {
        let samples = self.origins.get(&origin)?;
        let from = now_ms.saturating_sub(WINDOW_MS);
        let mut recent: Vec<u64> =
            samples.ring.iter().filter(|(at, _)| *at >= from).map(|(_, l)| *l).collect();
        if recent.is_empty() {
            return None;
        }
        let p50_ms = median(&mut recent)?;
        Some(LagSummary { p50_ms, max_ms: recent[recent.len() - 1], samples: recent.len() })
    }

    /// Origins followed now.
    pub fn origin_count(&self) -> usize {
        self.origins.len()
    }
}

/// The median of `values` (the lower of the middle two), sorting them;
/// `None` when empty. Every lag figure the node reports is one.
pub fn median(values: &mut [u64]) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len().checked_sub(1)? / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_the_median_and_the_largest_of_recent_writes() {
        let mut lag = ReplicationLag::new();
        let a = NodeId(1);
        for (written, applied) in [(1_000, 1_040), (1_010, 1_052), (1_020, 1_100)] {
            lag.record_sample(a, written, applied);
        }
        let s = lag.summary(a, 1_100).unwrap();
        assert_eq!(s, LagSummary { p50_ms: 42, max_ms: 80, samples: 3 });
        assert_eq!(lag.summary(NodeId(2), 1_100), None);
    }

    #[test]
    fn old_samples_leave_the_window_and_the_ring_keeps_the_newest() {
        let mut lag = ReplicationLag::new();
        let a = NodeId(1);
        lag.record_sample(a, 0, 500);
        assert_eq!(lag.summary(a, 500 + WINDOW_MS + 1), None);
        for i in 0..(SAMPLES_PER_ORIGIN as u64 * 2) {
            lag.record_sample(a, 100_000 + i, 100_000 + i + 7);
        }
        let s = lag.summary(a, 100_200).unwrap();
        assert_eq!((s.samples, s.p50_ms, s.max_ms), (SAMPLES_PER_ORIGIN, 7, 7));
    }

    #[test]
    fn a_write_from_ahead_of_this_clock_is_no_lag() {
        let mut lag = ReplicationLag::new();
        lag.record_sample(NodeId(1), 2_000, 1_000);
        assert_eq!(lag.summary(NodeId(1), 1_000).unwrap().max_ms, 0);
    }

    #[test]
    fn origins_are_bounded_and_the_stalest_goes_first() {
        let mut lag = ReplicationLag::new();
        for n in 0..ORIGINS_MAX as u64 {
            lag.record_sample(NodeId(n), 0, 1_000 + n);
        }
        lag.record_sample(NodeId(u64::MAX), 0, 5_000);
        assert_eq!(lag.origin_count(), ORIGINS_MAX);
        assert!(lag.summary(NodeId(0), 5_000).is_none(), "the stalest origin was forgotten");
        assert!(lag.summary(NodeId(1), 5_000).is_some());
    }
}
