use crate::{Hlc, NodeId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The total order of last-writer-wins: the clock reading first, the node id
/// to break ties. Stamps are unique because a node's clock strictly
/// increases on every tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// When the write happened, by the writer's hybrid logical clock.
    pub hlc: Hlc,
    /// Who wrote it.
    pub node: NodeId,
}

impl Stamp {
    /// A stamp from its parts.
    pub fn new(hlc: Hlc, node: NodeId) -> Stamp {
        Stamp { hlc, node }
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.hlc, self.node)
    }
}

/// Names one write: its origin and the origin's dense sequence number for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The node that accepted the write from a client.
    pub origin: NodeId,
    /// The origin's sequence number of the write, starting at 1.
    pub seq: u64,
}
