//! The simulator's store: the same writes as the node's store (the shared
//! `geocache_node::write` code), over a deterministic LRU with the same byte
//! budget and weights, with expiry against virtual time.

use geocache_crdt::{Delta, DeltaBody, DeltaError, Key, NodeId, Register};
use geocache_node::entry::Entry;
use geocache_node::forgotten::Forgotten;
use geocache_node::store_key;
use geocache_node::tombstone_space::split_budget;
use geocache_node::weight::entry_weight_bytes;
use geocache_node::write::{
    local_write, reclaim_at_ms, remote_write, RemoteOutcome, Write, WriteError, WriteOutcome, Writer,
};
use std::sync::{Arc, Mutex};

use crate::key_space::{KeyIndex, KeySpace};
use crate::pack_cache::PackCache;
use crate::scenario::DebugSpec;

/// Counters of one store.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreCounts {
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found none.
    pub misses: u64,
    /// Entries evicted for the budget.
    pub evictions: u64,
    /// Entries reclaimed on expiry.
    pub expirations: u64,
    /// Replicated writes concurrent with the value held.
    pub conflicts: u64,
    /// Tombstones evicted before their retention (their space was full).
    pub tombstones_evicted_early: u64,
}

const NIL: u32 = u32::MAX;
/// The node's default tombstone retention, 10 minutes.
pub const TOMBSTONE_TTL_MS: u64 = 600_000;

/// One entry, in a slab, linked into the recency list.
struct Slot {
    key: Key,
    entry: Entry,
    weight: u64,
    /// Toward the most recently used end.
    newer: u32,
    /// Toward the least recently used end.
    older: u32,
}

/// One recency list, with the bytes of its entries and its share of the
/// budget.
#[derive(Clone, Copy)]
struct Recency {
    newest: u32,
    oldest: u32,
    bytes: u64,
    budget_bytes: u64,
}

impl Recency {
    fn new(budget_bytes: u64) -> Recency {
        Recency { newest: NIL, oldest: NIL, bytes: 0, budget_bytes }
    }
}

/// A deterministic LRU of registers: an index from key to slot and
/// intrusive lists in recency order, so a touch is O(1). Values and
/// tombstones are two lists, each within its share of the budget, as the
/// node's store keeps them in two maps (`tombstone_space.rs`).
pub struct SimStore {
    /// By key number for the run's keys; anything that iterates it for
    /// output sorts first.
    entries: KeyIndex,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Values, then tombstones.
    lists: [Recency; 2],
    /// No entry is due for reclaim before this: most sweeps stop here.
    reclaim_floor_ms: u64,
    /// How long deletes and expired values are kept (the writer's).
    retention_ms: u64,
    writer: Mutex<Writer>,
    /// The origin it writes as.
    origin: NodeId,
    broken_merge: bool,
    lww_counters: bool,
    /// What it removed, as the node's store remembers it.
    forgotten: Forgotten,
    /// Removals so far (evictions, expirations, drops), and the count at
    /// each key's last one: the transfer checker excuses a key the sender
    /// lost during the transfer (see `removed_since`).
    removals: u64,
    last_removed: std::collections::HashMap<Key, u64>,
    /// Counters.
    pub counts: StoreCounts,
}

impl SimStore {
    /// An empty store writing as `origin`.
    pub fn new(origin: NodeId, budget_bytes: u64, debug: &DebugSpec, keys: Arc<KeySpace>) -> SimStore {
        SimStore {
            entries: KeyIndex::new(keys),
            slots: Vec::new(),
            free: Vec::new(),
            lists: {
                let (values, tombstones) = split_budget(budget_bytes);
                [Recency::new(values), Recency::new(tombstones)]
            },
            forgotten: Forgotten::for_budget(budget_bytes),
            removals: 0,
            last_removed: std::collections::HashMap::new(),
            reclaim_floor_ms: u64::MAX,
            retention_ms: TOMBSTONE_TTL_MS,
            writer: Mutex::new(Writer::new(origin, 60_000, TOMBSTONE_TTL_MS)),
            origin,
            broken_merge: debug.broken_merge,
            lww_counters: debug.lww_counters,
            counts: StoreCounts::default(),
        }
    }

    /// The list slot `i` is in, by the kind of its entry: an entry that
    /// changes kind is unlinked before it changes and linked after.
    fn list_of(&mut self, i: u32) -> &mut Recency {
        let tombstone = self.slots[i as usize].entry.is_tombstone();
        &mut self.lists[usize::from(tombstone)]
    }

    fn unlink(&mut self, i: u32) {
        let (newer, older) = (self.slots[i as usize].newer, self.slots[i as usize].older);
        if newer == NIL {
            self.list_of(i).newest = older;
        } else {
            self.slots[newer as usize].older = older;
        }
        if older == NIL {
            self.list_of(i).oldest = newer;
        } else {
            self.slots[older as usize].newer = newer;
        }
    }

    fn link_newest(&mut self, i: u32) {
        let newest = self.list_of(i).newest;
        self.slots[i as usize].newer = NIL;
        self.slots[i as usize].older = newest;
        if newest != NIL {
            self.slots[newest as usize].newer = i;
        }
        let list = self.list_of(i);
        list.newest = i;
        if list.oldest == NIL {
            list.oldest = i;
        }
    }

    fn touch(&mut self, i: u32) {
        if self.list_of(i).newest != i {
            self.unlink(i);
            self.link_newest(i);
        }
    }

    fn remove_slot(&mut self, i: u32) -> Key {
        let removed = &self.slots[i as usize];
        if traced(&removed.key) {
            eprintln!(
                "trace t={} ms {} at {}: removed (evicted, expired or dropped)",
                trace_ms(),
                removed.key,
                self.origin
            );
        }
        self.forgotten.remember(&store_key::pack(&removed.key), removed.entry.epoch().hlc.as_u64());
        self.unlink(i);
        let weight = self.slots[i as usize].weight;
        self.list_of(i).bytes -= weight;
        self.free.push(i);
        let key = self.slots[i as usize].key.clone();
        self.entries.remove(&key);
        self.removals += 1;
        self.last_removed.insert(key.clone(), self.removals);
        key
    }

    /// Removals so far: a mark for [`removed_since`](Self::removed_since).
    pub fn removal_mark(&self) -> u64 {
        self.removals
    }

    /// Whether `key` was removed (evicted, expired or dropped) after `mark`.
    pub fn removed_since(&self, key: &Key, mark: u64) -> bool {
        self.last_removed.get(key).is_some_and(|&at| at > mark)
    }

    fn put(&mut self, key: Key, entry: Entry) {
        let at = self.entries.get(&key);
        self.put_at(at, key, entry);
    }

    /// As `put`, with the key's slot already looked up (`None`: absent).
    fn put_at(&mut self, at: Option<u32>, key: Key, entry: Entry) {
        if traced(&key) {
            let r = entry.to_register();
            eprintln!(
                "trace t={} ms {key} at {}: holds stamp {} dot {}/{}",
                trace_ms(),
                self.origin,
                r.meta.stamp,
                r.meta.dot.origin,
                r.meta.dot.seq
            );
        }
        let weight = entry_weight_bytes(store_key::packed_len(&key), &entry);
        if let Some(reclaim) = reclaim_at_ms(&entry, self.retention_ms) {
            self.reclaim_floor_ms = self.reclaim_floor_ms.min(reclaim);
        }
        match at {
            Some(i) => {
                // Out of its list, changed, into the list of its kind.
                self.unlink(i);
                let old_weight = self.slots[i as usize].weight;
                self.list_of(i).bytes -= old_weight;
                let slot = &mut self.slots[i as usize];
                slot.entry = entry;
                slot.weight = weight;
                self.list_of(i).bytes += weight;
                self.link_newest(i);
            }
            None => {
                let slot = Slot { key: key.clone(), entry, weight, newer: NIL, older: NIL };
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = slot;
                        i
                    }
                    None => {
                        self.slots.push(slot);
                        (self.slots.len() - 1) as u32
                    }
                };
                self.entries.insert(key, i);
                self.link_newest(i);
                self.list_of(i).bytes += weight;
            }
        }
        for (list, tombstones) in [(0, false), (1, true)] {
            while self.lists[list].bytes > self.lists[list].budget_bytes && self.lists[list].oldest != NIL {
                let victim = self.lists[list].oldest;
                self.remove_slot(victim);
                if tombstones {
                    self.counts.tombstones_evicted_early += 1;
                } else {
                    self.counts.evictions += 1;
                }
            }
        }
    }

    fn held(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key).map(|i| &self.slots[i as usize].entry)
    }

    /// The visible value, touching it for LRU.
    pub fn get(&mut self, key: &Key, now_ms: u64) -> Option<Entry> {
        let index = self.entries.get(key);
        let found = index.map(|i| self.slots[i as usize].entry.clone()).filter(|r| r.is_visible_at(now_ms));
        match (found.is_some(), index) {
            (true, Some(i)) => {
                self.counts.hits += 1;
                self.touch(i);
            }
            _ => self.counts.misses += 1,
        }
        found
    }

    /// The register held, if any (no LRU touch).
    pub fn peek(&self, key: &Key) -> Option<&Entry> {
        self.held(key)
    }

    /// A local write, as the node's store does it.
    ///
    /// # Errors
    ///
    /// [`WriteError`]; nothing changed.
    pub fn apply_local(&mut self, write: Write, now_ms: u64) -> Result<WriteOutcome, WriteError> {
        let at = self.entries.get(&write.key);
        let current = at.map(|i| self.slots[i as usize].entry.clone());
        let key = write.key.clone();
        let outcome = local_write(&self.writer, current.as_ref(), write, now_ms)?;
        self.put_at(at, key, outcome.entry.clone());
        Ok(outcome)
    }

    /// A replicated write, as the node's store does it.
    ///
    /// # Errors
    ///
    /// [`DeltaError`]; nothing changed.
    pub fn apply_remote(
        &mut self,
        delta: &Delta,
        now_ms: u64,
        packs: &mut PackCache,
    ) -> Result<RemoteOutcome, DeltaError> {
        let meta = delta.meta().ok_or(DeltaError::Omitted)?;
        let skew =
            self.writer.lock().unwrap_or_else(|e| e.into_inner()).observe(meta.stamp.hlc, now_ms).err();
        let at = self.entries.get(&delta.key);
        let current = at.map(|i| self.slots[i as usize].entry.clone());
        if self.broken_merge {
            if let Some(entry) = current {
                let register = entry.register_arc();
                return Ok(RemoteOutcome { register, changed: false, conflict: false, skew, lost_own: None });
            }
        }
        if let (true, Some(entry), DeltaBody::Register(incoming)) = (self.lww_counters, &current, &delta.body)
        {
            if entry.counter().is_some()
                && incoming.counter().is_some()
                && entry.epoch() == incoming.meta.epoch
            {
                if incoming.meta.stamp <= entry.stamp() {
                    return Ok(RemoteOutcome {
                        register: entry.register_arc(),
                        changed: false,
                        conflict: false,
                        skew,
                        lost_own: None,
                    });
                }
                self.put_at(at, delta.key.clone(), packs.entry(incoming));
                return Ok(RemoteOutcome {
                    register: incoming.clone(),
                    changed: true,
                    conflict: false,
                    skew,
                    lost_own: None,
                });
            }
        }
        let outcome = remote_write(self.origin, current.as_ref(), delta, now_ms, skew)?;
        if traced(&delta.key) {
            eprintln!(
                "trace t={} ms {} at {}: delta {}/{} stamp {} changed {} held {}",
                trace_ms(),
                delta.key,
                self.origin,
                delta.origin,
                delta.seq,
                meta.stamp,
                outcome.changed,
                current.is_some()
            );
        }
        if outcome.conflict {
            self.counts.conflicts += 1;
        }
        let forgotten =
            current.is_none() && self.forgotten.covers(&store_key::pack(&delta.key), meta.epoch.hlc.as_u64());
        if outcome.changed && !forgotten {
            self.put_at(at, delta.key.clone(), packs.entry(&outcome.register));
        }
        Ok(outcome)
    }

    /// Removes entries past their reclaim time at `now_ms`, as moka's
    /// expiry does in the node's store.
    pub fn sweep(&mut self, now_ms: u64) {
        if now_ms < self.reclaim_floor_ms {
            return;
        }
        let retention = self.retention_ms;
        self.reclaim_floor_ms = self
            .entries
            .slots()
            .filter_map(|i| reclaim_at_ms(&self.slots[i as usize].entry, retention))
            .filter(|&at| at > now_ms)
            .min()
            .unwrap_or(u64::MAX);
        let mut expired: Vec<u32> = self
            .entries
            .slots()
            .filter(|&i| {
                reclaim_at_ms(&self.slots[i as usize].entry, retention).is_some_and(|at| at <= now_ms)
            })
            .collect();
        expired.sort_unstable();
        for i in expired {
            self.remove_slot(i);
            self.counts.expirations += 1;
        }
    }

    /// How many registers are held (tombstones included).
    pub fn held_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Every register held, in key order.
    pub fn registers(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        let mut all: Vec<(&Key, &Entry)> = self
            .entries
            .slots()
            .map(|i| (&self.slots[i as usize].key, &self.slots[i as usize].entry))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// Merges a register from a full transfer.
    /// With `forgotten_if_absent`, not when the key is not held.
    pub fn merge_register(&mut self, key: &Key, incoming: &Register, forgotten_if_absent: bool) {
        let next = match self.held(key) {
            Some(e) => Entry::from_register(Arc::new(e.to_register().merged(incoming))),
            None if forgotten_if_absent => return,
            None if self.forgotten.covers(&store_key::pack(key), incoming.meta.epoch.hlc.as_u64()) => return,
            None => Entry::from_register(Arc::new(incoming.clone())),
        };
        if self.held(key) != Some(&next) {
            self.put(key.clone(), next);
        }
    }

    /// The drop rule of a full transfer.
    /// Whether it removed it.
    pub fn drop_if_dot(&mut self, key: &Key, dot: geocache_crdt::Dot) -> bool {
        let Some(i) = self.entries.get(key).filter(|&i| self.slots[i as usize].entry.dot() == dot) else {
            return false;
        };
        self.remove_slot(i);
        true
    }

    /// Bytes held by the budget's measure.
    pub fn bytes(&self) -> u64 {
        self.lists[0].bytes + self.lists[1].bytes
    }
}

/// Whether `key` is the one `GEOCACHE_SIM_TRACE_KEY` names: every change
/// to it at every node is then printed to stderr, to follow a failing seed.
fn traced(key: &Key) -> bool {
    traced_key().is_some_and(|k| key.to_string() == k)
}

/// The key `GEOCACHE_SIM_TRACE_KEY` names, read once; `None` when not
/// tracing.
pub fn traced_key() -> Option<&'static str> {
    static TRACED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TRACED.get_or_init(|| std::env::var("GEOCACHE_SIM_TRACE_KEY").ok()).as_deref()
}

/// Virtual time for the trace, set by the world at every event.
pub static TRACE_NOW_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn trace_ms() -> u64 {
    TRACE_NOW_US.load(std::sync::atomic::Ordering::Relaxed) / 1_000
}
