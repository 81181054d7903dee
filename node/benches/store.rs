//! `Store` get and put against bare moka on the same workload: 100,000 keys
//! of 100-byte values, LRU, a byte budget that holds them all. The ratio is
//! what the CRDT layer (registers, version vectors, HLC, expiry checks)
//! costs over the cache itself.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use geocache_crdt::{Key, NodeId};
use geocache_node::clock::SystemClock;
use geocache_node::config::EvictionKind;
use geocache_node::store::{Condition, Store, StoreConfig, Ttl, Write, WriteOp};
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use std::hint::black_box;
use std::sync::Arc;

const KEYS: usize = 100_000;
const MEMORY_BYTES: u64 = 256 << 20;

fn keys() -> Vec<Key> {
    (0..KEYS).map(|i| Key::new("bench", Bytes::from(format!("key:{i}")))).collect()
}

fn benches(c: &mut Criterion) {
    let keys = keys();
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
    for k in &keys {
        moka.insert(k.clone(), value.clone());
    }

    let mut group = c.benchmark_group("get");
    let mut i = 0usize;
    group.bench_function("moka", |b| {
        b.iter(|| {
            i = (i + 7_919) % KEYS;
            black_box(moka.get(&keys[i]))
        })
    });
    group.bench_function("store", |b| {
        b.iter(|| {
            i = (i + 7_919) % KEYS;
            black_box(store.get(&keys[i]))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("put");
    group.bench_function("moka", |b| {
        b.iter(|| {
            i = (i + 7_919) % KEYS;
            moka.insert(keys[i].clone(), value.clone());
        })
    });
    group.bench_function("store", |b| {
        b.iter(|| {
            i = (i + 7_919) % KEYS;
            black_box(store.apply_local(put(&keys[i])).unwrap());
        })
    });
    group.finish();
}

criterion_group!(store, benches);
criterion_main!(store);
