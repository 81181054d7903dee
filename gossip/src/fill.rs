//! Sidecars: what they keep of remote writes, and how a miss fills from a
//! full node of their region.
//!
//! A sidecar stores a remote write only for a key it holds, or one it is
//! filling; any other is recorded as applied (its watermark moves) and not
//! stored. So it holds, for every key, the newest version it has seen or
//! nothing: a key it does not hold has no older version here to serve.
//!
//! A fill asks a full node of the region for one key and says how far this
//! node is (the highest write of each origin it applied, stored or not).
//! The full node answers with its register and the origins it has not
//! applied that far (writes still on their way to it, or a gap). For
//! those, the sidecar merges what its own backlog holds of the key after
//! the full node's watermark: it kept every delta it applied, stored or
//! not. When its backlog no longer reaches back that far, the fill is a
//! miss. While the fill is out, remote writes of the key are stored, and
//! the answer merges with them: what arrives between the question and the
//! answer is never lost to it.

use geocache_crdt::{Delta, DeltaBody, Dot, Key, NodeId, Register};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::replica_store::{ApplyOutcome, ReplicaStore};

/// Keys filling at once at most; past this a miss is answered as a miss at
/// once (each pending key costs a map entry and, at the front end, the
/// requests waiting on it).
pub const FILLS_PENDING_MAX: usize = 1_024;

/// What became of fills, for `/metrics` and `/v1/cluster`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FillStats {
    /// Fills sent to a full node.
    pub asked: u64,
    /// Answered with a register (tombstones included).
    pub found: u64,
    /// Answered: the full node holds nothing for the key.
    pub absent: u64,
    /// Answered by a node that had not applied everything this one had,
    /// and this node's backlog no longer reaches back to what it lacks (or
    /// the answer came from a sidecar): taken as a miss.
    pub behind: u64,
    /// No answer within the fill time-out: a miss.
    pub timed_out: u64,
    /// No full node of the region was up: a miss at once.
    pub no_full_node: u64,
    /// Too many fills out already: a miss at once.
    pub refused_busy: u64,
    /// Fills answered by a full node behind this one, whose missing
    /// writes of the key were found in this node's backlog and merged.
    pub completed_from_backlog: u64,
    /// Fills this node answered, as a full node.
    pub answered: u64,
    /// A write of the key came without its body while the fill was out
    /// (`interest.rs`): taken as a miss.
    pub spoiled: u64,
}

/// How a fill asked for began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillStart {
    /// Asked of a full node: a [`crate::core::CoreEvent::Filled`] follows.
    Asked,
    /// One for the same key is out already: its event answers this too.
    Joined,
    /// Nothing to fill: this node is a full node (it holds every key).
    NotSidecar,
    /// No full node of this node's region is up.
    NoFullNode,
    /// [`FILLS_PENDING_MAX`] are out.
    Busy,
}

#[derive(Debug)]
struct Pending {
    asked: NodeId,
    deadline_ms: u64,
    /// A write of the key came without its body while this was out.
    spoiled: bool,
}

/// The fills a sidecar has out, and those a full node has yet to answer.
#[derive(Debug, Default)]
pub struct Fills {
    pending: BTreeMap<Key, Pending>,
    deadlines: BTreeSet<(u64, Key)>,
    /// Counters.
    pub stats: FillStats,
}

impl Fills {
    /// Whether a fill of `key` is out.
    pub fn is_pending(&self, key: &Key) -> bool {
        self.pending.contains_key(key)
    }

    /// Whether another key may start filling.
    pub fn has_room(&self) -> bool {
        self.pending.len() < FILLS_PENDING_MAX
    }

    /// Records a fill of `key` asked of `asked`, answered as a miss at
    /// `deadline_ms` at the latest.
    pub fn begin(&mut self, key: Key, asked: NodeId, deadline_ms: u64) {
        self.deadlines.insert((deadline_ms, key.clone()));
        self.pending.insert(key, Pending { asked, deadline_ms, spoiled: false });
        self.stats.asked += 1;
    }

    /// An answer from `from` for `key`: `None` unless it is the one
    /// awaited (a late answer, after the time-out, is not taken: remote
    /// writes of the key were not stored since, so it may be older than
    /// one seen); `Some(spoiled)` when it is.
    pub fn answered(&mut self, key: &Key, from: NodeId) -> Option<bool> {
        match self.pending.get(key) {
            Some(p) if p.asked == from => {
                let (deadline, spoiled) = (p.deadline_ms, p.spoiled);
                self.pending.remove(key);
                self.deadlines.remove(&(deadline, key.clone()));
                Some(spoiled)
            }
            _ => None,
        }
    }

    /// A write of `key` came without its body while its fill is out: the
    /// fill will be a miss.
    pub fn spoil(&mut self, key: &Key) {
        if let Some(p) = self.pending.get_mut(key) {
            p.spoiled = true;
        }
    }

    /// Fills due by `now_ms`, taken out: each is a miss.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Key> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.deadlines.first() {
            if *at > now_ms {
                break;
            }
            if let Some((_, key)) = self.deadlines.pop_first() {
                self.pending.remove(&key);
                self.stats.timed_out += 1;
                due.push(key);
            }
        }
        due
    }

    /// Fills whose full node went down, taken out: each is a miss now
    /// rather than at its time-out.
    pub fn peer_down(&mut self, node: NodeId) -> Vec<Key> {
        let gone: Vec<(u64, Key)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.asked == node)
            .map(|(k, p)| (p.deadline_ms, k.clone()))
            .collect();
        for (deadline, key) in &gone {
            self.pending.remove(key);
            self.deadlines.remove(&(*deadline, key.clone()));
        }
        gone.into_iter().map(|(_, k)| k).collect()
    }

    /// When the next fill times out.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }
}

/// A sidecar's store as the protocol reaches it: remote writes and merged
/// registers of keys neither held nor filling are not stored, and a write
/// that came without its body drops the key.
pub struct SidecarStore<'a> {
    /// The store.
    pub inner: &'a mut dyn ReplicaStore,
    /// The fills out.
    pub fills: &'a Fills,
    /// What writes that came without their body did here.
    pub omitted: &'a mut OmittedEffects,
}

/// What writes that came without their body did at a sidecar, for its
/// core to act on.
#[derive(Debug, Default)]
pub struct OmittedEffects {
    /// Keys filling: their fills are spoiled ([`Fills::spoil`]).
    pub spoiled: Vec<Key>,
    /// Keys held, and dropped.
    pub held_dropped: u64,
}

impl SidecarStore<'_> {
    fn keeps(&mut self, key: &Key) -> bool {
        self.fills.is_pending(key) || self.inner.holds(key)
    }
}

impl ReplicaStore for SidecarStore<'_> {
    fn apply(&mut self, delta: &Delta) -> ApplyOutcome {
        if matches!(delta.body, DeltaBody::Omitted) {
            // Its full node did not know this node holds the key (it began
            // to while the write was on its way): what is held is older.
            // `holds` first: it reads no value, and nearly every key is
            // not held.
            if let Some(held) =
                self.inner.holds(&delta.key).then(|| self.inner.register(&delta.key)).flatten()
            {
                self.inner.drop_if_dot(&delta.key, held.meta.dot);
                self.omitted.held_dropped += 1;
            }
            if self.fills.is_pending(&delta.key) {
                self.omitted.spoiled.push(delta.key.clone());
            }
            self.inner.not_stored(delta);
            return ApplyOutcome::NotStored;
        }
        if self.keeps(&delta.key) {
            self.inner.apply(delta)
        } else {
            self.inner.not_stored(delta);
            ApplyOutcome::NotStored
        }
    }

    fn holds(&mut self, key: &Key) -> bool {
        self.inner.holds(key)
    }

    fn not_stored(&mut self, delta: &Delta) {
        self.inner.not_stored(delta);
    }

    fn merge(&mut self, key: &Key, register: &Register, forgotten_if_absent: bool) {
        if self.keeps(key) {
            self.inner.merge(key, register, forgotten_if_absent);
        }
    }

    fn drop_if_dot(&mut self, key: &Key, dot: Dot) {
        self.inner.drop_if_dot(key, dot);
    }

    fn keep_acceptor_slot(&mut self, key: &Key, slot: &crate::strong::Slot) -> bool {
        self.inner.keep_acceptor_slot(key, slot)
    }

    fn keys(&mut self) -> Vec<Key> {
        self.inner.keys()
    }

    fn register(&mut self, key: &Key) -> Option<Arc<Register>> {
        self.inner.register(key)
    }

    fn dots(&mut self) -> Vec<(Key, Dot)> {
        self.inner.dots()
    }
}
