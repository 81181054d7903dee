//! The replicator in memory: several nodes stepped with virtual time over a
//! simulated network (quinn-proto's `Pair` style), no sockets.

use bytes::Bytes;
use geocache_crdt::{codec, Delta, DeltaBody, Dot, Hlc, Key, NodeId, Register, Stamp, Value, VersionVector};
use geocache_gossip::backlog::BacklogLimits;
use geocache_gossip::replica_store::ApplyOutcome;
use geocache_gossip::replicator::{Event, PeerInfo, Replicator, ReplicatorConfig, Transmit};
use geocache_gossip::wire::Message;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::sync::Arc;

const LAN_MS: u64 = 1;
const WAN_MS: u64 = 40;

struct Node {
    region: String,
    replicator: Replicator,
    store: BTreeMap<Key, Arc<Register>>,
    seq: u64,
    up: bool,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at_ms: u64,
    order: u64,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
    /// Whether the receiver must answer (a sync request).
    request: bool,
}

struct Cluster {
    nodes: Vec<Node>,
    now_ms: u64,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    /// Region pairs cut off.
    cut: BTreeSet<(String, String)>,
    wan_delta_messages: u64,
    events: Vec<(usize, Event)>,
    /// `(from, to, wan)` of every sync request sent.
    sync_requests: Vec<(usize, usize, bool)>,
    /// Deltas carried by sync answers.
    sync_answer_deltas: usize,
    /// One-way delay between regions.
    wan_ms: u64,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2 + i as u8], 7946))
}

fn id(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}

impl Cluster {
    fn new(regions: &[(&str, usize)], config: ReplicatorConfig) -> Cluster {
        let mut nodes = Vec::new();
        for (region, count) in regions {
            for _ in 0..*count {
                let i = nodes.len();
                nodes.push(Node {
                    region: region.to_string(),
                    replicator: Replicator::new(id(i), region.to_string(), true, config.clone(), 0),
                    store: BTreeMap::new(),
                    seq: 0,
                    up: true,
                });
            }
        }
        let mut c = Cluster {
            nodes,
            now_ms: 0,
            queue: BinaryHeap::new(),
            order: 0,
            cut: BTreeSet::new(),
            wan_delta_messages: 0,
            events: Vec::new(),
            sync_requests: Vec::new(),
            sync_answer_deltas: 0,
            wan_ms: WAN_MS,
        };
        for i in 0..c.nodes.len() {
            for j in 0..c.nodes.len() {
                let info =
                    PeerInfo { node: id(j), region: c.nodes[j].region.clone(), addr: addr(j), full: true };
                c.nodes[i].replicator.peer_up(info, 0);
                let rtt =
                    if c.nodes[i].region == c.nodes[j].region { 2 * LAN_MS } else { 2 * WAN_MS + j as u64 };
                c.nodes[i].replicator.set_rtt(id(j), rtt);
            }
        }
        c
    }

    fn latency(&self, a: usize, b: usize) -> Option<u64> {
        let (ra, rb) = (self.nodes[a].region.clone(), self.nodes[b].region.clone());
        if self.cut.contains(&(ra.clone(), rb.clone())) || self.cut.contains(&(rb, ra)) {
            return None;
        }
        Some(if self.nodes[a].region == self.nodes[b].region { LAN_MS } else { self.wan_ms })
    }

    fn write(&mut self, i: usize, key: &str, value: &str) -> u64 {
        self.write_unflushed(i, key, value);
        self.flush(i);
        node_seq(&self.nodes[i])
    }

    /// A write queued for the peers but not sent yet (a burst).
    fn write_unflushed(&mut self, i: usize, key: &str, value: &str) {
        let node = &mut self.nodes[i];
        node.seq += 1;
        let k = Key::new("t", Bytes::copy_from_slice(key.as_bytes()));
        let current = node.store.get(&k).cloned();
        let mut vv = current.as_ref().map(|r| r.meta.vv.clone()).unwrap_or_else(VersionVector::new);
        vv.increment(id(i));
        let floor = current.as_ref().map(|r| r.meta.stamp.hlc.as_u64()).unwrap_or(0);
        let hlc = Hlc::from_u64((Hlc::new(self.now_ms, 0).as_u64()).max(floor + 1));
        let reg = Arc::new(Register::replace(
            Value::Bytes(Bytes::copy_from_slice(value.as_bytes())),
            Stamp::new(hlc, id(i)),
            vv,
            Dot { origin: id(i), seq: node.seq },
            None,
        ));
        let delta = Arc::new(Delta::for_write(id(i), node.seq, k.clone(), current.as_deref(), &reg));
        node.store.insert(k, reg);
        node.replicator.local_write(delta.clone(), delta, 100, true, self.now_ms);
    }

    fn flush(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].replicator.poll_transmit(usize::MAX) {
            self.send(i, t);
        }
        while let Some(e) = self.nodes[i].replicator.poll_event() {
            self.events.push((i, e));
        }
    }

    fn send(&mut self, from: usize, t: Transmit) {
        let to = (t.to.0 - 1) as usize;
        if t.wan && matches!(t.message, Message::Deltas { .. }) {
            self.wan_delta_messages += 1;
        }
        match &t.message {
            Message::SyncRequest { .. } => self.sync_requests.push((from, to, t.wan)),
            Message::SyncResponse { deltas, .. } => self.sync_answer_deltas += deltas.len(),
            _ => {}
        }
        let Some(latency) = self.latency(from, to).filter(|_| self.nodes[to].up) else { return };
        self.order += 1;
        let bytes = codec::encode(&t.message).unwrap();
        self.queue.push(Reverse(InFlight {
            at_ms: self.now_ms + latency,
            order: self.order,
            from,
            to,
            bytes,
            request: t.request,
        }));
    }

    /// Delivers everything due up to `until_ms`, running timers on the way.
    fn run_until(&mut self, until_ms: u64) {
        loop {
            let next_msg = self.queue.peek().map(|Reverse(m)| m.at_ms).unwrap_or(u64::MAX);
            let next_timer = self
                .nodes
                .iter_mut()
                .filter(|n| n.up)
                .map(|n| n.replicator.poll_timeout())
                .min()
                .unwrap_or(u64::MAX);
            let next = next_msg.min(next_timer);
            if next > until_ms {
                self.now_ms = until_ms;
                return;
            }
            self.now_ms = next;
            if next_msg <= next_timer {
                let Reverse(m) = self.queue.pop().unwrap();
                self.deliver(m);
            } else {
                for i in 0..self.nodes.len() {
                    if self.nodes[i].up && self.nodes[i].replicator.poll_timeout() <= self.now_ms {
                        self.nodes[i].replicator.handle_timeout(self.now_ms);
                        self.flush(i);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, m: InFlight) {
        if !self.nodes[m.to].up || !self.nodes[m.from].up {
            return;
        }
        let message: Message = codec::decode(&m.bytes).unwrap();
        let now = self.now_ms;
        let node = &mut self.nodes[m.to];
        let store = &mut node.store;
        let mut apply = |d: &Delta| -> ApplyOutcome {
            let Ok(next) = d.apply_to(store.get(&d.key).map(|r| &**r)) else {
                return ApplyOutcome::Unappliable;
            };
            let next = Arc::new(next);
            store.insert(d.key.clone(), next.clone());
            ApplyOutcome::Stored(next)
        };
        let answer = node.replicator.handle_message(id(m.from), message, now, &mut apply);
        self.flush(m.to);
        if let (Some(answer), true) = (answer, m.request) {
            let wan = self.nodes[m.from].region != self.nodes[m.to].region;
            self.send(
                m.to,
                Transmit { to: id(m.from), addr: addr(m.from), wan, message: answer, request: false },
            );
        }
    }

    fn value(&self, i: usize, key: &str) -> Option<Vec<u8>> {
        let k = Key::new("t", Bytes::copy_from_slice(key.as_bytes()));
        self.nodes[i].store.get(&k).and_then(|r| match &r.value {
            Value::Bytes(b) if !r.meta.tombstone => Some(b.to_vec()),
            _ => None,
        })
    }

    fn assert_converged(&self) {
        for i in 1..self.nodes.len() {
            assert_eq!(self.nodes[i].store, self.nodes[0].store, "node {i} differs from node 0");
        }
    }
}

fn node_seq(n: &Node) -> u64 {
    n.seq
}

fn three_regions() -> Cluster {
    Cluster::new(&[("montreal", 2), ("sao-paulo", 2), ("frankfurt", 2)], ReplicatorConfig::default())
}

#[test]
fn a_write_reaches_every_node_crossing_each_wan_link_once() {
    let mut c = three_regions();
    c.write(0, "k", "v");
    c.run_until(100);
    for i in 0..6 {
        assert_eq!(c.value(i, "k").as_deref(), Some(&b"v"[..]), "node {i}");
    }
    assert_eq!(c.wan_delta_messages, 2, "one WAN message per remote region, not per remote node");
    // Within one WAN hop plus one LAN hop: visible in the remote regions by 40 + 1 ms.
    let mut c = three_regions();
    c.write(3, "k", "v");
    c.run_until(WAN_MS + LAN_MS);
    assert!((0..6).all(|i| c.value(i, "k").is_some()));
}

#[test]
fn relays_are_chosen_by_rtt_and_replaced_when_lost_before_acking() {
    let mut c = three_regions();
    // Node 2 (sao-paulo) has the lower RTT from node 0, so it is the relay.
    c.nodes[2].up = false;
    c.write(0, "k", "v");
    c.run_until(10);
    c.nodes[0].replicator.peer_down(id(2), c.now_ms);
    c.flush(0);
    c.run_until(200);
    assert_eq!(c.value(3, "k").as_deref(), Some(&b"v"[..]), "resent through the other sao-paulo node");
    assert!(c.nodes[0].replicator.stats().relay_resends >= 1);
}

#[test]
fn an_unacked_relay_times_out_and_the_write_goes_through_another() {
    let mut c = three_regions();
    c.nodes[2].up = false; // silently gone: membership has not noticed yet
    c.write(0, "k", "v");
    c.run_until(ReplicatorConfig::default().relay_ack_timeout_ms + 200);
    assert_eq!(c.value(3, "k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn partition_then_heal_converges_through_anti_entropy() {
    let mut c = three_regions();
    c.write(0, "shared", "before");
    c.run_until(100);
    c.cut.insert(("montreal".into(), "frankfurt".into()));
    c.cut.insert(("sao-paulo".into(), "frankfurt".into()));
    for n in 0..20 {
        c.write(0, &format!("west{n}"), "w");
        c.write(4, &format!("east{n}"), "e");
        c.run_until(c.now_ms + 5);
    }
    c.write(1, "shared", "west-wins?");
    c.write(5, "shared", "east-wins?");
    c.run_until(c.now_ms + 500);
    assert!(c.value(4, "west3").is_none(), "the partition holds");
    c.cut.clear();
    c.run_until(c.now_ms + 10_000);
    c.assert_converged();
    assert!(c.value(4, "west19").is_some() && c.value(0, "east19").is_some());
}

#[test]
fn anti_entropy_asks_its_own_region_and_another_every_fourth_round() {
    let mut c =
        Cluster::new(&[("montreal", 2), ("sao-paulo", 2), ("frankfurt", 2)], ReplicatorConfig::default());
    let interval = ReplicatorConfig::default().sync_interval_ms;
    c.run_until(8 * interval + interval / 2);
    let asked: Vec<(usize, bool)> =
        c.sync_requests.iter().filter(|(from, ..)| *from == 0).map(|&(_, to, wan)| (to, wan)).collect();
    assert_eq!(asked.len(), 8, "one request a round: {asked:?}");
    assert_eq!(
        asked.iter().filter(|(_, wan)| *wan).count(),
        2,
        "every fourth round crosses a region: {asked:?}"
    );
    assert!(
        asked.iter().filter(|(_, wan)| !wan).all(|&(to, _)| to == 1),
        "the others ask its region: {asked:?}"
    );
    let remote: Vec<usize> = asked.iter().filter(|(_, wan)| *wan).map(|&(to, _)| to).collect();
    assert_ne!(remote[0], remote[1], "round robin over the other regions' nodes: {remote:?}");
}

#[test]
fn a_sync_answer_leaves_out_what_is_still_on_its_way() {
    // A steady stream of writes: at every round some are in flight.
    let stream = |config: ReplicatorConfig| {
        let mut c = Cluster::new(&[("montreal", 2), ("frankfurt", 2)], config);
        for n in 0..500 {
            c.write(n % 4, &format!("k{n}"), "v");
            c.run_until(c.now_ms + 10);
        }
        c.run_until(c.now_ms + 3_000);
        c.assert_converged();
        c.sync_answer_deltas
    };
    assert_eq!(stream(ReplicatorConfig::default()), 0, "nothing was lost, so nothing is sent twice");
    let without_grace = stream(ReplicatorConfig { sync_grace_ms: 0, ..ReplicatorConfig::default() });
    assert!(without_grace > 0, "without the grace, answers repeat deltas in flight");
}

#[test]
fn a_push_path_slower_than_the_grace_stretches_it_instead_of_being_sent_twice() {
    // 1.5 s one way: every write is still on its way when the 1 s grace
    // has passed. The relay's acks measure the path (3 s write to ack), and
    // answers leave out what is that recent.
    let mut c = Cluster::new(&[("montreal", 2), ("frankfurt", 2)], ReplicatorConfig::default());
    c.wan_ms = 1_500;
    for n in 0..1_000 {
        c.write(n % 2, &format!("k{n}"), "v");
        c.run_until(c.now_ms + 10);
    }
    c.run_until(c.now_ms + 10_000);
    c.assert_converged();
    let asked = c.sync_requests.iter().filter(|(_, _, wan)| *wan).count();
    assert!(asked >= 3, "anti-entropy crossed the slow link: {asked} requests");
    assert!(
        c.sync_answer_deltas <= 100,
        "{} of 1,000 deltas in flight sent again by anti-entropy",
        c.sync_answer_deltas
    );
}

#[test]
fn after_a_sync_hint_the_answer_holds_even_the_newest_deltas() {
    let config = ReplicatorConfig { peer_queue_count_max: 2, ..ReplicatorConfig::default() };
    let mut c = Cluster::new(&[("montreal", 2)], config);
    c.run_until(5_000 + 500);
    for n in 0..10 {
        c.write_unflushed(0, &format!("k{n}"), "v");
    }
    c.flush(0);
    // Well inside the grace and before the next round: only the hint's
    // answer can bring the rest.
    c.run_until(c.now_ms + 50);
    assert_eq!((0..10).filter(|n| c.value(1, &format!("k{n}")).is_some()).count(), 10);
    assert!(
        c.nodes[0].replicator.stats().dropped > 0 && c.sync_answer_deltas > 0,
        "dropped, then sent on request"
    );
}

#[test]
fn acks_come_from_the_region_first_then_from_every_relay() {
    let mut c = three_regions();
    let seq = c.write(0, "k", "v");
    let regions = |c: &Cluster| -> BTreeSet<String> {
        c.nodes[0].replicator.ackers(seq).map(|a| a.values().cloned().collect()).unwrap_or_default()
    };
    assert!(regions(&c).is_empty());
    c.run_until(2 * LAN_MS + 1);
    assert_eq!(regions(&c), BTreeSet::from([c.nodes[0].region.clone()]), "its region acked first");
    c.run_until(2 * WAN_MS + 5);
    let all: BTreeSet<String> = c.nodes.iter().map(|n| n.region.clone()).collect();
    assert_eq!(regions(&c), all, "then a relay of every region");
    assert!(c.events.iter().any(|(i, e)| *i == 0 && *e == Event::Acked { seq }));
}

#[test]
fn a_node_behind_the_backlog_is_told_to_take_a_full_transfer() {
    let config = ReplicatorConfig {
        backlog: BacklogLimits { bytes_max: 1_000, age_ms_max: 60_000 },
        ..ReplicatorConfig::default()
    };
    let mut c = Cluster::new(&[("montreal", 2)], config);
    c.nodes[1].up = false;
    for n in 0..100 {
        c.write(0, &format!("k{n}"), "v");
    }
    c.nodes[1].up = true;
    c.run_until(3_000);
    assert!(
        c.events.iter().any(|(i, e)| *i == 1
            && matches!(e, Event::FullTransferNeeded { peer, origins } if *peer == id(0) && origins == &[id(0)])),
        "{:?}",
        c.events
    );
}

#[test]
fn duplicates_are_dropped() {
    let mut c = three_regions();
    c.write(0, "k", "v");
    c.run_until(100);
    let d = Arc::new(Delta {
        origin: id(0),
        seq: 1,
        key: Key::new("t", Bytes::from_static(b"k")),
        body: DeltaBody::Register(c.nodes[0].store.values().next().unwrap().clone()),
    });
    let before = c.nodes[1].replicator.stats().duplicates;
    let mut apply = |_: &Delta| -> ApplyOutcome { panic!("a duplicate must not be applied") };
    c.nodes[1].replicator.handle_message(
        id(0),
        Message::Deltas { from: id(0), relay: false, ack: true, deltas: vec![d] },
        c.now_ms,
        &mut apply,
    );
    assert_eq!(c.nodes[1].replicator.stats().duplicates, before + 1);
}
