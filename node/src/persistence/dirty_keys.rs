//! The keys whose entry changed (or left memory) since the last checkpoint
//! of `entries`: the checkpoint writes what the store holds for each, so
//! a key written a thousand times between two checkpoints costs fjall one
//! insert, not a thousand.

use std::collections::HashSet;

/// What one key costs the set beyond its bytes (the box and the table's
/// slot), for the bound.
const KEY_OVERHEAD_BYTES: usize = 48;

/// A bounded set of packed keys. Past its bound it stops keeping keys and
/// says so: the next checkpoint then walks the whole store instead.
pub struct DirtyKeys {
    keys: HashSet<Box<[u8]>>,
    bytes: usize,
    bound: usize,
    overflowed: bool,
}

impl DirtyKeys {
    /// The set's memory at most by default ([`DirtyKeys::insert`] stops
    /// there).
    pub const BYTES_MAX: usize = 16 << 20;

    /// An empty set that keeps at most `bound` bytes.
    pub(super) fn with_bound(bound: usize) -> DirtyKeys {
        DirtyKeys { keys: HashSet::new(), bytes: 0, bound, overflowed: false }
    }

    pub(super) fn bound(&self) -> usize {
        self.bound
    }

    /// Adds `packed`; returns whether the set just overflowed.
    pub(super) fn insert(&mut self, packed: &[u8]) -> bool {
        if self.overflowed || self.keys.contains(packed) {
            return false;
        }
        self.bytes += packed.len() + KEY_OVERHEAD_BYTES;
        if self.bytes > self.bound {
            self.keys = HashSet::new();
            self.overflowed = true;
            return true;
        }
        self.keys.insert(packed.into());
        false
    }

    /// Whether the set lost track of keys: every key must be looked at.
    pub(super) fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.overflowed
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.iter().map(|k| &k[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_counts_once_and_the_bound_turns_the_set_into_everything() {
        let mut dirty = DirtyKeys::with_bound(DirtyKeys::BYTES_MAX);
        assert!(dirty.is_empty());
        assert!(!dirty.insert(b"a"));
        assert!(!dirty.insert(b"a"));
        assert_eq!(dirty.keys().count(), 1);
        let big = vec![7u8; 1 << 19];
        let mut overflowed = false;
        for i in 0..64u8 {
            let mut key = big.clone();
            key[0] = i;
            overflowed |= dirty.insert(&key);
        }
        assert!(overflowed && dirty.overflowed() && !dirty.is_empty());
        assert_eq!(dirty.keys().count(), 0, "no memory is kept past the bound");
    }
}
