//! Bytes per entry of the store and of what it is built on, in one run:
//! bare moka (`Cache<Key, Bytes>`, insert), then the geocache `Store`
//! (registers, per-entry expiry, compute per write), each filled with the
//! same keys and values in a fresh process. Measured by the process's RSS
//! (glibc malloc: this binary keeps the system allocator so heap profilers
//! such as heaptrack can attribute every byte).
//!
//!     cargo run --release -p geocache-bench --bin store-memory -- --structure moka
//!     cargo run --release -p geocache-bench --bin store-memory -- --structure store

use anyhow::Result;
use bytes::Bytes;
use clap::Parser;
use geocache_crdt::{Key, NodeId};
use geocache_node::clock::SystemClock;
use geocache_node::config::EvictionKind;
use geocache_node::store::{Store, StoreConfig};
use geocache_node::write::{Condition, Ttl, Write, WriteOp};
use std::sync::Arc;

#[derive(Parser)]
struct Args {
    /// Distinct keys written.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// What to fill: `moka` or `store`. One per process: memory freed by
    /// one would be reused by the next and hide its cost.
    #[arg(long, default_value = "store")]
    structure: String,
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

fn key(ns: &Arc<str>, i: usize) -> Key {
    Key::new(ns.clone(), Bytes::from(format!("key:{i}")))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ns: Arc<str> = Arc::from("default");
    let value = vec![b'v'; args.value_bytes];
    let data = (format!("key:{}", args.entries / 2).len() + args.value_bytes) as f64;
    if args.structure == "moka" {
        let before = rss_bytes();
        let cache: moka::sync::Cache<Key, Bytes> =
            moka::sync::Cache::builder().max_capacity(u64::MAX).build();
        for i in 0..args.entries {
            cache.insert(key(&ns, i), Bytes::copy_from_slice(&value));
        }
        cache.run_pending_tasks();
        let per = (rss_bytes() - before) as f64 / args.entries as f64;
        println!("| bare moka `Cache<Key, Bytes>` | {per:.0} | {:.2} |", per / data);
        return Ok(());
    }
    anyhow::ensure!(args.structure == "store", "--structure must be moka or store");
    let before = rss_bytes();
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
    for i in 0..args.entries {
        let op = WriteOp::Put { value: Bytes::copy_from_slice(&value), content_type: None };
        let write = Write { key: key(&ns, i), op, ttl: Ttl::Never, condition: Condition::Always };
        store.apply_local(write)?;
    }
    store.run_pending_tasks();
    let per = (rss_bytes() - before) as f64 / args.entries as f64;
    println!("| geocache `Store` | {per:.0} | {:.2} |", per / data);
    Ok(())
}
