//! `Store` get and put against bare moka on the same workload: 100-byte
//! values, LRU, a byte budget that holds every key, keys visited in a fixed
//! stride. Two key-set sizes: `hot` (1,000 keys: fits in CPU caches, so the
//! figures show the CPU work) and `cold` (100,000 keys: most accesses miss
//! the CPU caches, as in a real cache server).
//!
//! References in the same run:
//! - `moka`: `Cache<Key, Bytes>`, insert and get, SipHash, no expiry: what a
//!   user of bare moka would write.
//! - `moka_as_store`: moka configured as the store uses it (per-entry
//!   expiry, foldhash, `Arc<Register>` values, `and_compute_with` writes),
//!   without the CRDT work. The gap from `moka` to it is the cost of moka's
//!   own features; from it to `store`, the cost of the CRDT layer.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use geocache_crdt::{Key, NodeId, Register};
use geocache_node::clock::SystemClock;
use geocache_node::config::EvictionKind;
use geocache_node::store::{Condition, Store, StoreConfig, Ttl, Write, WriteOp};
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEMORY_BYTES: u64 = 256 << 20;
const STRIDE: usize = 7_919;

struct FixedExpiry;

impl Expiry<Key, Arc<Register>> for FixedExpiry {
    fn expire_after_create(&self, _: &Key, _: &Arc<Register>, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(3_600))
    }
}

fn workload(c: &mut Criterion, name: &str, key_count: usize) {
    let namespace: Arc<str> = Arc::from("bench");
    let keys: Vec<Key> =
        (0..key_count).map(|i| Key::new(namespace.clone(), Bytes::from(format!("key:{i}")))).collect();
    let value = Bytes::from(vec![b'v'; 100]);

    let store = Store::new(
        StoreConfig {
            node: NodeId(1),
            max_memory_bytes: MEMORY_BYTES,
            eviction: EvictionKind::Lru,
            tombstone_ttl_ms: 600_000,
            max_clock_skew_ms: 60_000,
        },
        Arc::new(SystemClock),
    );
    let put = |key: &Key| Write {
        key: key.clone(),
        op: WriteOp::Put { value: value.clone(), content_type: None },
        ttl: Ttl::AfterMs(3_600_000),
        condition: Condition::Always,
    };
    for k in &keys {
        store.apply_local(put(k)).unwrap();
    }
    let moka: Cache<Key, Bytes> = Cache::builder()
        .max_capacity(MEMORY_BYTES)
        .eviction_policy(EvictionPolicy::lru())
        .weigher(|k: &Key, v: &Bytes| (k.size_bytes() + v.len() + 160) as u32)
        .build();
    let moka_as_store: Cache<Key, Arc<Register>, foldhash::fast::RandomState> = Cache::builder()
        .max_capacity(MEMORY_BYTES)
        .eviction_policy(EvictionPolicy::lru())
        .weigher(|k: &Key, v: &Arc<Register>| (k.size_bytes() + v.size_bytes() + 160) as u32)
        .expire_after(FixedExpiry)
        .build_with_hasher(foldhash::fast::RandomState::default());
    for k in &keys {
        moka.insert(k.clone(), value.clone());
        moka_as_store.insert(k.clone(), store.get(k).unwrap().register_arc());
    }
    let template = store.get(&keys[0]).unwrap();

    let mut i = 0usize;
    let mut next = move || {
        i = (i + STRIDE) % key_count;
        i
    };
    let mut group = c.benchmark_group(format!("{name}/get"));
    group.bench_function("moka", |b| b.iter(|| black_box(moka.get(&keys[next()]))));
    group.bench_function("moka_as_store", |b| b.iter(|| black_box(moka_as_store.get(&keys[next()]))));
    group.bench_function("store", |b| b.iter(|| black_box(store.get(&keys[next()]))));
    group.finish();

    let mut group = c.benchmark_group(format!("{name}/put"));
    group.bench_function("moka", |b| b.iter(|| moka.insert(keys[next()].clone(), value.clone())));
    group.bench_function("moka_as_store", |b| {
        b.iter(|| {
            let fresh = Arc::new(template.to_register());
            moka_as_store.entry(keys[next()].clone()).and_compute_with(|_| Op::Put(fresh))
        })
    });
    group.bench_function("store", |b| b.iter(|| black_box(store.apply_local(put(&keys[next()])).unwrap())));
    group.finish();
}

fn benches(c: &mut Criterion) {
    workload(c, "hot", 1_000);
    workload(c, "cold", 100_000);
}

criterion_group!(store, benches);
criterion_main!(store);
