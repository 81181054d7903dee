//! Property tests for the laws that make replicas converge.
//!
//! Registers are not generated field by field: a few nodes run a random
//! history of writes (bytes, document patches, deletes, with and without
//! expiry) on one key and exchange state at random, exactly as replicas do,
//! and the laws are checked over every register that history produced. So
//! the registers include ties on the clock, tombstones, expiries and
//! documents that share an epoch but hold different edits.

use bytes::Bytes;
use geocache_crdt::{
    codec, Counter, Delta, DeltaError, Doc, Dot, HlcClock, Key, NodeId, Register, Value, VersionVector,
    WRITERS_KEPT,
};
use proptest::prelude::*;
use serde_json::json;
use std::sync::Arc;

const NODES: usize = 3;
const CASES: u32 = 1_000;

#[derive(Clone, Debug)]
enum Op {
    Put { node: usize, byte: u8, ttl_ms: Option<u64> },
    Patch { node: usize, field: u8, value: Option<u8> },
    Delete { node: usize },
    Incr { node: usize, by: i8 },
    Sync { from: usize, to: usize },
    Advance { node: usize, ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES;
    prop_oneof![
        (node.clone(), any::<u8>(), proptest::option::of(1..50u64))
            .prop_map(|(node, byte, ttl_ms)| Op::Put { node, byte, ttl_ms }),
        (node.clone(), 0..4u8, proptest::option::of(any::<u8>()))
            .prop_map(|(node, field, value)| Op::Patch { node, field, value }),
        node.clone().prop_map(|node| Op::Delete { node }),
        (node.clone(), any::<i8>()).prop_map(|(node, by)| Op::Incr { node, by }),
        (node.clone(), 0..NODES).prop_map(|(from, to)| Op::Sync { from, to }),
        (node, 0..3u64).prop_map(|(node, ms)| Op::Advance { node, ms }),
    ]
}

struct Replica {
    id: NodeId,
    clock: HlcClock,
    now_ms: u64,
    seq: u64,
    register: Option<Register>,
}

/// What a history produced: every register any replica held, and every
/// delta with the origin's register after the write.
#[derive(Clone, Debug)]
struct History {
    registers: Vec<Register>,
    deltas: Vec<(Delta, Register)>,
}

fn key() -> Key {
    Key::new("ns", Bytes::from_static(b"k"))
}

fn run(ops: &[Op]) -> History {
    let mut replicas: Vec<Replica> = (0..NODES)
        .map(|i| Replica {
            id: NodeId(i as u64 + 1),
            clock: HlcClock::new(60_000),
            // Close clocks, so that equal readings on different nodes happen.
            now_ms: 1_000,
            seq: 0,
            register: None,
        })
        .collect();
    let mut history = History { registers: Vec::new(), deltas: Vec::new() };
    for op in ops {
        match *op {
            Op::Sync { from, to } => {
                let Some(theirs) = replicas[from].register.clone() else { continue };
                let r = &mut replicas[to];
                let _ = r.clock.observe(theirs.meta.stamp.hlc, r.now_ms);
                let merged = match &r.register {
                    Some(mine) => mine.merged(&theirs),
                    None => theirs,
                };
                history.registers.push(merged.clone());
                r.register = Some(merged);
            }
            Op::Advance { node, ms } => replicas[node].now_ms += ms,
            Op::Put { node, .. } | Op::Patch { node, .. } | Op::Delete { node } | Op::Incr { node, .. } => {
                let r = &mut replicas[node];
                let before = r.register.clone();
                let floor = before.as_ref().map(|b| b.meta.stamp.hlc).unwrap_or_default();
                let stamp = geocache_crdt::Stamp::new(r.clock.tick_after(floor, r.now_ms), r.id);
                let mut vv = before.as_ref().map(|b| b.meta.vv.clone()).unwrap_or_default();
                vv.advance(r.id, stamp.hlc.as_u64());
                r.seq += 1;
                let dot = Dot { origin: r.id, seq: r.seq };
                let after = match *op {
                    Op::Put { byte, ttl_ms, .. } => {
                        let mut reg = Register::replace(
                            Value::Bytes(Bytes::from(vec![byte; 3])),
                            stamp,
                            vv,
                            dot,
                            ttl_ms.map(|t| r.now_ms + t),
                        );
                        reg.meta.content_type = (byte % 2 == 0).then(|| "text/plain".to_string());
                        reg
                    }
                    Op::Delete { .. } => Register::tombstone(stamp, vv, dot, Some(r.now_ms + 1_000)),
                    Op::Patch { field, value, .. } => {
                        let patch = json!({ format!("f{field}"): value });
                        match before.as_ref().and_then(Register::doc) {
                            Some(doc) => {
                                let mut doc = doc.clone();
                                doc.apply_merge_patch(&patch, stamp).unwrap();
                                let mut reg = before.clone().unwrap();
                                reg.value = Value::Doc(doc);
                                reg.meta.stamp = stamp;
                                reg.meta.vv = vv;
                                reg.meta.dot = dot;
                                reg
                            }
                            None => {
                                let mut doc = Doc::new();
                                doc.apply_merge_patch(&patch, stamp).unwrap();
                                Register::replace(Value::Doc(doc), stamp, vv, dot, None)
                            }
                        }
                    }
                    // As the node's `WriteOp::Add`: a counter of the visible
                    // one's epoch, an integer's, or a fresh epoch after
                    // what is held.
                    Op::Incr { by, .. } => {
                        let visible = before.as_ref().filter(|b| b.is_visible_at(r.now_ms));
                        let (mut counter, epoch) = match visible {
                            Some(b) => match &b.value {
                                Value::Counter(c) => (c.clone(), b.meta.epoch),
                                // Bytes here are not integers: the base stands
                                // for the integer, as a function of the
                                // register, as parsing its bytes would be.
                                _ => (Counter::starting_at(i64::from(b.meta.dot.seq as i8)), b.meta.epoch),
                            },
                            None => (
                                Counter::default(),
                                before.as_ref().map_or(geocache_crdt::Stamp::default(), |b| {
                                    geocache_crdt::Stamp::new(
                                        geocache_crdt::Hlc::from_u64(b.meta.epoch.hlc.as_u64() + 1),
                                        NodeId(0),
                                    )
                                }),
                            ),
                        };
                        counter.add(r.id, i64::from(by)).unwrap();
                        let mut reg = Register::replace(Value::Counter(counter), stamp, vv, dot, None);
                        reg.meta.epoch = epoch;
                        reg.meta.expires_at_ms = visible.and_then(|b| b.meta.expires_at_ms);
                        reg
                    }
                    Op::Sync { .. } | Op::Advance { .. } => unreachable!(),
                };
                let delta = Delta::for_write(r.id, r.seq, key(), before.as_ref(), &Arc::new(after.clone()));
                history.registers.push(after.clone());
                history.deltas.push((delta, after.clone()));
                r.register = Some(after);
            }
        }
    }
    history
}

fn history() -> impl Strategy<Value = History> {
    proptest::collection::vec(op(), 1..16)
        .prop_map(|ops| run(&ops))
        .prop_filter("a history with at least one write", |h| !h.registers.is_empty())
}

fn pick(h: &History, i: usize) -> &Register {
    &h.registers[i % h.registers.len()]
}

/// A deterministic shuffle with duplicates, from a generated seed.
fn reorder<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out: Vec<T> = items.to_vec();
    for i in (1..out.len()).rev() {
        out.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let dupes = (next() % 4) as usize;
    for _ in 0..dupes.min(items.len()) {
        let j = (next() % items.len() as u64) as usize;
        let at = (next() % (out.len() as u64 + 1)) as usize;
        out.insert(at, items[j].clone());
    }
    out
}

/// Applies deltas as a receiver does: a delta whose document base is not
/// here yet waits, and if it never can apply, the whole register is fetched
/// (what anti-entropy does).
fn apply_all(deltas: &[(Delta, Register)]) -> Option<Register> {
    let mut current: Option<Register> = None;
    let mut waiting: Vec<&(Delta, Register)> = Vec::new();
    for item in deltas {
        match item.0.apply_to(current.as_ref()) {
            Ok(r) => current = Some(r),
            Err(DeltaError::MissingBase) => waiting.push(item),
            Err(e) => panic!("valid changes failed to apply: {e}"),
        }
    }
    for (delta, full) in waiting {
        current = Some(match delta.apply_to(current.as_ref()) {
            Ok(r) => r,
            Err(_) => match current {
                Some(c) => c.merged(full),
                None => full.clone(),
            },
        });
    }
    current
}

/// Vectors of up to 24 writers, three times what a vector keeps, each
/// counter a clock reading as `advance` records it.
fn wide_vv_strategy() -> impl Strategy<Value = VersionVector> {
    proptest::collection::vec((0..24u64, 1..1_000u64), 0..40).prop_map(|writes| {
        let mut vv = VersionVector::new();
        for (node, clock) in writes {
            vv.advance(NodeId(node), clock);
        }
        vv
    })
}

fn vv_strategy() -> impl Strategy<Value = VersionVector> {
    proptest::collection::vec((0..5u64, 1..4u64), 0..6).prop_map(|incs| {
        let mut vv = VersionVector::new();
        for (node, times) in incs {
            for _ in 0..times {
                vv.increment(NodeId(node));
            }
        }
        vv
    })
}

/// `r` as a hostile or broken peer could send it: stamped and epoched at
/// one shared stamp (at the end of the clock's range when `end`), so that
/// different payloads claim the very same write.
fn forged(r: &Register, end: bool) -> Register {
    let hlc = if end { geocache_crdt::Hlc::from_u64(u64::MAX) } else { geocache_crdt::Hlc::new(1_000, 7) };
    let stamp = geocache_crdt::Stamp::new(hlc, NodeId(9));
    let mut out = r.clone();
    out.meta.stamp = stamp;
    out.meta.epoch = stamp;
    out
}

/// Increments only, at random nodes, with random exchanges, then every
/// replica merges every other: all must read the sum of every increment.
/// An increment at a node, then maybe an exchange `(from, to)`.
type CountOp = (usize, i8, Option<(usize, usize)>);

fn counted(ops: &[CountOp]) -> (i128, Option<Register>) {
    let only_counts: Vec<Op> = ops
        .iter()
        .flat_map(|&(node, by, sync)| {
            let mut v = vec![Op::Incr { node, by }];
            if let Some((from, to)) = sync {
                v.push(Op::Sync { from, to });
            }
            v
        })
        .collect();
    let h = run(&only_counts);
    let total = ops.iter().map(|&(_, by, _)| i128::from(by)).sum();
    // The last register each node wrote, merged everywhere.
    let mut finals: Vec<Option<Register>> = vec![None; NODES];
    for (delta, after) in &h.deltas {
        let node = (delta.origin.0 - 1) as usize;
        finals[node] = Some(after.clone());
    }
    let all = finals.iter().flatten().fold(None::<Register>, |acc, r| match acc {
        Some(a) => Some(a.merged(r)),
        None => Some(r.clone()),
    });
    (total, all)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn concurrent_increments_all_count_once_replicas_have_merged(
        ops in proptest::collection::vec(
            (0..NODES, any::<i8>(), proptest::option::of((0..NODES, 0..NODES))),
            1..24,
        ),
    ) {
        let (total, merged) = counted(&ops);
        let value = merged.as_ref().and_then(Register::counter).map(Counter::value);
        prop_assert_eq!(value, Some(total));
    }

    #[test]
    fn equal_stamps_on_different_payloads_still_merge_as_a_semilattice(
        h in history(), i: usize, j: usize, k: usize, end: bool,
    ) {
        let (a, b, c) = (forged(pick(&h, i), end), forged(pick(&h, j), end), forged(pick(&h, k), end));
        prop_assert_eq!(a.merged(&b), b.merged(&a));
        prop_assert_eq!(a.merged(&b).merged(&c), a.merged(&b.merged(&c)));
        prop_assert_eq!(a.merged(&a), a.clone());
    }

    #[test]
    fn merge_is_commutative(h in history(), i: usize, j: usize) {
        let (a, b) = (pick(&h, i), pick(&h, j));
        prop_assert_eq!(a.merged(b), b.merged(a));
    }

    #[test]
    fn merge_is_associative(h in history(), i: usize, j: usize, k: usize) {
        let (a, b, c) = (pick(&h, i), pick(&h, j), pick(&h, k));
        prop_assert_eq!(a.merged(b).merged(c), a.merged(&b.merged(c)));
    }

    #[test]
    fn merge_is_idempotent(h in history(), i: usize, j: usize) {
        let (a, b) = (pick(&h, i), pick(&h, j));
        prop_assert_eq!(&a.merged(a), a);
        let ab = a.merged(b);
        prop_assert_eq!(ab.merged(b), ab);
    }

    #[test]
    fn deltas_in_any_order_with_duplicates_give_the_same_register(
        h in history(), seed_a: u64, seed_b: u64,
    ) {
        prop_assume!(!h.deltas.is_empty());
        let expected = h.deltas.iter().skip(1).fold(h.deltas[0].1.clone(), |acc, (_, r)| acc.merged(r));
        let a = apply_all(&reorder(&h.deltas, seed_a));
        let b = apply_all(&reorder(&h.deltas, seed_b));
        prop_assert_eq!(a.as_ref(), Some(&expected));
        prop_assert_eq!(b.as_ref(), Some(&expected));
    }

    #[test]
    fn codec_round_trips_registers_and_deltas(h in history(), i: usize) {
        let r = pick(&h, i);
        prop_assert_eq!(&codec::decode::<Register>(&codec::encode(r).unwrap()).unwrap(), r);
        for (d, _) in &h.deltas {
            prop_assert_eq!(&codec::decode::<Delta>(&codec::encode(d).unwrap()).unwrap(), d);
        }
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode::<Delta>(&bytes);
        let _ = codec::decode::<Register>(&bytes);
        let mut enveloped = vec![codec::WIRE_VERSION];
        enveloped.extend_from_slice(&bytes);
        let _ = codec::decode::<Delta>(&enveloped);
        let _ = codec::decode::<Register>(&enveloped);
        let _ = VersionVector::decode_compact(&bytes);
    }

    #[test]
    fn decoding_a_mutated_message_never_panics(h in history(), at: usize, byte: u8) {
        let (d, _) = &h.deltas.first().cloned().unwrap_or_else(|| {
            (Delta::for_write(NodeId(1), 1, key(), None, &Arc::new(pick(&h, 0).clone())), pick(&h, 0).clone())
        });
        let mut bytes = codec::encode(d).unwrap();
        let at = at % bytes.len();
        bytes[at] = byte;
        let _ = codec::decode::<Delta>(&bytes);
        bytes.truncate(at);
        let _ = codec::decode::<Delta>(&bytes);
    }

    #[test]
    fn vv_join_is_a_least_upper_bound(a in vv_strategy(), b in vv_strategy(), c in vv_strategy()) {
        let ab = a.join(&b);
        prop_assert_eq!(&ab, &b.join(&a));
        prop_assert_eq!(ab.join(&c), a.join(&b.join(&c)));
        prop_assert_eq!(&a.join(&a), &a);
        prop_assert!(ab.dominates(&a) && ab.dominates(&b));
        if c.dominates(&a) && c.dominates(&b) {
            prop_assert!(c.dominates(&ab));
        }
    }

    #[test]
    fn vv_join_of_wide_vectors_stays_a_bounded_semilattice(
        a in wide_vv_strategy(), b in wide_vv_strategy(), c in wide_vv_strategy(), node in 0..30u64, clock: u16,
    ) {
        let ab = a.join(&b);
        prop_assert!(ab.entries().len() <= WRITERS_KEPT);
        prop_assert_eq!(&ab, &b.join(&a));
        prop_assert_eq!(ab.join(&c), a.join(&b.join(&c)));
        prop_assert_eq!(&ab.join(&ab), &ab);
        prop_assert_eq!(&a.join(&VersionVector::new()), &a);
        // A write is always in the vector it makes, and the vector moves.
        let mut written = ab.clone();
        let counter = written.advance(NodeId(node), u64::from(clock));
        prop_assert_eq!(written.get(NodeId(node)), counter);
        prop_assert!(counter > ab.get(NodeId(node)));
        prop_assert_ne!(written.cas_token(), ab.cas_token());
    }

    #[test]
    fn vv_order_is_a_partial_order(a in vv_strategy(), b in vv_strategy(), c in vv_strategy()) {
        prop_assert!(a.dominates(&a));
        if a.dominates(&b) && b.dominates(&a) {
            prop_assert_eq!(&a, &b);
        }
        if a.dominates(&b) && b.dominates(&c) {
            prop_assert!(a.dominates(&c));
        }
        prop_assert_eq!(a.concurrent(&b), b.concurrent(&a));
        prop_assert_eq!(a.concurrent(&b), a.partial_cmp(&b).is_none());
    }

    #[test]
    fn vv_encodings_round_trip(a in vv_strategy()) {
        prop_assert_eq!(VersionVector::parse_etag(&a.to_etag()).unwrap(), a.clone());
        let mut bytes = Vec::new();
        a.encode_compact(&mut bytes);
        prop_assert_eq!(VersionVector::decode_compact(&bytes).unwrap(), a.clone());
        prop_assert_eq!(codec::decode::<VersionVector>(&codec::encode(&a).unwrap()).unwrap(), a);
    }
}
