//! What the replication core needs of a store: the one seam between the
//! protocol and the data. The node's moka store and the simulator's store
//! both implement it, so the core never knows which one it drives.

use geocache_crdt::{Delta, Dot, Key, Register};
use std::sync::Arc;

/// A store the core replicates into and out of.
pub trait ReplicaStore {
    /// Merges a delta from a peer; the register after it, or `None` when
    /// it cannot be applied (its document base is missing here).
    fn apply(&mut self, delta: &Delta) -> Option<Arc<Register>>;

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
}
