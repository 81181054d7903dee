//! A node's part in strong keys: its proposer, and its acceptor when the
//! node is one of the configured acceptors. Acceptors are named (the names
//! in their certificates), so a node restarted under a new origin is still
//! the same acceptor; within the proposer they are numbered by their place
//! in the list.

use geocache_crdt::{Hlc, Key, NodeId};

use super::acceptor::{Acceptor, AcceptorConfig, Slot};
use super::message::StrongMessage;
use super::proposer::{Outcome, ProposalId, Proposer, ProposerConfig};
use super::state::Change;

/// Strong keys' settings: the same acceptor list on every node.
#[derive(Clone, Debug, Default)]
pub struct StrongConfig {
    /// The acceptors' node names, one per region, in the same order on
    /// every node.
    pub acceptors: Vec<String>,
    /// The proposer's bounds.
    pub proposer: ProposerConfig,
    /// The acceptor's bounds.
    pub acceptor: AcceptorConfig,
    /// Whether this node may act as its acceptor: not when it lost the
    /// slots it promised with (a restart without its data), since
    /// answering again could break promises it made. It takes part again
    /// through a change of the acceptor set (docs/ARCHITECTURE.md).
    pub acceptor_enabled: bool,
}

/// Where a strong message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StrongTarget {
    /// This node's own acceptor.
    Local,
    /// The acceptor of this name.
    Named(String),
}

/// A node's proposer and, if it is one, its acceptor.
pub struct StrongRoles {
    names: Vec<String>,
    me: Option<usize>,
    proposer: Proposer,
    acceptor: Option<Acceptor>,
}

impl StrongRoles {
    /// The roles of node `name`, whose ballots carry `origin` and `life`
    /// (see [`Proposer::new`]).
    pub fn new(origin: NodeId, life: u64, name: &str, config: StrongConfig) -> StrongRoles {
        let me = config.acceptors.iter().position(|n| n == name);
        let acceptor =
            (me.is_some() && config.acceptor_enabled).then(|| Acceptor::new(config.acceptor.clone()));
        StrongRoles {
            names: config.acceptors,
            me,
            proposer: Proposer::new(origin, life, config.proposer),
            acceptor,
        }
    }

    fn ids(&self) -> Vec<NodeId> {
        (1..=self.names.len() as u64).map(NodeId).collect()
    }

    /// The acceptor id of the node named `name`, if it is an acceptor.
    pub fn acceptor_named(&self, name: &str) -> Option<NodeId> {
        self.names.iter().position(|n| n == name).map(|i| NodeId(i as u64 + 1))
    }

    /// Whether this node answers as an acceptor.
    pub fn is_acceptor(&self) -> bool {
        self.acceptor.is_some()
    }

    /// Takes back a slot of this node's acceptor from its data dir.
    pub fn restore_slot(&mut self, key: Key, slot: Slot) {
        if let Some(a) = &mut self.acceptor {
            a.restore(key, slot);
        }
    }

    /// Every slot this node's acceptor holds (the simulator's data dir
    /// keeps them across a crash).
    pub fn slots(&self) -> impl Iterator<Item = (&Key, &Slot)> {
        self.acceptor.iter().flat_map(Acceptor::slots)
    }

    /// This node holds version `version` of `key` (see
    /// [`Proposer::saw_version`]).
    pub fn saw_version(&mut self, key: &Key, version: u64) {
        self.proposer.saw_version(key, version);
    }

    /// Starts a change of `key`, asked for at `at` by this node's clock.
    pub fn propose(&mut self, key: Key, change: Change, at: Hlc, now_ms: u64) -> ProposalId {
        let ids = self.ids();
        self.proposer.propose(key, change, at, &ids, now_ms)
    }

    /// A proposer's request to this node's acceptor: the answer, and the
    /// slot to make durable before it leaves. `None` when this node is not
    /// an acceptor (or the message is not a request).
    pub fn answer(&mut self, message: &StrongMessage) -> Option<(StrongMessage, Option<(Key, Slot)>)> {
        self.acceptor.as_mut()?.handle(message)
    }

    /// An acceptor's answer to this node's proposer, from acceptor `from`
    /// (see [`acceptor_named`](Self::acceptor_named)).
    pub fn take_answer(&mut self, from: NodeId, message: StrongMessage, now_ms: u64) {
        self.proposer.handle(from, message, now_ms);
    }

    /// This node's own acceptor id, when it is one.
    pub fn own_acceptor(&self) -> Option<NodeId> {
        self.me.filter(|_| self.acceptor.is_some()).map(|i| NodeId(i as u64 + 1))
    }

    /// Fires the proposer's timers.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.proposer.handle_timeout(now_ms);
    }

    /// When the proposer next needs [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.proposer.poll_timeout()
    }

    /// The next message the proposer sends, and where.
    pub fn poll_transmit(&mut self) -> Option<(StrongTarget, StrongMessage)> {
        loop {
            let (to, message) = self.proposer.poll_transmit()?;
            // The proposer only addresses the ids `ids()` gave it.
            let Some(index) = (to.0 as usize).checked_sub(1).filter(|&i| i < self.names.len()) else {
                continue;
            };
            let target = if Some(index) == self.me && self.acceptor.is_some() {
                StrongTarget::Local
            } else {
                StrongTarget::Named(self.names[index].clone())
            };
            return Some((target, message));
        }
    }

    /// The next proposal decided.
    pub fn poll_outcome(&mut self) -> Option<(ProposalId, Outcome)> {
        self.proposer.poll_outcome()
    }
}
