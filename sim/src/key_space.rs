//! The simulator's keys, numbered: `k0` .. `k{n-1}` in one namespace. Every
//! store and the oracle index them in vectors by number instead of hashing
//! them on each of the tens of millions of reads and applies a run makes.

use bytes::Bytes;
use foldhash::fast::FixedState;
use geocache_crdt::Key;
use std::collections::HashMap;
use std::sync::Arc;

/// The numbered keys of one run.
#[derive(Debug)]
pub struct KeySpace {
    namespace: Arc<str>,
    keys: Vec<Key>,
}

impl KeySpace {
    /// `count` keys `k0` .. in namespace `sim`.
    pub fn new(count: usize) -> KeySpace {
        let namespace: Arc<str> = Arc::from("sim");
        let keys = (0..count).map(|k| Key::new(namespace.clone(), Bytes::from(format!("k{k}")))).collect();
        KeySpace { namespace, keys }
    }

    /// Key number `i`.
    pub fn key(&self, i: usize) -> &Key {
        &self.keys[i]
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The number of `key`, if it is one of these: `k` then decimal digits
    /// without a leading zero, in this namespace, below the count. Exact:
    /// two different keys never get the same number.
    pub fn number(&self, key: &Key) -> Option<usize> {
        if !Arc::ptr_eq(&key.namespace, &self.namespace) && *key.namespace != *self.namespace {
            return None;
        }
        let digits = key.name.strip_prefix(b"k")?;
        if digits.is_empty() || digits.len() > 10 || (digits[0] == b'0' && digits.len() > 1) {
            return None;
        }
        let mut n = 0usize;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + usize::from(d - b'0');
        }
        (n < self.keys.len()).then_some(n)
    }
}

/// A map from key to a `u32` slot: a vector by key number for the run's
/// keys, a hash map for any other.
pub struct KeyIndex {
    space: Arc<KeySpace>,
    numbered: Vec<u32>,
    other: HashMap<Key, u32, FixedState>,
}

/// No slot.
const ABSENT: u32 = u32::MAX;

impl KeyIndex {
    /// An empty index over `space`.
    pub fn new(space: Arc<KeySpace>) -> KeyIndex {
        let numbered = vec![ABSENT; space.len()];
        KeyIndex { space, numbered, other: HashMap::with_hasher(FixedState::default()) }
    }

    /// The slot of `key`.
    pub fn get(&self, key: &Key) -> Option<u32> {
        match self.space.number(key) {
            Some(n) => Some(self.numbered[n]).filter(|&s| s != ABSENT),
            None => self.other.get(key).copied(),
        }
    }

    /// Sets the slot of `key` (`slot` below `u32::MAX`).
    pub fn insert(&mut self, key: Key, slot: u32) {
        debug_assert_ne!(slot, ABSENT);
        match self.space.number(&key) {
            Some(n) => self.numbered[n] = slot,
            None => {
                self.other.insert(key, slot);
            }
        }
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &Key) {
        match self.space.number(key) {
            Some(n) => self.numbered[n] = ABSENT,
            None => {
                self.other.remove(key);
            }
        }
    }

    /// Every slot, in no order that callers may rely on.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.numbered.iter().copied().filter(|&s| s != ABSENT).chain(self.other.values().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_only_the_run_keys() {
        let space = KeySpace::new(20);
        assert_eq!(space.number(space.key(13)), Some(13));
        assert_eq!(space.number(&Key::new("sim", Bytes::from_static(b"k7"))), Some(7));
        for other in [&b"k013"[..], b"k20", b"k", b"x1", b"k1a", b"k99999999999"] {
            assert_eq!(space.number(&Key::new("sim", Bytes::copy_from_slice(other))), None, "{other:?}");
        }
        assert_eq!(space.number(&Key::new("other", Bytes::from_static(b"k1"))), None);
    }

    #[test]
    fn index_keeps_numbered_and_other_keys_apart() {
        let space = Arc::new(KeySpace::new(10));
        let mut index = KeyIndex::new(space.clone());
        let odd = Key::new("sim", Bytes::from_static(b"k01"));
        index.insert(space.key(1).clone(), 5);
        index.insert(odd.clone(), 6);
        assert_eq!(index.get(space.key(1)), Some(5));
        assert_eq!(index.get(&odd), Some(6));
        index.remove(space.key(1));
        assert_eq!(index.get(space.key(1)), None);
        assert_eq!(index.slots().collect::<Vec<_>>(), vec![6]);
    }
}
