//! Clients of strong keys (issue 16): each adds one to a strong key by a
//! strong read and a compare-and-set of the value read plus one, retried
//! with the state a refusal returns, through the very CASPaxos the node
//! runs (`geocache_gossip::strong`, driven by the core). What each outcome
//! was is kept for the `strong_linearizable` checker.

use bytes::Bytes;
use geocache_crdt::Key;
use geocache_gossip::strong::{Change, Outcome, ProposalId, StrongState};
use std::collections::BTreeMap;

use crate::world::World;

/// Compare-and-sets one increment may try before it gives up.
const CAS_TRIES_MAX: u32 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Read,
    Cas { expected: u64, tries: u32 },
}

/// One increment under way.
#[derive(Clone, Copy, Debug)]
struct StrongOp {
    key: usize,
    step: Step,
}

/// Strong increments under way, and what became of them.
#[derive(Debug, Default)]
pub struct StrongClients {
    under_way: BTreeMap<(usize, ProposalId), StrongOp>,
    /// Per strong key: increments acknowledged.
    pub acked: BTreeMap<usize, u64>,
    /// Per strong key: increments that may or may not have been made
    /// (`Outcome::Unknown`, or under way at a node that crashed).
    pub unknown: BTreeMap<usize, u64>,
    /// Compare-and-sets chosen, by (key, version they were made against):
    /// more than one for a pair is a lost update.
    pub chosen_against: BTreeMap<(usize, u64), u32>,
    /// Proposals that got no majority (the region cut off, say).
    pub unavailable: u64,
    /// Increments given up after [`CAS_TRIES_MAX`] refusals.
    pub given_up: u64,
}

/// Strong key number `k`.
pub fn strong_key(k: usize) -> Key {
    Key::new("strong", Bytes::from(format!("s{k}")))
}

/// The count a strong key's state holds.
pub fn count_of(state: &StrongState) -> u64 {
    state.value.as_ref().and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0)
}

impl World {
    /// A client at `node` starts adding one to a strong key.
    pub(crate) fn strong_increment(&mut self, node: usize) {
        let key = self.rng_below(self.scenario.workload.strong_keys);
        self.propose_strong(node, StrongOp { key, step: Step::Read }, Change::Read);
    }

    fn rng_below(&mut self, n: usize) -> usize {
        use rand::RngExt;
        self.rng.random_range(0..n)
    }

    fn propose_strong(&mut self, node: usize, op: StrongOp, change: Change) {
        let mono = self.mono_ms();
        let at = geocache_crdt::Hlc::new(self.node_now_ms(node), 0);
        let (core, mut access) = self.core_and_store(node);
        match core.propose_strong(strong_key(op.key), change, at, &mut access, mono) {
            Some(id) => {
                self.strong.under_way.insert((node, id), op);
            }
            None => self.strong.unavailable += 1,
        }
        self.flush(node);
    }

    /// What became of proposal `id` of node `node`.
    pub(crate) fn strong_outcome(&mut self, node: usize, id: ProposalId, outcome: Outcome) {
        let Some(op) = self.strong.under_way.remove(&(node, id)) else { return };
        let cas = |state: &StrongState, tries: u32| {
            let value = Bytes::from((count_of(state) + 1).to_string());
            let change = Change::CompareAndSet { expected: state.version, value, expires_at_ms: None };
            (StrongOp { key: op.key, step: Step::Cas { expected: state.version, tries } }, change)
        };
        match (op.step, outcome) {
            (Step::Read, Outcome::Chosen(state)) => {
                let (next, change) = cas(&state, 1);
                self.propose_strong(node, next, change);
            }
            (Step::Cas { tries, .. }, Outcome::Refused(state)) if tries < CAS_TRIES_MAX => {
                let (next, change) = cas(&state, tries + 1);
                self.propose_strong(node, next, change);
            }
            (Step::Cas { .. }, Outcome::Refused(_)) => self.strong.given_up += 1,
            (Step::Cas { expected, .. }, Outcome::Chosen(_)) => {
                *self.strong.acked.entry(op.key).or_default() += 1;
                *self.strong.chosen_against.entry((op.key, expected)).or_default() += 1;
            }
            (Step::Cas { .. }, Outcome::Unknown) => *self.strong.unknown.entry(op.key).or_default() += 1,
            (_, _) => self.strong.unavailable += 1,
        }
    }

    /// Node `node` crashed: its proposals die with it, and a
    /// compare-and-set among them may have been made.
    pub(crate) fn strong_node_crashed(&mut self, node: usize) {
        let lost: Vec<(usize, ProposalId)> = self
            .strong
            .under_way
            .range((node, ProposalId(0))..)
            .take_while(|((n, _), _)| *n == node)
            .map(|(k, _)| *k)
            .collect();
        for k in lost {
            if let Some(op) = self.strong.under_way.remove(&k) {
                if matches!(op.step, Step::Cas { .. }) {
                    *self.strong.unknown.entry(op.key).or_default() += 1;
                }
            }
        }
    }

    /// The strong keys' verdict: no two compare-and-sets chosen against
    /// one version, and each key's count (its state at the highest ballot
    /// any acceptor's disk holds) between the increments acknowledged and
    /// those plus the unknown ones.
    pub fn strong_errors(&self) -> Vec<String> {
        let mut errors: Vec<String> = self
            .strong
            .chosen_against
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|((k, v), n)| format!("s{k}: {n} compare-and-sets chosen against version {v}"))
            .collect();
        if self.scenario.workload.strong_incr_share <= 0.0 {
            return errors;
        }
        for k in 0..self.scenario.workload.strong_keys {
            let key = strong_key(k);
            let newest = self
                .nodes
                .iter()
                .filter_map(|n| n.acceptor_slots.get(&key))
                .max_by_key(|slot| slot.accepted)
                .map(|slot| count_of(&slot.state))
                .unwrap_or(0);
            let acked = self.strong.acked.get(&k).copied().unwrap_or(0);
            let unknown = self.strong.unknown.get(&k).copied().unwrap_or(0);
            if newest < acked || newest > acked + unknown {
                errors.push(format!("s{k}: counts {newest}, {acked} increments acked, {unknown} unknown"));
            }
        }
        errors
    }
}
