//! The keys whose entry changed (or left memory) since the last checkpoint
//! of `entries`, each with the register the store now holds for it (shared
//! with the store's entry, so it costs a pointer) or `None` once it left:
//! the checkpoint writes that, so a key written a thousand times between
//! two checkpoints costs fjall one insert, not a thousand, and the
//! checkpoint never reads the store (which would count as a use in its
//! LRU).

use geocache_crdt::Register;
use std::collections::HashMap;
use std::sync::Arc;

/// What one key costs the map beyond its bytes (the box, the pointer and
/// the table's slot), for the bound.
const KEY_OVERHEAD_BYTES: usize = 56;

/// A bounded map of packed keys to what the store holds. Past its bound it
/// stops keeping keys and says so: the next checkpoint then walks the
/// whole store instead.
pub struct DirtyKeys {
    keys: HashMap<Box<[u8]>, Option<Arc<Register>>>,
    bytes: usize,
    bound: usize,
    overflowed: bool,
}

impl DirtyKeys {
    /// The map's memory at most by default ([`DirtyKeys::insert`] stops
    /// there).
    pub const BYTES_MAX: usize = 16 << 20;

    /// An empty map that keeps at most `bound` bytes.
    pub(super) fn with_bound(bound: usize) -> DirtyKeys {
        DirtyKeys { keys: HashMap::new(), bytes: 0, bound, overflowed: false }
    }

    pub(super) fn bound(&self) -> usize {
        self.bound
    }

    /// Notes that the store now holds `held` under `packed` (`None`: the
    /// entry left). Returns whether a checkpoint is due now: the map just
    /// reached half its bound (so that one checkpoint can run before it
    /// overflows), or overflowed.
    pub(super) fn insert(&mut self, packed: &[u8], held: Option<Arc<Register>>) -> bool {
        if self.overflowed {
            return false;
        }
        if let Some(slot) = self.keys.get_mut(packed) {
            *slot = held;
            return false;
        }
        let before = self.bytes;
        self.bytes += packed.len() + KEY_OVERHEAD_BYTES;
        if self.bytes > self.bound {
            self.keys = HashMap::new();
            self.overflowed = true;
            return true;
        }
        self.keys.insert(packed.into(), held);
        before < self.bound / 2 && self.bytes >= self.bound / 2
    }

    /// Whether the map lost track of keys: every key must be looked at.
    pub(super) fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.overflowed
    }

    /// Every key with what the store holds for it, in key order.
    pub(super) fn sorted(&self) -> Vec<(&[u8], Option<&Register>)> {
        let mut out: Vec<_> = self.keys.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_counts_once_and_the_bound_turns_the_set_into_everything() {
        let mut dirty = DirtyKeys::with_bound(DirtyKeys::BYTES_MAX);
        assert!(dirty.is_empty());
        assert!(!dirty.insert(b"b", None));
        assert!(!dirty.insert(b"a", None));
        assert!(!dirty.insert(b"a", None));
        let mut half = DirtyKeys::with_bound(1000);
        let due: Vec<bool> = (0..20u8).map(|i| half.insert(&[i; 2], None)).collect();
        assert_eq!(due.iter().filter(|d| **d).count(), 2, "due at half the bound, then at the overflow");
        let keys: Vec<&[u8]> = dirty.sorted().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![&b"a"[..], &b"b"[..]], "one each, in key order");
        let big = vec![7u8; 1 << 19];
        let mut overflowed = false;
        for i in 0..64u8 {
            let mut key = big.clone();
            key[0] = i;
            overflowed |= dirty.insert(&key, None);
        }
        assert!(overflowed && dirty.overflowed() && !dirty.is_empty());
        assert!(dirty.sorted().is_empty(), "no memory is kept past the bound");
    }
}
