//! A register as the store holds it: metadata and value packed into one
//! allocation of its own.
//!
//! A [`Register`] with its `Arc`, its `Bytes` value and its metadata struct
//! costs three allocations and ~170 bytes of header per entry, and a value
//! received in a request kept as a slice of that request's buffer pins the
//! whole buffer. An [`Entry`] is one `Arc<[u8]>`: a compact header (flags,
//! stamp, dot, expiry, the version vector inline, the content type) and the
//! value's bytes right after it, copied there when the write is applied, so
//! every byte the store keeps is its own. Documents stay a shared
//! [`Register`]: an automerge document is a structure, not bytes, and is
//! weighed by its own estimate.
//!
//! Packing is lossless: [`Entry::to_register`] gives back exactly the
//! register packed, so replicas compare and merge what they hold as before.

use crate::varint;
use crate::weight::allocation_bytes;
use bytes::Bytes;
use geocache_crdt::{Counter, Doc, Dot, Hlc, NodeId, Register, RegisterMeta, Stamp, Value, VersionVector};
use std::sync::Arc;

/// A document's register besides the document's own estimate: the
/// `Arc<Register>` and its metadata.
const DOC_REGISTER_BYTES: usize = 192;

/// Flag bits of the packed header's first byte.
const TOMBSTONE: u8 = 1;
const EXPIRES: u8 = 1 << 1;
/// The epoch is not the stamp (never for a register written whole).
const OWN_EPOCH: u8 = 1 << 2;
/// The dot's origin is not the stamp's node (never for a local write).
const OWN_DOT_ORIGIN: u8 = 1 << 3;
const CONTENT_TYPE: u8 = 1 << 4;

/// Offsets of the fixed part: flags, stamp, dot sequence, then the optional
/// fields in flag order.
const STAMP_HLC_AT: usize = 1;
const STAMP_NODE_AT: usize = 9;
const DOT_SEQ_AT: usize = 17;
const EXPIRES_AT: usize = 25;

/// The packed header of a register with one writer, no expiry and no
/// content type: what most entries cost besides key and value.
pub const HEADER_BYTES_MIN: usize = EXPIRES_AT + 1;

/// One cache entry: a packed bytes register, or a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry(Stored);

/// Two variants, so the null niche of the packed `Arc` tells them apart
/// and an entry is 16 bytes inside moka's node (three took 24, and 35
/// more bytes per entry of a full store once moka's node crossed a size
/// class).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stored {
    /// Header and value in one allocation: most entries.
    Packed(Arc<[u8]>),
    /// The rarer kinds, behind one more pointer.
    Other(Arc<Other>),
}

#[derive(Debug, PartialEq, Eq)]
enum Other {
    /// Header and value apart, when one allocation would land in a much
    /// larger size class than three (a 1 KiB value: 1,082 bytes take a
    /// 1,280-byte class packed, 1,024 + 48 + 48 apart).
    Split(SplitEntry),
    /// A document or a counter: a structure, not bytes, kept as the
    /// register it is.
    Shared(Arc<Register>),
}

/// What an entry holds, borrowed.
enum Repr<'a> {
    Packed(&'a Arc<[u8]>),
    Split(&'a Arc<Other>, &'a SplitEntry),
    Shared(&'a Arc<Register>),
}

/// The parts of a split entry, each its own exact allocation.
#[derive(Debug, PartialEq, Eq)]
struct SplitEntry {
    header: Box<[u8]>,
    value: Box<[u8]>,
}

/// The `Arc` around a split entry: counters, a tag and two boxed slices.
const SPLIT_ARC_BYTES: usize = 16 + 48;

/// The `Arc` header: two counters.
const ARC_HEADER_BYTES: usize = 16;

/// Packed entries up to this long are put together on the stack.
const PACK_ON_STACK_BYTES: usize = 512;

/// A borrowed view of an entry's value.
#[derive(Clone, Copy, Debug)]
pub enum ValueRef<'a> {
    /// Opaque bytes (empty for a tombstone).
    Bytes(&'a [u8]),
    /// A JSON document.
    Doc(&'a Doc),
    /// A counter.
    Counter(&'a Counter),
}

/// An entry as its accessors read it: a packed header (the value may
/// follow), or a document's or a counter's register.
enum View<'a> {
    Header(&'a [u8]),
    Shared(&'a Register),
}

/// Where the variable parts of a packed header are.
struct Layout {
    vv_count: usize,
    vv_at: usize,
    content_type: Option<(usize, usize)>,
    value_at: usize,
}

impl Entry {
    /// The entry holding `register`, sharing it when it is a document.
    pub fn from_register(register: Arc<Register>) -> Entry {
        match &register.value {
            Value::Bytes(bytes) => Entry::pack(&register.meta, bytes),
            Value::Doc(_) | Value::Counter(_) => Entry(Stored::Other(Arc::new(Other::Shared(register)))),
        }
    }

    /// A bytes register packed from its parts: the value is copied into
    /// the entry's own allocation.
    pub fn pack(meta: &RegisterMeta, value: &[u8]) -> Entry {
        let mut flags = 0;
        if meta.tombstone {
            flags |= TOMBSTONE;
        }
        if meta.expires_at_ms.is_some() {
            flags |= EXPIRES;
        }
        if meta.epoch != meta.stamp {
            flags |= OWN_EPOCH;
        }
        if meta.dot.origin != meta.stamp.node {
            flags |= OWN_DOT_ORIGIN;
        }
        if meta.content_type.is_some() {
            flags |= CONTENT_TYPE;
        }
        let mut header = smallvec::SmallVec::<[u8; 96]>::new();
        header.push(flags);
        header.extend_from_slice(&meta.stamp.hlc.as_u64().to_le_bytes());
        header.extend_from_slice(&meta.stamp.node.0.to_le_bytes());
        header.extend_from_slice(&meta.dot.seq.to_le_bytes());
        if let Some(at) = meta.expires_at_ms {
            header.extend_from_slice(&at.to_le_bytes());
        }
        if flags & OWN_EPOCH != 0 {
            header.extend_from_slice(&meta.epoch.hlc.as_u64().to_le_bytes());
            header.extend_from_slice(&meta.epoch.node.0.to_le_bytes());
        }
        if flags & OWN_DOT_ORIGIN != 0 {
            header.extend_from_slice(&meta.dot.origin.0.to_le_bytes());
        }
        let entries = meta.vv.entries();
        varint::put(&mut header, entries.len() as u64);
        for &(node, counter) in entries {
            header.extend_from_slice(&node.0.to_le_bytes());
            header.extend_from_slice(&counter.to_le_bytes());
        }
        if let Some(ct) = &meta.content_type {
            varint::put(&mut header, ct.len() as u64);
            header.extend_from_slice(ct.as_bytes());
        }
        let together = allocation_bytes(ARC_HEADER_BYTES + header.len() + value.len());
        let apart = SPLIT_ARC_BYTES + allocation_bytes(header.len()) + allocation_bytes(value.len());
        if apart < together {
            let split = SplitEntry { header: Box::from(&header[..]), value: Box::from(value) };
            return Entry(Stored::Other(Arc::new(Other::Split(split))));
        }
        // One allocation of exactly the packed length, filled by two
        // copies: header and value are put together on the stack first,
        // since collecting a chain of the two into an `Arc<[u8]>` copied
        // byte by byte (5 % of a node's time under SET). A larger value
        // is put together on the heap, which costs an allocation more and
        // still beats copying it a byte at a time.
        let mut whole = smallvec::SmallVec::<[u8; PACK_ON_STACK_BYTES]>::new();
        whole.reserve_exact(header.len() + value.len());
        whole.extend_from_slice(&header);
        whole.extend_from_slice(value);
        Entry(Stored::Packed(Arc::from(&whole[..])))
    }

    fn repr(&self) -> Repr<'_> {
        match &self.0 {
            Stored::Packed(b) => Repr::Packed(b),
            Stored::Other(other) => match &**other {
                Other::Split(split) => Repr::Split(other, split),
                Other::Shared(r) => Repr::Shared(r),
            },
        }
    }

    fn view(&self) -> View<'_> {
        match self.repr() {
            Repr::Packed(b) => View::Header(b),
            Repr::Split(_, split) => View::Header(&split.header),
            Repr::Shared(r) => View::Shared(r),
        }
    }

    /// The heap bytes this entry's own allocations take, rounded to the
    /// allocator's size classes (a document: its register's estimate).
    pub fn heap_bytes(&self) -> usize {
        match self.repr() {
            Repr::Packed(b) => allocation_bytes(ARC_HEADER_BYTES + b.len()),
            Repr::Split(_, split) => {
                SPLIT_ARC_BYTES + allocation_bytes(split.header.len()) + allocation_bytes(split.value.len())
            }
            Repr::Shared(r) => DOC_REGISTER_BYTES + r.size_bytes(),
        }
    }

    /// Where the parts of a header are; `bytes` is the header, and for a
    /// packed entry the value follows it.
    fn layout(bytes: &[u8]) -> Layout {
        let flags = bytes[0];
        let at = vv_count_at(flags);
        let (vv_count, n) = take_varint(&bytes[at..]);
        let vv_at = at + n;
        let mut at = vv_at + vv_count * 16;
        let content_type = if flags & CONTENT_TYPE != 0 {
            let (len, n) = take_varint(&bytes[at..]);
            let start = at + n;
            at = start + len;
            Some((start, at))
        } else {
            None
        };
        Layout { vv_count, vv_at, content_type, value_at: at }
    }

    /// The register packed, whole; the value shares the entry's memory.
    pub fn to_register(&self) -> Register {
        match self.repr() {
            Repr::Shared(r) => (**r).clone(),
            _ => Register { value: Value::Bytes(self.bytes_value()), meta: self.meta() },
        }
    }

    /// The register as an `Arc`: shared for a document, built for bytes.
    pub fn register_arc(&self) -> Arc<Register> {
        match self.repr() {
            Repr::Shared(r) => r.clone(),
            _ => Arc::new(self.to_register()),
        }
    }

    /// The register of a document or a counter (kept as it is, not
    /// packed).
    pub fn shared_register(&self) -> Option<&Register> {
        match self.repr() {
            Repr::Shared(r) => Some(r),
            _ => None,
        }
    }

    /// Every field of the register besides its value.
    pub fn meta(&self) -> RegisterMeta {
        match self.repr() {
            Repr::Packed(_) | Repr::Split(..) => RegisterMeta {
                stamp: self.stamp(),
                epoch: self.epoch(),
                vv: self.vv(),
                dot: self.dot(),
                expires_at_ms: self.expires_at_ms(),
                tombstone: self.is_tombstone(),
                content_type: self.content_type().map(str::to_owned),
            },
            Repr::Shared(r) => r.meta.clone(),
        }
    }

    /// The newest write merged into the value.
    pub fn stamp(&self) -> Stamp {
        match self.view() {
            View::Header(b) => {
                Stamp::new(Hlc::from_u64(u64_at(b, STAMP_HLC_AT)), NodeId(u64_at(b, STAMP_NODE_AT)))
            }
            View::Shared(r) => r.meta.stamp,
        }
    }

    /// The write that last replaced the value whole.
    pub fn epoch(&self) -> Stamp {
        match self.view() {
            View::Header(b) if b[0] & OWN_EPOCH != 0 => {
                let at = epoch_at(b[0]);
                Stamp::new(Hlc::from_u64(u64_at(b, at)), NodeId(u64_at(b, at + 8)))
            }
            View::Header(_) => self.stamp(),
            View::Shared(r) => r.meta.epoch,
        }
    }

    /// The write that produced the stamp.
    pub fn dot(&self) -> Dot {
        match self.view() {
            View::Header(b) => {
                let origin = if b[0] & OWN_DOT_ORIGIN != 0 {
                    NodeId(u64_at(b, dot_origin_at(b[0])))
                } else {
                    NodeId(u64_at(b, STAMP_NODE_AT))
                };
                Dot { origin, seq: u64_at(b, DOT_SEQ_AT) }
            }
            View::Shared(r) => r.meta.dot,
        }
    }

    /// The version vector (inline, no allocation, up to two writers).
    pub fn vv(&self) -> VersionVector {
        match self.view() {
            View::Header(b) => {
                let layout = Entry::layout(b);
                let entries = (0..layout.vv_count).map(|i| {
                    let at = layout.vv_at + i * 16;
                    (NodeId(u64_at(b, at)), u64_at(b, at + 8))
                });
                // Packed from a canonical vector, so it reads back as one.
                VersionVector::from_entries(entries).unwrap_or_default()
            }
            View::Shared(r) => r.meta.vv.clone(),
        }
    }

    /// When the entry expires, unix ms; `None` never.
    pub fn expires_at_ms(&self) -> Option<u64> {
        match self.view() {
            View::Header(b) => (b[0] & EXPIRES != 0).then(|| u64_at(b, EXPIRES_AT)),
            View::Shared(r) => r.meta.expires_at_ms,
        }
    }

    /// Whether the entry is a delete.
    pub fn is_tombstone(&self) -> bool {
        match self.view() {
            View::Header(b) => b[0] & TOMBSTONE != 0,
            View::Shared(r) => r.meta.tombstone,
        }
    }

    /// The media type the writer gave, if any.
    pub fn content_type(&self) -> Option<&str> {
        match self.view() {
            View::Header(b) => {
                let (start, end) = Entry::layout(b).content_type?;
                std::str::from_utf8(&b[start..end]).ok()
            }
            View::Shared(r) => r.meta.content_type.as_deref(),
        }
    }

    /// Unix ms from which reads miss: 0 for a delete, `u64::MAX` for an
    /// entry that never expires. Reads only the header's first bytes.
    pub fn visible_until_ms(&self) -> u64 {
        if self.is_tombstone() {
            return 0;
        }
        self.expires_at_ms().unwrap_or(u64::MAX)
    }

    /// Whether a read at `now_ms` sees a value: not deleted, not expired.
    pub fn is_visible_at(&self, now_ms: u64) -> bool {
        now_ms < self.visible_until_ms()
    }

    /// The value, borrowed.
    pub fn value(&self) -> ValueRef<'_> {
        match self.repr() {
            Repr::Packed(b) => ValueRef::Bytes(&b[Entry::layout(b).value_at..]),
            Repr::Split(_, split) => ValueRef::Bytes(&split.value),
            Repr::Shared(r) => match &r.value {
                Value::Bytes(bytes) => ValueRef::Bytes(bytes),
                Value::Doc(d) => ValueRef::Doc(d),
                Value::Counter(c) => ValueRef::Counter(c),
            },
        }
    }

    /// A bytes value as `Bytes` sharing the entry's memory (no copy); empty
    /// for a document.
    pub fn bytes_value(&self) -> Bytes {
        match self.repr() {
            Repr::Packed(b) => {
                let at = Entry::layout(b).value_at;
                Bytes::from_owner(PackedValue { packed: b.clone(), at })
            }
            Repr::Split(owner, _) => Bytes::from_owner(SplitValue(owner.clone())),
            Repr::Shared(r) => match &r.value {
                Value::Bytes(bytes) => bytes.clone(),
                Value::Doc(_) | Value::Counter(_) => Bytes::new(),
            },
        }
    }

    /// The live document, when the entry holds one.
    pub fn doc(&self) -> Option<&Doc> {
        self.shared_register().and_then(Register::doc)
    }

    /// The live counter, when the entry holds one.
    pub fn counter(&self) -> Option<&Counter> {
        self.shared_register().and_then(Register::counter)
    }

    /// The register's size for a reply or a queue: header and value, or a
    /// document's estimate.
    pub fn register_size_bytes(&self) -> usize {
        match self.repr() {
            Repr::Packed(b) => b.len(),
            Repr::Split(_, split) => split.header.len() + split.value.len(),
            Repr::Shared(r) => r.size_bytes(),
        }
    }
}

/// The value of a split entry, as the owner of a [`Bytes`].
struct SplitValue(Arc<Other>);

impl AsRef<[u8]> for SplitValue {
    fn as_ref(&self) -> &[u8] {
        match &*self.0 {
            Other::Split(split) => &split.value,
            Other::Shared(_) => &[],
        }
    }
}

/// The value part of a packed entry, as the owner of a [`Bytes`].
struct PackedValue {
    packed: Arc<[u8]>,
    at: usize,
}

impl AsRef<[u8]> for PackedValue {
    fn as_ref(&self) -> &[u8] {
        &self.packed[self.at..]
    }
}

/// Where the optional fields of a header with `flags` start, in the
/// order `pack` writes them: expiry (at [`EXPIRES_AT`]), epoch, dot
/// origin, then the version vector's count.
fn epoch_at(flags: u8) -> usize {
    EXPIRES_AT + if flags & EXPIRES != 0 { 8 } else { 0 }
}

fn dot_origin_at(flags: u8) -> usize {
    epoch_at(flags) + if flags & OWN_EPOCH != 0 { 16 } else { 0 }
}

fn vv_count_at(flags: u8) -> usize {
    dot_origin_at(flags) + if flags & OWN_DOT_ORIGIN != 0 { 8 } else { 0 }
}

/// A varint this module wrote, as a length, and the bytes it took.
fn take_varint(bytes: &[u8]) -> (usize, usize) {
    let (v, n) = varint::take(bytes).expect("packed entries hold only varints they wrote");
    (usize::try_from(v).unwrap_or(usize::MAX), n)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta_strategy() -> impl Strategy<Value = RegisterMeta> {
        (
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            proptest::collection::btree_map(any::<u64>(), 1..u64::MAX, 0..6),
            (any::<u64>(), any::<u64>(), proptest::option::of(any::<u64>()), any::<bool>()),
            (proptest::option::of("[ -~]{0,300}"), any::<bool>(), any::<bool>()),
        )
            .prop_map(
                |((h, n, eh, en), vv, (origin, seq, expires, tombstone), (ct, same_epoch, same_origin))| {
                    let stamp = Stamp::new(Hlc::from_u64(h), NodeId(n));
                    let epoch = if same_epoch { stamp } else { Stamp::new(Hlc::from_u64(eh), NodeId(en)) };
                    let origin = if same_origin { NodeId(n) } else { NodeId(origin) };
                    RegisterMeta {
                        stamp,
                        epoch,
                        vv: VersionVector::from_entries(vv.into_iter().map(|(k, v)| (NodeId(k), v))).unwrap(),
                        dot: Dot { origin, seq },
                        expires_at_ms: expires,
                        tombstone,
                        content_type: ct,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn packing_is_lossless(meta in meta_strategy(), value in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let register = Register { value: Value::Bytes(Bytes::from(value.clone())), meta: meta.clone() };
            let entry = Entry::from_register(Arc::new(register.clone()));
            prop_assert_eq!(entry.to_register(), register);
            prop_assert_eq!(entry.meta(), meta.clone());
            prop_assert_eq!(entry.stamp(), meta.stamp);
            prop_assert_eq!(entry.epoch(), meta.epoch);
            prop_assert_eq!(entry.dot(), meta.dot);
            prop_assert_eq!(entry.expires_at_ms(), meta.expires_at_ms);
            prop_assert_eq!(entry.content_type(), meta.content_type.as_deref());
            match entry.value() {
                ValueRef::Bytes(b) => prop_assert_eq!(b, &value[..]),
                ValueRef::Doc(_) | ValueRef::Counter(_) => prop_assert!(false, "bytes packed as a structure"),
            }
            prop_assert_eq!(&entry.bytes_value()[..], &value[..]);
        }
    }

    #[test]
    fn the_common_entry_has_the_minimal_header() {
        let stamp = Stamp::new(Hlc::new(1_000, 0), NodeId(7));
        let mut vv = VersionVector::new();
        vv.increment(NodeId(7));
        let meta = RegisterMeta {
            stamp,
            epoch: stamp,
            vv,
            dot: Dot { origin: NodeId(7), seq: 1 },
            expires_at_ms: None,
            tombstone: false,
            content_type: None,
        };
        let entry = Entry::pack(&meta, &[b'v'; 100]);
        assert_eq!(entry.register_size_bytes(), HEADER_BYTES_MIN + 16 + 100);
        assert!(matches!(entry.repr(), Repr::Packed(_)));
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        // 1 KiB packed would take a 1,280-byte class: the value goes apart.
        let kib = Entry::pack(&meta, &[b'v'; 1024]);
        assert!(matches!(kib.repr(), Repr::Split(..)));
        assert!(kib.heap_bytes() < allocation_bytes(16 + HEADER_BYTES_MIN + 16 + 1024));
        assert_eq!(kib.to_register().value, Value::Bytes(Bytes::from(vec![b'v'; 1024])));
    }
}
