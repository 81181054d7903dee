//! Proposal numbers: a round, then the proposer's node id, so two
//! proposers never use the same ballot and any two compare.

use geocache_crdt::NodeId;
use serde::{Deserialize, Serialize};

/// A CASPaxos ballot. Ordered by round, then by proposer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Grows with every attempt a proposer makes.
    pub round: u64,
    /// Who proposes at this ballot.
    pub proposer: NodeId,
}

impl Ballot {
    /// The ballot below every real one: what an acceptor has promised
    /// before it was ever asked.
    pub const ZERO: Ballot = Ballot { round: 0, proposer: NodeId(0) };

    /// The first ballot of `proposer` above `seen`.
    pub fn above(seen: Ballot, proposer: NodeId) -> Ballot {
        Ballot { round: seen.round.saturating_add(1), proposer }
    }
}
