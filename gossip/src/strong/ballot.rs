//! Proposal numbers: a round, then the proposer's node id and the life of
//! that node, so two proposers, or two lives of one node (a restart with
//! its data keeps the node id but forgets the rounds it used), never use
//! the same ballot, and any two compare.

use geocache_crdt::NodeId;
use serde::{Deserialize, Serialize};

/// A CASPaxos ballot. Ordered by round, then proposer, then life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Grows with every attempt a proposer makes.
    pub round: u64,
    /// Who proposes at this ballot.
    pub proposer: NodeId,
    /// Which life of the proposer (its start time, unique per node id).
    pub life: u64,
}

impl Ballot {
    /// The ballot below every real one: what an acceptor has promised
    /// before it was ever asked.
    pub const ZERO: Ballot = Ballot { round: 0, proposer: NodeId(0), life: 0 };

    /// The ballot of `proposer`'s `life` at `round`.
    pub fn new(round: u64, proposer: NodeId, life: u64) -> Ballot {
        Ballot { round, proposer, life }
    }
}
