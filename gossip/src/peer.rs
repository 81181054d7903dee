//! [`Peer`]: who a node is, as the cluster sees it.

use foca::Identity;
use geocache_crdt::NodeId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The identity a node gossips: enough for any member to route to it, place
/// it on the map and tell a restarted node from its previous life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// The node's id.
    pub node: NodeId,
    /// The name in its certificate (`geocache certs issue --node`): what
    /// it sends is checked against the certificate of the connection it
    /// came on.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// The address its gossip (QUIC) endpoint is bound to: its address in
    /// membership.
    pub gossip: SocketAddr,
    /// The address of its HTTP API.
    pub http: SocketAddr,
    /// Which life of the node this is: its start time in unix ms, bumped by
    /// one when it must rejoin after being declared down. A restarted node
    /// has a larger one and so wins over its old identity.
    pub incarnation: u64,
    /// Whether it holds everything or only what its own clients use.
    pub kind: NodeKind,
}

/// What a node stores of the cluster's data (docs/ARCHITECTURE.md, "Full
/// nodes and sidecars").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Every key: it answers other nodes' fills, and a region needs one.
    #[default]
    Full,
    /// Only keys its own clients read or wrote recently: a remote write
    /// of any other key is recorded as applied and not stored, and a miss
    /// fills from a full node of its region.
    Sidecar,
}

impl NodeKind {
    /// The name in config, flags and `/v1/cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Full => "full",
            NodeKind::Sidecar => "sidecar",
        }
    }
}

// Coordinates are finite by construction (validated config), so equality
// is an equivalence relation.
impl Eq for Peer {}

impl Peer {
    /// A placeholder for a seed known only by its address: any real
    /// identity at that address wins over it.
    pub fn seed(gossip: SocketAddr) -> Peer {
        Peer {
            node: NodeId(0),
            name: String::new(),
            region: String::new(),
            lat: 0.0,
            lon: 0.0,
            gossip,
            http: gossip,
            incarnation: 0,
            kind: NodeKind::Full,
        }
    }
}

impl Identity for Peer {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Peer { incarnation: self.incarnation + 1, ..self.clone() })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.incarnation, self.node) > (adversary.incarnation, adversary.node)
    }
}
