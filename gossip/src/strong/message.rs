//! What proposers and acceptors say to each other. Every message names its
//! proposal (`id`, unique per proposer) so a late answer to an abandoned
//! attempt is ignored.

use geocache_crdt::Key;
use serde::{Deserialize, Serialize};

use super::ballot::Ballot;
use super::state::StrongState;

/// Why an acceptor refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrongRefusal {
    /// It promised a higher ballot.
    Promised(Ballot),
    /// It holds as many keys as it may, and this is a new one.
    Full,
}

/// A CASPaxos message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrongMessage {
    /// Phase 1: promise to accept nothing below `ballot`, and say what you
    /// accepted.
    Prepare {
        /// The proposal.
        id: u64,
        /// The key.
        key: Key,
        /// The ballot to promise.
        ballot: Ballot,
    },
    /// The acceptor promised `ballot`; it had accepted `state` at
    /// `accepted`.
    Promise {
        /// The proposal.
        id: u64,
        /// The ballot promised.
        ballot: Ballot,
        /// The ballot of what it accepted ([`Ballot::ZERO`] for nothing).
        accepted: Ballot,
        /// What it accepted.
        state: StrongState,
    },
    /// Phase 2: accept `state` at `ballot`; and, if `next` is set, promise
    /// `next` at once (the prepare of the proposer's next round).
    Accept {
        /// The proposal.
        id: u64,
        /// The key.
        key: Key,
        /// The ballot.
        ballot: Ballot,
        /// The new state.
        state: StrongState,
        /// The ballot the proposer will use next for this key.
        next: Option<Ballot>,
    },
    /// The acceptor accepted `ballot` (and promised the `next` it was sent).
    Accepted {
        /// The proposal.
        id: u64,
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// The acceptor refused `ballot`.
    Refused {
        /// The proposal.
        id: u64,
        /// The ballot refused.
        ballot: Ballot,
        /// Why.
        why: StrongRefusal,
    },
}
