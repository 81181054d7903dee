//! Fuzzes what a peer's membership datagrams do to a node's replication
//! core: arbitrary bytes on a peer's link, then on a link that claims to
//! be the sender the bytes name. Nothing may panic, and the core keeps
//! answering (its timers and transmits still work afterwards).
#![no_main]

use geocache_crdt::NodeId;
use geocache_gossip::core::{Core, CoreConfig};
use geocache_gossip::identities::Link;
use geocache_gossip::membership::Membership;
use geocache_gossip::peer::Peer;
use libfuzzer_sys::fuzz_target;
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
    }
}

fuzz_target!(|data: &[u8]| {
    let me = peer(0);
    let mut core = Core::new(me, CoreConfig::default(), 7, 0);
    core.handle_datagram(&Link::of(&peer(1)), data, 1);
    if let Some(claimed) = Membership::sender_of(data) {
        core.handle_datagram(&Link::of(&claimed), data, 2);
    }
    core.handle_timeout(5_000);
    while core.poll_datagram().is_some() {}
    while core.poll_event().is_some() {}
});
