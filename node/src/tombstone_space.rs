//! The share of a store's budget kept for tombstones (deletes), apart
//! from the values.
//!
//! Why apart: a tombstone is never read, so in one LRU with the values it
//! is always among the first evicted, long before its retention ends, and
//! a late older write of its key (a relay's resend, anti-entropy, a full
//! transfer after a partition) would then find nothing to lose to. In a
//! space of their own, tombstones leave by their retention, and are evicted
//! early only when deletes outrun that space: then the oldest goes, is
//! counted (`geocache_tombstones_evicted_early_total`), and the forgotten
//! table (`forgotten.rs`) still refuses older writes of its key. Values
//! whose expiry passed stay with the values for their retention.
//!
//! A fixed share rather than a shared pool because moka's capacity cannot
//! move at run time. A tombstone of a 20-byte key weighs ~460 B (moka's
//! per-entry structures are most of it; `store::tests`: 1,139 in 512 KiB),
//! so 1/16 of the budget holds ~9,000 tombstones at a 64 MiB budget and
//! ~145,000 at 1 GiB: 15 and 240 deletes a second for the 10 minutes of
//! the default retention. Both the node's store and the simulator's use
//! this rule.

/// The budget is split 1 part tombstones to this many minus 1 parts
/// values.
const BUDGET_PARTS_PER_TOMBSTONE_PART: u64 = 16;

/// How a store's budget divides: (values, tombstones). The forgotten
/// table (`forgotten.rs`) is part of the budget too and comes off the
/// values' share.
pub fn split_budget(budget_bytes: u64) -> (u64, u64) {
    let tombstones = budget_bytes / BUDGET_PARTS_PER_TOMBSTONE_PART;
    let values = budget_bytes
        .saturating_sub(crate::forgotten::Forgotten::size_bytes(budget_bytes))
        .saturating_sub(tombstones);
    (values, tombstones)
}
