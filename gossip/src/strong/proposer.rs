//! The proposer: runs each client's change through CASPaxos.
//!
//! One proposal per key at a time at this node (later ones queue behind
//! it, within a bound), each in attempts: prepare at a fresh ballot, take
//! the state accepted at the highest ballot among a majority's promises,
//! apply the change, accept the result at the same ballot. An attempt that
//! meets a higher promise, or gets no majority within
//! [`ProposerConfig::attempt_ms_max`], backs off and tries again above
//! what it saw, until [`ProposerConfig::deadline_ms`]. The accept also
//! asks for the promise of this node's next ballot for the key; when a
//! majority gave it, the next change of the key here skips the prepare.

use geocache_crdt::{Hlc, Key, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::ballot::Ballot;
use super::message::{StrongMessage, StrongRefusal};
use super::state::{Change, StrongState, RECENT_CHANGES_COUNT_MAX};

/// Bounds and periods of a proposer.
#[derive(Clone, Debug)]
pub struct ProposerConfig {
    /// An attempt without a majority by then is tried again.
    pub attempt_ms_max: u64,
    /// A proposal not decided by then ends `Unavailable`; one whose accept
    /// left keeps trying as long again to learn its fate, then ends
    /// `Unknown`.
    pub deadline_ms: u64,
    /// The first wait before an attempt is tried again; it doubles with
    /// each attempt, up to `backoff_ms_max`, plus a share that differs per
    /// node so that two proposers of one key stop colliding.
    pub backoff_ms_base: u64,
    /// The longest wait between attempts.
    pub backoff_ms_max: u64,
    /// Proposals running and queued at once; past it, `Busy`.
    pub proposal_count_max: usize,
    /// Keys whose next ballot this node holds promised (one round trip for
    /// their next change); past it, the oldest is forgotten.
    pub prepared_key_count_max: usize,
}

impl Default for ProposerConfig {
    fn default() -> ProposerConfig {
        ProposerConfig {
            attempt_ms_max: 1_000,
            deadline_ms: 5_000,
            backoff_ms_base: 20,
            backoff_ms_max: 320,
            proposal_count_max: 4_096,
            prepared_key_count_max: 65_536,
        }
    }
}

/// Names a proposal; its outcome comes back with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId(pub u64);

/// How a proposal ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The change was made (a read: the state was read); the state after.
    Chosen(StrongState),
    /// Its condition did not hold; the current state, read linearizably.
    Refused(StrongState),
    /// No majority answered in time, and no accept of a new state left
    /// this node: the change was not made.
    Unavailable,
    /// Accepts of the new state left this node but no majority confirmed
    /// them in time: the change may or may not have been made.
    Unknown,
    /// The acceptors hold as many keys as they may, and this is a new one.
    Full,
    /// Too many proposals at this node.
    Busy,
}

enum Phase {
    Preparing {
        attempt: u64,
        ballot: Ballot,
        promises: BTreeMap<NodeId, (Ballot, StrongState)>,
        refusals: BTreeSet<NodeId>,
        until_ms: u64,
    },
    Accepting {
        attempt: u64,
        ballot: Ballot,
        next: Ballot,
        state: StrongState,
        refused: bool,
        acks: BTreeSet<NodeId>,
        refusals: BTreeSet<NodeId>,
        until_ms: u64,
    },
    Waiting {
        until_ms: u64,
    },
}

struct Proposal {
    id: ProposalId,
    change: Change,
    /// The proposer's clock when the client asked (`Change::apply`).
    at: Hlc,
    /// The wall clock minus the core's clock when it was asked: each
    /// attempt's round starts at the wall time of the attempt.
    wall_offset_ms: i64,
    acceptors: Vec<NodeId>,
    deadline_ms: u64,
    attempts: u32,
    /// An accept of a state other than the one read left this node.
    accepts_sent: bool,
    /// The version the first such accept was built on: if it was made
    /// (by any proposer taking it up), the change is at the next version.
    base_version: Option<u64>,
    phase: Phase,
}

impl Proposal {
    fn quorum(&self) -> usize {
        self.acceptors.len() / 2 + 1
    }

    /// When it ends undecided: its deadline, or, once an accept of it
    /// left, another `deadline_ms` after it, to learn whether it was made
    /// while a majority can still be reached, rather than answer
    /// `Unknown` (which a client cannot act on).
    fn gives_up_at(&self, deadline_ms: u64) -> u64 {
        let resolve_ms = if self.accepts_sent { deadline_ms } else { 0 };
        self.deadline_ms.saturating_add(resolve_ms)
    }
}

struct Queued {
    id: ProposalId,
    change: Change,
    at: Hlc,
    /// The core's clock when it was asked.
    asked_ms: u64,
    acceptors: Vec<NodeId>,
    deadline_ms: u64,
}

/// This node's proposer.
pub struct Proposer {
    me: NodeId,
    /// This life of the node: in every ballot, and the high bits of every
    /// proposal id, so a restarted node never reuses either.
    life: u64,
    config: ProposerConfig,
    next_proposal: u64,
    next_attempt: u64,
    /// The highest round seen in any ballot: new ballots go above it.
    highest_round: u64,
    active: BTreeMap<Key, Proposal>,
    queued: BTreeMap<Key, VecDeque<Queued>>,
    queued_count: usize,
    /// Which key each running attempt is for.
    attempts: BTreeMap<u64, Key>,
    /// Keys whose next ballot a majority promised this node, with the
    /// state accepted at the ballot before it.
    prepared: BTreeMap<Key, (Ballot, StrongState)>,
    outbox: VecDeque<(NodeId, StrongMessage)>,
    outcomes: VecDeque<(ProposalId, Outcome)>,
}

impl Proposer {
    /// A proposer for node `me` in its life `life`: a number that grows
    /// from one life of the node to the next (its start time in ms), so
    /// ballots and proposal ids of a restarted node differ from any it
    /// used before (ids are `life << 20` on; a life would need a million
    /// proposals per millisecond it ran to reach the next one's).
    pub fn new(me: NodeId, life: u64, config: ProposerConfig) -> Proposer {
        let first = life.saturating_mul(1 << 20).max(1);
        Proposer {
            me,
            life,
            config,
            next_proposal: first,
            next_attempt: first,
            highest_round: 0,
            active: BTreeMap::new(),
            queued: BTreeMap::new(),
            queued_count: 0,
            attempts: BTreeMap::new(),
            prepared: BTreeMap::new(),
            outbox: VecDeque::new(),
            outcomes: VecDeque::new(),
        }
    }

    /// This node already holds version `version` of `key` (replicated
    /// from another proposer): a promise it holds for the key was given
    /// before that version, so the acceptors have promised a higher ballot
    /// since, and going straight to accept would cost a refused round trip.
    /// The next change prepares instead.
    pub fn saw_version(&mut self, key: &Key, version: u64) {
        if self.prepared.get(key).is_some_and(|(_, state)| state.version < version) {
            self.prepared.remove(key);
        }
    }

    /// Proposals running or queued.
    pub fn proposal_count(&self) -> usize {
        self.active.len() + self.queued_count
    }

    /// Starts `change` of `key`, asked for at `at` by this node's clock,
    /// among `acceptors` (one per region; a majority of them decides). Its
    /// outcome comes out of [`poll_outcome`](Self::poll_outcome) under the
    /// id returned.
    pub fn propose(
        &mut self,
        key: Key,
        change: Change,
        at: Hlc,
        acceptors: &[NodeId],
        now_ms: u64,
    ) -> ProposalId {
        let id = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        let mut acceptors = acceptors.to_vec();
        acceptors.sort_unstable();
        acceptors.dedup();
        if acceptors.is_empty() {
            self.outcomes.push_back((id, Outcome::Unavailable));
            return id;
        }
        if self.proposal_count() >= self.config.proposal_count_max {
            self.outcomes.push_back((id, Outcome::Busy));
            return id;
        }
        // A compare-and-set names a version its client saw: a promise held
        // from before it is stale.
        if let Change::CompareAndSet { expected, .. } | Change::DeleteIf { expected } = &change {
            self.saw_version(&key, *expected);
        }
        let deadline_ms = now_ms.saturating_add(self.config.deadline_ms);
        if self.active.contains_key(&key) {
            self.queued.entry(key).or_default().push_back(Queued {
                id,
                change,
                at,
                asked_ms: now_ms,
                acceptors,
                deadline_ms,
            });
            self.queued_count += 1;
            return id;
        }
        self.start(key, Queued { id, change, at, asked_ms: now_ms, acceptors, deadline_ms }, now_ms);
        id
    }

    fn start(&mut self, key: Key, q: Queued, now_ms: u64) {
        let proposal = Proposal {
            id: q.id,
            change: q.change,
            wall_offset_ms: i64::try_from(q.at.ms())
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(q.asked_ms).unwrap_or(i64::MAX)),
            at: q.at,
            acceptors: q.acceptors,
            deadline_ms: q.deadline_ms,
            attempts: 0,
            accepts_sent: false,
            base_version: None,
            phase: Phase::Waiting { until_ms: now_ms },
        };
        self.active.insert(key.clone(), proposal);
        self.attempt(&key, now_ms);
    }

    /// A new attempt of the proposal of `key`: straight to accept when this
    /// node holds the key's next ballot promised, else prepare.
    fn attempt(&mut self, key: &Key, now_ms: u64) {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.attempts.insert(attempt, key.clone());
        if let Some((ballot, state)) = self.prepared.remove(key) {
            self.accept(key, attempt, ballot, state, now_ms);
            return;
        }
        let Some(offset) = self.active.get(key).map(|p| p.wall_offset_ms) else { return };
        // At least the wall time of the attempt: another node's held
        // promise (whose rounds grow by one per change from its own first
        // prepare) is then most likely below it, and the prepare is not
        // refused for a round this node had not heard of; and a retry
        // starts as high as a change asked for now elsewhere, so older
        // proposals are not starved by newer ones. Any round is safe; this
        // only saves round trips.
        let wall_ms =
            u64::try_from(i64::try_from(now_ms).unwrap_or(i64::MAX).saturating_add(offset)).unwrap_or(0);
        let ballot = Ballot::new(self.highest_round.saturating_add(1).max(wall_ms), self.me, self.life);
        self.highest_round = ballot.round;
        let Some(p) = self.active.get_mut(key) else { return };
        p.attempts += 1;
        p.phase = Phase::Preparing {
            attempt,
            ballot,
            promises: BTreeMap::new(),
            refusals: BTreeSet::new(),
            until_ms: now_ms.saturating_add(self.config.attempt_ms_max),
        };
        for &to in &p.acceptors {
            self.outbox.push_back((to, StrongMessage::Prepare { id: attempt, key: key.clone(), ballot }));
        }
    }

    /// Phase 2 at `ballot`, on `current`: the state accepted at the highest
    /// ballot a majority reported.
    fn accept(&mut self, key: &Key, attempt: u64, ballot: Ballot, current: StrongState, now_ms: u64) {
        let me = self.me;
        let next = Ballot::new(ballot.round.saturating_add(1), me, self.life);
        self.highest_round = self.highest_round.max(next.round);
        let Some(p) = self.active.get_mut(key) else { return };
        let (state, refused) = if current.recent.contains(&(me, p.id.0)) {
            // An earlier attempt of this proposal was accepted: writing the
            // state back makes it chosen, without applying the change twice.
            (current, false)
        } else if p.accepts_sent
            && current.recent.len() >= RECENT_CHANGES_COUNT_MAX
            && p.base_version
                .is_none_or(|base| current.version > base.saturating_add(RECENT_CHANGES_COUNT_MAX as u64))
        {
            // An earlier attempt's accept left, and enough other proposers
            // changed the key since to push its name out: it may have been
            // made, and applying the change again (an increment) could make
            // it twice. (The names only ever drop out of a full list, and
            // only after as many changes.)
            self.finish(key, Outcome::Unknown, now_ms);
            return;
        } else {
            match p.change.apply(&current, (me, p.id.0), p.at) {
                Ok(next_state) => {
                    if next_state != current && !p.accepts_sent {
                        p.accepts_sent = true;
                        p.base_version = Some(current.version);
                    }
                    (next_state, false)
                }
                // The refusal is read linearizably: the current state is
                // written back at this ballot like a read.
                Err(current) => (current, true),
            }
        };
        p.attempts += 1;
        for &to in &p.acceptors {
            let message = StrongMessage::Accept {
                id: attempt,
                key: key.clone(),
                ballot,
                state: state.clone(),
                next: Some(next),
            };
            self.outbox.push_back((to, message));
        }
        p.phase = Phase::Accepting {
            attempt,
            ballot,
            next,
            state,
            refused,
            acks: BTreeSet::new(),
            refusals: BTreeSet::new(),
            until_ms: now_ms.saturating_add(self.config.attempt_ms_max),
        };
    }

    /// Feeds an acceptor's answer.
    pub fn handle(&mut self, from: NodeId, message: StrongMessage, now_ms: u64) {
        let (attempt, ballot) = match &message {
            StrongMessage::Promise { id, ballot, .. }
            | StrongMessage::Accepted { id, ballot }
            | StrongMessage::Refused { id, ballot, .. } => (*id, *ballot),
            _ => return,
        };
        self.highest_round = self.highest_round.max(ballot.round);
        let Some(key) = self.attempts.get(&attempt).cloned() else { return };
        let Some(p) = self.active.get_mut(&key) else { return };
        if !p.acceptors.contains(&from) {
            return;
        }
        let quorum = p.quorum();
        let acceptor_count = p.acceptors.len();
        match (&mut p.phase, message) {
            (
                Phase::Preparing { attempt: a, ballot: b, promises, .. },
                StrongMessage::Promise { accepted, state, .. },
            ) if *a == attempt && *b == ballot => {
                promises.insert(from, (accepted, state));
                if promises.len() >= quorum {
                    let current = promises
                        .values()
                        .max_by_key(|(accepted, _)| *accepted)
                        .map(|(_, s)| s.clone())
                        .unwrap_or_default();
                    self.accept(&key, attempt, ballot, current, now_ms);
                }
            }
            (Phase::Accepting { attempt: a, ballot: b, acks, .. }, StrongMessage::Accepted { .. })
                if *a == attempt && *b == ballot =>
            {
                acks.insert(from);
                if acks.len() >= quorum {
                    self.decided(&key, now_ms);
                }
            }
            (
                Phase::Preparing { attempt: a, refusals, .. } | Phase::Accepting { attempt: a, refusals, .. },
                StrongMessage::Refused { why, .. },
            ) if *a == attempt => match why {
                StrongRefusal::Full => {
                    let outcome = if p.accepts_sent { Outcome::Unknown } else { Outcome::Full };
                    self.finish(&key, outcome, now_ms);
                }
                StrongRefusal::Promised(higher) => {
                    self.highest_round = self.highest_round.max(higher.round);
                    refusals.insert(from);
                    // A majority can no longer answer yes.
                    if refusals.len() > acceptor_count - quorum {
                        self.retry(&key, now_ms);
                    }
                }
            },
            _ => {}
        }
    }

    /// A majority accepted: the proposal is decided.
    fn decided(&mut self, key: &Key, now_ms: u64) {
        let Some(p) = self.active.get(key) else { return };
        let Phase::Accepting { next, state, refused, .. } = &p.phase else { return };
        let outcome = if *refused { Outcome::Refused(state.clone()) } else { Outcome::Chosen(state.clone()) };
        if self.prepared.len() >= self.config.prepared_key_count_max {
            self.prepared.pop_first();
        }
        self.prepared.insert(key.clone(), (*next, state.clone()));
        self.finish(key, outcome, now_ms);
    }

    /// Ends the proposal of `key` with `outcome`, and starts the next one
    /// queued for the key (those whose deadline passed while they waited
    /// end `Unavailable`: they never started).
    fn finish(&mut self, key: &Key, outcome: Outcome, now_ms: u64) {
        let Some(p) = self.active.remove(key) else { return };
        self.attempts.retain(|_, k| k != key);
        self.outcomes.push_back((p.id, outcome));
        while let Some(q) = self.queued.get_mut(key).and_then(VecDeque::pop_front) {
            self.queued_count -= 1;
            if now_ms >= q.deadline_ms {
                self.outcomes.push_back((q.id, Outcome::Unavailable));
            } else {
                self.start(key.clone(), q, now_ms);
                break;
            }
        }
        if self.queued.get(key).is_some_and(VecDeque::is_empty) {
            self.queued.remove(key);
        }
    }

    /// The attempt failed: wait, then try again above what was seen, or
    /// give up at the deadline.
    fn retry(&mut self, key: &Key, now_ms: u64) {
        self.prepared.remove(key);
        self.attempts.retain(|_, k| k != key);
        let Some(p) = self.active.get_mut(key) else { return };
        if now_ms >= p.gives_up_at(self.config.deadline_ms) {
            let outcome = if p.accepts_sent { Outcome::Unknown } else { Outcome::Unavailable };
            self.finish(key, outcome, now_ms);
            return;
        }
        let doubling = p.attempts.min(6);
        let window = (self.config.backoff_ms_base << doubling).min(self.config.backoff_ms_max).max(1);
        // A share of the window that differs per node and per attempt.
        let spread =
            (self.me.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(p.attempts)).rotate_left(17) % window;
        p.phase = Phase::Waiting { until_ms: now_ms.saturating_add(window / 2 + spread) };
    }

    /// Fires what is due at `now_ms`: attempts out of time are tried again,
    /// waits that ended start their attempt, proposals past their deadline
    /// end.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let due: Vec<(Key, bool)> = self
            .active
            .iter()
            .filter_map(|(k, p)| match p.phase {
                Phase::Waiting { until_ms } if until_ms <= now_ms => Some((k.clone(), true)),
                Phase::Preparing { until_ms, .. } | Phase::Accepting { until_ms, .. }
                    if until_ms <= now_ms =>
                {
                    Some((k.clone(), false))
                }
                _ if p.gives_up_at(self.config.deadline_ms) <= now_ms => Some((k.clone(), false)),
                _ => None,
            })
            .collect();
        for (key, waited) in due {
            let deadline = self.config.deadline_ms;
            let past_deadline = self.active.get(&key).is_some_and(|p| p.gives_up_at(deadline) <= now_ms);
            if waited && !past_deadline {
                self.attempt(&key, now_ms);
            } else {
                self.retry(&key, now_ms);
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.active
            .values()
            .map(|p| match p.phase {
                Phase::Waiting { until_ms }
                | Phase::Preparing { until_ms, .. }
                | Phase::Accepting { until_ms, .. } => until_ms.min(p.gives_up_at(self.config.deadline_ms)),
            })
            .min()
    }

    /// The next message to send, and to whom.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, StrongMessage)> {
        self.outbox.pop_front()
    }

    /// The next proposal decided.
    pub fn poll_outcome(&mut self) -> Option<(ProposalId, Outcome)> {
        self.outcomes.pop_front()
    }
}
