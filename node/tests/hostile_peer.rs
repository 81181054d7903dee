//! A hostile peer with a valid cluster certificate ("mallory") against a
//! real node ("victim") and its honest peer ("honest"), both real
//! processes. Mallory joins membership honestly, then tries each attack of
//! the threat model (docs/SECURITY.md): announcing under another node's
//! identity, claiming another node's origin, forged acks, an unrequested
//! full transfer with watermarks at `u64::MAX`, a stamp a day in the
//! future, a document that inflates, a document nested 10,000 deep. The
//! victim keeps every entry, its clock, its members' addresses and its
//! readiness, keeps taking the honest node's writes, and counts each
//! attempt.

mod common;

use bytes::Bytes;
use common::{free_udp_port, temp_dir, Node};
use geocache_crdt::{codec, Delta, DeltaBody, Dot, Hlc, Key, NodeId, Register, Stamp, Value, VersionVector};
use geocache_gossip::certs::{Ca, CertIdentity};
use geocache_gossip::core::{Core, CoreConfig};
use geocache_gossip::identities::Link;
use geocache_gossip::membership::Membership;
use geocache_gossip::peer::Peer;
use geocache_gossip::quic::{ClusterTls, Inbound, QuicConfig, QuicTransport};
use geocache_gossip::wire::Message;
use serde_json::Value as Json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Generous: the machine may be loaded.
const TIMEOUT: Duration = Duration::from_secs(60);
const ENTRIES: usize = 50;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

struct Cluster {
    victim: Node,
    honest: Node,
    victim_gossip: SocketAddr,
    ca: Ca,
    http: reqwest::Client,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = temp_dir("hostile-peer");
        let ca = Ca::generate("hostile test CA").unwrap();
        let start = |name: &str, ip: &str, region: &str, seed: Option<SocketAddr>| {
            let out = dir.join(name);
            ca.issue_in(name, Some(region)).unwrap().save(&out).unwrap();
            let gossip = SocketAddr::new(ip.parse().unwrap(), free_udp_port(ip));
            let mut args: Vec<String> =
                vec!["--region".into(), region.into(), "--gossip".into(), gossip.to_string()];
            for (flag, file) in [("--ca", "ca.crt"), ("--cert", "node.crt"), ("--key", "node.key")] {
                args.extend([flag.to_string(), out.join(file).to_str().unwrap().to_string()]);
            }
            if let Some(seed) = seed {
                args.extend(["--seeds".to_string(), seed.to_string()]);
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            (Node::start_at(ip, &refs), gossip)
        };
        let (victim, victim_gossip) = start("victim", "127.0.0.72", "montreal", None);
        let (honest, _) = start("honest", "127.0.0.73", "frankfurt", Some(victim_gossip));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        Cluster { victim, honest, victim_gossip, ca, http }
    }

    async fn json(&self, node: &Node, path: &str) -> Json {
        self.http.get(node.url(path)).send().await.unwrap().json().await.unwrap()
    }

    async fn until(&self, what: &str, mut check: impl AsyncFnMut(&Cluster) -> bool) {
        let started = Instant::now();
        while !check(self).await {
            assert!(started.elapsed() < TIMEOUT, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn member(&self, name: &str) -> Option<Json> {
        let view = self.json(&self.victim, "/v1/cluster").await;
        view["members"].as_array()?.iter().find(|m| m["name"] == name).cloned()
    }

    async fn victim_holds(&self, key: &str) -> bool {
        self.http.get(self.victim.url(&format!("/v1/kv/t/{key}"))).send().await.unwrap().status() == 200
    }
}

/// Mallory: a transport with a valid certificate and an honest core for
/// its membership, plus whatever it chooses to send.
struct Mallory {
    transport: QuicTransport,
    addr: SocketAddr,
    origin: NodeId,
}

impl Mallory {
    async fn join(ca: &Ca, victim: SocketAddr) -> Mallory {
        let ip = "127.0.0.79";
        let addr = SocketAddr::new(ip.parse().unwrap(), free_udp_port(ip));
        let tls = ClusterTls::from_node_cert(&ca.issue_in("mallory", Some("frankfurt")).unwrap()).unwrap();
        let (transport, mut inbound) = QuicTransport::bind(QuicConfig::new(addr, tls)).await.unwrap();
        let origin = NodeId(0x6d61_6c6c_6f72_7900);
        let me = Peer {
            node: origin,
            name: "mallory".into(),
            region: "frankfurt".into(),
            lat: 50.1,
            lon: 8.7,
            gossip: addr,
            http: addr,
            incarnation: now_ms(),
            kind: Default::default(),
        };
        let mut core = Core::new(me, CoreConfig { seeds: vec![victim], ..CoreConfig::default() }, 99, 0);
        let sender = transport.clone();
        // Its membership runs for the whole test: the victim must see a
        // live, confirmed member behind the attacks.
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let now = started.elapsed().as_millis() as u64;
                while let Some((to, bytes)) = core.poll_datagram() {
                    let _ = sender.send_datagram(to, bytes);
                }
                let wake = core.poll_timeout().saturating_sub(now).clamp(1, 200);
                tokio::select! {
                    got = inbound.recv() => match got {
                        Some(Inbound::Datagram { from, peer, bytes }) => {
                            let link = Link { name: peer.name.clone(), region: peer.region.clone(), addr: from };
                            core.handle_datagram(&link, &bytes, now);
                        }
                        Some(_) => {}
                        None => return,
                    },
                    () = tokio::time::sleep(Duration::from_millis(wake)) => core.handle_timeout(now),
                }
            }
        });
        Mallory { transport, addr, origin }
    }

    /// Membership datagrams of a forged identity, sent to `to`.
    fn announce_as(&self, forged: Peer, to: SocketAddr) {
        let mut m = Membership::new(forged, 4, 5, 0);
        m.join(&[to], 0);
        while let Some((_, bytes)) = m.poll_transmit() {
            self.transport.send_datagram(to, bytes).unwrap();
        }
    }

    fn send(&self, to: SocketAddr, message: &Message) {
        self.transport.send_frame(to, Bytes::from(codec::encode(message).unwrap())).unwrap();
    }
}

fn register(value: Value, ms: u64, node: NodeId) -> Register {
    let mut vv = VersionVector::new();
    vv.increment(node);
    Register::replace(value, Stamp::new(Hlc::new(ms, 0), node), vv, Dot { origin: node, seq: 1 }, None)
}

fn deltas_of(origin: NodeId, key: &str, register: Register, seq: u64) -> Message {
    let delta = Delta {
        origin,
        seq,
        key: Key::new("t", Bytes::copy_from_slice(key.as_bytes())),
        body: DeltaBody::Register(Arc::new(register)),
    };
    Message::Deltas { from: origin, relay: false, ack: false, deltas: vec![Arc::new(delta)] }
}

/// A `Deltas` message whose one document is replaced, in the encoded
/// bytes, by `doc_bytes` (which the project's own types would not make).
fn deltas_with_doc_bytes(origin: NodeId, key: &str, doc_bytes: &[u8]) -> Vec<u8> {
    let mut doc = geocache_crdt::Doc::new();
    doc.apply_merge_patch(&serde_json::json!({"placeholder": 1}), Stamp::new(Hlc::new(now_ms(), 0), origin))
        .unwrap();
    let saved = doc.save();
    let message = deltas_of(origin, key, register(Value::Doc(doc), now_ms(), origin), 7);
    let encoded = codec::encode(&message).unwrap();
    let at = encoded.windows(saved.len()).position(|w| w == saved).expect("the document's bytes");
    let mut prefix = varint(saved.len() as u64);
    assert_eq!(&encoded[at - prefix.len()..at], &prefix[..], "postcard length prefix");
    let mut out = encoded[..at - prefix.len()].to_vec();
    prefix = varint(doc_bytes.len() as u64);
    out.extend_from_slice(&prefix);
    out.extend_from_slice(doc_bytes);
    out.extend_from_slice(&encoded[at + saved.len()..]);
    out
}

fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn refusals(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("geocache_peer_refusals_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_with_a_valid_certificate_cannot_hurt_the_victim() {
    let c = Cluster::start();
    c.until("the two nodes to meet", async |c| c.member("honest").await.is_some_and(|m| m["state"] == "up"))
        .await;
    for i in 0..ENTRIES {
        let r =
            c.http.put(c.honest.url(&format!("/v1/kv/t/k{i}"))).body(format!("v{i}")).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    c.until("the victim to hold the honest writes", async |c| {
        c.victim_holds(&format!("k{}", ENTRIES - 1)).await
    })
    .await;
    let honest_before = c.member("honest").await.unwrap();
    let honest_origin = NodeId(u64::from_str_radix(honest_before["origin"].as_str().unwrap(), 16).unwrap());
    let victim_view = c.json(&c.victim, "/v1/cluster").await;
    let victim_origin = NodeId(u64::from_str_radix(victim_view["origin"].as_str().unwrap(), 16).unwrap());

    let mallory = Mallory::join(&c.ca, c.victim_gossip).await;
    c.until("mallory to be a confirmed member", async |c| {
        c.member("mallory").await.is_some_and(|m| m["state"] == "up")
    })
    .await;
    let honest_peer = |name: &str, gossip: SocketAddr| Peer {
        node: honest_origin,
        name: name.into(),
        region: "frankfurt".into(),
        lat: 50.1,
        lon: 8.7,
        gossip,
        http: mallory.addr,
        incarnation: now_ms() + 1_000_000,
        kind: Default::default(),
    };

    // 1. Announcing as the honest node, on mallory's own connection.
    mallory.announce_as(honest_peer("honest", mallory.addr), c.victim_gossip);
    // 2. Claiming the honest node's origin under its own name.
    mallory.announce_as(honest_peer("mallory", mallory.addr), c.victim_gossip);
    // 3. Acks in the honest node's name, for writes of the victim.
    mallory.send(
        c.victim_gossip,
        &Message::Acks { from: honest_origin, applied: vec![(victim_origin, u64::MAX)] },
    );
    // 4. An unrequested full transfer holding nothing, whose drop rule would
    //    delete every entry and whose watermarks would make every later
    //    write of the honest node a duplicate: in the honest node's name,
    //    then in mallory's own.
    for from in [honest_origin, mallory.origin] {
        let chunk = Message::FullTransferChunk {
            from,
            transfer: 1,
            continues: None,
            index: 0,
            registers: Vec::new(),
            last: true,
            watermarks: vec![(honest_origin, u64::MAX), (victim_origin, u64::MAX)],
            end_watermarks: vec![(honest_origin, u64::MAX)],
        };
        mallory.send(c.victim_gossip, &chunk);
    }
    // 5. A write stamped a day ahead.
    let day_ahead = now_ms() + 86_400_000;
    let future = register(Value::Bytes(Bytes::from_static(b"from the future")), day_ahead, mallory.origin);
    mallory.send(c.victim_gossip, &deltas_of(mallory.origin, "future", future, 1));
    // 6. A document of 16 MiB of text that deflates to a few KiB.
    let mut bomb = automerge::AutoCommit::new();
    automerge::transaction::Transactable::put(&mut bomb, automerge::ROOT, "x", "a".repeat(16 << 20)).unwrap();
    let bomb_bytes = bomb.save();
    assert!(bomb_bytes.len() < 1 << 20, "the bomb is small on the wire: {}", bomb_bytes.len());
    let wire = deltas_with_doc_bytes(mallory.origin, "bomb", &bomb_bytes);
    mallory.transport.send_frame(c.victim_gossip, Bytes::from(wire)).unwrap();
    // 7. A document nested 10,000 deep.
    let mut deep = automerge::AutoCommit::new();
    let mut obj = automerge::ROOT;
    for _ in 0..10_000 {
        obj = automerge::transaction::Transactable::put_object(&mut deep, &obj, "n", automerge::ObjType::Map)
            .unwrap();
    }
    let wire = deltas_with_doc_bytes(mallory.origin, "deep", &deep.save_nocompress());
    mallory.transport.send_frame(c.victim_gossip, Bytes::from(wire)).unwrap();

    // Every attempt is counted.
    c.until("every attempt to be counted", async |c| {
        let m = c.http.get(c.victim.url("/metrics")).send().await.unwrap().text().await.unwrap();
        refusals(&m, "impersonation") >= 1
            && refusals(&m, "origin_conflict") >= 1
            && refusals(&m, "foreign_message") >= 2
            && refusals(&m, "undecodable") >= 2
    })
    .await;
    let view = c.json(&c.victim, "/v1/cluster").await;
    assert!(view["stats"]["transfer_stray_chunks"].as_u64().unwrap() >= 1, "{view}");

    // The honest node keeps writing, and every write still arrives.
    for i in ENTRIES..ENTRIES + 10 {
        let r =
            c.http.put(c.honest.url(&format!("/v1/kv/t/k{i}"))).body(format!("v{i}")).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    c.until("the honest writes after the attacks", async |c| {
        c.victim_holds(&format!("k{}", ENTRIES + 9)).await
    })
    .await;
    for i in 0..ENTRIES + 10 {
        let got = c.http.get(c.victim.url(&format!("/v1/kv/t/k{i}"))).send().await.unwrap();
        assert_eq!(got.text().await.unwrap(), format!("v{i}"), "entry k{i} kept");
    }
    // The future write is merged (replicas converge) but the clock stayed.
    assert!(c.victim_holds("future").await);
    let node = c.json(&c.victim, "/v1/node").await;
    assert!(node["clock_ms"].as_u64().unwrap() < now_ms() + 60_000, "clock dragged: {node}");
    let r = c.http.put(c.victim.url("/v1/kv/t/after")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(c.json(&c.victim, "/v1/node").await["clock_ms"].as_u64().unwrap() < now_ms() + 60_000);
    // Neither hostile document was taken.
    assert!(!c.victim_holds("bomb").await && !c.victim_holds("deep").await);
    // The members' addresses are the ones they have.
    let honest_after = c.member("honest").await.unwrap();
    assert_eq!(honest_after["http"], honest_before["http"]);
    assert_eq!(honest_after["gossip"], honest_before["gossip"]);
    // And the victim is still ready and healthy.
    for path in ["/readyz", "/healthz"] {
        assert_eq!(c.http.get(c.victim.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    // What a certificate says is what the victim checks.
    let id = CertIdentity::of_pem(&c.ca.issue_in("mallory", Some("frankfurt")).unwrap().cert_pem).unwrap();
    assert_eq!(id.name, "mallory");
}
