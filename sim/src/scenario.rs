//! The scenario file: regions on a map, the network, the workload and the
//! faults. Documented in `docs/SIMULATOR.md`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A whole simulated deployment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A name for reports.
    pub name: String,
    /// Regions and their nodes.
    pub regions: Vec<RegionSpec>,
    /// The network between them.
    #[serde(default)]
    pub network: NetworkSpec,
    /// What clients do.
    pub workload: WorkloadSpec,
    /// What goes wrong, and when.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Virtual seconds after the workload and the faults end during which
    /// the cluster must converge (the liveness budget).
    #[serde(default = "default_heal_s")]
    pub heal_s: f64,
    /// Bytes of registers in one full-transfer chunk, KiB (the node's
    /// default is 1024); small values make a transfer of a small store
    /// span many chunks.
    #[serde(default = "default_transfer_chunk_kib")]
    pub transfer_chunk_kib: usize,
    /// Test-only switches.
    #[serde(default)]
    pub debug: DebugSpec,
}

fn default_transfer_chunk_kib() -> usize {
    1024
}

fn default_heal_s() -> f64 {
    30.0
}

/// One region.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    /// Its name.
    pub name: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// How many nodes it runs.
    pub nodes: usize,
    /// Memory budget of each node's store, MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Replication backlog of each node, MiB (`--backlog-bytes-max`).
    #[serde(default = "default_backlog_mib")]
    pub backlog_mib: u64,
    /// How many of its nodes are full nodes (the first ones); the rest are
    /// sidecars (`--sidecar`). Every node is full when not given.
    #[serde(default)]
    pub full_nodes: Option<usize>,
}

fn default_backlog_mib() -> u64 {
    64
}

fn default_memory_mib() -> u64 {
    256
}

/// The network model.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSpec {
    /// Speed of light in fiber, km per ms.
    pub fiber_km_per_ms: f64,
    /// Real paths are longer than great circles by this factor.
    pub path_inflation: f64,
    /// One-way delay between nodes of one region, ms.
    pub lan_delay_ms: f64,
    /// Uniform extra delay on every message, up to this many ms.
    pub jitter_ms: f64,
    /// Share of messages lost between regions.
    pub loss: f64,
    /// Bandwidth of each inter-region link, Mbit/s (0: unlimited).
    pub bandwidth_mbps: f64,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            fiber_km_per_ms: 200.0,
            path_inflation: 1.5,
            lan_delay_ms: 0.25,
            jitter_ms: 0.0,
            loss: 0.0,
            bandwidth_mbps: 0.0,
        }
    }
}

/// What clients do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Virtual seconds of client traffic.
    pub duration_s: f64,
    /// Client operations per second in each region.
    pub ops_per_s_per_region: f64,
    /// Share of operations that are reads.
    pub read_ratio: f64,
    /// Distinct keys.
    pub keys: usize,
    /// Zipf exponent of key popularity (0: uniform).
    #[serde(default)]
    pub zipf_s: f64,
    /// Bytes of each value.
    #[serde(default = "default_value_bytes")]
    pub value_bytes: usize,
    /// TTL of writes, seconds (none: never expire).
    #[serde(default)]
    pub ttl_s: Option<f64>,
    /// Share of writes that are deletes.
    #[serde(default)]
    pub delete_share: f64,
    /// Share of writes that are compare-and-set (read, then write if unchanged).
    #[serde(default)]
    pub cas_share: f64,
    /// Share of writes that are document patches.
    #[serde(default)]
    pub doc_patch_share: f64,
    /// Share of writes that are counter increments (`INCRBY` of 1 to 10, a
    /// tenth of them decrements), of `counter_keys` keys of their own that
    /// nothing else writes: the `counters_exact` checker sums them.
    #[serde(default)]
    pub incr_share: f64,
    /// Keys the increments go to.
    #[serde(default = "default_counter_keys")]
    pub counter_keys: usize,
    /// Share of client operations that add one to a strong key (issue 16)
    /// by a strong read and a compare-and-set, retried on refusal, through
    /// CASPaxos over the first node of each region as acceptors; the
    /// `strong_linearizable` checker judges them. 0 draws nothing, so a
    /// scenario without strong keys runs as it always did.
    #[serde(default)]
    pub strong_incr_share: f64,
    /// Strong keys the increments go to.
    #[serde(default = "default_strong_keys")]
    pub strong_keys: usize,
    /// Share of writes asking for `region` durability.
    #[serde(default)]
    pub durability_region_share: f64,
    /// Share of writes asking for `all` durability.
    #[serde(default)]
    pub durability_all_share: f64,
    /// Share of writes whose value is `large_value_bytes` long instead.
    #[serde(default)]
    pub large_value_share: f64,
    /// The size of a large value: several replication frames' worth.
    #[serde(default = "default_large_value_bytes")]
    pub large_value_bytes: usize,
    /// Each app reads and writes its own part of the key space: the keys
    /// are dealt into one part per node slot of a region, and the clients
    /// of slot `i` in every region use part `i` (apps of one kind running
    /// in each region). Otherwise every client uses every key.
    #[serde(default)]
    pub per_app_keys: bool,
}

fn default_large_value_bytes() -> usize {
    6 << 20
}

fn default_counter_keys() -> usize {
    16
}

fn default_strong_keys() -> usize {
    4
}

fn default_value_bytes() -> usize {
    100
}

/// One fault, over `[at_s, at_s + duration_s)` of virtual time. (serde
/// cannot refuse unknown fields through `flatten`, so a misspelt field of
/// a fault is ignored.)
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultSpec {
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// When it starts, virtual seconds.
    pub at_s: f64,
    /// How long it lasts.
    pub duration_s: f64,
}

/// The kinds of fault.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Two regions cannot reach each other.
    Partition {
        /// One side.
        a: String,
        /// The other.
        b: String,
    },
    /// A node is cut off from every other node.
    Isolate {
        /// The node, by index in region order (0-based).
        node: usize,
    },
    /// A node crashes, and restarts at the end of the fault.
    Crash {
        /// The node.
        node: usize,
        /// Whether it restarts without its data.
        #[serde(default)]
        wipe: bool,
    },
    /// A node's clock is off.
    ClockSkew {
        /// The node.
        node: usize,
        /// By how much, ms (negative: behind).
        skew_ms: i64,
    },
    /// A node's inbound link is this slow: senders' queues toward it fill,
    /// refuse frames past their bound, and take their byte budget.
    SlowNode {
        /// The node.
        node: usize,
        /// Its inbound bandwidth, Mbit/s.
        bandwidth_mbps: f64,
    },
    /// Replication messages of one kind are lost at this rate on every
    /// link (`full_transfer` loses transfer chunks and requests).
    MessageLoss {
        /// `deltas`, `acks`, `sync` or `full_transfer`.
        message: String,
        /// Share lost.
        loss: f64,
    },
    /// Messages between two regions are lost at this rate.
    LossBurst {
        /// One side.
        a: String,
        /// The other.
        b: String,
        /// Share lost.
        loss: f64,
    },
}

/// Test-only switches.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugSpec {
    /// Replicas keep what they hold and ignore what arrives: a broken merge
    /// the checkers must catch.
    pub broken_merge: bool,
    /// A full transfer's drop rule runs when its last chunk arrives, whole
    /// or not: a broken transfer the checkers must catch.
    pub drop_partial_transfer: bool,
    /// Counters of one epoch merge as last-writer-wins, as an `INCR` of a
    /// string did: lost increments the checkers must catch.
    pub lww_counters: bool,
    /// Strong keys' acceptors forget their promises, as one that lost its
    /// data dir would: lost updates `strong_linearizable` must catch.
    pub forget_promises: bool,
}

/// A scenario file is not valid.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The TOML does not parse into a scenario.
    #[error("scenario: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// Parses and checks a scenario.
    ///
    /// # Errors
    ///
    /// [`ScenarioError`] naming the bad field.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Total nodes.
    pub fn node_count(&self) -> usize {
        self.regions.iter().map(|r| r.nodes).sum()
    }

    /// Node `slot` of region `region`'s kind.
    pub fn kind_of(&self, region: usize, slot: usize) -> geocache_gossip::peer::NodeKind {
        let full = self.regions[region].full_nodes.unwrap_or(usize::MAX);
        if slot < full {
            geocache_gossip::peer::NodeKind::Full
        } else {
            geocache_gossip::peer::NodeKind::Sidecar
        }
    }

    /// The most nodes of any region: the number of key parts with
    /// `per_app_keys`.
    pub fn slots_per_region(&self) -> usize {
        self.regions.iter().map(|r| r.nodes).max().unwrap_or(1)
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| Err(ScenarioError::Invalid(m));
        if self.regions.is_empty() {
            return bad("at least one region is needed".into());
        }
        for r in &self.regions {
            if r.nodes == 0 || r.nodes > 64 {
                return bad(format!("regions.{}: nodes must be 1 to 64", r.name));
            }
            if r.full_nodes.is_some_and(|f| f > r.nodes) {
                return bad(format!("regions.{}: full_nodes must be at most nodes", r.name));
            }
            if !(-90.0..=90.0).contains(&r.lat) || !(-180.0..=180.0).contains(&r.lon) {
                return bad(format!("regions.{}: lat/lon out of range", r.name));
            }
        }
        let w = &self.workload;
        let shares = [w.read_ratio, w.delete_share, w.cas_share, w.doc_patch_share, w.incr_share];
        if shares.iter().any(|s| !(0.0..=1.0).contains(s))
            || w.delete_share + w.cas_share + w.doc_patch_share + w.incr_share > 1.0
            || w.counter_keys == 0
        {
            return bad(
                "workload: shares must be in [0, 1], write shares sum to at most 1, counter_keys above 0"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&w.strong_incr_share) || w.strong_keys == 0 {
            return bad("workload: strong_incr_share must be in [0, 1], strong_keys above 0".into());
        }
        if !(0.0..=1.0).contains(&w.large_value_share) || w.large_value_bytes > 64 << 20 {
            return bad(
                "workload: large_value_share must be in [0, 1], large_value_bytes at most 64 MiB".into()
            );
        }
        if w.durability_region_share + w.durability_all_share > 1.0 {
            return bad("workload: durability shares sum to more than 1".into());
        }
        if w.keys == 0 || w.duration_s <= 0.0 || w.ops_per_s_per_region < 0.0 {
            return bad("workload: keys, duration_s and ops_per_s_per_region must be positive".into());
        }
        let nodes = self.node_count();
        for f in &self.faults {
            let node = match &f.kind {
                FaultKind::Isolate { node }
                | FaultKind::Crash { node, .. }
                | FaultKind::ClockSkew { node, .. }
                | FaultKind::SlowNode { node, .. } => Some(*node),
                FaultKind::MessageLoss { message, loss } => {
                    if !["deltas", "acks", "sync", "full_transfer"].contains(&message.as_str()) {
                        return bad(format!("faults: unknown message kind {message}"));
                    }
                    if !(0.0..=1.0).contains(loss) {
                        return bad("faults: loss must be in [0, 1]".into());
                    }
                    None
                }
                FaultKind::Partition { a, b } | FaultKind::LossBurst { a, b, .. } => {
                    for r in [a, b] {
                        if !self.regions.iter().any(|x| &x.name == r) {
                            return bad(format!("faults: unknown region {r}"));
                        }
                    }
                    None
                }
            };
            if node.is_some_and(|n| n >= nodes) {
                return bad(format!("faults: node {} out of range (0..{nodes})", node.unwrap_or(0)));
            }
        }
        Ok(())
    }
}
