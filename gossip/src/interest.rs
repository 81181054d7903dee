//! Which keys a sidecar holds, as the full nodes of its region know it.
//!
//! A full node sends a sidecar of its region whole deltas only of keys the
//! sidecar holds; any other leaves with its body left out
//! ([`geocache_crdt::DeltaBody::Omitted`]: origin, seq and key), which the
//! sidecar records as applied without decoding or storing a value. So a
//! sidecar's cost per remote write it does not keep is a few bytes, not a
//! delta (issue 15).
//!
//! What a full node knows is a hint, never what correctness rests on: a
//! sidecar that gets an omitted write of a key it does hold (it began to
//! hold it while the write was on its way, or the full node forgot) drops
//! the key, and a fill of it under way misses. It then holds the newest
//! version it has seen or nothing, as always. The full node learns a key
//! when the sidecar writes it (the write comes to it from the sidecar),
//! asks it for a fill, or says so in an [`Interest`](crate::wire::Message::Interest)
//! message (after a fill answered by another full node, and every key the
//! sidecar holds when the full node comes up); it forgets a key when the
//! sidecar answers a whole delta of it with "not held".

use foldhash::fast::FixedState;
use geocache_crdt::{Key, NodeId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;

/// Keys a full node tracks per sidecar at most; past this it sends that
/// sidecar every delta whole (as to a full node) until the sidecar's next
/// life. A sidecar is sized to hold its own app's keys; 131,072 is more
/// than a 64 MiB sidecar holds of 100-byte values.
pub const INTEREST_KEYS_PER_SIDECAR_MAX: usize = 1 << 17;

/// Keys a full node tracks for all its region's sidecars together at
/// most; a sidecar whose key would pass it gets every delta whole.
pub const INTEREST_KEYS_TOTAL_MAX: usize = 1 << 21;

/// Bytes a tracked key costs at most: a hashbrown set of 8-byte hashes at
/// its lowest load after growing (16 B per key) plus its control bytes.
pub const INTEREST_BYTES_PER_KEY: usize = 18;

/// Bytes of keys a sidecar has yet to tell its full nodes at most, all
/// together; past this the rest are not told (the full node omits their deltas, and the
/// sidecar drops them when one comes: a miss later, never a stale read).
pub const INTEREST_PENDING_BYTES_MAX: usize = 4 << 20;

/// Keys in one [`Interest`](crate::wire::Message::Interest) message at most.
pub const INTEREST_KEYS_PER_MESSAGE_MAX: usize = 4_096;

/// What a full node knows of one sidecar.
#[derive(Debug, Default)]
struct Tracked {
    /// Hashes of the keys it holds (a collision sends a delta whole that
    /// could have been omitted; nothing worse).
    keys: HashSet<u64, FixedState>,
    /// It held more than [`INTEREST_KEYS_PER_SIDECAR_MAX`]: every delta
    /// goes to it whole.
    overflowed: bool,
}

/// Counters, for `/metrics` and the simulator's report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterestStats {
    /// Deltas sent to sidecars with their body left out.
    pub omitted_sent: u64,
    /// Omitted deltas taken as applied here, as a sidecar.
    pub omitted_applied: u64,
    /// Omitted deltas of a key this sidecar held: the key was dropped.
    pub omitted_held_dropped: u64,
    /// Omitted deltas refused here, as a full node (it needs the whole
    /// delta; anti-entropy brings it).
    pub omitted_refused: u64,
    /// Sidecars whose keys outgrew [`INTEREST_KEYS_PER_SIDECAR_MAX`].
    pub overflows: u64,
    /// Keys not told to a full node: its pending bytes were at
    /// [`INTEREST_PENDING_BYTES_MAX`].
    pub untold: u64,
}

/// A full node's view of its region's sidecars.
#[derive(Debug, Default)]
pub struct SidecarInterest {
    by_sidecar: HashMap<NodeId, Tracked, FixedState>,
    hasher: FixedState,
    /// Keys tracked over every sidecar.
    total: usize,
}

impl SidecarInterest {
    fn hash(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key)
    }

    /// `sidecar` (of this full node's region) is up in a new life, or
    /// down: what was known of it is forgotten.
    pub fn forget(&mut self, sidecar: NodeId) {
        if let Some(tracked) = self.by_sidecar.remove(&sidecar) {
            self.total -= tracked.keys.len();
        }
    }

    /// `sidecar` holds `key`.
    pub fn held(&mut self, sidecar: NodeId, key: &Key, stats: &mut InterestStats) {
        let hash = self.hash(key);
        let tracked = self.by_sidecar.entry(sidecar).or_default();
        if tracked.overflowed {
            return;
        }
        let full =
            tracked.keys.len() >= INTEREST_KEYS_PER_SIDECAR_MAX || self.total >= INTEREST_KEYS_TOTAL_MAX;
        if full && !tracked.keys.contains(&hash) {
            tracked.overflowed = true;
            self.total -= tracked.keys.len();
            tracked.keys = HashSet::default();
            stats.overflows += 1;
            return;
        }
        if tracked.keys.insert(hash) {
            self.total += 1;
        }
    }

    /// `sidecar` does not hold `key`.
    pub fn not_held(&mut self, sidecar: NodeId, key: &Key) {
        let hash = self.hash(key);
        if let Some(tracked) = self.by_sidecar.get_mut(&sidecar) {
            if tracked.keys.remove(&hash) {
                self.total -= 1;
            }
        }
    }

    /// Whether a delta of `key` goes to `sidecar` whole.
    pub fn wants(&self, sidecar: NodeId, key: &Key) -> bool {
        match self.by_sidecar.get(&sidecar) {
            Some(tracked) => tracked.overflowed || tracked.keys.contains(&self.hash(key)),
            None => false,
        }
    }

    /// Keys tracked for `sidecar` (for tests and `/v1/cluster`).
    pub fn tracked_count(&self, sidecar: NodeId) -> usize {
        self.by_sidecar.get(&sidecar).map_or(0, |t| t.keys.len())
    }
}

/// What one full node has yet to hear from this sidecar.
#[derive(Debug, Default)]
struct Untold {
    held: Vec<Key>,
    not_held: Vec<Key>,
    bytes: usize,
}

/// A sidecar's news for the full nodes of its region, bounded per full
/// node.
#[derive(Debug, Default)]
pub struct InterestNews {
    by_full_node: BTreeMap<NodeId, Untold>,
    /// Bytes untold over every full node.
    bytes: usize,
}

impl InterestNews {
    fn untold(&mut self, full_node: NodeId, key: &Key, stats: &mut InterestStats) -> Option<&mut Untold> {
        let bytes = key.size_bytes() + 8;
        if self.bytes + bytes > INTEREST_PENDING_BYTES_MAX {
            stats.untold += 1;
            return None;
        }
        self.bytes += bytes;
        let untold = self.by_full_node.entry(full_node).or_default();
        untold.bytes += bytes;
        Some(untold)
    }

    /// Tells `full_node` that this sidecar holds `key`.
    pub fn held(&mut self, full_node: NodeId, key: Key, stats: &mut InterestStats) {
        if let Some(untold) = self.untold(full_node, &key, stats) {
            untold.held.push(key);
        }
    }

    /// Tells `full_node` that this sidecar does not hold `key`.
    pub fn not_held(&mut self, full_node: NodeId, key: Key, stats: &mut InterestStats) {
        if let Some(untold) = self.untold(full_node, &key, stats) {
            untold.not_held.push(key);
        }
    }

    /// `full_node` is down: nothing more to tell it.
    pub fn forget(&mut self, full_node: NodeId) {
        if let Some(untold) = self.by_full_node.remove(&full_node) {
            self.bytes -= untold.bytes;
        }
    }

    /// The next message's worth for some full node: `(full_node, held,
    /// not_held)`, at most [`INTEREST_KEYS_PER_MESSAGE_MAX`] keys.
    pub fn take_message(&mut self) -> Option<(NodeId, Vec<Key>, Vec<Key>)> {
        let (&node, untold) = self.by_full_node.iter_mut().next()?;
        let held_n = untold.held.len().min(INTEREST_KEYS_PER_MESSAGE_MAX);
        let held: Vec<Key> = untold.held.drain(..held_n).collect();
        let not_held_n = untold.not_held.len().min(INTEREST_KEYS_PER_MESSAGE_MAX - held_n);
        let not_held: Vec<Key> = untold.not_held.drain(..not_held_n).collect();
        let told: usize = held.iter().chain(&not_held).map(|k| k.size_bytes() + 8).sum();
        untold.bytes -= told;
        self.bytes -= told;
        if untold.held.is_empty() && untold.not_held.is_empty() {
            self.by_full_node.remove(&node);
        }
        Some((node, held, not_held))
    }

    /// Whether there is anything to tell.
    pub fn is_empty(&self) -> bool {
        self.by_full_node.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        Key::new("n", format!("k{i}"))
    }

    #[test]
    fn a_full_node_wants_only_what_a_sidecar_said_it_holds_and_everything_once_it_overflows() {
        let mut interest = SidecarInterest::default();
        let mut stats = InterestStats::default();
        let s = NodeId(7);
        assert!(!interest.wants(s, &key(1)));
        interest.held(s, &key(1), &mut stats);
        assert!(interest.wants(s, &key(1)));
        assert!(!interest.wants(s, &key(2)));
        interest.not_held(s, &key(1));
        assert!(!interest.wants(s, &key(1)));
        for i in 0..INTEREST_KEYS_PER_SIDECAR_MAX as u32 {
            interest.held(s, &key(i), &mut stats);
        }
        assert_eq!(stats.overflows, 0);
        interest.held(s, &key(u32::MAX), &mut stats);
        assert_eq!(stats.overflows, 1);
        assert!(interest.wants(s, &key(u32::MAX - 1)), "an overflowed sidecar gets every delta whole");
        interest.forget(s);
        assert!(!interest.wants(s, &key(1)), "a new life starts from nothing");
    }

    #[test]
    fn news_leaves_in_bounded_messages_and_stops_at_its_byte_bound() {
        let mut news = InterestNews::default();
        let mut stats = InterestStats::default();
        let f = NodeId(3);
        for i in 0..(INTEREST_KEYS_PER_MESSAGE_MAX as u32 + 10) {
            news.held(f, key(i), &mut stats);
        }
        news.not_held(f, key(0), &mut stats);
        let (to, held, not_held) = news.take_message().unwrap();
        assert_eq!((to, held.len(), not_held.len()), (f, INTEREST_KEYS_PER_MESSAGE_MAX, 0));
        let (_, held, not_held) = news.take_message().unwrap();
        assert_eq!((held.len(), not_held.len()), (10, 1));
        assert!(news.take_message().is_none() && news.is_empty());
        let big = Key::new("n", "x".repeat(60_000));
        for _ in 0..100 {
            news.held(f, big.clone(), &mut stats);
        }
        assert!(stats.untold > 0, "past its byte bound news is not kept");
    }
}
