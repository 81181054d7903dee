//! The store: a bounded, expiring map from keys to CRDT registers.
//!
//! Every node serves reads and writes from its own [`Store`]. Local writes
//! go through [`Store::apply_local`], which ticks the node's hybrid logical
//! clock, bumps the version vector, checks the write's condition
//! (compare-and-set) and returns the [`Delta`] to replicate; replicated
//! writes go through [`Store::apply_remote`].
//!
//! The map is moka, keyed by the packed key (`store_key`) and holding
//! packed entries (`entry`): one allocation for the key and one for the
//! register and its value. Each update of a key reads the entry held, runs
//! the pure write (`write.rs`) and inserts the result under one of
//! [`LOCK_STRIPE_COUNT`] striped locks chosen by the key's hash, so
//! concurrent writes to one key serialize (a compare-and-set is
//! linearizable at this node) at the cost of one lookup and one insert,
//! without moka's compute machinery.
//!
//! Tombstones live in a second map with a share of the budget of their own
//! (`tombstone_space.rs`), so values pressing on the budget never evict a
//! delete before its retention. A key is in one map or the other; reads of
//! values look only at the first.

use geocache_crdt::{Delta, DeltaError, Doc, Dot, Key, NodeId, Register};
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::config::EvictionKind;
pub use crate::entry::{Entry, ValueRef};
use crate::forgotten::Forgotten;
use crate::metrics::NamespaceLabels;
use crate::persistence::{Disk, Loaded};
use crate::store_key;
use crate::strong_register::ChosenVersion;
use crate::tombstone_space::split_budget;
pub use crate::weight::entry_weight_bytes;
use crate::write::{local_write, reclaim_at_ms, remote_write, Writer};
pub use crate::write::{Condition, RemoteOutcome, Ttl, Write, WriteError, WriteOp, WriteOutcome};

/// Locks that serialize updates of one key: far more than cores, so two
/// writes to different keys rarely wait on each other.
pub const LOCK_STRIPE_COUNT: usize = 1_024;

/// foldhash, seeded at random per process: several times faster than the
/// default SipHash on short keys, and still resistant to keys crafted to
/// collide, which matters because keys come from clients.
type KeyHasher = foldhash::fast::RandomState;

/// The map's key: the packed key (`store_key`).
type MapKey = Box<[u8]>;

/// How a [`Store`] is set up.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The node that originates local writes.
    pub node: NodeId,
    /// The byte budget: keys, values and per-entry overhead.
    pub max_memory_bytes: u64,
    /// Eviction policy.
    pub eviction: EvictionKind,
    /// How long a delete is remembered.
    pub tombstone_ttl_ms: u64,
    /// How far ahead a replicated stamp may be before it is reported.
    pub max_clock_skew_ms: u64,
}

/// Counters the store keeps; the metrics endpoint exports them.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    /// Reads that found a visible value.
    pub hits: Counter,
    /// Reads that found nothing, a tombstone or an expired entry.
    pub misses: Counter,
    /// Entries evicted to stay within the byte budget.
    pub evictions: Counter,
    /// Entries removed because they expired.
    pub expirations: Counter,
    /// Tombstones evicted before their retention ended, because deletes
    /// outran the tombstones' space (`tombstone_space.rs`).
    pub tombstones_evicted_early: Counter,
    /// Replicated stamps further ahead than the maximum clock skew.
    pub clock_skew_errors: Counter,
    /// Replicated writes concurrent with the value held (one was lost to
    /// last-writer-wins, or merged for documents).
    pub conflicts: Counter,
    /// Compare-and-set writes (and add-if-absent) that succeeded here and
    /// then lost to a concurrent write made elsewhere, by namespace.
    pub cas_lost: Family<NamespaceLabels, Counter>,
}

/// Most keys whose last conditional write here is remembered, and most
/// lost ones reported: each for [`CAS_TRACKED_FOR`]. Past the bound, the
/// oldest go (a lost CAS is then counted and reported only if its key is
/// among those kept).
pub const CAS_TRACKED_COUNT_MAX: u64 = 16_384;
/// How long a conditional write is watched, and a lost one reported: far
/// beyond the replication lag between any two regions.
pub const CAS_TRACKED_FOR: Duration = Duration::from_secs(600);

/// A bounded, expiring map of keys for the compare-and-set bookkeeping.
fn cas_tracking<V: Clone + Send + Sync + 'static>() -> Cache<MapKey, V> {
    Cache::builder().max_capacity(CAS_TRACKED_COUNT_MAX).time_to_live(CAS_TRACKED_FOR).build()
}

struct RegisterExpiry {
    clock: Arc<dyn Clock>,
    tombstone_ttl_ms: u64,
}

impl RegisterExpiry {
    /// moka reclaims an entry at `reclaim_at_ms`: reads miss from the
    /// register's own expiry, but the entry is kept a retention longer.
    fn remaining(&self, entry: &Entry) -> Option<Duration> {
        let at = reclaim_at_ms(entry, self.tombstone_ttl_ms)?;
        Some(Duration::from_millis(at.saturating_sub(self.clock.now_ms())))
    }
}

impl Expiry<MapKey, Entry> for RegisterExpiry {
    fn expire_after_create(&self, _key: &MapKey, value: &Entry, _at: Instant) -> Option<Duration> {
        self.remaining(value)
    }

    fn expire_after_update(
        &self,
        _key: &MapKey,
        value: &Entry,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(value)
    }
}

fn weigh(key: &MapKey, entry: &Entry) -> u32 {
    u32::try_from(entry_weight_bytes(key.len(), entry)).unwrap_or(u32::MAX)
}

/// What an entry leaving either map is told to: the data dir, and the
/// forgotten table.
#[derive(Clone)]
struct Removals {
    forgotten: Arc<Forgotten>,
    disk: Option<Arc<Disk>>,
}

impl Removals {
    /// The eviction listener of one map, counting evictions for the budget
    /// in `evicted` and expirations in `expired`.
    fn listener(
        &self,
        evicted: Counter,
        expired: Counter,
    ) -> impl Fn(Arc<MapKey>, Entry, RemovalCause) + Send + Sync + 'static {
        let this = self.clone();
        move |key, entry, cause| {
            match cause {
                RemovalCause::Size => evicted.inc(),
                RemovalCause::Expired => expired.inc(),
                RemovalCause::Explicit => 0,
                RemovalCause::Replaced => return,
            };
            // moka holds the key's lock from the removal through this
            // call, so a write of the same key, which inserts and then
            // writes its disk record, cannot be undone here.
            if let Some(disk) = &this.disk {
                disk.mark_changed(&key[..], None);
            }
            this.forgotten.remember(&key[..], entry.epoch().hlc.as_u64());
        }
    }
}

/// Which map an entry was found in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Space {
    Values,
    Tombstones,
}

/// The node's entries. Cheap to share behind an `Arc`; every method takes
/// `&self`.
pub struct Store {
    cache: Cache<MapKey, Entry, KeyHasher>,
    /// Tombstones, in their own share of the budget.
    tombstones: Cache<MapKey, Entry, KeyHasher>,
    /// Whether `tombstones` ever held anything: until then, lookups skip it.
    any_tombstone: AtomicBool,
    stripes: Box<[Mutex<()>]>,
    stripe_hasher: KeyHasher,
    clock: Arc<dyn Clock>,
    writer: Mutex<Writer>,
    node: NodeId,
    stats: StoreStats,
    forgotten: Arc<Forgotten>,
    /// The data dir every change is written through to, if any.
    disk: Option<Arc<Disk>>,
    /// Keys of this node's recent conditional writes, with the write's
    /// sequence number: how a compare-and-set that lost is recognised.
    conditional: Cache<MapKey, u64>,
    /// Keys whose last compare-and-set here lost, with the ETag of the
    /// write that lost: reported on the next reads, until the next local
    /// write of the key.
    lost_cas: Cache<MapKey, String>,
    /// Whether `lost_cas` ever held anything: until then, reads and
    /// writes skip it (a lookup per request on the hot path otherwise).
    any_cas_lost: AtomicBool,
}

impl Store {
    /// An empty store reading time from `clock`.
    pub fn new(config: StoreConfig, clock: Arc<dyn Clock>) -> Store {
        Store::build(config, clock, None)
    }

    /// A store that writes every change through to `disk` and continues
    /// the life `loaded` from it (its sequence and HLC floor). Its
    /// entries come back through [`Store::restore`].
    pub fn with_disk(config: StoreConfig, clock: Arc<dyn Clock>, disk: Arc<Disk>, loaded: &Loaded) -> Store {
        let store = Store::build(config, clock, Some(disk));
        // A new origin's sequence is 0 there, but its stamps still order
        // after every one the data dir holds.
        store.writer().resume(loaded.resume.own_seq, loaded.hlc_floor);
        store
    }

    fn build(config: StoreConfig, clock: Arc<dyn Clock>, disk: Option<Arc<Disk>>) -> Store {
        let stats = StoreStats::default();
        let policy = match config.eviction {
            EvictionKind::Lru => EvictionPolicy::lru(),
            EvictionKind::Tinylfu => EvictionPolicy::tiny_lfu(),
        };
        let forgotten = Arc::new(Forgotten::for_budget(config.max_memory_bytes));
        let (capacity, tombstone_space) = split_budget(config.max_memory_bytes);
        let expiry = || RegisterExpiry { clock: clock.clone(), tombstone_ttl_ms: config.tombstone_ttl_ms };
        let removals = Removals { forgotten: forgotten.clone(), disk: disk.clone() };
        let cache = Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(policy)
            .weigher(weigh)
            .expire_after(expiry())
            .eviction_listener(removals.listener(stats.evictions.clone(), stats.expirations.clone()))
            .build_with_hasher(KeyHasher::default());
        // Oldest first: a tombstone is never read, so LRU is the order of
        // the deletes.
        let tombstones = Cache::builder()
            .max_capacity(tombstone_space)
            .eviction_policy(EvictionPolicy::lru())
            .weigher(weigh)
            .expire_after(expiry())
            .eviction_listener(
                removals.listener(stats.tombstones_evicted_early.clone(), stats.expirations.clone()),
            )
            .build_with_hasher(KeyHasher::default());
        Store {
            cache,
            tombstones,
            any_tombstone: AtomicBool::new(false),
            stripes: (0..LOCK_STRIPE_COUNT).map(|_| Mutex::new(())).collect(),
            stripe_hasher: KeyHasher::default(),
            clock,
            writer: Mutex::new(Writer::new(config.node, config.max_clock_skew_ms, config.tombstone_ttl_ms)),
            node: config.node,
            stats,
            forgotten,
            disk,
            conditional: cas_tracking(),
            lost_cas: cas_tracking(),
            any_cas_lost: AtomicBool::new(false),
        }
    }

    /// The ETag of this node's compare-and-set of `key` that succeeded and
    /// then lost to a concurrent write made elsewhere, when that is the
    /// key's last news (`X-Geocache-Conflict`).
    pub fn lost_cas(&self, key: &Key) -> Option<String> {
        if !self.any_cas_lost.load(Ordering::Relaxed) {
            return None;
        }
        self.lost_cas.get(&store_key::pack(key)[..])
    }

    /// The data dir this store writes through to.
    pub fn disk(&self) -> Option<&Arc<Disk>> {
        self.disk.as_ref()
    }

    /// The node that originates this store's local writes.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The store's counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// The current time by the store's clock, in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The value of `key` if one is visible now (not deleted, not expired).
    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.get_in(&key.namespace, &key.name)
    }

    /// The value of the key `name` of `namespace`, as [`Store::get`].
    pub fn get_in(&self, namespace: &str, name: &[u8]) -> Option<Entry> {
        let now = self.clock.now_ms();
        match self.cache.get(&store_key::pack_parts(namespace, name)[..]).filter(|e| e.is_visible_at(now)) {
            Some(entry) => {
                self.stats.hits.inc();
                Some(entry)
            }
            None => {
                self.stats.misses.inc();
                None
            }
        }
    }

    /// Whether `key` is held (tombstones and expired entries included),
    /// without counting as a use of it.
    pub fn holds(&self, key: &Key) -> bool {
        crate::persistence::HeldEntries::holds(self, &store_key::pack(key))
    }

    /// The entry of `key` as held, tombstones and expired entries
    /// included; for replication, not for reads.
    pub fn register(&self, key: &Key) -> Option<Entry> {
        self.held(&store_key::pack(key)).map(|(e, _)| e)
    }

    /// Entries held (tombstones and not yet reclaimed expired entries
    /// included). Approximate until pending maintenance has run.
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count() + self.tombstones.entry_count()
    }

    /// Tombstones held (approximate, as [`Store::entry_count`]).
    pub fn tombstone_count(&self) -> u64 {
        self.tombstones.entry_count()
    }

    /// Entries of `namespace` visible now (neither deleted nor expired):
    /// what RESP's `DBSIZE` answers. [`Store::entry_count`] counts every
    /// namespace, tombstones and expired entries kept for their retention
    /// too, so this walks the cache instead: O(entries), without copying
    /// keys or entries.
    pub fn visible_entry_count(&self, namespace: &str) -> u64 {
        let now = self.clock.now_ms();
        let prefix = store_key::namespace_prefix(namespace);
        self.cache.iter().filter(|(key, entry)| entry.is_visible_at(now) && key.starts_with(&prefix)).count()
            as u64
    }

    /// Bytes held by the budget's measure.
    pub fn weighted_size_bytes(&self) -> u64 {
        self.cache.weighted_size() + self.tombstones.weighted_size()
    }

    /// Runs moka's pending maintenance (evictions, expirations) now, so the
    /// counts above are exact.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
        self.tombstones.run_pending_tasks();
    }

    /// The node's clock: its last reading, issued or observed (a peer's
    /// stamp beyond the skew never moves it).
    pub fn clock(&self) -> geocache_crdt::Hlc {
        self.writer().clock()
    }

    /// The last sequence number this origin used.
    pub fn seq(&self) -> u64 {
        self.writer().seq()
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding this lock cannot leave the clock or the
        // sequence in a state worse than "advanced", so poisoning is moot.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry held for `packed` in either map, and which.
    fn held(&self, packed: &[u8]) -> Option<(Entry, Space)> {
        if let Some(e) = self.cache.get(packed) {
            return Some((e, Space::Values));
        }
        if !self.any_tombstone.load(Ordering::Relaxed) {
            return None;
        }
        self.tombstones.get(packed).map(|e| (e, Space::Tombstones))
    }

    /// Keeps `entry` for `packed` in the map of its kind, and takes it out
    /// of the map it was `found` in if that is the other one. Under the
    /// key's stripe. The new one goes in first, so a reader never finds
    /// the key in neither (a full transfer or a fill would take it for
    /// absent); one that finds both reads the values' map, the older, as
    /// it would have a moment before.
    fn keep(&self, packed: &[u8], entry: Entry, found: Option<Space>) {
        let space = if entry.is_tombstone() { Space::Tombstones } else { Space::Values };
        match space {
            Space::Values => self.cache.insert(MapKey::from(packed), entry),
            Space::Tombstones => {
                self.any_tombstone.store(true, Ordering::Relaxed);
                self.tombstones.insert(MapKey::from(packed), entry);
            }
        }
        match found {
            Some(Space::Values) if space == Space::Tombstones => self.cache.invalidate(packed),
            Some(Space::Tombstones) if space == Space::Values => self.tombstones.invalidate(packed),
            _ => {}
        }
    }

    /// The lock that serializes updates of the key packed as `packed`.
    fn stripe(&self, packed: &[u8]) -> MutexGuard<'_, ()> {
        let i = (self.stripe_hasher.hash_one(packed) as usize) % self.stripes.len();
        // The lock guards no data, so a panic elsewhere cannot poison it.
        self.stripes[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a local write: checks its condition, stamps it, merges it and
    /// returns the delta to replicate.
    ///
    /// # Errors
    ///
    /// [`WriteError`]; the store is then unchanged and no sequence number is
    /// used, so the origin's sequence stays dense.
    pub fn apply_local(&self, write: Write) -> Result<WriteOutcome, WriteError> {
        if let WriteOp::Patch(patch) = &write.op {
            Doc::check_patch(patch)?;
        }
        let now = self.clock.now_ms();
        let packed = store_key::pack(&write.key);
        let conditional = !matches!(write.condition, Condition::Always);
        let _update = self.stripe(&packed);
        let (current, found) = self.held(&packed).unzip();
        let mut outcome = local_write(&self.writer, current.as_ref(), write, now)?;
        self.keep(&packed, outcome.entry.clone(), found);
        if self.any_cas_lost.load(Ordering::Relaxed) {
            self.lost_cas.invalidate(&packed[..]);
        }
        // An unconditional write needs no entry removed: a loss is matched
        // by the write's sequence number.
        if conditional {
            self.conditional.insert(MapKey::from(&packed[..]), outcome.delta.seq);
        }
        // After the insert and under the key's stripe: the disk holds each
        // key's writes in the order memory does, and before the delta
        // leaves this node.
        if let Some(disk) = &self.disk {
            outcome.disk_position = disk.write_local(&packed, &outcome.whole_delta(), now);
        }
        Ok(outcome)
    }

    /// This node's clock for a strong change: past every stamp it issued
    /// or saw, and not behind the wall clock.
    pub fn hlc_now(&self) -> geocache_crdt::Hlc {
        let now = self.clock.now_ms();
        let last = self.writer.lock().unwrap_or_else(|e| e.into_inner()).clock();
        last.max(geocache_crdt::Hlc::new(now, 0))
    }

    /// Keeps a version of a strong key the acceptors chose, as a local
    /// write to replicate (`write::keep_chosen`); `None` when the store
    /// already holds it or a later one.
    pub fn keep_chosen(&self, key: Key, chosen: ChosenVersion) -> Option<WriteOutcome> {
        let now = self.clock.now_ms();
        let packed = store_key::pack(&key);
        let _update = self.stripe(&packed);
        let (current, found) = self.held(&packed).unzip();
        let mut outcome = crate::write::keep_chosen(&self.writer, current.as_ref(), key, chosen, now)?;
        self.keep(&packed, outcome.entry.clone(), found);
        if let Some(disk) = &self.disk {
            outcome.disk_position = disk.write_local(&packed, &outcome.whole_delta(), now);
        }
        Some(outcome)
    }

    /// Applies a replicated write.
    ///
    /// A stamp too far ahead of the local clock is counted (and reported in
    /// the outcome) but the delta is still merged: replicas must converge
    /// whatever arrives. A write concurrent with the value held here (by
    /// version vector) is counted as a conflict: last-writer-wins keeps one.
    ///
    /// # Errors
    ///
    /// [`DeltaError`]; the store is then unchanged.
    pub fn apply_remote(&self, delta: &Delta) -> Result<RemoteOutcome, DeltaError> {
        let now = self.clock.now_ms();
        let meta = delta.meta().ok_or(DeltaError::Omitted)?;
        let skew = self.writer().observe(meta.stamp.hlc, now).err();
        if skew.is_some() {
            self.stats.clock_skew_errors.inc();
        }
        let packed = store_key::pack(&delta.key);
        let outcome = {
            let _update = self.stripe(&packed);
            let (current, found) = self.held(&packed).unzip();
            let outcome = remote_write(self.node, current.as_ref(), delta, now, skew)?;
            if let (Some(lost), Some(held)) = (outcome.lost_own, &current) {
                if self.conditional.remove(&packed[..]) == Some(lost.seq) {
                    let labels = NamespaceLabels { namespace: delta.key.namespace.to_string() };
                    self.stats.cas_lost.get_or_create(&labels).inc();
                    self.lost_cas.insert(MapKey::from(&packed[..]), held.vv().to_etag());
                    self.any_cas_lost.store(true, Ordering::Relaxed);
                }
            }
            // Not held, and no newer than an entry of its slot removed
            // here: it is taken as applied, and not kept (`forgotten.rs`).
            let forgotten = current.is_none() && self.forgotten.covers(&packed, meta.epoch.hlc.as_u64());
            let kept = outcome.changed && !forgotten;
            if kept {
                self.keep(&packed, Entry::from_register(outcome.register.clone()), found);
            }
            if let Some(disk) = &self.disk {
                // The backlog record always: the delta counts as applied.
                let full = Delta {
                    origin: delta.origin,
                    seq: delta.seq,
                    key: delta.key.clone(),
                    body: geocache_crdt::DeltaBody::Register(outcome.register.clone()),
                };
                disk.write_applied(&packed, kept, &full, now);
            }
            outcome
        };
        if outcome.conflict {
            self.stats.conflicts.inc();
        }
        Ok(outcome)
    }

    /// Every entry held, tombstones included, for a full state transfer.
    /// A snapshot-free walk: entries changing meanwhile may be seen before
    /// or after the change.
    pub fn registers(&self) -> impl Iterator<Item = (Key, Entry)> + '_ {
        let mut namespace = None;
        self.cache
            .iter()
            .chain(self.tombstones.iter())
            .map(move |(k, entry)| (store_key::unpack(&k, &mut namespace), entry))
    }

    /// Merges a whole register from a full state transfer; with
    /// `forgotten_if_absent`, not when the key is not held (see
    /// `ReplicaStore::merge`).
    pub fn merge_register(&self, key: &Key, incoming: &Register, forgotten_if_absent: bool) {
        let packed = store_key::pack(key);
        let _update = self.stripe(&packed);
        let (current, found) = self.held(&packed).unzip();
        let next = match &current {
            Some(c) => Entry::from_register(Arc::new(c.to_register().merged(incoming))),
            None if forgotten_if_absent => return,
            None if self.forgotten.covers(&packed, incoming.meta.epoch.hlc.as_u64()) => return,
            None => Entry::from_register(Arc::new(incoming.clone())),
        };
        if current.as_ref() != Some(&next) {
            self.keep(&packed, next.clone(), found);
            if let Some(disk) = &self.disk {
                disk.write_register(&packed, next.register_arc());
            }
        }
    }

    /// Takes back a register of the data dir's last checkpoint, under its
    /// packed key. Merged with what is held (a write may have come in
    /// while the node was loading).
    pub fn restore(&self, packed: &[u8], loaded: Register) {
        self.take_back(packed, Arc::new(loaded), false);
    }

    /// Takes back a register the journal holds after the last checkpoint:
    /// the next checkpoint writes it.
    pub fn replay(&self, packed: &[u8], journaled: Arc<Register>) {
        self.take_back(packed, journaled, true);
    }

    fn take_back(&self, packed: &[u8], register: Arc<Register>, uncheckpointed: bool) {
        let _update = self.stripe(packed);
        let found = self.held(packed);
        let (held, changed) = match &found {
            None => (register, false),
            Some((current, _)) => {
                let merged = Entry::from_register(Arc::new(current.to_register().merged(&register)));
                if merged == *current {
                    return;
                }
                (merged.register_arc(), true)
            }
        };
        self.keep(packed, Entry::from_register(held.clone()), found.map(|(_, space)| space));
        if let (true, Some(disk)) = (changed || uncheckpointed, &self.disk) {
            disk.mark_changed(packed, Some(held));
        }
    }

    /// Removes `key` if its entry is still the one produced by `dot`
    /// (the full-transfer drop rule: a peer applied that write but no
    /// longer holds the entry, so it was evicted or expired there; a miss
    /// is allowed, a resurrection is not).
    pub fn drop_if_dot(&self, key: &Key, dot: Dot) {
        let packed = store_key::pack(key);
        let _update = self.stripe(&packed);
        match self.held(&packed) {
            Some((e, Space::Values)) if e.dot() == dot => self.cache.invalidate(&packed[..]),
            Some((e, Space::Tombstones)) if e.dot() == dot => self.tombstones.invalidate(&packed[..]),
            _ => {}
        }
    }
}

impl crate::persistence::HeldEntries for Store {
    fn for_each_held(&self, each: &mut dyn FnMut(&[u8], &Register)) {
        for (key, entry) in self.cache.iter().chain(self.tombstones.iter()) {
            // Under the stripe: the write that made this entry has queued
            // its journal record (it queues under the same lock, after its
            // insert).
            drop(self.stripe(&key[..]));
            each(&key[..], &entry.register_arc());
        }
    }

    fn holds(&self, packed: &[u8]) -> bool {
        self.cache.contains_key(packed) || self.tombstones.contains_key(packed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use bytes::Bytes;
    use serde_json::json;

    fn store(clock: &ManualClock, node: u64) -> Store {
        Store::new(
            StoreConfig {
                node: NodeId(node),
                max_memory_bytes: 8 << 20,
                eviction: EvictionKind::Lru,
                tombstone_ttl_ms: 600_000,
                max_clock_skew_ms: 60_000,
            },
            Arc::new(clock.clone()),
        )
    }

    fn key(name: &str) -> Key {
        Key::new("default", Bytes::copy_from_slice(name.as_bytes()))
    }

    fn put(k: &str, v: &str, ttl: Ttl, condition: Condition) -> Write {
        Write {
            key: key(k),
            op: WriteOp::Put { value: Bytes::copy_from_slice(v.as_bytes()), content_type: None },
            ttl,
            condition,
        }
    }

    fn bytes_of(e: &Entry) -> Vec<u8> {
        match e.value() {
            ValueRef::Bytes(b) => b.to_vec(),
            ValueRef::Doc(_) | ValueRef::Counter(_) => panic!("not bytes"),
        }
    }

    fn delete(k: &str) -> Write {
        Write { key: key(k), op: WriteOp::Delete, ttl: Ttl::Never, condition: Condition::Always }
    }

    #[test]
    fn values_filling_the_budget_never_evict_a_delete_before_its_retention() {
        let clock = ManualClock::new(1_000);
        let (s, peer) = (store(&clock, 1), store(&clock, 2));
        // An older write of each key, still on its way from a peer.
        let late: Vec<_> = (0..50)
            .map(|i| {
                peer.apply_local(put(&format!("gone{i}"), "old", Ttl::Never, Condition::Always))
                    .unwrap()
                    .delta
            })
            .collect();
        clock.advance_ms(10);
        for i in 0..50 {
            s.apply_local(delete(&format!("gone{i}"))).unwrap();
        }
        // Four times the budget of values, never read again.
        let value = "v".repeat(1_000);
        for i in 0..32_000 {
            s.apply_local(put(&format!("value{i}"), &value, Ttl::Never, Condition::Always)).unwrap();
        }
        s.run_pending_tasks();
        assert!(s.stats().evictions.get() > 20_000, "values were evicted");
        assert_eq!(s.stats().tombstones_evicted_early.get(), 0);
        assert!(s.weighted_size_bytes() <= 8 << 20);
        for (i, d) in late.iter().enumerate() {
            let held = s.register(&key(&format!("gone{i}"))).expect("the tombstone is held");
            assert!(held.is_tombstone());
            s.apply_remote(d).unwrap();
            assert!(s.get(&key(&format!("gone{i}"))).is_none(), "the older write loses to the delete");
            assert!(s.register(&key(&format!("gone{i}"))).unwrap().is_tombstone());
        }
        // A write after the delete moves the key back among the values.
        s.apply_local(put("gone0", "new", Ttl::Never, Condition::Always)).unwrap();
        s.run_pending_tasks();
        assert_eq!(bytes_of(&s.get(&key("gone0")).unwrap()), b"new");
        assert_eq!(s.tombstone_count(), 49);
    }

    #[test]
    fn deletes_that_outrun_their_space_evict_the_oldest_and_count_it() {
        let clock = ManualClock::new(1_000);
        let s = store(&clock, 1);
        s.apply_local(put("kept", "v", Ttl::Never, Condition::Always)).unwrap();
        // 512 KiB of space for tombstones of ~100-byte weight: far fewer
        // than 20,000.
        for i in 0..20_000 {
            s.apply_local(delete(&format!("deleted-key-{i:08}"))).unwrap();
        }
        s.run_pending_tasks();
        assert!(s.stats().tombstones_evicted_early.get() > 10_000);
        assert_eq!(s.stats().evictions.get(), 0, "no value made room for a tombstone");
        assert!(s.get(&key("kept")).is_some());
        assert!(s.register(&key("deleted-key-00019999")).is_some(), "the newest delete is held");
    }

    #[test]
    fn put_get_delete_and_dense_sequence() {
        let clock = ManualClock::new(1_000);
        let s = store(&clock, 1);
        let a = s.apply_local(put("k", "v1", Ttl::Never, Condition::Always)).unwrap();
        assert_eq!(a.delta.seq, 1);
        assert_eq!(bytes_of(&s.get(&key("k")).unwrap()), b"v1");
        assert!(s.apply_local(put("k", "x", Ttl::Never, Condition::IfAbsent)).is_err());
        let del = s
            .apply_local(Write {
                key: key("k"),
                op: WriteOp::Delete,
                ttl: Ttl::Never,
                condition: Condition::Always,
            })
            .unwrap();
        assert_eq!(del.delta.seq, 2, "the refused write used no sequence number");
        assert!(s.get(&key("k")).is_none());
        assert!(s.register(&key("k")).unwrap().is_tombstone());
    }

    #[test]
    fn expired_entries_read_as_misses_at_the_clock_passed_in() {
        let clock = ManualClock::new(1_000);
        let s = store(&clock, 1);
        s.apply_local(put("k", "v", Ttl::AfterMs(500), Condition::Always)).unwrap();
        clock.advance_ms(499);
        assert!(s.get(&key("k")).is_some());
        clock.advance_ms(1);
        assert!(s.get(&key("k")).is_none());
    }

    #[test]
    fn compare_and_set_on_the_version_vector() {
        let clock = ManualClock::new(1_000);
        let s = store(&clock, 1);
        let first = s.apply_local(put("k", "1", Ttl::Never, Condition::Always)).unwrap();
        let vv = first.entry.vv();
        s.apply_local(put("k", "2", Ttl::Never, Condition::IfMatch(vv.clone()))).unwrap();
        let stale = s.apply_local(put("k", "3", Ttl::Never, Condition::IfMatch(vv))).unwrap_err();
        assert!(matches!(stale, WriteError::PreconditionFailed { current: Some(_) }));
        assert_eq!(bytes_of(&s.get(&key("k")).unwrap()), b"2");
    }

    #[test]
    fn deltas_replicate_and_converge_including_documents() {
        let clock = ManualClock::new(1_000);
        let (a, b) = (store(&clock, 1), store(&clock, 2));
        let patch = |field: &str| Write {
            key: key("doc"),
            op: WriteOp::Patch(json!({ field: 1 })),
            ttl: Ttl::Keep { or_ms: None },
            condition: Condition::Always,
        };
        let d0 = a.apply_local(patch("base")).unwrap().delta;
        b.apply_remote(&d0).unwrap();
        let da = a.apply_local(patch("left")).unwrap().delta;
        let db = b.apply_local(patch("right")).unwrap().delta;
        assert!(matches!(da.body, geocache_crdt::DeltaBody::DocChanges(_)));
        assert!(a.apply_remote(&db).unwrap().changed);
        let concurrent = b.apply_remote(&da).unwrap();
        assert!(concurrent.changed && concurrent.conflict);
        assert!(!b.apply_remote(&da).unwrap().changed, "a duplicate changes nothing");
        let (ra, rb) = (a.get(&key("doc")).unwrap(), b.get(&key("doc")).unwrap());
        assert_eq!(ra, rb);
        assert_eq!(ra.doc().unwrap().to_json(), json!({"base": 1, "left": 1, "right": 1}));
    }

    #[test]
    fn a_write_after_a_replicated_one_orders_after_it_even_with_a_slow_clock() {
        let clock = ManualClock::new(1_000);
        let ahead = ManualClock::new(50_000);
        let (slow, fast) = (store(&clock, 1), store(&ahead, 2));
        let d = fast.apply_local(put("k", "fast", Ttl::Never, Condition::Always)).unwrap().delta;
        slow.apply_remote(&d).unwrap();
        let mine = slow.apply_local(put("k", "slow", Ttl::Never, Condition::Always)).unwrap();
        fast.apply_remote(&mine.delta).unwrap();
        assert_eq!(bytes_of(&fast.get(&key("k")).unwrap()), b"slow");
    }

    #[test]
    fn a_stamp_beyond_the_skew_is_merged_but_never_moves_the_clock() {
        let clock = ManualClock::new(1_000);
        let future = ManualClock::new(1_000 + 3_600_000);
        let (me, liar) = (store(&clock, 1), store(&future, 2));
        let d = liar.apply_local(put("k", "future", Ttl::Never, Condition::Always)).unwrap().delta;
        let applied = me.apply_remote(&d).unwrap();
        assert!(applied.changed && applied.skew.is_some(), "merged, and reported");
        // Overwriting that key still orders after it...
        let over = me.apply_local(put("k", "mine", Ttl::Never, Condition::Always)).unwrap();
        liar.apply_remote(&over.delta).unwrap();
        assert_eq!(bytes_of(&liar.get(&key("k")).unwrap()), b"mine");
        // ...and every other write of this node keeps its own clock.
        let other = me.apply_local(put("other", "v", Ttl::Never, Condition::Always)).unwrap();
        assert_eq!(other.entry.stamp().hlc.ms(), 1_000);
    }
}
