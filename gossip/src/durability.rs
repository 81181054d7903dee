//! How far a write must travel before it is acknowledged, and which level
//! each waiting write has reached.
//!
//! The level is decided here, from the acks the replicator gathered and the
//! regions membership has shown, so every driver (the node, the simulator)
//! answers the same. A region counts once a member of it has been seen, and
//! keeps counting while its members are down: `all` with a region
//! unreachable is not reached, and the caller's time-out says so.

use geocache_crdt::NodeId;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// How far a write must have travelled before it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Applied here (the default).
    Local,
    /// Applied here and flushed to this node's disk (`--data-dir`). The
    /// node decides it; the core never reports it, and `region` and `all`
    /// include it on a node with a data dir.
    Disk,
    /// Applied by another node of this region too.
    Region,
    /// Applied by a node in every region of the cluster.
    All,
}

impl Durability {
    /// Parses `local`, `disk`, `region` or `all`.
    pub fn parse(s: &str) -> Option<Durability> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Some(Durability::Local),
            "disk" => Some(Durability::Disk),
            "region" => Some(Durability::Region),
            "all" => Some(Durability::All),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Local => "local",
            Durability::Disk => "disk",
            Durability::Region => "region",
            Durability::All => "all",
        }
    }
}

/// What a durability decision needs to know of the cluster.
pub struct ClusterShape<'a> {
    /// This node's region.
    pub own_region: &'a str,
    /// Every other region a member was seen in (live or not).
    pub other_regions: &'a BTreeSet<String>,
    /// Whether this node's region has another live member.
    pub region_has_peer: bool,
    /// Whether this node expects a cluster (it was given seeds) but has
    /// not seen one member yet: then no level above `local` is reached.
    pub alone_by_mistake: bool,
}

/// The level write acked by `ackers` (with their regions) has reached.
pub fn reached(shape: &ClusterShape<'_>, ackers: &BTreeMap<NodeId, String>) -> Durability {
    if shape.alone_by_mistake {
        return Durability::Local;
    }
    let region = ackers.values().any(|r| r == shape.own_region);
    let every_region = shape.other_regions.iter().all(|r| ackers.values().any(|a| a == r));
    // `all` asks for every region, this one included when it has another
    // live node; a region of one node is covered by the write itself.
    let all = every_region && (region || !shape.region_has_peer);
    match (all, region) {
        (true, _) => Durability::All,
        (false, true) => Durability::Region,
        (false, false) => Durability::Local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(list: &[(u64, &str)]) -> BTreeMap<NodeId, String> {
        list.iter().map(|(n, r)| (NodeId(*n), (*r).to_string())).collect()
    }

    #[test]
    fn all_needs_every_region_seen_even_when_it_is_down() {
        let others: BTreeSet<String> = ["eu".to_string(), "sa".to_string()].into();
        let shape = ClusterShape {
            own_region: "na",
            other_regions: &others,
            region_has_peer: true,
            alone_by_mistake: false,
        };
        assert_eq!(reached(&shape, &acks(&[])), Durability::Local);
        assert_eq!(reached(&shape, &acks(&[(2, "na")])), Durability::Region);
        assert_eq!(reached(&shape, &acks(&[(2, "na"), (3, "eu")])), Durability::Region);
        assert_eq!(reached(&shape, &acks(&[(2, "na"), (3, "eu"), (4, "sa")])), Durability::All);
        let single = ClusterShape { region_has_peer: false, ..shape };
        assert_eq!(reached(&single, &acks(&[(3, "eu"), (4, "sa")])), Durability::All);
    }

    #[test]
    fn a_node_that_found_no_cluster_reaches_only_local() {
        let none = BTreeSet::new();
        let lost = ClusterShape {
            own_region: "na",
            other_regions: &none,
            region_has_peer: false,
            alone_by_mistake: true,
        };
        assert_eq!(reached(&lost, &acks(&[])), Durability::Local);
        let standalone = ClusterShape { alone_by_mistake: false, ..lost };
        assert_eq!(
            reached(&standalone, &acks(&[])),
            Durability::All,
            "a cluster of one: every region has it"
        );
    }
}
