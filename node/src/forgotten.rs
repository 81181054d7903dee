//! What a store has forgotten: for each slot of a fixed table indexed by
//! key hash, the newest epoch of an entry it removed (evicted, expired,
//! reclaimed, dropped by a full transfer).
//!
//! Why: once an entry is gone, an older write to its key arriving late
//! (anti-entropy, a relay's resend, a full transfer) would be taken as
//! new, and the replica would show that older value for good, or bring
//! back a deleted key whose tombstone was reclaimed or evicted. A write to
//! a key not held here is refused when its epoch is older than what its
//! slot remembers. The epoch, not the stamp, because it is what the merge
//! decides on: a document patch stamped later than a whole replacement but
//! made on an older base loses to it, so it must not come back once the
//! replacement expired (found by the simulator, large-values seed 50).
//! The same epoch is let in: a later patch of a document this node evicted
//! is the document itself, come back (and a tombstone arriving again is
//! still a tombstone). Two keys sharing a slot only make such a refusal more
//! likely: a miss, never a stale value. Both the node's store and the
//! simulator's keep one.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots per byte of the store's budget: one per KiB, so a slot holds
/// about one entry's memory of a store that entries of ~1 KiB fill.
const BUDGET_BYTES_PER_SLOT: u64 = 1024;
/// Fewest and most slots.
const SLOTS_MIN: u64 = 4_096;
const SLOTS_MAX: u64 = 4 << 20;

/// The table. Lock-free: a removal raises its slot with `fetch_max`.
pub struct Forgotten {
    slots: Box<[AtomicU64]>,
    mask: u64,
    hasher: foldhash::fast::FixedState,
}

impl Forgotten {
    /// A table sized for a store of `budget_bytes`.
    pub fn for_budget(budget_bytes: u64) -> Forgotten {
        let count = (budget_bytes / BUDGET_BYTES_PER_SLOT).clamp(SLOTS_MIN, SLOTS_MAX).next_power_of_two();
        Forgotten {
            slots: (0..count).map(|_| AtomicU64::new(0)).collect(),
            mask: count - 1,
            hasher: foldhash::fast::FixedState::with_seed(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// The bytes the table takes.
    pub fn size_bytes(budget_bytes: u64) -> u64 {
        (budget_bytes / BUDGET_BYTES_PER_SLOT).clamp(SLOTS_MIN, SLOTS_MAX).next_power_of_two() * 8
    }

    fn slot(&self, packed_key: &[u8]) -> &AtomicU64 {
        let at = self.hasher.hash_one(packed_key) & self.mask;
        &self.slots[at as usize]
    }

    /// An entry of `packed_key` of epoch `hlc` (`Hlc::as_u64`) was removed.
    pub fn remember(&self, packed_key: &[u8], hlc: u64) {
        self.slot(packed_key).fetch_max(hlc, Ordering::Relaxed);
    }

    /// Whether a write of epoch `hlc` to `packed_key`, not held, is older
    /// than an entry removed from its slot: then it is refused.
    pub fn covers(&self, packed_key: &[u8], hlc: u64) -> bool {
        hlc < self.slot(packed_key).load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_entry_refuses_writes_of_older_epochs() {
        let f = Forgotten::for_budget(1 << 20);
        assert!(!f.covers(b"k", 1), "nothing removed yet");
        f.remember(b"k", 100);
        assert!(f.covers(b"k", 99) && f.covers(b"k", 50));
        assert!(!f.covers(b"k", 100), "the same epoch (a later patch of the document) is taken");
        assert!(!f.covers(b"k", 101), "a newer write is taken");
        f.remember(b"k", 10);
        assert!(f.covers(b"k", 99), "the slot keeps the newest");
        assert_eq!(Forgotten::size_bytes(1 << 20), 4_096 * 8);
    }
}
