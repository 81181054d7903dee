use automerge::ChangeHash;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::sync::Arc;
use thiserror::Error;

use crate::{Doc, DocError, Key, NodeId, Register, RegisterMeta, Value};

/// What one write sends to the other replicas.
///
/// `seq` is dense per origin (1, 2, 3, …), so a receiver can tell which
/// writes it has applied with a watermark and a few gaps, and drop
/// duplicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The node that accepted the write.
    pub origin: NodeId,
    /// The origin's sequence number of the write.
    pub seq: u64,
    /// The entry written.
    pub key: Key,
    /// The register after the write, or for a document only the change.
    pub body: DeltaBody,
}

/// The payload of a [`Delta`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeltaBody {
    /// The whole register as the origin holds it after the write (shared
    /// with the origin's store, not copied).
    Register(Arc<Register>),
    /// A document edit: only the automerge changes made after `base_heads`
    /// (boxed: the other bodies are a pointer, and every delta a backlog
    /// holds would otherwise be the size of this one).
    DocChanges(Box<DocChanges>),
    /// Left out: the sender knew the receiver, a sidecar, did not hold the
    /// key. The receiver takes the write as applied without storing it, and
    /// drops the key should it hold it after all (a sidecar holds the
    /// newest version it has seen or nothing). A full node never takes one
    /// as applied: it stays missing until the whole delta comes.
    Omitted,
}

/// A document edit as automerge changes on top of a known state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocChanges {
    /// The register's metadata after the write.
    pub meta: RegisterMeta,
    /// The heads the changes build on (empty when they start the document).
    pub base_heads: Vec<[u8; 32]>,
    /// The changes, in automerge's incremental format.
    pub changes: Bytes,
}

/// A delta could not be applied. The receiver's register is unchanged.
#[derive(Debug, Error)]
pub enum DeltaError {
    /// The delta carries document changes on top of a state the receiver
    /// does not hold; it needs the whole register (anti-entropy brings it).
    #[error("document changes need a base this replica does not hold")]
    MissingBase,
    /// The delta's body was left out for a sidecar (`DeltaBody::Omitted`):
    /// there is nothing to apply.
    #[error("the delta's body was left out")]
    Omitted,
    /// The changes themselves are invalid.
    #[error(transparent)]
    Doc(#[from] DocError),
}

impl Delta {
    /// The delta for a local write that turned `before` into `after`: only
    /// the document changes when that is smaller than the whole register.
    pub fn for_write(
        origin: NodeId,
        seq: u64,
        key: Key,
        before: Option<&Register>,
        after: &Arc<Register>,
    ) -> Delta {
        let body = match (before.and_then(Register::doc), after.doc()) {
            (Some(old), Some(new)) if before.is_some_and(|b| b.meta.epoch == after.meta.epoch) => {
                let base = old.heads();
                let changes = new.changes_since(&base);
                if changes.len() < new.save().len() {
                    DeltaBody::DocChanges(Box::new(DocChanges {
                        meta: after.meta.clone(),
                        base_heads: base.iter().map(|h| h.0).collect(),
                        changes: Bytes::from(changes),
                    }))
                } else {
                    DeltaBody::Register(after.clone())
                }
            }
            _ => DeltaBody::Register(after.clone()),
        };
        Delta { origin, seq, key, body }
    }

    /// The metadata of the register the write produced; `None` when the
    /// body was left out.
    pub fn meta(&self) -> Option<&RegisterMeta> {
        match &self.body {
            DeltaBody::Register(r) => Some(&r.meta),
            DeltaBody::DocChanges(dc) => Some(&dc.meta),
            DeltaBody::Omitted => None,
        }
    }

    /// The same write with its body left out ([`DeltaBody::Omitted`]).
    pub fn omitted(&self) -> Delta {
        Delta { origin: self.origin, seq: self.seq, key: self.key.clone(), body: DeltaBody::Omitted }
    }

    /// The register after applying this delta to `current` (the receiver's
    /// register for the key, if any): exactly `current` merged with the
    /// origin's register.
    ///
    /// # Errors
    ///
    /// [`DeltaError::MissingBase`] when document changes build on a state
    /// `current` does not hold; [`DeltaError::Omitted`] when there is no
    /// body to apply.
    pub fn apply_to(&self, current: Option<&Register>) -> Result<Register, DeltaError> {
        let incoming = match &self.body {
            DeltaBody::Register(r) => return Ok(merge_into(current, r)),
            DeltaBody::DocChanges(dc) => dc,
            DeltaBody::Omitted => return Err(DeltaError::Omitted),
        };
        let base: Vec<ChangeHash> = incoming.base_heads.iter().map(|h| ChangeHash(*h)).collect();
        let mut doc = match current {
            Some(cur) => match cur.meta.epoch.cmp(&incoming.meta.epoch) {
                // A newer replacement already won: the edit only adds its
                // version to the vector.
                Ordering::Greater => {
                    let mut out = cur.clone();
                    out.meta.vv = out.meta.vv.join(&incoming.meta.vv);
                    return Ok(out);
                }
                Ordering::Equal => match cur.doc() {
                    Some(d) if d.contains_all(&base) => d.clone(),
                    _ => return Err(DeltaError::MissingBase),
                },
                Ordering::Less if base.is_empty() => Doc::new(),
                Ordering::Less => return Err(DeltaError::MissingBase),
            },
            None if base.is_empty() => Doc::new(),
            None => return Err(DeltaError::MissingBase),
        };
        doc.apply_changes(&incoming.changes)?;
        let theirs = Register { value: Value::Doc(doc), meta: incoming.meta.clone() };
        Ok(merge_into(current, &theirs))
    }
}

fn merge_into(current: Option<&Register>, incoming: &Register) -> Register {
    match current {
        Some(cur) => cur.merged(incoming),
        None => incoming.clone(),
    }
}
