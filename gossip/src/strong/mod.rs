//! Strong keys: linearizable writes across regions by CASPaxos (Rystsov,
//! 2018), one register per key, no leader and no log.
//!
//! Each region contributes one acceptor; a write is chosen when a majority
//! of acceptors accept it. A proposer turns a client's [`Change`] into a
//! new [`StrongState`] in two round trips to the nearest majority (prepare,
//! then accept), or one when it was the last to write the key (the accept
//! of a round carries the prepare of the next, so the next change goes
//! straight to accept). A change that does not apply (a compare-and-set
//! against a version that is no longer current) still writes the current
//! state back at its ballot, so the refusal, like a read, is linearizable.
//!
//! Sans-IO like the rest of the crate: [`Acceptor`] answers messages and
//! says what must be made durable before its answer leaves; [`Proposer`]
//! takes changes, messages and timeouts, and gives messages to send, the
//! next wake-up and the outcomes. The driver moves the messages and keeps
//! the acceptor's slots on disk.
//!
//! - `ballot.rs`: the proposal numbers.
//! - `state.rs`: the register a key holds and the changes clients ask for.
//! - `message.rs`: what proposers and acceptors say to each other.
//! - `acceptor.rs`, `proposer.rs`: the two roles; `roles.rs`: a node's
//!   part (its proposer, its acceptor if it is one, acceptors by name).

mod acceptor;
mod ballot;
mod message;
mod proposer;
mod roles;
mod state;

pub use acceptor::{Acceptor, AcceptorConfig, Slot};
pub use ballot::Ballot;
pub use message::{StrongMessage, StrongRefusal};
pub use proposer::{Outcome, ProposalId, Proposer, ProposerConfig};
pub use roles::{StrongConfig, StrongRoles, StrongTarget};
pub use state::{Change, StrongState, RECENT_CHANGES_COUNT_MAX};
