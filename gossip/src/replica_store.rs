//! What the replication core needs of a store: the one seam between the
//! protocol and the data. The node's moka store and the simulator's store
//! both implement it, so the core never knows which one it drives.

use geocache_crdt::{Delta, Dot, Key, Register};
use std::sync::Arc;

/// What became of a delta from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Merged: the register the store holds after it.
    Stored(Arc<Register>),
    /// Taken as applied without being stored: a sidecar does not hold the
    /// key (`fill.rs`), and holds no older version of it either.
    NotStored,
    /// It cannot be applied here (its document base is missing).
    Unappliable,
}

/// A store the core replicates into and out of.
pub trait ReplicaStore {
    /// Merges a delta from a peer.
    fn apply(&mut self, delta: &Delta) -> ApplyOutcome;

    /// Whether `key` is held (tombstones included), without counting as a
    /// use of it: what a sidecar asks before it stores a remote write.
    fn holds(&mut self, key: &Key) -> bool;

    /// A sidecar took `delta` as applied without storing it (its key is
    /// not held): nothing to do for a store, which never saw it, but an
    /// observer (the simulator's oracle) counts it as arrived.
    fn not_stored(&mut self, _delta: &Delta) {}

    /// Merges a register from a full transfer. When `forgotten_if_absent`
    /// and the key is not held here, the register is not taken: this node
    /// applied that very write and no longer holds the key (deleted and
    /// reclaimed, expired or evicted), so taking it would bring it back.
    fn merge(&mut self, key: &Key, register: &Register, forgotten_if_absent: bool);

    /// Removes `key` if its register's dot is still `dot` (nothing newer
    /// arrived since it was judged stale).
    fn drop_if_dot(&mut self, key: &Key, dot: Dot);

    /// Every key held, tombstones included, in any order: a full transfer
    /// sends them in key order from this snapshot.
    fn keys(&mut self) -> Vec<Key>;

    /// The register held for `key`, tombstones included.
    fn register(&mut self, key: &Key) -> Option<Arc<Register>>;

    /// Every key held with its register's dot: what the drop rule judges.
    fn dots(&mut self) -> Vec<(Key, Dot)>;

    /// Makes this node's acceptor slot of a strong key durable (`strong/`),
    /// before the answer that changed it leaves; whether it did. A store
    /// that cannot (the default) keeps its acceptor mute: a promise that
    /// could be forgotten in a crash must never be given.
    fn keep_acceptor_slot(&mut self, _key: &Key, _slot: &crate::strong::Slot) -> bool {
        false
    }
}
