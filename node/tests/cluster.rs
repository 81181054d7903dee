//! Replication over real QUIC on loopback: real `geocache` processes, each
//! on its own 127.0.0.x address.

mod common;

use common::{free_udp_port, make_certs, start_cluster, temp_dir, Member, Node};
use reqwest::{Client, StatusCode};
use std::time::{Duration, Instant};

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts nodes `(ip, region, id)`; the first is every other's seed.
fn cluster(name: &str, specs: &[(&str, &str, u64)]) -> (Vec<Member>, Vec<Vec<String>>) {
    let specs: Vec<(&str, &str, u64, &[&str])> =
        specs.iter().map(|&(ip, r, id)| (ip, r, id, &[][..])).collect();
    start_cluster(name, &specs)
}

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn wait_for_members(c: &Client, node: &Node, count: usize) {
    let started = Instant::now();
    loop {
        let view: serde_json::Value =
            c.get(node.url("/v1/cluster")).send().await.unwrap().json().await.unwrap();
        if view["members"].as_array().is_some_and(|m| m.len() >= count) {
            return;
        }
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "{} never saw {count} members: {view}", node.base);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_value(c: &Client, node: &Node, key: &str, value: &str) -> Duration {
    let started = Instant::now();
    loop {
        let r = c.get(node.url(&format!("/v1/kv/t/{key}"))).send().await.unwrap();
        if r.status() == StatusCode::OK && r.text().await.unwrap() == value {
            return started.elapsed();
        }
        assert!(started.elapsed() < CONVERGE_TIMEOUT, "{} never got {key}={value}", node.base);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_write_at_any_node_is_readable_at_every_other() {
    let (members, _) = cluster(
        "rep-any",
        &[
            ("127.0.0.21", "montreal", 1),
            ("127.0.0.22", "montreal", 2),
            ("127.0.0.23", "frankfurt", 3),
            ("127.0.0.24", "frankfurt", 4),
        ],
    );
    let c = client();
    for m in &members {
        wait_for_members(&c, &m.node, 3).await;
    }
    for (i, writer) in members.iter().enumerate() {
        let key = format!("from-{i}");
        let r =
            c.put(writer.node.url(&format!("/v1/kv/t/{key}"))).body(format!("v{i}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        for reader in &members {
            wait_for_value(&c, &reader.node, &key, &format!("v{i}")).await;
        }
    }
    // Deletes and documents replicate too.
    c.delete(members[0].node.url("/v1/kv/t/from-3")).send().await.unwrap();
    let r = c
        .patch(members[1].node.url("/v1/doc/t/d"))
        .header("content-type", "application/merge-patch+json")
        .body("{\"a\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for m in &members {
        let started = Instant::now();
        loop {
            let gone =
                c.get(m.node.url("/v1/kv/t/from-3")).send().await.unwrap().status() == StatusCode::NOT_FOUND;
            let doc = c.get(m.node.url("/v1/doc/t/d")).send().await.unwrap();
            if gone && doc.status() == StatusCode::OK {
                assert_eq!(doc.text().await.unwrap(), "{\"a\":1}");
                break;
            }
            assert!(started.elapsed() < CONVERGE_TIMEOUT);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn durability_region_waits_for_a_region_peer_and_times_out_without_one() {
    let (mut members, _) = cluster(
        "rep-durability",
        &[("127.0.0.31", "montreal", 1), ("127.0.0.32", "montreal", 2), ("127.0.0.33", "frankfurt", 3)],
    );
    let c = client();
    for m in &members {
        wait_for_members(&c, &m.node, 2).await;
    }
    let r = c
        .put(members[0].node.url("/v1/kv/t/durable"))
        .header("geocache-durability", "region")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Returned only once the other montreal node had it: it reads it now.
    let r = c.get(members[1].node.url("/v1/kv/t/durable")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .put(members[0].node.url("/v1/kv/t/everywhere"))
        .header("geocache-durability", "all")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        c.get(members[2].node.url("/v1/kv/t/everywhere")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let r = c
        .put(members[0].node.url("/v1/kv/t/bad"))
        .header("geocache-durability", "most")
        .body("x")
        .send()
        .await;
    assert_eq!(r.unwrap().status(), StatusCode::BAD_REQUEST);

    // The region's other node dies for real: region durability cannot be met.
    members.remove(1).node.kill();
    let started = Instant::now();
    let r = c
        .put(members[0].node.url("/v1/kv/t/lonely"))
        .header("geocache-durability", "region")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "durability_timeout");
    assert!(body["error"].as_str().unwrap().contains("reached local"), "{body}");
    assert!(started.elapsed() >= Duration::from_secs(4));
    // The write is still applied locally.
    assert_eq!(c.get(members[0].node.url("/v1/kv/t/lonely")).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_killed_node_restarts_empty_and_catches_up() {
    let (mut members, certs) =
        cluster("rep-restart", &[("127.0.0.41", "montreal", 1), ("127.0.0.42", "frankfurt", 2)]);
    let c = client();
    for m in &members {
        wait_for_members(&c, &m.node, 1).await;
    }
    c.put(members[0].node.url("/v1/kv/t/before")).body("b").send().await.unwrap();
    wait_for_value(&c, &members[1].node, "before", "b").await;
    let dead = members.remove(1);
    let gossip = dead.gossip.clone();
    dead.node.kill();
    for i in 0..50 {
        let r = c.put(members[0].node.url(&format!("/v1/kv/t/while-{i}"))).body("w").send().await.unwrap();
        assert!(r.status().is_success());
    }
    let mut args: Vec<String> = vec![
        "--gossip".into(),
        gossip.clone(),
        "--region".into(),
        "frankfurt".into(),
        "--node-id".into(),
        "2".into(),
        "--seeds".into(),
        members[0].gossip.clone(),
    ];
    args.extend(certs[1].iter().cloned());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let back = Node::start_at("127.0.0.42", &arg_refs);
    wait_for_value(&c, &back, "while-49", "w").await;
    wait_for_value(&c, &back, "while-0", "w").await;
    wait_for_value(&c, &back, "before", "b").await;
    // Its new life writes under a new origin id: its first writes are not
    // taken for duplicates of its previous life's.
    for i in 0..3 {
        c.put(back.url(&format!("/v1/kv/t/after-{i}"))).body("a").send().await.unwrap();
    }
    for i in 0..3 {
        wait_for_value(&c, &members[0].node, &format!("after-{i}"), "a").await;
    }
}

#[tokio::test]
async fn a_node_with_a_certificate_from_another_ca_cannot_join() {
    let (members, _) = cluster("rep-ca", &[("127.0.0.51", "montreal", 1), ("127.0.0.52", "montreal", 2)]);
    let c = client();
    for m in &members {
        wait_for_members(&c, &m.node, 1).await;
    }
    let other = make_certs(&temp_dir("rep-ca-other"), &["intruder"]);
    let mut args: Vec<String> = vec![
        "--gossip".into(),
        format!("127.0.0.53:{}", free_udp_port("127.0.0.53")),
        "--node-id".into(),
        "9".into(),
        "--seeds".into(),
        members[0].gossip.clone(),
    ];
    args.extend(other[0].iter().cloned());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let intruder = Node::start_at("127.0.0.53", &arg_refs);
    c.put(intruder.url("/v1/kv/t/evil")).body("x").send().await.unwrap();
    c.put(members[0].node.url("/v1/kv/t/good")).body("y").send().await.unwrap();
    wait_for_value(&c, &members[1].node, "good", "y").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view: serde_json::Value =
        c.get(members[0].node.url("/v1/cluster")).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["members"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(
        c.get(members[0].node.url("/v1/kv/t/evil")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

async fn wan_delta_messages(c: &Client, members: &[Member]) -> u64 {
    let mut total = 0;
    for m in members {
        let text = c.get(m.node.url("/metrics")).send().await.unwrap().text().await.unwrap();
        total += text
            .lines()
            .find_map(|l| {
                l.strip_prefix("geocache_replication_messages_total{scope=\"wan\",kind=\"deltas\"} ")
            })
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

#[tokio::test]
async fn each_write_crosses_each_remote_region_once_and_garbage_is_ignored() {
    let (members, _) = cluster(
        "rep-wan",
        &[
            ("127.0.0.61", "montreal", 1),
            ("127.0.0.62", "montreal", 2),
            ("127.0.0.63", "sao-paulo", 3),
            ("127.0.0.64", "sao-paulo", 4),
            ("127.0.0.65", "frankfurt", 5),
            ("127.0.0.66", "frankfurt", 6),
        ],
    );
    let c = client();
    for m in &members {
        wait_for_members(&c, &m.node, 5).await;
    }
    // Garbage on the gossip port of the writer: QUIC drops it.
    let socket = std::net::UdpSocket::bind("127.0.0.60:0").unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200 {
        let mut packet = vec![0u8; 1 + (state % 1_200) as usize];
        for b in packet.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        socket.send_to(&packet, &members[0].gossip).unwrap();
    }
    c.put(members[0].node.url("/v1/kv/t/warm")).body("w").send().await.unwrap();
    for m in &members {
        wait_for_value(&c, &m.node, "warm", "w").await;
    }
    let before = wan_delta_messages(&c, &members).await;
    let writes = 10;
    for i in 0..writes {
        let key = format!("w{i}");
        c.put(members[0].node.url(&format!("/v1/kv/t/{key}"))).body("v").send().await.unwrap();
        for m in &members {
            wait_for_value(&c, &m.node, &key, "v").await;
        }
    }
    let sent = wan_delta_messages(&c, &members).await - before;
    assert_eq!(sent, writes * 2, "WAN delta messages for {writes} writes with 2 remote regions");
}
