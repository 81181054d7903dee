use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use thiserror::Error;

/// The most entries a decoded version vector may hold: one per node that
/// ever wrote the key, so far above any real cluster, and a bound on what
/// untrusted input can make us allocate.
pub const ENTRIES_MAX_COUNT: usize = 4_096;

/// The most writers a vector keeps: past this, the entries with the
/// lowest counters go (ties: the lowest node id). A key written by every
/// node of a 200-node cluster would otherwise carry 200 entries in every
/// copy and every delta (3.2 KB; issue 15). Keeping the highest is a
/// deterministic function of the joined entries, so join stays a
/// semilattice and replicas still converge; what it costs is that a vector
/// may not dominate an older one whose writer it dropped, so such writes
/// look concurrent (counted as conflicts, merged by stamp as always),
/// never the other way round. Counters are the writer's clock at its
/// write ([`advance`](VersionVector::advance)), so the entries kept are
/// the most recent writers, the newest write always among them.
pub const WRITERS_KEPT: usize = 8;

const ETAG_PREFIX: &str = "1-";
/// A vector's entries, sorted by node id.
type Entries = smallvec::SmallVec<[(NodeId, u64); 2]>;
/// The largest [`VersionVector::cas_token`]: 2^53 - 1, the largest integer a
/// JavaScript number holds exactly.
pub const CAS_TOKEN_MAX: u64 = (1 << 53) - 1;

/// Per-node counters, each the writer's clock at its last write of the
/// key: which writes a register has seen, the [`WRITERS_KEPT`] most recent
/// writers of it.
///
/// Kept as a small vector sorted by node id with no zero counters, so that
/// equal vectors have equal encodings (the ETag depends on it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<(NodeId, u64)>", into = "Vec<(NodeId, u64)>")]
pub struct VersionVector {
    /// Inline up to two writers: most keys are written by one or two nodes,
    /// and a heap vector here cost 80 bytes per entry of a full store
    /// (heaptrack; docs/BENCHMARKS.md).
    entries: Entries,
}

/// A version vector's encoding or ETag was not valid. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EtagError {
    /// The ETag does not start with the version prefix this build writes.
    #[error("not a geocache ETag (expected a value starting with \"{ETAG_PREFIX}\")")]
    UnknownVersion,
    /// The ETag holds a character that is not a lowercase hex digit, or an
    /// odd number of them.
    #[error("malformed ETag: not an even run of lowercase hex digits")]
    NotHex,
    /// The bytes end in the middle of a number.
    #[error("malformed version vector: truncated")]
    Truncated,
    /// A number does not fit 64 bits or is not minimally encoded.
    #[error("malformed version vector: bad varint")]
    BadVarint,
    /// More entries than [`ENTRIES_MAX_COUNT`].
    #[error("version vector has too many entries ({0})")]
    TooManyEntries(u64),
    /// Node ids are not strictly increasing, or a counter is zero.
    #[error("version vector is not canonical (unsorted, duplicate or zero entries)")]
    NotCanonical,
    /// Bytes follow the last entry.
    #[error("malformed version vector: trailing bytes")]
    TrailingBytes,
}

impl VersionVector {
    /// The empty vector: no write seen.
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// The counter of `node`, 0 when absent.
    pub fn get(&self, node: NodeId) -> u64 {
        match self.entries.binary_search_by_key(&node, |(n, _)| *n) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// The entries, sorted by node id.
    pub fn entries(&self) -> &[(NodeId, u64)] {
        &self.entries
    }

    /// Counts one more write by `node` and returns its new counter.
    pub fn increment(&mut self, node: NodeId) -> u64 {
        let next = self.get(node).saturating_add(1);
        self.set(node, next);
        next
    }

    /// Records a write by `node` at its clock reading `clock` (an
    /// `Hlc::as_u64`): the counter becomes `clock`, or one more than the
    /// highest counter held if that is larger, so it rises with every write
    /// and the write is always among the [`WRITERS_KEPT`] entries kept.
    /// Returns the new counter. Counters that are times make the entries
    /// kept the most recent writers.
    pub fn advance(&mut self, node: NodeId, clock: u64) -> u64 {
        let highest = self.entries.iter().map(|&(_, c)| c).max().unwrap_or(0);
        let next = clock.max(highest.saturating_add(1));
        self.set(node, next);
        next
    }

    fn set(&mut self, node: NodeId, counter: u64) {
        match self.entries.binary_search_by_key(&node, |(n, _)| *n) {
            Ok(i) => self.entries[i].1 = counter,
            Err(i) => self.entries.insert(i, (node, counter)),
        }
        self.prune();
    }

    /// Keeps the [`WRITERS_KEPT`] entries with the highest
    /// `(counter, node)`, in node order.
    fn prune(&mut self) {
        if self.entries.len() <= WRITERS_KEPT {
            return;
        }
        let mut ranked: Vec<(u64, NodeId)> = self.entries.iter().map(|&(n, c)| (c, n)).collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let lowest_kept = ranked[WRITERS_KEPT - 1];
        self.entries.retain(|&mut (n, c)| (c, n) >= lowest_kept);
    }

    /// The least vector that dominates both.
    pub fn join(&self, other: &VersionVector) -> VersionVector {
        let mut entries = Entries::with_capacity(self.entries.len().max(other.entries.len()));
        let (mut a, mut b) = (self.entries.iter().peekable(), other.entries.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(na, ca)), Some(&&(nb, cb))) => match na.cmp(&nb) {
                    Ordering::Less => {
                        entries.push((na, ca));
                        a.next();
                    }
                    Ordering::Greater => {
                        entries.push((nb, cb));
                        b.next();
                    }
                    Ordering::Equal => {
                        entries.push((na, ca.max(cb)));
                        a.next();
                        b.next();
                    }
                },
                (Some(&&e), None) => {
                    entries.push(e);
                    a.next();
                }
                (None, Some(&&e)) => {
                    entries.push(e);
                    b.next();
                }
                (None, None) => break,
            }
        }
        let mut joined = VersionVector { entries };
        joined.prune();
        joined
    }

    /// Whether `self` has seen every write `other` has seen (`self >= other`).
    pub fn dominates(&self, other: &VersionVector) -> bool {
        // Both sorted: walk `other` and find each of its nodes in `self`.
        let mut mine = self.entries.iter().peekable();
        'theirs: for &(node, count) in &other.entries {
            while let Some(&&(n, c)) = mine.peek() {
                match n.cmp(&node) {
                    Ordering::Less => {
                        mine.next();
                    }
                    Ordering::Equal => {
                        if c < count {
                            return false;
                        }
                        continue 'theirs;
                    }
                    Ordering::Greater => return false,
                }
            }
            return false;
        }
        true
    }

    /// Whether each has seen a write the other has not.
    pub fn concurrent(&self, other: &VersionVector) -> bool {
        !self.dominates(other) && !other.dominates(self)
    }

    /// Appends the compact encoding: the entry count, then node id and
    /// counter of each entry, all as LEB128 varints.
    pub fn encode_compact(&self, out: &mut Vec<u8>) {
        put_varint(out, self.entries.len() as u64);
        for &(node, count) in &self.entries {
            put_varint(out, node.0);
            put_varint(out, count);
        }
    }

    /// Reads a vector written by [`encode_compact`](Self::encode_compact);
    /// the input must hold exactly one vector.
    ///
    /// # Errors
    ///
    /// An [`EtagError`] naming what is wrong; garbage never panics.
    pub fn decode_compact(bytes: &[u8]) -> Result<VersionVector, EtagError> {
        let mut rest = bytes;
        let count = take_varint(&mut rest)?;
        if count > ENTRIES_MAX_COUNT as u64 {
            return Err(EtagError::TooManyEntries(count));
        }
        let mut entries = Entries::with_capacity(count as usize);
        for _ in 0..count {
            let node = NodeId(take_varint(&mut rest)?);
            let counter = take_varint(&mut rest)?;
            entries.push((node, counter));
        }
        if !rest.is_empty() {
            return Err(EtagError::TrailingBytes);
        }
        VersionVector::checked(entries)
    }

    /// The ETag form: a version prefix and the compact encoding in hex.
    /// Equal vectors give equal ETags, on every node and every build that
    /// writes the same prefix.
    pub fn to_etag(&self) -> String {
        let mut bytes = Vec::with_capacity(1 + self.entries.len() * 12);
        self.encode_compact(&mut bytes);
        let mut etag = String::with_capacity(ETAG_PREFIX.len() + bytes.len() * 2);
        etag.push_str(ETAG_PREFIX);
        for b in bytes {
            etag.push(char::from(HEX[usize::from(b >> 4)]));
            etag.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        etag
    }

    /// The version as one integer below 2^53 (exact in a JavaScript number),
    /// never 0: the `cas` of the earlier `/api` HTTP interface. A 53-bit
    /// FNV-1a digest of the compact encoding, so every node and build
    /// computes the same token for the same version; two versions of one key
    /// share a token with probability 2^-53.
    pub fn cas_token(&self) -> u64 {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut bytes = Vec::with_capacity(1 + self.entries.len() * 12);
        self.encode_compact(&mut bytes);
        let digest = bytes.iter().fold(FNV_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME));
        // Fold the high bits in rather than dropping them.
        let token = (digest ^ (digest >> 53)) & CAS_TOKEN_MAX;
        token.max(1)
    }

    /// Parses the ETag form (without HTTP's surrounding quotes).
    ///
    /// # Errors
    ///
    /// An [`EtagError`] for anything [`to_etag`](Self::to_etag) would not
    /// have written.
    pub fn parse_etag(etag: &str) -> Result<VersionVector, EtagError> {
        let hex = etag.strip_prefix(ETAG_PREFIX).ok_or(EtagError::UnknownVersion)?;
        if hex.len() % 2 != 0 || hex.len() > 2 * (10 + ENTRIES_MAX_COUNT * 20) {
            return Err(EtagError::NotHex);
        }
        let digits = hex.as_bytes();
        let mut bytes = Vec::with_capacity(digits.len() / 2);
        for pair in digits.chunks_exact(2) {
            bytes.push((hex_digit(pair[0])? << 4) | hex_digit(pair[1])?);
        }
        VersionVector::decode_compact(&bytes)
    }
}

impl PartialOrd for VersionVector {
    /// The causal partial order: `None` when concurrent.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self.dominates(other), other.dominates(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }
}

impl TryFrom<Vec<(NodeId, u64)>> for VersionVector {
    type Error = EtagError;

    fn try_from(entries: Vec<(NodeId, u64)>) -> Result<Self, Self::Error> {
        VersionVector::checked(Entries::from_vec(entries))
    }
}

impl VersionVector {
    /// A vector of these entries (sorted by node id, no zero counters), as
    /// a store that packed [`entries`](Self::entries) reads them back;
    /// inline, without a heap allocation, up to two entries.
    ///
    /// Unlike decoding, the count is not capped at [`ENTRIES_MAX_COUNT`]:
    /// these are entries a vector held, and it may have grown past that by
    /// joins, which must not lose a writer.
    ///
    /// # Errors
    ///
    /// [`EtagError::NotCanonical`] when they are unsorted, repeated or zero.
    pub fn from_entries(
        entries: impl IntoIterator<Item = (NodeId, u64)>,
    ) -> Result<VersionVector, EtagError> {
        let entries: Entries = entries.into_iter().collect();
        let sorted = entries.windows(2).all(|w| w[0].0 < w[1].0);
        if !sorted || entries.iter().any(|&(_, c)| c == 0) {
            return Err(EtagError::NotCanonical);
        }
        Ok(VersionVector { entries })
    }

    /// A vector of these entries if they are canonical.
    fn checked(entries: Entries) -> Result<VersionVector, EtagError> {
        if entries.len() > ENTRIES_MAX_COUNT {
            return Err(EtagError::TooManyEntries(entries.len() as u64));
        }
        VersionVector::from_entries(entries)
    }
}

impl From<VersionVector> for Vec<(NodeId, u64)> {
    fn from(vv: VersionVector) -> Self {
        vv.entries.into_vec()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_digit(c: u8) -> Result<u8, EtagError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(EtagError::NotHex),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(rest: &mut &[u8]) -> Result<u64, EtagError> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, tail) = rest.split_first().ok_or(EtagError::Truncated)?;
        *rest = tail;
        let payload = u64::from(b & 0x7f);
        if i == 9 && payload > 1 {
            return Err(EtagError::BadVarint);
        }
        value |= payload << (7 * i);
        if b & 0x80 == 0 {
            // A zero final byte after the first is an overlong encoding:
            // refuse it so that every vector has exactly one encoding.
            if i > 0 && b == 0 {
                return Err(EtagError::BadVarint);
            }
            return Ok(value);
        }
    }
    Err(EtagError::BadVarint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(entries: &[(u64, u64)]) -> VersionVector {
        VersionVector::try_from(entries.iter().map(|&(n, c)| (NodeId(n), c)).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn etag_round_trips_and_is_stable() {
        let v = vv(&[(1, 3), (300, 1), (u64::MAX, u64::MAX)]);
        let etag = v.to_etag();
        assert_eq!(VersionVector::parse_etag(&etag).unwrap(), v);
        assert_eq!(VersionVector::new().to_etag(), "1-00");
        assert_eq!(vv(&[(1, 2)]).to_etag(), "1-010102");
    }

    #[test]
    fn cas_tokens_are_stable_in_range_and_tell_versions_apart() {
        // Pinned: a token handed out by one build must match on the next.
        assert_eq!(vv(&[(1, 2)]).cas_token(), vv(&[(1, 2)]).cas_token());
        let pinned = vv(&[(1, 2)]).cas_token();
        assert_eq!(pinned, 0x6_fb18_672a_164a, "token changed: {pinned:#x}");
        let mut seen = std::collections::BTreeSet::new();
        for n in 1..200u64 {
            for c in 1..50u64 {
                let t = vv(&[(n, c), (n + 1_000, c / 2 + 1)]).cas_token();
                assert!((1..=CAS_TOKEN_MAX).contains(&t));
                assert!(seen.insert(t), "collision at {n} {c}");
            }
        }
    }

    #[test]
    fn parse_etag_rejects_garbage_with_a_typed_error() {
        use EtagError::*;
        let cases: &[(&str, EtagError)] = &[
            ("", UnknownVersion),
            ("2-00", UnknownVersion),
            ("1-0", NotHex),
            ("1-zz", NotHex),
            ("1-0A", NotHex),
            ("1-", Truncated),
            ("1-01", Truncated),
            ("1-0001", TrailingBytes),
            ("1-0201010101", NotCanonical),
            ("1-010100", NotCanonical),
            ("1-8000", BadVarint),
            ("1-ffffffffffffffffffff01", BadVarint),
            ("1-ffff03", TooManyEntries(65_535)),
        ];
        for (input, expected) in cases {
            assert_eq!(&VersionVector::parse_etag(input).unwrap_err(), expected, "{input}");
        }
    }

    #[test]
    fn dominance_and_concurrency() {
        let a = vv(&[(1, 2), (2, 1)]);
        let b = vv(&[(1, 1)]);
        let c = vv(&[(3, 1)]);
        assert!(a.dominates(&b) && !b.dominates(&a));
        assert!(a.concurrent(&c));
        assert_eq!(a.join(&c), vv(&[(1, 2), (2, 1), (3, 1)]));
        assert!(VersionVector::new() < a);
    }
}
