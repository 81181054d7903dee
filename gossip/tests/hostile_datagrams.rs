//! Membership datagrams from a peer, arbitrary or mutated from real ones,
//! never panic the core or let a link speak for another node: the stable
//! twin of the `membership_datagram` fuzz target (`scripts/fuzz.sh`).

use geocache_crdt::NodeId;
use geocache_gossip::core::{Core, CoreConfig};
use geocache_gossip::identities::Link;
use geocache_gossip::membership::Membership;
use geocache_gossip::peer::Peer;
use proptest::prelude::*;
use std::net::SocketAddr;

fn peer(i: u8) -> Peer {
    let addr = SocketAddr::from(([127, 0, 0, 10 + i], 7946));
    Peer {
        node: NodeId(u64::from(i) + 1),
        name: format!("node-{i}"),
        region: "r".into(),
        lat: 0.0,
        lon: 0.0,
        gossip: addr,
        http: addr,
        incarnation: 1,
        kind: Default::default(),
    }
}

/// A real announce datagram of node 1 to node 0.
fn announce() -> Vec<u8> {
    let mut sender =
        Core::new(peer(1), CoreConfig { seeds: vec![peer(0).gossip], ..CoreConfig::default() }, 3, 0);
    sender.handle_timeout(1);
    let (_, bytes) = sender.poll_datagram().expect("an announce to the seed");
    bytes.to_vec()
}

fn feed(data: &[u8]) -> Core {
    let mut core = Core::new(peer(0), CoreConfig::default(), 7, 0);
    core.handle_datagram(&Link::of(&peer(2)), data, 1);
    if let Some(claimed) = Membership::sender_of(data) {
        core.handle_datagram(&Link::of(&claimed), data, 2);
    }
    core.handle_timeout(5_000);
    while core.poll_datagram().is_some() {}
    while core.poll_event().is_some() {}
    core
}

#[test]
fn an_announce_on_another_nodes_link_is_an_impersonation() {
    let bytes = announce();
    let mut core = Core::new(peer(0), CoreConfig::default(), 7, 0);
    core.handle_datagram(&Link::of(&peer(2)), &bytes, 1);
    assert_eq!(core.refusals().impersonations, 1);
    assert!(core.members().is_empty());
    core.handle_datagram(&Link::of(&peer(1)), &bytes, 2);
    assert_eq!(core.members().len(), 1, "on its own link it joins");
    assert!(core.is_confirmed(peer(1).node));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_datagrams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let core = feed(&data);
        prop_assert!(core.members().len() <= 1);
    }

    #[test]
    fn mutated_announces_never_panic(at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut data = announce();
        let i = at % data.len();
        data[i] = byte;
        data.truncate(cut % (data.len() + 1));
        feed(&data);
    }
}
