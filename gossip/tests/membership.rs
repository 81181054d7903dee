//! Membership in memory: nodes exchange foca datagrams through a virtual
//! network; joins through seeds, failures detected, restarts rejoin.

use geocache_crdt::NodeId;
use geocache_gossip::membership::{Membership, MembershipError, MembershipEvent};
use geocache_gossip::peer::Peer;
use std::collections::BTreeMap;
use std::net::SocketAddr;

fn peer(i: u8, incarnation: u64) -> Peer {
    let gossip = SocketAddr::from(([127, 0, 0, 10 + i], 7946));
    Peer {
        node: NodeId(u64::from(i) + 1),
        name: format!("node-{i}"),
        region: if i < 2 { "montreal".into() } else { "frankfurt".into() },
        lat: 45.5,
        lon: -73.6,
        gossip,
        http: SocketAddr::from(([127, 0, 0, 10 + i], 7070)),
        incarnation,
        kind: Default::default(),
    }
}

struct Net {
    nodes: BTreeMap<SocketAddr, Membership>,
    now_ms: u64,
    down: Vec<SocketAddr>,
    /// Datagrams refused for a member list at its bound.
    refused_full: usize,
}

impl Net {
    fn step(&mut self, until_ms: u64) {
        while self.now_ms < until_ms {
            self.now_ms += 10;
            let addrs: Vec<SocketAddr> = self.nodes.keys().copied().collect();
            for a in &addrs {
                if self.down.contains(a) {
                    continue;
                }
                self.nodes.get_mut(a).unwrap().handle_timeout(self.now_ms);
            }
            // Deliver everything sent, until quiet (no latency: 10 ms steps).
            loop {
                let mut moved = false;
                for a in &addrs {
                    while let Some((to, data)) = self.nodes.get_mut(a).unwrap().poll_transmit() {
                        moved = true;
                        if self.down.contains(&to) || self.down.contains(a) {
                            continue;
                        }
                        if let Some(n) = self.nodes.get_mut(&to) {
                            match n.handle_data(&data, self.now_ms) {
                                Ok(()) => {}
                                Err(MembershipError::Full { .. }) => self.refused_full += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        }
    }

    fn members(&self, i: u8) -> Vec<NodeId> {
        self.nodes[&peer(i, 0).gossip].members().iter().map(|p| p.node).collect()
    }
}

fn net(count: u8) -> Net {
    net_sized(count, u32::from(count))
}

fn net_sized(count: u8, initial_size: u32) -> Net {
    let mut nodes = BTreeMap::new();
    for i in 0..count {
        let p = peer(i, 1);
        nodes.insert(p.gossip, Membership::new(p, initial_size, u64::from(i), 0));
    }
    let seed = peer(0, 0).gossip;
    for m in nodes.values_mut() {
        m.join(&[seed], 0);
    }
    Net { nodes, now_ms: 0, down: Vec::new(), refused_full: 0 }
}

#[test]
fn nodes_join_through_a_seed_and_see_each_other() {
    let mut n = net(4);
    n.step(3_000);
    for i in 0..4 {
        assert_eq!(n.members(i).len(), 3, "node {i} sees {:?}", n.members(i));
    }
}

#[test]
fn a_silent_node_is_suspected_before_it_is_declared_down() {
    let mut n = net(4);
    n.step(3_000);
    let silent = peer(3, 0).gossip;
    n.down.push(silent);
    // Step until some node suspects it; it must still be a member then.
    let mut suspected_at = None;
    while n.now_ms < 20_000 && suspected_at.is_none() {
        let until = n.now_ms + 100;
        n.step(until);
        let m = &n.nodes[&peer(0, 0).gossip];
        if m.suspects().iter().any(|p| p.node == NodeId(4)) {
            assert!(m.members().iter().any(|p| p.node == NodeId(4)), "a suspect is still a member");
            suspected_at = Some(n.now_ms);
        }
    }
    let suspected_at = suspected_at.expect("node 4 suspected");
    // Later it is declared down and no longer suspected.
    n.step(suspected_at + 30_000);
    let m = &n.nodes[&peer(0, 0).gossip];
    assert!(m.members().iter().all(|p| p.node != NodeId(4)));
    assert!(m.suspects().is_empty(), "{:?}", m.suspects());
}

#[test]
fn settings_grow_with_the_cluster_seen() {
    let mut n = net_sized(12, 8);
    n.step(5_000);
    for i in 0..12 {
        assert_eq!(n.members(i).len(), 11, "node {i} sees {:?}", n.members(i));
        assert_eq!(n.nodes[&peer(i, 0).gossip].sized_for(), 16, "node {i}");
    }
}

#[test]
fn a_dead_node_is_declared_down_and_a_restart_rejoins() {
    let mut n = net(3);
    n.step(3_000);
    let dead = peer(2, 0).gossip;
    n.down.push(dead);
    n.step(30_000);
    assert_eq!(n.members(0), vec![NodeId(2)], "node 3 declared down");
    let mut saw_down = false;
    while let Some(e) = n.nodes.get_mut(&peer(0, 0).gossip).unwrap().poll_event() {
        saw_down |= matches!(e, MembershipEvent::Down(p) if p.node == NodeId(3));
    }
    assert!(saw_down);
    // Restart: same address, a new incarnation, joining through the seed.
    n.down.clear();
    let fresh = peer(2, 50_000);
    let mut m = Membership::new(fresh, 3, 99, n.now_ms);
    m.join(&[peer(0, 0).gossip], n.now_ms);
    n.nodes.insert(dead, m);
    n.step(n.now_ms + 5_000);
    assert_eq!(n.members(0), vec![NodeId(2), NodeId(3)]);
    let back = n.nodes[&peer(0, 0).gossip].members().into_iter().find(|p| p.node == NodeId(3)).unwrap();
    assert_eq!(back.incarnation, 50_000);
}

#[test]
fn garbage_is_refused_without_harm() {
    let mut n = net(2);
    n.step(2_000);
    let a = n.nodes.get_mut(&peer(0, 0).gossip).unwrap();
    assert!(a.handle_data(&[1, 2, 3, 4, 5], 2_000).is_err());
    assert!(a.handle_data(&[], 2_000).is_err());
    n.step(4_000);
    assert_eq!(n.members(0).len(), 1);
}

#[test]
fn a_member_list_at_its_bound_refuses_datagrams_naming_new_members() {
    let mut n = net(8);
    let seed = peer(0, 0).gossip;
    let bounded = n.nodes.remove(&seed).unwrap().with_member_bound(3);
    n.nodes.insert(seed, bounded);
    n.step(10_000);
    let tracked = n.members(0).len();
    assert!(tracked <= 3, "the seed tracks {tracked} members, past its bound of 3");
    assert!(n.refused_full > 0, "datagrams naming more were refused");
    assert!(n.members(1).len() >= 3, "the others still form: {:?}", n.members(1));
}
