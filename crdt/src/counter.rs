//! [`Counter`]: an integer whose increments from every node all count.
//!
//! A last-writer-wins string loses one of two concurrent `INCR`s (both read
//! 5, both write 6). A counter instead keeps, per origin, the sum of its
//! increments and the sum of its decrements, each of which only grows
//! (a PN-counter): two replicas merge by taking each origin's larger sums,
//! so every increment made anywhere counts once, whatever the order the
//! replicas see them in.
//!
//! A counter lives within one epoch of its register (`register.rs`): a
//! `SET` or a `DEL` starts a new epoch and discards the increments it had
//! not seen (the newer epoch wins whole), and increments made on the value
//! a `SET` wrote join in that `SET`'s epoch, starting from its `base`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

use crate::NodeId;

/// Most origins one counter keeps sums for: every node life that
/// incremented it in its epoch. Past it, an increment from one more life
/// is refused (a `SET` starts the counter over); this bounds its size
/// (24 bytes per origin) as node lives come and go.
pub const COUNTER_ORIGINS_MAX: usize = 4_096;

/// An increment was refused; the counter is unchanged.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CounterError {
    /// The value would leave the range of a signed 64-bit integer, or an
    /// origin's sum would overflow.
    #[error("increment or decrement would overflow")]
    Overflow,
    /// [`COUNTER_ORIGINS_MAX`] origins already count in it.
    #[error("the counter has {COUNTER_ORIGINS_MAX} writers in its epoch: set it to start it over")]
    TooManyOrigins,
}

/// A counter: a base and each origin's increments and decrements.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Counter {
    /// The value its epoch started from (the integer a `SET` wrote, or 0).
    base: i64,
    /// Per origin, `(sum of increments, sum of decrements)`.
    sums: BTreeMap<NodeId, (u64, u64)>,
}

impl Counter {
    /// A counter at `base`, with no increments yet.
    pub fn starting_at(base: i64) -> Counter {
        Counter { base, sums: BTreeMap::new() }
    }

    /// Its value. Wider than `i64`: concurrent increments in several
    /// regions, each within range where it was made, may together leave it.
    pub fn value(&self) -> i128 {
        let mut v = i128::from(self.base);
        for (up, down) in self.sums.values() {
            v += i128::from(*up) - i128::from(*down);
        }
        v
    }

    /// Adds `by` as `origin`'s increment (a decrement when negative).
    ///
    /// # Errors
    ///
    /// [`CounterError`]; the counter is unchanged.
    pub fn add(&mut self, origin: NodeId, by: i64) -> Result<i64, CounterError> {
        let next = i64::try_from(self.value() + i128::from(by)).map_err(|_| CounterError::Overflow)?;
        if !self.sums.contains_key(&origin) && self.sums.len() >= COUNTER_ORIGINS_MAX {
            return Err(CounterError::TooManyOrigins);
        }
        let (up, down) = self.sums.entry(origin).or_default();
        let magnitude = by.unsigned_abs();
        let sum = if by >= 0 { up } else { down };
        *sum = sum.checked_add(magnitude).ok_or(CounterError::Overflow)?;
        Ok(next)
    }

    /// Joins `other` into `self`: each origin's larger sums. Counters of
    /// one epoch share their base; a forged pair that does not keeps the
    /// larger, so the join stays commutative.
    pub fn merge(&mut self, other: &Counter) {
        self.base = self.base.max(other.base);
        for (origin, &(up, down)) in &other.sums {
            let mine = self.sums.entry(*origin).or_default();
            mine.0 = mine.0.max(up);
            mine.1 = mine.1.max(down);
        }
    }

    /// Origins counted.
    pub fn origin_count(&self) -> usize {
        self.sums.len()
    }

    /// The bytes it costs in memory, for the store's budget.
    pub fn size_bytes(&self) -> usize {
        8 + self.sums.len() * 24
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_increments_all_count_in_any_order() {
        let start = Counter::starting_at(5);
        let (mut a, mut b) = (start.clone(), start);
        a.add(NodeId(1), 3).unwrap();
        b.add(NodeId(2), 4).unwrap();
        b.add(NodeId(2), -1).unwrap();
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.value(), 5 + 3 + 4 - 1);
        let again = ab.clone();
        ab.merge(&again);
        assert_eq!(ab, again, "idempotent");
    }

    #[test]
    fn overflow_and_too_many_origins_are_refused_unchanged() {
        let mut c = Counter::starting_at(i64::MAX - 1);
        assert_eq!(c.add(NodeId(1), 1), Ok(i64::MAX));
        assert_eq!(c.add(NodeId(1), 1), Err(CounterError::Overflow));
        assert_eq!(c.value(), i128::from(i64::MAX));
        let mut c = Counter::default();
        for origin in 0..COUNTER_ORIGINS_MAX as u64 {
            c.add(NodeId(origin), 1).unwrap();
        }
        assert_eq!(c.add(NodeId(u64::MAX), 1), Err(CounterError::TooManyOrigins));
        c.add(NodeId(0), 1).unwrap();
        assert_eq!(c.value(), COUNTER_ORIGINS_MAX as i128 + 1, "a known origin still counts");
    }
}
