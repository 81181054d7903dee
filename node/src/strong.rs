//! Strong writes and reads at the node (`consistency = "strong"`, or
//! `Geocache-Consistency: strong`): a client's write becomes a CASPaxos
//! change (`geocache_gossip::strong`), replication runs it through a
//! majority of the acceptors, and the version chosen is kept in the store
//! and replicated to every node like any write (`strong_register.rs`).
//!
//! The write path (`write_path.rs`) sends a strong write here, so every
//! front end has the same rules: what each write means as a change, and
//! what each outcome answers.

use geocache_crdt::{Delta, DeltaBody, Key, NodeId};
use geocache_gossip::strong::{Change, Outcome, StrongState};

use crate::cluster::Durability;
use crate::entry::Entry;
use crate::state::NodeState;
use crate::store::{Condition, Ttl, Write, WriteError, WriteOp, WriteOutcome};
use crate::strong_register::{strong_version, strong_vv, ChosenVersion};
use crate::write::parse_integer;
use crate::write_path::WritePathError;

/// Most strong keys an acceptor keeps slots for. A slot is never dropped
/// (forgetting one could give a key an older history), so past it new
/// strong keys are refused (503); with values of at most
/// [`STRONG_VALUE_BYTES_MAX`], an acceptor's slots take at most ~1 GiB,
/// and ~10 MiB at 100-byte values (docs/OPERATIONS.md).
pub const ACCEPTOR_KEY_COUNT_MAX: usize = 65_536;
/// Largest value of a strong key: it travels in every acceptor's answer
/// and stays in every acceptor's slot.
pub const STRONG_VALUE_BYTES_MAX: usize = 16 << 10;

impl NodeState {
    /// Whether this node can run strong changes (`--strong-acceptors`).
    pub fn has_strong(&self) -> bool {
        !self.config.strong_acceptors.is_empty() && self.cluster.is_some()
    }

    /// `write` made linearizable across the cluster: chosen by a majority
    /// of the acceptors, then kept here and replicated (waiting for
    /// `level` as any write does).
    ///
    /// # Errors
    ///
    /// [`WritePathError`]: refused with the current version (read
    /// linearizably, and kept here), unavailable (no majority: nothing
    /// was written), unknown (it may have been written), or a write
    /// strong keys do not take.
    pub(crate) async fn write_strong(
        &self,
        write: Write,
        level: Durability,
    ) -> Result<WriteOutcome, WritePathError> {
        let now = self.store.now_ms();
        let change = change_of(&write, now)?;
        let is_add = matches!(change, Change::Add { .. });
        // One lookup: the version held tells the proposer whether its held
        // promise is stale, and the value visible is the write's previous.
        let held = self.store.register(&write.key);
        let previous = held.clone().filter(|e| e.is_visible_at(now));
        match self.propose(&write.key, change, held.as_ref()).await? {
            Outcome::Chosen(state) => match self.keep_version(&write.key, &state, previous) {
                (outcome, true) => self.finish_write(outcome, level).await,
                // A later version is already here: this one was chosen and
                // the store moved past it.
                (outcome, false) => Ok(outcome),
            },
            Outcome::Refused(state) => {
                let current = self.keep_and_replicate(&write.key, &state).await;
                let visible = current.entry.is_visible_at(self.store.now_ms());
                let integer = state.visible_at(now).map(|v| parse_integer(v).is_ok());
                Err(WritePathError::Refused(match (is_add, integer) {
                    (true, Some(false)) => WriteError::NotInteger,
                    (true, _) => WriteError::Counter(geocache_crdt::CounterError::Overflow),
                    (false, _) => WriteError::PreconditionFailed {
                        current: visible.then(|| strong_vv(state.version).to_etag()),
                    },
                }))
            }
            other => Err(unavailable(other)),
        }
    }

    /// The value of `key` read linearizably: what a majority of the
    /// acceptors hold, kept here if this node was behind. `None`: no value.
    ///
    /// # Errors
    ///
    /// [`WritePathError::StrongUnavailable`] without a majority.
    pub async fn read_strong(&self, key: &Key) -> Result<Option<Entry>, WritePathError> {
        match self.propose(key, Change::Read, self.store.register(key).as_ref()).await? {
            Outcome::Chosen(state) | Outcome::Refused(state) => {
                let kept = self.keep_and_replicate(key, &state).await;
                let now = self.store.now_ms();
                // What the store holds now is that version or a later one.
                Ok(self.store.get(key).or_else(|| kept.entry.is_visible_at(now).then_some(kept.entry)))
            }
            // A read changes nothing: whatever it learned, nothing was made.
            Outcome::Unknown => Err(WritePathError::StrongUnavailable(
                "no majority of the strong acceptors confirmed the read in time".into(),
            )),
            other => Err(unavailable(other)),
        }
    }

    /// Runs `change` of `key` through the acceptors; `held` is the entry
    /// the store holds for it (tombstones included).
    async fn propose(
        &self,
        key: &Key,
        change: Change,
        held: Option<&Entry>,
    ) -> Result<Outcome, WritePathError> {
        let Some(cluster) = self.cluster.as_ref().filter(|_| self.has_strong()) else {
            return Err(WritePathError::StrongNotConfigured);
        };
        let seen = held.and_then(|e| strong_version(&e.vv())).unwrap_or(0);
        Ok(cluster.propose_strong(key.clone(), change, self.store.hlc_now(), seen).await)
    }

    /// Keeps version `state` of `key` (read, or refused against) and hands
    /// it to replication when this node did not hold it yet.
    async fn keep_and_replicate(&self, key: &Key, state: &StrongState) -> WriteOutcome {
        let (outcome, new) = self.keep_version(key, state, None);
        if new {
            if let Some(cluster) = &self.cluster {
                cluster.replicate(&outcome, Durability::Local).await;
            }
        }
        outcome
    }

    /// Keeps version `state` of `key` in the store unless the store holds
    /// it or a later one: the outcome to answer with, and whether it is a
    /// write of this node to replicate.
    fn keep_version(&self, key: &Key, state: &StrongState, previous: Option<Entry>) -> (WriteOutcome, bool) {
        let chosen = ChosenVersion {
            version: state.version,
            hlc: state.hlc,
            value: state.value.clone(),
            expires_at_ms: state.expires_at_ms,
        };
        if state.version > 0 {
            if let Some(mut outcome) = self.store.keep_chosen(key.clone(), chosen) {
                outcome.previous = previous;
                return (outcome, true);
            }
        }
        // Held already (or a key never written): answer from the store,
        // with a delta that is never sent.
        let held =
            self.store.register(key).filter(|e| strong_version(&e.vv()).is_some_and(|v| v >= state.version));
        let entry = held.unwrap_or_else(|| never_written(state));
        let register = entry.register_arc();
        let delta = Delta {
            origin: NodeId(0),
            seq: 0,
            key: key.clone(),
            body: DeltaBody::Register(register.clone()),
        };
        (WriteOutcome { entry, register, previous, delta, disk_position: 0 }, false)
    }
}

/// The entry a strong key that was never written answers with: a
/// tombstone of version 0, visible nowhere.
fn never_written(state: &StrongState) -> Entry {
    let meta = geocache_crdt::RegisterMeta {
        stamp: geocache_crdt::Stamp::new(state.hlc, NodeId(0)),
        epoch: geocache_crdt::Stamp::new(state.hlc, NodeId(0)),
        vv: geocache_crdt::VersionVector::new(),
        dot: geocache_crdt::Dot::default(),
        expires_at_ms: Some(0),
        tombstone: true,
        content_type: None,
    };
    Entry::pack(&meta, &[])
}

/// What the acceptors' silence or refusal answers.
fn unavailable(outcome: Outcome) -> WritePathError {
    match outcome {
        Outcome::Unknown => WritePathError::StrongUnknown,
        Outcome::Full => WritePathError::StrongUnavailable(format!(
            "the strong acceptors hold as many keys as they may ({ACCEPTOR_KEY_COUNT_MAX}); nothing was written"
        )),
        Outcome::Busy => {
            WritePathError::StrongUnavailable("too many strong changes under way at this node; nothing was written".into())
        }
        _ => WritePathError::StrongUnavailable(
            "no majority of the strong acceptors answered in time (a partition, or acceptors down); nothing was written".into(),
        ),
    }
}

/// The CASPaxos change a write asks for.
///
/// # Errors
///
/// [`WritePathError::StrongUnsupported`] for what strong keys do not take.
fn change_of(write: &Write, now_ms: u64) -> Result<Change, WritePathError> {
    let expires_at_ms = match write.ttl {
        Ttl::Never => None,
        Ttl::AfterMs(ms) => Some(now_ms.saturating_add(ms)),
        Ttl::Keep { or_ms } => match write.op {
            // An increment keeps a present value's expiry (the change says so).
            WriteOp::Add(_) => or_ms.map(|ms| now_ms.saturating_add(ms)),
            _ => {
                return Err(WritePathError::StrongUnsupported(
                    "a write that keeps the current expiry (KEEPTTL, EXPIRE) is not taken on a strong key; give the TTL",
                ))
            }
        },
    };
    let expected = |condition: &Condition| match condition {
        Condition::IfCas(token) => Some(*token),
        // An ETag of another kind of version never matches a strong one.
        Condition::IfMatch(vv) => Some(strong_version(vv).unwrap_or(u64::MAX)),
        _ => None,
    };
    Ok(match (&write.op, &write.condition) {
        (WriteOp::Put { value, .. }, _) if value.len() > STRONG_VALUE_BYTES_MAX => {
            return Err(WritePathError::StrongUnsupported("a strong key's value is at most 16 KiB"))
        }
        (WriteOp::Put { value, .. }, Condition::Always) => {
            Change::Put { value: value.clone(), expires_at_ms }
        }
        (WriteOp::Put { value, .. }, Condition::IfAbsent) => {
            Change::IfAbsent { value: value.clone(), expires_at_ms }
        }
        (WriteOp::Put { value, .. }, Condition::IfPresent) => {
            Change::IfPresent { value: value.clone(), expires_at_ms }
        }
        (WriteOp::Put { value, .. }, c) => Change::CompareAndSet {
            expected: expected(c).unwrap_or(u64::MAX),
            value: value.clone(),
            expires_at_ms,
        },
        (WriteOp::Delete, Condition::Always | Condition::IfPresent) => Change::Delete,
        (WriteOp::Delete, Condition::IfAbsent) => {
            return Err(WritePathError::StrongUnsupported("a delete if absent changes nothing"))
        }
        (WriteOp::Delete, c) => Change::DeleteIf { expected: expected(c).unwrap_or(u64::MAX) },
        (WriteOp::Add(by), Condition::Always) => Change::Add { by: *by, expires_at_ms },
        (WriteOp::Add(_), _) => return Err(WritePathError::StrongUnsupported("a conditional increment")),
        (WriteOp::Patch(_), _) => {
            return Err(WritePathError::StrongUnsupported(
                "documents merge field by field and are not strong; use /v1/kv with a JSON value",
            ))
        }
    })
}
