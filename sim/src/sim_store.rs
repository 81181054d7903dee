//! The simulator's store: the same writes as the node's store (the shared
//! `geocache_node::write` code), over a deterministic LRU with the same byte
//! budget and weights, with expiry against virtual time.

use foldhash::fast::FixedState;
use geocache_crdt::{Delta, DeltaError, Key, NodeId, Register};
use geocache_node::store::entry_weight_bytes;
use geocache_node::write::{
    local_write, reclaim_at_ms, remote_write, RemoteOutcome, Write, WriteError, WriteOutcome, Writer,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

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
}

struct Entry {
    register: Arc<Register>,
    used: u64,
    weight: u64,
}

/// A deterministic LRU of registers.
pub struct SimStore {
    /// A fixed-seed hash map: fast, and its order is the same on every run;
    /// anything that iterates it for output sorts first.
    entries: HashMap<Key, Entry, FixedState>,
    lru: BTreeMap<u64, Key>,
    tick: u64,
    bytes: u64,
    budget_bytes: u64,
    writer: Mutex<Writer>,
    broken_merge: bool,
    /// Counters.
    pub counts: StoreCounts,
}

impl SimStore {
    /// An empty store writing as `origin`.
    pub fn new(origin: NodeId, budget_bytes: u64, broken_merge: bool) -> SimStore {
        SimStore {
            entries: HashMap::with_hasher(FixedState::default()),
            lru: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            budget_bytes,
            writer: Mutex::new(Writer::new(origin, 60_000, 600_000)),
            broken_merge,
            counts: StoreCounts::default(),
        }
    }

    fn touch(&mut self, key: &Key) {
        if let Some(e) = self.entries.get_mut(key) {
            self.lru.remove(&e.used);
            self.tick += 1;
            e.used = self.tick;
            self.lru.insert(self.tick, key.clone());
        }
    }

    fn put(&mut self, key: Key, register: Arc<Register>) {
        let weight = entry_weight_bytes(&key, &register);
        self.tick += 1;
        if let Some(old) = self.entries.insert(key.clone(), Entry { register, used: self.tick, weight }) {
            self.lru.remove(&old.used);
            self.bytes -= old.weight;
        }
        self.lru.insert(self.tick, key);
        self.bytes += weight;
        while self.bytes > self.budget_bytes {
            let Some((_, victim)) = self.lru.pop_first() else { break };
            if let Some(e) = self.entries.remove(&victim) {
                self.bytes -= e.weight;
                self.counts.evictions += 1;
            }
        }
    }

    /// The visible value, touching it for LRU.
    pub fn get(&mut self, key: &Key, now_ms: u64) -> Option<Arc<Register>> {
        let found = self.entries.get(key).map(|e| e.register.clone()).filter(|r| r.is_visible_at(now_ms));
        if found.is_some() {
            self.counts.hits += 1;
            self.touch(key);
        } else {
            self.counts.misses += 1;
        }
        found
    }

    /// The register held, if any (no LRU touch).
    pub fn peek(&self, key: &Key) -> Option<&Arc<Register>> {
        self.entries.get(key).map(|e| &e.register)
    }

    /// A local write, as the node's store does it.
    ///
    /// # Errors
    ///
    /// [`WriteError`]; nothing changed.
    pub fn apply_local(&mut self, write: Write, now_ms: u64) -> Result<WriteOutcome, WriteError> {
        let current = self.entries.get(&write.key).map(|e| e.register.clone());
        let key = write.key.clone();
        let outcome = local_write(&self.writer, current, write, now_ms)?;
        self.put(key, outcome.register.clone());
        Ok(outcome)
    }

    /// A replicated write, as the node's store does it.
    ///
    /// # Errors
    ///
    /// [`DeltaError`]; nothing changed.
    pub fn apply_remote(&mut self, delta: &Delta, now_ms: u64) -> Result<RemoteOutcome, DeltaError> {
        let skew = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(delta.meta().stamp.hlc, now_ms)
            .err();
        let current = self.entries.get(&delta.key).map(|e| e.register.clone());
        if self.broken_merge {
            if let Some(register) = current {
                return Ok(RemoteOutcome { register, changed: false, conflict: false, skew });
            }
        }
        let outcome = remote_write(current, delta, now_ms, skew)?;
        if outcome.conflict {
            self.counts.conflicts += 1;
        }
        if outcome.changed {
            self.put(delta.key.clone(), outcome.register.clone());
        }
        Ok(outcome)
    }

    /// Removes entries past their reclaim time at `now_ms`, as moka's
    /// expiry does in the node's store.
    pub fn sweep(&mut self, now_ms: u64) {
        let retention = self.writer.lock().unwrap_or_else(|e| e.into_inner()).tombstone_ttl_ms();
        let mut expired: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| reclaim_at_ms(&e.register, retention).is_some_and(|at| at <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        expired.sort();
        for k in expired {
            if let Some(e) = self.entries.remove(&k) {
                self.lru.remove(&e.used);
                self.bytes -= e.weight;
                self.counts.expirations += 1;
            }
        }
    }

    /// Every register held, in key order.
    pub fn registers(&self) -> impl Iterator<Item = (&Key, &Arc<Register>)> {
        let mut all: Vec<(&Key, &Arc<Register>)> =
            self.entries.iter().map(|(k, e)| (k, &e.register)).collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// Merges a register from a full transfer.
    pub fn merge_register(&mut self, key: &Key, incoming: &Register) {
        let next = match self.entries.get(key) {
            Some(e) => e.register.merged(incoming),
            None => incoming.clone(),
        };
        if self.entries.get(key).map(|e| &*e.register) != Some(&next) {
            self.put(key.clone(), Arc::new(next));
        }
    }

    /// The drop rule of a full transfer.
    pub fn drop_if_dot(&mut self, key: &Key, dot: geocache_crdt::Dot) {
        if self.entries.get(key).is_some_and(|e| e.register.meta.dot == dot) {
            if let Some(e) = self.entries.remove(key) {
                self.lru.remove(&e.used);
                self.bytes -= e.weight;
            }
        }
    }

    /// Bytes held by the budget's measure.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}
