//! The simulation: one virtual clock, one seeded RNG, an event queue with
//! deterministic tie-breaking, and on every node the replication core the
//! real node runs. This file is the scheduler and the pump between cores
//! and the network; the workload (`workload.rs`), faults (`faults.rs`),
//! network (`links.rs`) and oracle (`oracle.rs`) live beside it.

use bytes::Bytes;
use foldhash::fast::FixedState;
use geocache_crdt::{codec, NodeId};
use geocache_gossip::core::{Core, CoreEvent};
use geocache_gossip::durability::Durability;
use geocache_gossip::identities::Link;
use geocache_gossip::replicator::Transmit;
use geocache_gossip::wire::Message;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::key_space::KeySpace;
use crate::links::{Fate, Hop, Links};
use crate::network::region_delays_us;
use crate::oracle::Oracle;
use crate::scenario::Scenario;
use crate::sim_node::{addr, core_config, identity, node_name, SimAccess, SimNode};
use crate::sim_store::SimStore;

pub(crate) use crate::events::PendingOp;
use crate::events::{Datagram, Delivery, EventKind, Scheduled, TransferSent};
pub use crate::tallies::Tallies;

/// The longest the cluster may take to form before the workload starts
/// anyway, virtual ms.
const FORMATION_MS_MAX: u64 = 30_000;
/// How often expired entries are reclaimed, virtual ms.
const SWEEP_INTERVAL_MS: u64 = 1_000;

/// A finished or running simulation.
pub struct World {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now_us: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) links: Links,
    pub(crate) zipf_cdf: Vec<f64>,
    /// Node index by origin id (each life of a node has its own).
    pub(crate) by_origin: HashMap<NodeId, usize, FixedState>,
    /// Node index by gossip address (the same across lives).
    by_addr: BTreeMap<SocketAddr, usize>,
    /// Where nodes join: the first node of each region.
    pub(crate) seeds: Vec<SocketAddr>,
    /// Every key of the workload, made once (one shared namespace).
    pub(crate) keys: Arc<KeySpace>,
    pub(crate) oracle: Oracle,
    /// Packed entries shared by every node's store (`pack_cache.rs`).
    packs: crate::pack_cache::PackCache,
    /// Each node's link, by index ([`World::node_links`]).
    links_of: Arc<[Link]>,
    /// Each crash fault, as the other nodes noticed it.
    pub crashes: Vec<crate::crash_watch::CrashWatch>,
    /// Client operations at a sidecar waiting for a fill of their key.
    pub(crate) pending_ops: BTreeMap<(usize, geocache_crdt::Key), Vec<PendingOp>>,
    /// Keys sent in the full transfer under way from one node to another
    /// (since its chunk 0).
    transfer_keys: BTreeMap<(usize, usize), TransferSent>,
    /// Totals.
    pub tallies: Tallies,
    /// Strong increments under way and what became of them
    /// (`strong_clients.rs`).
    pub(crate) strong: crate::strong_clients::StrongClients,
    /// `(virtual s, outstanding applications)`, once a second: how far the
    /// cluster is from converged over time.
    pub convergence: Vec<(f64, i64)>,
    pub(crate) next_origin: u64,
    /// When the cluster had formed and the workload and faults started:
    /// the scenario's time 0.
    pub(crate) start_us: u64,
    workload_end_us: u64,
    pub(crate) end_us: u64,
}

fn ms(us: u64) -> u64 {
    us / 1_000
}

impl World {
    /// Builds the deployment and schedules the workload and the faults.
    pub fn new(scenario: Scenario, seed: u64) -> World {
        let delays_us = region_delays_us(&scenario);
        let keys = Arc::new(KeySpace::new(scenario.workload.keys));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut seeds = Vec::new();
        let mut placement = Vec::new();
        for (r, region) in scenario.regions.iter().enumerate() {
            for n in 0..region.nodes {
                if n == 0 {
                    seeds.push(addr(placement.len()));
                }
                placement.push((r, n));
            }
        }
        let mut nodes = Vec::new();
        for (i, &(r, slot)) in placement.iter().enumerate() {
            let origin = NodeId(i as u64 + 1);
            let region = &scenario.regions[r];
            let me = identity(&scenario, (r, slot), i, origin, 0);
            let kind = me.kind;
            // The core joins when it is made; the first datagrams leave at
            // formation.
            let core = Core::new(me, core_config(&scenario, r, &seeds, true), rng.random(), 0);
            nodes.push(SimNode {
                region: r,
                slot,
                kind,
                origin,
                store: SimStore::new(origin, region.memory_mib << 20, &scenario.debug, keys.clone()),
                core,
                up: true,
                skew_ms: 0,
                timer_at_us: u64::MAX,
                isolated: false,
                checkpoint: Vec::new(),
                acceptor_slots: std::collections::BTreeMap::new(),
                acceptor_enabled: true,
            });
        }
        let next_origin = nodes.len() as u64 + 1;
        let w = &scenario.workload;
        let mut weights: Vec<f64> = (1..=w.keys).map(|k| 1.0 / (k as f64).powf(w.zipf_s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        for x in weights.iter_mut() {
            acc += *x / total;
            *x = acc;
        }
        let workload_end_us = (w.duration_s * 1e6) as u64;
        let faults_end_us =
            scenario.faults.iter().map(|f| ((f.at_s + f.duration_s) * 1e6) as u64).max().unwrap_or(0);
        let end_us = workload_end_us.max(faults_end_us) + (scenario.heal_s * 1e6) as u64;
        let node_count = nodes.len();
        let mut oracle = Oracle::new(w.keys, scenario.regions.len());
        oracle.live_count = node_count as u32;
        let links_of = World::node_links(&scenario, &nodes);
        let mut world = World {
            rng,
            seed,
            now_us: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            by_origin: nodes.iter().enumerate().map(|(i, n)| (n.origin, i)).collect(),
            by_addr: (0..node_count).map(|i| (addr(i), i)).collect(),
            nodes,
            links: Links::new(delays_us, node_count),
            seeds,
            keys,
            zipf_cdf: weights,
            oracle,
            packs: crate::pack_cache::PackCache::default(),
            links_of,
            transfer_keys: BTreeMap::new(),
            pending_ops: BTreeMap::new(),
            crashes: Vec::new(),
            tallies: Tallies::default(),
            strong: crate::strong_clients::StrongClients::default(),
            convergence: Vec::new(),
            next_origin,
            start_us: 0,
            workload_end_us,
            end_us,
            scenario,
        };
        // Fault events go first among events at the same instant, start
        // before end, in scenario order.
        world.seq = 2 * world.scenario.faults.len() as u64;
        world.form();
        let start = world.start_us;
        for r in 0..world.scenario.regions.len() {
            let first = world.interarrival_us();
            world.schedule(first, EventKind::ClientOp { region: r });
        }
        for (i, f) in world.scenario.faults.iter().enumerate() {
            let (at, end) = ((f.at_s * 1e6) as u64, ((f.at_s + f.duration_s) * 1e6) as u64);
            world.queue.push(Reverse(Scheduled {
                at_us: start + at,
                seq: 2 * i as u64,
                kind: EventKind::FaultStart(i),
            }));
            world.queue.push(Reverse(Scheduled {
                at_us: start + end,
                seq: 2 * i as u64 + 1,
                kind: EventKind::FaultEnd(i),
            }));
        }
        world.schedule(SWEEP_INTERVAL_MS * 1_000, EventKind::Sweep);
        world.workload_end_us += start;
        world.end_us += start;
        world
    }

    /// Starts every node and runs until each sees every other as a member
    /// (or [`FORMATION_MS_MAX`] passed): a deployment is up before it takes
    /// traffic, so the workload and the faults start from there. Without
    /// this, writes made while members still find each other reach some
    /// peers only through anti-entropy, a start-up transient that would
    /// weigh on the traffic and lag figures of the whole run.
    fn form(&mut self) {
        for i in 0..self.nodes.len() {
            self.flush(i);
        }
        let others = self.nodes.len().saturating_sub(1);
        while self.nodes.iter().any(|n| n.core.members().len() < others) {
            let Some(Reverse(ev)) = self.queue.pop() else { break };
            if ev.at_us > FORMATION_MS_MAX * 1_000 {
                self.queue.push(Reverse(ev));
                break;
            }
            self.now_us = ev.at_us;
            crate::sim_store::TRACE_NOW_US.store(ev.at_us, std::sync::atomic::Ordering::Relaxed);
            self.step(ev.kind);
        }
        self.start_us = self.now_us;
    }

    fn schedule(&mut self, after_us: u64, kind: EventKind) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled { at_us: self.now_us + after_us, seq: self.seq, kind }));
    }

    /// Node `i`'s wall clock, skew included: what its store reads.
    pub(crate) fn node_now_ms(&self, i: usize) -> u64 {
        (ms(self.now_us) as i64 + self.nodes[i].skew_ms).max(0) as u64
    }

    /// The monotonic time a node's core runs on: a skewed wall clock only
    /// moves the node's HLC and expiries, never its timers (as the node's
    /// driver uses a monotonic clock for them).
    pub(crate) fn mono_ms(&self) -> u64 {
        ms(self.now_us)
    }

    fn arm_timer(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        let due_us = self.nodes[i].core.poll_timeout().saturating_mul(1_000).max(self.now_us);
        if due_us < self.nodes[i].timer_at_us {
            self.nodes[i].timer_at_us = due_us;
            self.seq += 1;
            self.queue.push(Reverse(Scheduled {
                at_us: due_us,
                seq: self.seq,
                kind: EventKind::Timer { node: i },
            }));
        }
    }

    /// Runs to the end; `progress` is called with the share done.
    pub fn run(&mut self, progress: &mut dyn FnMut(f64)) {
        let mut last_reported = 0;
        let span_us = (self.end_us - self.start_us).max(1);
        while let Some(Reverse(ev)) = self.queue.pop() {
            if ev.at_us > self.end_us {
                break;
            }
            self.now_us = ev.at_us;
            crate::sim_store::TRACE_NOW_US.store(ev.at_us, std::sync::atomic::Ordering::Relaxed);
            let elapsed_s = (self.now_us - self.start_us) / 1_000_000;
            if elapsed_s != last_reported {
                last_reported = elapsed_s;
                self.convergence.push((last_reported as f64, self.oracle.outstanding.max(0)));
                progress((self.now_us - self.start_us) as f64 / span_us as f64);
            }
            self.step(ev.kind);
        }
        self.now_us = self.end_us;
        progress(1.0);
    }

    /// Handles one event at `now_us`.
    fn step(&mut self, kind: EventKind) {
        match kind {
            EventKind::ClientOp { region } => {
                if self.now_us < self.workload_end_us {
                    self.client_op(region);
                    let next = self.interarrival_us();
                    self.schedule(next, EventKind::ClientOp { region });
                }
            }
            EventKind::Deliver(d) => {
                let Delivery { from, to, message, request } = *d;
                self.deliver(from, to, message, request)
            }
            EventKind::Datagram(d) => {
                let Datagram { from, to, bytes } = *d;
                if self.nodes[to].up {
                    let now = self.mono_ms();
                    let links = self.links_of.clone();
                    self.nodes[to].core.handle_datagram(&links[from], &bytes, now);
                    self.flush(to);
                }
            }
            EventKind::Timer { node } => {
                if self.nodes[node].timer_at_us == self.now_us {
                    self.nodes[node].timer_at_us = u64::MAX;
                }
                if self.nodes[node].up {
                    let now = self.mono_ms();
                    self.nodes[node].core.handle_timeout(now);
                    self.flush(node);
                }
            }
            EventKind::FaultStart(f) => self.fault(f, true),
            EventKind::FaultEnd(f) => self.fault(f, false),
            EventKind::Sweep => {
                for i in 0..self.nodes.len() {
                    let now = self.node_now_ms(i);
                    self.nodes[i].store.sweep(now);
                }
                self.schedule(SWEEP_INTERVAL_MS * 1_000, EventKind::Sweep);
            }
        }
    }

    /// Node `i`'s core, and its store as the core reaches it.
    pub(crate) fn core_and_store(&mut self, i: usize) -> (&mut Core, SimAccess<'_>) {
        let now_ms = self.node_now_ms(i);
        let node = &mut self.nodes[i];
        let access = SimAccess {
            store: &mut node.store,
            now_ms,
            oracle: &mut self.oracle,
            region: node.region,
            now_us: self.now_us,
            dropped: Vec::new(),
            packs: &mut self.packs,
            acceptor_slots: &mut node.acceptor_slots,
        };
        (&mut node.core, access)
    }

    /// Sends what node `i`'s core wants sent, acts on its events and
    /// re-arms its timer: what `node/src/cluster.rs`'s pump does.
    pub(crate) fn flush(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        while let Some((to, bytes)) = self.nodes[i].core.poll_datagram() {
            if let Some(&j) = self.by_addr.get(&to) {
                self.send_datagram(i, j, bytes);
            }
        }
        loop {
            let budget = self.links.budget(i, self.now_us);
            let (core, mut access) = self.core_and_store(i);
            let Some(t) = core.poll_transmit(&mut access, budget) else { break };
            if !self.send(i, &t) {
                // As the node's pump: the rest waits for the next wake-up.
                self.tallies.refused_frames += 1;
                self.nodes[i].core.transmit_refused(&t);
                break;
            }
        }
        while let Some(event) = self.nodes[i].core.poll_event() {
            match event {
                CoreEvent::MemberUp(peer) => {
                    self.tallies.member_ups += 1;
                    let now = self.now_us;
                    for w in self.crashes.iter_mut().filter(|w| addr(w.node) == peer.gossip) {
                        if w.restarted_us.is_some() && self.nodes[w.node].origin == peer.node {
                            w.ups.insert(i);
                            w.last_up_us = now;
                        }
                    }
                    if let Some(&j) = self.by_addr.get(&peer.gossip) {
                        // The driver reads RTTs from QUIC; here, the model's.
                        let rtt_ms =
                            2 * self.links.delays_us[self.nodes[i].region][self.nodes[j].region] / 1_000;
                        self.nodes[i].core.set_rtt(peer.node, rtt_ms);
                    }
                }
                CoreEvent::MemberDown(peer) => {
                    self.tallies.member_downs += 1;
                    let now = self.now_us;
                    for w in self.crashes.iter_mut().filter(|w| addr(w.node) == peer.gossip) {
                        if w.restarted_us.is_none() {
                            w.downs.insert(i);
                            w.last_down_us = now;
                        }
                    }
                }
                CoreEvent::Durability { seq, level, .. } => {
                    let origin = self.nodes[i].origin;
                    if let Some(w) = self.oracle.writes.get_mut(&(origin, seq)) {
                        let wanted = match w.durability {
                            2 => Durability::All,
                            1 => Durability::Region,
                            _ => Durability::Local,
                        };
                        w.acked_at_level |= level >= wanted;
                    }
                }
                CoreEvent::Strong { id, outcome } => self.strong_outcome(i, id, outcome),
                CoreEvent::TransferApplied { from, dropped } => {
                    if crate::sim_store::traced_key().is_some() {
                        eprintln!(
                            "trace t={} ms: full transfer from {from} applied at {} ({dropped} dropped)",
                            self.now_us / 1_000,
                            self.nodes[i].origin
                        );
                    }
                    self.tallies.transfers_applied += 1;
                }
                CoreEvent::Filled { key, .. } => {
                    for op in self.pending_ops.remove(&(i, key.clone())).unwrap_or_default() {
                        match op {
                            PendingOp::Read { key_number } => self.finish_read(i, key_number, &key),
                            PendingOp::Write { key_number, region, roll } => {
                                self.client_write(i, region, key_number, key.clone(), roll)
                            }
                        }
                    }
                }
                CoreEvent::Checkpoint { watermarks } => self.nodes[i].checkpoint = watermarks,
            }
        }
        self.arm_timer(i);
    }

    /// Sends a transmit; false when the sender's queue refused it.
    fn send(&mut self, from: usize, t: &Transmit) -> bool {
        let Some(&to) = self.by_origin.get(&t.to) else { return true };
        if let Message::FullTransferChunk { index, registers, .. } = &t.message {
            let mark = self.nodes[from].store.removal_mark();
            let sent = self.transfer_keys.entry((from, to)).or_default();
            if *index == 0 {
                sent.keys.clear();
                sent.sender_removal_mark = mark;
            }
            sent.keys.extend(registers.iter().map(|(k, _)| k.clone()));
        }
        self.send_raw(from, to, t.message.clone(), t.request)
    }

    fn send_raw(&mut self, from: usize, to: usize, message: Message, request: bool) -> bool {
        let bytes = codec::encoded_len(&message).unwrap_or(0) as u64;
        let kind = message.kind();
        let hop = self.hop(from, to, bytes, kind);
        match self.links.send(&hop, &self.scenario.network, &mut self.rng, self.now_us) {
            Fate::Refused => return false,
            Fate::Lost => {}
            Fate::After(delay) => {
                self.schedule(delay, EventKind::Deliver(Box::new(Delivery { from, to, message, request })))
            }
        }
        let wan = self.nodes[from].region != self.nodes[to].region;
        self.tallies.kinds.count(kind, wan, bytes);
        true
    }

    fn hop(&self, from: usize, to: usize, bytes: u64, kind: &'static str) -> Hop {
        Hop {
            from,
            to,
            from_region: self.nodes[from].region,
            to_region: self.nodes[to].region,
            isolated: self.nodes[from].isolated || self.nodes[to].isolated,
            bytes,
            kind,
        }
    }

    /// A membership datagram, over the same network as the replication
    /// messages, counted apart from them.
    fn send_datagram(&mut self, from: usize, to: usize, bytes: Bytes) {
        let size = bytes.len() as u64;
        self.tallies.membership_messages += 1;
        if self.nodes[from].region == self.nodes[to].region {
            self.tallies.membership_lan_bytes += size;
        } else {
            self.tallies.membership_wan_bytes += size;
        }
        let hop = self.hop(from, to, size, "membership");
        if let Fate::After(delay) = self.links.send(&hop, &self.scenario.network, &mut self.rng, self.now_us)
        {
            self.schedule(delay, EventKind::Datagram(Box::new(Datagram { from, to, bytes })));
        }
    }

    /// What a real transport would prove of each node: its certificate's
    /// name and region, and its address. Made once: a message is delivered
    /// hundreds of thousands of times a second.
    fn node_links(scenario: &Scenario, nodes: &[SimNode]) -> Arc<[Link]> {
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Link {
                name: node_name(i),
                region: Some(scenario.regions[n.region].name.clone()),
                addr: addr(i),
            })
            .collect()
    }

    fn deliver(&mut self, from: usize, to: usize, message: Message, request: bool) {
        if !self.nodes[to].up || !self.nodes[from].up {
            return;
        }
        let links = self.links_of.clone();
        let chunk = matches!(message, Message::FullTransferChunk { .. });
        let now = self.mono_ms();
        let (core, mut access) = self.core_and_store(to);
        let answer = core.handle_message(&links[from], message, &mut access, now);
        let dropped = access.dropped;
        if chunk {
            self.check_drops(from, to, dropped);
        }
        self.flush(to);
        if let (Some(answer), true) = (answer, request) {
            self.send_raw(to, from, answer, false);
        }
    }

    /// Keys the drop rule removed at `to` that `sender` sent in this very
    /// transfer and still holds, the same write: the rule ran on a transfer
    /// that had not arrived whole.
    fn check_drops(
        &mut self,
        sender: usize,
        to: usize,
        dropped: Vec<(geocache_crdt::Key, geocache_crdt::Dot)>,
    ) {
        let Some(sent) = self.transfer_keys.get(&(sender, to)) else { return };
        for (key, dot) in dropped {
            let store = &self.nodes[sender].store;
            // A key the sender lost during the transfer (evicted, say) and
            // got back since with the same write is rightly dropped: the
            // sender did not hold it when it made the chunk.
            let held = store.peek(&key).is_some_and(|e| e.dot() == dot)
                && !store.removed_since(&key, sent.sender_removal_mark);
            if held && sent.keys.contains(&key) && self.tallies.live_keys_dropped.len() < 16 {
                self.tallies
                    .live_keys_dropped
                    .push(format!("{key} (dot {}:{}) at node {to}", dot.origin, dot.seq));
            }
        }
    }
}
