//! The oracle: every write made, how far it got, and what every replica
//! must show at the end; read by the checkers through [`FinalState`].

use foldhash::fast::FixedState;
use geocache_crdt::{Key, NodeId, Register, Stamp, Value};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::world::World;

/// A write the oracle knows of.
pub struct WriteRecord {
    /// Its key.
    pub key: Key,
    /// The register it wrote.
    pub register: Arc<Register>,
    /// When, virtual µs.
    pub at_us: u64,
    /// Where.
    pub origin_region: usize,
    /// Nodes that have applied it (origin included).
    pub applied: u32,
    /// The durability asked: 0 local, 1 region, 2 all.
    pub durability: u8,
    /// Whether it was acknowledged at that level.
    pub acked_at_level: bool,
}

/// What the oracle tracks through the run.
pub struct Oracle {
    /// Every write not yet applied by every live node, by (origin, seq);
    /// iterated only where order cannot matter (a fold of a semilattice)
    /// or after sorting.
    pub writes: HashMap<(NodeId, u64), WriteRecord, FixedState>,
    /// Writes every live node had applied, folded by key.
    pub settled: HashMap<Key, Register, FixedState>,
    /// Live nodes now.
    pub live_count: u32,
    /// Newest acked write per key: its stamp and whether it is visible.
    pub newest: Vec<Option<(Stamp, bool)>>,
    /// Visibility lag samples (µs) per (from region, to region).
    pub lag_us: Vec<Option<Histogram<u64>>>,
    /// Write applications still to happen on live nodes.
    pub outstanding: i64,
    /// Every counter increment: its write, the counter key's number and
    /// the amount. Kept whole (settled writes leave `writes`): the
    /// `counters_exact` checker sums them without the merge code.
    pub increments: Vec<((NodeId, u64), usize, i64)>,
    regions: usize,
}

impl Oracle {
    /// An oracle for `keys` keys over `regions` regions.
    pub fn new(keys: usize, regions: usize) -> Oracle {
        Oracle {
            writes: HashMap::with_hasher(FixedState::default()),
            settled: HashMap::with_hasher(FixedState::default()),
            live_count: 0,
            newest: vec![None; keys],
            lag_us: (0..regions * regions).map(|_| None).collect(),
            outstanding: 0,
            increments: Vec::new(),
            regions,
        }
    }

    /// A node of region `to_region` applied `(origin, seq)` at `now_us`.
    pub fn applied(&mut self, origin: NodeId, seq: u64, to_region: usize, now_us: u64) {
        let Some(w) = self.writes.get_mut(&(origin, seq)) else { return };
        w.applied += 1;
        self.outstanding -= 1;
        let h = self.lag_us[w.origin_region * self.regions + to_region].get_or_insert_with(|| {
            Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
        });
        let _ = h.record((now_us - w.at_us).max(1));
        if w.applied >= self.live_count {
            // Every live node has it: fold it into the oracle now rather
            // than keeping every write to the end.
            if let Some(done) = self.writes.remove(&(origin, seq)) {
                match self.settled.get_mut(&done.key) {
                    Some(acc) => acc.merge(&done.register),
                    None => {
                        self.settled.insert(done.key, (*done.register).clone());
                    }
                }
            }
        }
    }
}

/// Read access for the checkers.
pub struct FinalState<'a> {
    pub(crate) world: &'a World,
}

/// What a read sees: the bytes, the document JSON, the counter's integer,
/// or nothing.
pub fn visible_value(r: &Register, now_ms: u64) -> Option<Vec<u8>> {
    if !r.is_visible_at(now_ms) {
        return None;
    }
    match &r.value {
        Value::Bytes(b) => Some(b.to_vec()),
        Value::Doc(d) => Some(d.to_json().to_string().into_bytes()),
        Value::Counter(c) => Some(c.value().to_string().into_bytes()),
    }
}

impl FinalState<'_> {
    /// Live nodes' registers: (node index, key, register), node by node
    /// in key order. An iterator: 200 nodes' stores unpacked at once took
    /// more memory than the whole run.
    pub fn held(&self) -> impl Iterator<Item = (usize, &Key, Arc<Register>)> + '_ {
        let w = self.world;
        (0..w.nodes.len())
            .filter(|&i| w.nodes[i].up)
            .flat_map(move |i| w.nodes[i].store.registers().map(move |(k, r)| (i, k, r.register_arc())))
    }

    /// The virtual time now, ms.
    pub fn now_ms(&self) -> u64 {
        self.world.now_us / 1_000
    }

    /// Whether some live node has write `(origin, seq)` of `key`: its
    /// origin (which holds all its writes), a node that applied it (at or
    /// above its watermark: a gap below it from a dead origin never
    /// fills; a full node's only, since a sidecar applies writes it does
    /// not store), or one whose register for the key is that write (merged
    /// from a full transfer).
    fn survives(&self, origin: NodeId, seq: u64, key: &Key) -> bool {
        let dot = geocache_crdt::Dot { origin, seq };
        self.world.nodes.iter().filter(|n| n.up).any(|n| {
            n.origin == origin
                || (n.kind == geocache_gossip::peer::NodeKind::Full
                    && n.core.replicator().has_applied(origin, seq))
                || n.store.peek(key).is_some_and(|e| e.dot() == dot)
        })
    }

    /// As [`survives`](Self::survives), counting a sidecar that applied
    /// the increment while holding the counter: its counter has it.
    fn increment_survives(&self, origin: NodeId, seq: u64, key: &Key) -> bool {
        self.survives(origin, seq, key)
            || self
                .world
                .nodes
                .iter()
                .filter(|n| n.up)
                .any(|n| n.core.replicator().has_applied(origin, seq) && n.store.peek(key).is_some())
    }

    /// Every write that some live node applied, folded by key: what every
    /// replica holding the key must show.
    pub fn expected(&self) -> BTreeMap<Key, Register> {
        let oracle = &self.world.oracle;
        let mut out: BTreeMap<Key, Register> =
            oracle.settled.iter().map(|(k, r)| (k.clone(), r.clone())).collect();
        for (&(origin, seq), rec) in &oracle.writes {
            if !self.survives(origin, seq, &rec.key) {
                continue;
            }
            match out.get_mut(&rec.key) {
                Some(acc) => acc.merge(&rec.register),
                None => {
                    out.insert(rec.key.clone(), (*rec.register).clone());
                }
            }
        }
        out
    }

    /// Counters whose value at a live node holding them is not the sum of
    /// every increment that survives (made by a live life, or applied by
    /// a live full node): (counter, node, value held, sum).
    pub fn counter_errors(&self) -> Vec<(usize, usize, Option<i128>, i128)> {
        let oracle = &self.world.oracle;
        let keys = self.world.scenario.workload.counter_keys;
        let mut sums = vec![0i128; keys];
        for &((origin, seq), c, by) in &oracle.increments {
            if self.increment_survives(origin, seq, &crate::workload::counter_key(c)) {
                sums[c] += i128::from(by);
            }
        }
        let mut errors = Vec::new();
        for (c, &sum) in sums.iter().enumerate() {
            let key = crate::workload::counter_key(c);
            for (i, n) in self.world.nodes.iter().enumerate().filter(|(_, n)| n.up) {
                let Some(entry) = n.store.peek(&key) else { continue };
                let held = entry.counter().map(geocache_crdt::Counter::value);
                if held != Some(sum) {
                    errors.push((c, i, held, sum));
                }
            }
        }
        errors
    }

    /// Writes acked at `region` or `all` durability that no live node holds.
    pub fn lost_acked_writes(&self) -> Vec<(NodeId, u64)> {
        let mut lost: Vec<(NodeId, u64)> = self
            .world
            .oracle
            .writes
            .iter()
            .filter(|(&(origin, seq), rec)| {
                rec.durability > 0 && rec.acked_at_level && !self.survives(origin, seq, &rec.key)
            })
            .map(|(&id, _)| id)
            .collect();
        lost.sort();
        lost
    }

    /// Live nodes whose membership does not show every other live node's
    /// current life as up, or shows more: (node, missing, extra).
    pub fn membership_gaps(&self) -> Vec<(usize, Vec<NodeId>, Vec<NodeId>)> {
        let w = self.world;
        let live: BTreeSet<NodeId> = w.nodes.iter().filter(|n| n.up).map(|n| n.origin).collect();
        (0..w.nodes.len())
            .filter(|&i| w.nodes[i].up)
            .filter_map(|i| {
                let n = &w.nodes[i];
                let known: BTreeSet<NodeId> = n.core.members().keys().copied().collect();
                let missing: Vec<NodeId> =
                    live.iter().filter(|o| **o != n.origin && !known.contains(o)).copied().collect();
                let extra: Vec<NodeId> = known.difference(&live).copied().collect();
                (!missing.is_empty() || !extra.is_empty()).then_some((i, missing, extra))
            })
            .collect()
    }

    /// Read-your-writes violations seen during the run.
    pub fn ryw_violations(&self) -> u64 {
        self.world.tallies.ryw_violations
    }

    /// Keys a full transfer's drop rule removed although the sender had
    /// sent them in that transfer: a transfer judged whole that was not.
    pub fn live_keys_dropped(&self) -> &[String] {
        &self.world.tallies.live_keys_dropped
    }
}
