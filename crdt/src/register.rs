use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

use crate::{Counter, Doc, Dot, Stamp, Value, VersionVector};

fn kind_rank(value: &Value) -> u8 {
    match value {
        Value::Bytes(_) => 0,
        Value::Counter(_) => 1,
        Value::Doc(_) => 2,
    }
}

/// Everything a register carries besides its value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterMeta {
    /// The newest write merged into the value.
    pub stamp: Stamp,
    /// The write that last replaced the value whole: a bytes write, a
    /// delete, or the patch that started a document. Registers of different
    /// epochs are ordered by epoch (last writer wins); within one epoch only
    /// a document can differ, and documents merge.
    pub epoch: Stamp,
    /// The writes this register has seen, for compare-and-set.
    pub vv: VersionVector,
    /// The write that produced `stamp`.
    pub dot: Dot,
    /// When the entry expires, in unix milliseconds; `None` never expires.
    /// Absolute, so every replica expires it at the same moment.
    pub expires_at_ms: Option<u64>,
    /// A delete: kept for a while so a late write cannot resurrect the key.
    pub tombstone: bool,
    /// The media type the writer gave for bytes, when it gave one. Part of
    /// the payload: it is replaced with the value, never merged.
    pub content_type: Option<String>,
}

/// A replicated cache entry: a value and its [`RegisterMeta`].
///
/// [`merge`](Register::merge) is a semilattice join (commutative,
/// associative, idempotent), so replicas that have seen the same writes
/// hold the same register whatever the order they saw them in:
///
/// - of two different epochs, the larger wins whole (last writer wins, by
///   [`Stamp`], which orders causally later writes later);
/// - within an epoch, two documents merge by automerge, and the newer stamp
///   brings its dot and expiry;
/// - the version vectors are always joined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The value; empty bytes for a tombstone.
    pub value: Value,
    /// Stamps, version vector, expiry, tombstone.
    pub meta: RegisterMeta,
}

/// Bytes a register costs besides its value and version vector.
const REGISTER_OVERHEAD_BYTES: usize = 128;

impl Register {
    /// A register that replaces whatever was there with `value`.
    pub fn replace(
        value: Value,
        stamp: Stamp,
        vv: VersionVector,
        dot: Dot,
        expires_at_ms: Option<u64>,
    ) -> Register {
        Register::replacing(value, stamp, vv, dot, expires_at_ms, false)
    }

    /// A delete, kept until `expires_at_ms` (the tombstone retention).
    pub fn tombstone(stamp: Stamp, vv: VersionVector, dot: Dot, expires_at_ms: Option<u64>) -> Register {
        Register::replacing(Value::Bytes(Bytes::new()), stamp, vv, dot, expires_at_ms, true)
    }

    /// A write that starts a new epoch: its own stamp.
    fn replacing(
        value: Value,
        stamp: Stamp,
        vv: VersionVector,
        dot: Dot,
        expires_at_ms: Option<u64>,
        tombstone: bool,
    ) -> Register {
        Register {
            value,
            meta: RegisterMeta { stamp, epoch: stamp, vv, dot, expires_at_ms, tombstone, content_type: None },
        }
    }

    /// Whether the entry has expired at `now_ms`.
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        self.meta.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// Whether a read at `now_ms` sees a value: not deleted, not expired.
    pub fn is_visible_at(&self, now_ms: u64) -> bool {
        !self.meta.tombstone && !self.is_expired_at(now_ms)
    }

    /// The bytes this register costs in memory, for the store's budget.
    pub fn size_bytes(&self) -> usize {
        self.value.size_bytes()
            + self.meta.vv.entries().len() * 16
            + self.meta.content_type.as_ref().map_or(0, String::len)
            + REGISTER_OVERHEAD_BYTES
    }

    /// Joins `other` into `self`.
    pub fn merge(&mut self, other: &Register) {
        let vv = self.meta.vv.join(&other.meta.vv);
        match self.meta.epoch.cmp(&other.meta.epoch) {
            Ordering::Less => *self = other.clone(),
            Ordering::Greater => {}
            Ordering::Equal => match (&mut self.value, &other.value) {
                (Value::Doc(mine), Value::Doc(theirs)) if !self.meta.tombstone && !other.meta.tombstone => {
                    mine.merge(theirs);
                    self.take_newer_write(other);
                }
                (Value::Counter(mine), Value::Counter(theirs))
                    if !self.meta.tombstone && !other.meta.tombstone =>
                {
                    mine.merge(theirs);
                    self.take_newer_write(other);
                }
                // The same epoch means the same replacing write, so the
                // payloads are equal, but for one case: an increment turns
                // the integer a `SET` wrote into a counter of that `SET`'s
                // epoch, so a live counter wins over the bytes it started
                // from (and every replica's increments of that `SET` join).
                // A peer can break the rule (a forged or saturated stamp):
                // then a live document wins over any other payload, then a
                // live counter (so documents and counters of the epoch
                // still join), and between others the stamp decides, then
                // the payload itself, so every replica keeps the same one
                // whatever order they arrive in.
                _ => {
                    let order = self.merge_rank().cmp(&other.merge_rank()).reverse().then_with(|| {
                        other.meta.stamp.cmp(&self.meta.stamp).then_with(|| other.tie_cmp(self))
                    });
                    if order == Ordering::Greater {
                        *self = other.clone();
                    }
                }
            },
        }
        self.meta.vv = vv;
    }

    /// Within one epoch: a live document outranks a live counter, which
    /// outranks anything else.
    fn merge_rank(&self) -> u8 {
        match self.value {
            _ if self.meta.tombstone => 0,
            Value::Doc(_) => 2,
            Value::Counter(_) => 1,
            Value::Bytes(_) => 0,
        }
    }

    /// Of two writes merged within an epoch, the newer brings its stamp,
    /// dot and expiry.
    fn take_newer_write(&mut self, other: &Register) {
        let newer = (other.meta.stamp, other.meta.dot, other.meta.expires_at_ms)
            > (self.meta.stamp, self.meta.dot, self.meta.expires_at_ms);
        if newer {
            self.meta.stamp = other.meta.stamp;
            self.meta.dot = other.meta.dot;
            self.meta.expires_at_ms = other.meta.expires_at_ms;
        }
    }

    /// A total order on everything but the stamps and the version vector,
    /// to break ties between registers that claim the same write.
    fn tie_cmp(&self, other: &Register) -> Ordering {
        let key =
            |r: &Register| (r.meta.tombstone, r.meta.dot, r.meta.expires_at_ms, r.meta.content_type.clone());
        key(self).cmp(&key(other)).then_with(|| match (&self.value, &other.value) {
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::Counter(a), Value::Counter(b)) => a.cmp(b),
            (Value::Doc(a), Value::Doc(b)) => a.save().cmp(&b.save()),
            (a, b) => kind_rank(a).cmp(&kind_rank(b)),
        })
    }

    /// The join of `self` and `other`.
    pub fn merged(&self, other: &Register) -> Register {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// The counter, when the register holds a live one.
    pub fn counter(&self) -> Option<&Counter> {
        match &self.value {
            Value::Counter(c) if !self.meta.tombstone => Some(c),
            _ => None,
        }
    }

    /// The document, when the register holds a live one.
    pub fn doc(&self) -> Option<&Doc> {
        match &self.value {
            Value::Doc(d) if !self.meta.tombstone => Some(d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hlc, NodeId};
    use serde_json::json;

    fn stamp(ms: u64, node: u64) -> Stamp {
        Stamp::new(Hlc::new(ms, 0), NodeId(node))
    }

    fn bytes_reg(ms: u64, node: u64, v: &'static [u8]) -> Register {
        let mut vv = VersionVector::new();
        vv.increment(NodeId(node));
        Register::replace(Value::Bytes(Bytes::from_static(v)), stamp(ms, node), vv, Dot::default(), None)
    }

    #[test]
    fn later_stamp_wins_and_vectors_join() {
        let a = bytes_reg(1, 1, b"a");
        let b = bytes_reg(2, 2, b"b");
        let m = a.merged(&b);
        assert_eq!(m.value, Value::Bytes(Bytes::from_static(b"b")));
        assert_eq!(m.meta.vv.entries().len(), 2);
        assert_eq!(m, b.merged(&a));
    }

    #[test]
    fn a_patch_to_an_older_document_loses_to_a_newer_replacement() {
        let mut doc = Doc::new();
        doc.apply_merge_patch(&json!({"f": 1}), stamp(1, 1)).unwrap();
        let old = Register::replace(
            Value::Doc(doc.clone()),
            stamp(1, 1),
            VersionVector::new(),
            Dot::default(),
            None,
        );
        let replaced = bytes_reg(5, 2, b"x");
        let mut patched = old.clone();
        if let Value::Doc(d) = &mut patched.value {
            d.apply_merge_patch(&json!({"g": 2}), stamp(6, 1)).unwrap();
        }
        patched.meta.stamp = stamp(6, 1);
        // Whatever the order, the replacing write (epoch 5) wins over any
        // edit of the epoch-1 document.
        assert_eq!(old.merged(&replaced).merged(&patched), replaced);
        assert_eq!(old.merged(&patched.merged(&replaced)), replaced);
    }

    #[test]
    fn concurrent_patches_of_one_document_keep_both_fields() {
        let mut doc = Doc::new();
        doc.apply_merge_patch(&json!({"a": 0}), stamp(1, 1)).unwrap();
        let base =
            Register::replace(Value::Doc(doc), stamp(1, 1), VersionVector::new(), Dot::default(), None);
        let edit = |field: &str, node: u64| {
            let mut r = base.clone();
            if let Value::Doc(d) = &mut r.value {
                d.apply_merge_patch(&json!({ field: node }), stamp(2, node)).unwrap();
            }
            r.meta.stamp = stamp(2, node);
            r
        };
        let merged = edit("x", 1).merged(&edit("y", 2));
        assert_eq!(merged.doc().unwrap().to_json(), json!({"a": 0, "x": 1, "y": 2}));
        assert_eq!(merged.meta.stamp, stamp(2, 2));
    }
}
