//! What an entry costs in memory, for the byte budget: the allocations it
//! makes, rounded to the allocator's size classes, plus moka's own
//! per-entry structures, measured.
//!
//! The constants were measured with `bench/src/bin/store-memory.rs`
//! (a fresh process per fill, RSS before and after, mimalloc as in the
//! `geocache` binary) and are pinned by `node/tests/weigher.rs`, which
//! fills a node and compares its resident memory with what the weigher
//! says. Change the store's layout and that test tells you to measure
//! again.

use crate::entry::Entry;

/// moka's structures per entry, besides the key's box and the value:
/// its entry info and value entry, the hash table's bucket and slot, the
/// access-order deque node, the `Arc` around the key. Measured (see the
/// module doc): RSS per entry of a full store, 483-505 B for 100-byte
/// values (100k to 1M entries), minus the key's box and the packed entry
/// (184 B); the same fill costs 392 B in a bare `Cache<u64, Arc<[u8]>>`,
/// whose moka part is 240 B.
pub const MOKA_ENTRY_BYTES: usize = 300;

/// moka's timer-wheel node for an entry with an expiry (TTLs and
/// tombstones): fills with and without a TTL differ by 48-49 B.
pub const MOKA_TIMER_NODE_BYTES: usize = 48;

/// Past this size, mimalloc's pages hold few objects and their slack
/// shows: fills of 4 KiB to 200 KB values measured 6-8 % above the size
/// class, so a sixteenth is added.
const PAGE_SLACK_FROM_BYTES: usize = 4_096;

/// The bytes the allocator (mimalloc) takes for a request of `size`:
/// word-sized classes up to 64 bytes, then four classes per doubling (so
/// at most 25 % more), whole 64 KiB blocks past 4 MiB; a sixteenth more
/// past [`PAGE_SLACK_FROM_BYTES`].
pub fn allocation_bytes(size: usize) -> usize {
    let class = size_class_bytes(size);
    if size > PAGE_SLACK_FROM_BYTES {
        class + class / 16
    } else {
        class
    }
}

fn size_class_bytes(size: usize) -> usize {
    if size == 0 {
        return 0;
    }
    if size <= 64 {
        return size.div_ceil(8) * 8;
    }
    if size > 4 << 20 {
        return size.div_ceil(64 << 10) * (64 << 10);
    }
    // Four classes per power of two: a quarter of the power below `size`.
    let top = usize::BITS - 1 - (size - 1).leading_zeros();
    let step = 1usize << (top - 2);
    size.div_ceil(step) * step
}

/// What one entry costs against the byte budget: its key's box, its
/// packed register (or document), and moka's per-entry structures.
pub fn entry_weight_bytes(key_len: usize, entry: &Entry) -> u64 {
    let register = entry.heap_bytes();
    let timer = if entry.expires_at_ms().is_some() { MOKA_TIMER_NODE_BYTES } else { 0 };
    (allocation_bytes(key_len) + register + MOKA_ENTRY_BYTES + timer) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_up_by_at_most_a_quarter() {
        assert_eq!(allocation_bytes(1), 8);
        assert_eq!(allocation_bytes(24), 24);
        assert_eq!(allocation_bytes(65), 80);
        assert_eq!(allocation_bytes(158), 160);
        assert_eq!(allocation_bytes(161), 192);
        assert_eq!(allocation_bytes(1024), 1024);
        assert_eq!(allocation_bytes(1025), 1280);
        for size in (1..100_000).step_by(97) {
            let got = size_class_bytes(size);
            assert!(got >= size && got <= size + size / 4 + 8, "{size} -> {got}");
        }
    }
}
