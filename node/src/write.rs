//! The pure part of a write: from the register held to the one after the
//! write, with its delta. The store runs it under its striped per-key lock;
//! the simulator's deterministic store runs the very same code.

use bytes::Bytes;
use geocache_crdt::{
    ClockSkewError, Counter, CounterError, Delta, DeltaBody, DeltaError, Doc, DocError, Dot, Hlc, HlcClock,
    Key, NodeId, Register, RegisterMeta, Stamp, Value, VersionVector,
};
use std::sync::{Arc, Mutex};
use thiserror::Error;

use crate::entry::{Entry, ValueRef};
use crate::strong_register::{strong_version, strong_vv, ChosenVersion, STRONG_WRITER};

/// How a write sets the entry's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// Never expires.
    Never,
    /// Expires this many milliseconds after the write.
    AfterMs(u64),
    /// Keeps the current value's expiry; a new entry gets `or_ms` (or none).
    Keep {
        /// TTL of a new entry, in milliseconds.
        or_ms: Option<u64>,
    },
}

/// When a write may happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Always,
    /// Only if the current value's version vector is exactly this one
    /// (`If-Match: <etag>`).
    IfMatch(VersionVector),
    /// Only if the current value's version has this
    /// [`cas_token`](geocache_crdt::VersionVector::cas_token) (the `cas` of
    /// the earlier `/api` interface).
    IfCas(u64),
    /// Only if a value is present (`If-Match: *`, Redis `XX`).
    IfPresent,
    /// Only if no value is present (`If-None-Match: *`, Redis `NX`).
    IfAbsent,
}

/// What a write does to the value.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOp {
    /// Replace the value with bytes.
    Put {
        /// The value.
        value: Bytes,
        /// Its media type, if the writer gave one.
        content_type: Option<String>,
    },
    /// Delete (write a tombstone).
    Delete,
    /// Apply a JSON merge patch to the document (starting one if the key
    /// holds no document).
    Patch(serde_json::Value),
    /// Add to the counter (`INCRBY`; negative to subtract). A value that is
    /// an integer in decimal becomes a counter starting there, in the epoch
    /// of the write that set it, so increments of it made anywhere join; a
    /// key with no visible value starts a counter at 0 in an epoch every
    /// replica holding the same register derives alike
    /// ([`fresh_counter_epoch`]).
    Add(i64),
}

/// A local write.
#[derive(Clone, Debug)]
pub struct Write {
    /// The entry.
    pub key: Key,
    /// What to do.
    pub op: WriteOp,
    /// The expiry after the write.
    pub ttl: Ttl,
    /// When to do it.
    pub condition: Condition,
}

/// A local write was refused. The store is unchanged.
#[derive(Debug, Error)]
pub enum WriteError {
    /// The write's condition does not hold.
    #[error("precondition failed: the current version is {}", current.as_deref().unwrap_or("absent"))]
    PreconditionFailed {
        /// The current value's ETag, if there is a value.
        current: Option<String>,
    },
    /// The patch is not valid for a document.
    #[error(transparent)]
    Doc(#[from] DocError),
    /// `Add` to bytes that are not an integer in decimal.
    #[error("the value is not an integer")]
    NotInteger,
    /// `Add` to a document.
    #[error("the value is a document, not a counter")]
    NotCounter,
    /// The counter cannot take the increment.
    #[error(transparent)]
    Counter(#[from] CounterError),
}

/// What a successful local write did.
#[derive(Clone, Debug)]
pub struct WriteOutcome {
    /// The entry the store holds after the write.
    pub entry: Entry,
    /// The register after the write, as replicated (its value shares the
    /// entry's memory).
    pub register: Arc<Register>,
    /// The visible value before the write, if there was one.
    pub previous: Option<Entry>,
    /// What to send to the other replicas.
    pub delta: Delta,
    /// Where the write is in the data dir's journal (for
    /// `Disk::wait_durable`); 0 without a data dir.
    pub disk_position: u64,
}

impl WriteOutcome {
    /// The same write with the whole register as its body: what the
    /// backlog keeps, so an anti-entropy answer applies even where a
    /// document's base is missing.
    pub fn whole_delta(&self) -> Delta {
        Delta {
            origin: self.delta.origin,
            seq: self.delta.seq,
            key: self.delta.key.clone(),
            body: DeltaBody::Register(self.register.clone()),
        }
    }
}

/// What a replicated write did.
#[derive(Clone, Debug)]
pub struct RemoteOutcome {
    /// The register after the write: the delta's own when it replaced the
    /// entry whole (so the backlog can keep the delta as it arrived). The
    /// store packs it into an [`Entry`] only when it keeps it.
    pub register: Arc<Register>,
    /// Whether the register changed (the store then keeps `register`).
    pub changed: bool,
    /// Whether the write was concurrent with this node's own write held
    /// here, and lost to it (or merged under its stamp): each pair of
    /// concurrent writes counts once, at the node whose write won.
    pub conflict: bool,
    /// A clock skew error, if the write's stamp was too far ahead.
    pub skew: Option<ClockSkewError>,
    /// The dot of this node's own visible write that the replicated one,
    /// concurrent with it, replaced whole (last-writer-wins kept the
    /// other): where a compare-and-set that succeeded here learns it lost.
    pub lost_own: Option<Dot>,
}

/// The origin side of a node's writes: its clock and its dense sequence.
#[derive(Debug)]
pub struct Writer {
    node: NodeId,
    hlc: HlcClock,
    seq: u64,
    tombstone_ttl_ms: u64,
}

impl Writer {
    /// The clock's last reading, issued or observed.
    pub fn clock(&self) -> Hlc {
        self.hlc.last()
    }

    /// A writer for `node` that has written nothing.
    pub fn new(node: NodeId, max_clock_skew_ms: u64, tombstone_ttl_ms: u64) -> Writer {
        Writer { node, hlc: HlcClock::new(max_clock_skew_ms), seq: 0, tombstone_ttl_ms }
    }

    /// Continues a life persisted in a data dir: its last sequence number
    /// and the last stamp it issued.
    pub fn resume(&mut self, seq: u64, hlc_floor: Hlc) {
        self.seq = self.seq.max(seq);
        self.hlc.resume(hlc_floor);
    }

    /// Observes a replicated stamp (see [`HlcClock::observe`]).
    ///
    /// # Errors
    ///
    /// [`ClockSkewError`] when it is too far ahead; nothing changed.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), ClockSkewError> {
        self.hlc.observe(remote, now_ms)
    }

    /// How long deletes (and expired values) are remembered, ms.
    pub fn tombstone_ttl_ms(&self) -> u64 {
        self.tombstone_ttl_ms
    }

    /// The last sequence number used.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

fn lock(writer: &Mutex<Writer>) -> std::sync::MutexGuard<'_, Writer> {
    // A panic while holding this lock leaves at worst an advanced clock or
    // sequence, so poisoning is moot.
    writer.lock().unwrap_or_else(|e| e.into_inner())
}

/// A local write over `current` (the entry held for the key, if any):
/// checks the condition, stamps the write after `current`, bumps the
/// version vector, builds the entry and its delta. A bytes value is copied
/// into the entry's own allocation here, once, so nothing the store keeps
/// points into a request's buffer.
///
/// The writer is locked twice, briefly: for the stamp, and for the sequence
/// number, which is taken last, once nothing can fail, so a refused write
/// never leaves a gap in the origin's sequence.
///
/// # Errors
///
/// [`WriteError`]; nothing is stamped or numbered then.
pub fn local_write(
    writer: &Mutex<Writer>,
    current: Option<&Entry>,
    write: Write,
    now: u64,
) -> Result<WriteOutcome, WriteError> {
    let visible = current.filter(|e| e.is_visible_at(now));
    check_condition(&write.condition, visible)?;
    let floor = current.map(|e| e.stamp().hlc).unwrap_or_default();
    // A put or a delete cannot fail from here on, so it takes its sequence
    // number with its stamp, under one lock (the writer is every write's
    // shared state). A patch or an increment may still be refused, and
    // takes its number only once it cannot be.
    let infallible = matches!(write.op, WriteOp::Put { .. } | WriteOp::Delete);
    let (node, tombstone_ttl_ms, hlc, early_seq) = {
        let mut w = lock(writer);
        let hlc = w.hlc.tick_after(floor, now);
        let seq = infallible.then(|| {
            w.seq += 1;
            w.seq
        });
        (w.node, w.tombstone_ttl_ms, hlc, seq)
    };
    let stamp = Stamp::new(hlc, node);
    let mut vv = current.map(Entry::vv).unwrap_or_default();
    vv.advance(node, hlc.as_u64());
    let expires_at_ms = match write.ttl {
        Ttl::Never => None,
        Ttl::AfterMs(ms) => Some(now.saturating_add(ms)),
        Ttl::Keep { or_ms } => match visible {
            Some(v) => v.expires_at_ms(),
            None => or_ms.map(|ms| now.saturating_add(ms)),
        },
    };
    let mut meta = RegisterMeta {
        stamp,
        epoch: stamp,
        vv,
        dot: Dot::default(),
        expires_at_ms,
        tombstone: false,
        content_type: None,
    };
    let (value, shared) = match write.op {
        WriteOp::Put { value, content_type } => {
            meta.content_type = content_type;
            (value, None)
        }
        WriteOp::Delete => {
            meta.tombstone = true;
            meta.expires_at_ms = Some(now.saturating_add(tombstone_ttl_ms));
            (Bytes::new(), None)
        }
        WriteOp::Patch(patch) => {
            let existing = visible.and_then(|v| v.doc().map(|d| (d.clone(), v.epoch())));
            let (mut doc, epoch) = existing.unwrap_or_else(|| (Doc::new(), stamp));
            doc.apply_merge_patch(&patch, stamp)?;
            meta.epoch = epoch;
            (Bytes::new(), Some(Value::Doc(doc)))
        }
        WriteOp::Add(by) => {
            let (mut counter, epoch) = match visible {
                Some(v) => match v.value() {
                    ValueRef::Counter(c) => (c.clone(), v.epoch()),
                    ValueRef::Bytes(b) => (Counter::starting_at(parse_integer(b)?), v.epoch()),
                    ValueRef::Doc(_) => return Err(WriteError::NotCounter),
                },
                None => (Counter::default(), fresh_counter_epoch(current)),
            };
            counter.add(node, by)?;
            meta.epoch = epoch;
            (Bytes::new(), Some(Value::Counter(counter)))
        }
    };
    let seq = early_seq.unwrap_or_else(|| {
        let mut w = lock(writer);
        w.seq += 1;
        w.seq
    });
    meta.dot = Dot { origin: node, seq };
    let (entry, register) = match shared {
        Some(value) => {
            let register = Arc::new(Register { value, meta });
            (Entry::from_register(register.clone()), register)
        }
        None => {
            let entry = Entry::pack(&meta, &value);
            let register = Arc::new(Register { value: Value::Bytes(entry.bytes_value()), meta });
            (entry, register)
        }
    };
    let before = current.and_then(Entry::shared_register);
    let delta = Delta::for_write(node, seq, write.key, before, &register);
    Ok(WriteOutcome { entry, register, previous: visible.cloned(), delta, disk_position: 0 })
}

/// A version of a strong key that the acceptors chose, over `current`,
/// as a local write (`strong_register.rs`): its stamp, vector and expiry
/// are the version's, so every node that keeps it holds the same register
/// but for the dot. `None` when `current` is that version or a later one.
pub fn keep_chosen(
    writer: &Mutex<Writer>,
    current: Option<&Entry>,
    key: Key,
    chosen: ChosenVersion,
    now: u64,
) -> Option<WriteOutcome> {
    if current.and_then(|e| strong_version(&e.vv())).is_some_and(|held| held >= chosen.version) {
        return None;
    }
    let visible = current.filter(|e| e.is_visible_at(now));
    let stamp = Stamp::new(chosen.hlc, STRONG_WRITER);
    let (node, tombstone_ttl_ms, seq) = {
        let mut w = lock(writer);
        // Later local writes order after it; a version stamped too far
        // ahead is still kept (the acceptors chose it), the clock not moved.
        let _ = w.hlc.observe(chosen.hlc, now);
        w.seq += 1;
        (w.node, w.tombstone_ttl_ms, w.seq)
    };
    let tombstone = chosen.value.is_none();
    let meta = RegisterMeta {
        stamp,
        epoch: stamp,
        vv: strong_vv(chosen.version),
        dot: Dot { origin: node, seq },
        expires_at_ms: if tombstone {
            Some(now.saturating_add(tombstone_ttl_ms))
        } else {
            chosen.expires_at_ms
        },
        tombstone,
        content_type: None,
    };
    let entry = Entry::pack(&meta, chosen.value.as_deref().unwrap_or_default());
    let register = Arc::new(Register { value: Value::Bytes(entry.bytes_value()), meta });
    let before = current.and_then(Entry::shared_register);
    let delta = Delta::for_write(node, seq, key, before, &register);
    Some(WriteOutcome { entry, register, previous: visible.cloned(), delta, disk_position: 0 })
}

/// A replicated write over `current`: the entry after it, whether it
/// changed, and whether it was concurrent with the visible value held.
///
/// A delta that loses its merge whole (the entry held has a later epoch
/// and has seen every write the delta has) costs two comparisons and
/// nothing else.
///
/// # Errors
///
/// [`DeltaError`] when the delta cannot be applied here.
pub fn remote_write(
    me: NodeId,
    current: Option<&Entry>,
    delta: &Delta,
    now: u64,
    skew: Option<ClockSkewError>,
) -> Result<RemoteOutcome, DeltaError> {
    let incoming = delta.meta().ok_or(DeltaError::Omitted)?;
    // Each dominance once: it decides the conflict and the fast paths.
    let held_vv = current.map(Entry::vv);
    let (theirs_cover, ours_cover) = match &held_vv {
        Some(vv) => (incoming.vv.dominates(vv), vv.dominates(&incoming.vv)),
        None => (true, false),
    };
    // Concurrent with this node's own write, which wins if its stamp is
    // the later one (a document merges under the later stamp too).
    let conflict = current
        .is_some_and(|c| c.is_visible_at(now) && c.dot().origin == me && c.stamp() > incoming.stamp)
        && !theirs_cover
        && !ours_cover;
    let own_concurrent = current
        .filter(|c| c.is_visible_at(now) && c.dot().origin == me && !theirs_cover && !ours_cover)
        .map(|c| (c.dot(), c.epoch()));
    let unchanged =
        |register: Arc<Register>| RemoteOutcome { register, changed: false, conflict, skew, lost_own: None };
    // Lost when the result is no longer that write, nor of its epoch (a
    // document or counter of one epoch merges: nothing is lost).
    let changed_to = |register: Arc<Register>| {
        let lost_own = own_concurrent
            .filter(|(dot, epoch)| register.meta.dot != *dot && register.meta.epoch != *epoch)
            .map(|(dot, _)| dot);
        RemoteOutcome { register, changed: true, conflict, skew, lost_own }
    };
    // Fast paths, equal to the merge but without building a merged
    // register: a whole register that replaces the current one and has
    // seen all it has, or one the current entry already supersedes.
    if let DeltaBody::Register(incoming) = &delta.body {
        let replaces = match current {
            None => true,
            Some(c) => incoming.meta.epoch > c.epoch() && theirs_cover,
        };
        if replaces {
            return Ok(changed_to(incoming.clone()));
        }
        // The backlog keeps the delta as it came: forwarding it later is
        // as good as forwarding the entry, which supersedes it anyway.
        if current.is_some_and(|c| c.epoch() > incoming.meta.epoch && ours_cover) {
            return Ok(unchanged(incoming.clone()));
        }
    }
    let held = current.map(Entry::register_arc);
    let next = delta.apply_to(held.as_deref())?;
    if let Some(held) = &held {
        if **held == next {
            return Ok(unchanged(held.clone()));
        }
    }
    // The merge gave back the register that arrived (its vector dropped
    // only entries the held one had, past `WRITERS_KEPT`): share it, as
    // the fast path does, rather than keep a copy.
    if let DeltaBody::Register(incoming) = &delta.body {
        if **incoming == next {
            return Ok(changed_to(incoming.clone()));
        }
    }
    Ok(changed_to(Arc::new(next)))
}

/// When an entry may be forgotten: a tombstone at its own expiry (the
/// delete's retention), an expired value only a retention later. Until
/// then it stays as an invisible entry, so a late, older write for the key
/// merges under it instead of coming back to life.
pub fn reclaim_at_ms(entry: &Entry, tombstone_ttl_ms: u64) -> Option<u64> {
    let at = entry.expires_at_ms()?;
    if entry.is_tombstone() {
        Some(at)
    } else {
        Some(at.saturating_add(tombstone_ttl_ms))
    }
}

/// The epoch of a counter started on a key with no visible value: after
/// the delete or the expired value held (so it wins over it), and the same
/// at every replica that holds that register, so the first increments
/// made concurrently in several regions join rather than one replacing the
/// others; 0 when nothing is held.
pub fn fresh_counter_epoch(held: Option<&Entry>) -> Stamp {
    match held {
        Some(e) => Stamp::new(Hlc::from_u64(e.epoch().hlc.as_u64().saturating_add(1)), NodeId(0)),
        None => Stamp::default(),
    }
}

/// The integer an entry holds: a counter's value, or bytes in decimal (as
/// an increment would start from them; a strong key's counter is such
/// bytes). `None` for anything else.
pub fn integer_value(entry: &Entry) -> Option<i128> {
    match entry.value() {
        ValueRef::Counter(c) => Some(c.value()),
        ValueRef::Bytes(b) => parse_integer(b).ok().map(i128::from),
        ValueRef::Doc(_) => None,
    }
}

/// A value as `INCR` reads it: a signed 64-bit integer in decimal.
///
/// # Errors
///
/// [`WriteError::NotInteger`] for anything else.
pub fn parse_integer(b: &[u8]) -> Result<i64, WriteError> {
    std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or(WriteError::NotInteger)
}

fn check_condition(condition: &Condition, visible: Option<&Entry>) -> Result<(), WriteError> {
    let holds = match (condition, visible) {
        (Condition::Always, _) => true,
        (Condition::IfMatch(vv), Some(r)) => &r.vv() == vv,
        (Condition::IfMatch(_), None) => false,
        (Condition::IfCas(token), Some(r)) => crate::strong_register::cas_of(&r.vv()) == *token,
        (Condition::IfCas(_), None) => false,
        (Condition::IfPresent, v) => v.is_some(),
        (Condition::IfAbsent, v) => v.is_none(),
    };
    if holds {
        Ok(())
    } else {
        Err(WriteError::PreconditionFailed { current: visible.map(|r| r.vv().to_etag()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(node: u64) -> Mutex<Writer> {
        Mutex::new(Writer::new(NodeId(node), 60_000, 600_000))
    }

    fn write(writer: &Mutex<Writer>, current: Option<&Entry>, op: WriteOp, now: u64) -> WriteOutcome {
        let write = Write {
            key: Key::new("t", Bytes::from_static(b"k")),
            op,
            ttl: Ttl::Keep { or_ms: None },
            condition: Condition::Always,
        };
        local_write(writer, current, write, now).unwrap()
    }

    fn merged(a: &WriteOutcome, b: &WriteOutcome) -> i128 {
        let out = remote_write(NodeId(1), Some(&a.entry), &a.delta.clone(), 10, None).unwrap();
        let held = Entry::from_register(out.register);
        let out = remote_write(NodeId(1), Some(&held), &b.delta, 10, None).unwrap();
        out.register.counter().map(Counter::value).expect("a counter")
    }

    #[test]
    fn increments_of_one_set_made_on_two_nodes_both_count() {
        let (a, b) = (writer(1), writer(2));
        let set = write(&a, None, WriteOp::Put { value: Bytes::from_static(b"10"), content_type: None }, 1);
        let at_a = write(&a, Some(&set.entry), WriteOp::Add(5), 2);
        let at_b = write(&b, Some(&set.entry), WriteOp::Add(-3), 2);
        assert_eq!(at_a.register.meta.epoch, set.register.meta.epoch, "the SET's epoch");
        assert_eq!(merged(&at_a, &at_b), 12);
        assert_eq!(merged(&at_b, &at_a), 12);
    }

    #[test]
    fn first_increments_after_a_delete_on_two_nodes_both_count_and_beat_it() {
        let (a, b) = (writer(1), writer(2));
        let set = write(&a, None, WriteOp::Put { value: Bytes::from_static(b"7"), content_type: None }, 1);
        let deleted = write(&a, Some(&set.entry), WriteOp::Delete, 2);
        let at_a = write(&a, Some(&deleted.entry), WriteOp::Add(1), 3);
        let at_b = write(&b, Some(&deleted.entry), WriteOp::Add(1), 3);
        assert!(at_a.register.meta.epoch > deleted.register.meta.epoch);
        assert_eq!(at_a.register.meta.epoch, at_b.register.meta.epoch, "derived alike");
        assert_eq!(merged(&at_a, &at_b), 2, "from 0: the delete discarded the 7");
    }

    #[test]
    fn a_set_discards_increments_it_had_not_seen() {
        let (a, b) = (writer(1), writer(2));
        let start = write(&a, None, WriteOp::Add(4), 1);
        let incr = write(&b, Some(&start.entry), WriteOp::Add(1), 2);
        let set = write(
            &a,
            Some(&start.entry),
            WriteOp::Put { value: Bytes::from_static(b"100"), content_type: None },
            3,
        );
        let out = remote_write(NodeId(1), Some(&set.entry), &incr.delta, 4, None).unwrap();
        assert_eq!(
            out.register.value,
            Value::Bytes(Bytes::from_static(b"100")),
            "the SET's newer epoch wins whole"
        );
        assert!(out.register.meta.vv.dominates(&incr.register.meta.vv), "having seen the increment");
    }

    #[test]
    fn adding_to_a_document_or_to_text_is_refused() {
        let a = writer(1);
        let text = write(&a, None, WriteOp::Put { value: Bytes::from_static(b"ten"), content_type: None }, 1);
        let add = Write {
            key: Key::new("t", Bytes::from_static(b"k")),
            op: WriteOp::Add(1),
            ttl: Ttl::Never,
            condition: Condition::Always,
        };
        assert!(matches!(local_write(&a, Some(&text.entry), add.clone(), 2), Err(WriteError::NotInteger)));
        let doc = write(&a, None, WriteOp::Patch(serde_json::json!({"f": 1})), 3);
        assert!(matches!(local_write(&a, Some(&doc.entry), add, 4), Err(WriteError::NotCounter)));
    }
}
