//! The simulation: one virtual clock, one seeded RNG, an event queue with
//! deterministic tie-breaking, and the real membership (foca), replicator
//! and write logic on every node.

use bytes::Bytes;
use foldhash::fast::FixedState;
use geocache_crdt::{codec, Delta, Key, NodeId, Register, Value};
use geocache_gossip::membership::{Membership, MembershipEvent, INITIAL_CLUSTER_SIZE};
use geocache_gossip::peer::Peer;
use geocache_gossip::replicator::{
    Event as ReplicatorEvent, PeerInfo, Replicator, ReplicatorConfig, Transmit,
};
use geocache_gossip::wire::Message;
use geocache_node::write::{dropped_by_transfer, Condition, Ttl, Write, WriteOp};
use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::key_space::KeySpace;
use crate::network::region_delays_us;
use crate::scenario::{FaultKind, Scenario};
use crate::sim_store::SimStore;

/// The longest the cluster may take to form before the workload starts
/// anyway, virtual ms.
const FORMATION_MS_MAX: u64 = 30_000;
/// How often expired entries are reclaimed and a node that knows no member
/// announces itself to the seeds again (as the node's driver does every
/// second), virtual ms.
const SWEEP_INTERVAL_MS: u64 = 1_000;

enum EventKind {
    ClientOp {
        region: usize,
    },
    /// Boxed: a message is large, and events move on every heap operation.
    Deliver(Box<Delivery>),
    /// A membership datagram arrives. Boxed like `Deliver`.
    Datagram(Box<Datagram>),
    Timer {
        node: usize,
    },
    MembershipTimer {
        node: usize,
    },
    FaultStart(usize),
    FaultEnd(usize),
    Sweep,
}

struct Datagram {
    to: usize,
    bytes: Bytes,
}

struct Delivery {
    from: usize,
    to: usize,
    message: Message,
    request: bool,
}

struct Scheduled {
    at_us: u64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at_us, self.seq).cmp(&(other.at_us, other.seq))
    }
}

struct SimNode {
    region: usize,
    origin: NodeId,
    store: SimStore,
    replicator: Replicator,
    membership: Membership,
    /// The members this node's membership reported up, with the
    /// incarnation seen (the restart rule of the node's driver).
    members: BTreeMap<NodeId, u64>,
    up: bool,
    skew_ms: i64,
    /// The earliest replicator timer event queued for this node.
    timer_at_us: u64,
    /// The earliest membership timer event queued for this node.
    membership_timer_at_us: u64,
    isolated: bool,
}

/// A write the oracle knows of.
struct WriteRecord {
    key: Key,
    register: Arc<Register>,
    at_us: u64,
    origin_region: usize,
    /// Nodes that have applied it (origin included).
    applied: u32,
    durability: u8,
    acked_at_level: bool,
}

/// Totals a run produces; the report is made from them.
#[derive(Default)]
pub struct Tallies {
    /// Client reads.
    pub reads: u64,
    /// Client writes accepted.
    pub writes: u64,
    /// CAS writes refused (the value changed in between).
    pub cas_refused: u64,
    /// Client operations with no live node in their region.
    pub unavailable: u64,
    /// Reads older than the newest write acked anywhere at that instant.
    pub stale_reads: u64,
    /// Messages and bytes between regions.
    pub wan_messages: u64,
    /// Bytes between regions.
    pub wan_bytes: u64,
    /// Messages inside regions.
    pub lan_messages: u64,
    /// Bytes inside regions.
    pub lan_bytes: u64,
    /// Membership datagrams sent (not in the message counts above).
    pub membership_messages: u64,
    /// Membership bytes between regions.
    pub membership_wan_bytes: u64,
    /// Membership bytes inside regions.
    pub membership_lan_bytes: u64,
    /// Members reported up, summed over nodes.
    pub member_ups: u64,
    /// Members reported down (and forgotten), summed over nodes.
    pub member_downs: u64,
    /// Read-your-writes violations.
    pub ryw_violations: u64,
}

/// A finished or running simulation.
pub struct World {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    rng: ChaCha8Rng,
    now_us: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    nodes: Vec<SimNode>,
    delays_us: Vec<Vec<u64>>,
    partitions: BTreeSet<(usize, usize)>,
    loss: BTreeMap<(usize, usize), f64>,
    zipf_cdf: Vec<f64>,
    /// Node index by origin id (each life of a node has its own).
    by_origin: HashMap<NodeId, usize, FixedState>,
    /// Node index by gossip address (the same across lives).
    by_addr: BTreeMap<SocketAddr, usize>,
    /// Where nodes join: the first node of each region.
    seeds: Vec<SocketAddr>,
    /// Every key of the workload, made once (one shared namespace).
    keys: Arc<KeySpace>,
    /// Every write, by (origin, seq); iterated only where order cannot
    /// matter (a fold of a semilattice) or after sorting.
    writes: HashMap<(NodeId, u64), WriteRecord, FixedState>,
    /// Writes every live node had applied, folded by key (the oracle's
    /// settled part; `writes` keeps the rest).
    settled: HashMap<Key, Register, FixedState>,
    /// Live nodes now.
    live_count: u32,
    /// Newest acked write per key: its stamp and whether it is visible.
    newest: Vec<Option<(geocache_crdt::Stamp, bool)>>,
    /// Visibility lag samples (µs) per (from region, to region).
    lag_us: Vec<Option<Histogram<u64>>>,
    /// Totals.
    pub tallies: Tallies,
    /// Write applications still to happen on live nodes.
    outstanding: i64,
    /// `(virtual s, outstanding applications)`, once a second: how far the
    /// cluster is from converged over time.
    pub convergence: Vec<(f64, i64)>,
    next_origin: u64,
    /// When the cluster had formed and the workload and faults started:
    /// the scenario's time 0.
    start_us: u64,
    workload_end_us: u64,
    end_us: u64,
}

fn replicator_config(region: &crate::scenario::RegionSpec) -> ReplicatorConfig {
    let mut config = ReplicatorConfig::default();
    config.backlog.bytes_limit = usize::try_from(region.backlog_mib << 20).unwrap_or(usize::MAX);
    config
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, (i & 0xff) as u8], 7946))
}

/// Every node's HTTP address: the simulator has no clients over HTTP.
fn http_addr() -> SocketAddr {
    SocketAddr::from(([10, 255, 255, 255], 8080))
}

/// Node `i`'s membership, alone until it joins: its identity is its origin
/// id, region and gossip address, and `incarnation_ms`, the virtual time
/// this life started (a restarted node wins over its previous life).
fn membership(
    scenario: &Scenario,
    region: usize,
    i: usize,
    origin: NodeId,
    incarnation_ms: u64,
    seed: u64,
) -> Membership {
    let spec = &scenario.regions[region];
    let me = Peer {
        node: origin,
        region: spec.name.clone(),
        lat: spec.lat,
        lon: spec.lon,
        gossip: addr(i),
        http: http_addr(),
        incarnation: incarnation_ms,
    };
    // As the node does: sized for a small cluster, grown as members are seen.
    Membership::new(me, INITIAL_CLUSTER_SIZE, seed, incarnation_ms)
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
        let mut nodes = Vec::new();
        let mut seeds = Vec::new();
        let mut next_origin = 1;
        for (r, region) in scenario.regions.iter().enumerate() {
            for n in 0..region.nodes {
                let origin = NodeId(next_origin);
                next_origin += 1;
                let i = nodes.len();
                if n == 0 {
                    seeds.push(addr(i));
                }
                nodes.push(SimNode {
                    region: r,
                    origin,
                    store: SimStore::new(
                        origin,
                        region.memory_mib << 20,
                        scenario.debug.broken_merge,
                        keys.clone(),
                    ),
                    replicator: Replicator::new(origin, region.name.clone(), replicator_config(region), 0),
                    membership: membership(&scenario, r, i, origin, 0, rng.random()),
                    members: BTreeMap::new(),
                    up: true,
                    skew_ms: 0,
                    timer_at_us: u64::MAX,
                    membership_timer_at_us: u64::MAX,
                    isolated: false,
                });
            }
        }
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
        let mut world = World {
            rng,
            seed,
            now_us: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            nodes,
            delays_us,
            partitions: BTreeSet::new(),
            loss: BTreeMap::new(),
            by_origin: HashMap::with_hasher(FixedState::default()),
            by_addr: BTreeMap::new(),
            seeds,
            keys,
            zipf_cdf: weights,
            writes: HashMap::with_hasher(FixedState::default()),
            settled: HashMap::with_hasher(FixedState::default()),
            live_count: 0,
            newest: vec![None; w.keys],
            lag_us: Vec::new(),
            tallies: Tallies::default(),
            outstanding: 0,
            convergence: Vec::new(),
            next_origin,
            start_us: 0,
            workload_end_us,
            end_us,
            scenario,
        };
        world.live_count = world.nodes.len() as u32;
        let regions = world.scenario.regions.len();
        world.lag_us = (0..regions * regions).map(|_| None).collect();
        world.by_origin = world.nodes.iter().enumerate().map(|(i, n)| (n.origin, i)).collect();
        world.by_addr = (0..world.nodes.len()).map(|i| (addr(i), i)).collect();
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
            self.join(i);
            self.arm_timer(i);
        }
        let others = self.nodes.len().saturating_sub(1);
        while self.nodes.iter().any(|n| n.members.len() < others) {
            let Some(Reverse(ev)) = self.queue.pop() else { break };
            if ev.at_us > FORMATION_MS_MAX * 1_000 {
                self.queue.push(Reverse(ev));
                break;
            }
            self.now_us = ev.at_us;
            self.step(ev.kind);
        }
        self.start_us = self.now_us;
    }

    /// Node `i` announces itself to the seeds.
    fn join(&mut self, i: usize) {
        let now = self.mono_ms();
        let seeds = std::mem::take(&mut self.seeds);
        self.nodes[i].membership.join(&seeds, now);
        self.seeds = seeds;
        self.pump_membership(i);
    }

    /// Sends what node `i`'s membership wants sent, hands its events to the
    /// replicator (as `node/src/cluster.rs` does) and re-arms its timer.
    fn pump_membership(&mut self, i: usize) {
        while let Some((to, bytes)) = self.nodes[i].membership.poll_transmit() {
            if let Some(&j) = self.by_addr.get(&to) {
                self.send_datagram(i, j, bytes);
            }
        }
        let mut changed = false;
        while let Some(event) = self.nodes[i].membership.poll_event() {
            changed = true;
            let now = self.mono_ms();
            match event {
                MembershipEvent::Up(peer) => {
                    let Some(&j) = self.by_addr.get(&peer.gossip) else { continue };
                    // The driver reads RTTs from QUIC; here, the model's.
                    let rtt_ms = 2 * self.delays_us[self.nodes[i].region][self.nodes[j].region] / 1_000;
                    let node = &mut self.nodes[i];
                    node.replicator.peer_up(PeerInfo {
                        node: peer.node,
                        region: peer.region,
                        addr: peer.gossip,
                    });
                    node.replicator.set_rtt(peer.node, rtt_ms);
                    node.members.insert(peer.node, peer.incarnation);
                    self.tallies.member_ups += 1;
                }
                MembershipEvent::Down(peer) => {
                    // A restart shows as Down(old) then Up(new) with the
                    // same id: only forget the member if it is still the
                    // old life.
                    let node = &mut self.nodes[i];
                    let current = node.members.get(&peer.node).copied();
                    if current.is_none_or(|inc| inc <= peer.incarnation) {
                        node.members.remove(&peer.node);
                        node.replicator.peer_down(peer.node, now);
                        self.tallies.member_downs += 1;
                    }
                }
            }
        }
        if changed {
            self.flush(i);
        }
        self.arm_membership_timer(i);
    }

    fn arm_membership_timer(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        let Some(due_ms) = self.nodes[i].membership.poll_timeout() else { return };
        let due_us = due_ms.saturating_mul(1_000).max(self.now_us);
        if due_us < self.nodes[i].membership_timer_at_us {
            self.nodes[i].membership_timer_at_us = due_us;
            self.seq += 1;
            self.queue.push(Reverse(Scheduled {
                at_us: due_us,
                seq: self.seq,
                kind: EventKind::MembershipTimer { node: i },
            }));
        }
    }

    fn schedule(&mut self, after_us: u64, kind: EventKind) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled { at_us: self.now_us + after_us, seq: self.seq, kind }));
    }

    fn interarrival_us(&mut self) -> u64 {
        let rate = self.scenario.workload.ops_per_s_per_region;
        if rate <= 0.0 {
            return u64::MAX / 4;
        }
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        ((-u.ln() / rate) * 1e6).max(1.0) as u64
    }

    fn node_now_ms(&self, i: usize) -> u64 {
        (ms(self.now_us) as i64 + self.nodes[i].skew_ms).max(0) as u64
    }

    /// The monotonic time a node's replicator runs on: a skewed wall clock
    /// only moves the node's HLC and expiries, never its timers (as the
    /// node's driver uses a monotonic clock for them).
    fn mono_ms(&self) -> u64 {
        ms(self.now_us)
    }

    fn arm_timer(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        let due_us = self.nodes[i].replicator.poll_timeout().saturating_mul(1_000).max(self.now_us);
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
            let elapsed_s = (self.now_us - self.start_us) / 1_000_000;
            if elapsed_s != last_reported {
                last_reported = elapsed_s;
                self.convergence.push((last_reported as f64, self.outstanding.max(0)));
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
                let Datagram { to, bytes } = *d;
                if self.nodes[to].up {
                    let now = self.mono_ms();
                    // Refused input changes nothing (foca's contract).
                    let _ = self.nodes[to].membership.handle_data(&bytes, now);
                    self.pump_membership(to);
                }
            }
            EventKind::MembershipTimer { node } => {
                if self.nodes[node].membership_timer_at_us == self.now_us {
                    self.nodes[node].membership_timer_at_us = u64::MAX;
                }
                if self.nodes[node].up {
                    let now = self.mono_ms();
                    self.nodes[node].membership.handle_timeout(now);
                    self.pump_membership(node);
                }
            }
            EventKind::Timer { node } => {
                if self.nodes[node].timer_at_us == self.now_us {
                    self.nodes[node].timer_at_us = u64::MAX;
                }
                if self.nodes[node].up {
                    let now = self.mono_ms();
                    self.nodes[node].replicator.handle_timeout(now);
                    self.flush(node);
                }
            }
            EventKind::FaultStart(f) => self.fault(f, true),
            EventKind::FaultEnd(f) => self.fault(f, false),
            EventKind::Sweep => {
                for i in 0..self.nodes.len() {
                    let now = self.node_now_ms(i);
                    self.nodes[i].store.sweep(now);
                    // A lost first announce (a datagram) must not leave
                    // a node alone for good.
                    if self.nodes[i].up && self.nodes[i].members.is_empty() {
                        self.join(i);
                    }
                }
                self.schedule(SWEEP_INTERVAL_MS * 1_000, EventKind::Sweep);
            }
        }
    }

    fn fault(&mut self, f: usize, start: bool) {
        let kind = self.scenario.faults[f].kind.clone();
        let region_index =
            |w: &World, name: &str| w.scenario.regions.iter().position(|r| r.name == name).unwrap_or(0);
        match kind {
            FaultKind::Partition { a, b } => {
                let pair = (region_index(self, &a), region_index(self, &b));
                let pair = (pair.0.min(pair.1), pair.0.max(pair.1));
                if start {
                    self.partitions.insert(pair);
                } else {
                    self.partitions.remove(&pair);
                }
            }
            FaultKind::LossBurst { a, b, loss } => {
                let pair = (region_index(self, &a), region_index(self, &b));
                let pair = (pair.0.min(pair.1), pair.0.max(pair.1));
                if start {
                    self.loss.insert(pair, loss);
                } else {
                    self.loss.remove(&pair);
                }
            }
            FaultKind::Isolate { node } => self.nodes[node].isolated = start,
            FaultKind::ClockSkew { node, skew_ms } => {
                self.nodes[node].skew_ms = if start { skew_ms } else { 0 }
            }
            FaultKind::Crash { node, wipe } => {
                if start {
                    if self.nodes[node].up {
                        self.nodes[node].up = false;
                        self.live_count -= 1;
                    }
                } else if !self.nodes[node].up {
                    self.restart(node, wipe);
                }
            }
        }
    }

    fn restart(&mut self, i: usize, wipe: bool) {
        let region = self.nodes[i].region;
        let name = self.scenario.regions[region].name.clone();
        if wipe {
            // A new life: a new origin id, an empty store, no watermarks.
            let origin = NodeId(self.next_origin);
            self.next_origin += 1;
            let budget = self.scenario.regions[region].memory_mib << 20;
            let now = self.mono_ms();
            let old = std::mem::replace(&mut self.nodes[i].origin, origin);
            self.by_origin.remove(&old);
            self.by_origin.insert(origin, i);
            self.nodes[i].store =
                SimStore::new(origin, budget, self.scenario.debug.broken_merge, self.keys.clone());
            let config = replicator_config(&self.scenario.regions[region]);
            self.nodes[i].replicator = Replicator::new(origin, name, config, now);
        }
        // Membership starts again either way: a new identity (the start
        // time is the incarnation, so it wins over the previous life) that
        // knows no member until it joins. A replicator kept with the data
        // forgets its peers with it; they come back as members come up.
        let now = self.mono_ms();
        let seed = self.rng.random();
        let origin = self.nodes[i].origin;
        self.nodes[i].membership = membership(&self.scenario, region, i, origin, now, seed);
        for (peer, _) in std::mem::take(&mut self.nodes[i].members) {
            self.nodes[i].replicator.peer_down(peer, now);
        }
        self.nodes[i].up = true;
        self.live_count += 1;
        self.nodes[i].timer_at_us = u64::MAX;
        self.nodes[i].membership_timer_at_us = u64::MAX;
        self.join(i);
        self.arm_timer(i);
    }

    /// A key by the workload's Zipf law: its number and the key.
    fn pick_key(&mut self) -> (usize, Key) {
        let u: f64 = self.rng.random_range(0.0..1.0);
        let k = self.zipf_cdf.partition_point(|&c| c < u).min(self.zipf_cdf.len() - 1);
        (k, self.keys.key(k).clone())
    }

    fn client_op(&mut self, region: usize) {
        let live: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].region == region && self.nodes[i].up).collect();
        if live.is_empty() {
            self.tallies.unavailable += 1;
            return;
        }
        let node = live[self.rng.random_range(0..live.len())];
        let (key_number, key) = self.pick_key();
        let now = self.node_now_ms(node);
        let w = self.scenario.workload.clone();
        if self.rng.random_range(0.0..1.0) < w.read_ratio {
            self.tallies.reads += 1;
            let got = self.nodes[node].store.get(&key, now);
            if let Some((stamp, visible)) = &self.newest[key_number] {
                let fresh = match &got {
                    Some(r) => r.stamp() >= *stamp,
                    None => !visible,
                };
                if !fresh {
                    self.tallies.stale_reads += 1;
                }
            }
            return;
        }
        let roll: f64 = self.rng.random_range(0.0..1.0);
        let ttl = match w.ttl_s {
            Some(s) => Ttl::AfterMs((s * 1_000.0) as u64),
            None => Ttl::Never,
        };
        let (op, condition, ttl) = if roll < w.delete_share {
            (WriteOp::Delete, Condition::Always, Ttl::Never)
        } else if roll < w.delete_share + w.cas_share {
            let current = self.nodes[node].store.get(&key, now);
            let condition = match current {
                Some(r) => Condition::IfMatch(r.vv()),
                None => Condition::IfAbsent,
            };
            (WriteOp::Put { value: self.value(), content_type: None }, condition, ttl)
        } else if roll < w.delete_share + w.cas_share + w.doc_patch_share {
            let field = format!("f{}", self.rng.random_range(0..8u32));
            let v: u32 = self.rng.random_range(0..1_000);
            (WriteOp::Patch(serde_json::json!({ field: v })), Condition::Always, Ttl::Keep { or_ms: None })
        } else {
            (WriteOp::Put { value: self.value(), content_type: None }, Condition::Always, ttl)
        };
        let durability = {
            let d: f64 = self.rng.random_range(0.0..1.0);
            if d < w.durability_all_share {
                2
            } else if d < w.durability_all_share + w.durability_region_share {
                1
            } else {
                0
            }
        };
        let write = Write { key: key.clone(), op, ttl, condition };
        let outcome = match self.nodes[node].store.apply_local(write, now) {
            Ok(o) => o,
            Err(_) => {
                self.tallies.cas_refused += 1;
                return;
            }
        };
        self.tallies.writes += 1;
        self.outstanding += self.nodes.iter().filter(|n| n.up).count() as i64 - 1;
        // Read your own write, at once, at the same node.
        match self.nodes[node].store.get(&key, now) {
            Some(r) if r.stamp() >= outcome.register.meta.stamp => {}
            None if !outcome.register.is_visible_at(now) => {}
            _ => self.tallies.ryw_violations += 1,
        }
        let visible = outcome.register.is_visible_at(now);
        let stamp = outcome.register.meta.stamp;
        self.newest[key_number] = Some((stamp, visible));
        let delta = Arc::new(outcome.delta.clone());
        let full = Arc::new(outcome.whole_delta());
        self.writes.insert(
            (delta.origin, delta.seq),
            WriteRecord {
                key: key.clone(),
                register: outcome.register.clone(),
                at_us: self.now_us,
                origin_region: region,
                applied: 1,
                durability,
                acked_at_level: durability == 0,
            },
        );
        let bytes = delta.key.size_bytes() + outcome.register.size_bytes();
        let mono = self.mono_ms();
        self.nodes[node].replicator.local_write(delta, full, bytes, durability > 0, mono);
        self.flush(node);
    }

    fn value(&mut self) -> Bytes {
        let n = self.scenario.workload.value_bytes;
        let fill: u8 = self.rng.random_range(0..=255);
        Bytes::from(vec![fill; n])
    }

    fn flush(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].replicator.poll_transmit() {
            self.send(i, t);
        }
        while let Some(e) = self.nodes[i].replicator.poll_event() {
            match e {
                ReplicatorEvent::Acked { seq } => self.check_durability(i, seq),
                ReplicatorEvent::FullTransferNeeded { peer, .. } => {
                    if let Some(&j) = self.by_origin.get(&peer) {
                        let from = self.nodes[i].origin;
                        self.send_raw(i, j, Message::FullTransferRequest { from }, false);
                    }
                }
            }
        }
        self.arm_timer(i);
    }

    fn check_durability(&mut self, i: usize, seq: u64) {
        let origin = self.nodes[i].origin;
        let (region, all) =
            (self.nodes[i].replicator.reached_region(seq), self.nodes[i].replicator.reached_all(seq));
        if let Some(w) = self.writes.get_mut(&(origin, seq)) {
            let reached = match w.durability {
                1 => region,
                2 => all,
                _ => true,
            };
            w.acked_at_level |= reached;
        }
    }

    fn send(&mut self, from: usize, t: Transmit) {
        let Some(&to) = self.by_origin.get(&t.to) else { return };
        self.send_raw(from, to, t.message, t.request);
    }

    fn send_raw(&mut self, from: usize, to: usize, message: Message, request: bool) {
        let bytes = codec::encoded_len(&message).unwrap_or(0) as u64;
        if self.nodes[from].region == self.nodes[to].region {
            self.tallies.lan_messages += 1;
            self.tallies.lan_bytes += bytes;
        } else {
            self.tallies.wan_messages += 1;
            self.tallies.wan_bytes += bytes;
        }
        if let Some(delay) = self.transit_us(from, to, bytes) {
            self.schedule(delay, EventKind::Deliver(Box::new(Delivery { from, to, message, request })));
        }
    }

    /// A membership datagram, over the same network as the replicator's
    /// messages, counted apart from them.
    fn send_datagram(&mut self, from: usize, to: usize, bytes: Bytes) {
        let size = bytes.len() as u64;
        self.tallies.membership_messages += 1;
        if self.nodes[from].region == self.nodes[to].region {
            self.tallies.membership_lan_bytes += size;
        } else {
            self.tallies.membership_wan_bytes += size;
        }
        if let Some(delay) = self.transit_us(from, to, size) {
            self.schedule(delay, EventKind::Datagram(Box::new(Datagram { to, bytes })));
        }
    }

    /// How long `bytes` from `from` take to reach `to`, or `None` when the
    /// network drops them (partition, isolation, loss).
    fn transit_us(&mut self, from: usize, to: usize, bytes: u64) -> Option<u64> {
        let (rf, rt) = (self.nodes[from].region, self.nodes[to].region);
        let pair = (rf.min(rt), rf.max(rt));
        if self.partitions.contains(&pair) || self.nodes[from].isolated || self.nodes[to].isolated {
            return None;
        }
        let net = &self.scenario.network;
        let loss = self.loss.get(&pair).copied().unwrap_or(if rf == rt { 0.0 } else { net.loss });
        if loss > 0.0 && self.rng.random_range(0.0..1.0) < loss {
            return None;
        }
        let mut delay = self.delays_us[rf][rt];
        if net.jitter_ms > 0.0 {
            delay += (self.rng.random_range(0.0..1.0) * net.jitter_ms * 1_000.0) as u64;
        }
        if rf != rt && net.bandwidth_mbps > 0.0 {
            delay += (bytes as f64 * 8.0 / net.bandwidth_mbps) as u64;
        }
        Some(delay)
    }

    fn deliver(&mut self, from: usize, to: usize, message: Message, request: bool) {
        if !self.nodes[to].up || !self.nodes[from].up {
            return;
        }
        let now = self.node_now_ms(to);
        let from_origin = self.nodes[from].origin;
        match message {
            Message::FullTransferRequest { .. } => {
                let registers: Vec<(Key, Arc<Register>)> =
                    self.nodes[to].store.registers().map(|(k, r)| (k.clone(), r.register_arc())).collect();
                let watermarks = self.nodes[to].replicator.watermarks();
                let me = self.nodes[to].origin;
                self.send_raw(
                    to,
                    from,
                    Message::FullTransferChunk { from: me, registers, last: true, watermarks },
                    false,
                );
                return;
            }
            Message::FullTransferChunk { registers, watermarks, .. } => {
                let keys: BTreeSet<Key> = registers.iter().map(|(k, _)| k.clone()).collect();
                for (k, r) in &registers {
                    self.nodes[to].store.merge_register(k, r);
                }
                let wm: BTreeMap<NodeId, u64> = watermarks.iter().copied().collect();
                let stale: Vec<(Key, geocache_crdt::Dot)> = self.nodes[to]
                    .store
                    .registers()
                    .map(|(k, r)| (k.clone(), r.dot()))
                    .filter(|(k, dot)| dropped_by_transfer(*dot, keys.contains(k), &wm))
                    .collect();
                for (k, dot) in stale {
                    self.nodes[to].store.drop_if_dot(&k, dot);
                }
                self.nodes[to].replicator.full_transfer_done(&watermarks);
                self.flush(to);
                return;
            }
            _ => {}
        }
        let now_us = self.now_us;
        let to_region = self.nodes[to].region;
        let node = &mut self.nodes[to];
        let store = &mut node.store;
        let writes = &mut self.writes;
        let settled = &mut self.settled;
        let live = self.live_count;
        let lag = &mut self.lag_us;
        let regions = self.scenario.regions.len();
        let outstanding = &mut self.outstanding;
        let mut apply = |d: &Delta| -> Option<Arc<Register>> {
            let outcome = store.apply_remote(d, now).ok()?;
            if let Some(w) = writes.get_mut(&(d.origin, d.seq)) {
                w.applied += 1;
                *outstanding -= 1;
                let h = lag[w.origin_region * regions + to_region].get_or_insert_with(|| {
                    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
                });
                let _ = h.record((now_us - w.at_us).max(1));
                if w.applied >= live {
                    // Every live node has it: fold it into the oracle now
                    // rather than keeping every write to the end.
                    if let Some(done) = writes.remove(&(d.origin, d.seq)) {
                        match settled.get_mut(&done.key) {
                            Some(acc) => acc.merge(&done.register),
                            None => {
                                settled.insert(done.key, (*done.register).clone());
                            }
                        }
                    }
                }
            }
            Some(outcome.register)
        };
        let answer = node.replicator.handle_message(from_origin, message, now_us / 1_000, &mut apply);
        self.flush(to);
        if let (Some(answer), true) = (answer, request) {
            self.send_raw(to, from, answer, false);
        }
    }

    /// Visibility lag (µs) per (from region, to region) with samples, in
    /// pair order.
    pub fn lag_histograms(&self) -> Vec<((usize, usize), &Histogram<u64>)> {
        let regions = self.scenario.regions.len();
        self.lag_us
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|h| ((i / regions, i % regions), h)))
            .collect()
    }

    /// The checkers, run at the end: see `checks.rs`.
    pub fn final_state(&self) -> FinalState<'_> {
        FinalState { world: self }
    }

    /// Virtual seconds simulated.
    pub fn virtual_s(&self) -> f64 {
        (self.end_us - self.start_us) as f64 / 1e6
    }

    /// How long the cluster took to form before the workload started,
    /// virtual s.
    pub fn formation_s(&self) -> f64 {
        self.start_us as f64 / 1e6
    }

    /// The one-way delay between two regions, ms.
    pub fn one_way_ms(&self, a: usize, b: usize) -> f64 {
        self.delays_us[a][b] as f64 / 1_000.0
    }

    /// Store counters summed over nodes.
    pub fn store_counts(&self) -> crate::sim_store::StoreCounts {
        let mut c = crate::sim_store::StoreCounts::default();
        for n in &self.nodes {
            c.hits += n.store.counts.hits;
            c.misses += n.store.counts.misses;
            c.evictions += n.store.counts.evictions;
            c.expirations += n.store.counts.expirations;
            c.conflicts += n.store.counts.conflicts;
        }
        c
    }
}

/// Read access for the checkers.
pub struct FinalState<'a> {
    world: &'a World,
}

/// What a read sees: the bytes, the document JSON, or nothing.
pub fn visible_value(r: &Register, now_ms: u64) -> Option<Vec<u8>> {
    if !r.is_visible_at(now_ms) {
        return None;
    }
    match &r.value {
        Value::Bytes(b) => Some(b.to_vec()),
        Value::Doc(d) => Some(d.to_json().to_string().into_bytes()),
    }
}

impl FinalState<'_> {
    /// Live nodes' registers: (node index, key, register).
    pub fn held(&self) -> Vec<(usize, &Key, Arc<Register>)> {
        let w = self.world;
        (0..w.nodes.len())
            .filter(|&i| w.nodes[i].up)
            .flat_map(|i| w.nodes[i].store.registers().map(move |(k, r)| (i, k, r.register_arc())))
            .collect()
    }

    /// The virtual time now, ms.
    pub fn now_ms(&self) -> u64 {
        ms(self.world.now_us)
    }

    /// Per origin, the highest contiguous watermark among live nodes, with
    /// each live node's own origin at infinity (it holds all its writes).
    fn survivors(&self) -> BTreeMap<NodeId, u64> {
        let mut best: BTreeMap<NodeId, u64> = BTreeMap::new();
        for n in self.world.nodes.iter().filter(|n| n.up) {
            for (origin, wm) in n.replicator.watermarks() {
                let e = best.entry(origin).or_default();
                *e = (*e).max(wm);
            }
            best.insert(n.origin, u64::MAX);
        }
        best
    }

    /// Every write that some live node applied, folded by key: what every
    /// replica holding the key must show.
    pub fn expected(&self) -> BTreeMap<Key, Register> {
        let best = self.survivors();
        let mut out: BTreeMap<Key, Register> =
            self.world.settled.iter().map(|(k, r)| (k.clone(), r.clone())).collect();
        for (&(origin, seq), rec) in &self.world.writes {
            if best.get(&origin).is_none_or(|&wm| wm < seq) {
                continue;
            }
            match out.get_mut(&rec.key) {
                Some(acc) => acc.merge(&rec.register),
                None => {
                    out.insert(rec.key.clone(), (*rec.register).clone());
                }
            }
        }
        out
    }

    /// Writes acked at `region` or `all` durability that no live node holds.
    pub fn lost_acked_writes(&self) -> Vec<(NodeId, u64)> {
        let best = self.survivors();
        let mut lost: Vec<(NodeId, u64)> = self
            .world
            .writes
            .iter()
            .filter(|(&(origin, seq), rec)| {
                rec.durability > 0 && rec.acked_at_level && best.get(&origin).is_none_or(|&wm| wm < seq)
            })
            .map(|(&id, _)| id)
            .collect();
        lost.sort();
        lost
    }

    /// Live nodes whose membership does not show every other live node's
    /// current life as up, or shows more: (node, missing, extra).
    pub fn membership_gaps(&self) -> Vec<(usize, Vec<NodeId>, Vec<NodeId>)> {
        let w = self.world;
        let live: BTreeSet<NodeId> = w.nodes.iter().filter(|n| n.up).map(|n| n.origin).collect();
        (0..w.nodes.len())
            .filter(|&i| w.nodes[i].up)
            .filter_map(|i| {
                let n = &w.nodes[i];
                let known: BTreeSet<NodeId> = n.members.keys().copied().collect();
                let missing: Vec<NodeId> =
                    live.iter().filter(|o| **o != n.origin && !known.contains(o)).copied().collect();
                let extra: Vec<NodeId> = known.difference(&live).copied().collect();
                (!missing.is_empty() || !extra.is_empty()).then_some((i, missing, extra))
            })
            .collect()
    }

    /// Read-your-writes violations seen during the run.
    pub fn ryw_violations(&self) -> u64 {
        self.world.tallies.ryw_violations
    }
}
