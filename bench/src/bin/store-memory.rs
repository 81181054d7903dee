//! Bytes per entry of the store and of the moka floor it is built on, and
//! what the store's weigher says an entry costs, in one run: each
//! structure filled with the same keys and values in a fresh process (one
//! per process: memory freed by one would be reused by the next and hide
//! its cost), measured by the process's RSS. mimalloc, as in the
//! `geocache` binary, so the figures are the node's.
//!
//!     cargo run --release -p geocache-bench --bin store-memory -- --structure moka-floor
//!     cargo run --release -p geocache-bench --bin store-memory -- --structure store [--ttl]
//!
//! `moka-floor` is the least a moka map can cost per entry: a `u64` key and
//! one `Arc<[u8]>` holding key and value, plain `insert`. The `store` row
//! prints the RSS per entry, the weigher's figure per entry, and their
//! ratio: the weigher's constants (`geocache_node::weight`) are right when
//! the ratio is about 1.

use anyhow::Result;
use bytes::Bytes;
use clap::Parser;
use geocache_crdt::{Key, NodeId};
use geocache_node::clock::SystemClock;
use geocache_node::config::EvictionKind;
use geocache_node::store::{Store, StoreConfig};
use geocache_node::write::{Condition, Ttl, Write, WriteOp};
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Distinct keys written.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// What to fill: `moka-floor`, `moka-configured` or `store`.
    #[arg(long, default_value = "store")]
    structure: String,
    /// Give every entry a TTL (an hour), so moka keeps a timer node each.
    #[arg(long)]
    ttl: bool,
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn name(i: usize) -> String {
    format!("key:{i}")
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ns: Arc<str> = Arc::from("default");
    let value = vec![b'v'; args.value_bytes];
    let data = (name(args.entries / 2).len() + args.value_bytes) as f64;
    let n = args.entries as f64;
    if args.structure == "moka-floor" {
        let before = rss_bytes();
        let cache: moka::sync::Cache<u64, Arc<[u8]>> =
            moka::sync::Cache::builder().max_capacity(u64::MAX).build();
        for i in 0..args.entries {
            let packed: Arc<[u8]> = name(i).bytes().chain(value.iter().copied()).collect();
            cache.insert(i as u64, packed);
        }
        cache.run_pending_tasks();
        let per = (rss_bytes() - before) as f64 / n;
        println!("| moka floor `Cache<u64, Arc<[u8]>>` | {per:.0} | | | {:.2} |", per / data);
        return Ok(());
    }
    if args.structure == "moka-configured" {
        // The floor's map configured as the store configures moka: packed
        // keys, a weigher, per-entry expiry (none here) and a listener.
        type PackedKey = Box<[u8]>;
        struct NoExpiry;
        impl moka::Expiry<PackedKey, Arc<[u8]>> for NoExpiry {}
        let before = rss_bytes();
        let cache: moka::sync::Cache<PackedKey, Arc<[u8]>> = moka::sync::Cache::builder()
            .max_capacity(u64::MAX / 2)
            .weigher(|k: &PackedKey, v: &Arc<[u8]>| (k.len() + v.len()) as u32)
            .expire_after(NoExpiry)
            .eviction_listener(|_, _, _| {})
            .build();
        for i in 0..args.entries {
            let key: PackedKey = name(i).into_bytes().into_boxed_slice();
            let packed: Arc<[u8]> = std::iter::repeat_n(0u8, 42).chain(value.iter().copied()).collect();
            cache.insert(key, packed);
        }
        cache.run_pending_tasks();
        let per = (rss_bytes() - before) as f64 / n;
        println!("| moka as the store configures it, bare | {per:.0} | | | {:.2} |", per / data);
        return Ok(());
    }
    anyhow::ensure!(args.structure == "store", "--structure must be moka-floor, moka-configured or store");
    let store = Store::new(
        StoreConfig {
            node: NodeId(1),
            max_memory_bytes: u64::MAX / 2,
            eviction: EvictionKind::Lru,
            tombstone_ttl_ms: 600_000,
            max_clock_skew_ms: 60_000,
        },
        Arc::new(SystemClock),
    );
    let ttl = if args.ttl { Ttl::AfterMs(3_600_000) } else { Ttl::Never };
    let before = rss_bytes();
    for i in 0..args.entries {
        let op = WriteOp::Put { value: Bytes::copy_from_slice(&value), content_type: None };
        let write =
            Write { key: Key::new(ns.clone(), Bytes::from(name(i))), op, ttl, condition: Condition::Always };
        store.apply_local(write)?;
    }
    store.run_pending_tasks();
    let per = (rss_bytes() - before) as f64 / n;
    let weighed = store.weighted_size_bytes() as f64 / n;
    let label = if args.ttl { "geocache `Store`, TTL" } else { "geocache `Store`" };
    println!("| {label} | {per:.0} | {weighed:.0} | {:.2} | {:.2} |", per / weighed, per / data);
    Ok(())
}
