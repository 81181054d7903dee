//! Which writes of each origin this node has applied: a contiguous
//! watermark and the few sequence numbers applied above it.

use foldhash::fast::FixedState;
use geocache_crdt::NodeId;
use std::collections::{BTreeSet, HashMap};

/// Most sequence numbers kept above one origin's watermark. A gap this wide
/// means a lost stretch of deltas: anti-entropy fills it, and past the bound
/// the watermark jumps (the skipped writes are then only recovered by a
/// full transfer), so a lost delta cannot grow memory without bound.
pub const ABOVE_WATERMARK_MAX_COUNT: usize = 65_536;

/// Applied sequence numbers of one origin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedSet {
    /// Every seq `<= watermark` is applied.
    watermark: u64,
    /// Applied seqs above the watermark.
    above: BTreeSet<u64>,
    /// Whether the watermark jumped over a gap since last asked.
    jumped: bool,
}

impl AppliedSet {
    /// The contiguous watermark.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Whether `seq` is applied.
    pub fn contains(&self, seq: u64) -> bool {
        seq <= self.watermark || self.above.contains(&seq)
    }

    /// Marks `seq` applied; false when it already was (a duplicate).
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        if seq == self.watermark + 1 && self.above.is_empty() {
            // In order, the common case: no set node to make and remove.
            self.watermark = seq;
            return true;
        }
        self.above.insert(seq);
        while self.watermark < u64::MAX && self.above.remove(&(self.watermark + 1)) {
            self.watermark += 1;
        }
        if self.above.len() > ABOVE_WATERMARK_MAX_COUNT {
            // Give up on the oldest gap: jump to the lowest applied seq.
            if let Some(&lowest) = self.above.iter().next() {
                self.watermark = lowest;
                self.above.remove(&lowest);
                self.jumped = true;
                while self.watermark < u64::MAX && self.above.remove(&(self.watermark + 1)) {
                    self.watermark += 1;
                }
            }
        }
        true
    }

    /// Raises the watermark to at least `seq` (after a full transfer).
    pub fn raise_to(&mut self, seq: u64) {
        if seq > self.watermark {
            self.watermark = seq;
            self.above = self.above.split_off(&seq.saturating_add(1));
            self.above.remove(&seq);
            while self.watermark < u64::MAX && self.above.remove(&(self.watermark + 1)) {
                self.watermark += 1;
            }
        }
    }

    /// How many seqs above `after` are applied.
    pub fn count_after(&self, after: u64) -> u64 {
        self.watermark.saturating_sub(after) + self.above.range(after.saturating_add(1)..).count() as u64
    }

    /// The highest applied seq.
    pub fn highest(&self) -> u64 {
        self.above.last().copied().unwrap_or(self.watermark)
    }

    /// Seqs missing between the watermark and the highest applied one.
    pub fn has_gaps(&self) -> bool {
        !self.above.is_empty()
    }
}

/// What [`Watermarks::admit`] says of a delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Not applied yet, and its origin is tracked or has room.
    New,
    /// Applied already.
    Duplicate,
    /// A new origin past [`ORIGIN_COUNT_MAX`].
    NoRoom,
}

/// Applied sets of every origin. Hashed: every delta looks its origin up
/// twice (admit, record), and a walk down a tree of 200 origins was half
/// of the replicator's own time per delta at 200 nodes; what lists them
/// sorts (per sync request or fill, not per delta).
#[derive(Clone, Debug, Default)]
pub struct Watermarks {
    origins: HashMap<NodeId, AppliedSet, FixedState>,
}

/// Most origins whose writes one node tracks: every life of every node
/// within the origin retention, with room to spare. A peer naming more
/// (forged origins) finds its deltas refused, not memory grown.
pub const ORIGIN_COUNT_MAX: usize = 65_536;

impl Watermarks {
    /// Whether a write of `origin` may be tracked: it is known, or there
    /// is room for one more origin.
    pub fn has_room_for(&self, origin: NodeId) -> bool {
        self.origins.contains_key(&origin) || self.origins.len() < ORIGIN_COUNT_MAX
    }

    /// Whether `origin`'s watermark jumped over a gap since last asked:
    /// the writes skipped are then only recovered by a full transfer.
    pub fn take_jumped(&mut self, origin: NodeId) -> bool {
        self.origins.get_mut(&origin).is_some_and(|s| std::mem::take(&mut s.jumped))
    }

    /// Whether `(origin, seq)` is new here and may be tracked, in one
    /// lookup: a delta's first question on the hot path.
    pub fn admit(&self, origin: NodeId, seq: u64) -> Admission {
        match self.origins.get(&origin) {
            Some(set) if set.contains(seq) => Admission::Duplicate,
            Some(_) => Admission::New,
            None if self.origins.len() < ORIGIN_COUNT_MAX => Admission::New,
            None => Admission::NoRoom,
        }
    }

    /// Marks `(origin, seq)` applied, in one lookup; true when the
    /// watermark jumped over a gap since last asked (see
    /// [`take_jumped`](Self::take_jumped)).
    pub fn record(&mut self, origin: NodeId, seq: u64) -> bool {
        let set = self.origins.entry(origin).or_default();
        set.insert(seq);
        std::mem::take(&mut set.jumped)
    }

    /// Forgets `origin` (gone longer than the retention).
    pub fn forget(&mut self, origin: NodeId) {
        self.origins.remove(&origin);
    }

    /// Marks `(origin, seq)` applied; false for a duplicate.
    pub fn insert(&mut self, origin: NodeId, seq: u64) -> bool {
        self.origins.entry(origin).or_default().insert(seq)
    }

    /// Whether `(origin, seq)` is applied.
    pub fn contains(&self, origin: NodeId, seq: u64) -> bool {
        self.origins.get(&origin).is_some_and(|s| s.contains(seq))
    }

    /// The watermark of `origin` (0 when nothing is known).
    pub fn watermark(&self, origin: NodeId) -> u64 {
        self.origins.get(&origin).map_or(0, AppliedSet::watermark)
    }

    /// Every origin's watermark, in node order.
    pub fn summary(&self) -> Vec<(NodeId, u64)> {
        self.in_node_order(AppliedSet::watermark)
    }

    /// How many of `origin`'s seqs above `after` are applied.
    pub fn count_after(&self, origin: NodeId, after: u64) -> u64 {
        self.origins.get(&origin).map_or(0, |s| s.count_after(after))
    }

    /// Every origin's highest applied seq, in node order.
    pub fn highest(&self) -> Vec<(NodeId, u64)> {
        self.in_node_order(AppliedSet::highest)
    }

    /// `(origin, figure(set))` for every origin, in node order.
    fn in_node_order(&self, figure: fn(&AppliedSet) -> u64) -> Vec<(NodeId, u64)> {
        let mut all: Vec<(NodeId, u64)> = self.origins.iter().map(|(n, s)| (*n, figure(s))).collect();
        all.sort_unstable_by_key(|&(n, _)| n);
        all
    }

    /// Raises `origin`'s watermark to at least `seq`.
    pub fn raise_to(&mut self, origin: NodeId, seq: u64) {
        self.origins.entry(origin).or_default().raise_to(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_at_the_end_of_the_range_do_not_overflow() {
        let mut s = AppliedSet::default();
        s.raise_to(u64::MAX - 1);
        assert!(s.insert(u64::MAX));
        assert_eq!(s.watermark(), u64::MAX);
        s.raise_to(u64::MAX);
        assert!(!s.insert(u64::MAX));
    }

    #[test]
    fn admit_and_record_answer_as_contains_insert_and_take_jumped() {
        let mut w = Watermarks::default();
        assert_eq!(w.admit(NodeId(1), 1), Admission::New);
        assert!(!w.record(NodeId(1), 1));
        assert_eq!(w.admit(NodeId(1), 1), Admission::Duplicate);
        for seq in 3..ABOVE_WATERMARK_MAX_COUNT as u64 + 3 {
            assert!(!w.record(NodeId(1), seq));
        }
        assert!(w.record(NodeId(1), ABOVE_WATERMARK_MAX_COUNT as u64 + 10), "the gap at 2 was jumped");
        assert!(!w.take_jumped(NodeId(1)), "and the jump was taken once");
        assert_eq!(w.admit(NodeId(1), 2), Admission::Duplicate, "below the jumped watermark");
    }

    #[test]
    fn origins_beyond_the_bound_find_no_room_but_known_ones_do() {
        let mut w = Watermarks::default();
        for i in 0..ORIGIN_COUNT_MAX as u64 {
            assert!(w.has_room_for(NodeId(i)));
            w.insert(NodeId(i), 1);
        }
        assert!(!w.has_room_for(NodeId(u64::MAX)));
        assert!(w.has_room_for(NodeId(7)));
    }

    #[test]
    fn watermark_advances_over_filled_gaps_and_drops_duplicates() {
        let mut s = AppliedSet::default();
        assert!(s.insert(1));
        assert!(s.insert(3));
        assert_eq!(s.watermark(), 1);
        assert!(s.has_gaps());
        assert!(!s.insert(3));
        assert!(s.insert(2));
        assert_eq!(s.watermark(), 3);
        assert!(!s.has_gaps());
        assert!(!s.insert(1));
    }

    #[test]
    fn a_watermark_that_jumps_a_gap_says_so_once() {
        let mut w = Watermarks::default();
        let origin = NodeId(1);
        for seq in 2..=(ABOVE_WATERMARK_MAX_COUNT as u64 + 2) {
            w.insert(origin, seq);
        }
        assert!(w.watermark(origin) > 1, "seq 1 was skipped");
        assert!(w.take_jumped(origin));
        assert!(!w.take_jumped(origin));
    }

    #[test]
    fn raise_to_keeps_what_is_above() {
        let mut s = AppliedSet::default();
        s.insert(10);
        s.insert(12);
        s.raise_to(9);
        assert_eq!(s.watermark(), 10);
        s.raise_to(11);
        assert_eq!(s.watermark(), 12);
    }
}
