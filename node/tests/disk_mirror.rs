//! The store's write-through to its data dir, in process: a checkpoint
//! makes `entries` mirror memory (evictions leave it too), a reopened data
//! dir gives back the same registers, from the checkpoint and from the
//! journal after it, and the life (sequence, clock floor) goes on from
//! where it was.

use bytes::Bytes;
use geocache_crdt::{Key, NodeId};
use geocache_node::clock::SystemClock;
use geocache_node::config::EvictionKind;
use geocache_node::persistence::{
    DataDirIdentity, DirtyKeys, Disk, DiskOptions, FsyncPolicy, FORMAT_VERSION,
};
use geocache_node::store::{Condition, Store, StoreConfig, Ttl, Write, WriteOp};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn identity() -> DataDirIdentity {
    DataDirIdentity { format: FORMAT_VERSION, cluster: "standalone".into(), node: "test".into() }
}

fn options(dirty_keys_bytes_max: usize) -> DiskOptions {
    DiskOptions {
        fsync: FsyncPolicy::default(),
        backlog_bytes_max: 8 << 20,
        backlog_age: Duration::from_secs(300),
        dirty_keys_bytes_max,
    }
}

fn open(dir: &Path, budget: u64) -> (Store, Arc<Disk>) {
    open_with(dir, budget, DirtyKeys::BYTES_MAX)
}

fn open_with(dir: &Path, budget: u64, dirty_keys_bytes_max: usize) -> (Store, Arc<Disk>) {
    let (disk, loaded) =
        Disk::open(dir, &identity(), &options(dirty_keys_bytes_max)).expect("open the data dir");
    let origin = loaded.origin.unwrap_or(NodeId(42));
    if loaded.origin.is_none() {
        disk.set_origin(origin, loaded.hlc_floor).unwrap();
    }
    let config = StoreConfig {
        node: origin,
        max_memory_bytes: budget,
        eviction: EvictionKind::Lru,
        tombstone_ttl_ms: 600_000,
        max_clock_skew_ms: 60_000,
    };
    let store = Store::with_disk(config, Arc::new(SystemClock), disk.clone(), &loaded);
    (store, disk)
}

fn put(name: &str, value: &[u8]) -> Write {
    Write {
        key: Key::new("m", Bytes::copy_from_slice(name.as_bytes())),
        op: WriteOp::Put { value: Bytes::copy_from_slice(value), content_type: None },
        ttl: Ttl::Never,
        condition: Condition::Always,
    }
}

/// Every register on disk, by packed key.
fn on_disk(disk: &Disk) -> BTreeMap<Vec<u8>, geocache_crdt::Register> {
    let mut out = BTreeMap::new();
    disk.load_entries(|k, r| {
        out.insert(k.to_vec(), r);
    })
    .unwrap();
    out
}

#[tokio::test]
async fn the_disk_holds_what_memory_holds_and_a_reopened_dir_gives_it_back() {
    let dir = std::env::temp_dir().join(format!("geocache-disk-mirror-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (last_seq, held) = {
        // A budget far below what is written: most entries are evicted.
        let (store, disk) = open(&dir, 2 << 20);
        for i in 0..20_000 {
            store.apply_local(put(&format!("k{i}"), &[b'v'; 100])).unwrap();
        }
        store.apply_local(Write { op: WriteOp::Delete, ..put("k19999", b"") }).unwrap();
        store.run_pending_tasks();
        disk.wait_os().await;
        disk.checkpoint_entries(&store).unwrap();
        let disk_entries = on_disk(&disk);
        let held: BTreeMap<Vec<u8>, geocache_crdt::Register> = store
            .registers()
            .map(|(k, e)| (geocache_node::store_key::pack(&k).to_vec(), e.to_register()))
            .collect();
        assert!(held.len() < 20_000, "the budget evicted entries ({} held)", held.len());
        assert_eq!(disk_entries.len(), held.len(), "the disk holds exactly the entries memory holds");
        assert!(disk_entries == held, "and the same registers, the tombstone included");
        // Written after the checkpoint: the journal alone holds them
        // (overwrites with shorter values, so nothing more is evicted).
        for i in 0..3 {
            store.apply_local(put(&format!("k1999{i}"), b"after")).unwrap();
        }
        store.apply_local(Write { op: WriteOp::Delete, ..put("k19998", b"") }).unwrap();
        store.run_pending_tasks();
        let held: BTreeMap<Vec<u8>, geocache_crdt::Register> = store
            .registers()
            .map(|(k, e)| (geocache_node::store_key::pack(&k).to_vec(), e.to_register()))
            .collect();
        let seq = store.seq();
        // Killed, not closed: no last checkpoint.
        disk.wait_os().await;
        (seq, held)
    };
    let (store, disk) = open(&dir, 2 << 20);
    disk.load_entries(|k, r| store.restore(k, r)).unwrap();
    assert_eq!(disk.replay_journal(|k, r| store.replay(k, r)), 4, "the journal after the checkpoint");
    store.run_pending_tasks();
    let restored: BTreeMap<Vec<u8>, geocache_crdt::Register> = store
        .registers()
        .map(|(k, e)| (geocache_node::store_key::pack(&k).to_vec(), e.to_register()))
        .collect();
    let differing = held.iter().filter(|(k, r)| restored.get(*k) != Some(r)).count();
    assert!(
        restored.len() == held.len() && differing == 0,
        "a reopened data dir gives back every register: {} restored, {} held, {differing} differ",
        restored.len(),
        held.len()
    );
    let next = store.apply_local(put("after", b"x")).unwrap();
    assert_eq!(next.delta.seq, last_seq + 1, "the life goes on: no sequence number is used twice");
    let before = held.values().map(|r| r.meta.stamp).max().unwrap();
    assert!(next.entry.stamp() > before, "and the clock orders after every stamp it issued");
    disk.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// What memory holds, by packed key.
fn in_memory(store: &Store) -> BTreeMap<Vec<u8>, geocache_crdt::Register> {
    store.registers().map(|(k, e)| (geocache_node::store_key::pack(&k).to_vec(), e.to_register())).collect()
}

#[tokio::test]
async fn a_checkpoint_past_the_dirty_keys_bound_walks_the_whole_store() {
    let dir = std::env::temp_dir().join(format!("geocache-disk-walk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A bound of a few keys: the set overflows at once.
    let (store, disk) = open_with(&dir, 2 << 20, 4 << 10);
    for i in 0..2_000 {
        store.apply_local(put(&format!("a{i}"), &[b'v'; 100])).unwrap();
    }
    store.run_pending_tasks();
    disk.checkpoint_entries(&store).unwrap();
    assert!(on_disk(&disk) == in_memory(&store), "the first walk writes every key held");
    // Evictions and a delete, past the bound again: the walk also removes
    // what memory no longer holds.
    for i in 0..20_000 {
        store.apply_local(put(&format!("b{i}"), &[b'w'; 100])).unwrap();
    }
    store.apply_local(Write { op: WriteOp::Delete, ..put("b19999", b"") }).unwrap();
    store.run_pending_tasks();
    disk.checkpoint_entries(&store).unwrap();
    let (disk_entries, held) = (on_disk(&disk), in_memory(&store));
    assert!(held.keys().all(|k| k[2] == b'b'), "the budget evicted every early key");
    assert!(
        disk_entries == held,
        "the disk holds exactly what memory holds: {} on disk, {} held",
        disk_entries.len(),
        held.len()
    );
    disk.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
