//! The bounded backlog of recent deltas, from every origin, kept to answer
//! anti-entropy requests.

use foldhash::fast::FixedState;
use geocache_crdt::{Delta, NodeId};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Bounds of the backlog.
#[derive(Clone, Copy, Debug)]
pub struct BacklogLimits {
    /// Most bytes (by encoded size) held.
    pub bytes_max: usize,
    /// Oldest delta kept, in ms.
    pub age_ms_max: u64,
}

impl Default for BacklogLimits {
    fn default() -> Self {
        BacklogLimits { bytes_max: 64 << 20, age_ms_max: 10 * 60_000 }
    }
}

struct Held {
    /// The delta's seq, inline: searches must not chase the pointer.
    seq: u64,
    delta: Arc<Delta>,
    bytes: usize,
    at_ms: u64,
}

/// One origin's deltas in seq order, and the highest seq evicted.
#[derive(Default)]
struct OriginLog {
    held: VecDeque<Held>,
    /// The seq of the last delta held (0 when none): a push is nearly
    /// always after it, and knowing so without reading the deque's far
    /// end saves a cache miss per delta (200 nodes of 200 origins each
    /// in the simulator).
    newest: u64,
    evicted_through: u64,
}

impl OriginLog {
    /// Index of the first delta with seq > `seq`.
    fn after(&self, seq: u64) -> usize {
        if self.newest <= seq {
            self.held.len()
        } else {
            self.held.partition_point(|h| h.seq <= seq)
        }
    }

    /// The deltas from index `at` on, up to the first received after
    /// `received_by_ms`.
    fn received_from(&self, at: usize, received_by_ms: u64) -> Vec<Arc<Delta>> {
        self.held.range(at..).take_while(|h| h.at_ms <= received_by_ms).map(|h| h.delta.clone()).collect()
    }
}

/// Recent deltas by origin and sequence, evicted oldest first by bytes and
/// age. Knows, per origin, the highest sequence it evicted, so it can say
/// when it no longer reaches back far enough.
///
/// Each origin's deltas sit in a deque in seq order (they nearly always
/// arrive in order, so a push is an append); eviction takes the origin
/// whose oldest delta is oldest, by a queue of origins in push order.
#[derive(Default)]
pub struct Backlog {
    limits: BacklogLimits,
    /// Hashed: a lookup per delta is one probe, not a walk down a tree of
    /// 200 origins; whatever lists them sorts.
    by_origin: HashMap<NodeId, OriginLog, FixedState>,
    /// Origins in the order of their pushes, with when each push was:
    /// where to evict next. The time rides here so that the common case,
    /// nothing to evict, reads only this queue's front, not a log of
    /// another origin (a cache miss per delta at 200 origins).
    order: VecDeque<(u64, NodeId)>,
    bytes: usize,
    len: usize,
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
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps `delta` (of encoded size `bytes`), evicting what the limits
    /// require.
    pub fn push(&mut self, delta: Arc<Delta>, bytes: usize, now_ms: u64) {
        let origin = delta.origin;
        let log = self.by_origin.entry(origin).or_default();
        if delta.seq <= log.evicted_through {
            return;
        }
        let at = log.after(delta.seq);
        // Past the newest, it cannot be held: the deque is not read.
        if delta.seq <= log.newest && at > 0 && log.held[at - 1].seq == delta.seq {
            return;
        }
        let seq = delta.seq;
        log.held.insert(at, Held { seq, delta, bytes, at_ms: now_ms });
        log.newest = log.newest.max(seq);
        self.order.push_back((now_ms, origin));
        self.bytes += bytes;
        self.len += 1;
        self.evict(now_ms);
    }

    /// Drops what is too old at `now_ms`, or over the byte limit.
    pub fn evict(&mut self, now_ms: u64) {
        while let Some(&(pushed_at_ms, origin)) = self.order.front() {
            let too_big = self.bytes > self.limits.bytes_max;
            if !too_big && now_ms.saturating_sub(pushed_at_ms) <= self.limits.age_ms_max {
                break;
            }
            let Some(log) = self.by_origin.get_mut(&origin) else {
                self.order.pop_front();
                continue;
            };
            let Some(oldest) = log.held.front() else {
                self.order.pop_front();
                continue;
            };
            let too_big = self.bytes > self.limits.bytes_max;
            let too_old = now_ms.saturating_sub(oldest.at_ms) > self.limits.age_ms_max;
            if !too_big && !too_old {
                break;
            }
            self.order.pop_front();
            if let Some(h) = log.held.pop_front() {
                self.bytes -= h.bytes;
                self.len -= 1;
                log.evicted_through = log.evicted_through.max(h.seq);
                if log.held.is_empty() {
                    log.newest = 0;
                }
            }
        }
    }

    /// The deltas of `origin` after `after_seq` received by
    /// `received_by_ms`, in seq order up to the first received later, when
    /// the backlog holds the very next one (`after_seq + 1`) or knows of
    /// nothing after it; `None` when it cannot answer from memory
    /// (evicted, or never held).
    pub fn since(&self, origin: NodeId, after_seq: u64, received_by_ms: u64) -> Option<Vec<Arc<Delta>>> {
        let Some(log) = self.by_origin.get(&origin) else { return Some(Vec::new()) };
        if log.evicted_through > after_seq {
            return None;
        }
        let at = log.after(after_seq);
        match log.held.get(at) {
            Some(first) if first.seq != after_seq + 1 => None,
            _ => Some(log.received_from(at, received_by_ms)),
        }
    }

    /// When the delta `seq` of `origin` was pushed here (received, or
    /// written for this node's own), if it is still held.
    pub fn received_at(&self, origin: NodeId, seq: u64) -> Option<u64> {
        let log = self.by_origin.get(&origin)?;
        let at = log.after(seq.checked_sub(1)?);
        log.held.get(at).filter(|h| h.seq == seq).map(|h| h.at_ms)
    }

    /// Whatever the backlog holds of `origin` after `after_seq`, in seq
    /// order up to the first delta received after `received_by_ms`.
    pub fn held_after(&self, origin: NodeId, after_seq: u64, received_by_ms: u64) -> Vec<Arc<Delta>> {
        match self.by_origin.get(&origin) {
            Some(log) => log.received_from(log.after(after_seq), received_by_ms),
            None => Vec::new(),
        }
    }

    /// Everything held of `origin` after `after_seq`, or `None` when some
    /// delta after it was evicted (a gap of this node's own is no delta
    /// it applied, so it does not count).
    pub fn reaching_after(&self, origin: NodeId, after_seq: u64) -> Option<Vec<Arc<Delta>>> {
        match self.by_origin.get(&origin) {
            Some(log) if log.evicted_through > after_seq => None,
            Some(log) => Some(log.received_from(log.after(after_seq), u64::MAX)),
            None => Some(Vec::new()),
        }
    }

    /// Every delta held, origin by origin in node order, each in seq order.
    pub fn all(&self) -> Vec<Arc<Delta>> {
        self.origins()
            .into_iter()
            .flat_map(|origin| self.by_origin[&origin].held.iter().map(|h| h.delta.clone()))
            .collect()
    }

    /// Origins with deltas held or evicted, in node order.
    pub fn origins(&self) -> Vec<NodeId> {
        let mut origins: Vec<NodeId> = self.by_origin.keys().copied().collect();
        origins.sort_unstable();
        origins
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use geocache_crdt::{DeltaBody, Dot, Hlc, Key, Register, Stamp, Value, VersionVector};

    fn delta(origin: u64, seq: u64) -> Arc<Delta> {
        let reg = Register::replace(
            Value::Bytes(Bytes::from_static(b"v")),
            Stamp::new(Hlc::new(seq, 0), NodeId(origin)),
            VersionVector::new(),
            Dot { origin: NodeId(origin), seq },
            None,
        );
        Arc::new(Delta {
            origin: NodeId(origin),
            seq,
            key: Key::new("t", Bytes::from_static(b"k")),
            body: DeltaBody::Register(Arc::new(reg)),
        })
    }

    fn seqs(list: &[Arc<Delta>]) -> Vec<u64> {
        list.iter().map(|d| d.seq).collect()
    }

    #[test]
    fn answers_from_memory_until_evicted() {
        let mut b = Backlog::new(BacklogLimits { bytes_max: 300, age_ms_max: 1_000 });
        for seq in [1, 3, 2, 4, 2] {
            b.push(delta(1, seq), 100, 0);
        }
        assert_eq!(b.len(), 3, "seq 1 evicted by bytes, the duplicate 2 dropped");
        assert_eq!(b.since(NodeId(1), 0, u64::MAX), None, "seq 1 was evicted");
        assert_eq!(seqs(&b.since(NodeId(1), 1, u64::MAX).unwrap()), vec![2, 3, 4]);
        assert_eq!(seqs(&b.since(NodeId(1), 4, u64::MAX).unwrap()), Vec::<u64>::new());
        assert_eq!(
            b.since(NodeId(2), 0, u64::MAX).map(|v| v.len()),
            Some(0),
            "an unknown origin has nothing"
        );
        b.evict(2_000);
        assert!(b.is_empty() && b.bytes() == 0);
        assert_eq!(b.since(NodeId(1), 3, u64::MAX), None);
        assert_eq!(b.origins(), vec![NodeId(1)]);
    }

    #[test]
    fn a_gap_means_it_cannot_answer() {
        let mut b = Backlog::new(BacklogLimits::default());
        b.push(delta(1, 5), 10, 0);
        assert_eq!(b.since(NodeId(1), 3, u64::MAX), None, "seq 4 was never held");
        assert_eq!(seqs(&b.held_after(NodeId(1), 3, u64::MAX)), vec![5]);
    }
}
