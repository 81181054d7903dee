use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoSerde, Automerge, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, ROOT};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value as Json};
use std::fmt;
use thiserror::Error;

use crate::{doc_bounds, Stamp};

/// How deep a JSON patch may nest: deeper input is refused rather than
/// risking the stack on untrusted data.
pub const PATCH_DEPTH_MAX: usize = 64;

/// A JSON object held as an automerge document, so that concurrent edits to
/// different fields at different replicas both survive a merge.
///
/// Edits arrive as JSON merge patches (RFC 7396) and are recorded as
/// automerge operations; [`to_json`](Doc::to_json) materializes the object.
/// Two documents are equal when they hold the same set of changes.
#[derive(Clone)]
pub struct Doc {
    /// Boxed: an automerge document is kilobytes even when empty, and a
    /// register holding bytes should not pay for it.
    inner: Box<Automerge>,
    /// Recomputed after every change so that the store's weigher, which
    /// runs on every insert, stays cheap.
    size_estimate_bytes: usize,
}

/// In-memory automerge takes a few times its saved size; this factor and
/// the fixed overhead make the estimate err on the large side, so the byte
/// budget holds.
const DOC_MEMORY_FACTOR: usize = 4;
const DOC_OVERHEAD_BYTES: usize = 512;

/// A document operation failed. The document is unchanged.
#[derive(Debug, Error)]
pub enum DocError {
    /// A merge patch for a document must be a JSON object.
    #[error("a document patch must be a JSON object")]
    PatchNotAnObject,
    /// The patch nests deeper than [`PATCH_DEPTH_MAX`].
    #[error("the patch nests deeper than {PATCH_DEPTH_MAX} levels")]
    PatchTooDeep,
    /// Bytes that should hold a document or its changes do not.
    #[error("invalid document bytes: {0}")]
    Invalid(String),
    /// Changes depend on changes this document does not hold.
    #[error("the changes depend on {0} changes this document does not hold")]
    MissingDependencies(usize),
    /// A peer's document bytes are compressed (they could inflate without
    /// bound) or do not follow automerge's chunk format.
    #[error("document bytes refused: {0}")]
    Refused(&'static str),
    /// A peer's document nests deeper than [`PATCH_DEPTH_MAX`].
    #[error("the document nests deeper than {PATCH_DEPTH_MAX} levels")]
    TooDeep,
}

impl From<doc_bounds::Refusal> for DocError {
    fn from(r: doc_bounds::Refusal) -> DocError {
        DocError::Refused(match r {
            doc_bounds::Refusal::Compressed => "compressed, or a kind of chunk nodes do not send",
            doc_bounds::Refusal::Malformed => "not automerge chunks",
            doc_bounds::Refusal::TooManyOps => "its runs declare more operations than its size allows",
        })
    }
}

impl Doc {
    /// An empty document: `{}`.
    pub fn new() -> Doc {
        Doc::from_inner(Automerge::new())
    }

    fn from_inner(inner: Automerge) -> Doc {
        let mut doc = Doc { inner: Box::new(inner), size_estimate_bytes: 0 };
        doc.update_size_estimate();
        doc
    }

    fn update_size_estimate(&mut self) {
        self.size_estimate_bytes = self.inner.save().len() * DOC_MEMORY_FACTOR + DOC_OVERHEAD_BYTES;
    }

    /// An estimate of the memory the document takes, in bytes.
    pub fn size_estimate_bytes(&self) -> usize {
        self.size_estimate_bytes
    }

    /// Applies a JSON merge patch as one automerge change made by the write
    /// `stamp`.
    ///
    /// Each change gets its own actor, derived from the write's stamp, so a
    /// node that restarted without its data can never reuse an actor's
    /// sequence number.
    ///
    /// # Errors
    ///
    /// [`DocError::PatchNotAnObject`] or [`DocError::PatchTooDeep`]; the
    /// document is then unchanged.
    pub fn apply_merge_patch(&mut self, patch: &Json, stamp: Stamp) -> Result<(), DocError> {
        Doc::check_patch(patch)?;
        let Json::Object(fields) = patch else {
            return Err(DocError::PatchNotAnObject);
        };
        self.inner.set_actor(actor_for(stamp));
        let mut tx = self.inner.transaction();
        if let Err(e) = patch_map(&mut tx, &ROOT, fields) {
            tx.rollback();
            return Err(DocError::Invalid(e.to_string()));
        }
        let time_s = i64::try_from(stamp.hlc.ms() / 1_000).unwrap_or(i64::MAX);
        tx.commit_with(CommitOptions::default().with_time(time_s));
        self.update_size_estimate();
        Ok(())
    }

    /// Checks that `patch` can be applied to a document: a JSON object no
    /// deeper than [`PATCH_DEPTH_MAX`].
    ///
    /// # Errors
    ///
    /// [`DocError::PatchNotAnObject`] or [`DocError::PatchTooDeep`].
    pub fn check_patch(patch: &Json) -> Result<(), DocError> {
        if !patch.is_object() {
            return Err(DocError::PatchNotAnObject);
        }
        if depth(patch) > PATCH_DEPTH_MAX {
            return Err(DocError::PatchTooDeep);
        }
        Ok(())
    }

    /// The document as a JSON object.
    pub fn to_json(&self) -> Json {
        serde_json::to_value(AutoSerde::from(&*self.inner)).unwrap_or(Json::Object(Map::new()))
    }

    /// Takes in every change of `other`.
    pub fn merge(&mut self, other: &Doc) {
        if self.contains_all(&other.inner.get_heads()) {
            return;
        }
        // Merging only fails on changes that do not decode, and both sides
        // were validated when they were loaded or built here; a panic
        // inside automerge (hostile input that passed its checks) leaves
        // this document as it was.
        let mut theirs = (*other.inner).clone();
        let mut next = (*self.inner).clone();
        if matches!(without_panic(|| next.merge(&mut theirs)), Ok(Ok(_))) {
            *self.inner = next;
            self.update_size_estimate();
        }
    }

    /// The hashes of the newest changes, sorted.
    pub fn heads(&self) -> Vec<ChangeHash> {
        let mut heads = self.inner.get_heads();
        heads.sort();
        heads
    }

    /// Whether every change named in `heads` is here.
    pub fn contains_all(&self, heads: &[ChangeHash]) -> bool {
        heads.iter().all(|h| self.inner.get_change_meta_by_hash(h).is_some())
    }

    /// The changes made after `heads`, in automerge's incremental format.
    pub fn changes_since(&self, heads: &[ChangeHash]) -> Vec<u8> {
        self.inner.save_after(heads)
    }

    /// Takes in changes written by [`changes_since`](Self::changes_since).
    ///
    /// # Errors
    ///
    /// [`DocError::Invalid`] for bytes that are not changes and
    /// [`DocError::MissingDependencies`] when they build on changes not held
    /// here; the document is then unchanged.
    pub fn apply_changes(&mut self, changes: &[u8]) -> Result<(), DocError> {
        doc_bounds::check_uncompressed(changes).map_err(DocError::from)?;
        let mut next = (*self.inner).clone();
        without_panic(|| next.load_incremental(changes))?.map_err(|e| DocError::Invalid(e.to_string()))?;
        let missing = next.get_missing_deps(&[]);
        if !missing.is_empty() {
            return Err(DocError::MissingDependencies(missing.len()));
        }
        if !doc_bounds::depth_at_most(&next, PATCH_DEPTH_MAX) {
            return Err(DocError::TooDeep);
        }
        *self.inner = next;
        self.update_size_estimate();
        Ok(())
    }

    /// The whole document in automerge's format, uncompressed: what goes
    /// to peers must load into no more memory than its size
    /// (`doc_bounds.rs`).
    pub fn save(&self) -> Vec<u8> {
        self.inner.save_nocompress()
    }

    /// Loads a document written by [`save`](Self::save), as a peer sent it.
    ///
    /// # Errors
    ///
    /// [`DocError`] for bytes that are not a complete document, that are
    /// compressed, or whose tree nests deeper than [`PATCH_DEPTH_MAX`].
    pub fn load(bytes: &[u8]) -> Result<Doc, DocError> {
        doc_bounds::check_uncompressed(bytes).map_err(DocError::from)?;
        let inner =
            without_panic(|| Automerge::load(bytes))?.map_err(|e| DocError::Invalid(e.to_string()))?;
        let missing = inner.get_missing_deps(&[]);
        if !missing.is_empty() {
            return Err(DocError::MissingDependencies(missing.len()));
        }
        if !doc_bounds::depth_at_most(&inner, PATCH_DEPTH_MAX) {
            return Err(DocError::TooDeep);
        }
        Ok(Doc::from_inner(inner))
    }
}

impl Default for Doc {
    fn default() -> Self {
        Doc::new()
    }
}

impl PartialEq for Doc {
    fn eq(&self, other: &Self) -> bool {
        self.heads() == other.heads()
    }
}

impl Eq for Doc {}

impl fmt::Debug for Doc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Doc({})", self.to_json())
    }
}

impl Serialize for Doc {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.save())
    }
}

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_buf::ByteBuf = Deserialize::deserialize(deserializer)?;
        Doc::load(&bytes.0).map_err(serde::de::Error::custom)
    }
}

/// A byte buffer that deserializes from serde's bytes type, without pulling
/// in a crate for it.
mod serde_bytes_buf {
    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};
    use std::fmt;

    pub struct ByteBuf(pub Vec<u8>);

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = seq.next_element()? {
                        out.push(b);
                    }
                    Ok(ByteBuf(out))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
}

/// Runs automerge on a peer's bytes: a panic inside it (the fuzzer found
/// `Automerge::load` unwrapping on a crafted document) is a refused
/// document, not a node whose replication stops.
fn without_panic<T>(f: impl FnOnce() -> T) -> Result<T, DocError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| DocError::Refused("automerge could not read it (it panicked)"))
}

fn actor_for(stamp: Stamp) -> ActorId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&stamp.node.0.to_be_bytes());
    bytes[8..].copy_from_slice(&stamp.hlc.as_u64().to_be_bytes());
    ActorId::from(&bytes[..])
}

fn depth(value: &Json) -> usize {
    match value {
        Json::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Json::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// RFC 7396 on a map: `null` deletes a field, an object patches the field's
/// object (creating it when the field holds anything else), and any other
/// value replaces the field.
fn patch_map<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    fields: &Map<String, Json>,
) -> Result<(), automerge::AutomergeError> {
    for (name, value) in fields {
        match value {
            Json::Null => {
                if tx.get(obj, name.as_str())?.is_some() {
                    tx.delete(obj, name.as_str())?;
                }
            }
            Json::Object(inner) => {
                let existing = match tx.get(obj, name.as_str())? {
                    Some((automerge::Value::Object(ObjType::Map), id)) => Some(id),
                    _ => None,
                };
                let child = match existing {
                    Some(id) => id,
                    None => tx.put_object(obj, name.as_str(), ObjType::Map)?,
                };
                patch_map(tx, &child, inner)?;
            }
            Json::Array(items) => {
                let list = tx.put_object(obj, name.as_str(), ObjType::List)?;
                fill_list(tx, &list, items)?;
            }
            scalar => tx.put(obj, name.as_str(), to_scalar(scalar))?,
        }
    }
    Ok(())
}

fn fill_list<T: Transactable>(
    tx: &mut T,
    list: &ObjId,
    items: &[Json],
) -> Result<(), automerge::AutomergeError> {
    for (i, item) in items.iter().enumerate() {
        match item {
            Json::Object(fields) => {
                let child = tx.insert_object(list, i, ObjType::Map)?;
                // A fresh object: nulls in it mean "no field", as RFC 7396
                // says for a patch applied to a non-object.
                patch_map(tx, &child, fields)?;
            }
            Json::Array(inner) => {
                let child = tx.insert_object(list, i, ObjType::List)?;
                fill_list(tx, &child, inner)?;
            }
            scalar => tx.insert(list, i, to_scalar(scalar))?,
        }
    }
    Ok(())
}

fn to_scalar(value: &Json) -> ScalarValue {
    match value {
        Json::Bool(b) => ScalarValue::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::String(s) => ScalarValue::Str(s.as_str().into()),
        Json::Null | Json::Object(_) | Json::Array(_) => ScalarValue::Null,
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

    /// A document nested `depth` objects deep, built with automerge
    /// directly (a patch that deep is refused before it is applied).
    fn nested(depth: usize) -> Automerge {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        let mut obj = ROOT;
        for _ in 1..depth {
            obj = tx.put_object(&obj, "n", ObjType::Map).unwrap();
        }
        tx.commit();
        doc
    }

    #[test]
    fn a_peers_document_that_could_inflate_or_nests_too_deep_is_refused() {
        let mut big = Doc::new();
        let text = "x".repeat(64 * 1024);
        big.apply_merge_patch(&json!({"a": text, "b": text}), stamp(1, 1)).unwrap();
        assert!(Doc::load(&big.save()).is_ok(), "what nodes send loads");
        let compressed = big.inner.save();
        assert!(compressed.len() < big.save().len() / 10, "automerge's own save deflates");
        assert!(matches!(Doc::load(&compressed), Err(DocError::Refused(_))));
        assert!(Doc::load(&nested(PATCH_DEPTH_MAX).save_nocompress()).is_ok());
        let deep = nested(PATCH_DEPTH_MAX + 1).save_nocompress();
        assert!(matches!(Doc::load(&deep), Err(DocError::TooDeep)));
        let ten_thousand = nested(10_000).save_nocompress();
        assert!(matches!(Doc::load(&ten_thousand), Err(DocError::TooDeep)), "and no stack overflow");
    }

    /// A list of `n` elements, each `value(i)`.
    fn list_of(n: usize, value: impl Fn(usize) -> ScalarValue) -> Vec<u8> {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        let list = tx.put_object(ROOT, "l", ObjType::List).unwrap();
        for i in 0..n {
            tx.insert(&list, i, value(i)).unwrap();
        }
        tx.commit();
        doc.save_nocompress()
    }

    #[test]
    fn runs_that_declare_more_operations_than_the_bytes_allow_are_refused() {
        // 3,000 nulls run-length encode to a few bytes per column.
        let nulls = list_of(3_000, |_| ScalarValue::Null);
        assert!(nulls.len() < 3_000 / 8, "{} bytes", nulls.len());
        assert!(matches!(Doc::load(&nulls), Err(DocError::Refused(_))));
        // As many distinct numbers cost bytes each: an honest document.
        let numbers = list_of(500, |i| ScalarValue::Uint(i as u64 * 1_000));
        assert!(Doc::load(&numbers).is_ok());
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = Doc::new();
        doc.apply_merge_patch(&json!({"a": 1, "b": {"c": "x", "d": [1, {"e": null}]}}), stamp(1, 1)).unwrap();
        doc.apply_merge_patch(&json!({"a": null, "b": {"c": null, "f": true}}), stamp(2, 1)).unwrap();
        assert_eq!(doc.to_json(), json!({"b": {"d": [1, {}], "f": true}}));
    }

    #[test]
    fn concurrent_edits_to_different_fields_both_survive() {
        let mut base = Doc::new();
        base.apply_merge_patch(&json!({"name": "ada", "n": 1}), stamp(1, 1)).unwrap();
        let mut left = base.clone();
        let mut right = base.clone();
        left.apply_merge_patch(&json!({"name": "lovelace"}), stamp(2, 1)).unwrap();
        right.apply_merge_patch(&json!({"n": 2, "x": [true]}), stamp(2, 2)).unwrap();
        let mut merged = left.clone();
        merged.merge(&right);
        assert_eq!(merged.to_json(), json!({"name": "lovelace", "n": 2, "x": [true]}));
        right.merge(&left);
        assert_eq!(merged, right);
    }

    #[test]
    fn changes_apply_only_on_top_of_their_dependencies() {
        let mut a = Doc::new();
        a.apply_merge_patch(&json!({"k": 1}), stamp(1, 1)).unwrap();
        let base = a.heads();
        let mut b = a.clone();
        a.apply_merge_patch(&json!({"k": 2}), stamp(2, 1)).unwrap();
        let changes = a.changes_since(&base);
        assert!(matches!(Doc::new().apply_changes(&changes), Err(DocError::MissingDependencies(_))));
        b.apply_changes(&changes).unwrap();
        assert_eq!(a, b);
        assert!(Doc::new().apply_changes(b"garbage").is_err());
    }

    #[test]
    fn rejects_non_objects_and_deep_patches() {
        let mut doc = Doc::new();
        assert!(matches!(doc.apply_merge_patch(&json!([1]), stamp(1, 1)), Err(DocError::PatchNotAnObject)));
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({ "x": deep });
        }
        assert!(matches!(doc.apply_merge_patch(&deep, stamp(1, 1)), Err(DocError::PatchTooDeep)));
        assert_eq!(doc.to_json(), json!({}));
    }
}
