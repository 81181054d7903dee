//! The core's part in strong keys: it carries CASPaxos messages between
//! this node's proposer and the acceptors, which it finds by name among
//! the members (`strong/roles.rs`), and makes its own acceptor's slots
//! durable through the store before their answers leave.

use geocache_crdt::{Hlc, Key, NodeId};

use crate::core::{Core, CoreEvent};
use crate::replica_store::ReplicaStore;
use crate::replicator::Transmit;
use crate::strong::{Change, ProposalId, StrongMessage, StrongRoles, StrongTarget};
use crate::wire::Message;

impl Core {
    /// Starts `change` of strong key `key`, asked for at `at` by this
    /// node's HLC (the new version is stamped no earlier, and expiries are
    /// judged at its wall time); its outcome comes as
    /// [`CoreEvent::Strong`]. `None` when strong keys are not configured.
    pub fn propose_strong(
        &mut self,
        key: Key,
        change: Change,
        at: Hlc,
        store: &mut dyn ReplicaStore,
        now_ms: u64,
    ) -> Option<ProposalId> {
        let id = self.strong.as_mut()?.propose(key, change, at, now_ms.max(self.now_ms));
        self.flush_strong(store);
        Some(id)
    }

    /// This node's store holds version `version` of strong key `key`
    /// (replicated from another proposer): its proposer prepares the next
    /// change rather than spend a round trip on a promise given before.
    pub fn saw_strong_version(&mut self, key: &Key, version: u64) {
        if let Some(strong) = &mut self.strong {
            strong.saw_version(key, version);
        }
    }

    /// The keys this node's acceptor holds slots for (none when it is not
    /// one): what a refresh reads through a new acceptor set.
    pub fn strong_slot_keys(&self) -> Vec<Key> {
        self.strong.iter().flat_map(|s| s.slots().map(|(k, _)| k.clone())).collect()
    }

    /// Takes back this node's acceptor slot of `key` from its data dir.
    pub fn restore_strong_slot(&mut self, key: Key, slot: crate::strong::Slot) {
        if let Some(strong) = &mut self.strong {
            strong.restore_slot(key, slot);
        }
    }

    /// A CASPaxos message from member `from`.
    pub(crate) fn strong_message(
        &mut self,
        from: NodeId,
        message: StrongMessage,
        store: &mut dyn ReplicaStore,
    ) {
        let now = self.now_ms;
        let Some(strong) = self.strong.as_mut() else { return };
        match message {
            StrongMessage::Prepare { .. } | StrongMessage::Accept { .. } => {
                let Some(answer) = answer_durably(strong, &message, store) else { return };
                self.send_strong(from, answer);
            }
            answer => {
                // Answers count only from the acceptors, by their names.
                let Some(name) = self.members.get(&from).map(|p| p.name.clone()) else { return };
                let Some(acceptor) = strong.acceptor_named(&name) else { return };
                strong.take_answer(acceptor, answer, now);
            }
        }
        self.flush_strong(store);
    }

    fn send_strong(&mut self, to: NodeId, message: StrongMessage) {
        let Some(peer) = self.members.get(&to) else { return };
        let (addr, wan, me) = (peer.gossip, peer.region != self.region, self.me);
        self.outbox.push_back(Transmit {
            to,
            addr,
            wan,
            message: Message::Strong { from: me, message },
            request: false,
        });
    }

    /// Sends what the proposer has to send, answering its own acceptor's
    /// share here, and passes on the outcomes.
    pub(crate) fn flush_strong(&mut self, store: &mut dyn ReplicaStore) {
        let now = self.now_ms;
        loop {
            // The other acceptors' messages leave first: this node's own
            // answer waits for its slot to reach the disk, and the remote
            // round trips run meanwhile.
            let mut local = Vec::new();
            loop {
                let Some(strong) = self.strong.as_mut() else { return };
                let Some((target, message)) = strong.poll_transmit() else { break };
                match target {
                    StrongTarget::Local => local.push(message),
                    StrongTarget::Named(name) => {
                        // The acceptor's current life; none up: the message
                        // is lost, and the attempt times out like any loss.
                        let Some(to) = self.members.values().find(|p| p.name == name).map(|p| p.node) else {
                            continue;
                        };
                        self.send_strong(to, message);
                    }
                }
            }
            if local.is_empty() {
                break;
            }
            let Some(strong) = self.strong.as_mut() else { return };
            let Some(own) = strong.own_acceptor() else { break };
            for message in local {
                if let Some(answer) = answer_durably(strong, &message, store) {
                    strong.take_answer(own, answer, now);
                }
            }
        }
        while let Some((id, outcome)) = self.strong.as_mut().and_then(|s| s.poll_outcome()) {
            self.events.push_back(CoreEvent::Strong { id, outcome });
        }
    }
}

/// This node's acceptor's answer to a proposer's request, once the slot it
/// changed is durable; `None` when it is not an acceptor, or the store
/// could not keep the slot (the acceptor stays mute).
fn answer_durably(
    strong: &mut StrongRoles,
    message: &StrongMessage,
    store: &mut dyn ReplicaStore,
) -> Option<StrongMessage> {
    let (answer, slot) = strong.answer(message)?;
    match slot {
        Some((key, slot)) if !store.keep_acceptor_slot(&key, &slot) => None,
        _ => Some(answer),
    }
}
