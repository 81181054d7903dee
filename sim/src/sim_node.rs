//! One simulated node: its store and the very replication core the real
//! node runs (`geocache_gossip::core`), built the way `node/src/cluster.rs`
//! builds it, and the store seam the core reaches the simulated store by.

use geocache_crdt::{Delta, Dot, Key, NodeId, Register};
use geocache_gossip::core::{Core, CoreConfig};
use geocache_gossip::peer::NodeKind;
use geocache_gossip::peer::Peer;
use geocache_gossip::replica_store::{ApplyOutcome, ReplicaStore};
use geocache_gossip::strong::{AcceptorConfig, Slot, StrongConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::oracle::Oracle;
use crate::scenario::Scenario;
use crate::sim_store::SimStore;

/// A node of the simulated deployment.
pub struct SimNode {
    /// Its region, by index.
    pub region: usize,
    /// Its place in the region, from 0 (with `per_app_keys`, its app's
    /// part of the keys).
    pub slot: usize,
    /// Full node or sidecar.
    pub kind: NodeKind,
    /// This life's origin id.
    pub origin: NodeId,
    /// Its store.
    pub store: SimStore,
    /// Its replication core.
    pub core: Core,
    /// Whether it runs.
    pub up: bool,
    /// How far its wall clock is off, ms.
    pub skew_ms: i64,
    /// The earliest timer event queued for it.
    pub timer_at_us: u64,
    /// Whether the network reaches it.
    pub isolated: bool,
    /// The watermarks its core last checkpointed: what its data dir
    /// holds of them (`geocache_gossip::resume`).
    pub checkpoint: Vec<(NodeId, u64)>,
    /// Its strong keys' acceptor slots as its data dir keeps them: they
    /// outlive a crash, not a wipe.
    pub acceptor_slots: BTreeMap<Key, Slot>,
    /// Whether it may answer as an acceptor: not after a wipe lost the
    /// slots it promised with.
    pub acceptor_enabled: bool,
}

/// Node `i`'s gossip address.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, (i & 0xff) as u8], 7946))
}

/// Every node's HTTP address: the simulator has no clients over HTTP.
fn http_addr() -> SocketAddr {
    SocketAddr::from(([10, 255, 255, 255], 8080))
}

/// Node `i`'s identity in membership: its origin id, region, kind and
/// gossip address, and `incarnation_ms`, the virtual time this life started
/// (a restarted node wins over its previous life).
pub fn identity(
    scenario: &Scenario,
    (region, slot): (usize, usize),
    i: usize,
    origin: NodeId,
    incarnation_ms: u64,
) -> Peer {
    let spec = &scenario.regions[region];
    Peer {
        node: origin,
        name: node_name(i),
        region: spec.name.clone(),
        lat: spec.lat,
        lon: spec.lon,
        gossip: addr(i),
        http: http_addr(),
        incarnation: incarnation_ms,
        kind: scenario.kind_of(region, slot),
    }
}

/// Node `i`'s name, as its certificate would carry it.
pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

/// The strong keys' acceptors: the first node of each region, by name.
pub fn acceptor_names(scenario: &Scenario) -> Vec<String> {
    let mut first = 0;
    let mut names = Vec::new();
    for r in &scenario.regions {
        names.push(node_name(first));
        first += r.nodes;
    }
    names
}

/// The core's config for a node of `region`, as the node sets it; with
/// strong keys in the workload, `acceptor_enabled` says whether the node
/// may answer as an acceptor.
pub fn core_config(
    scenario: &Scenario,
    region: usize,
    seeds: &[SocketAddr],
    acceptor_enabled: bool,
) -> CoreConfig {
    let spec = &scenario.regions[region];
    let mut config = CoreConfig { seeds: seeds.to_vec(), ..CoreConfig::default() };
    if scenario.workload.strong_incr_share > 0.0 {
        config.strong = Some(StrongConfig {
            acceptors: acceptor_names(scenario),
            acceptor: AcceptorConfig {
                debug_forget_promises: scenario.debug.forget_promises,
                ..AcceptorConfig::default()
            },
            acceptor_enabled,
            ..StrongConfig::default()
        });
    }
    config.replicator.backlog.bytes_max = usize::try_from(spec.backlog_mib << 20).unwrap_or(usize::MAX);
    config.replicator.backlog.age_ms_max =
        geocache_node::cluster::backlog_age_ms_max(crate::sim_store::TOMBSTONE_TTL_MS);
    config.transfer.chunk_bytes_max = scenario.transfer_chunk_kib.max(1) << 10;
    config.transfer.debug_drop_partial = scenario.debug.drop_partial_transfer;
    config
}

/// The simulated store as the core reaches it, telling the oracle of
/// every write applied and of every key the drop rule removed.
pub struct SimAccess<'a> {
    /// The store.
    pub store: &'a mut SimStore,
    /// The node's wall clock, ms.
    pub now_ms: u64,
    /// The oracle.
    pub oracle: &'a mut Oracle,
    /// The node's region.
    pub region: usize,
    /// Virtual time, µs.
    pub now_us: u64,
    /// Keys the drop rule removed, with the dot removed.
    pub dropped: Vec<(Key, Dot)>,
    /// Packed entries shared by every node.
    pub packs: &'a mut crate::pack_cache::PackCache,
    /// The node's acceptor slots on its simulated disk.
    pub acceptor_slots: &'a mut BTreeMap<Key, Slot>,
}

impl ReplicaStore for SimAccess<'_> {
    fn apply(&mut self, delta: &Delta) -> ApplyOutcome {
        let Ok(outcome) = self.store.apply_remote(delta, self.now_ms, self.packs) else {
            return ApplyOutcome::Unappliable;
        };
        self.oracle.applied(delta.origin, delta.seq, self.region, self.now_us);
        ApplyOutcome::Stored(outcome.register)
    }

    fn holds(&mut self, key: &Key) -> bool {
        self.store.peek(key).is_some()
    }

    fn not_stored(&mut self, delta: &Delta) {
        self.oracle.applied(delta.origin, delta.seq, self.region, self.now_us);
    }

    fn merge(&mut self, key: &Key, register: &Register, forgotten_if_absent: bool) {
        self.store.merge_register(key, register, forgotten_if_absent);
    }

    fn drop_if_dot(&mut self, key: &Key, dot: Dot) {
        if self.store.drop_if_dot(key, dot) {
            self.dropped.push((key.clone(), dot));
        }
    }

    fn keys(&mut self) -> Vec<Key> {
        self.store.registers().map(|(k, _)| k.clone()).collect()
    }

    fn register(&mut self, key: &Key) -> Option<Arc<Register>> {
        self.store.peek(key).map(|e| e.register_arc())
    }

    fn dots(&mut self) -> Vec<(Key, Dot)> {
        self.store.registers().map(|(k, e)| (k.clone(), e.dot())).collect()
    }

    fn keep_acceptor_slot(&mut self, key: &Key, slot: &Slot) -> bool {
        self.acceptor_slots.insert(key.clone(), slot.clone());
        true
    }
}
