//! What every front end shares: the store, the configuration, the
//! metrics and replication, below HTTP and RESP alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::replication_health::ReplicationHealth;
use crate::store::Store;

/// What every front end shares: one `Arc`, because axum clones the state
/// for every request and a struct of `Arc`s cost an atomic increment and
/// decrement per field (perf: 4 % of an HTTP GET). Fields read through
/// `Deref`; set up before serving through `DerefMut` (`Arc::make_mut`,
/// which copies only if the state is already shared).
#[derive(Clone)]
pub struct NodeState(Arc<NodeParts>);

impl NodeState {
    /// The state from its parts.
    pub fn new(parts: NodeParts) -> NodeState {
        NodeState(Arc::new(parts))
    }
}

impl std::ops::Deref for NodeState {
    type Target = NodeParts;

    fn deref(&self) -> &NodeParts {
        &self.0
    }
}

impl std::ops::DerefMut for NodeState {
    fn deref_mut(&mut self) -> &mut NodeParts {
        Arc::make_mut(&mut self.0)
    }
}

/// The parts of [`NodeState`].
#[derive(Clone)]
pub struct NodeParts {
    /// The node's entries.
    pub store: Arc<Store>,
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
    /// When the node started, for its uptime.
    pub started: Instant,
    /// Replication, when the node gossips.
    pub cluster: Option<Cluster>,
    /// Whether replication still runs.
    pub replication_health: ReplicationHealth,
    /// This life of the node: its start time in unix ms.
    pub incarnation: u64,
    /// The bound HTTP address (the configured one until bound).
    pub http: SocketAddr,
    /// Sends requests of the earlier interface on to another node
    /// (`databaseHost`).
    pub forward: reqwest::Client,
    /// Whether the data dir's entries are still being loaded: the node
    /// serves meanwhile, and `/readyz` says not ready.
    pub loading: Arc<std::sync::atomic::AtomicBool>,
    /// The replication state read from the data dir, until replication
    /// starts from it.
    pub resume: Option<geocache_gossip::resume::ResumeState>,
    /// What the status page remembers between views.
    pub status_book: Arc<crate::status_book::StatusBook>,
}

impl NodeParts {
    /// Whether this node is a sidecar (`--sidecar`).
    pub fn is_sidecar(&self) -> bool {
        self.config.replication.as_ref().is_some_and(|r| r.kind == geocache_gossip::peer::NodeKind::Sidecar)
    }

    /// Before a read (or a write that builds on the current value) of
    /// `key` at a sidecar that does not hold it: fills it from a full node
    /// of the region, waiting at most `--fill-timeout`. Nothing to do on a
    /// full node, or for a key held.
    pub async fn fill_if_missing(&self, key: &geocache_crdt::Key) {
        if !self.is_sidecar() || self.store.holds(key) {
            return;
        }
        if let Some(cluster) = &self.cluster {
            cluster.fill(key.clone()).await;
        }
    }
}
