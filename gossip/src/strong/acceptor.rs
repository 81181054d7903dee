//! The acceptor: for each strong key, the highest ballot it promised and
//! what it accepted last. It is the only state CASPaxos keeps, and it must
//! outlive a restart: an acceptor that forgets a promise can let two
//! proposers both believe they won. So every answer that changed a slot
//! comes with that slot, and the driver makes it durable before the
//! answer leaves.

use geocache_crdt::Key;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::ballot::Ballot;
use super::message::{StrongMessage, StrongRefusal};
use super::state::StrongState;

/// Bounds of an acceptor.
#[derive(Clone, Debug)]
pub struct AcceptorConfig {
    /// Most keys it keeps slots for. A slot is never dropped (forgetting
    /// one could give a key's version back to an older history), so past
    /// the bound, new keys are refused ([`StrongRefusal::Full`]).
    pub key_count_max: usize,
    /// Debug only, for the tests that must catch it: forget every promise
    /// (accept and promise any ballot), as an acceptor that lost its data
    /// dir would.
    pub debug_forget_promises: bool,
}

impl Default for AcceptorConfig {
    fn default() -> AcceptorConfig {
        AcceptorConfig { key_count_max: 1 << 20, debug_forget_promises: false }
    }
}

/// What an acceptor holds for one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The highest ballot promised: nothing below it is accepted.
    pub promised: Ballot,
    /// The ballot `state` was accepted at ([`Ballot::ZERO`]: never).
    pub accepted: Ballot,
    /// What it accepted.
    pub state: StrongState,
}

/// One region's acceptor.
#[derive(Debug, Default)]
pub struct Acceptor {
    config: AcceptorConfig,
    slots: BTreeMap<Key, Slot>,
}

impl Acceptor {
    /// An acceptor with no slot.
    pub fn new(config: AcceptorConfig) -> Acceptor {
        Acceptor { config, slots: BTreeMap::new() }
    }

    /// Takes back a slot from the data dir.
    pub fn restore(&mut self, key: Key, slot: Slot) {
        self.slots.insert(key, slot);
    }

    /// The slot of `key`, if it has one.
    pub fn slot(&self, key: &Key) -> Option<&Slot> {
        self.slots.get(key)
    }

    /// Every slot, by key.
    pub fn slots(&self) -> impl Iterator<Item = (&Key, &Slot)> {
        self.slots.iter()
    }

    /// Keys it holds slots for.
    pub fn key_count(&self) -> usize {
        self.slots.len()
    }

    /// The answer to a proposer's `Prepare` or `Accept` (anything else is
    /// not for an acceptor: `None`), with the slot to make durable first
    /// when the message changed it.
    pub fn handle(&mut self, message: &StrongMessage) -> Option<(StrongMessage, Option<(Key, Slot)>)> {
        match message {
            StrongMessage::Prepare { id, key, ballot } => Some(self.prepare(*id, key, *ballot)),
            StrongMessage::Accept { id, key, ballot, state, next } => {
                Some(self.accept(*id, key, *ballot, state, *next))
            }
            _ => None,
        }
    }

    fn slot_for(&mut self, key: &Key) -> Result<&mut Slot, StrongRefusal> {
        if !self.slots.contains_key(key) && self.slots.len() >= self.config.key_count_max {
            return Err(StrongRefusal::Full);
        }
        Ok(self.slots.entry(key.clone()).or_default())
    }

    /// The slot of `key` if `ballot` may be promised or accepted there,
    /// else the refusal to answer. The same ballot again is the same
    /// proposer's attempt repeated (a duplicated or resent message).
    fn slot_at(&mut self, key: &Key, ballot: Ballot) -> Result<&mut Slot, StrongRefusal> {
        let forget = self.config.debug_forget_promises;
        let slot = self.slot_for(key)?;
        if ballot < slot.promised && !forget {
            return Err(StrongRefusal::Promised(slot.promised));
        }
        Ok(slot)
    }

    fn prepare(&mut self, id: u64, key: &Key, ballot: Ballot) -> (StrongMessage, Option<(Key, Slot)>) {
        let slot = match self.slot_at(key, ballot) {
            Ok(slot) => slot,
            Err(why) => return (StrongMessage::Refused { id, ballot, why }, None),
        };
        let changed = ballot != slot.promised;
        slot.promised = ballot;
        let answer =
            StrongMessage::Promise { id, ballot, accepted: slot.accepted, state: slot.state.clone() };
        (answer, changed.then(|| (key.clone(), slot.clone())))
    }

    fn accept(
        &mut self,
        id: u64,
        key: &Key,
        ballot: Ballot,
        state: &StrongState,
        next: Option<Ballot>,
    ) -> (StrongMessage, Option<(Key, Slot)>) {
        let slot = match self.slot_at(key, ballot) {
            Ok(slot) => slot,
            Err(why) => return (StrongMessage::Refused { id, ballot, why }, None),
        };
        slot.accepted = ballot;
        slot.state = state.clone();
        // Accepting at `ballot` and promising the proposer's next ballot in
        // one step: no other proposal can come between them here.
        slot.promised = next.map_or(ballot, |n| n.max(ballot));
        (StrongMessage::Accepted { id, ballot }, Some((key.clone(), slot.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use geocache_crdt::NodeId;

    fn key() -> Key {
        Key::new("ns", Bytes::from_static(b"k"))
    }

    fn b(round: u64, proposer: u64) -> Ballot {
        Ballot::new(round, NodeId(proposer), 1)
    }

    #[test]
    fn promises_refuse_lower_ballots_and_accepts_carry_the_next_promise() {
        let mut a = Acceptor::new(AcceptorConfig::default());
        let prepare = |id, ballot| StrongMessage::Prepare { id, key: key(), ballot };
        let (answer, durable) = a.handle(&prepare(1, b(2, 1))).unwrap();
        assert!(matches!(answer, StrongMessage::Promise { accepted: Ballot::ZERO, .. }));
        assert!(durable.is_some(), "a new promise is made durable before it leaves");
        let (answer, _) = a.handle(&prepare(2, b(1, 9))).unwrap();
        assert_eq!(
            answer,
            StrongMessage::Refused { id: 2, ballot: b(1, 9), why: StrongRefusal::Promised(b(2, 1)) }
        );
        let state =
            StrongState { version: 1, value: Some(Bytes::from_static(b"v")), ..StrongState::default() };
        let accept = StrongMessage::Accept {
            id: 1,
            key: key(),
            ballot: b(2, 1),
            state: state.clone(),
            next: Some(b(3, 1)),
        };
        assert_eq!(a.handle(&accept).unwrap().0, StrongMessage::Accepted { id: 1, ballot: b(2, 1) });
        let slot = a.slot(&key()).unwrap();
        assert_eq!((slot.promised, slot.accepted, &slot.state), (b(3, 1), b(2, 1), &state));
        // Another proposer's prepare above the next ballot still wins, and
        // sees what was accepted.
        let (answer, _) = a.handle(&prepare(3, b(4, 2))).unwrap();
        assert!(matches!(answer, StrongMessage::Promise { accepted, .. } if accepted == b(2, 1)));
    }

    #[test]
    fn a_full_acceptor_refuses_new_keys_only() {
        let mut a = Acceptor::new(AcceptorConfig { key_count_max: 1, ..AcceptorConfig::default() });
        let prepare = |name: &'static [u8]| StrongMessage::Prepare {
            id: 1,
            key: Key::new("ns", Bytes::from_static(name)),
            ballot: b(1, 1),
        };
        assert!(matches!(a.handle(&prepare(b"a")).unwrap().0, StrongMessage::Promise { .. }));
        assert!(matches!(
            a.handle(&prepare(b"b")).unwrap().0,
            StrongMessage::Refused { why: StrongRefusal::Full, .. }
        ));
        assert!(matches!(a.handle(&prepare(b"a")).unwrap().0, StrongMessage::Promise { .. }));
    }
}
