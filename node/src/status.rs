//! What the status page shows: each node's own report ([`NodeStatus`],
//! `GET /v1/status?scope=node`) and the cluster assembled from the reports
//! of every node one node can reach ([`ClusterStatus`], `GET /v1/status`).
//!
//! A node measures only what arrives at it (the lag of other origins'
//! writes, the RTT to its peers, who it sees up), so the cluster view is
//! the reports put side by side: the lag from region A to region B is the
//! median of what B's nodes measured of A's writes. Reports travel over
//! HTTP, not the gossip links, so while two regions are cut from each
//! other both sides still report, and the page shows each side's view.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::replication_lag::{median, LagSummary};

/// One node's report of itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    /// The name in its certificate (its node id without replication).
    pub name: String,
    /// This life's origin id, hex.
    pub origin: String,
    /// Its region.
    pub region: String,
    /// `full` or `sidecar`.
    pub kind: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// The geocache version it runs.
    pub version: String,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Cumulative counts since it started; the page turns them into rates.
    pub counters: Counters,
    /// Entries held, tombstones included.
    pub entries: u64,
    /// Bytes held by the store's budget measure.
    pub memory_bytes: u64,
    /// `--max-memory`.
    pub max_memory_bytes: u64,
    /// The members it sees, as it sees them (down ones are not listed).
    pub members: Vec<MemberStatus>,
    /// Its settings as `(name, value)`, in the order shown.
    pub settings: Vec<(String, String)>,
}

/// Counts since a node started.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Writes made at this node (every front end).
    pub writes: u64,
    /// Other nodes' writes applied here.
    pub remote_applied: u64,
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Replicated writes concurrent with the value held.
    pub conflicts: u64,
    /// Entries evicted to stay within the budget.
    pub evictions: u64,
    /// Entries removed on expiry.
    pub expirations: u64,
}

/// A member as one node sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberStatus {
    /// The name in its certificate.
    pub name: String,
    /// Its region.
    pub region: String,
    /// `up`, `suspect` or `unconfirmed`.
    pub state: String,
    /// Its HTTP address, where its own report is asked for.
    pub http: SocketAddr,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Measured round trip, ms.
    pub rtt_ms: Option<u64>,
    /// How late its writes arrived at the observer over the last 10 s.
    pub lag: Option<LagSummary>,
    /// Its writes the observer has not applied, as last known.
    pub behind_writes: Option<u64>,
    /// How long ago the observer last heard from it directly, ms.
    pub heard_ms_ago: Option<u64>,
}

/// A member up in membership but not heard from directly for this long is
/// cut off from the observer: membership keeps it up while other nodes
/// vouch for it. In the idle six-node demo each peer was heard from at
/// least every ~4 s (anti-entropy and probes, which go round the members),
/// so 6 s flags no healthy link there; larger clusters get a second per
/// member ([`silent_limit_ms`]).
pub const LINK_SILENT_MS: u64 = 6_000;

/// The silence after which an observer with `members` members counts one
/// as cut: probes and anti-entropy reach one peer at a time, so the gap
/// between direct messages grows with the membership.
pub fn silent_limit_ms(members: usize) -> u64 {
    LINK_SILENT_MS.max(1_000 * members as u64)
}

impl MemberStatus {
    /// Whether the observer (with `members` members) sees it up and hears
    /// from it directly.
    pub fn reached(&self, members: usize) -> bool {
        self.state == "up" && self.heard_ms_ago.is_some_and(|ms| ms <= silent_limit_ms(members))
    }
}

/// The cluster as the reports of every reachable node show it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClusterStatus {
    /// The node that assembled this.
    pub served_by: String,
    /// Every node known, by region then name.
    pub nodes: Vec<NodeCard>,
    /// Every region with a known node, by name.
    pub regions: Vec<RegionCard>,
    /// One cell per ordered region pair `(from, to)`, same region included.
    pub links: Vec<LinkCell>,
    /// Whether every node reported, every node sees every other up, and no
    /// node is behind another's writes.
    pub converged: bool,
}

/// A node on the page.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NodeCard {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// As the serving node sees it: `self`, `up`, `suspect`,
    /// `unconfirmed` or `down` (remembered but no longer a member).
    pub state: String,
    /// How many other reporting nodes see it up and hear from it directly.
    pub seen_up_by: usize,
    /// How many other nodes reported.
    pub observers: usize,
    /// Its own report; `None` when it did not answer.
    pub report: Option<NodeStatus>,
    /// Per second since the serving node's previous view of it.
    pub rates: Option<Rates>,
}

/// Counts per second between two reports of a node.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Rates {
    /// Writes made at the node.
    pub writes: f64,
    /// Reads (hits and misses).
    pub reads: f64,
    /// Other nodes' writes applied.
    pub remote_applied: f64,
    /// Conflicts.
    pub conflicts: f64,
}

impl Rates {
    /// The rates from `before` to `after`, `seconds` apart; `None` for a
    /// counter that went back (the node restarted) or no time between.
    pub fn between(before: &Counters, after: &Counters, seconds: f64) -> Option<Rates> {
        if seconds <= 0.0 {
            return None;
        }
        let per_s = |a: u64, b: u64| b.checked_sub(a).map(|d| d as f64 / seconds);
        Some(Rates {
            writes: per_s(before.writes, after.writes)?,
            reads: per_s(before.hits + before.misses, after.hits + after.misses)?,
            remote_applied: per_s(before.remote_applied, after.remote_applied)?,
            conflicts: per_s(before.conflicts, after.conflicts)?,
        })
    }
}

/// A region on the page.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RegionCard {
    /// Its name.
    pub name: String,
    /// Where its first node is.
    pub lat: f64,
    /// Where its first node is.
    pub lon: f64,
    /// Its nodes known.
    pub nodes: usize,
    /// Of those, up as the serving node sees them (itself included).
    pub up: usize,
}

/// Replication from one region to another, as the receiving nodes measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LinkCell {
    /// The writing region.
    pub from: String,
    /// The receiving region.
    pub to: String,
    /// The median of the receivers' median lags, ms; `None` without writes
    /// in the last 10 s.
    pub lag_p50_ms: Option<u64>,
    /// The largest lag any receiver saw, ms.
    pub lag_max_ms: Option<u64>,
    /// Writes the figures come from.
    pub samples: usize,
    /// The median round trip measured, ms.
    pub rtt_ms: Option<u64>,
    /// `(observer, member)` pairs with the observer in `to` and the member
    /// in `from` where the observer sees the member up and hears from it
    /// directly ([`MemberStatus::reached`]).
    pub up: usize,
    /// All such pairs among the nodes that reported.
    pub pairs: usize,
    /// Writes of `from` not yet applied in `to`, summed.
    pub behind_writes: u64,
}

/// Assembles the cluster from the serving node's own report and the
/// reports it asked for: every node it remembers, with `None` for one
/// that did not answer. A node the serving node does not see as a member
/// shows as down.
pub fn assemble(own: &NodeStatus, fetched: &[(MemberStatus, Option<NodeStatus>)]) -> ClusterStatus {
    let mut cards: BTreeMap<(String, String), NodeCard> = BTreeMap::new();
    let card = |m: &MemberStatus, state: &str, report: Option<NodeStatus>| NodeCard {
        name: m.name.clone(),
        region: m.region.clone(),
        lat: m.lat,
        lon: m.lon,
        http: m.http,
        state: state.to_string(),
        seen_up_by: 0,
        observers: 0,
        report,
        rates: None,
    };
    cards.insert((own.region.clone(), own.name.clone()), card(&own.as_member(), "self", Some(own.clone())));
    let in_own_view: BTreeMap<&str, &MemberStatus> =
        own.members.iter().map(|m| (m.name.as_str(), m)).collect();
    for (member, report) in fetched {
        if member.name == own.name {
            continue;
        }
        let state = in_own_view.get(member.name.as_str()).map_or("down", |m| m.state.as_str());
        cards
            .entry((member.region.clone(), member.name.clone()))
            .or_insert_with(|| card(member, state, report.clone()));
    }

    let reports: Vec<&NodeStatus> = cards.values().filter_map(|c| c.report.as_ref()).collect();
    let region_of: BTreeMap<&str, &str> =
        cards.values().map(|c| (c.name.as_str(), c.region.as_str())).collect();
    // (observers, seen up by), card by card: set once the borrows end.
    let seen: Vec<(usize, usize)> = cards
        .values()
        .map(|c| {
            let others = reports.iter().filter(|r| r.name != c.name);
            let seen_up_by = others
                .clone()
                .filter(|r| r.members.iter().any(|m| m.name == c.name && m.reached(r.members.len())))
                .count();
            (others.count(), seen_up_by)
        })
        .collect();

    let mut regions: BTreeMap<String, RegionCard> = BTreeMap::new();
    for c in cards.values() {
        let r = regions.entry(c.region.clone()).or_insert_with(|| RegionCard {
            name: c.region.clone(),
            lat: c.lat,
            lon: c.lon,
            nodes: 0,
            up: 0,
        });
        r.nodes += 1;
        r.up += usize::from(c.state == "self" || c.state == "up");
    }

    let names: Vec<String> = regions.keys().cloned().collect();
    let mut links = Vec::new();
    for from in &names {
        for to in &names {
            links.push(link(from, to, &reports, &region_of));
        }
    }
    let converged =
        cards.values().zip(&seen).all(|(c, (observers, up))| c.report.is_some() && up == observers)
            && links.iter().all(|l| l.behind_writes == 0 && l.up == l.pairs);
    for (c, (observers, seen_up_by)) in cards.values_mut().zip(seen) {
        c.observers = observers;
        c.seen_up_by = seen_up_by;
    }
    ClusterStatus {
        served_by: own.name.clone(),
        nodes: cards.into_values().collect(),
        regions: regions.into_values().collect(),
        links,
        converged,
    }
}

fn link(from: &str, to: &str, reports: &[&NodeStatus], region_of: &BTreeMap<&str, &str>) -> LinkCell {
    let mut p50s = Vec::new();
    let mut rtts = Vec::new();
    let (mut max, mut samples, mut up, mut pairs, mut behind) = (None, 0, 0, 0, 0);
    let senders: BTreeSet<&str> = region_of.iter().filter(|(_, r)| **r == from).map(|(n, _)| *n).collect();
    for observer in reports.iter().filter(|r| r.region == to) {
        for sender in &senders {
            if *sender == observer.name {
                continue;
            }
            pairs += 1;
            let Some(m) = observer.members.iter().find(|m| m.name == *sender) else { continue };
            up += usize::from(m.reached(observer.members.len()));
            behind += m.behind_writes.unwrap_or(0);
            rtts.extend(m.rtt_ms);
            if let Some(lag) = m.lag {
                p50s.push(lag.p50_ms);
                max = max.max(Some(lag.max_ms));
                samples += lag.samples;
            }
        }
    }
    LinkCell {
        from: from.to_string(),
        to: to.to_string(),
        lag_p50_ms: median(&mut p50s),
        lag_max_ms: max,
        samples,
        rtt_ms: median(&mut rtts),
        up,
        pairs,
        behind_writes: behind,
    }
}

impl NodeStatus {
    /// This node as a member of its own view, for the card of the server.
    pub fn as_member(&self) -> MemberStatus {
        MemberStatus {
            name: self.name.clone(),
            region: self.region.clone(),
            state: "up".into(),
            http: self.http,
            lat: self.lat,
            lon: self.lon,
            rtt_ms: None,
            lag: None,
            behind_writes: None,
            heard_ms_ago: Some(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, region: &str, state: &str, lag: Option<u64>) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            region: region.into(),
            state: state.into(),
            http: "127.0.0.1:7070".parse().unwrap(),
            lat: 0.0,
            lon: 0.0,
            rtt_ms: Some(10),
            lag: lag.map(|l| LagSummary { p50_ms: l, max_ms: l + 5, samples: 3 }),
            behind_writes: Some(0),
            heard_ms_ago: Some(100),
        }
    }

    fn report(name: &str, region: &str, members: Vec<MemberStatus>) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            origin: "1".into(),
            region: region.into(),
            kind: "full".into(),
            lat: 0.0,
            lon: 0.0,
            http: "127.0.0.1:7070".parse().unwrap(),
            version: "0".into(),
            uptime_s: 1,
            counters: Counters::default(),
            entries: 0,
            memory_bytes: 0,
            max_memory_bytes: 1,
            members,
            settings: Vec::new(),
        }
    }

    #[test]
    fn the_lag_from_a_to_b_is_what_b_measured_of_a() {
        let a1 = report("a1", "a", vec![member("b1", "b", "up", Some(40))]);
        let b1 = report("b1", "b", vec![member("a1", "a", "up", Some(44))]);
        let status = assemble(&a1, &[(member("b1", "b", "up", None), Some(b1))]);
        let cell = |from: &str, to: &str| {
            status.links.iter().find(|l| l.from == from && l.to == to).unwrap().clone()
        };
        assert_eq!(cell("a", "b").lag_p50_ms, Some(44));
        assert_eq!(cell("b", "a").lag_p50_ms, Some(40));
        assert_eq!(cell("a", "b").lag_max_ms, Some(49));
        assert_eq!(cell("a", "a").pairs, 0);
        assert!(status.converged);
        assert_eq!(status.regions.len(), 2);
    }

    #[test]
    fn a_cut_shows_from_both_sides_and_is_not_converged() {
        // a1 and b1 no longer see each other; c1 sees both.
        let a1 = report("a1", "a", vec![member("c1", "c", "up", None)]);
        let b1 = report("b1", "b", vec![member("c1", "c", "up", None)]);
        let c1 = report("c1", "c", vec![member("a1", "a", "up", None), member("b1", "b", "up", None)]);
        let fetched = [(member("c1", "c", "up", None), Some(c1)), (member("b1", "b", "up", None), Some(b1))];
        let status = assemble(&a1, &fetched);
        let b = status.nodes.iter().find(|n| n.name == "b1").unwrap();
        assert_eq!(b.state, "down", "the server does not see b1");
        assert_eq!((b.seen_up_by, b.observers), (1, 2), "c1 sees it, a1 does not");
        let cut = status.links.iter().find(|l| l.from == "a" && l.to == "b").unwrap();
        assert_eq!((cut.up, cut.pairs), (0, 1));
        assert!(!status.converged);
    }

    #[test]
    fn a_member_up_but_silent_is_cut_off() {
        let mut silent = member("b1", "b", "up", None);
        silent.heard_ms_ago = Some(LINK_SILENT_MS + 1);
        let a1 = report("a1", "a", vec![silent]);
        let b1 = report("b1", "b", vec![member("a1", "a", "up", None)]);
        let status = assemble(&a1, &[(member("b1", "b", "up", None), Some(b1))]);
        let cut = status.links.iter().find(|l| l.from == "b" && l.to == "a").unwrap();
        assert_eq!((cut.up, cut.pairs), (0, 1));
        assert!(!status.converged);
    }

    #[test]
    fn a_remembered_node_that_no_one_lists_is_down_without_a_report() {
        let a1 = report("a1", "a", vec![]);
        let status = assemble(&a1, &[(member("b1", "b", "up", None), None)]);
        let b = status.nodes.iter().find(|n| n.name == "b1").unwrap();
        assert_eq!(b.state, "down");
        assert!(b.report.is_none());
        assert_eq!(
            status.regions.iter().map(|r| (r.name.as_str(), r.up)).collect::<Vec<_>>(),
            [("a", 1), ("b", 0)]
        );
        assert!(!status.converged);
    }
}
