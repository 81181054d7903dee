use serde::{Deserialize, Serialize};
use std::fmt;

/// The identity of a node, and so of every write it originates.
///
/// Node ids must be unique in a cluster: two nodes with the same id would
/// issue equal [`Stamp`](crate::Stamp)s for different writes and break
/// convergence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
