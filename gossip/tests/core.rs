//! Several replication cores in memory, stepped with virtual time over a
//! simulated network (quinn-proto's `Pair` style, no sockets): full
//! transfers with chunks lost, duplicated and reordered, values of 1 KiB to
//! 8 MiB, and a link cut in the middle of a transfer.

use bytes::Bytes;
use geocache_crdt::{codec, Delta, Dot, Hlc, Key, NodeId, Register, Stamp, Value, VersionVector};
use geocache_gossip::core::{Core, CoreConfig, CoreEvent};
use geocache_gossip::durability::Durability;
use geocache_gossip::fill::FillStart;
use geocache_gossip::identities::Link;
use geocache_gossip::peer::{NodeKind, Peer};
use geocache_gossip::replica_store::{ApplyOutcome, ReplicaStore};
use geocache_gossip::wire::Message;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::sync::Arc;

const LAN_MS: u64 = 1;
/// What the transport's queues take per pump in this harness.
const BUDGET_BYTES: usize = 32 << 20;

#[derive(Default)]
struct MapStore {
    map: BTreeMap<Key, Arc<Register>>,
}

impl ReplicaStore for MapStore {
    fn apply(&mut self, delta: &Delta) -> ApplyOutcome {
        let current = self.map.get(&delta.key).cloned();
        let Ok(merged) = delta.apply_to(current.as_deref()) else { return ApplyOutcome::Unappliable };
        let merged = Arc::new(merged);
        self.map.insert(delta.key.clone(), merged.clone());
        ApplyOutcome::Stored(merged)
    }

    fn holds(&mut self, key: &Key) -> bool {
        self.map.contains_key(key)
    }

    fn merge(&mut self, key: &Key, register: &Register, forgotten_if_absent: bool) {
        match self.map.get(key) {
            Some(held) => {
                let merged = held.merged(register);
                self.map.insert(key.clone(), Arc::new(merged));
            }
            None if forgotten_if_absent => {}
            None => {
                self.map.insert(key.clone(), Arc::new(register.clone()));
            }
        }
    }

    fn drop_if_dot(&mut self, key: &Key, dot: Dot) {
        if self.map.get(key).is_some_and(|r| r.meta.dot == dot) {
            self.map.remove(key);
        }
    }

    fn keys(&mut self) -> Vec<Key> {
        self.map.keys().cloned().collect()
    }

    fn register(&mut self, key: &Key) -> Option<Arc<Register>> {
        self.map.get(key).cloned()
    }

    fn dots(&mut self) -> Vec<(Key, Dot)> {
        self.map.iter().map(|(k, r)| (k.clone(), r.meta.dot)).collect()
    }
}

struct Node {
    core: Core,
    store: MapStore,
    seq: u64,
    events: Vec<CoreEvent>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at_ms: u64,
    order: u64,
    from: usize,
    to: usize,
    datagram: bool,
    bytes: Vec<u8>,
    request: bool,
}

/// What the network does to one replication message.
enum Fate {
    Deliver,
    Drop,
    Duplicate,
    Delay(u64),
}

/// Decides each replication message's fate: (from, to, message, now).
type FaultFn = Box<dyn FnMut(usize, usize, &Message, u64) -> Fate>;

struct Harness {
    nodes: Vec<Node>,
    now_ms: u64,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    fault: FaultFn,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2 + i as u8], 7946))
}

fn id(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}

/// What the transport would prove of node `i`.
fn link(i: usize) -> Link {
    Link { name: format!("node-{i}"), region: Some("r".into()), addr: addr(i) }
}

fn key(name: &str) -> Key {
    Key::new("t", Bytes::copy_from_slice(name.as_bytes()))
}

impl Harness {
    fn new(count: usize, configure: impl Fn(&mut CoreConfig)) -> Harness {
        Harness::with_kinds(&vec![NodeKind::Full; count], configure)
    }

    fn with_kinds(kinds: &[NodeKind], configure: impl Fn(&mut CoreConfig)) -> Harness {
        let count = kinds.len();
        let nodes = (0..count)
            .map(|i| {
                let me = Peer {
                    node: id(i),
                    name: format!("node-{i}"),
                    region: "r".into(),
                    lat: 0.0,
                    lon: 0.0,
                    gossip: addr(i),
                    http: addr(i),
                    incarnation: 0,
                    kind: kinds[i],
                };
                let mut config = CoreConfig { seeds: vec![addr(0)], ..CoreConfig::default() };
                configure(&mut config);
                let core = Core::new(me, config, 7 + i as u64, 0);
                Node { core, store: MapStore::default(), seq: 0, events: Vec::new() }
            })
            .collect();
        let mut h = Harness {
            nodes,
            now_ms: 0,
            queue: BinaryHeap::new(),
            order: 0,
            fault: Box::new(|_, _, _, _| Fate::Deliver),
        };
        for i in 0..count {
            h.pump(i);
        }
        h
    }

    fn index(&self, node: NodeId) -> usize {
        (node.0 - 1) as usize
    }

    fn push(&mut self, at_ms: u64, from: usize, to: usize, datagram: bool, bytes: Vec<u8>, request: bool) {
        self.order += 1;
        self.queue.push(Reverse(InFlight { at_ms, order: self.order, from, to, datagram, bytes, request }));
    }

    fn pump(&mut self, i: usize) {
        while let Some((to, bytes)) = self.nodes[i].core.poll_datagram() {
            let j = self.nodes.iter().position(|n| n.core.membership().me().gossip == to);
            if let Some(j) = j {
                self.push(self.now_ms + LAN_MS, i, j, true, bytes.to_vec(), false);
            }
        }
        let mut budget = BUDGET_BYTES;
        loop {
            let node = &mut self.nodes[i];
            let Some(t) = node.core.poll_transmit(&mut node.store, budget) else { break };
            let bytes = codec::encode(&t.message).unwrap();
            budget = budget.saturating_sub(bytes.len());
            let to = self.index(t.to);
            let at = self.now_ms + LAN_MS;
            match (self.fault)(i, to, &t.message, self.now_ms) {
                Fate::Deliver => self.push(at, i, to, false, bytes, t.request),
                Fate::Drop => {}
                Fate::Duplicate => {
                    self.push(at, i, to, false, bytes.clone(), t.request);
                    self.push(at + 1, i, to, false, bytes, t.request);
                }
                Fate::Delay(ms) => self.push(at + ms, i, to, false, bytes, t.request),
            }
        }
        while let Some(event) = self.nodes[i].core.poll_event() {
            self.nodes[i].events.push(event);
        }
    }

    fn run_until(&mut self, end_ms: u64) {
        loop {
            let next_timer = (0..self.nodes.len()).map(|i| (self.nodes[i].core.poll_timeout(), i)).min();
            let next_msg = self.queue.peek().map(|Reverse(m)| m.at_ms);
            let (timer_at, timer_node) = next_timer.unwrap_or((u64::MAX, 0));
            let at = timer_at.min(next_msg.unwrap_or(u64::MAX)).max(self.now_ms);
            if at > end_ms {
                self.now_ms = end_ms;
                return;
            }
            self.now_ms = at;
            if next_msg.is_some_and(|m| m <= timer_at) {
                let Some(Reverse(m)) = self.queue.pop() else { continue };
                self.receive(m);
            } else {
                self.nodes[timer_node].core.handle_timeout(self.now_ms);
                self.pump(timer_node);
            }
        }
    }

    fn receive(&mut self, m: InFlight) {
        let now = self.now_ms;
        if m.datagram {
            self.nodes[m.to].core.handle_datagram(&link(m.from), &m.bytes, now);
        } else {
            let message: Message = codec::decode(&m.bytes).unwrap();
            let node = &mut self.nodes[m.to];
            let answer = node.core.handle_message(&link(m.from), message, &mut node.store, now);
            if let (Some(answer), true) = (answer, m.request) {
                let bytes = codec::encode(&answer).unwrap();
                self.push(now + LAN_MS, m.to, m.from, false, bytes, false);
            }
        }
        self.pump(m.to);
    }

    fn write(&mut self, i: usize, name: &str, value_bytes: usize) {
        self.write_waiting(i, name, value_bytes, Durability::Local);
    }

    /// A write that waits for `level`: its events come in the node's.
    fn write_waiting(&mut self, i: usize, name: &str, value_bytes: usize, level: Durability) {
        let node = &mut self.nodes[i];
        node.seq += 1;
        let k = key(name);
        let current = node.store.map.get(&k).cloned();
        let mut vv = current.as_ref().map(|r| r.meta.vv.clone()).unwrap_or_else(VersionVector::new);
        vv.increment(id(i));
        let floor = current.as_ref().map(|r| r.meta.stamp.hlc.as_u64()).unwrap_or(0);
        let hlc = Hlc::from_u64(Hlc::new(self.now_ms + 1, 0).as_u64().max(floor + 1));
        let fill = (node.seq % 251) as u8;
        let reg = Arc::new(Register::replace(
            Value::Bytes(Bytes::from(vec![fill; value_bytes])),
            Stamp::new(hlc, id(i)),
            vv,
            Dot { origin: id(i), seq: node.seq },
            None,
        ));
        let delta = Arc::new(Delta::for_write(id(i), node.seq, k.clone(), current.as_deref(), &reg));
        node.store.map.insert(k, reg.clone());
        let bytes = value_bytes + 64;
        let now = self.now_ms;
        node.core.local_write(delta.clone(), delta, bytes, level, now);
        self.pump(i);
    }

    fn formed(&mut self) {
        let want = self.nodes.len() - 1;
        for _ in 0..100 {
            if self.nodes.iter().all(|n| n.core.members().len() == want) {
                return;
            }
            self.run_until(self.now_ms + 200);
        }
        panic!("the cluster did not form");
    }
}

/// Value sizes from 1 KiB to 8 MiB.
fn sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (0..40).map(|i| 1 << (10 + i % 11)).collect();
    v.push(8 << 20);
    v
}

/// Node 0 writes every key while node 1 follows; node 1's replication
/// from node 0 is then cut while node 0 overwrites most keys past its
/// (tiny) backlog, so node 1 needs a full transfer, which `fault` then
/// hurts. Returns the harness once node 1 has had time to finish.
fn transfer_under(fault: FaultFn, drop_partial: bool) -> Harness {
    let mut h = Harness::new(2, |c| {
        c.replicator.backlog.bytes_max = 1;
        c.transfer.debug_drop_partial = drop_partial;
    });
    h.formed();
    let sizes = sizes();
    for (n, size) in sizes.iter().enumerate() {
        h.write(0, &format!("k{n}"), *size);
    }
    h.run_until(h.now_ms + 100);
    assert_eq!(h.nodes[1].store.map.len(), sizes.len(), "node 1 followed the first writes");
    // Node 1's own keys: they must survive whatever the transfer does.
    for n in 0..5 {
        h.write(1, &format!("own{n}"), 2_000);
    }
    h.run_until(h.now_ms + 100);
    h.fault = Box::new(|from, to, m, _| match m {
        Message::Deltas { .. } if from == 0 && to == 1 => Fate::Drop,
        _ => Fate::Deliver,
    });
    for (n, size) in sizes.iter().enumerate().filter(|(n, _)| n % 4 != 0) {
        h.write(0, &format!("k{n}"), *size / 2 + 1);
    }
    h.run_until(h.now_ms + 100);
    h.fault = fault;
    h.run_until(h.now_ms + 120_000);
    h
}

fn assert_whole(h: &Harness) {
    let a = &h.nodes[0].store.map;
    let b = &h.nodes[1].store.map;
    for (k, r) in a {
        assert_eq!(b.get(k).map(|r| r.meta.dot), Some(r.meta.dot), "{k} at node 1 as at node 0");
    }
    for n in 0..5 {
        assert!(b.contains_key(&key(&format!("own{n}"))), "node 1's own write own{n} survived");
    }
    assert!(h.nodes[1].core.transfer_stats().received_whole >= 1, "{:?}", h.nodes[1].core.transfer_stats());
}

fn chunk_index(m: &Message) -> Option<u32> {
    match m {
        Message::FullTransferChunk { index, .. } => Some(*index),
        _ => None,
    }
}

#[test]
fn a_transfer_with_lost_duplicated_and_reordered_chunks_completes_and_keeps_every_live_key() {
    let mut lost_once = false;
    let fault = Box::new(move |_: usize, _: usize, m: &Message, _: u64| match chunk_index(m) {
        Some(1) if !lost_once => {
            lost_once = true;
            Fate::Drop
        }
        Some(2) => Fate::Duplicate,
        Some(3) => Fate::Delay(50),
        _ => Fate::Deliver,
    });
    let h = transfer_under(fault, false);
    assert_whole(&h);
    let stats = h.nodes[1].core.transfer_stats();
    assert!(stats.resumes_asked >= 1, "the lost chunk was asked again: {stats:?}");
    assert!(h.nodes[0].core.transfer_stats().resumes_served >= 1);
}

#[test]
fn a_transfer_cut_midway_resumes_after_the_cut() {
    // Every transfer chunk is lost for 3 s, from the third one on.
    let mut cut_from: Option<u64> = None;
    let fault = Box::new(move |_: usize, _: usize, m: &Message, now: u64| {
        let Some(index) = chunk_index(m) else { return Fate::Deliver };
        if index >= 2 && cut_from.is_none() {
            cut_from = Some(now);
        }
        match cut_from {
            Some(at) if now < at + 3_000 => Fate::Drop,
            _ => Fate::Deliver,
        }
    });
    let h = transfer_under(fault, false);
    assert_whole(&h);
}

#[test]
fn the_drop_rule_on_a_partial_transfer_would_delete_live_keys() {
    // The same lost chunk, with the deliberate bug: the harness's check
    // must catch it, or it would not catch the real thing.
    let mut lost_once = false;
    let fault = Box::new(move |_: usize, _: usize, m: &Message, _: u64| match chunk_index(m) {
        Some(1) if !lost_once => {
            lost_once = true;
            Fate::Drop
        }
        _ => Fate::Deliver,
    });
    let h = transfer_under(fault, true);
    let a = &h.nodes[0].store.map;
    let b = &h.nodes[1].store.map;
    let missing = a.keys().filter(|k| !b.contains_key(*k)).count();
    assert!(missing > 0, "the broken drop rule deleted keys node 0 still holds");
}

/// A write made without the newer register a peer holds (here node 1
/// took it from a transfer; node 0 missed it) loses at the peer but would
/// win at its writer for good, since node 0's watermarks say it has the
/// newer write: the peer sends its register back and both converge.
/// Node 1 holds a register of a third node stamped `ahead_ms` after the
/// moment node 0 then writes the same key; returns the harness after.
fn lost_write(ahead_ms: u64) -> (Harness, Arc<Register>) {
    let mut h = Harness::new(2, |_| {});
    h.formed();
    let k = key("k");
    let ahead = Arc::new(Register::replace(
        Value::Bytes(Bytes::from_static(b"newer")),
        Stamp::new(Hlc::new(h.now_ms + 1 + ahead_ms, 0), NodeId(99)),
        VersionVector::from_entries(vec![(NodeId(99), 1)]).unwrap(),
        Dot { origin: NodeId(99), seq: 7 },
        None,
    ));
    h.nodes[1].store.map.insert(k.clone(), ahead.clone());
    h.write(0, "k", 10);
    h.run_until(h.now_ms + 1_000);
    (h, ahead)
}

#[test]
fn a_write_that_lost_to_a_register_its_writer_had_not_seen_is_repaired_at_the_writer() {
    let (h, ahead) = lost_write(30_000);
    let k = key("k");
    let at = |h: &Harness, i: usize| h.nodes[i].store.map.get(&k).map(|r| (r.meta.stamp, r.value.clone()));
    assert_eq!(at(&h, 1).map(|(s, _)| s), Some(ahead.meta.stamp), "the newer register won at node 1");
    assert_eq!(at(&h, 0), at(&h, 1), "and node 0 took it back");
    assert_eq!(h.nodes[1].core.replicator().stats().repairs_sent, 1);
    assert_eq!(h.nodes[0].core.replicator().stats().repairs_merged, 1);
}

/// A winner stamped just after the write is most likely a concurrent write
/// on its way to the writer: no repair (replication brings it).
#[test]
fn a_write_that_lost_to_a_nearly_concurrent_one_is_not_repaired() {
    let (h, _) = lost_write(geocache_gossip::replicator::REPAIR_STAMP_GAP_MS / 2);
    assert_eq!(h.nodes[1].core.replicator().stats().repairs_sent, 0);
}

fn bytes_at(h: &Harness, i: usize, name: &str) -> Option<Vec<u8>> {
    h.nodes[i].store.map.get(&key(name)).and_then(|r| match &r.value {
        Value::Bytes(b) => Some(b.to_vec()),
        Value::Doc(_) | Value::Counter(_) => None,
    })
}

fn filled(h: &Harness, i: usize, name: &str) -> Option<bool> {
    h.nodes[i].events.iter().find_map(|e| match e {
        CoreEvent::Filled { key: k, found } if *k == key(name) => Some(*found),
        _ => None,
    })
}

fn fill(h: &mut Harness, i: usize, name: &str) -> FillStart {
    let now = h.now_ms;
    let start = h.nodes[i].core.fill(key(name), now);
    h.pump(i);
    start
}

#[test]
fn a_sidecar_applies_remote_writes_of_keys_it_does_not_hold_without_storing_them() {
    let mut h = Harness::with_kinds(&[NodeKind::Full, NodeKind::Full, NodeKind::Sidecar], |_| {});
    h.formed();
    for n in 0..10 {
        h.write(0, &format!("k{n}"), 100);
    }
    h.run_until(h.now_ms + 500);
    assert_eq!(h.nodes[1].store.map.len(), 10, "a full node stores every key");
    assert!(h.nodes[2].store.map.is_empty(), "the sidecar stores none");
    let sidecar = h.nodes[2].core.replicator();
    assert!(sidecar.has_applied_through(id(0), 10), "and records all of them as applied");
    assert_eq!(sidecar.stats().not_stored, 10);
}

#[test]
fn a_miss_at_a_sidecar_fills_from_a_full_node_and_then_follows_the_key() {
    let mut h = Harness::with_kinds(&[NodeKind::Full, NodeKind::Full, NodeKind::Sidecar], |_| {});
    h.formed();
    h.write(0, "k", 10);
    h.run_until(h.now_ms + 100);
    assert_eq!(fill(&mut h, 2, "k"), FillStart::Asked);
    assert_eq!(fill(&mut h, 2, "k"), FillStart::Joined, "a second miss waits on the same fill");
    h.run_until(h.now_ms + 100);
    assert_eq!(filled(&h, 2, "k"), Some(true));
    assert_eq!(bytes_at(&h, 2, "k"), bytes_at(&h, 0, "k"));
    // Held now: the next remote write of it is stored.
    h.write(1, "k", 20);
    h.run_until(h.now_ms + 100);
    assert_eq!(bytes_at(&h, 2, "k").map(|b| b.len()), Some(20), "the sidecar follows a key it holds");
    assert_eq!(fill(&mut h, 0, "k"), FillStart::NotSidecar);
    assert_eq!(fill(&mut h, 2, "absent"), FillStart::Asked);
    h.run_until(h.now_ms + 100);
    assert_eq!(filled(&h, 2, "absent"), Some(false), "a key no full node holds is a miss");
    assert_eq!(h.nodes[2].core.fill_stats().absent, 1);
}

#[test]
fn a_fill_from_a_full_node_behind_the_sidecar_takes_the_newer_write_from_the_sidecars_backlog() {
    // Node 0 (the full node asked: ids tie-break equal round trips) misses
    // sidecar 3's write; sidecar 2 applied it whole (a sidecar sends every
    // delta whole) without storing it.
    let kinds = [NodeKind::Full, NodeKind::Full, NodeKind::Sidecar, NodeKind::Sidecar];
    let mut h = Harness::with_kinds(&kinds, |_| {});
    h.formed();
    h.fault = Box::new(|from, to, m, _| match m {
        Message::Deltas { .. } if from == 3 && to == 0 => Fate::Drop,
        _ => Fate::Deliver,
    });
    h.write(3, "k", 30);
    h.run_until(h.now_ms + 10);
    assert!(h.nodes[0].store.map.is_empty() && h.nodes[2].store.map.is_empty());
    assert_eq!(fill(&mut h, 2, "k"), FillStart::Asked);
    h.run_until(h.now_ms + 10);
    assert_eq!(filled(&h, 2, "k"), Some(true), "{:?}", h.nodes[2].core.fill_stats());
    assert_eq!(bytes_at(&h, 2, "k").map(|b| b.len()), Some(30), "not the full node's nothing");
    assert_eq!(h.nodes[2].core.fill_stats().completed_from_backlog, 1);
}

#[test]
fn a_fill_behind_a_write_the_sidecar_got_without_its_body_is_a_miss() {
    // Node 1's write reaches sidecar 2 without its body (2 does not hold
    // the key) and never reaches node 0, the full node asked.
    let mut h = Harness::with_kinds(&[NodeKind::Full, NodeKind::Full, NodeKind::Sidecar], |_| {});
    h.formed();
    h.fault = Box::new(|from, to, m, _| match m {
        Message::Deltas { .. } if from == 1 && to == 0 => Fate::Drop,
        _ => Fate::Deliver,
    });
    h.write(1, "k", 30);
    // Body-less writes may wait `omitted_flush_ms` to leave together.
    h.run_until(h.now_ms + 50);
    assert_eq!(h.nodes[2].core.replicator().interest_stats().omitted_applied, 1);
    assert_eq!(fill(&mut h, 2, "k"), FillStart::Asked);
    h.run_until(h.now_ms + 10);
    assert_eq!(filled(&h, 2, "k"), Some(false), "the sidecar saw a newer k than node 0 has");
    assert!(h.nodes[2].store.map.is_empty());
}

#[test]
fn a_full_node_sends_a_sidecar_whole_deltas_only_of_keys_it_holds() {
    let mut h = Harness::with_kinds(&[NodeKind::Full, NodeKind::Full, NodeKind::Sidecar], |_| {});
    h.formed();
    let whole_to_sidecar = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let seen = whole_to_sidecar.clone();
    h.fault = Box::new(move |_, to, m, _| {
        if let (2, Message::Deltas { deltas, .. }) = (to, m) {
            let whole = deltas.iter().filter(|d| !matches!(d.body, geocache_crdt::DeltaBody::Omitted));
            seen.set(seen.get() + whole.count() as u32);
        }
        Fate::Deliver
    });
    for n in 0..10 {
        h.write(0, &format!("k{n}"), 100);
    }
    h.run_until(h.now_ms + 100);
    assert_eq!(whole_to_sidecar.get(), 0, "the sidecar holds none of them");
    let sidecar = h.nodes[2].core.replicator();
    assert!(sidecar.has_applied_through(id(0), 10), "yet records every one as applied");
    assert_eq!(sidecar.interest_stats().omitted_applied, 10);
    assert_eq!(h.nodes[0].core.replicator().interest_stats().omitted_sent, 10);
    // The sidecar's own write tells both full nodes it holds the key; a
    // fill answered by node 0 tells node 1 by an `Interest` message.
    h.write(2, "own", 10);
    assert_eq!(fill(&mut h, 2, "k3"), FillStart::Asked);
    h.run_until(h.now_ms + 100);
    assert_eq!(filled(&h, 2, "k3"), Some(true));
    for full in [0, 1] {
        assert_eq!(h.nodes[full].core.replicator().interest_tracked(id(2)), 2, "node {full}");
    }
    h.write(1, "own", 20);
    h.write(1, "k3", 30);
    h.write(0, "k4", 30);
    h.run_until(h.now_ms + 100);
    assert_eq!(whole_to_sidecar.get(), 2, "own and k3 whole, k4 not");
    assert_eq!(bytes_at(&h, 2, "own").map(|b| b.len()), Some(20));
    assert_eq!(bytes_at(&h, 2, "k3").map(|b| b.len()), Some(30));
    assert_eq!(bytes_at(&h, 2, "k4"), None);
}

#[test]
fn writes_a_sidecar_gets_without_their_body_leave_together_and_a_whole_one_at_once() {
    let mut h = Harness::with_kinds(&[NodeKind::Full, NodeKind::Sidecar], |_| {});
    h.formed();
    h.write(1, "held", 10);
    h.run_until(h.now_ms + 100);
    let frames = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let seen = frames.clone();
    h.fault = Box::new(move |_, to, m, _| {
        if let (1, Message::Deltas { .. }) = (to, m) {
            seen.set(seen.get() + 1);
        }
        Fate::Deliver
    });
    // Twenty writes of keys the sidecar does not hold, 1 ms apart: within
    // `omitted_flush_ms` (10 ms) of the first, they share frames.
    for n in 0..20 {
        h.write(0, &format!("k{n}"), 100);
        h.run_until(h.now_ms + 1);
    }
    h.run_until(h.now_ms + 50);
    let sidecar = h.nodes[1].core.replicator();
    assert!(sidecar.has_applied_through(id(0), 20), "every one recorded as applied");
    assert!(frames.get() <= 3, "{} frames for 20 body-less writes", frames.get());
    // A write of a key it holds does not wait: it leaves at once, with
    // whatever body-less writes are queued before it.
    frames.set(0);
    h.write(0, "k-late", 100);
    h.write(0, "held", 20);
    h.run_until(h.now_ms + 2 * LAN_MS);
    assert_eq!(bytes_at(&h, 1, "held").map(|b| b.len()), Some(20), "the held key, one LAN hop later");
    assert_eq!(frames.get(), 1, "one frame, the body-less write first");
    assert!(h.nodes[1].core.replicator().has_applied_through(id(0), 22));
}

#[test]
fn a_write_of_a_held_key_that_comes_without_its_body_drops_the_key_rather_than_keep_it_stale() {
    let mut h = Harness::with_kinds(&[NodeKind::Full, NodeKind::Full, NodeKind::Sidecar], |_| {});
    h.formed();
    h.write(0, "k", 10);
    h.run_until(h.now_ms + 100);
    // Node 1 never hears that the sidecar filled k from node 0.
    h.fault = Box::new(|from, to, m, _| match m {
        Message::Interest { .. } if from == 2 && to == 1 => Fate::Drop,
        _ => Fate::Deliver,
    });
    assert_eq!(fill(&mut h, 2, "k"), FillStart::Asked);
    h.run_until(h.now_ms + 100);
    assert_eq!(bytes_at(&h, 2, "k").map(|b| b.len()), Some(10));
    h.write(1, "k", 20);
    h.run_until(h.now_ms + 100);
    assert_eq!(bytes_at(&h, 2, "k"), None, "not the old value");
    assert_eq!(h.nodes[2].core.replicator().interest_stats().omitted_held_dropped, 1);
}

#[test]
fn a_fill_the_sidecars_backlog_cannot_complete_is_a_miss() {
    let mut h = Harness::with_kinds(&[NodeKind::Full, NodeKind::Full, NodeKind::Sidecar], |c| {
        c.replicator.backlog.bytes_max = 1;
    });
    h.formed();
    h.fault = Box::new(|from, to, m, _| match m {
        Message::Deltas { .. } if from == 1 && to == 0 => Fate::Drop,
        _ => Fate::Deliver,
    });
    h.write(1, "k", 30);
    h.write(1, "other", 30);
    h.run_until(h.now_ms + 50);
    assert_eq!(fill(&mut h, 2, "k"), FillStart::Asked);
    h.run_until(h.now_ms + 10);
    assert_eq!(filled(&h, 2, "k"), Some(false), "the sidecar cannot tell whether it saw a newer k");
    assert_eq!(h.nodes[2].core.fill_stats().behind, 1);
    assert!(h.nodes[2].store.map.is_empty());
}

#[test]
fn a_sidecar_sends_no_full_transfer() {
    let mut h = Harness::with_kinds(&[NodeKind::Full, NodeKind::Sidecar], |_| {});
    h.formed();
    h.write(1, "own", 10);
    h.run_until(h.now_ms + 100);
    let now = h.now_ms;
    let node = &mut h.nodes[1];
    let ask = Message::FullTransferRequest { from: id(0), resume: None };
    node.core.handle_message(&link(0), ask, &mut node.store, now);
    while let Some(t) = node.core.poll_transmit(&mut node.store, BUDGET_BYTES) {
        assert!(chunk_index(&t.message).is_none(), "a sidecar's transfer would drop what it did not store");
    }
}

#[test]
fn a_sidecar_without_a_full_node_in_its_region_misses_at_once() {
    let mut h = Harness::with_kinds(&[NodeKind::Sidecar, NodeKind::Sidecar], |_| {});
    h.formed();
    assert_eq!(fill(&mut h, 1, "k"), FillStart::NoFullNode);
    assert_eq!(h.nodes[1].core.fill_stats().no_full_node, 1);
}

#[test]
fn a_sidecars_ack_does_not_make_a_write_region_durable() {
    let level_reached = |kinds: &[NodeKind]| {
        let mut h = Harness::with_kinds(kinds, |_| {});
        h.formed();
        h.write_waiting(0, "k", 10, Durability::Region);
        h.run_until(h.now_ms + 500);
        h.nodes[0]
            .events
            .iter()
            .filter_map(|e| match e {
                CoreEvent::Durability { level, .. } => Some(*level),
                _ => None,
            })
            .max()
    };
    assert!(level_reached(&[NodeKind::Full, NodeKind::Full]) >= Some(Durability::Region));
    assert!(
        level_reached(&[NodeKind::Full, NodeKind::Sidecar]) < Some(Durability::Region),
        "a sidecar acks writes it does not store"
    );
}

#[test]
fn writes_made_before_any_peer_was_up_reach_the_peers_as_they_come_up() {
    // Anti-entropy is made too slow to matter: only the writer's own
    // resend can bring these writes, as at 200 nodes, where its round
    // robin comes to the writer from any one peer every few minutes.
    let mut h = Harness::new(3, |c| c.replicator.sync_interval_ms = 3_600_000);
    for n in 0..5 {
        h.write(2, &format!("early{n}"), 10);
    }
    assert!(h.nodes[2].core.members().is_empty(), "written while alone");
    h.formed();
    h.run_until(h.now_ms + 1_000);
    for i in 0..2 {
        let replicator = h.nodes[i].core.replicator();
        assert!(replicator.has_applied_through(id(2), 5), "node {i} lacks the early writes");
        assert!(bytes_at(&h, i, "early4").is_some());
    }
    assert_eq!(
        h.nodes[2].core.replicator().stats().unreached_resends,
        5,
        "each crossed once, through a relay"
    );
}

#[test]
fn a_write_lost_in_a_crash_reaches_the_peers_when_the_node_returns_with_its_data() {
    let slow_sync = |c: &mut CoreConfig| c.replicator.sync_interval_ms = 3_600_000;
    let mut h = Harness::new(3, slow_sync);
    h.formed();
    // Node 2's deltas die with it: written, kept on its disk, sent nowhere.
    h.fault = Box::new(|from, _, m, _| match m {
        Message::Deltas { .. } if from == 2 => Fate::Drop,
        _ => Fate::Deliver,
    });
    h.write(2, "last", 10);
    h.run_until(h.now_ms + 200);
    assert!(!h.nodes[0].core.replicator().has_applied(id(2), 1));
    // It restarts with its data: a later incarnation of the same origin.
    h.fault = Box::new(|_, _, _, _| Fate::Deliver);
    let old = h.nodes[2].core.replicator();
    let state = geocache_gossip::resume::ResumeState {
        own_seq: old.head(),
        watermarks: old.watermarks(),
        backlog: old.backlog_deltas(),
    };
    let me = Peer { incarnation: h.now_ms, ..h.nodes[2].core.membership().me().clone() };
    let mut config = CoreConfig { seeds: vec![addr(0)], ..CoreConfig::default() };
    slow_sync(&mut config);
    let now = h.now_ms;
    h.nodes[2].core = Core::resume(me, config, &state, 99, now);
    h.nodes[2].core.store_loaded();
    h.pump(2);
    h.run_until(h.now_ms + 5_000);
    for i in 0..2 {
        assert!(h.nodes[i].core.replicator().has_applied(id(2), 1), "node {i} never got the write");
        assert!(bytes_at(&h, i, "last").is_some());
    }
}
