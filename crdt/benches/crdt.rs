//! Criterion benches for the hot paths of the CRDT core: merging two
//! registers, comparing version vectors, and encoding plus decoding a
//! delta with a 100-byte value, and merging two documents that each
//! changed one field since they parted (with what the copy that keeps a
//! failed merge from touching the document costs, measured beside it).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use geocache_crdt::{codec, Delta, Doc, Dot, Hlc, Key, NodeId, Register, Stamp, Value, VersionVector};
use std::hint::black_box;
use std::sync::Arc;

fn vv(nodes: &[(u64, u64)]) -> VersionVector {
    let mut vv = VersionVector::new();
    for &(node, count) in nodes {
        for _ in 0..count {
            vv.increment(NodeId(node));
        }
    }
    vv
}

fn register(ms: u64, node: u64, vv: VersionVector) -> Register {
    Register::replace(
        Value::Bytes(Bytes::from(vec![7u8; 100])),
        Stamp::new(Hlc::new(ms, 0), NodeId(node)),
        vv,
        Dot { origin: NodeId(node), seq: ms },
        Some(ms + 60_000),
    )
}

fn benches(c: &mut Criterion) {
    // Six writers, as in a 3-region x 2-node cluster.
    let a = register(1_000, 1, vv(&[(1, 5), (2, 3), (3, 1), (4, 2), (5, 1), (6, 4)]));
    let b = register(1_001, 2, vv(&[(1, 4), (2, 4), (3, 1), (4, 2), (5, 2), (6, 4)]));
    c.bench_function("register_merge_bytes", |bench| bench.iter(|| black_box(&a).merged(black_box(&b))));

    c.bench_function("vv_dominates_6_nodes", |bench| {
        bench.iter(|| black_box(&a.meta.vv).dominates(black_box(&b.meta.vv)))
    });
    c.bench_function("vv_partial_cmp_6_nodes", |bench| {
        bench.iter(|| black_box(&a.meta.vv).partial_cmp(black_box(&b.meta.vv)))
    });

    let delta = Delta::for_write(
        NodeId(1),
        42,
        Key::new("default", Bytes::from_static(b"user:42")),
        None,
        &Arc::new(a.clone()),
    );
    let mut buf = Vec::with_capacity(512);
    c.bench_function("delta_encode_decode_100b", |bench| {
        bench.iter(|| {
            buf.clear();
            codec::encode_into(black_box(&delta), &mut buf).unwrap();
            black_box(codec::decode::<Delta>(&buf).unwrap())
        })
    });

    // A document of 20 fields (~1 KiB), then one field changed on each side.
    let mut base = Doc::new();
    let fields: serde_json::Map<String, serde_json::Value> =
        (0..20).map(|i| (format!("field{i}"), serde_json::json!("x".repeat(40)))).collect();
    base.apply_merge_patch(&serde_json::Value::Object(fields), Stamp::new(Hlc::new(1, 0), NodeId(1)))
        .unwrap();
    let saved = base.save();
    let mut ours = Doc::load(&saved).unwrap();
    let mut theirs = Doc::load(&saved).unwrap();
    ours.apply_merge_patch(&serde_json::json!({"field1": "ours"}), Stamp::new(Hlc::new(2, 0), NodeId(1)))
        .unwrap();
    theirs
        .apply_merge_patch(&serde_json::json!({"field2": "theirs"}), Stamp::new(Hlc::new(2, 0), NodeId(2)))
        .unwrap();
    c.bench_function("doc_merge_concurrent_1kib", |bench| {
        bench.iter_batched(
            || ours.clone(),
            |mut d| d.merge(black_box(&theirs)),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("doc_clone_1kib", |bench| bench.iter(|| black_box(ours.clone())));
}

criterion_group!(crdt, benches);
criterion_main!(crdt);
