//! Who each origin is: the certificate name it belongs to and the gossip
//! address it was seen at, so that a node with a valid cluster certificate
//! can speak only for itself.
//!
//! The transport proves, for every datagram and frame, the certificate of
//! the connection it came on and the address it came from: a [`Link`].
//! Membership datagrams name their sender; replication messages name the
//! origin they speak for. The rules:
//!
//! - a datagram's sender must be the link's own name, region (when the
//!   certificate carries one) and address;
//! - an origin, once bound, stays bound to what that life said of itself
//!   (name, region, position, gossip and HTTP addresses): an origin id is
//!   one life of one node, so a later claim of it with any of these changed
//!   is an impersonation (only the incarnation moves, on a rejoin). A
//!   binding seen first from a third party (gossip about another member)
//!   is tentative; the first datagram from the origin itself confirms or
//!   replaces it;
//! - a replication message is taken only from the link of the origin it
//!   names;
//! - members whose binding no datagram of their own has confirmed are not
//!   offered to clients (`/v1/closest`, `databaseHost`).
//!
//! Every refusal is counted in [`Refusals`].

use foldhash::fast::FixedState;
use geocache_crdt::NodeId;
use std::collections::HashMap;
use std::net::SocketAddr;

use crate::peer::Peer;

/// Who sent a datagram or frame, as the transport proved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The name in the connection's certificate.
    pub name: String,
    /// The region in the certificate, when it carries one.
    pub region: Option<String>,
    /// The address the connection comes from: the peer's gossip address.
    pub addr: SocketAddr,
}

impl Link {
    /// The link a node with this identity would come on (the simulator's,
    /// and tests').
    pub fn of(peer: &Peer) -> Link {
        Link { name: peer.name.clone(), region: Some(peer.region.clone()), addr: peer.gossip }
    }
}

/// Input refused because it spoke for someone else, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Datagrams whose sender is not the link's name, region or address.
    pub impersonations: u64,
    /// Claims of an origin bound to another name or address (in a
    /// datagram, or a member gossiped by a third party).
    pub origin_conflicts: u64,
    /// Replication messages naming an origin that is not the link's.
    pub foreign_messages: u64,
    /// Full-transfer watermarks refused: for this node's own origin, or
    /// beyond any plausible sequence number.
    pub watermark_claims: u64,
    /// Origins not bound because [`IDENTITY_COUNT_MAX`] are, or
    /// [`ORIGINS_PER_NAME_MAX`] under that name.
    pub identities_full: u64,
    /// Membership datagrams naming members past
    /// [`crate::membership::MEMBER_COUNT_MAX`].
    pub members_full: u64,
}

impl Refusals {
    /// Each count under the name metrics and `/v1/cluster` give it.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            ("impersonation", self.impersonations),
            ("origin_conflict", self.origin_conflicts),
            ("foreign_message", self.foreign_messages),
            ("watermark_claim", self.watermark_claims),
            ("identities_full", self.identities_full),
            ("members_full", self.members_full),
        ]
    }

    /// Every refusal.
    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, n)| n).sum()
    }
}

/// Most origins bound at once: members and recent lives, pruned with the
/// origins themselves.
pub const IDENTITY_COUNT_MAX: usize = 65_536;

/// Most origins bound to one certificate name: every life a node can have
/// within the origin retention (a restart a minute for an hour is 60), so
/// one peer cannot fill the table with invented origins.
pub const ORIGINS_PER_NAME_MAX: usize = 256;

#[derive(Clone, Debug)]
struct Bound {
    /// What the life said of itself (or a third party, until confirmed);
    /// for a binding made from a replication message, only the name and
    /// address are known, and the first membership record fills the rest.
    peer: Option<Peer>,
    name: String,
    gossip: SocketAddr,
    /// Seen on its own link.
    confirmed: bool,
}

impl Bound {
    fn of(peer: &Peer, confirmed: bool) -> Bound {
        Bound { peer: Some(peer.clone()), name: peer.name.clone(), gossip: peer.gossip, confirmed }
    }

    /// Whether `peer` is the same life as bound: every field but the
    /// incarnation.
    fn agrees_with(&self, peer: &Peer) -> bool {
        let same_place = self.name == peer.name && self.gossip == peer.gossip;
        same_place
            && self.peer.as_ref().is_none_or(|b| {
                b.region == peer.region
                    && b.http == peer.http
                    && b.lat.to_bits() == peer.lat.to_bits()
                    && b.lon.to_bits() == peer.lon.to_bits()
            })
    }
}

/// What a datagram's sender did to the bindings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramSender {
    /// Refused: it spoke in another node's name.
    Refused,
    /// Taken; the binding stands as it was, or is new.
    Accepted,
    /// Taken, and it replaced what a third party had said of it: members
    /// built on that word must take the origin's own.
    Corrected,
}

/// The bindings and the refusals.
#[derive(Debug, Default)]
pub struct Identities {
    /// Hashed: every replication message looks its sender up here.
    bound: HashMap<NodeId, Bound, FixedState>,
    refusals: Refusals,
}

impl Identities {
    /// No origin bound yet.
    pub fn new() -> Identities {
        Identities::default()
    }

    /// The refusals so far.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Counts a membership datagram refused for the member list's bound
    /// (membership judges those).
    pub fn refuse_members_full(&mut self) {
        self.refusals.members_full += 1;
    }

    /// Counts a refused watermark claim (the core judges those).
    pub fn refuse_watermark_claim(&mut self) {
        self.refusals.watermark_claims += 1;
    }

    /// Counts an answer that named another sender than the node asked.
    pub fn refuse_foreign_answer(&mut self) {
        self.refusals.foreign_messages += 1;
    }

    /// A datagram on `link` whose sender is `src`.
    pub fn accept_datagram(&mut self, link: &Link, src: &Peer) -> DatagramSender {
        let region_ok = link.region.as_ref().is_none_or(|r| *r == src.region);
        if src.name != link.name || !region_ok || src.gossip != link.addr {
            self.refusals.impersonations += 1;
            return DatagramSender::Refused;
        }
        if !self.bound.contains_key(&src.node) {
            return if self.bind(src, true) { DatagramSender::Accepted } else { DatagramSender::Refused };
        }
        match self.bound.get_mut(&src.node) {
            Some(b) if b.confirmed && b.peer.is_some() && !b.agrees_with(src) => {
                self.refusals.origin_conflicts += 1;
                DatagramSender::Refused
            }
            Some(b) if b.confirmed && b.name != src.name => {
                self.refusals.origin_conflicts += 1;
                DatagramSender::Refused
            }
            Some(b) => {
                // Its own datagram outranks what a third party said of it.
                let corrected = b.peer.is_some() && !b.agrees_with(src);
                *b = Bound::of(src, true);
                if corrected {
                    DatagramSender::Corrected
                } else {
                    DatagramSender::Accepted
                }
            }
            None => DatagramSender::Refused,
        }
    }

    /// A member membership reports up (possibly on a third party's word):
    /// whether it agrees with what is bound.
    pub fn accept_member(&mut self, peer: &Peer) -> bool {
        match self.bound.get_mut(&peer.node) {
            Some(b) if !b.agrees_with(peer) => {
                self.refusals.origin_conflicts += 1;
                false
            }
            Some(b) => {
                if b.peer.is_none() {
                    b.peer = Some(peer.clone());
                }
                true
            }
            None => self.bind(peer, false),
        }
    }

    /// What the origin itself said it is, once confirmed.
    pub fn confirmed_peer(&self, node: NodeId) -> Option<&Peer> {
        self.bound.get(&node).filter(|b| b.confirmed).and_then(|b| b.peer.as_ref())
    }

    /// A replication message on `link` that names origin `from`. An
    /// origin not bound yet (its first datagram is still on its way) is
    /// bound to the link: the link proves who sent it, and a fresh origin
    /// id cannot be foreseen, so no one can take another node's this way.
    pub fn accept_message(&mut self, link: &Link, from: NodeId) -> bool {
        let ok = match self.bound.get_mut(&from) {
            Some(b) if b.confirmed => b.gossip == link.addr && b.name == link.name,
            Some(b) => {
                // A replication message proves name and address only.
                *b = Bound { peer: None, name: link.name.clone(), gossip: link.addr, confirmed: true };
                true
            }
            None => {
                if !self.has_room(&link.name) {
                    self.refusals.identities_full += 1;
                    return false;
                }
                let bound = Bound { peer: None, name: link.name.clone(), gossip: link.addr, confirmed: true };
                self.bound.insert(from, bound);
                true
            }
        };
        if !ok {
            self.refusals.foreign_messages += 1;
        }
        ok
    }

    /// Whether `node` has spoken for itself.
    pub fn is_confirmed(&self, node: NodeId) -> bool {
        self.bound.get(&node).is_some_and(|b| b.confirmed)
    }

    /// Forgets an origin gone for good (pruned).
    pub fn forget(&mut self, node: NodeId) {
        self.bound.remove(&node);
    }

    /// Room for one more origin, and for one more under `name`.
    fn has_room(&self, name: &str) -> bool {
        self.bound.len() < IDENTITY_COUNT_MAX
            && self.bound.values().filter(|b| b.name == name).count() < ORIGINS_PER_NAME_MAX
    }

    fn bind(&mut self, peer: &Peer, confirmed: bool) -> bool {
        if !self.has_room(&peer.name) {
            self.refusals.identities_full += 1;
            return false;
        }
        self.bound.insert(peer.node, Bound::of(peer, confirmed));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(node: u64, name: &str, port: u16) -> Peer {
        Peer {
            node: NodeId(node),
            name: name.into(),
            region: "r".into(),
            lat: 0.0,
            lon: 0.0,
            gossip: SocketAddr::from(([127, 0, 0, 1], port)),
            http: SocketAddr::from(([127, 0, 0, 1], port)),
            incarnation: 1,
            kind: Default::default(),
        }
    }

    #[test]
    fn a_node_speaks_only_for_itself() {
        let mut ids = Identities::new();
        let a = peer(1, "a", 1);
        let link_a = Link::of(&a);
        assert_eq!(ids.accept_datagram(&link_a, &a), DatagramSender::Accepted);
        assert!(ids.is_confirmed(NodeId(1)));
        // b's link carrying a datagram that claims to be a.
        let b = peer(2, "b", 2);
        assert_eq!(ids.accept_datagram(&Link::of(&b), &a), DatagramSender::Refused);
        // b claiming a's origin under its own name and address.
        assert_eq!(ids.accept_datagram(&Link::of(&b), &peer(1, "b", 2)), DatagramSender::Refused);
        // A third party's word that a moved to b's address, or serves HTTP
        // somewhere else, or changed region.
        assert!(!ids.accept_member(&peer(1, "a", 2)));
        let mut elsewhere = a.clone();
        elsewhere.http = b.http;
        assert!(!ids.accept_member(&elsewhere));
        let mut moved = a.clone();
        moved.region = "other".into();
        assert!(!ids.accept_member(&moved));
        let mut rejoined = a.clone();
        rejoined.incarnation += 1;
        assert!(ids.accept_member(&rejoined), "a rejoin changes only the incarnation");
        assert!(ids.accept_message(&link_a, NodeId(1)));
        assert!(!ids.accept_message(&Link::of(&b), NodeId(1)));
        assert!(ids.accept_message(&Link::of(&b), NodeId(9)), "a fresh origin binds to its link");
        assert!(!ids.accept_message(&link_a, NodeId(9)));
        let r = ids.refusals();
        assert_eq!((r.impersonations, r.origin_conflicts, r.foreign_messages), (1, 4, 2));
    }

    #[test]
    fn one_name_cannot_bind_origins_without_end() {
        let mut ids = Identities::new();
        let link = Link::of(&peer(1, "m", 1));
        for i in 0..ORIGINS_PER_NAME_MAX as u64 {
            assert!(ids.accept_message(&link, NodeId(1_000 + i)));
        }
        assert!(!ids.accept_message(&link, NodeId(1)));
        assert_eq!(ids.refusals().identities_full, 1);
        assert!(ids.accept_message(&Link::of(&peer(2, "other", 2)), NodeId(2)), "others still bind");
    }

    #[test]
    fn a_third_partys_word_is_tentative_until_the_origin_speaks() {
        let mut ids = Identities::new();
        // A forged member: a fresh origin under c's name at a wrong address.
        assert!(ids.accept_member(&peer(3, "c", 9)));
        assert!(!ids.is_confirmed(NodeId(3)));
        let c = peer(3, "c", 3);
        assert_eq!(
            ids.accept_datagram(&Link::of(&c), &c),
            DatagramSender::Corrected,
            "the origin itself replaces the forgery"
        );
        assert!(ids.is_confirmed(NodeId(3)));
        assert!(!ids.accept_member(&peer(3, "c", 9)));
    }
}
