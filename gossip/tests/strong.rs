//! CASPaxos in memory: three regions (one acceptor each), a client per
//! region counting with strong reads and compare-and-set, over a network
//! that delays, loses, duplicates and reorders messages, cuts a region off
//! and restarts an acceptor (its slots kept, as the data dir keeps them).
//!
//! What must hold, seed after seed: no two compare-and-sets chosen against
//! one version, and the counter ends between the increments acknowledged
//! and those plus the ones whose outcome was unknown (`Outcome::Unknown`);
//! a region cut off gets no change made. An acceptor that forgets its
//! promises must be caught.

use bytes::Bytes;
use geocache_crdt::{Hlc, Key, NodeId};
use geocache_gossip::strong::{
    Acceptor, AcceptorConfig, Change, Outcome, ProposalId, Proposer, ProposerConfig, StrongMessage,
    StrongState,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

const NODES: usize = 3;
const INCREMENTS_PER_CLIENT: u64 = 15;
const TIME_MS_MAX: u64 = 600_000;

fn key() -> Key {
    Key::new("strong", Bytes::from_static(b"counter"))
}

fn count_of(state: &StrongState) -> u64 {
    state.value.as_ref().and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Read,
    Cas,
}

struct Client {
    node: usize,
    pending: Option<(ProposalId, Step, u64)>,
    wake_ms: u64,
    acked: u64,
    unknown: u64,
    unavailable: u64,
}

struct Node {
    proposer: Proposer,
    acceptor: Acceptor,
    /// Down (restarting: messages to it are lost) until then.
    down_until_ms: u64,
}

struct Run {
    now_ms: u64,
    rng: SmallRng,
    nodes: Vec<Node>,
    acceptors: Vec<NodeId>,
    /// (delivery time, sequence) -> (from, to, message).
    in_flight: BTreeMap<(u64, u64), (usize, usize, StrongMessage)>,
    seq: u64,
    /// Regions cut off from the others, and until when.
    cut: Option<(usize, u64, u64)>,
    clients: Vec<Client>,
    /// Expected version of every compare-and-set chosen.
    chosen_against: BTreeMap<u64, usize>,
    /// Changes made in the region that was cut off while it was.
    made_while_cut: u64,
}

impl Run {
    fn new(seed: u64, forget_promises: bool) -> Run {
        let acceptors: Vec<NodeId> = (1..=NODES as u64).map(NodeId).collect();
        let config = AcceptorConfig { debug_forget_promises: forget_promises, ..AcceptorConfig::default() };
        let proposer =
            ProposerConfig { deadline_ms: 3_000, attempt_ms_max: 300, ..ProposerConfig::default() };
        let nodes = acceptors
            .iter()
            .map(|&id| Node {
                proposer: Proposer::new(id, 1, proposer.clone()),
                acceptor: Acceptor::new(config.clone()),
                down_until_ms: 0,
            })
            .collect();
        let mut rng = SmallRng::seed_from_u64(seed);
        let cut_region = rng.random_range(0..NODES);
        let cut_at = rng.random_range(200..2_000);
        Run {
            now_ms: 0,
            nodes,
            acceptors,
            in_flight: BTreeMap::new(),
            seq: 0,
            cut: Some((cut_region, cut_at, cut_at + rng.random_range(1_000..5_000))),
            clients: (0..NODES)
                .map(|node| Client {
                    node,
                    pending: None,
                    wake_ms: rng.random_range(0..50),
                    acked: 0,
                    unknown: 0,
                    unavailable: 0,
                })
                .collect(),
            rng,
            chosen_against: BTreeMap::new(),
            made_while_cut: 0,
        }
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.is_some_and(|(r, from, until)| {
            (a == r) != (b == r) && self.now_ms >= from && self.now_ms < until
        })
    }

    fn send(&mut self, from: usize, to: usize, message: StrongMessage) {
        if self.is_cut(from, to) || self.rng.random_bool(0.05) {
            return;
        }
        let copies = if self.rng.random_bool(0.02) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = if from == to { 0 } else { self.rng.random_range(5..60) };
            self.seq += 1;
            self.in_flight.insert((self.now_ms + delay, self.seq), (from, to, message.clone()));
        }
    }

    fn flush(&mut self, node: usize) {
        while let Some((to, message)) = self.nodes[node].proposer.poll_transmit() {
            let to = self.acceptors.iter().position(|&a| a == to).expect("an acceptor");
            self.send(node, to, message);
        }
    }

    fn deliver(&mut self, from: usize, to: usize, message: StrongMessage) {
        if self.nodes[to].down_until_ms > self.now_ms || self.is_cut(from, to) {
            return;
        }
        match message {
            StrongMessage::Prepare { .. } | StrongMessage::Accept { .. } => {
                if let Some((answer, _durable)) = self.nodes[to].acceptor.handle(&message) {
                    self.send(to, from, answer);
                }
            }
            answer => {
                let now = self.now_ms;
                self.nodes[to].proposer.handle(self.acceptors[from], answer, now);
                self.flush(to);
            }
        }
    }

    /// Delivers every message due by now and fires the proposers' timers.
    fn deliver_due(&mut self) {
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > self.now_ms {
                break;
            }
            let (from, to, message) = entry.remove();
            self.deliver(from, to, message);
        }
        for node in 0..NODES {
            let now = self.now_ms;
            self.nodes[node].proposer.handle_timeout(now);
            self.flush(node);
        }
    }

    fn propose(&mut self, client: usize, change: Change, step: Step, read: u64) {
        let node = self.clients[client].node;
        let now = self.now_ms;
        let acceptors = self.acceptors.clone();
        let id = self.nodes[node].proposer.propose(key(), change, Hlc::new(now, 0), &acceptors, now);
        self.clients[client].pending = Some((id, step, read));
        self.flush(node);
    }

    fn cas_after(&mut self, client: usize, state: &StrongState) {
        let value = Bytes::from((count_of(state) + 1).to_string());
        let change = Change::CompareAndSet { expected: state.version, value, expires_at_ms: None };
        self.propose(client, change, Step::Cas, state.version);
    }

    fn outcomes(&mut self) {
        for node in 0..NODES {
            while let Some((id, outcome)) = self.nodes[node].proposer.poll_outcome() {
                let mine = |c: &Client| c.node == node && c.pending.is_some_and(|(p, ..)| p == id);
                let Some(c) = self.clients.iter().position(mine) else {
                    continue;
                };
                let (_, step, read) = self.clients[c].pending.take().expect("pending");
                if std::env::var("STRONG_TRACE").is_ok() {
                    eprintln!(
                        "t={} node {node} {id:?} {:?} read {read}: {outcome:?}",
                        self.now_ms,
                        step == Step::Cas
                    );
                }
                let cut_off = self
                    .cut
                    .is_some_and(|(r, from, until)| r == node && self.now_ms >= from && self.now_ms < until);
                match (step, outcome) {
                    (Step::Read, Outcome::Chosen(state)) | (Step::Cas, Outcome::Refused(state)) => {
                        if self.clients[c].acked < INCREMENTS_PER_CLIENT {
                            self.cas_after(c, &state);
                        }
                    }
                    (Step::Cas, Outcome::Chosen(_)) => {
                        self.clients[c].acked += 1;
                        *self.chosen_against.entry(read).or_default() += 1;
                        if cut_off {
                            self.made_while_cut += 1;
                        }
                        self.clients[c].wake_ms = self.now_ms + 1;
                    }
                    (_, Outcome::Unknown) => {
                        self.clients[c].unknown += 1;
                        self.clients[c].wake_ms = self.now_ms + 10;
                    }
                    (_, Outcome::Unavailable) => {
                        self.clients[c].unavailable += 1;
                        self.clients[c].wake_ms = self.now_ms + 10;
                    }
                    (_, _) => self.clients[c].wake_ms = self.now_ms + 10,
                }
            }
        }
    }

    fn step(&mut self) -> bool {
        // Clients with nothing pending start a read.
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            if client.pending.is_none()
                && client.acked < INCREMENTS_PER_CLIENT
                && client.wake_ms <= self.now_ms
            {
                self.propose(c, Change::Read, Step::Read, 0);
            }
        }
        let next_message = self.in_flight.keys().next().map(|&(at, _)| at);
        let next_timer = self.nodes.iter().filter_map(|n| n.proposer.poll_timeout()).min();
        let next_client = self
            .clients
            .iter()
            .filter(|c| c.pending.is_none() && c.acked < INCREMENTS_PER_CLIENT)
            .map(|c| c.wake_ms)
            .min();
        let Some(next) = [next_message, next_timer, next_client].into_iter().flatten().min() else {
            return false;
        };
        self.now_ms = next.max(self.now_ms);
        // An acceptor restarts now and then, one at a time, its slots kept.
        let all_up = self.nodes.iter().all(|n| n.down_until_ms <= self.now_ms);
        if all_up && self.rng.random_bool(0.002) {
            let n = self.rng.random_range(0..NODES);
            self.nodes[n].down_until_ms = self.now_ms + self.rng.random_range(100..2_000);
        }
        self.deliver_due();
        self.outcomes();
        self.now_ms < TIME_MS_MAX
    }

    /// Runs to the end, heals, and reads the counter; the verdicts, and
    /// how many outcomes were unknown and unavailable.
    fn verdicts(self) -> Vec<String> {
        self.run().0
    }

    fn run(mut self) -> (Vec<String>, u64, u64) {
        while self.clients.iter().any(|c| c.acked < INCREMENTS_PER_CLIENT) && self.step() {}
        for n in &mut self.nodes {
            n.down_until_ms = 0;
        }
        self.cut = None;
        let mut last = None;
        while last.is_none() && self.now_ms < TIME_MS_MAX + 60_000 {
            if self.clients[0].pending.is_none() {
                let acceptors = self.acceptors.clone();
                let id = self.nodes[0].proposer.propose(
                    key(),
                    Change::Read,
                    Hlc::new(self.now_ms, 0),
                    &acceptors,
                    self.now_ms,
                );
                self.clients[0].pending = Some((id, Step::Read, 0));
                self.flush(0);
            }
            let next = self.in_flight.keys().next().map(|&(at, _)| at);
            let timer = self.nodes.iter().filter_map(|n| n.proposer.poll_timeout()).min();
            self.now_ms =
                [next, timer].into_iter().flatten().min().unwrap_or(self.now_ms + 10).max(self.now_ms);
            self.deliver_due();
            while let Some((id, outcome)) = self.nodes[0].proposer.poll_outcome() {
                if self.clients[0].pending.is_some_and(|(p, ..)| p == id) {
                    self.clients[0].pending = None;
                    if let Outcome::Chosen(state) = outcome {
                        last = Some(state);
                    }
                }
            }
        }
        let mut failures = Vec::new();
        let acked: u64 = self.clients.iter().map(|c| c.acked).sum();
        let unknown: u64 = self.clients.iter().map(|c| c.unknown).sum();
        let unavailable: u64 = self.clients.iter().map(|c| c.unavailable).sum();
        let Some(last) = last else {
            return (vec!["the final read never succeeded".into()], unknown, unavailable);
        };
        let count = count_of(&last);
        if count < acked || count > acked + unknown {
            failures.push(format!("counter {count}: {acked} increments acked, {unknown} unknown"));
        }
        for (version, times) in &self.chosen_against {
            if *times > 1 {
                failures.push(format!("{times} compare-and-sets chosen against version {version}"));
            }
        }
        if self.made_while_cut > 0 {
            failures.push(format!("{} changes made in the region cut off", self.made_while_cut));
        }
        if acked < INCREMENTS_PER_CLIENT * NODES as u64 {
            failures.push(format!("only {acked} increments acked before the time limit"));
        }
        (failures, unknown, unavailable)
    }
}

#[test]
fn counters_built_from_strong_compare_and_set_count_every_acknowledged_increment() {
    let (mut unknown, mut unavailable) = (0, 0);
    for seed in 1..=200 {
        let (failures, u, n) = Run::new(seed, false).run();
        assert!(failures.is_empty(), "seed {seed}: {failures:?}");
        unknown += u;
        unavailable += n;
    }
    // The faults reached the paths they are meant to: a region cut off was
    // refused, and attempts cut short left outcomes unknown.
    assert!(unknown > 0 && unavailable > 0, "unknown {unknown}, unavailable {unavailable}");
    eprintln!("200 seeds: {unknown} outcomes unknown, {unavailable} unavailable");
}

#[test]
fn an_acceptor_that_forgets_its_promises_is_caught() {
    let caught = (1..=200).filter(|&seed| !Run::new(seed, true).verdicts().is_empty()).count();
    assert!(caught > 0, "no seed caught acceptors that forget their promises");
    eprintln!("{caught} of 200 seeds caught acceptors that forget their promises");
}

#[test]
fn a_proposer_that_keeps_its_key_skips_the_prepare() {
    let acceptors: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut proposer = Proposer::new(NodeId(1), 1, ProposerConfig::default());
    let mut accs: Vec<Acceptor> = (0..3).map(|_| Acceptor::new(AcceptorConfig::default())).collect();
    let mut round_trips = Vec::new();
    for n in 0..3u64 {
        let value = Bytes::from(n.to_string());
        let id =
            proposer.propose(key(), Change::Put { value, expires_at_ms: None }, Hlc::ZERO, &acceptors, 0);
        let mut trips = 0;
        let mut outcome = None;
        while outcome.is_none() {
            let sent: Vec<(NodeId, StrongMessage)> =
                std::iter::from_fn(|| proposer.poll_transmit()).collect();
            assert!(!sent.is_empty(), "nothing to send and no outcome");
            trips += 1;
            let kinds: BTreeSet<&str> = sent
                .iter()
                .map(|(_, m)| if matches!(m, StrongMessage::Prepare { .. }) { "prepare" } else { "accept" })
                .collect();
            assert_eq!(kinds.len(), 1);
            for (to, message) in sent {
                let (answer, _) = accs[(to.0 - 1) as usize].handle(&message).expect("an acceptor's message");
                proposer.handle(to, answer, 0);
            }
            outcome = proposer.poll_outcome();
        }
        assert!(matches!(outcome, Some((got, Outcome::Chosen(_))) if got == id));
        round_trips.push(trips);
    }
    assert_eq!(round_trips, vec![2, 1, 1], "prepare and accept first, then accept alone");
}

#[test]
#[ignore]
fn trace_one_seed() {
    let seed = std::env::var("STRONG_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    eprintln!("{:?}", Run::new(seed, false).verdicts());
}
