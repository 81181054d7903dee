//! The bounded backlog of recent deltas, from every origin, kept to answer
//! anti-entropy requests.

use geocache_crdt::{Delta, NodeId};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Bounds of the backlog.
#[derive(Clone, Copy, Debug)]
pub struct BacklogLimits {
    /// Most bytes (by encoded size) held.
    pub bytes_limit: usize,
    /// Oldest delta kept, in ms.
    pub age_ms_limit: u64,
}

impl Default for BacklogLimits {
    fn default() -> Self {
        BacklogLimits { bytes_limit: 64 << 20, age_ms_limit: 10 * 60_000 }
    }
}

struct Held {
    delta: Arc<Delta>,
    bytes: usize,
    at_ms: u64,
}

/// Recent deltas by origin and sequence, evicted oldest first by bytes and
/// age. Knows, per origin, the lowest sequence it may still hold, so it can
/// say when it no longer reaches back far enough.
#[derive(Default)]
pub struct Backlog {
    limits: BacklogLimits,
    by_origin: BTreeMap<NodeId, BTreeMap<u64, Held>>,
    order: VecDeque<(NodeId, u64)>,
    bytes: usize,
    /// Per origin, the highest sequence evicted: answers for anything at or
    /// below it are incomplete.
    evicted_through: BTreeMap<NodeId, u64>,
}

impl Backlog {
    /// An empty backlog.
    pub fn new(limits: BacklogLimits) -> Backlog {
        Backlog { limits, ..Backlog::default() }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Deltas held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Keeps `delta` (of encoded size `bytes`), evicting what the limits
    /// require.
    pub fn push(&mut self, delta: Arc<Delta>, bytes: usize, now_ms: u64) {
        let (origin, seq) = (delta.origin, delta.seq);
        let held = self.by_origin.entry(origin).or_default();
        if held.contains_key(&seq) {
            return;
        }
        held.insert(seq, Held { delta, bytes, at_ms: now_ms });
        self.order.push_back((origin, seq));
        self.bytes += bytes;
        self.evict(now_ms);
    }

    /// Drops what is too old at `now_ms`.
    pub fn evict(&mut self, now_ms: u64) {
        while let Some(&(origin, seq)) = self.order.front() {
            let too_big = self.bytes > self.limits.bytes_limit;
            let Some(held) = self.by_origin.get(&origin).and_then(|h| h.get(&seq)) else {
                self.order.pop_front();
                continue;
            };
            let too_old = now_ms.saturating_sub(held.at_ms) > self.limits.age_ms_limit;
            if !too_big && !too_old {
                break;
            }
            self.order.pop_front();
            if let Some(h) = self.by_origin.get_mut(&origin).and_then(|m| m.remove(&seq)) {
                self.bytes -= h.bytes;
            }
            let through = self.evicted_through.entry(origin).or_default();
            *through = (*through).max(seq);
        }
    }

    /// The deltas of `origin` after `after_seq`, when the backlog holds the
    /// very next one (`after_seq + 1`) or knows of nothing after it; `None`
    /// when it cannot answer from memory (evicted, or never held).
    pub fn since(&self, origin: NodeId, after_seq: u64) -> Option<Vec<Arc<Delta>>> {
        if self.evicted_through.get(&origin).is_some_and(|&through| through > after_seq) {
            return None;
        }
        let held = self.held_after(origin, after_seq);
        match held.first() {
            Some(first) if first.seq != after_seq + 1 => None,
            _ => Some(held),
        }
    }

    /// Whatever the backlog holds of `origin` after `after_seq`.
    pub fn held_after(&self, origin: NodeId, after_seq: u64) -> Vec<Arc<Delta>> {
        self.by_origin
            .get(&origin)
            .map(|h| h.range(after_seq + 1..).map(|(_, held)| held.delta.clone()).collect())
            .unwrap_or_default()
    }

    /// Origins with deltas held or evicted, in node order.
    pub fn origins(&self) -> Vec<NodeId> {
        let mut origins: Vec<NodeId> =
            self.by_origin.keys().chain(self.evicted_through.keys()).copied().collect();
        origins.sort();
        origins.dedup();
        origins
    }
}
