//! How a strong key's versions live in the store: as ordinary registers,
//! replicated like any other, whose identity comes from the version the
//! acceptors chose rather than from the node that applied it.
//!
//! A chosen version `v` becomes the same register content at every node:
//! version vector `{STRONG_WRITER: v}` and stamp `(hlc, STRONG_WRITER)`,
//! where `hlc` is the version's own (above the one before it, see
//! `geocache_gossip::strong::StrongState`). So a later version dominates
//! an earlier one wherever they meet, whichever node applied which, and a
//! client's `cas` of a strong key is the version itself: what a strong
//! compare-and-set compares at the acceptors.

use bytes::Bytes;
use geocache_crdt::{Hlc, NodeId, VersionVector};

/// The writer every strong version is recorded under: no node's origin
/// (origins are never 0).
pub const STRONG_WRITER: NodeId = NodeId(0);

/// A version the acceptors chose, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChosenVersion {
    /// Changes chosen for the key so far (at least 1).
    pub version: u64,
    /// Its stamp.
    pub hlc: Hlc,
    /// The value; `None`: deleted.
    pub value: Option<Bytes>,
    /// When the value expires, unix ms.
    pub expires_at_ms: Option<u64>,
}

/// The version vector of strong version `version` (at least 1).
pub fn strong_vv(version: u64) -> VersionVector {
    // One entry, sorted, non-zero: canonical.
    VersionVector::from_entries([(STRONG_WRITER, version.max(1))]).unwrap_or_default()
}

/// The strong version a register's vector records, if it records one.
pub fn strong_version(vv: &VersionVector) -> Option<u64> {
    match vv.entries() {
        [(writer, version)] if *writer == STRONG_WRITER => Some(*version),
        _ => None,
    }
}

/// The `cas` the earlier `/api` shows for a version: a strong key's
/// version itself, any other key's token.
pub fn cas_of(vv: &VersionVector) -> u64 {
    strong_version(vv).unwrap_or_else(|| vv.cas_token())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_later_ones_dominate() {
        assert_eq!(strong_version(&strong_vv(7)), Some(7));
        assert_eq!(cas_of(&strong_vv(7)), 7);
        assert!(strong_vv(8).dominates(&strong_vv(7)));
        assert!(!strong_vv(7).dominates(&strong_vv(8)));
        let mut other = VersionVector::new();
        other.advance(NodeId(3), 5);
        assert_eq!(strong_version(&other), None);
        assert_eq!(cas_of(&other), other.cas_token());
    }
}
